//! The chaos harness: real processes, real faults, and a check of every
//! reply against the ledger afterwards.
//!
//! Shared by the `wasmpay-chaos` binary (long runs against the release
//! `wasmpay` binary) and the short CI variants in
//! `tests/integration/chaos.rs`, which include this directory by `#[path]`.
//! So it may use only crates both packages depend on: tokio, rumqttc,
//! serde_json, tempfile, bytes, anyhow, wasmpay-domain and wasmpay-ledger.
//!
//! The parts, in the order a run uses them:
//!
//! - [`broker`]: a Mosquitto of the run's own, with persistence, that can be
//!   stopped, crashed and started again on the same port.
//! - [`daemon`]: the daemon as a child process, killed with SIGKILL and
//!   started again.
//! - [`driver`]: the load. Simulated users pay merchants, merchants refund,
//!   the operator deposits; every request is QoS 1 with its own id and is
//!   sent again with the same id when its reply is late, as a real client
//!   does.
//! - [`oracle`]: what the replies said against what the ledger holds.
//! - [`scenario`]: the crash and broker-fault runs and their report.
//! - [`rng`]: the seeded choices, so a run can be replayed.

pub mod broker;
pub mod daemon;
pub mod driver;
pub mod oracle;
pub mod rng;
pub mod scenario;
