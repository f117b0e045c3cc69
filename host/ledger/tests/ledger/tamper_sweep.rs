//! Tamper evidence at scale: every single-byte mutation of every stored
//! journal field the hash chain covers must make `verify` report a problem.
//!
//! "The journal" is what an entry's hash covers (`src/journal.rs`): each
//! `journal` row (all twelve columns, its own hash and the previous one
//! included), the `postings` rows of the entry (which account, how much,
//! and the running balance `verify` recomputes), the identity columns of
//! every account those postings name (the hash covers a leg's account by
//! owner and currency, not by row id), and the `chain_head` row that marks
//! the end of the chain. A field's bytes are its stored form: UTF-8 for
//! text, the bytes for blobs, the 8 big-endian bytes of an integer. Each
//! byte is mutated twice (its low bit flipped, then its high bit, which in
//! text makes invalid UTF-8), on a copy of the file, through SQL with
//! CHECK constraints off, as an attacker with the file would; nullable
//! fields are also swapped between NULL and empty.
//!
//! The test sweeps a ledger with one entry of every kind (20 entries, 32k
//! mutations, about 20 s in a debug build); with
//! `WASMPAY_TAMPER_SWEEP_ROUNDS=3` it sweeps three rounds of them (50
//! entries, 86k mutations), under a minute in a release build. It prints
//! its figures:
//! `WASMPAY_TAMPER_SWEEP_ROUNDS=3 cargo test --release -p wasmpay-ledger --test ledger tamper_sweep -- --nocapture`.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::types::Value;
use wasmpay_domain::Decline;
use wasmpay_ledger::{OpKind, Reader, RefundDecided};

use crate::support::*;

/// A ledger with every kind of journal entry, `rounds` times over: opened
/// accounts, deposits, approved and declined payments (a Unicode memo and
/// metadata among them), refunds with and without a fee, a refused refund,
/// holds captured in part, voided and expired, payouts and refusals.
fn sample(rounds: usize) -> Fixture {
    let mut fx = Fixture::alice_and_shop(1_000_000);
    fx.open_user("bob");
    assert_eq!(code(&fx.deposit("bob", eur(50_000))), "applied");
    for round in 0..rounds {
        let r = |name: &str| format!("{name}-{round}");
        let mut paid = payment("alice", "shop", &r("p"), eur(1_250), 150);
        if let OpKind::Payment { memo, metadata, .. } = &mut paid {
            *memo = Some("caf\u{e9} \u{2615} \u{202e}".to_owned());
            metadata.insert("order".to_owned(), format!("{round}"));
        }
        assert_eq!(code(&fx.as_user("alice", paid)), "applied");
        assert_eq!(
            code(&fx.as_user("bob", payment("bob", "shop", &r("q"), eur(999), 0))),
            "applied"
        );
        let mut declined_payment = payment("alice", "shop", &r("d"), eur(100), 150);
        if let OpKind::Payment { decision, .. } = &mut declined_payment {
            *decision = declined("velocity_count_exceeded");
        }
        assert_eq!(
            code(&fx.as_user("alice", declined_payment)),
            "payment_declined"
        );
        assert_eq!(
            code(&fx.as_user("bob", payment("bob", "shop", &r("big"), eur(10_000_000), 0))),
            "insufficient_funds"
        );
        let fee = Some(eur(50));
        assert_eq!(
            code(&fx.as_merchant(
                "shop",
                refund("shop", &pid("alice", &r("p")), eur(500), fee)
            )),
            "applied"
        );
        assert_eq!(
            code(&fx.as_merchant("shop", refund("shop", &pid("bob", &r("q")), eur(999), None))),
            "applied"
        );
        let mut denied = refund("shop", &pid("alice", &r("p")), eur(100), None);
        if let OpKind::Refund { decision, .. } = &mut denied {
            *decision = RefundDecided::Denied {
                decline: Decline {
                    code: wasmpay_domain::Code::new("too_late").unwrap(),
                    message: "after 30 days".to_owned(),
                },
                plugin: Some(plugin()),
            };
        }
        assert_eq!(code(&fx.as_merchant("shop", denied)), "refund_denied");
        let expires = fx.now_ms + 60_000;
        for hold in ["h", "v", "x"] {
            let kind = authorize("alice", "shop", &r(hold), eur(2_000), 150, expires);
            assert_eq!(code(&fx.as_user("alice", kind)), "applied");
        }
        let capture = OpKind::Capture {
            merchant: merchant("shop"),
            payment_id: pid("alice", &r("h")),
            amount: Some(eur(1_500)),
        };
        assert_eq!(code(&fx.as_merchant("shop", capture)), "applied");
        let void = OpKind::Void {
            merchant: merchant("shop"),
            payment_id: pid("alice", &r("v")),
            reason: Some("out of stock".to_owned()),
        };
        assert_eq!(code(&fx.as_merchant("shop", void)), "applied");
        let unknown = OpKind::Void {
            merchant: merchant("shop"),
            payment_id: pid("alice", &r("none")),
            reason: None,
        };
        assert_eq!(code(&fx.as_merchant("shop", unknown)), "payment_not_found");
        let payout = OpKind::Payout {
            merchant: merchant("shop"),
            account: wasmpay_domain::SubAccount::main(),
            amount: eur(700),
        };
        assert_eq!(code(&fx.as_merchant("shop", payout)), "applied");
        fx.now_ms += 120_000;
        assert_eq!(fx.ledger.release_expired_holds(fx.now_ms).unwrap().len(), 1);
    }
    fx.assert_clean();
    fx
}

/// One stored field: a column of one row.
#[derive(Debug, Clone)]
struct Field {
    table: &'static str,
    column: &'static str,
    /// The row's key columns and values, as they are before any mutation.
    key: Vec<(&'static str, Value)>,
    value: Value,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|(column, value)| format!("{column}={}", shown(value)))
            .collect();
        write!(f, "{}.{} [{}]", self.table, self.column, key.join(", "))
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => format!("{t:?}"),
        Value::Blob(b) => format!("x'{}'", hex::encode(b)),
    }
}

/// A value's stored bytes.
fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::Integer(i) => i.to_be_bytes().to_vec(),
        Value::Text(t) => t.as_bytes().to_vec(),
        Value::Blob(b) => b.clone(),
        Value::Null | Value::Real(_) => Vec::new(),
    }
}

/// What to store instead: the original type with `bytes`. Text goes in as
/// raw bytes cast to text, so invalid UTF-8 is stored as it is.
#[derive(Debug, Clone)]
enum Stored {
    Integer(i64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
    Null,
}

fn mutated(value: &Value, at: usize, mask: u8) -> Stored {
    let mut bytes = bytes_of(value);
    bytes[at] ^= mask;
    match value {
        Value::Integer(_) => Stored::Integer(i64::from_be_bytes(bytes.try_into().unwrap())),
        Value::Text(_) => Stored::Text(bytes),
        _ => Stored::Blob(bytes),
    }
}

/// Every field the hash chain covers, read from the file.
fn covered_fields(conn: &Connection) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut collect =
        |table: &'static str, keys: &[&'static str], columns: &[&'static str], filter: &str| {
            let sql = format!(
                "SELECT {}, {} FROM {table} {filter} ORDER BY {}",
                keys.join(", "),
                columns.join(", "),
                keys.join(", ")
            );
            let mut stmt = conn.prepare(&sql).unwrap();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let key: Vec<(&'static str, Value)> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (*k, row.get(i).unwrap()))
                    .collect();
                for (i, column) in columns.iter().enumerate() {
                    fields.push(Field {
                        table,
                        column,
                        key: key.clone(),
                        value: row.get(keys.len() + i).unwrap(),
                    });
                }
            }
        };
    collect(
        "journal",
        &["seq"],
        &[
            "seq",
            "at_ms",
            "op",
            "principal",
            "key",
            "payment_id",
            "request",
            "plugin",
            "applied",
            "outcome",
            "prev_hash",
            "hash",
        ],
        "",
    );
    collect(
        "postings",
        &["seq", "leg"],
        &["seq", "leg", "account", "amount", "balance_after"],
        "",
    );
    collect(
        "accounts",
        &["id"],
        &["owner_kind", "owner_id", "sub", "currency"],
        "WHERE id IN (SELECT account FROM postings)",
    );
    collect("chain_head", &["id"], &["seq", "hash"], "");
    fields
}

/// Stores `stored` in `field` and returns whether SQLite took it (a
/// mutated primary key may collide with another row's).
fn store(conn: &Connection, field: &Field, stored: &Stored) -> bool {
    let key = field
        .key
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{column} = ?{}", i + 2))
        .collect::<Vec<_>>()
        .join(" AND ");
    let set = match stored {
        Stored::Text(_) => "CAST(?1 AS TEXT)",
        _ => "?1",
    };
    let sql = format!(
        "UPDATE {} SET {} = {set} WHERE {key}",
        field.table, field.column
    );
    let mut params: Vec<Value> = vec![match stored {
        Stored::Integer(i) => Value::Integer(*i),
        Stored::Text(b) | Stored::Blob(b) => Value::Blob(b.clone()),
        Stored::Null => Value::Null,
    }];
    params.extend(field.key.iter().map(|(_, v)| v.clone()));
    match conn.execute(&sql, rusqlite::params_from_iter(params)) {
        Ok(1) => true,
        Ok(n) => panic!("{field}: {n} rows changed"),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            false
        }
        Err(e) => panic!("{field}: {e}"),
    }
}

/// The key of `field`'s row once `stored` is in it.
fn moved_key(field: &Field, stored: &Stored) -> Vec<(&'static str, Value)> {
    field
        .key
        .iter()
        .map(|(column, value)| match (stored, *column == field.column) {
            (Stored::Integer(i), true) => (*column, Value::Integer(*i)),
            _ => (*column, value.clone()),
        })
        .collect()
}

fn original(value: &Value) -> Stored {
    match value {
        Value::Integer(i) => Stored::Integer(*i),
        Value::Text(t) => Stored::Text(t.as_bytes().to_vec()),
        Value::Blob(b) => Stored::Blob(b.clone()),
        Value::Null | Value::Real(_) => Stored::Null,
    }
}

/// What one sweep found.
#[derive(Debug, Default)]
struct Sweep {
    entries: u64,
    postings: u64,
    fields: usize,
    bytes: usize,
    mutations: usize,
    /// `verify` listed at least one problem.
    reported: usize,
    /// `verify` failed with an error instead of naming the problem.
    errors: Vec<String>,
    /// SQLite refused to store the mutation (a duplicate primary key).
    unstorable: usize,
    undetected: Vec<String>,
    time: Duration,
}

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} journal entries, {} postings: {} fields, {} bytes; {} mutations: {} reported by verify, {} verify errors, {} refused by SQLite, {} undetected; {:.1} s",
            self.entries,
            self.postings,
            self.fields,
            self.bytes,
            self.mutations,
            self.reported,
            self.errors.len(),
            self.unstorable,
            self.undetected.len(),
            self.time.as_secs_f64()
        )
    }
}

/// Mutates every covered byte of a copy of `fx`'s file, one at a time,
/// verifying after each and restoring the byte before the next.
fn sweep(fx: &Fixture) -> Sweep {
    let started = Instant::now();
    let copy = fx.dir.path().join("sweep.db");
    Connection::open(fx.path())
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let tamper = open_for_tampering(&copy);
    let reader = Reader::open(&copy).unwrap();
    let clean = reader.verify().unwrap();
    assert!(clean.is_clean(), "{clean}");
    let fields = covered_fields(&tamper);
    let mut found = Sweep {
        entries: clean.journal_entries,
        postings: clean.postings,
        fields: fields.len(),
        ..Sweep::default()
    };
    for field in &fields {
        let bytes = bytes_of(&field.value);
        found.bytes += bytes.len();
        let mut mutations: Vec<(String, Stored)> = Vec::new();
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80] {
                let what = format!("byte {at} ^ {mask:#04x}");
                mutations.push((what, mutated(&field.value, at, mask)));
            }
        }
        match &field.value {
            Value::Null => mutations.push(("NULL to ''".to_owned(), Stored::Text(Vec::new()))),
            Value::Text(_) if nullable(field) => {
                mutations.push(("to NULL".to_owned(), Stored::Null));
            }
            _ => {}
        }
        for (what, stored) in mutations {
            found.mutations += 1;
            if !store(&tamper, field, &stored) {
                found.unstorable += 1;
                continue;
            }
            match reader.verify() {
                Ok(report) if report.is_clean() => {
                    found
                        .undetected
                        .push(format!("{field} {what}: {}", shown(&field.value)));
                }
                Ok(_) => found.reported += 1,
                Err(e) => found.errors.push(format!("{field} {what}: {e}")),
            }
            let restored = Field {
                key: moved_key(field, &stored),
                ..field.clone()
            };
            assert!(
                store(&tamper, &restored, &original(&field.value)),
                "{field}: restore"
            );
        }
    }
    let after = reader.verify().unwrap();
    assert_eq!(after, clean, "every mutation was undone");
    found.time = started.elapsed();
    found
}

fn nullable(field: &Field) -> bool {
    matches!(field.column, "payment_id" | "plugin")
}

/// A connection that writes what it is told: no CHECK or foreign key
/// constraints, and no fsync (the copy is thrown away).
fn open_for_tampering(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         PRAGMA foreign_keys = OFF;
         PRAGMA journal_mode = DELETE;
         PRAGMA synchronous = OFF;",
    )
    .unwrap();
    conn
}

fn assert_all_detected(found: &Sweep) {
    println!("tamper sweep: {found}");
    assert!(
        found.undetected.is_empty(),
        "{} of {} mutations went unnoticed:\n{}",
        found.undetected.len(),
        found.mutations,
        found.undetected.join("\n")
    );
    assert!(
        found.errors.is_empty(),
        "verify failed instead of reporting {} mutations:\n{}",
        found.errors.len(),
        found.errors.join("\n")
    );
    assert_eq!(
        found.reported + found.unstorable,
        found.mutations,
        "{found}"
    );
}

/// Rounds of the sample ledger to sweep: `WASMPAY_TAMPER_SWEEP_ROUNDS`, 1
/// by default (20 entries). 3 rounds make 50 entries and 86k mutations, for
/// a release build (see the module docs).
const ROUNDS_ENV: &str = "WASMPAY_TAMPER_SWEEP_ROUNDS";

#[test]
fn every_single_byte_mutation_of_the_journal_is_detected() {
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .map(|r| {
            r.parse()
                .expect("WASMPAY_TAMPER_SWEEP_ROUNDS: a whole number")
        })
        .unwrap_or(1);
    let found = sweep(&sample(rounds));
    assert!(found.entries >= 20, "{found}");
    assert_all_detected(&found);
}
