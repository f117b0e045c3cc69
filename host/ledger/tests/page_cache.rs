//! The page cache every ledger open installs ([`page_cache`]): SQLite's
//! own, with the lock page's key remapped. A binary of its own, so that the
//! cache is chosen before anything in the process opens a connection.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use wasmpay_ledger::page_cache::{self, PageCache};

/// A small deterministic generator (splitmix64): the same keys every run.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // 256 KiB: 64 pages, so pages leave the cache and come back from the
    // file all the time; a page filed under the wrong key would show.
    conn.pragma_update(None, "cache_size", -256).unwrap();
    conn
}

fn rows(conn: &Connection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut stmt = conn.prepare("SELECT k, v FROM kv ORDER BY k").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn value(key: &[u8]) -> Vec<u8> {
    key.iter().cycle().take(120).copied().collect()
}

#[test]
fn page_splits_in_random_order_go_through_key_0_and_lose_nothing() {
    assert_eq!(
        page_cache::configure(PageCache::LockPageRemapped),
        PageCache::LockPageRemapped
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let mut conn = open(&path);
    conn.execute_batch(
        "CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE log (id INTEGER PRIMARY KEY, k BLOB NOT NULL UNIQUE);",
    )
    .unwrap();
    let swaps_before = page_cache::lock_page_swaps();
    let mut keys = Keys(7);
    let mut model = BTreeMap::new();
    for round in 0..300 {
        let tx = conn.transaction().unwrap();
        for _ in 0..40 {
            let key = keys.next().to_be_bytes().to_vec();
            tx.execute("INSERT INTO kv (k, v) VALUES (?1, ?2)", (&key, value(&key)))
                .unwrap();
            tx.execute("INSERT INTO log (k) VALUES (?1)", [&key])
                .unwrap();
            model.insert(key.clone(), value(&key));
        }
        if round % 4 == 3 {
            // Deletes free pages that later splits take back, out of order.
            let doomed: Vec<Vec<u8>> = model.keys().step_by(7).take(60).cloned().collect();
            for key in doomed {
                tx.execute("DELETE FROM kv WHERE k = ?1", [&key]).unwrap();
                tx.execute("DELETE FROM log WHERE k = ?1", [&key]).unwrap();
                model.remove(&key);
            }
        }
        tx.commit().unwrap();
    }
    let swaps = page_cache::lock_page_swaps() - swaps_before;
    assert!(swaps > 0, "no page split went through the lock page's key");

    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert_eq!(rows(&conn), model);
    drop(conn);
    // A fresh connection reads every page from the file.
    assert_eq!(rows(&open(&path)), model);
}
