//! Account rows: finding, opening and posting to them.
//!
//! Balances are kept in the row (`balance` = sum of postings, `held` = sum of
//! open authorizations) so that a funds check is one indexed read; `verify`
//! recomputes both from the postings and holds.

use rusqlite::{Connection, OptionalExtension, params};
use wasmpay_domain::{Currency, Money};

use crate::LedgerError;
use crate::journal::HashedLeg;
use crate::outcome::Refusal;
use crate::types::{Balance, Overdraft, Owner};
use crate::writer::Fail;

/// One account as read inside a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: i64,
    pub owner: Owner,
    pub currency: Currency,
    pub balance: i64,
    pub held: i64,
    pub overdraft: Overdraft,
}

impl Account {
    pub(crate) fn balance(&self) -> Balance {
        Balance::from_posted(self.balance, self.held, self.currency)
    }

    /// Available balance in minor units (posted less held).
    pub(crate) fn available(&self) -> i64 {
        self.balance.saturating_sub(self.held)
    }
}

pub(crate) fn parse_currency(code: &str) -> Result<Currency, LedgerError> {
    Currency::parse(code).map_err(|_| LedgerError::corrupt(format!("unknown currency `{code}`")))
}

const ACCOUNT_COLUMNS: &str =
    "id, owner_kind, owner_id, sub, currency, balance, held, overdraft_kind, overdraft_limit";

fn read_account(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Account, LedgerError>> {
    let id: i64 = row.get(0)?;
    let (kind, owner_id, sub): (String, String, String) = (row.get(1)?, row.get(2)?, row.get(3)?);
    let currency: String = row.get(4)?;
    let balance: i64 = row.get(5)?;
    let held: i64 = row.get(6)?;
    let overdraft_kind: String = row.get(7)?;
    let limit: i64 = row.get(8)?;
    Ok((|| {
        let currency = parse_currency(&currency)?;
        let owner = Owner::from_columns(&kind, &owner_id, &sub)
            .ok_or_else(|| LedgerError::corrupt(format!("account {id} has a bad owner")))?;
        let overdraft = Overdraft::from_columns(&overdraft_kind, limit, currency)
            .ok_or_else(|| LedgerError::corrupt(format!("account {id} has a bad overdraft")))?;
        Ok(Account {
            id,
            owner,
            currency,
            balance,
            held,
            overdraft,
        })
    })())
}

/// The account of `owner` in `currency`, if it is open.
pub(crate) fn find(
    conn: &Connection,
    owner: &Owner,
    currency: Currency,
) -> Result<Option<Account>, LedgerError> {
    let (kind, id, sub) = owner.columns();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts
         WHERE owner_kind = ?1 AND owner_id = ?2 AND sub = ?3 AND currency = ?4"
    ))?;
    stmt.query_row(params![kind, id, sub, currency.code()], read_account)
        .optional()?
        .transpose()
}

pub(crate) fn by_id(conn: &Connection, id: i64) -> Result<Account, LedgerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
    ))?;
    stmt.query_row(params![id], read_account)
        .optional()?
        .ok_or_else(|| LedgerError::corrupt(format!("account {id} is missing")))?
}

/// Every account of `owner`, sorted by currency.
pub(crate) fn all_of(conn: &Connection, owner: &Owner) -> Result<Vec<Account>, LedgerError> {
    let (kind, id, sub) = owner.columns();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts
         WHERE owner_kind = ?1 AND owner_id = ?2 AND sub = ?3 ORDER BY currency"
    ))?;
    let rows = stmt.query_map(params![kind, id, sub], read_account)?;
    let mut accounts = Vec::new();
    for row in rows {
        accounts.push(row??);
    }
    Ok(accounts)
}

/// Inserts a new account; the caller has checked that it does not exist.
pub(crate) fn insert(
    conn: &Connection,
    owner: &Owner,
    currency: Currency,
    overdraft: Overdraft,
    seq: i64,
) -> Result<Account, LedgerError> {
    let (kind, id, sub) = owner.columns();
    let (overdraft_kind, limit) = overdraft.columns();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO accounts (owner_kind, owner_id, sub, currency, overdraft_kind, overdraft_limit, opened_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    stmt.execute(params![
        kind,
        id,
        sub,
        currency.code(),
        overdraft_kind,
        limit,
        seq
    ])?;
    Ok(Account {
        id: conn.last_insert_rowid(),
        owner: owner.clone(),
        currency,
        balance: 0,
        held: 0,
        overdraft,
    })
}

/// How many sub-accounts (other than `main`) a merchant has, in any currency.
pub(crate) fn subaccount_count(conn: &Connection, merchant: &str) -> Result<usize, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT count(DISTINCT sub) FROM accounts
         WHERE owner_kind = 'merchant' AND owner_id = ?1 AND sub <> 'main'",
    )?;
    let count: i64 = stmt.query_row(params![merchant], |r| r.get(0))?;
    Ok(usize::try_from(count).unwrap_or(usize::MAX))
}

/// Whether the merchant already has a sub-account of this name (in any
/// currency): a new currency of an existing name does not count against the
/// limit.
pub(crate) fn subaccount_named(
    conn: &Connection,
    merchant: &str,
    sub: &str,
) -> Result<bool, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM accounts WHERE owner_kind = 'merchant' AND owner_id = ?1 AND sub = ?2 LIMIT 1",
    )?;
    Ok(stmt.exists(params![merchant, sub])?)
}

pub(crate) fn set_held(conn: &Connection, id: i64, held: i64) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached("UPDATE accounts SET held = ?1 WHERE id = ?2")?;
    stmt.execute(params![held, id])?;
    Ok(())
}

/// One side of a transaction being built: `amount` is added to the account's
/// balance (negative for a debit).
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub account: i64,
    pub owner: Owner,
    pub currency: Currency,
    pub amount: i64,
}

impl Leg {
    pub(crate) fn new(account: &Account, amount: i64) -> Self {
        Self {
            account: account.id,
            owner: account.owner.clone(),
            currency: account.currency,
            amount,
        }
    }

    pub(crate) fn credit(account: &Account, amount: Money) -> Self {
        Self::new(account, amount.minor())
    }

    pub(crate) fn debit(account: &Account, amount: Money) -> Result<Self, Refusal> {
        let minor = amount.minor().checked_neg().ok_or(Refusal::Overflow)?;
        Ok(Self::new(account, minor))
    }
}

/// A posted leg: what the journal hashes and what the account became.
#[derive(Debug, Clone)]
pub(crate) struct Posted {
    pub account: i64,
    pub hashed: HashedLeg,
    pub balance_after: i64,
    pub held: i64,
    pub currency: Currency,
}

/// Merges legs per account, asserts that they sum to zero per currency,
/// then updates balances and inserts the postings of entry `seq`.
///
/// An unbalanced set of legs is a bug in this crate, never bad input, so it
/// panics: committing it would corrupt the books.
pub(crate) fn post(conn: &Connection, seq: i64, legs: Vec<Leg>) -> Result<Vec<Posted>, Fail> {
    let mut merged: Vec<Leg> = Vec::with_capacity(legs.len());
    for leg in legs {
        match merged.iter_mut().find(|m| m.account == leg.account) {
            Some(m) => m.amount = m.amount.checked_add(leg.amount).ok_or(Refusal::Overflow)?,
            None => merged.push(leg),
        }
    }
    merged.retain(|leg| leg.amount != 0);
    let mut sums: Vec<(Currency, i128)> = Vec::new();
    for leg in &merged {
        match sums.iter_mut().find(|(c, _)| *c == leg.currency) {
            Some((_, sum)) => *sum += i128::from(leg.amount),
            None => sums.push((leg.currency, i128::from(leg.amount))),
        }
    }
    assert!(
        sums.iter().all(|(_, sum)| *sum == 0),
        "entry {seq} is unbalanced: {sums:?} from {merged:?}"
    );
    let mut read = conn.prepare_cached("SELECT balance, held FROM accounts WHERE id = ?1")?;
    let mut update = conn.prepare_cached("UPDATE accounts SET balance = ?1 WHERE id = ?2")?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO postings (seq, leg, account, amount, balance_after) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut posted = Vec::with_capacity(merged.len());
    for (index, leg) in merged.into_iter().enumerate() {
        let (balance, held): (i64, i64) =
            read.query_row(params![leg.account], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let after = balance.checked_add(leg.amount).ok_or(Refusal::Overflow)?;
        update.execute(params![after, leg.account])?;
        insert.execute(params![seq, index as i64, leg.account, leg.amount, after])?;
        posted.push(Posted {
            account: leg.account,
            hashed: HashedLeg {
                owner: leg.owner.to_string(),
                currency: leg.currency.code().to_owned(),
                amount: leg.amount,
            },
            balance_after: after,
            held,
            currency: leg.currency,
        });
    }
    Ok(posted)
}

/// The balance of `account` after `posted`, or as read if it was not posted.
pub(crate) fn balance_after(posted: &[Posted], account: &Account) -> Balance {
    posted.iter().find(|p| p.account == account.id).map_or_else(
        || account.balance(),
        |p| Balance::from_posted(p.balance_after, p.held, p.currency),
    )
}
