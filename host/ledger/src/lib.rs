//! The wasmpay ledger: double-entry books in one SQLite file, and the only
//! code in wasmpay that knows SQL.
//!
//! The pipeline hands it decided requests and gets back outcomes to reply
//! with; workers read balances and history through [`Reader`]s. The parts,
//! in the order a payment meets them:
//!
//! - [`op`]: the operations ([`Op`], [`OpKind`]) and their client fields.
//! - `writer`: [`Ledger`], the single writer: group commit
//!   ([`Ledger::apply_batch`]), idempotency, holds, expiry sweeps.
//! - `accounts`, `payments`: the rows an operation checks and changes.
//! - `journal`: the hash-chained audit log every decided operation appends to.
//! - [`outcome`]: receipts, refusals (stable codes) and conflicts.
//! - `reader`: [`Reader`], balances, history, payments, payer activity.
//! - `verify`: [`VerifyReport`], the full consistency check.
//! - `plugins`: the plugin registry (component bytes, versions, activation,
//!   precompiled artifacts), kept in the same file so one file holds
//!   everything a restart needs.
//! - `schema`: pragmas and versioned migrations.
//! - `checkpoint`: [`Checkpoint`], copying the write-ahead log into the
//!   file on a thread of its own, so that no commit waits for the copy.
//! - [`page_cache`]: SQLite's page cache with the lock page's key moved out
//!   of its way, so that a commit does not walk every cached page.
//!
//! Invariants: every journal entry's postings sum to zero per currency
//! (asserted before commit: a violation is a bug and panics); an account's
//! stored balance is the sum of its postings and its held amount the sum of
//! its open holds; a key is applied at most once per principal.
//!
//! Money is `i64` minor units end to end; the lint below keeps floats out.
#![deny(clippy::float_arithmetic)]

mod accounts;
mod checkpoint;
mod error;
mod journal;
pub mod op;
pub mod outcome;
pub mod page_cache;
mod payments;
mod plugins;
mod reader;
mod schema;
mod types;
mod verify;
pub mod wal_writes;
mod writer;

pub use checkpoint::{CHECKPOINT_START_PAGES, Checkpoint, TAIL_BACKSTOP_PAGES};
pub use error::LedgerError;
pub use op::{Fields, Op, OpKind, PaymentDecided, RefundDecided};
pub use outcome::{Effect, OpResult, Outcome, REFUSAL_CODES, Receipt, Refusal};
pub use payments::{PaymentInfo, PaymentKind, PaymentStatus};
pub use plugins::PluginVersionInfo;
pub use reader::{HISTORY_PAGE_MAX, HistoryEntry, Page, Reader};
pub use schema::Synchronous;
pub use types::{Balance, Balances, Overdraft, Owner, Principal};
pub use verify::{Problem, VerifyReport};
pub use writer::{EXPIRED_HOLDS_PER_CALL_MAX, IDEMPOTENCY_RETENTION_MS_MIN, Ledger, LedgerOptions};
