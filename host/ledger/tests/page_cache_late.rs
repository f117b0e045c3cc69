//! A process that opens SQLite before any ledger keeps SQLite's page cache
//! as is ([`page_cache`]), and its ledgers work the same. A binary of its
//! own: the order of first uses is the point.

use rusqlite::Connection;
use wasmpay_ledger::page_cache::{self, PageCache};
use wasmpay_ledger::{Ledger, LedgerOptions};

#[test]
fn a_cache_chosen_after_sqlite_started_falls_back_to_sqlites_own() {
    let dir = tempfile::tempdir().unwrap();
    let first = Connection::open(dir.path().join("first.db")).unwrap();
    first.execute_batch("CREATE TABLE t (x)").unwrap();

    assert_eq!(
        page_cache::configure(PageCache::LockPageRemapped),
        PageCache::Sqlite
    );
    // The first choice stays.
    assert_eq!(
        page_cache::configure(PageCache::LockPageRemapped),
        PageCache::Sqlite
    );
    let ledger = Ledger::open(&dir.path().join("ledger.db"), LedgerOptions::default()).unwrap();
    assert!(ledger.verify().unwrap().is_clean());
}
