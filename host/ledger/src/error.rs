//! Operating errors of the ledger itself (storage, files, registry misuse).
//!
//! A refused payment is not an error: it is an [`Outcome`](crate::Outcome)
//! with a [`Refusal`](crate::Refusal). A `LedgerError` means the ledger could
//! not do its job; when `apply_batch` returns one, nothing of the batch was
//! written.

use wasmpay_domain::{Currency, MerchantId};

use crate::types::Owner;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed (I/O, full disk, corruption, lock contention).
    #[error("ledger storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The file was written by a newer wasmpay; refusing to touch it.
    #[error(
        "ledger file is schema version {found}, newer than this build supports ({supported}); upgrade wasmpay"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// The file has not been initialised (or migrated) by a writer yet.
    #[error(
        "ledger file is schema version {found}, older than this build's {supported}; open it with a Ledger (the writer) first to migrate it"
    )]
    SchemaTooOld { found: i64, supported: i64 },
    /// The file is an SQLite database that belongs to something else.
    #[error("not a wasmpay ledger file (application id {found:#x})")]
    NotALedger { found: i64 },
    #[error("invalid ledger options: {0}")]
    InvalidOptions(String),
    /// A stored row could not be read back (tampering or a bug); `verify`
    /// names the details.
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    #[error("no {currency} account for {owner}")]
    AccountNotFound { owner: Owner, currency: Currency },
    #[error("plugin bytes hash to {computed}, not the given {given}")]
    PluginHashMismatch { given: String, computed: String },
    #[error("merchant {merchant} has no plugin version {version}")]
    PluginVersionNotFound { merchant: MerchantId, version: u32 },
    #[error("merchant {merchant} has no earlier active plugin version to roll back to")]
    NoPluginToRollBackTo { merchant: MerchantId },
}

impl LedgerError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}
