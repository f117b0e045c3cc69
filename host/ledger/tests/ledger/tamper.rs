//! Edit a copy of a ledger file behind the ledger's back; `verify` must
//! notice every edit and name where it is.

use rusqlite::Connection;
use wasmpay_ledger::{Problem, Reader, VerifyReport};

use crate::support::*;

/// A ledger with deposits, payments, a hold and a refund, and its path.
fn busy_ledger() -> Fixture {
    let mut fx = Fixture::alice_and_shop(100_000);
    for i in 0..5 {
        fx.as_user(
            "alice",
            payment("alice", "shop", &format!("p{i}"), eur(1_000), 150),
        );
    }
    let expires = fx.now_ms + 1_000;
    fx.as_user(
        "alice",
        authorize("alice", "shop", "h", eur(2_000), 0, expires),
    );
    fx.as_merchant("shop", refund("shop", &pid("alice", "p0"), eur(500), None));
    fx.assert_clean();
    fx
}

/// Copies the file, applies `sql` to the copy and verifies it.
fn tampered(fx: &Fixture, sql: &str) -> VerifyReport {
    let copy = fx
        .dir
        .path()
        .join(format!("copy-{}.db", fastrand_name(sql)));
    // VACUUM INTO writes a consistent, checkpointed copy of the live file.
    let source = Connection::open(fx.path()).unwrap();
    source
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    Reader::open(&copy).unwrap().verify().unwrap()
}

fn fastrand_name(sql: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sql.hash(&mut h);
    format!("{:x}", h.finish())
}

fn has(report: &VerifyReport, predicate: impl Fn(&Problem) -> bool) -> bool {
    report.problems.iter().any(predicate)
}

#[test]
fn an_edited_posting_amount_is_named_by_entry_and_account() {
    let fx = busy_ledger();
    // Entry 4 is alice's first payment (3 accounts opened... then deposit).
    let report = tampered(
        &fx,
        "UPDATE postings SET amount = amount + 1 WHERE seq = 5 AND leg = 0",
    );
    assert!(
        has(&report, |p| matches!(p, Problem::Unbalanced { seq: 5, .. })),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::HashMismatch { seq: 5, .. }
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::RunningBalance { seq: 5, .. }
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(p, Problem::Balance { .. })),
        "{report}"
    );
}

#[test]
fn an_edited_journal_hash_breaks_the_chain_at_that_entry() {
    let fx = busy_ledger();
    let report = tampered(&fx, "UPDATE journal SET hash = zeroblob(32) WHERE seq = 6");
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::HashMismatch { seq: 6, .. }
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::ChainBroken { seq: 7, .. }
        )),
        "{report}"
    );
}

#[test]
fn an_edited_outcome_is_caught_by_its_hash() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "UPDATE journal SET outcome = replace(outcome, '\"seq\":6', '\"seq\":60') WHERE seq = 6",
    );
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::HashMismatch { seq: 6, .. }
        )),
        "{report}"
    );
}

#[test]
fn an_edited_balance_column_is_named_with_expected_and_found() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "UPDATE accounts SET balance = balance + 100 WHERE owner_id = 'alice'",
    );
    let expected = Problem::Balance {
        account: "user/alice EUR".into(),
        stored: 100_000 - 5_000 + 500 + 100,
        postings_sum: 100_000 - 5_000 + 500,
    };
    assert_eq!(report.problems, vec![expected], "{report}");
}

#[test]
fn a_deleted_journal_row_is_a_gap_and_orphans_its_postings() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "PRAGMA foreign_keys = OFF; DELETE FROM journal WHERE seq = 5",
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::JournalGap {
                expected_seq: 5,
                found_seq: 6
            }
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(p, Problem::OrphanPostings { seq: 5 })),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::ChainBroken { seq: 6, .. }
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(p, Problem::ForeignKey { .. })),
        "{report}"
    );
}

#[test]
fn a_deleted_last_entry_is_caught_by_the_chain_head() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "PRAGMA foreign_keys = OFF;
         DELETE FROM requests WHERE seq = (SELECT max(seq) FROM journal);
         DELETE FROM postings WHERE seq = (SELECT max(seq) FROM journal);
         DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal);",
    );
    assert!(
        has(&report, |p| matches!(p, Problem::HeadMismatch { .. })),
        "{report}"
    );
}

#[test]
fn a_cleared_hold_is_named_as_a_held_mismatch() {
    let fx = busy_ledger();
    let report = tampered(&fx, "UPDATE accounts SET held = 0");
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::Held {
                stored: 0,
                open_holds: 2_000,
                ..
            }
        )),
        "{report}"
    );
}

#[test]
fn a_balance_beyond_its_overdraft_policy_is_named() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "UPDATE accounts SET overdraft_kind = 'none' WHERE owner_kind = 'world'",
    );
    assert!(
        has(
            &report,
            |p| matches!(p, Problem::Overdraft { account, .. } if account == "world EUR")
        ),
        "{report}"
    );
}

/// A checkpointed copy of the fixture's file, as raw bytes.
fn file_bytes(fx: &Fixture) -> Vec<u8> {
    let copy = fx.dir.path().join("raw.db");
    let source = Connection::open(fx.path()).unwrap();
    source
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    std::fs::read(&copy).unwrap()
}

fn verify_bytes(fx: &Fixture, name: &str, bytes: &[u8]) -> VerifyReport {
    let path = fx.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    Reader::open(&path).unwrap().verify().unwrap()
}

#[test]
fn flipped_bytes_in_a_stored_outcome_are_caught_by_the_hash_chain() {
    let fx = busy_ledger();
    let mut bytes = file_bytes(&fx);
    let needle = b"\"minor\":1000,";
    let mut flipped = 0;
    for at in 0..bytes.len() - needle.len() {
        if &bytes[at..at + needle.len()] == needle {
            bytes[at + 8] = b'9';
            flipped += 1;
        }
    }
    assert!(flipped > 0);
    let report = verify_bytes(&fx, "flipped-json.db", &bytes);
    assert!(
        has(&report, |p| matches!(p, Problem::HashMismatch { .. })),
        "{report}"
    );
}

#[test]
fn flipped_bytes_in_the_postings_page_are_reported() {
    let fx = busy_ledger();
    let bytes = file_bytes(&fx);
    let root: i64 = Connection::open(fx.dir.path().join("raw.db"))
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'postings'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size = 4096;
    let page_end = usize::try_from(root).unwrap() * page_size;
    // The cell content area fills a page from its end: these are the last
    // bytes of the first posting row (its amount and balance after).
    for back in 1..=4 {
        let mut copy = bytes.clone();
        copy[page_end - back] ^= 0x01;
        let report = verify_bytes(&fx, &format!("flipped-{back}.db"), &copy);
        assert!(!report.is_clean(), "flip at -{back} went unnoticed");
    }
}

#[test]
fn a_request_record_pointing_past_the_journal_is_named() {
    let fx = busy_ledger();
    let report = tampered(&fx, "UPDATE requests SET seq = 999 WHERE key = 'k4'");
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::DanglingEntry { table, seq: 999, .. } if table == "requests"
        )),
        "{report}"
    );
}

#[test]
fn a_renumbered_posting_is_named_though_its_order_is_unchanged() {
    let fx = busy_ledger();
    // Entry 5 is a payment with three legs, 0 to 2 (payer, shop, platform
    // fee): numbering the last 7 keeps the order, and so the hash.
    let report = tampered(&fx, "UPDATE postings SET leg = 7 WHERE seq = 5 AND leg = 2");
    assert_eq!(
        report.problems,
        vec![Problem::LegNumbering {
            seq: 5,
            expected_leg: 2,
            found_leg: 7
        }],
        "{report}"
    );
}

#[test]
fn an_applied_flag_other_than_0_or_1_is_named() {
    let fx = busy_ledger();
    // `applied = 2` reads as true where a boolean is read, and as refused
    // where SQL asks `applied = 1`.
    let report = tampered(
        &fx,
        "PRAGMA ignore_check_constraints = ON; UPDATE journal SET applied = 2 WHERE seq = 5",
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::Unreadable { table, detail } if table == "journal" && detail.contains("entry 5")
        )),
        "{report}"
    );
}

#[test]
fn journal_text_that_is_not_utf8_is_named_by_entry_not_an_error() {
    let fx = busy_ledger();
    let report = tampered(
        &fx,
        "UPDATE journal SET outcome = CAST(X'7B22FF7D' AS TEXT) WHERE seq = 6;
         UPDATE journal SET op = 'capture', request = '{' WHERE seq = 7",
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::Unreadable { detail, .. } if detail == "entry 6: outcome not UTF-8 text"
        )),
        "{report}"
    );
    assert!(
        has(&report, |p| matches!(
            p,
            Problem::HashMismatch { seq: 7, .. }
        )),
        "{report}"
    );
}
