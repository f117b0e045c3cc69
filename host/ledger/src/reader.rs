//! Readers: read-only connections for worker threads, the CLI and plugins'
//! host queries. WAL lets them read a consistent snapshot while the writer
//! commits.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;
use wasmpay_domain::{Currency, MerchantId, Money, PaymentId, RequestId, UserId};

use crate::accounts;
use crate::op::Fields;
use crate::outcome::OpResult;
use crate::payments::{self, PaymentInfo};
use crate::schema;
use crate::types::{Balance, Balances, Owner, Principal};
use crate::{Ledger, LedgerError};

/// A read-only connection. `Send`: open one per worker thread.
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
}

/// One page of a listing, newest first. Pass `next_after` back as `after`
/// for the next (older) page; `None` means this was the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
}

/// One posting to one of an owner's accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The journal entry (also the paging cursor).
    pub seq: i64,
    pub at_ms: i64,
    /// The operation: `deposit`, `payment`, `capture`, `refund`, ...
    pub op: String,
    /// Signed: positive credits the account.
    pub amount: Money,
    pub balance_after: Money,
    pub payment_id: Option<PaymentId>,
    /// The id of the request that caused it, as its sender chose it.
    pub request_id: String,
    /// Who sent that request: `user:alice`, `merchant:m-shop` or `admin`.
    pub principal: String,
    /// The merchant of a payment operation (payment, hold, capture, void,
    /// refund, payout).
    pub merchant: Option<MerchantId>,
    /// The payer of a payment operation.
    pub payer: Option<UserId>,
    /// The payer's memo of a payment or hold, or a refund's reason.
    pub memo: Option<String>,
}

impl fmt::Display for Page<HistoryEntry> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>8}  {:>13}  {:<12}  {:>20}  {:>20}  {:<28}  {:<16}  {:<16}  memo",
            "seq", "at_ms", "op", "amount", "balance after", "payment", "merchant", "payer"
        )?;
        for e in &self.items {
            writeln!(
                f,
                "{:>8}  {:>13}  {:<12}  {:>20}  {:>20}  {:<28}  {:<16}  {:<16}  {}",
                e.seq,
                e.at_ms,
                e.op,
                e.amount.to_string(),
                e.balance_after.to_string(),
                e.payment_id.as_ref().map_or("-", PaymentId::as_str),
                e.merchant.as_ref().map_or("-", MerchantId::as_str),
                e.payer.as_ref().map_or("-", UserId::as_str),
                e.memo.as_deref().unwrap_or("-"),
            )?;
        }
        match self.next_after {
            Some(after) => writeln!(f, "more: --after {after}"),
            None => Ok(()),
        }
    }
}

/// The longest history page served, whatever the caller asks.
pub const HISTORY_PAGE_MAX: u32 = 1_000;

impl Reader {
    /// Opens a read-only connection to a ledger file a [`Ledger`] created.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Ok(Self {
            conn: schema::open_reader(path)?,
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn balance(&self, owner: &Owner, currency: Currency) -> Result<Balance, LedgerError> {
        balance(&self.conn, owner, currency)
    }

    pub fn balances(&self, owner: &Owner) -> Result<Balances, LedgerError> {
        balances(&self.conn, owner)
    }

    pub fn history(
        &self,
        owner: &Owner,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<HistoryEntry>, LedgerError> {
        history(&self.conn, owner, after, limit)
    }

    pub fn payment(
        &self,
        merchant: &MerchantId,
        id: &PaymentId,
    ) -> Result<Option<PaymentInfo>, LedgerError> {
        Ok(payments::load(&self.conn, merchant, id)?.map(|row| row.info))
    }

    pub fn payer_activity(
        &self,
        merchant: &MerchantId,
        payer: &UserId,
        currency: Currency,
        since_ms: i64,
    ) -> Result<(u32, Money), LedgerError> {
        payer_activity(&self.conn, merchant, payer, currency, since_ms)
    }

    pub fn account_exists(&self, owner: &Owner, currency: Currency) -> Result<bool, LedgerError> {
        Ok(accounts::find(&self.conn, owner, currency)?.is_some())
    }

    pub fn merchant_exists(&self, merchant: &MerchantId) -> Result<bool, LedgerError> {
        merchant_exists(&self.conn, merchant)
    }

    /// The idempotency pre-check from a worker thread, like
    /// [`Ledger::lookup`]. A `None` here may be answered by a concurrent
    /// commit before the op reaches the writer, which checks again inside its
    /// transaction: this saves a plugin run, it does not guarantee one.
    pub fn lookup(
        &self,
        principal: &Principal,
        key: &RequestId,
        fields: &Fields,
    ) -> Result<Option<OpResult>, LedgerError> {
        crate::writer::find_request(&self.conn, &principal.key(), key.as_str(), fields)
    }
}

/// The same queries on the writer's connection, for the pipeline's checks
/// that must see the writer's own latest state.
impl Ledger {
    pub fn balance(&self, owner: &Owner, currency: Currency) -> Result<Balance, LedgerError> {
        balance(self.conn(), owner, currency)
    }

    pub fn payment(
        &self,
        merchant: &MerchantId,
        id: &PaymentId,
    ) -> Result<Option<PaymentInfo>, LedgerError> {
        Ok(payments::load(self.conn(), merchant, id)?.map(|row| row.info))
    }

    pub fn merchant_exists(&self, merchant: &MerchantId) -> Result<bool, LedgerError> {
        merchant_exists(self.conn(), merchant)
    }
}

fn balance(conn: &Connection, owner: &Owner, currency: Currency) -> Result<Balance, LedgerError> {
    accounts::find(conn, owner, currency)?
        .map(|account| account.balance())
        .ok_or_else(|| LedgerError::AccountNotFound {
            owner: owner.clone(),
            currency,
        })
}

fn balances(conn: &Connection, owner: &Owner) -> Result<Balances, LedgerError> {
    Ok(Balances {
        owner: owner.clone(),
        balances: accounts::all_of(conn, owner)?
            .iter()
            .map(accounts::Account::balance)
            .collect(),
    })
}

fn merchant_exists(conn: &Connection, merchant: &MerchantId) -> Result<bool, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM accounts WHERE owner_kind = 'merchant' AND owner_id = ?1 AND sub = 'main' LIMIT 1",
    )?;
    Ok(stmt.exists(params![merchant.as_str()])?)
}

/// The postings of one account older than `?2`, newest first, each with its
/// journal entry and, for a payment operation, the payment's payer (capture,
/// void and refund requests name only the merchant and the payment).
const HISTORY_SQL: &str = "SELECT p.seq, p.amount, p.balance_after, j.at_ms, j.op, j.payment_id,
            j.key, j.principal, json_extract(j.request, '$.merchant'), py.payer,
            coalesce(json_extract(j.request, '$.memo'), json_extract(j.request, '$.reason'))
     FROM postings p JOIN journal j ON j.seq = p.seq
     LEFT JOIN payments py
       ON py.merchant = json_extract(j.request, '$.merchant') AND py.payment_id = j.payment_id
     WHERE p.account = ?1 AND p.seq < ?2 ORDER BY p.seq DESC LIMIT ?3";

const PAYER_ACTIVITY_SQL: &str = "SELECT count(*),
            coalesce(sum(CASE status WHEN 'captured' THEN captured ELSE authorized END), 0)
     FROM payments
     WHERE merchant = ?1 AND payer = ?2 AND currency = ?3 AND created_at_ms >= ?4
       AND status IN ('held', 'captured')";

/// Postings of every account of `owner` with `seq < after` (all of them
/// when `after` is `None`), newest first. An owner has one account per
/// currency and an entry posts to an account at most once, so the entry's
/// `seq` is a sound cursor.
fn history(
    conn: &Connection,
    owner: &Owner,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<HistoryEntry>, LedgerError> {
    let limit = limit.clamp(1, HISTORY_PAGE_MAX) as usize;
    let before = after.unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(HISTORY_SQL)?;
    // One ordered index range per account (there are few), merged here: a
    // single query over all of them would sort the owner's whole history.
    let mut items = Vec::new();
    for account in accounts::all_of(conn, owner)? {
        let rows = stmt.query_map(params![account.id, before, limit as i64 + 1], |r| {
            Ok(Row {
                seq: r.get(0)?,
                amount: r.get(1)?,
                balance_after: r.get(2)?,
                at_ms: r.get(3)?,
                op: r.get(4)?,
                payment_id: r.get(5)?,
                request_id: r.get(6)?,
                principal: r.get(7)?,
                merchant: r.get(8)?,
                payer: r.get(9)?,
                memo: r.get(10)?,
            })
        })?;
        for row in rows {
            let row = row?;
            items.push(HistoryEntry {
                seq: row.seq,
                at_ms: row.at_ms,
                op: row.op,
                amount: Money::from_minor(row.amount, account.currency),
                balance_after: Money::from_minor(row.balance_after, account.currency),
                payment_id: row
                    .payment_id
                    .map(PaymentId::new)
                    .transpose()
                    .map_err(LedgerError::corrupt)?,
                request_id: row.request_id,
                principal: row.principal,
                merchant: row
                    .merchant
                    .map(MerchantId::new)
                    .transpose()
                    .map_err(LedgerError::corrupt)?,
                payer: row
                    .payer
                    .map(UserId::new)
                    .transpose()
                    .map_err(LedgerError::corrupt)?,
                memo: row.memo,
            });
        }
    }
    items.sort_by_key(|e| std::cmp::Reverse(e.seq));
    let next_after = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Page { items, next_after })
}

/// One row of [`HISTORY_SQL`], as stored.
struct Row {
    seq: i64,
    amount: i64,
    balance_after: i64,
    at_ms: i64,
    op: String,
    payment_id: Option<String>,
    request_id: String,
    principal: String,
    merchant: Option<String>,
    payer: Option<String>,
    memo: Option<String>,
}

/// Approved payments and open or captured authorizations of `payer` with
/// `merchant` in `currency` created at or after `since_ms`: how many, and
/// their volume (captured amount, or the held amount while open). Served
/// from a covering index: plugins call it per payment.
fn payer_activity(
    conn: &Connection,
    merchant: &MerchantId,
    payer: &UserId,
    currency: Currency,
    since_ms: i64,
) -> Result<(u32, Money), LedgerError> {
    let mut stmt = conn.prepare_cached(PAYER_ACTIVITY_SQL)?;
    let (count, volume): (i64, i64) = stmt.query_row(
        params![merchant.as_str(), payer.as_str(), currency.code(), since_ms],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((
        u32::try_from(count).unwrap_or(u32::MAX),
        Money::from_minor(volume, currency),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::FIND_REQUEST_SQL;
    use crate::{Ledger, LedgerOptions};

    /// The query plan's lines for `sql`.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Parameters stay unbound (NULL): only the plan is wanted.
        let mut rows = stmt.raw_query();
        let mut lines = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            lines.push(row.get::<_, String>(3).unwrap());
        }
        lines.join("; ")
    }

    #[test]
    fn hot_queries_are_served_by_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.db"), LedgerOptions::default()).unwrap();
        let conn = ledger.conn();
        let activity = plan(conn, PAYER_ACTIVITY_SQL);
        assert!(
            activity.contains("COVERING INDEX payments_by_payer"),
            "{activity}"
        );
        let history = plan(conn, HISTORY_SQL);
        assert!(history.contains("INDEX postings_by_account"), "{history}");
        assert!(history.contains("PRIMARY KEY"), "{history}");
        let lookup = plan(conn, FIND_REQUEST_SQL);
        assert!(!lookup.contains("SCAN"), "{lookup}");
    }
}
