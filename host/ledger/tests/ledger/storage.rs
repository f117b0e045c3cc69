//! The file itself: creation, reopening, versions, and what is refused.

use rusqlite::Connection;
use wasmpay_ledger::{Ledger, LedgerError, LedgerOptions, Reader, Synchronous};

use crate::support::*;

#[test]
fn a_reopened_ledger_continues_the_chain() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "a", eur(10), 0));
    let path = fx.path();
    fx.ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
    let result = fx.as_user("alice", payment("alice", "shop", "b", eur(10), 0));
    assert_eq!(code(&result), "applied");
    assert_eq!(fx.available(&alice()), 980);
    fx.assert_clean();
}

#[test]
fn a_file_from_a_newer_schema_version_is_refused() {
    let fx = Fixture::new();
    let path = fx.path();
    drop(fx.ledger);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let error = Ledger::open(&path, LedgerOptions::default()).unwrap_err();
    assert!(
        matches!(error, LedgerError::SchemaTooNew { found: 99, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("newer"), "{error}");
    assert!(matches!(
        Reader::open(&path),
        Err(LedgerError::SchemaTooNew { .. })
    ));
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    assert!(matches!(
        Ledger::open(&path, LedgerOptions::default()),
        Err(LedgerError::NotALedger { .. })
    ));
}

#[test]
fn a_reader_needs_a_file_the_writer_created() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Reader::open(&dir.path().join("missing.db")).is_err());
}

#[test]
fn the_file_is_in_wal_mode_whatever_the_synchronous_level() {
    let fx = Fixture::with_options(LedgerOptions {
        synchronous: Synchronous::Normal,
        ..Default::default()
    });
    let conn = Connection::open(fx.path()).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn readers_on_other_threads_see_committed_state() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let path = fx.path();
    let handle = std::thread::spawn(move || {
        let reader = Reader::open(&path).unwrap();
        reader
            .balance(&alice(), cur("EUR"))
            .unwrap()
            .available
            .minor()
    });
    assert_eq!(handle.join().unwrap(), 1_000);
    fx.as_user("alice", payment("alice", "shop", "a", eur(10), 0));
    let reader = fx.reader();
    assert_eq!(
        reader.balance(&alice(), cur("EUR")).unwrap().available,
        eur(990)
    );
    assert!(reader.merchant_exists(&merchant("shop")).unwrap());
    assert!(!reader.merchant_exists(&merchant("nope")).unwrap());
    assert!(matches!(
        reader.balance(&alice(), cur("USD")),
        Err(LedgerError::AccountNotFound { .. })
    ));
    let balances = reader.balances(&alice()).unwrap();
    assert!(
        balances.to_string().contains("9.90 EUR available"),
        "{balances}"
    );
}

#[test]
fn the_writer_and_readers_can_move_to_their_threads() {
    fn send<T: Send>() {}
    send::<Ledger>();
    send::<Reader>();
}
