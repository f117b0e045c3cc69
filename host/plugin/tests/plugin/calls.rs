//! Calls under limits: each fault ends as its typed error naming the limit,
//! and the runtime keeps serving.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmpay_domain::{Currency, Decision, Money, PlatformFee, QuoteLimits, RefundDecision};
use wasmpay_plugin::{
    Called, HostQueries, Limits, LogLevel, MemoryReset, NoActivity, PluginError, RefundInput,
    Runtime,
};

use crate::fixtures::{self, payment};

fn call(runtime: &Runtime, wasm: &[u8]) -> Result<Called<Decision>, PluginError> {
    let plugin = fixtures::load(runtime, wasm, 1);
    runtime.decide_payment(&plugin, Arc::new(NoActivity), &payment())
}

/// Runs `body` under `limits`, expects the call to fail with `code` and a
/// message mentioning each of `words`, then checks that a good plugin on the
/// same runtime still answers.
fn check_fault(limits: Limits, body: &str, code: &str, words: &[&str]) -> PluginError {
    let runtime = Runtime::new(limits).unwrap();
    let error = call(&runtime, &fixtures::rules(body)).expect_err("the call must fail");
    assert_eq!(error.code(), code, "{error}");
    let message = error.to_string();
    for word in words {
        assert!(
            message.contains(word),
            "`{message}` should mention `{word}`"
        );
    }
    let next = call(&runtime, &fixtures::answering(fixtures::APPROVE_FEE));
    assert!(next.is_ok(), "the runtime must keep serving: {next:?}");
    error
}

const LOOP: &str = "(loop $forever (br $forever)) (i32.const 256)";

#[test]
fn a_decline_comes_back_with_its_code_and_message() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let called = call(&runtime, &fixtures::answering(fixtures::DECLINE)).unwrap();
    let Decision::Decline { decline } = called.value else {
        panic!("expected a decline, got {:?}", called.value);
    };
    assert_eq!(decline.code.as_str(), "declined_by_test");
    assert_eq!(decline.message, "a message");
}

#[test]
fn an_empty_quote_approves_the_amount_as_asked() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let called = call(&runtime, &fixtures::answering(fixtures::APPROVE_EMPTY)).unwrap();
    assert_eq!(
        called.value,
        Decision::Approve {
            quote: Default::default()
        }
    );
}

#[test]
fn an_approval_carries_its_quote_version_hash_and_fuel() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = fixtures::answering(fixtures::APPROVE_FEE);
    let plugin = fixtures::load(&runtime, &wasm, 7);
    let called = runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &payment())
        .unwrap();
    let Decision::Approve { quote } = &called.value else {
        panic!("expected an approval, got {:?}", called.value);
    };
    assert_eq!(quote.lines.len(), 1);
    assert_eq!(quote.lines[0].code.as_str(), "service_fee");
    assert_eq!(quote.lines[0].amount, fixtures::eur(30));
    let settlement = quote
        .settle(
            fixtures::eur(1250),
            PlatformFee::default(),
            QuoteLimits::default(),
        )
        .unwrap();
    assert_eq!(settlement.payer_total, fixtures::eur(1280));
    assert_eq!(called.plugin.version, 7);
    assert_eq!(&called.plugin, plugin.plugin_ref());
    assert!(
        called.fuel_used > 0 && called.fuel_used < 1_000,
        "fuel used: {}",
        called.fuel_used
    );
}

#[test]
fn a_refund_decision_comes_back_converted() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = fixtures::load(&runtime, &fixtures::answering(fixtures::DECLINE), 1);
    let p = payment();
    let refund = RefundInput {
        payment_id: p.payment_id,
        merchant: p.merchant,
        payer: p.payer,
        captured: fixtures::eur(1250),
        refunded: fixtures::eur(0),
        amount: fixtures::eur(500),
        reason: Some("damaged".into()),
        received_at_ms: 1_700_000_100_000,
        captured_at_ms: 1_700_000_000_000,
    };
    let called = runtime
        .decide_refund(&plugin, Arc::new(NoActivity), &refund)
        .unwrap();
    assert_eq!(called.value, RefundDecision::Allow { fee: None });
}

#[test]
fn an_endless_loop_ends_as_out_of_fuel_naming_the_limit() {
    let limits = Limits {
        fuel_max: 1_000_000,
        ..Limits::default()
    };
    check_fault(limits, LOOP, "plugin_out_of_fuel", &["1000000"]);
}

#[test]
fn a_loop_with_fuel_to_spare_ends_at_the_deadline() {
    let limits = Limits {
        fuel_max: 1 << 60,
        timeout_ms: 50,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    check_fault(limits, LOOP, "plugin_timeout", &["50 ms"]);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn a_memory_bomb_ends_at_the_memory_limit_naming_it() {
    let body = "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                (i32.const 256)";
    check_fault(
        Limits::default(),
        body,
        "plugin_memory_limit",
        &["16777216"],
    );
}

#[test]
fn a_memory_bomb_ends_at_the_memory_limit_under_either_allocator() {
    let body = "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                (i32.const 256)";
    // The pooling allocator with a small pool, and memory mapped per call
    // (`pooling_slots = 0`), the scheme an operator may choose instead.
    for pooling_slots in [4, 0] {
        let limits = Limits {
            pooling_slots,
            ..Limits::default()
        };
        check_fault(limits, body, "plugin_memory_limit", &["16777216"]);
    }
}

#[test]
fn every_pooled_slot_stays_warm_for_the_plugin_it_last_ran() {
    // More plugins than wasmtime's default of 100 warm slots, each of its
    // own code and called once: each call's slot then stays warm for its
    // plugin, so that with enough slots for every merchant no call maps
    // another plugin's image into its slot. wasmtime splits the pool into a
    // shard per core (at most 16), and a thread warms only its own: 480
    // slots hold 1 920 memories, 120 a shard even on 16 cores.
    let plugins = 120;
    let runtime = Runtime::new(Limits {
        pooling_slots: 480,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(runtime.warm_memories(), Some(0));
    let mut loaded = Vec::new();
    for version in 1..=plugins {
        // Distinct code: plugins of one component share its memory image,
        // and so their warm slots.
        let body = format!(
            "(drop (i32.const {version})) (i32.const {})",
            fixtures::APPROVE_FEE
        );
        let plugin = fixtures::load(&runtime, &fixtures::rules(&body), version);
        runtime
            .decide_payment(&plugin, Arc::new(NoActivity), &payment())
            .unwrap();
        loaded.push(plugin);
    }
    assert_eq!(runtime.components_loaded(), loaded.len());
    assert_eq!(runtime.warm_memories(), Some(plugins));
    let unpooled = Runtime::new(Limits {
        pooling_slots: 0,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(unpooled.warm_memories(), None);
}

/// The process's reserved address space (`VmSize`), in KiB.
fn address_space_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmSize:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_pooled_slot_reserves_what_a_plugin_may_use_not_4_gib_a_memory() {
    // 4,096 slots of 4 memories: 64 TiB with wasmtime's 4 GiB reservation a
    // memory, under 1 TiB with `memory_bytes_max` (16 MiB) and its guards.
    // Other tests' runtimes, created meanwhile in this process, add a few
    // hundred GiB at most: the bound leaves room for them.
    let before = address_space_kib();
    let runtime = Runtime::new(Limits {
        pooling_slots: 4096,
        ..Limits::default()
    })
    .unwrap();
    let reserved_gib = address_space_kib().saturating_sub(before) >> 20;
    assert!(
        reserved_gib < 4 * 1024,
        "4,096 slots reserved {reserved_gib} GiB"
    );
    // And the pool serves calls: bounds are checked in the guest's code now.
    let plugin = fixtures::load(&runtime, &fixtures::answering(fixtures::APPROVE_FEE), 1);
    runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &payment())
        .unwrap();
}

#[test]
fn unbounded_recursion_ends_as_a_stack_overflow() {
    let body = "(drop (call $recurse (i32.const 0))) (i32.const 256)";
    check_fault(
        Limits::default(),
        body,
        "plugin_stack_overflow",
        &["524288"],
    );
}

#[test]
fn a_trap_carries_the_guests_last_error_line() {
    let body = "(call $log (i32.const 3) (i32.const 128) (i32.const 16)) unreachable";
    check_fault(
        Limits::default(),
        body,
        "plugin_trap",
        &["unreachable", "hello from guest"],
    );
}

#[test]
fn a_division_by_zero_is_a_trap() {
    let body = "(drop (i32.div_u (i32.const 1) (i32.const 0))) (i32.const 256)";
    check_fault(Limits::default(), body, "plugin_trap", &["divide by zero"]);
}

#[test]
fn an_answer_breaking_the_code_rule_is_malformed_output() {
    let body = format!("(i32.const {})", fixtures::DECLINE_BAD_CODE);
    check_fault(
        Limits::default(),
        &body,
        "plugin_malformed_output",
        &["decline code", "Bad Code"],
    );
}

#[test]
fn a_giant_answer_is_refused_by_its_size() {
    let body = format!("(i32.const {})", fixtures::APPROVE_GIANT);
    check_fault(
        Limits::default(),
        &body,
        "plugin_output_too_large",
        &["the decision takes", "at most 65536"],
    );
}

#[test]
fn an_answer_larger_than_guest_memory_is_refused_before_the_host_copies_it() {
    // 900 quote lines fit in the guest's one page as 56-byte records, but
    // take twice that on the host: more than a 64 KiB guest may hand over.
    let limits = Limits {
        memory_bytes_max: 65_536,
        ..Limits::default()
    };
    let body = format!("(i32.const {})", fixtures::APPROVE_GIANT);
    check_fault(
        limits,
        &body,
        "plugin_output_too_large",
        &["65536 bytes to the host in one go"],
    );
}

#[test]
fn log_spam_is_bounded_and_marked_truncated() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let body = "(local $i i32)
        (loop $again
          (call $log (i32.const 1) (i32.const 128) (i32.const 16))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $i) (i32.const 10000))))
        (i32.const 256)";
    let called = call(&runtime, &fixtures::rules(body)).unwrap();
    assert!(called.logs_truncated);
    let kept: usize = called.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= Limits::default().log_bytes_max, "kept {kept} bytes");
    assert!(!called.logs.is_empty());
    assert!(
        called
            .logs
            .iter()
            .all(|l| l.level == LogLevel::Info && l.message == "hello from guest")
    );
}

#[test]
fn a_long_log_line_is_cut_to_the_line_limit() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let body = "(call $log (i32.const 2) (i32.const 2048) (i32.const 5000)) (i32.const 256)";
    let called = call(&runtime, &fixtures::rules(body)).unwrap();
    assert!(called.logs_truncated);
    assert_eq!(called.logs.len(), 1);
    assert_eq!(
        called.logs[0].message.len(),
        Limits::default().log_line_bytes_max
    );
    assert_eq!(called.logs[0].level, LogLevel::Warn);
}

/// Asks `payer-activity` for EUR over a day, `times` times, then declines.
fn asking_activity(times: u32) -> String {
    format!(
        "(local $i i32)
        (loop $again
          (call $activity (i32.const 86400) (i32.const 192) (i32.const 3) (i32.const 4096))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $i) (i32.const {times}))))
        (i32.const 256)"
    )
}

/// Counts the questions it is asked, answering each with 3 payments.
#[derive(Default)]
struct Counting(Mutex<Vec<(u32, Currency)>>);

impl HostQueries for Counting {
    fn payer_activity(&self, window: u32, currency: Currency) -> Result<(u32, Money), String> {
        self.0.lock().unwrap().push((window, currency));
        Ok((3, Money::from_minor(12_000, currency)))
    }
}

#[test]
fn activity_questions_reach_the_pipelines_queries() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = fixtures::load(&runtime, &fixtures::rules(&asking_activity(2)), 1);
    let queries = Arc::new(Counting::default());
    runtime
        .decide_payment(&plugin, queries.clone(), &payment())
        .unwrap();
    let asked = queries.0.lock().unwrap().clone();
    let eur = Currency::parse("EUR").unwrap();
    assert_eq!(asked, vec![(86_400, eur), (86_400, eur)]);
}

#[test]
fn too_many_activity_questions_end_the_call_naming_the_limit() {
    check_fault(
        Limits::default(),
        &asking_activity(9),
        "plugin_too_many_queries",
        &["8 times"],
    );
}

struct Failing;

impl HostQueries for Failing {
    fn payer_activity(&self, _: u32, _: Currency) -> Result<(u32, Money), String> {
        Err("ledger unavailable".into())
    }
}

#[test]
fn a_failed_host_query_is_the_hosts_fault_not_the_plugins() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = fixtures::load(&runtime, &fixtures::rules(&asking_activity(1)), 1);
    let error = runtime
        .decide_payment(&plugin, Arc::new(Failing), &payment())
        .unwrap_err();
    assert_eq!(error.code(), "plugin_host_query_failed");
    assert!(error.is_transient());
    assert!(error.to_string().contains("ledger unavailable"), "{error}");
}

/// Holds the call inside `payer-activity` until told to let go.
struct Blocking {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl HostQueries for Blocking {
    fn payer_activity(&self, _: u32, currency: Currency) -> Result<(u32, Money), String> {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        Ok((0, Money::zero(currency)))
    }
}

#[test]
fn with_every_pool_slot_taken_a_call_fails_as_busy_and_then_succeeds() {
    let runtime = Arc::new(
        Runtime::new(Limits {
            pooling_slots: 1,
            ..Limits::default()
        })
        .unwrap(),
    );
    let plugin = fixtures::load(&runtime, &fixtures::rules(&asking_activity(1)), 1);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let blocking = Arc::new(Blocking {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let holder = {
        let (runtime, plugin) = (runtime.clone(), plugin.clone());
        std::thread::spawn(move || runtime.decide_payment(&plugin, blocking, &payment()))
    };
    entered.recv().unwrap();
    let error = runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &payment())
        .unwrap_err();
    assert_eq!(error.code(), "plugin_busy", "{error}");
    assert!(error.is_transient());
    release.send(()).unwrap();
    holder.join().unwrap().unwrap();
    runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &payment())
        .unwrap();
}

/// Declines (`DECLINE`) if an earlier call's marks are still in memory, then
/// marks it and approves: at 60 000 (reset in place under either scheme),
/// at 2 MiB (copied back by the scan, unmapped by `madvise`) and at 6 MiB
/// (past the scan's resident bytes: unmapped under both), after growing the
/// memory from its initial page to 7 MiB.
const MARKS_MEMORY: &str = "
    (if (i32.lt_u (memory.size) (i32.const 112))
      (then (drop (memory.grow (i32.sub (i32.const 112) (memory.size))))))
    (if (i32.or (i32.or (i32.load (i32.const 60000)) (i32.load (i32.const 2097152)))
                (i32.load (i32.const 6291456)))
      (then (return (i32.const 256))))
    (i32.store (i32.const 60000) (i32.const 1))
    (i32.store (i32.const 2097152) (i32.const 1))
    (i32.store (i32.const 6291456) (i32.const 1))
    (i32.const 320)";

#[test]
fn no_call_sees_what_the_one_before_it_left_in_memory_under_either_reset() {
    let resolved = Runtime::new(Limits::default()).unwrap().memory_reset();
    assert_ne!(resolved, MemoryReset::Auto, "auto resolves to a scheme");
    // `Scan` where this kernel has it (`auto` found it), `Madvise` always,
    // and the on-demand scheme: one slot, so every call reuses it.
    let mut schemes = vec![(1, MemoryReset::Madvise), (0, MemoryReset::Auto)];
    if resolved == MemoryReset::Scan {
        schemes.push((1, MemoryReset::Scan));
    }
    for (pooling_slots, memory_reset) in schemes {
        let runtime = Runtime::new(Limits {
            pooling_slots,
            memory_reset,
            ..Limits::default()
        })
        .unwrap();
        let plugin = fixtures::load(&runtime, &fixtures::rules(MARKS_MEMORY), 1);
        for n in 0..20 {
            let called = runtime
                .decide_payment(&plugin, Arc::new(NoActivity), &payment())
                .unwrap();
            assert!(
                matches!(called.value, Decision::Approve { .. }),
                "{memory_reset:?} with {pooling_slots} slots, call {n}: saw an earlier call's memory: {:?}",
                called.value
            );
        }
    }
}

#[test]
fn no_call_sees_what_another_merchant_running_the_same_code_left_in_memory() {
    // One slot, so that each call reuses the memory the other merchant's
    // call left, warm, because the two share the component's image.
    let runtime = Runtime::new(Limits {
        pooling_slots: 1,
        ..Limits::default()
    })
    .unwrap();
    let compiled = runtime.compile(&fixtures::rules(MARKS_MEMORY)).unwrap();
    let plugins: Vec<_> = ["shop-1", "shop-2"]
        .into_iter()
        .map(|name| {
            runtime
                .load(
                    &compiled.artifact,
                    wasmpay_plugin::PluginMeta {
                        merchant: wasmpay_domain::MerchantId::new(name).unwrap(),
                        version: 1,
                        sha256: compiled.sha256.clone(),
                        config: Default::default(),
                    },
                )
                .unwrap()
        })
        .collect();
    assert_eq!(runtime.components_loaded(), 1);
    for n in 0..10 {
        for plugin in &plugins {
            let request = wasmpay_plugin::PaymentInput {
                merchant: plugin.merchant().clone(),
                ..payment()
            };
            let called = runtime
                .decide_payment(plugin, Arc::new(NoActivity), &request)
                .unwrap();
            assert!(
                matches!(called.value, Decision::Approve { .. }),
                "call {n} for {}: saw an earlier call's memory: {:?}",
                plugin.merchant(),
                called.value
            );
        }
    }
}

#[test]
fn each_memory_grow_is_counted() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let body =
        "(drop (memory.grow (i32.const 1))) (drop (memory.grow (i32.const 2))) (i32.const 320)";
    let called = call(&runtime, &fixtures::rules(body)).unwrap();
    assert_eq!(called.memory_grows, 2);
    let called = call(&runtime, &fixtures::answering(fixtures::APPROVE_EMPTY)).unwrap();
    assert_eq!(called.memory_grows, 0);
}

#[test]
fn memory_reset_scan_where_the_kernel_lacks_it_fails_at_start_naming_the_key() {
    let auto = Runtime::new(Limits::default()).unwrap().memory_reset();
    let scan = Runtime::new(Limits {
        memory_reset: MemoryReset::Scan,
        ..Limits::default()
    });
    match (auto, scan) {
        (MemoryReset::Scan, Ok(runtime)) => assert_eq!(runtime.memory_reset(), MemoryReset::Scan),
        (MemoryReset::Madvise, Err(error)) => {
            assert!(
                error.to_string().contains("plugins.memory_reset"),
                "{error}"
            );
        }
        (auto, scan) => panic!("auto chose {auto:?}, but scan gave {scan:?}"),
    }
}
