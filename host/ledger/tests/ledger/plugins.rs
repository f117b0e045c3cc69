//! The plugin registry: versions, activation, rollback, artifacts.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use wasmpay_ledger::LedgerError;

use crate::support::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn store(fx: &mut Fixture, shop: &str, wasm: &[u8]) -> u32 {
    let config = BTreeMap::from([("fee_bps".to_owned(), "150".to_owned())]);
    fx.ledger
        .plugin_store(&merchant(shop), wasm, &sha(wasm), &config, 7)
        .unwrap()
        .version
}

#[test]
fn stored_versions_are_numbered_per_merchant_and_inactive() {
    let mut fx = Fixture::new();
    assert_eq!(store(&mut fx, "shop", b"one"), 1);
    assert_eq!(store(&mut fx, "shop", b"two"), 2);
    assert_eq!(store(&mut fx, "shop", b"one"), 3);
    assert_eq!(store(&mut fx, "other", b"one"), 1);
    let list = fx.reader().plugin_list(&merchant("shop")).unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|v| !v.active));
    assert_eq!(list[0].config["fee_bps"], "150");
    assert_eq!(list[0].size_bytes, 3);
    assert_eq!(
        fx.reader().plugin_wasm(&sha(b"two")).unwrap().unwrap(),
        b"two"
    );
    assert!(fx.reader().plugin_active_all().unwrap().is_empty());
}

#[test]
fn bytes_that_do_not_match_their_hash_are_refused() {
    let mut fx = Fixture::new();
    let error = fx
        .ledger
        .plugin_store(&merchant("shop"), b"one", &sha(b"two"), &BTreeMap::new(), 7)
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::PluginHashMismatch { .. }),
        "{error}"
    );
}

#[test]
fn activation_switches_atomically_and_rollback_returns_to_the_previous() {
    let mut fx = Fixture::new();
    let shop = merchant("shop");
    for wasm in [b"v1", b"v2", b"v3"] {
        store(&mut fx, "shop", wasm);
    }
    fx.ledger.plugin_activate(&shop, 1, 10).unwrap();
    fx.ledger.plugin_activate(&shop, 2, 11).unwrap();
    let active = fx.ledger.plugin_activate(&shop, 3, 12).unwrap();
    assert!(active.active);
    let all = fx.reader().plugin_active_all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.as_str(), all[0].1.version), ("shop", 3));
    assert_eq!(fx.ledger.plugin_rollback(&shop, 13).unwrap().version, 2);
    assert_eq!(fx.ledger.plugin_rollback(&shop, 14).unwrap().version, 1);
    assert!(matches!(
        fx.ledger.plugin_rollback(&shop, 15),
        Err(LedgerError::NoPluginToRollBackTo { .. })
    ));
    let list = fx.ledger.plugin_list(&shop).unwrap();
    let active: Vec<u32> = list
        .iter()
        .filter(|v| v.active)
        .map(|v| v.version)
        .collect();
    assert_eq!(active, [1]);
    assert_eq!(list[0].plugin_ref().sha256, sha(b"v1"));
}

#[test]
fn activating_an_unknown_version_is_an_error() {
    let mut fx = Fixture::new();
    store(&mut fx, "shop", b"v1");
    assert!(matches!(
        fx.ledger.plugin_activate(&merchant("shop"), 2, 1),
        Err(LedgerError::PluginVersionNotFound { version: 2, .. })
    ));
}

#[test]
fn precompiled_artifacts_are_cached_per_engine() {
    let mut fx = Fixture::new();
    let hash = sha(b"v1");
    fx.ledger
        .plugin_store_artifact(&hash, "engine-a", b"code-a")
        .unwrap();
    fx.ledger
        .plugin_store_artifact(&hash, "engine-a", b"code-a2")
        .unwrap();
    let reader = fx.reader();
    assert_eq!(
        reader.plugin_artifact(&hash, "engine-a").unwrap().unwrap(),
        b"code-a2"
    );
    assert_eq!(reader.plugin_artifact(&hash, "engine-b").unwrap(), None);
}

#[test]
fn large_components_commit_whole_through_the_gathered_log_writes() {
    // A component's bytes make commits of many log frames; the writer
    // gathers them (`wal_writes`) and must hand them on in pieces the file
    // layer takes. Sizes around and at multiples of 128 KiB, where SQLite's
    // unix layer would silently cut a single larger write.
    let before = wasmpay_ledger::wal_writes::gathered_writes();
    let mut fx = Fixture::new();
    let sizes = [
        64 * 1024,
        128 * 1024 - 1,
        128 * 1024,
        256 * 1024,
        1024 * 1024 + 7,
        3 * 1024 * 1024,
    ];
    let blobs: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| (0..size).map(|b| (b * 31 + i * 7) as u8).collect())
        .collect();
    for blob in &blobs {
        store(&mut fx, "shop", blob);
        // Another connection reads the committed frames from the file.
        assert_eq!(
            fx.reader().plugin_wasm(&sha(blob)).unwrap().as_deref(),
            Some(blob.as_slice()),
            "{} bytes",
            blob.len()
        );
    }
    assert!(wasmpay_ledger::wal_writes::gathered_writes() > before);
    let path = fx.path();
    drop(fx.ledger);
    let reopened = wasmpay_ledger::Ledger::open(&path, Default::default()).unwrap();
    for blob in &blobs {
        assert_eq!(
            reopened.plugin_wasm(&sha(blob)).unwrap().as_deref(),
            Some(blob.as_slice())
        );
    }
    assert!(reopened.verify().unwrap().is_clean());
}
