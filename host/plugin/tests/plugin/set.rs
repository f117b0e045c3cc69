//! Swapping the active version under concurrent calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmpay_domain::MerchantId;
use wasmpay_plugin::{Limits, NoActivity, PluginSet, Runtime};

use crate::fixtures::{self, payment};

#[test]
fn activation_swaps_under_concurrent_calls_without_losing_one() {
    const CALLERS: usize = 4;
    const VERSIONS: u32 = 20;
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    // Two different components, so that consecutive versions differ.
    let wasm = [
        fixtures::answering(fixtures::DECLINE),
        fixtures::answering(fixtures::APPROVE_FEE),
    ];
    let versions: Vec<_> = (1..=VERSIONS)
        .map(|v| fixtures::load(&runtime, &wasm[v as usize % 2], v))
        .collect();
    let set = Arc::new(PluginSet::new());
    set.activate(fixtures::merchant(), versions[0].clone());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (runtime, set, stop, answered) =
                (runtime.clone(), set.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let plugin = set.get(&fixtures::merchant()).expect("always one active");
                    let called = runtime
                        .decide_payment(&plugin, Arc::new(NoActivity), &payment())
                        .expect("every call is answered");
                    assert_eq!(&called.plugin, plugin.plugin_ref());
                    seen.push(called.plugin.version);
                    calls += 1;
                }
                answered.fetch_add(calls, Ordering::Relaxed);
                seen
            })
        })
        .collect();
    for plugin in &versions[1..] {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let previous = set.activate(fixtures::merchant(), plugin.clone()).unwrap();
        assert_eq!(
            previous.plugin_ref().version + 1,
            plugin.plugin_ref().version
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for caller in callers {
        let seen = caller.join().expect("no caller panicked");
        // Each caller sees versions in the order they were activated.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        total += seen.len() as u64;
    }
    assert_eq!(total, answered.load(Ordering::Relaxed));
    assert!(total > u64::from(VERSIONS), "only {total} calls ran");
    assert_eq!(
        set.get(&fixtures::merchant()).unwrap().plugin_ref().version,
        VERSIONS
    );
}

#[test]
fn get_remove_and_len_track_active_merchants() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let set = PluginSet::new();
    assert!(set.is_empty());
    let plugin = fixtures::load(&runtime, &fixtures::answering(fixtures::DECLINE), 1);
    assert!(set.activate(fixtures::merchant(), plugin).is_none());
    assert_eq!(set.len(), 1);
    assert!(set.get(&MerchantId::new("other").unwrap()).is_none());
    assert!(set.remove(&fixtures::merchant()).is_some());
    assert!(set.get(&fixtures::merchant()).is_none());
    assert!(set.is_empty());
}

#[test]
#[should_panic(expected = "its own plugin")]
fn activating_another_merchants_plugin_is_a_bug() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = fixtures::load(&runtime, &fixtures::answering(fixtures::DECLINE), 1);
    PluginSet::new().activate(MerchantId::new("other").unwrap(), plugin);
}
