//! wasmpay: real-time payments over MQTT, merchant rules in sandboxed
//! WebAssembly, money in a double-entry SQLite ledger.
//!
//! Read [`pipeline`] first: it is the whole job in one page. Then, in the
//! order a message flows:
//!
//! - [`mqtt`]: the broker connection (the only module that knows rumqttc),
//!   over TLS with [`tls`]'s settings, or to the broker in this process
//!   ([`embedded_broker`], the default).
//! - `wasmpay_protocol`: topics and JSON payloads to typed requests and back.
//! - [`handlers`]: one function per request kind, mapping requests to plugin
//!   calls and ledger operations, and outcomes to replies.
//! - `wasmpay_plugin`: merchant components under limits (the only code that
//!   knows wasmtime).
//! - `wasmpay_ledger`: accounts, postings, idempotency records and the plugin
//!   registry (the only code that knows SQL).
//! - [`writer`]: the thread that owns the ledger's write connection.
//! - `workers`: the threads that run plugin calls and the reads around them.
//! - `replies`: ledger outcomes to reply and notification payloads.
//! - [`config`]: the TOML file and environment overrides.

pub mod cli;
pub mod config;
pub mod embedded_broker;
pub mod handlers;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
mod replies;
pub mod tls;
mod workers;
pub mod writer;

pub use config::Config;
