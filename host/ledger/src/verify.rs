//! `verify`: recomputes everything the ledger keeps redundantly and reports
//! every disagreement exactly (which entry or account, expected and found).
//!
//! One snapshot, one ordered pass over the journal and the postings (both
//! clustered by entry number) checks the hash chain, that every entry
//! balances and numbers its postings 0, 1, 2, ..., and every posting's
//! running balance; then per-account totals, overdraft policies, held
//! amounts against open holds, single closing of each hold, SQLite's own
//! integrity and foreign-key checks. A row it cannot read is reported by
//! entry, never an error that hides the rest.

use std::collections::HashMap;
use std::fmt;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::journal::{EntryFields, GENESIS, HashedLeg};
use crate::types::{Overdraft, Owner};
use crate::{Ledger, LedgerError, Reader};

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub journal_entries: u64,
    pub postings: u64,
    pub accounts: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} journal entries, {} postings, {} accounts: {}",
            self.journal_entries,
            self.postings,
            self.accounts,
            if self.is_clean() {
                "clean".to_owned()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// One inconsistency. Amounts are in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum Problem {
    /// `PRAGMA integrity_check` reported this line.
    Integrity { message: String },
    /// `PRAGMA foreign_key_check`: a row points at a missing parent.
    ForeignKey {
        table: String,
        rowid: Option<i64>,
        parent: String,
    },
    /// Journal numbers must run 1, 2, 3, ...: entries are missing.
    JournalGap { expected_seq: i64, found_seq: i64 },
    /// An entry's `prev_hash` is not the previous entry's hash.
    ChainBroken {
        seq: i64,
        expected_prev: String,
        found_prev: String,
    },
    /// An entry's stored hash does not match its contents.
    HashMismatch {
        seq: i64,
        stored: String,
        computed: String,
    },
    /// The recorded chain head is not the last entry.
    HeadMismatch {
        head_seq: i64,
        head_hash: String,
        last_seq: i64,
        last_hash: String,
    },
    /// An entry's postings are not numbered 0, 1, 2, ...: the hash covers
    /// their order, so their numbers must say nothing else.
    LegNumbering {
        seq: i64,
        expected_leg: i64,
        found_leg: i64,
    },
    /// An entry's postings do not sum to zero in a currency.
    Unbalanced {
        seq: i64,
        currency: String,
        sum: i128,
    },
    /// A refused entry with postings.
    RefusedWithPostings { seq: i64 },
    /// Postings that belong to no journal entry.
    OrphanPostings { seq: i64 },
    /// A posting's `balance_after` is not the running sum of the account's
    /// postings up to it.
    RunningBalance {
        seq: i64,
        account: String,
        stored: i64,
        expected: i128,
    },
    /// An account's stored balance is not the sum of its postings.
    Balance {
        account: String,
        stored: i64,
        postings_sum: i128,
    },
    /// An account's available balance breaks its overdraft policy.
    Overdraft {
        account: String,
        available: i128,
        policy: String,
    },
    /// An account's held amount is not the sum of its open holds.
    Held {
        account: String,
        stored: i64,
        open_holds: i64,
    },
    /// A hold captured, voided or expired more than once.
    ClosedTwice { payment_id: String, seqs: String },
    /// A payment row whose amounts contradict each other.
    Payment { payment_id: String, detail: String },
    /// An idempotency record or payment naming a journal entry that does
    /// not exist.
    DanglingEntry {
        table: String,
        row: String,
        seq: i64,
    },
    /// A row that cannot be decoded.
    Unreadable { table: String, detail: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integrity { message } => write!(f, "integrity check: {message}"),
            Self::ForeignKey {
                table,
                rowid,
                parent,
            } => write!(
                f,
                "{table} row {} points at a missing {parent} row",
                rowid.map_or("?".to_owned(), |r| r.to_string())
            ),
            Self::JournalGap {
                expected_seq,
                found_seq,
            } => write!(
                f,
                "journal entries {expected_seq}..{} are missing (next is {found_seq})",
                found_seq - 1
            ),
            Self::ChainBroken {
                seq,
                expected_prev,
                found_prev,
            } => write!(
                f,
                "journal entry {seq}: previous hash is {found_prev}, expected {expected_prev}"
            ),
            Self::HashMismatch {
                seq,
                stored,
                computed,
            } => write!(
                f,
                "journal entry {seq}: stored hash {stored} does not match its contents ({computed})"
            ),
            Self::HeadMismatch {
                head_seq,
                head_hash,
                last_seq,
                last_hash,
            } => write!(
                f,
                "chain head records entry {head_seq} ({head_hash}), but the journal ends at {last_seq} ({last_hash})"
            ),
            Self::LegNumbering {
                seq,
                expected_leg,
                found_leg,
            } => write!(
                f,
                "journal entry {seq}: posting numbered {found_leg} where {expected_leg} belongs"
            ),
            Self::Unbalanced { seq, currency, sum } => write!(
                f,
                "journal entry {seq}: {currency} postings sum to {sum}, not 0"
            ),
            Self::RefusedWithPostings { seq } => {
                write!(f, "journal entry {seq} was refused but has postings")
            }
            Self::OrphanPostings { seq } => {
                write!(f, "postings for entry {seq}, which is not in the journal")
            }
            Self::RunningBalance {
                seq,
                account,
                stored,
                expected,
            } => write!(
                f,
                "journal entry {seq}: {account} balance after is {stored}, postings give {expected}"
            ),
            Self::Balance {
                account,
                stored,
                postings_sum,
            } => write!(
                f,
                "account {account}: stored balance {stored}, postings sum to {postings_sum}"
            ),
            Self::Overdraft {
                account,
                available,
                policy,
            } => write!(
                f,
                "account {account}: available {available} breaks {policy}"
            ),
            Self::Held {
                account,
                stored,
                open_holds,
            } => write!(
                f,
                "account {account}: stored held {stored}, open holds sum to {open_holds}"
            ),
            Self::ClosedTwice { payment_id, seqs } => {
                write!(
                    f,
                    "hold {payment_id} closed more than once (entries {seqs})"
                )
            }
            Self::Payment { payment_id, detail } => write!(f, "payment {payment_id}: {detail}"),
            Self::DanglingEntry { table, row, seq } => {
                write!(
                    f,
                    "{table} row {row} names journal entry {seq}, which does not exist"
                )
            }
            Self::Unreadable { table, detail } => write!(f, "unreadable {table} row: {detail}"),
        }
    }
}

impl Reader {
    /// Checks the whole file; see the module docs.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        verify(self.conn())
    }
}

impl Ledger {
    /// Checks the whole file from the writer's connection.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        verify(self.conn())
    }
}

struct AccountRow {
    name: String,
    currency: String,
    balance: i64,
    held: i64,
    overdraft: Option<Overdraft>,
}

pub(crate) fn verify(conn: &Connection) -> Result<VerifyReport, LedgerError> {
    // One read transaction: every check sees the same snapshot.
    let tx = conn.unchecked_transaction()?;
    let mut problems = Vec::new();

    let accounts = load_accounts(&tx, &mut problems)?;
    let (journal_entries, postings, sums) = check_journal(&tx, &accounts, &mut problems)?;
    check_accounts(&tx, &accounts, &sums, &mut problems)?;
    check_holds(&tx, &mut problems)?;
    check_entry_links(&tx, &mut problems)?;
    check_sqlite(&tx, &mut problems)?;
    tx.finish()?;
    Ok(VerifyReport {
        journal_entries,
        postings,
        accounts: accounts.len() as u64,
        problems,
    })
}

fn load_accounts(
    conn: &Connection,
    problems: &mut Vec<Problem>,
) -> Result<HashMap<i64, AccountRow>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT id, owner_kind, owner_id, sub, currency, balance, held, overdraft_kind, overdraft_limit
         FROM accounts",
    )?;
    let mut rows = stmt.query([])?;
    let mut accounts = HashMap::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        // Lossy: a column that is not UTF-8 text makes no valid owner or
        // currency, which is reported below, rather than an error.
        let (kind, owner_id, sub) = (lossy(r, 1)?, lossy(r, 2)?, lossy(r, 3)?);
        let currency = lossy(r, 4)?;
        let owner = Owner::from_columns(&kind, &owner_id, &sub);
        let parsed = wasmpay_domain::Currency::parse(&currency).ok();
        if owner.is_none() || parsed.is_none() {
            problems.push(Problem::Unreadable {
                table: "accounts".into(),
                detail: format!("account {id} ({kind}/{owner_id}/{sub} {currency})"),
            });
        }
        let overdraft_kind: String = r.get(7)?;
        let overdraft =
            parsed.and_then(|c| Overdraft::from_columns(&overdraft_kind, r.get(8).ok()?, c));
        let name = owner.map_or_else(|| format!("#{id}"), |o| o.to_string());
        accounts.insert(
            id,
            AccountRow {
                name,
                currency,
                balance: r.get(5)?,
                held: r.get(6)?,
                overdraft,
            },
        );
    }
    Ok(accounts)
}

/// Column `index` as text, invalid UTF-8 replaced (for names in reports).
fn lossy(r: &rusqlite::Row<'_>, index: usize) -> Result<String, LedgerError> {
    Ok(match r.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
    })
}

/// Column `index` of a journal row as the writer stored it: text (or NULL
/// where `nullable`). Anything else is named in `unreadable`, so that the
/// entry is reported rather than the whole check failing.
fn journal_text(
    r: &rusqlite::Row<'_>,
    index: usize,
    column: &'static str,
    nullable: bool,
    unreadable: &mut Vec<&'static str>,
) -> Result<Option<String>, LedgerError> {
    Ok(match r.get_ref(index)? {
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Some(text.to_owned()),
            Err(_) => {
                unreadable.push(column);
                None
            }
        },
        ValueRef::Null if nullable => None,
        _ => {
            unreadable.push(column);
            None
        }
    })
}

fn hex32(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The ordered pass: hash chain, balance per entry, running balances.
/// Returns the entry and posting counts and each account's postings sum.
fn check_journal(
    conn: &Connection,
    accounts: &HashMap<i64, AccountRow>,
    problems: &mut Vec<Problem>,
) -> Result<(u64, u64, HashMap<i64, i128>), LedgerError> {
    let mut journal = conn.prepare(
        "SELECT seq, at_ms, op, principal, key, payment_id, request, plugin, applied, outcome,
                prev_hash, hash
         FROM journal ORDER BY seq",
    )?;
    let mut postings = conn.prepare(
        "SELECT seq, account, amount, balance_after, leg FROM postings ORDER BY seq, leg",
    )?;
    let mut posting_rows = postings.query([])?;
    let mut pending: Option<Posting> = next_posting(&mut posting_rows)?;

    let mut sums: HashMap<i64, i128> = HashMap::new();
    let mut prev_hash: Vec<u8> = GENESIS.to_vec();
    let mut expected_seq = 1_i64;
    let (mut entries, mut posting_count) = (0_u64, 0_u64);
    let mut rows = journal.query([])?;
    while let Some(r) = rows.next()? {
        entries += 1;
        let seq: i64 = r.get(0)?;
        if seq != expected_seq {
            problems.push(Problem::JournalGap {
                expected_seq,
                found_seq: seq,
            });
        }
        expected_seq = seq + 1;
        // Postings of entries that do not exist come before this one.
        while let Some((p_seq, ..)) = pending
            && p_seq < seq
        {
            problems.push(Problem::OrphanPostings { seq: p_seq });
            while pending.is_some_and(|p| p.0 == p_seq) {
                pending = next_posting(&mut posting_rows)?;
            }
        }
        let mut legs = Vec::new();
        let mut by_currency: Vec<(String, i128)> = Vec::new();
        while let Some((p_seq, account, amount, balance_after, leg)) = pending
            && p_seq == seq
        {
            posting_count += 1;
            let expected_leg = legs.len() as i64;
            if leg != expected_leg {
                problems.push(Problem::LegNumbering {
                    seq,
                    expected_leg,
                    found_leg: leg,
                });
            }
            let (name, currency) = accounts.get(&account).map_or_else(
                || (format!("#{account}"), "???".to_owned()),
                |a| (a.name.clone(), a.currency.clone()),
            );
            let running = sums.entry(account).or_insert(0);
            *running += i128::from(amount);
            if *running != i128::from(balance_after) {
                problems.push(Problem::RunningBalance {
                    seq,
                    account: format!("{name} {currency}"),
                    stored: balance_after,
                    expected: *running,
                });
            }
            match by_currency.iter_mut().find(|(c, _)| *c == currency) {
                Some((_, sum)) => *sum += i128::from(amount),
                None => by_currency.push((currency.clone(), i128::from(amount))),
            }
            legs.push(HashedLeg {
                owner: name,
                currency,
                amount,
            });
            pending = next_posting(&mut posting_rows)?;
        }
        for (currency, sum) in by_currency {
            if sum != 0 {
                problems.push(Problem::Unbalanced { seq, currency, sum });
            }
        }
        // Stored as 0 or 1; SQL elsewhere asks `applied = 1`, so any other
        // value would read as applied here and as refused there.
        let applied = match r.get_ref(8)? {
            ValueRef::Integer(applied @ (0 | 1)) => applied == 1,
            other => {
                problems.push(Problem::Unreadable {
                    table: "journal".into(),
                    detail: format!("entry {seq}: applied is {}, not 0 or 1", lossy(r, 8)?),
                });
                !matches!(other, ValueRef::Integer(0))
            }
        };
        if !applied && !legs.is_empty() {
            problems.push(Problem::RefusedWithPostings { seq });
        }
        let stored_prev: Vec<u8> = r.get(10)?;
        let stored_hash: Vec<u8> = r.get(11)?;
        if stored_prev != prev_hash {
            problems.push(Problem::ChainBroken {
                seq,
                expected_prev: hex32(&prev_hash),
                found_prev: hex32(&stored_prev),
            });
        }
        let mut unreadable = Vec::new();
        let mut text =
            |index, column, nullable| journal_text(r, index, column, nullable, &mut unreadable);
        let op = text(2, "op", false)?;
        let principal = text(3, "principal", false)?;
        let key = text(4, "key", false)?;
        let payment_id = text(5, "payment_id", true)?;
        let request = text(6, "request", false)?;
        let plugin = text(7, "plugin", true)?;
        let outcome = text(9, "outcome", false)?;
        if unreadable.is_empty() {
            let computed = EntryFields {
                seq,
                at_ms: r.get(1)?,
                prev_hash: &stored_prev,
                op: op.as_deref().unwrap_or_default(),
                principal: principal.as_deref().unwrap_or_default(),
                key: key.as_deref().unwrap_or_default(),
                payment_id: payment_id.as_deref(),
                request: request.as_deref().unwrap_or_default(),
                plugin: plugin.as_deref(),
                applied,
                outcome: outcome.as_deref().unwrap_or_default(),
                legs: &legs,
            }
            .hash();
            if computed[..] != stored_hash[..] {
                problems.push(Problem::HashMismatch {
                    seq,
                    stored: hex32(&stored_hash),
                    computed: hex32(&computed),
                });
            }
        } else {
            // The writer hashed UTF-8 text: there is nothing to recompute.
            problems.push(Problem::Unreadable {
                table: "journal".into(),
                detail: format!("entry {seq}: {} not UTF-8 text", unreadable.join(", ")),
            });
        }
        prev_hash = stored_hash;
    }
    while let Some((p_seq, ..)) = pending {
        problems.push(Problem::OrphanPostings { seq: p_seq });
        while pending.is_some_and(|p| p.0 == p_seq) {
            pending = next_posting(&mut posting_rows)?;
        }
    }
    let (head_seq, head_hash): (i64, Vec<u8>) =
        conn.query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let last_seq = expected_seq - 1;
    if head_seq != last_seq || head_hash != prev_hash {
        problems.push(Problem::HeadMismatch {
            head_seq,
            head_hash: hex32(&head_hash),
            last_seq,
            last_hash: hex32(&prev_hash),
        });
    }
    Ok((entries, posting_count, sums))
}

/// A posting row: entry, account, amount, balance after, leg number.
type Posting = (i64, i64, i64, i64, i64);

fn next_posting(rows: &mut rusqlite::Rows<'_>) -> Result<Option<Posting>, LedgerError> {
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        None => None,
    })
}

fn check_accounts(
    conn: &Connection,
    accounts: &HashMap<i64, AccountRow>,
    sums: &HashMap<i64, i128>,
    problems: &mut Vec<Problem>,
) -> Result<(), LedgerError> {
    let mut open_holds: HashMap<i64, i64> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT payer_account, sum(authorized) FROM payments WHERE status = 'held' GROUP BY payer_account",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        open_holds.insert(r.get(0)?, r.get(1)?);
    }
    let mut ids: Vec<&i64> = accounts.keys().collect();
    ids.sort();
    for id in ids {
        let account = &accounts[id];
        let label = format!("{} {}", account.name, account.currency);
        let postings_sum = sums.get(id).copied().unwrap_or(0);
        if postings_sum != i128::from(account.balance) {
            problems.push(Problem::Balance {
                account: label.clone(),
                stored: account.balance,
                postings_sum,
            });
        }
        let holds = open_holds.get(id).copied().unwrap_or(0);
        if holds != account.held {
            problems.push(Problem::Held {
                account: label.clone(),
                stored: account.held,
                open_holds: holds,
            });
        }
        let available = i128::from(account.balance) - i128::from(account.held);
        match account.overdraft {
            Some(policy) => {
                let allowed = i64::try_from(available).is_ok_and(|a| policy.allows(a));
                if !allowed {
                    problems.push(Problem::Overdraft {
                        account: label,
                        available,
                        policy: policy.to_string(),
                    });
                }
            }
            None => problems.push(Problem::Unreadable {
                table: "accounts".into(),
                detail: format!("{label}: unknown overdraft policy"),
            }),
        }
    }
    Ok(())
}

fn check_holds(conn: &Connection, problems: &mut Vec<Problem>) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT payment_id, group_concat(seq, ', ') FROM journal
         WHERE applied = 1 AND op IN ('capture', 'void', 'expire_hold')
         -- An edited request that is no JSON fails its hash; it must not
         -- make this query fail too.
         GROUP BY CASE WHEN json_valid(request) THEN json_extract(request, '$.merchant') END,
                  payment_id
         HAVING count(*) > 1",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        problems.push(Problem::ClosedTwice {
            payment_id: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            seqs: r.get(1)?,
        });
    }
    let mut stmt = conn.prepare(
        "SELECT payment_id, kind, status, authorized, captured, refunded FROM payments
         WHERE captured > authorized OR refunded > captured OR captured < 0 OR refunded < 0
            OR (status = 'captured' AND captured = 0)
            OR (status <> 'captured' AND (captured <> 0 OR refunded <> 0))
            OR (kind = 'payment' AND status <> 'captured')",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (kind, status): (String, String) = (r.get(1)?, r.get(2)?);
        let (authorized, captured, refunded): (i64, i64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
        problems.push(Problem::Payment {
            payment_id: r.get(0)?,
            detail: format!(
                "{kind} {status}: authorized {authorized}, captured {captured}, refunded {refunded}"
            ),
        });
    }
    Ok(())
}

/// The links to journal entries that carry no foreign key (see the schema).
fn check_entry_links(conn: &Connection, problems: &mut Vec<Problem>) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT 'requests', principal || '/' || key, seq FROM requests r
         WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.seq = r.seq)
         UNION ALL
         SELECT 'payments', merchant || '/' || payment_id, created_seq FROM payments p
         WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.seq = p.created_seq)
         UNION ALL
         SELECT 'payments', merchant || '/' || payment_id, closed_seq FROM payments p
         WHERE closed_seq IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.seq = p.closed_seq)",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        problems.push(Problem::DanglingEntry {
            table: r.get(0)?,
            row: r.get(1)?,
            seq: r.get(2)?,
        });
    }
    Ok(())
}

fn check_sqlite(conn: &Connection, problems: &mut Vec<Problem>) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let message: String = r.get(0)?;
        if message != "ok" {
            problems.push(Problem::Integrity { message });
        }
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        problems.push(Problem::ForeignKey {
            table: r.get(0)?,
            rowid: r.get(1)?,
            parent: r.get(2)?,
        });
    }
    Ok(())
}
