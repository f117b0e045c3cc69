//! The writer: the one connection that changes the books.
//!
//! [`Ledger::apply_batch`] is group commit: one SQLite transaction for the
//! whole batch. For each operation it
//!
//! 1. answers from the idempotency record if the key was seen (a replay, or a
//!    conflict if the parameters differ);
//! 2. runs the operation's checks and writes (accounts, holds, postings);
//!    a refusal undoes whatever the operation wrote (see [`Undo`]);
//! 3. appends a journal entry (hash-chained, covering the postings and the
//!    outcome) and the idempotency record pointing at it.
//!
//! A refusal or an unexpected per-operation error leaves the neighbours
//! alone; a storage failure (I/O, full disk, ...) fails the whole batch and
//! nothing of it is written.
//!
//! A batch first runs without a savepoint per operation: almost every
//! refusal comes from a check made before the operation writes anything, so
//! there is nothing to undo. A savepoint copies each page an operation is the
//! first to touch into SQLite's statement journal and frees the copies at
//! release; measured, that was about a fifth of the writer's time per
//! payment (BENCHMARKS.md, "The writer without a savepoint per operation").
//! If an operation is refused after it wrote, or fails unexpectedly, that
//! attempt's transaction is rolled back whole and the batch runs again with a
//! savepoint per operation, as before; the outcomes are the same either way.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use wasmpay_domain::{
    Currency, MerchantId, Money, MoneyError, PaymentId, RequestId, Settlement, SubAccount, UserId,
};

use crate::accounts::{self, Account, Leg, Posted};
use crate::checkpoint::{self, Checkpoint, Checkpointer};
use crate::journal::{self, EntryFields, GENESIS, HashedLeg};
use crate::op::{Fields, Op, OpKind, PaymentDecided, RefundDecided};
use crate::outcome::{Effect, OpResult, Outcome, Receipt, Refusal};
use crate::payments::{self, NewPayment, PaymentKind, PaymentStatus};
use crate::schema::{self, Synchronous};
use crate::types::{Balance, Overdraft, Owner, Principal};
use crate::{LedgerError, reader};

/// The shortest idempotency retention accepted: a client retrying within a
/// day must never be charged twice.
pub const IDEMPOTENCY_RETENTION_MS_MIN: i64 = 24 * 60 * 60 * 1000;

/// Expired holds released per [`Ledger::release_expired_holds`] call, so one
/// sweep never holds the write lock for long; the daemon calls again.
pub const EXPIRED_HOLDS_PER_CALL_MAX: usize = 1_000;

/// How the ledger is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    pub synchronous: Synchronous,
    /// How long idempotency records are kept before
    /// [`Ledger::purge_idempotency`] may drop them. At least 24 hours.
    pub idempotency_retention_ms: i64,
    /// How many sub-accounts (besides `main`) a merchant may have; plugins
    /// name them, so they must be bounded.
    pub merchant_subaccounts_max: usize,
    /// Who copies the write-ahead log into the file.
    pub checkpoint: Checkpoint,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            idempotency_retention_ms: 7 * IDEMPOTENCY_RETENTION_MS_MIN,
            merchant_subaccounts_max: 16,
            checkpoint: Checkpoint::Background,
        }
    }
}

/// The last journal entry: the next entry chains onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// The ledger's writer. Owns the single connection that writes; open one per
/// file.
#[derive(Debug)]
pub struct Ledger {
    /// Declared first so that it stops before the writer's connection closes.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    options: LedgerOptions,
    head: Head,
    path: PathBuf,
    /// Batches that ran a second time with a savepoint per operation.
    batches_rerun: u64,
}

/// How a refused operation's writes are undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// A savepoint per operation: any refusal or unexpected error rolls back
    /// to it, and the batch goes on.
    Savepoint,
    /// No savepoint: a refusal that wrote nothing needs no undo (SQLite's
    /// count of changed rows on this connection says so); any other refusal
    /// or unexpected error abandons the attempt ([`Step::Rerun`]).
    NothingWritten,
}

/// What one operation of an attempt came to.
enum Step {
    Done(OpResult),
    /// Its writes cannot be undone alone: run the batch again with
    /// [`Undo::Savepoint`].
    Rerun,
}

/// Why an operation did not apply: refused (stored as its outcome) or a
/// storage error (classified by [`is_fatal`]).
#[derive(Debug)]
pub(crate) enum Fail {
    Refused(Refusal),
    Error(LedgerError),
}

impl From<Refusal> for Fail {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<LedgerError> for Fail {
    fn from(error: LedgerError) -> Self {
        Self::Error(error)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(error: rusqlite::Error) -> Self {
        Self::Error(error.into())
    }
}

impl From<MoneyError> for Fail {
    fn from(error: MoneyError) -> Self {
        Self::Refused(error.into())
    }
}

/// Whether an error must fail the whole batch: anything from SQLite other
/// than a constraint or value error confined to one statement. Those (and
/// unreadable rows) are bugs or tampering local to one operation, which is
/// refused with `internal_error` while its neighbours go on.
fn is_fatal(error: &LedgerError) -> bool {
    use rusqlite::ErrorCode;
    match error {
        LedgerError::Storage(rusqlite::Error::SqliteFailure(failure, _)) => !matches!(
            failure.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        ),
        LedgerError::Storage(rusqlite::Error::SqlInputError { .. }) => true,
        LedgerError::Storage(_) | LedgerError::Corrupt(_) => false,
        _ => true,
    }
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger file at `path`.
    pub fn open(path: &Path, options: LedgerOptions) -> Result<Self, LedgerError> {
        if options.idempotency_retention_ms < IDEMPOTENCY_RETENTION_MS_MIN {
            return Err(LedgerError::InvalidOptions(format!(
                "idempotency_retention_ms is {}, below the minimum {IDEMPOTENCY_RETENTION_MS_MIN} (24 h)",
                options.idempotency_retention_ms
            )));
        }
        let mut conn = schema::open_writer(path, options.synchronous)?;
        let checkpointer = match options.checkpoint {
            Checkpoint::Background => {
                Some(Checkpointer::start(&mut conn, path, options.synchronous)?)
            }
            Checkpoint::InCommit => None,
        };
        let head = conn
            .query_row(
                "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        let head = match head {
            None => Head {
                seq: 0,
                hash: GENESIS,
            },
            Some((seq, hash)) => Head {
                seq,
                hash: hash.try_into().map_err(|_| {
                    LedgerError::corrupt(format!("journal entry {seq} has a malformed hash"))
                })?,
            },
        };
        Ok(Self {
            checkpointer,
            conn,
            options,
            head,
            path: path.to_owned(),
            batches_rerun: 0,
        })
    }

    pub fn options(&self) -> &LedgerOptions {
        &self.options
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the write-ahead log's last pages into the file if the
    /// checkpointer thread has copied the rest ([`Checkpoint::Background`]),
    /// so that the log starts over at the next commit, and says whether it
    /// did. Call it between batches, once their replies are on their way: it
    /// syncs the file, and whatever it costs then delays no reply already
    /// decided. Storage errors are logged, not returned: nothing of the
    /// books changes here, and the next threshold tries again.
    pub fn checkpoint_tail(&mut self) -> bool {
        let due = self
            .checkpointer
            .as_ref()
            .is_some_and(Checkpointer::take_tail);
        if due {
            checkpoint::copy_tail(|mode| self.conn.wal_checkpoint_v2(None::<&str>, mode));
        }
        due
    }

    /// Opens a read-only connection to the same file.
    pub fn reader(&self) -> Result<reader::Reader, LedgerError> {
        reader::Reader::open(&self.path)
    }

    /// The writer's connection, for this crate's tests and the registry.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Applies one operation (a batch of one).
    pub fn apply(&mut self, op: Op) -> Result<OpResult, LedgerError> {
        let mut results = self.apply_batch(vec![op])?;
        Ok(results.remove(0))
    }

    /// Applies `ops` in order in one transaction (group commit) and returns
    /// one result per op, in order. On `Err`, nothing was written. Takes
    /// operations or references to them, so that a caller that keeps its
    /// operations (the daemon, for the replies) need not copy them.
    pub fn apply_batch<O: Borrow<Op>>(
        &mut self,
        ops: Vec<O>,
    ) -> Result<Vec<OpResult>, LedgerError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(results) = self.attempt(&ops, Undo::NothingWritten)? {
            return Ok(results);
        }
        self.batches_rerun += 1;
        tracing::debug!(
            ops = ops.len(),
            "an operation was refused after writing: the batch runs again with savepoints"
        );
        self.attempt(&ops, Undo::Savepoint)?.ok_or_else(|| {
            LedgerError::corrupt("a batch with savepoints asked to run again (a bug)")
        })
    }

    /// Batches that had to run a second time with a savepoint per operation
    /// since the ledger was opened (see the module docs).
    pub fn batches_rerun(&self) -> u64 {
        self.batches_rerun
    }

    /// Runs `ops` in one transaction and commits it, or rolls it back and
    /// returns `None` if an operation asks for a rerun.
    fn attempt<O: Borrow<Op>>(
        &mut self,
        ops: &[O],
        undo: Undo,
    ) -> Result<Option<Vec<OpResult>>, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = self.head;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match apply_one(&tx, &self.options, &mut head, op.borrow(), undo)? {
                Step::Done(result) => results.push(result),
                Step::Rerun => {
                    tx.rollback()?;
                    return Ok(None);
                }
            }
        }
        if head != self.head {
            set_chain_head(&tx, head)?;
        }
        tx.commit()?;
        // Only now is the new head real: a failed batch keeps the old one.
        self.head = head;
        Ok(Some(results))
    }

    /// The idempotency pre-check, before running a plugin: the stored outcome
    /// (replayed), a conflict, or `None` if the key is new.
    pub fn lookup(
        &self,
        principal: &Principal,
        key: &RequestId,
        fields: &Fields,
    ) -> Result<Option<OpResult>, LedgerError> {
        find_request(&self.conn, &principal.key(), key.as_str(), fields)
    }

    /// Releases up to [`EXPIRED_HOLDS_PER_CALL_MAX`] authorizations whose
    /// expiry is at or before `now_ms`, each as its own journal entry (so
    /// the payer's history shows it). The daemon calls this periodically;
    /// fewer receipts than the maximum means none are left.
    pub fn release_expired_holds(&mut self, now_ms: i64) -> Result<Vec<Receipt>, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = self.head;
        let mut receipts = Vec::new();
        for (merchant, payment_id) in
            payments::expired_holds(&tx, now_ms, EXPIRED_HOLDS_PER_CALL_MAX)?
        {
            let row = payments::load(&tx, &merchant, &payment_id)?
                .ok_or_else(|| LedgerError::corrupt(format!("hold {payment_id} vanished")))?;
            let seq = head.seq + 1;
            let payer = release_hold(&tx, row.payer_account, row.info.authorized)?;
            payments::close(&tx, &row.info, PaymentStatus::Expired, 0, now_ms, seq)?;
            let receipt = Receipt {
                seq,
                at_ms: now_ms,
                effect: Effect::Expired {
                    payment_id: payment_id.clone(),
                    released: row.info.authorized,
                    payer_balance: payer.balance(),
                },
            };
            let request = serde_json::json!({
                "op": "expire_hold",
                "merchant": merchant,
                "payment_id": payment_id,
                "now_ms": now_ms,
            });
            let entry = Entry {
                at_ms: now_ms,
                op: "expire_hold",
                principal: "system",
                key: payment_id.as_str(),
                payment_id: Some(payment_id.as_str()),
                request: &request.to_string(),
                plugin: None,
            };
            let outcome = Outcome::Applied(receipt.clone());
            head = append_journal(&tx, head, &entry, &outcome, &[])?;
            receipts.push(receipt);
        }
        if head != self.head {
            set_chain_head(&tx, head)?;
        }
        tx.commit()?;
        self.head = head;
        Ok(receipts)
    }

    /// Drops idempotency records older than the retention at `now_ms`, and
    /// returns how many. Journal entries stay (they are the audit trail);
    /// payment ids stay unique, so even a very late duplicate payment is
    /// refused with `payment_exists` rather than charged twice.
    pub fn purge_idempotency(&mut self, now_ms: i64) -> Result<usize, LedgerError> {
        let cutoff = now_ms.saturating_sub(self.options.idempotency_retention_ms);
        let purged = self
            .conn
            .execute("DELETE FROM requests WHERE at_ms < ?1", params![cutoff])?;
        Ok(purged)
    }
}

fn set_chain_head(conn: &Connection, head: Head) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached("UPDATE chain_head SET seq = ?1, hash = ?2 WHERE id = 1")?;
    stmt.execute(params![head.seq, &head.hash[..]])?;
    Ok(())
}

pub(crate) const FIND_REQUEST_SQL: &str = "SELECT r.fields, j.outcome
     FROM requests r JOIN journal j ON j.seq = r.seq
     WHERE r.principal = ?1 AND r.key = ?2";

/// Looks up a stored request: replay if the fields match, conflict if not.
pub(crate) fn find_request(
    conn: &Connection,
    principal: &str,
    key: &str,
    fields: &Fields,
) -> Result<Option<OpResult>, LedgerError> {
    let mut stmt = conn.prepare_cached(FIND_REQUEST_SQL)?;
    let Some((stored_fields, outcome)) = stmt
        .query_row(params![principal, key], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let stored: BTreeMap<String, String> = serde_json::from_str(&stored_fields)
        .map_err(|e| LedgerError::corrupt(format!("request {principal}/{key} fields: {e}")))?;
    let mut differing: Vec<String> = stored
        .iter()
        .filter(|(name, value)| fields.get(name.as_str()) != Some(value))
        .map(|(name, _)| name.clone())
        .collect();
    differing.extend(
        fields
            .keys()
            .filter(|name| !stored.contains_key(**name))
            .map(|name| (*name).to_owned()),
    );
    if !differing.is_empty() {
        differing.sort();
        return Ok(Some(OpResult::Conflict { differing }));
    }
    let outcome: Outcome = serde_json::from_str(&outcome)
        .map_err(|e| LedgerError::corrupt(format!("request {principal}/{key} outcome: {e}")))?;
    Ok(Some(OpResult::Done {
        outcome,
        replayed: true,
    }))
}

/// Runs SQL that cannot take parameters (savepoint control) from the cache.
fn exec(conn: &Connection, sql: &str) -> Result<(), LedgerError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// One operation inside the batch transaction (see the module docs).
/// Returns `Err` only for errors that must fail the whole batch.
fn apply_one(
    conn: &Connection,
    options: &LedgerOptions,
    head: &mut Head,
    op: &Op,
    undo: Undo,
) -> Result<Step, LedgerError> {
    let principal = op.principal.key();
    let fields = op.kind.fields();
    if let Some(found) = find_request(conn, &principal, op.key.as_str(), &fields)? {
        return Ok(Step::Done(found));
    }
    if undo == Undo::Savepoint {
        exec(conn, "SAVEPOINT op")?;
    }
    match decide_and_record(conn, options, *head, op, &principal, &fields, undo) {
        Ok(Some((outcome, new_head))) => {
            if undo == Undo::Savepoint {
                exec(conn, "RELEASE op")?;
            }
            *head = new_head;
            Ok(Step::Done(OpResult::Done {
                outcome,
                replayed: false,
            }))
        }
        Ok(None) => Ok(Step::Rerun),
        Err(error) if is_fatal(&error) => Err(error),
        Err(_) if undo == Undo::NothingWritten => Ok(Step::Rerun),
        Err(error) => {
            exec(conn, "ROLLBACK TO op")?;
            exec(conn, "RELEASE op")?;
            tracing::error!(
                principal,
                key = op.key.as_str(),
                op = op.kind.name(),
                %error,
                "ledger operation failed unexpectedly; refused without storing"
            );
            Ok(Step::Done(OpResult::Done {
                outcome: Outcome::Refused(Refusal::Internal {
                    message: error.to_string(),
                }),
                replayed: false,
            }))
        }
    }
}

/// Decides `op` and records it; `None` if it was refused after writing and
/// `undo` has no savepoint to go back to.
fn decide_and_record(
    conn: &Connection,
    options: &LedgerOptions,
    head: Head,
    op: &Op,
    principal: &str,
    fields: &Fields,
    undo: Undo,
) -> Result<Option<(Outcome, Head)>, LedgerError> {
    let seq = head.seq + 1;
    let ctx = Ctx {
        conn,
        options,
        seq,
        at_ms: op.at_ms,
        principal: &op.principal,
    };
    let changes_before = conn.total_changes();
    let (outcome, legs) = match execute(&ctx, &op.kind) {
        Ok((effect, posted)) => {
            let legs: Vec<HashedLeg> = posted.into_iter().map(|p| p.hashed).collect();
            let receipt = Receipt {
                seq,
                at_ms: op.at_ms,
                effect,
            };
            (Outcome::Applied(receipt), legs)
        }
        Err(Fail::Refused(refusal)) => {
            // Undo whatever the operation wrote before it was refused; the
            // refusal itself is recorded below.
            match undo {
                Undo::Savepoint => exec(conn, "ROLLBACK TO op")?,
                Undo::NothingWritten if conn.total_changes() != changes_before => {
                    return Ok(None);
                }
                Undo::NothingWritten => {}
            }
            (Outcome::Refused(refusal), Vec::new())
        }
        Err(Fail::Error(error)) => return Err(error),
    };
    let request = serde_json::to_string(&op.kind).map_err(LedgerError::corrupt)?;
    let plugin = journal::plugin_column(op.kind.plugin());
    let entry = Entry {
        at_ms: op.at_ms,
        op: op.kind.name(),
        principal,
        key: op.key.as_str(),
        payment_id: op.kind.payment_id().map(PaymentId::as_str),
        request: &request,
        plugin: plugin.as_deref(),
    };
    let new_head = append_journal(conn, head, &entry, &outcome, &legs)?;
    let fields_json = serde_json::to_string(fields).map_err(LedgerError::corrupt)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO requests (principal, key, fields, seq, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![
        principal,
        op.key.as_str(),
        fields_json,
        seq,
        op.at_ms
    ])?;
    Ok(Some((outcome, new_head)))
}

/// The journal columns an operation supplies.
struct Entry<'a> {
    at_ms: i64,
    op: &'a str,
    principal: &'a str,
    key: &'a str,
    payment_id: Option<&'a str>,
    request: &'a str,
    plugin: Option<&'a str>,
}

fn append_journal(
    conn: &Connection,
    head: Head,
    entry: &Entry<'_>,
    outcome: &Outcome,
    legs: &[HashedLeg],
) -> Result<Head, LedgerError> {
    let seq = head.seq + 1;
    let outcome_json = serde_json::to_string(outcome).map_err(LedgerError::corrupt)?;
    let applied = matches!(outcome, Outcome::Applied(_));
    let hash = EntryFields {
        seq,
        at_ms: entry.at_ms,
        prev_hash: &head.hash,
        op: entry.op,
        principal: entry.principal,
        key: entry.key,
        payment_id: entry.payment_id,
        request: entry.request,
        plugin: entry.plugin,
        applied,
        outcome: &outcome_json,
        legs,
    }
    .hash();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO journal (seq, at_ms, op, principal, key, payment_id, request, plugin, applied,
                              outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    stmt.execute(params![
        seq,
        entry.at_ms,
        entry.op,
        entry.principal,
        entry.key,
        entry.payment_id,
        entry.request,
        entry.plugin,
        applied,
        outcome_json,
        &head.hash[..],
        &hash[..],
    ])?;
    Ok(Head { seq, hash })
}

/// What every operation needs to know about where it runs.
struct Ctx<'a> {
    conn: &'a Connection,
    options: &'a LedgerOptions,
    /// The journal entry this operation will be.
    seq: i64,
    at_ms: i64,
    principal: &'a Principal,
}

type Executed = Result<(Effect, Vec<Posted>), Fail>;

fn execute(ctx: &Ctx<'_>, kind: &OpKind) -> Executed {
    match kind {
        OpKind::OpenAccount {
            owner,
            currency,
            overdraft,
        } => open_account(ctx, owner, *currency, *overdraft),
        OpKind::Deposit { user, amount } => deposit(ctx, user, *amount),
        OpKind::Payout {
            merchant,
            account,
            amount,
        } => payout(ctx, merchant, account, *amount),
        OpKind::Payment {
            payer,
            merchant,
            payment_id,
            amount,
            decision,
            ..
        } => pay(ctx, payer, merchant, payment_id, *amount, decision, None),
        OpKind::Authorize {
            payer,
            merchant,
            payment_id,
            amount,
            decision,
            expires_at_ms,
            ..
        } => pay(
            ctx,
            payer,
            merchant,
            payment_id,
            *amount,
            decision,
            Some(*expires_at_ms),
        ),
        OpKind::Capture {
            merchant,
            payment_id,
            amount,
        } => capture(ctx, merchant, payment_id, *amount),
        OpKind::Void {
            merchant,
            payment_id,
            ..
        } => void(ctx, merchant, payment_id),
        OpKind::Refund {
            merchant,
            payment_id,
            amount,
            decision,
            ..
        } => refund(ctx, merchant, payment_id, *amount, decision),
    }
}

impl Ctx<'_> {
    /// Capability check first: the pipeline derives principals from topics,
    /// and the ledger refuses anything a principal may not do regardless.
    fn allow(&self, allowed: bool, op: &str) -> Result<(), Refusal> {
        if allowed || *self.principal == Principal::Admin {
            Ok(())
        } else {
            Err(Refusal::Forbidden {
                principal: self.principal.key(),
                op: op.to_owned(),
            })
        }
    }

    fn is_user(&self, user: &UserId) -> bool {
        matches!(self.principal, Principal::User(u) if u == user)
    }

    fn is_merchant(&self, merchant: &MerchantId) -> bool {
        matches!(self.principal, Principal::Merchant(m) if m == merchant)
    }

    fn account(&self, owner: &Owner, currency: Currency) -> Result<Account, Fail> {
        accounts::find(self.conn, owner, currency)?.ok_or_else(|| {
            Fail::Refused(Refusal::AccountNotFound {
                owner: owner.clone(),
                currency,
            })
        })
    }

    /// The platform or world account in `currency`, opened on first use.
    fn on_demand(&self, owner: Owner, currency: Currency) -> Result<Account, Fail> {
        if let Some(account) = accounts::find(self.conn, &owner, currency)? {
            return Ok(account);
        }
        let overdraft = match owner {
            Owner::World => Overdraft::Unbounded,
            _ => Overdraft::None,
        };
        Ok(accounts::insert(
            self.conn, &owner, currency, overdraft, self.seq,
        )?)
    }

    /// A merchant's sub-account, opened on its first credit within the
    /// sub-account limit.
    fn merchant_account(
        &self,
        merchant: &MerchantId,
        sub: &SubAccount,
        currency: Currency,
    ) -> Result<Account, Fail> {
        let owner = Owner::merchant(merchant, sub);
        if let Some(account) = accounts::find(self.conn, &owner, currency)? {
            return Ok(account);
        }
        check_subaccount_room(self, merchant, sub)?;
        Ok(accounts::insert(
            self.conn,
            &owner,
            currency,
            Overdraft::None,
            self.seq,
        )?)
    }
}

fn check_subaccount_room(
    ctx: &Ctx<'_>,
    merchant: &MerchantId,
    sub: &SubAccount,
) -> Result<(), Fail> {
    if sub.is_main() || accounts::subaccount_named(ctx.conn, merchant.as_str(), sub.as_str())? {
        return Ok(());
    }
    let max = ctx.options.merchant_subaccounts_max;
    if accounts::subaccount_count(ctx.conn, merchant.as_str())? >= max {
        return Err(Fail::Refused(Refusal::SubaccountLimit {
            merchant: merchant.clone(),
            account: sub.clone(),
            max,
        }));
    }
    Ok(())
}

fn positive(what: &str, amount: Money) -> Result<(), Refusal> {
    if amount.minor() > 0 {
        Ok(())
    } else {
        Err(Refusal::InvalidAmount {
            what: what.to_owned(),
            amount,
        })
    }
}

fn same_currency(expected: Currency, found: Currency) -> Result<(), Refusal> {
    if expected == found {
        Ok(())
    } else {
        Err(Refusal::CurrencyMismatch { expected, found })
    }
}

/// Refuses a debit of `amount` that would take `account`'s available balance
/// beyond its overdraft policy.
fn check_funds(account: &Account, amount: Money) -> Result<(), Refusal> {
    let after = account
        .available()
        .checked_sub(amount.minor())
        .ok_or(Refusal::Overflow)?;
    if account.overdraft.allows(after) {
        Ok(())
    } else {
        Err(Refusal::InsufficientFunds {
            owner: account.owner.clone(),
            needed: amount,
            available: Money::from_minor(account.available(), account.currency),
            overdraft: account.overdraft,
        })
    }
}

fn open_account(
    ctx: &Ctx<'_>,
    owner: &Owner,
    currency: Currency,
    overdraft: Overdraft,
) -> Executed {
    ctx.allow(false, "open accounts")?;
    if matches!(owner, Owner::Platform | Owner::World) {
        return Err(Refusal::AccountNotOpenable {
            owner: owner.clone(),
        }
        .into());
    }
    if let Overdraft::Limit(limit) = overdraft {
        same_currency(currency, limit.currency())?;
        if limit.is_negative() {
            return Err(Refusal::InvalidAmount {
                what: "overdraft limit".to_owned(),
                amount: limit,
            }
            .into());
        }
    }
    if accounts::find(ctx.conn, owner, currency)?.is_some() {
        return Err(Refusal::AccountExists {
            owner: owner.clone(),
            currency,
        }
        .into());
    }
    if let Owner::Merchant { merchant, account } = owner {
        check_subaccount_room(ctx, merchant, account)?;
    }
    accounts::insert(ctx.conn, owner, currency, overdraft, ctx.seq)?;
    let effect = Effect::AccountOpened {
        owner: owner.clone(),
        currency,
        overdraft,
    };
    Ok((effect, Vec::new()))
}

fn deposit(ctx: &Ctx<'_>, user: &UserId, amount: Money) -> Executed {
    ctx.allow(ctx.is_user(user), "deposit")?;
    positive("deposit", amount)?;
    let account = ctx.account(&Owner::user(user), amount.currency())?;
    let world = ctx.on_demand(Owner::World, amount.currency())?;
    let posted = accounts::post(
        ctx.conn,
        ctx.seq,
        vec![Leg::debit(&world, amount)?, Leg::credit(&account, amount)],
    )?;
    let effect = Effect::Deposited {
        user: user.clone(),
        amount,
        balance: accounts::balance_after(&posted, &account),
    };
    Ok((effect, posted))
}

fn payout(ctx: &Ctx<'_>, merchant: &MerchantId, sub: &SubAccount, amount: Money) -> Executed {
    ctx.allow(ctx.is_merchant(merchant), "pay out")?;
    positive("payout", amount)?;
    let account = ctx.account(&Owner::merchant(merchant, sub), amount.currency())?;
    check_funds(&account, amount)?;
    let world = ctx.on_demand(Owner::World, amount.currency())?;
    let posted = accounts::post(
        ctx.conn,
        ctx.seq,
        vec![Leg::debit(&account, amount)?, Leg::credit(&world, amount)],
    )?;
    let effect = Effect::PaidOut {
        merchant: merchant.clone(),
        account: sub.clone(),
        amount,
        balance: accounts::balance_after(&posted, &account),
    };
    Ok((effect, posted))
}

/// Refuses a settlement that does not balance or mixes currencies. The
/// caller built it with `Quote::settle`, so this is a second line of defence
/// against a host bug, not plugin input.
fn check_settlement(amount: Money, settlement: &Settlement) -> Result<(), Refusal> {
    let currency = amount.currency();
    let all = [settlement.payer_total, settlement.platform_fee]
        .into_iter()
        .chain(settlement.merchant_credits.values().copied());
    for money in all.clone() {
        same_currency(currency, money.currency())?;
    }
    let invalid = |reason: String| Err(Refusal::InvalidSettlement { reason });
    if settlement.payer_total.minor() <= 0 {
        return invalid(format!(
            "payer total {} is not positive",
            settlement.payer_total
        ));
    }
    if let Some(negative) = all.into_iter().find(|m| m.is_negative()) {
        return invalid(format!("negative credit {negative}"));
    }
    let credited = settlement.credited()?;
    if credited != settlement.payer_total {
        return invalid(format!(
            "credits add up to {credited}, not the payer's total {}",
            settlement.payer_total
        ));
    }
    Ok(())
}

/// The credit legs of a settlement: merchant accounts (sub-accounts opened
/// on demand) and the platform fee.
fn credit_legs(
    ctx: &Ctx<'_>,
    merchant: &MerchantId,
    main: &Account,
    settlement: &Settlement,
) -> Result<Vec<Leg>, Fail> {
    let currency = settlement.payer_total.currency();
    let mut legs = Vec::with_capacity(settlement.merchant_credits.len() + 2);
    for (sub, credit) in &settlement.merchant_credits {
        if credit.is_zero() {
            continue;
        }
        let account = if sub.is_main() {
            main.clone()
        } else {
            ctx.merchant_account(merchant, sub, currency)?
        };
        legs.push(Leg::credit(&account, *credit));
    }
    if !settlement.platform_fee.is_zero() {
        let platform = ctx.on_demand(Owner::Platform, currency)?;
        legs.push(Leg::credit(&platform, settlement.platform_fee));
    }
    Ok(legs)
}

/// A payment (`expires_at_ms: None`) or an authorization.
fn pay(
    ctx: &Ctx<'_>,
    payer: &UserId,
    merchant: &MerchantId,
    payment_id: &PaymentId,
    amount: Money,
    decision: &PaymentDecided,
    expires_at_ms: Option<i64>,
) -> Executed {
    ctx.allow(ctx.is_user(payer), "pay")?;
    positive("payment amount", amount)?;
    let (settlement, plugin, lines) = match decision {
        PaymentDecided::Declined { decline, plugin } => {
            return Err(Refusal::PaymentDeclined {
                decline: decline.clone(),
                plugin: plugin.clone(),
            }
            .into());
        }
        PaymentDecided::Approved {
            settlement,
            plugin,
            quote,
        } => (settlement, plugin, &quote.lines),
    };
    check_settlement(amount, settlement)?;
    if let Some(expires_at_ms) = expires_at_ms
        && expires_at_ms <= ctx.at_ms
    {
        return Err(Refusal::InvalidExpiry {
            expires_at_ms,
            at_ms: ctx.at_ms,
        }
        .into());
    }
    if payments::exists(ctx.conn, merchant, payment_id)? {
        return Err(Refusal::PaymentExists {
            merchant: merchant.clone(),
            payment_id: payment_id.clone(),
        }
        .into());
    }
    let currency = amount.currency();
    let payer_account = ctx.account(&Owner::user(payer), currency)?;
    let main = ctx.account(&Owner::merchant_main(merchant), currency)?;
    let total = settlement.payer_total;
    check_funds(&payer_account, total)?;
    // Resolved for holds too, so that a capture can never hit the
    // sub-account limit.
    let credits = credit_legs(ctx, merchant, &main, settlement)?;
    let kind = match expires_at_ms {
        None => PaymentKind::Payment,
        Some(_) => PaymentKind::Hold,
    };
    payments::insert(
        ctx.conn,
        &NewPayment {
            merchant,
            payment_id,
            payer,
            payer_account: payer_account.id,
            kind,
            settlement,
            at_ms: ctx.at_ms,
            seq: ctx.seq,
            expires_at_ms,
        },
    )?;
    match expires_at_ms {
        None => {
            let mut legs = vec![Leg::debit(&payer_account, total)?];
            legs.extend(credits);
            let posted = accounts::post(ctx.conn, ctx.seq, legs)?;
            let effect = Effect::Paid {
                payment_id: payment_id.clone(),
                lines: lines.clone(),
                settlement: settlement.clone(),
                payer_balance: accounts::balance_after(&posted, &payer_account),
                plugin: plugin.clone(),
            };
            Ok((effect, posted))
        }
        Some(expires_at_ms) => {
            let held = payer_account
                .held
                .checked_add(total.minor())
                .ok_or(Refusal::Overflow)?;
            accounts::set_held(ctx.conn, payer_account.id, held)?;
            let effect = Effect::Authorized {
                payment_id: payment_id.clone(),
                lines: lines.clone(),
                settlement: settlement.clone(),
                expires_at_ms,
                payer_balance: Balance::from_posted(payer_account.balance, held, currency),
                plugin: plugin.clone(),
            };
            Ok((effect, Vec::new()))
        }
    }
}

/// Loads a payment of `merchant` or refuses with `payment_not_found`.
fn find_payment(
    ctx: &Ctx<'_>,
    merchant: &MerchantId,
    payment_id: &PaymentId,
) -> Result<payments::PaymentRow, Fail> {
    payments::load(ctx.conn, merchant, payment_id)?.ok_or_else(|| {
        Fail::Refused(Refusal::PaymentNotFound {
            merchant: merchant.clone(),
            payment_id: payment_id.clone(),
        })
    })
}

/// Refuses to close a hold that is not open.
fn check_open_hold(info: &payments::PaymentInfo) -> Result<(), Refusal> {
    let payment_id = info.payment_id.clone();
    if info.kind == PaymentKind::Payment {
        return Err(Refusal::NotAHold { payment_id });
    }
    match info.status {
        PaymentStatus::Held => Ok(()),
        PaymentStatus::Captured => Err(Refusal::AlreadyCaptured { payment_id }),
        PaymentStatus::Voided => Err(Refusal::AlreadyVoided { payment_id }),
        PaymentStatus::Expired => Err(Refusal::HoldExpired {
            payment_id,
            expires_at_ms: info.expires_at_ms.unwrap_or_default(),
        }),
    }
}

/// Takes `amount` off the payer account's held total and returns the
/// account as it is now.
fn release_hold(
    conn: &Connection,
    payer_account: i64,
    amount: Money,
) -> Result<Account, LedgerError> {
    let mut account = accounts::by_id(conn, payer_account)?;
    let held = account.held - amount.minor();
    if held < 0 {
        return Err(LedgerError::corrupt(format!(
            "account {} holds {} but a hold of {amount} is open",
            account.owner, account.held
        )));
    }
    accounts::set_held(conn, account.id, held)?;
    account.held = held;
    Ok(account)
}

/// The settlement of a partial capture of `captured` out of an authorized
/// `settlement`: everything goes to the merchant's main account, less the
/// platform fee scaled to the captured share (rounded half up); sub-account
/// credits are not posted. What was not captured goes back to the payer.
fn partial_settlement(settlement: &Settlement, captured: Money) -> Result<Settlement, Refusal> {
    let total = i128::from(settlement.payer_total.minor());
    let scaled = i128::from(settlement.platform_fee.minor()) * i128::from(captured.minor());
    let (quotient, remainder) = (scaled / total, scaled % total);
    let fee = if remainder * 2 >= total {
        quotient + 1
    } else {
        quotient
    };
    let fee = Money::from_minor(
        i64::try_from(fee).map_err(|_| Refusal::Overflow)?,
        captured.currency(),
    );
    let main = captured.checked_sub(fee)?;
    let mut merchant_credits = BTreeMap::new();
    if !main.is_zero() {
        merchant_credits.insert(SubAccount::main(), main);
    }
    Ok(Settlement {
        payer_total: captured,
        merchant_credits,
        platform_fee: fee,
    })
}

fn capture(
    ctx: &Ctx<'_>,
    merchant: &MerchantId,
    payment_id: &PaymentId,
    amount: Option<Money>,
) -> Executed {
    ctx.allow(ctx.is_merchant(merchant), "capture")?;
    let row = find_payment(ctx, merchant, payment_id)?;
    let info = &row.info;
    check_open_hold(info)?;
    let expires_at_ms = info.expires_at_ms.unwrap_or(i64::MAX);
    if ctx.at_ms >= expires_at_ms {
        return Err(Refusal::HoldExpired {
            payment_id: payment_id.clone(),
            expires_at_ms,
        }
        .into());
    }
    let authorized = info.authorized;
    let captured = amount.unwrap_or(authorized);
    same_currency(info.currency, captured.currency())?;
    positive("capture", captured)?;
    if captured.minor() > authorized.minor() {
        return Err(Refusal::CaptureExceedsAuthorized {
            requested: captured,
            authorized,
        }
        .into());
    }
    let settlement = if captured == authorized {
        info.settlement.clone()
    } else {
        partial_settlement(&info.settlement, captured)?
    };
    let main = ctx.account(&Owner::merchant_main(merchant), info.currency)?;
    let credits = credit_legs(ctx, merchant, &main, &settlement)?;
    let payer = release_hold(ctx.conn, row.payer_account, authorized)?;
    let mut legs = vec![Leg::debit(&payer, captured)?];
    legs.extend(credits);
    let posted = accounts::post(ctx.conn, ctx.seq, legs)?;
    payments::close(
        ctx.conn,
        info,
        PaymentStatus::Captured,
        captured.minor(),
        ctx.at_ms,
        ctx.seq,
    )?;
    let effect = Effect::Captured {
        payment_id: payment_id.clone(),
        settlement,
        released: authorized.checked_sub(captured)?,
        payer_balance: accounts::balance_after(&posted, &payer),
    };
    Ok((effect, posted))
}

fn void(ctx: &Ctx<'_>, merchant: &MerchantId, payment_id: &PaymentId) -> Executed {
    ctx.allow(ctx.is_merchant(merchant), "void")?;
    let row = find_payment(ctx, merchant, payment_id)?;
    check_open_hold(&row.info)?;
    let payer = release_hold(ctx.conn, row.payer_account, row.info.authorized)?;
    payments::close(
        ctx.conn,
        &row.info,
        PaymentStatus::Voided,
        0,
        ctx.at_ms,
        ctx.seq,
    )?;
    let effect = Effect::Voided {
        payment_id: payment_id.clone(),
        released: row.info.authorized,
        payer_balance: payer.balance(),
    };
    Ok((effect, Vec::new()))
}

fn refund(
    ctx: &Ctx<'_>,
    merchant: &MerchantId,
    payment_id: &PaymentId,
    amount: Money,
    decision: &RefundDecided,
) -> Executed {
    ctx.allow(ctx.is_merchant(merchant), "refund")?;
    positive("refund", amount)?;
    let row = find_payment(ctx, merchant, payment_id)?;
    let info = &row.info;
    same_currency(info.currency, amount.currency())?;
    if info.status != PaymentStatus::Captured {
        return Err(Refusal::PaymentNotCaptured {
            payment_id: payment_id.clone(),
        }
        .into());
    }
    let (fee, plugin) = match decision {
        RefundDecided::Denied { decline, plugin } => {
            return Err(Refusal::RefundDenied {
                decline: decline.clone(),
                plugin: plugin.clone(),
            }
            .into());
        }
        RefundDecided::Allowed { fee, plugin } => {
            (fee.unwrap_or(Money::zero(info.currency)), plugin)
        }
    };
    same_currency(info.currency, fee.currency())?;
    if fee.is_negative() || fee.minor() > amount.minor() {
        return Err(Refusal::InvalidRefundFee { fee, amount }.into());
    }
    // Checked here, inside the write transaction: two racing refunds are
    // serialized by the single writer and the second sees the first.
    let refunded_total = info.refunded.checked_add(amount)?;
    if refunded_total.minor() > info.captured.minor() {
        return Err(Refusal::RefundExceedsCaptured {
            requested: amount,
            captured: info.captured,
            refunded: info.refunded,
        }
        .into());
    }
    let returned = amount.checked_sub(fee)?;
    let main = ctx.account(&Owner::merchant_main(merchant), info.currency)?;
    let payer = accounts::by_id(ctx.conn, row.payer_account)?;
    check_funds(&main, returned)?;
    let posted = accounts::post(
        ctx.conn,
        ctx.seq,
        vec![Leg::debit(&main, returned)?, Leg::credit(&payer, returned)],
    )?;
    payments::set_refunded(ctx.conn, info, refunded_total.minor())?;
    let effect = Effect::Refunded {
        payment_id: payment_id.clone(),
        amount,
        fee,
        refunded_total,
        payer_balance: accounts::balance_after(&posted, &payer),
        plugin: plugin.clone(),
    };
    Ok((effect, posted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;
    use wasmpay_domain::RequestId;

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("EUR").unwrap())
    }

    fn op(key: &str, kind: OpKind) -> Op {
        Op {
            principal: Principal::Admin,
            key: RequestId::new(key).unwrap(),
            at_ms: 1,
            kind,
        }
    }

    #[test]
    fn a_storage_failure_fails_the_whole_batch_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.db"), LedgerOptions::default()).unwrap();
        let alice = UserId::new("alice").unwrap();
        ledger
            .apply(op(
                "open",
                OpKind::OpenAccount {
                    owner: Owner::user(&alice),
                    currency: eur(0).currency(),
                    overdraft: Overdraft::None,
                },
            ))
            .unwrap();
        let deposit = |key: &str| {
            op(
                key,
                OpKind::Deposit {
                    user: alice.clone(),
                    amount: eur(5),
                },
            )
        };
        // Cap the file at its current size: the batch's writes need new
        // pages, so SQLite fails with SQLITE_FULL part-way through.
        let pages: i64 = ledger
            .conn()
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        ledger
            .conn()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big: Vec<Op> = (0..2_000).map(|i| deposit(&format!("d{i}"))).collect();
        let error = ledger.apply_batch(big).unwrap_err();
        assert!(is_fatal(&error), "{error}");
        ledger
            .conn()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        let balance = ledger
            .balance(&Owner::user(&alice), eur(0).currency())
            .unwrap();
        assert_eq!(balance.available, eur(0));
        // The ledger goes on from the old head.
        let result = ledger.apply(deposit("after")).unwrap();
        assert_eq!(result.receipt().unwrap().seq, 2);
        let report = ledger.verify().unwrap();
        assert!(report.is_clean(), "{report}");
    }

    #[test]
    fn partial_captures_scale_the_platform_fee_half_up() {
        let settlement = Settlement {
            payer_total: eur(1_000),
            merchant_credits: BTreeMap::from([(SubAccount::main(), eur(985))]),
            platform_fee: eur(15),
        };
        let half = partial_settlement(&settlement, eur(500)).unwrap();
        assert_eq!(half.platform_fee, eur(8)); // 7.5 -> 8
        assert_eq!(half.merchant_credits[&SubAccount::main()], eur(492));
        assert_eq!(half.credited().unwrap(), eur(500));
        let tiny = partial_settlement(&settlement, eur(1)).unwrap();
        assert_eq!(tiny.platform_fee, eur(0));
    }
}
