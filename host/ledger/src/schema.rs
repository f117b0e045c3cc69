//! The database file: connection settings and versioned migrations.
//!
//! The schema version lives in `PRAGMA user_version`; the list of migrations
//! below is the only place the schema is defined. A file from a newer build is
//! refused rather than guessed at. `PRAGMA application_id` marks the file as a
//! wasmpay ledger so that a path mix-up fails loudly.

use std::ffi::CStr;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::LedgerError;
use crate::page_cache::{self, PageCache};
use crate::wal_writes;

/// `wasp` in ASCII: marks a wasmpay ledger file.
pub(crate) const APPLICATION_ID: i64 = 0x7761_7370;

/// How long a connection waits on another's lock before failing. Readers and
/// the writer share the file through WAL, so waits happen only around
/// checkpoints; five seconds is far beyond any healthy one.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: every hot-path statement fits.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Page cache per connection, in KiB (SQLite's default is 2 MiB). Payment
/// and request keys are hashes, so their index inserts land on random pages;
/// a cache that holds the hot index pages keeps writes from re-reading them
/// through the kernel as history grows.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL pages before the writer checkpoints them into the database (SQLite's
/// default is 1 000, about 4 MiB). Payment ids, idempotency keys and payers
/// land on random index pages, so every commit dirties pages all over the
/// file; a longer interval lets a checkpoint write a page once for many
/// commits. Measured on a 200k-entry ledger: about 18% less CPU per payment
/// than the default (BENCHMARKS.md). The WAL file grows to about 40 MiB.
/// Used with `Checkpoint::InCommit` only: with the background checkpointer
/// its WAL hook replaces SQLite's automatic checkpoint.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
const READER_CACHE_KIB: i64 = 16 * 1024;
const CHECKPOINTER_CACHE_KIB: i64 = 256;

/// Schema migrations, in order; migration `i` takes the file from version `i`
/// to `i + 1`. Never edit one that has shipped: append.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, journal with hash chain, postings, idempotency records,
    // payments and holds, the plugin registry.
    r#"
    CREATE TABLE accounts (
        id              INTEGER PRIMARY KEY,
        owner_kind      TEXT    NOT NULL CHECK (owner_kind IN ('user', 'merchant', 'platform', 'world')),
        owner_id        TEXT    NOT NULL,
        sub             TEXT    NOT NULL,
        currency        TEXT    NOT NULL,
        overdraft_kind  TEXT    NOT NULL CHECK (overdraft_kind IN ('none', 'limit', 'unbounded')),
        overdraft_limit INTEGER NOT NULL CHECK (overdraft_limit >= 0),
        -- The sum of the account's postings, kept for O(1) balance checks.
        balance         INTEGER NOT NULL DEFAULT 0,
        -- The sum of the account's open authorizations.
        held            INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
        opened_seq      INTEGER NOT NULL,
        UNIQUE (owner_kind, owner_id, sub, currency)
    );

    -- One row per decided operation (applied or refused), chained by hash.
    CREATE TABLE journal (
        seq        INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        op         TEXT    NOT NULL,
        principal  TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        payment_id TEXT,
        request    TEXT    NOT NULL,
        plugin     TEXT,
        applied    INTEGER NOT NULL CHECK (applied IN (0, 1)),
        outcome    TEXT    NOT NULL,
        prev_hash  BLOB    NOT NULL,
        hash       BLOB    NOT NULL
    );

    -- Legs of a journal entry; clustered by entry so that verify and the
    -- hash chain read them in one sequential pass. References to the journal
    -- are checked at commit: an operation writes its postings before its
    -- journal entry, whose hash covers them.
    CREATE TABLE postings (
        seq           INTEGER NOT NULL REFERENCES journal (seq) DEFERRABLE INITIALLY DEFERRED,
        leg           INTEGER NOT NULL,
        account       INTEGER NOT NULL REFERENCES accounts (id),
        amount        INTEGER NOT NULL CHECK (amount <> 0),
        balance_after INTEGER NOT NULL,
        PRIMARY KEY (seq, leg)
    ) WITHOUT ROWID;
    CREATE INDEX postings_by_account ON postings (account, seq, leg);

    -- Idempotency records: the outcome lives in the journal entry. Columns
    -- that name journal entries here and in `payments` carry no foreign key:
    -- SQLite checks a new parent row against every child table, and an
    -- unindexed child column would make each insert scan the table (verify
    -- checks them instead).
    CREATE TABLE requests (
        principal TEXT    NOT NULL,
        key       TEXT    NOT NULL,
        fields    TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        at_ms     INTEGER NOT NULL,
        PRIMARY KEY (principal, key)
    ) WITHOUT ROWID;
    CREATE INDEX requests_by_time ON requests (at_ms);

    -- Payments and authorizations (holds), for capture, void, refund and the
    -- plugins' payer-activity queries.
    CREATE TABLE payments (
        merchant       TEXT    NOT NULL,
        payment_id     TEXT    NOT NULL,
        payer          TEXT    NOT NULL,
        payer_account  INTEGER NOT NULL REFERENCES accounts (id),
        currency       TEXT    NOT NULL,
        kind           TEXT    NOT NULL CHECK (kind IN ('payment', 'hold')),
        status         TEXT    NOT NULL CHECK (status IN ('held', 'captured', 'voided', 'expired')),
        authorized     INTEGER NOT NULL CHECK (authorized > 0),
        captured       INTEGER NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= authorized),
        refunded       INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= captured),
        settlement     TEXT    NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        created_seq    INTEGER NOT NULL,
        expires_at_ms  INTEGER,
        captured_at_ms INTEGER,
        closed_seq     INTEGER,
        PRIMARY KEY (merchant, payment_id)
    ) WITHOUT ROWID;
    -- Covering index for payer_activity, which plugins call per payment.
    CREATE INDEX payments_by_payer
        ON payments (merchant, payer, currency, created_at_ms, status, authorized, captured);
    CREATE INDEX holds_by_expiry ON payments (expires_at_ms) WHERE status = 'held';

    -- The end of the hash chain, so that a deleted last entry is noticed.
    CREATE TABLE chain_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash BLOB    NOT NULL
    );
    INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

    -- Plugin registry: component bytes by hash, versions per merchant,
    -- activations (a stack, for rollback), precompiled artifacts.
    CREATE TABLE plugin_blobs (
        sha256 TEXT PRIMARY KEY,
        wasm   BLOB NOT NULL
    );
    CREATE TABLE plugin_versions (
        merchant       TEXT    NOT NULL,
        version        INTEGER NOT NULL CHECK (version > 0),
        sha256         TEXT    NOT NULL REFERENCES plugin_blobs (sha256),
        size           INTEGER NOT NULL,
        config         TEXT    NOT NULL,
        uploaded_at_ms INTEGER NOT NULL,
        PRIMARY KEY (merchant, version)
    ) WITHOUT ROWID;
    CREATE TABLE plugin_activations (
        id                INTEGER PRIMARY KEY,
        merchant          TEXT    NOT NULL,
        version           INTEGER NOT NULL,
        activated_at_ms   INTEGER NOT NULL,
        rolled_back_at_ms INTEGER,
        FOREIGN KEY (merchant, version) REFERENCES plugin_versions (merchant, version)
    );
    CREATE INDEX plugin_activations_live
        ON plugin_activations (merchant, id) WHERE rolled_back_at_ms IS NULL;
    CREATE TABLE plugin_artifacts (
        sha256      TEXT NOT NULL,
        engine_hash TEXT NOT NULL,
        artifact    BLOB NOT NULL,
        PRIMARY KEY (sha256, engine_hash)
    );
    "#,
];

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether commits wait for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged payment survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a process crash, may lose the
    /// last commits on power loss. Faster at small batch sizes.
    Normal,
}

fn synchronous_pragma(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

fn configure(conn: &Connection, cache_kib: i64) -> Result<(), LedgerError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.pragma_update(None, "foreign_keys", true)?;
    // Negative: a size in KiB rather than in pages.
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // Savepoints (one per operation) copy each page they touch to a
    // statement journal first; keep it in memory rather than a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // rusqlite clears a cached statement's bindings when it goes back to the
    // cache, and SQLite expires a statement whose plan may depend on a bound
    // value when its bindings change: without the query planner stability
    // guarantee, such statements were re-prepared on every use (measured:
    // the idempotency lookup, once per operation). Stable plans are what a
    // ledger wants anyway.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn check_identity(conn: &Connection) -> Result<(i64, i64), LedgerError> {
    let application_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(LedgerError::NotALedger {
            found: application_id,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok((application_id, version))
}

/// Opens a connection with the ledger's settings and a page cache of
/// `cache_kib`, through the file layer `vfs` (SQLite's default if `None`),
/// after choosing SQLite's page cache for the process (which only the first
/// connection can).
fn connect(
    path: &Path,
    flags: OpenFlags,
    cache_kib: i64,
    vfs: Option<&CStr>,
) -> Result<Connection, LedgerError> {
    page_cache::configure(PageCache::default());
    let conn = match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs)?,
        None => Connection::open_with_flags(path, flags)?,
    };
    configure(&conn, cache_kib)?;
    Ok(conn)
}

/// [`connect`] for the writer: under `synchronous = FULL` through
/// [`wal_writes::VFS_NAME`], which gathers each commit's log writes into a
/// few large ones (safe only where every commit syncs the log before other
/// connections may read its frames: see `wal_writes`).
fn connect_writer(path: &Path, synchronous: Synchronous) -> Result<Connection, LedgerError> {
    let vfs = match synchronous {
        Synchronous::Normal => None,
        Synchronous::Full => match wal_writes::register() {
            Ok(()) => Some(wal_writes::VFS_NAME),
            Err(rc) => {
                tracing::warn!(
                    rc,
                    "gathered log writes unavailable; the writer writes each frame"
                );
                None
            }
        },
    };
    connect(path, OpenFlags::default(), WRITER_CACHE_KIB, vfs)
}

/// Opens (creating if needed) the writer's connection and migrates the file.
pub(crate) fn open_writer(
    path: &Path,
    synchronous: Synchronous,
) -> Result<Connection, LedgerError> {
    let mut conn = connect_writer(path, synchronous)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::InvalidOptions(format!(
            "the file system refused WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", synchronous_pragma(synchronous))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    let (application_id, version) = check_identity(&conn)?;
    if version == 0 && application_id == 0 {
        // A fresh file (or an empty one): refuse one that has tables already.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(LedgerError::NotALedger { found: 0 });
        }
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = from + 1, "ledger schema migrated");
    }
    Ok(conn)
}

/// Opens the checkpointer's connection to a file the writer has opened: it
/// writes only database pages copied from the log, never a transaction.
pub(crate) fn open_checkpointer(
    path: &Path,
    synchronous: Synchronous,
) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    // The copy goes from the log to the file; it needs no page cache.
    let conn = connect(path, flags, CHECKPOINTER_CACHE_KIB, None)?;
    conn.pragma_update(None, "synchronous", synchronous_pragma(synchronous))?;
    // Reading the file opens this connection's view of the log, without
    // which its checkpoints find nothing to copy.
    check_identity(&conn)?;
    Ok(conn)
}

/// Opens a read-only connection to a file a writer has initialised.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = connect(path, flags, READER_CACHE_KIB, None)?;
    let (_, version) = check_identity(&conn)?;
    if version < SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooOld {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}
