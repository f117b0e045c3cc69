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

/// One page of a listing, oldest first. Pass `next_after` back as `after`
/// for the next page; `None` means this was the last.
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
}

impl fmt::Display for Page<HistoryEntry> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>8}  {:>13}  {:<12}  {:>20}  {:>20}  payment",
            "seq", "at_ms", "op", "amount", "balance after"
        )?;
        for e in &self.items {
            writeln!(
                f,
                "{:>8}  {:>13}  {:<12}  {:>20}  {:>20}  {}",
                e.seq,
                e.at_ms,
                e.op,
                e.amount.to_string(),
                e.balance_after.to_string(),
                e.payment_id.as_ref().map_or("-", PaymentId::as_str)
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

const HISTORY_SQL: &str = "SELECT p.seq, p.amount, p.balance_after, j.at_ms, j.op, j.payment_id
     FROM postings p JOIN journal j ON j.seq = p.seq
     WHERE p.account = ?1 AND p.seq > ?2 ORDER BY p.seq LIMIT ?3";

const PAYER_ACTIVITY_SQL: &str = "SELECT count(*),
            coalesce(sum(CASE status WHEN 'captured' THEN captured ELSE authorized END), 0)
     FROM payments
     WHERE merchant = ?1 AND payer = ?2 AND currency = ?3 AND created_at_ms >= ?4
       AND status IN ('held', 'captured')";

/// Postings of every account of `owner` with `seq > after`, oldest first.
/// An owner has one account per currency and an entry posts to an account at
/// most once, so the entry's `seq` is a sound cursor.
fn history(
    conn: &Connection,
    owner: &Owner,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<HistoryEntry>, LedgerError> {
    let limit = limit.clamp(1, HISTORY_PAGE_MAX) as usize;
    let after = after.unwrap_or(0);
    let mut stmt = conn.prepare_cached(HISTORY_SQL)?;
    // One ordered index range per account (there are few), merged here: a
    // single query over all of them would sort the owner's whole history.
    let mut items = Vec::new();
    for account in accounts::all_of(conn, owner)? {
        let rows = stmt.query_map(params![account.id, after, limit as i64 + 1], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (seq, amount, balance_after, at_ms, op, payment_id) = row?;
            let payment_id = payment_id
                .map(PaymentId::new)
                .transpose()
                .map_err(LedgerError::corrupt)?;
            items.push(HistoryEntry {
                seq,
                at_ms,
                op,
                amount: Money::from_minor(amount, account.currency),
                balance_after: Money::from_minor(balance_after, account.currency),
                payment_id,
            });
        }
    }
    items.sort_by_key(|e| e.seq);
    let next_after = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Page { items, next_after })
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
