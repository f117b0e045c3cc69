//! The example and hostile plugins of `plugins/`, built as real components:
//! each example decides as its README says, each hostile one ends as the
//! typed error its README expects, and the runtime keeps serving.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmpay_domain::{
    Currency, Decision, LineKind, MerchantId, Money, PlatformFee, Quote, QuoteError, QuoteLimits,
    RefundDecision, Settlement, SubAccount, UserId,
};
use wasmpay_plugin::{
    Called, HostQueries, Limits, NoActivity, PaymentInput, PluginError, PluginMeta, RefundInput,
    Runtime,
};
use wasmpay_plugin_artifacts as artifacts;

use crate::fixtures::{eur, merchant, payment};

fn load(
    runtime: &Runtime,
    wasm: &[u8],
    config: &[(&str, &str)],
) -> Arc<wasmpay_plugin::LoadedPlugin> {
    load_for(runtime, merchant(), wasm, config)
}

/// [`load`] as `merchant`'s plugin.
fn load_for(
    runtime: &Runtime,
    merchant: MerchantId,
    wasm: &[u8],
    config: &[(&str, &str)],
) -> Arc<wasmpay_plugin::LoadedPlugin> {
    let compiled = runtime.compile(wasm).expect("the artifact compiles");
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    runtime
        .load(
            &compiled.artifact,
            PluginMeta {
                merchant,
                version: 1,
                sha256: compiled.sha256,
                config,
            },
        )
        .expect("the artifact loads")
}

/// The host's check of `quote` for a payment of `amount`, with no platform
/// fee and the default limits.
fn settle(quote: &Quote, amount: Money) -> Result<Settlement, QuoteError> {
    quote.settle(amount, PlatformFee::default(), QuoteLimits::default())
}

/// Answers every activity question with `count` payments worth `volume`
/// minor units.
struct Activity(u32, i64);

impl HostQueries for Activity {
    fn payer_activity(&self, _: u32, currency: Currency) -> Result<(u32, Money), String> {
        Ok((self.0, Money::from_minor(self.1, currency)))
    }
}

fn pay(minor: i64) -> PaymentInput {
    PaymentInput {
        amount: eur(minor),
        ..payment()
    }
}

fn refund(amount: i64, captured_days_ago: i64) -> RefundInput {
    let p = payment();
    RefundInput {
        payment_id: p.payment_id,
        merchant: p.merchant,
        payer: p.payer,
        captured: eur(10_000),
        refunded: eur(0),
        amount: eur(amount),
        reason: None,
        received_at_ms: p.received_at_ms,
        captured_at_ms: p.received_at_ms - captured_days_ago * 86_400_000,
    }
}

/// What a payment case expects: an approval whose quote settles to a payer
/// total (in minor units), or a decline code.
enum Expect {
    Total(i64),
    Declined(&'static str),
}

struct Case {
    name: &'static str,
    wasm: &'static [u8],
    config: &'static [(&'static str, &'static str)],
    request: PaymentInput,
    activity: (u32, i64),
    expect: Expect,
}

const FEE_CONFIG: &[(&str, &str)] = &[
    ("fee_bps", "290"),
    ("fee_fixed.EUR", "0.30"),
    ("fee_cap.EUR", "5.00"),
    ("refund_fee.EUR", "0.50"),
    ("refund_max_age_days", "90"),
];

const TIERED_CONFIG: &[(&str, &str)] = &[
    ("min_order.EUR", "5.00"),
    ("tiers.EUR", "0:0%, 100.00:-2%"),
    ("coupon.WELCOME10", "10%"),
    ("tax_rate", "8.25%"),
    ("split_rate", "10%"),
    ("split_account", "partner"),
];

const GUARD_CONFIG: &[(&str, &str)] = &[
    ("blocked_payers", "mallory, trudy"),
    ("amount_min.EUR", "1.00"),
    ("amount_max.EUR", "1000"),
    ("velocity_windows", "3600"),
    ("velocity_count_max.3600", "3"),
];

fn with_coupon(minor: i64, coupon: &str) -> PaymentInput {
    let mut request = pay(minor);
    request.metadata.insert("coupon".into(), coupon.into());
    request
}

fn cases() -> Vec<Case> {
    let case = |name, wasm, config, request, activity, expect| Case {
        name,
        wasm,
        config,
        request,
        activity,
        expect,
    };
    let mallory = PaymentInput {
        payer: UserId::new("mallory").unwrap(),
        ..pay(1_250)
    };
    vec![
        // README: 10.05 EUR costs 10.05 + 0.59 (2.9% rounded half up, + 0.30).
        case(
            "fee adds percentage plus fixed",
            artifacts::FEE,
            FEE_CONFIG,
            pay(1_005),
            (0, 0),
            Expect::Total(1_064),
        ),
        // README: 1 000 EUR costs 1 000 + 5.00 (capped).
        case(
            "fee is capped",
            artifacts::FEE,
            FEE_CONFIG,
            pay(100_000),
            (0, 0),
            Expect::Total(100_500),
        ),
        case(
            "fee with a bad setting declines naming it",
            artifacts::FEE,
            &[("fee_bps", "lots")],
            pay(1_005),
            (0, 0),
            Expect::Declined("plugin_config_invalid"),
        ),
        // 200.00 - 2% band (4.00) - 10% coupon (20.00) = 176.00 net, + 8.25% tax (14.52).
        case(
            "tiered applies band, coupon and tax",
            artifacts::TIERED,
            TIERED_CONFIG,
            with_coupon(20_000, "welcome10"),
            (0, 0),
            Expect::Total(19_052),
        ),
        case(
            "tiered refuses an order below the minimum",
            artifacts::TIERED,
            TIERED_CONFIG,
            pay(300),
            (0, 0),
            Expect::Declined("below_minimum_order"),
        ),
        case(
            "tiered refuses an unknown coupon",
            artifacts::TIERED,
            TIERED_CONFIG,
            with_coupon(2_000, "NOPE"),
            (0, 0),
            Expect::Declined("coupon_invalid"),
        ),
        case(
            "guard approves within limits",
            artifacts::GUARD,
            GUARD_CONFIG,
            pay(1_250),
            (2, 5_000),
            Expect::Total(1_250),
        ),
        case(
            "guard stops the fourth payment in an hour",
            artifacts::GUARD,
            GUARD_CONFIG,
            pay(1_250),
            (3, 5_000),
            Expect::Declined("velocity_count_exceeded"),
        ),
        case(
            "guard refuses a blocked payer",
            artifacts::GUARD,
            GUARD_CONFIG,
            mallory,
            (0, 0),
            Expect::Declined("payer_blocked"),
        ),
        case(
            "guard refuses too small an amount",
            artifacts::GUARD,
            GUARD_CONFIG,
            pay(50),
            (0, 0),
            Expect::Declined("amount_below_min"),
        ),
        case(
            "guard refuses too large an amount",
            artifacts::GUARD,
            GUARD_CONFIG,
            pay(100_001),
            (0, 0),
            Expect::Declined("amount_above_max"),
        ),
    ]
}

#[test]
fn each_example_approves_or_declines_as_its_readme_says() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    for case in cases() {
        let plugin = load(&runtime, case.wasm, case.config);
        let (count, volume) = case.activity;
        let called = runtime
            .decide_payment(&plugin, Arc::new(Activity(count, volume)), &case.request)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(called.fuel_used > 0, "{}: fuel is reported", case.name);
        match (&called.value, case.expect) {
            (Decision::Approve { quote }, Expect::Total(total)) => {
                let settlement = settle(quote, case.request.amount)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert_eq!(
                    settlement.payer_total.minor(),
                    total,
                    "{}: {quote:?}",
                    case.name
                );
            }
            (Decision::Decline { decline }, Expect::Declined(code)) => {
                assert_eq!(
                    decline.code.as_str(),
                    code,
                    "{}: {}",
                    case.name,
                    decline.message
                );
            }
            (other, _) => panic!("{}: unexpected {other:?}", case.name),
        }
    }
}

#[test]
fn tiered_routes_tax_and_split_to_sub_accounts() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = load(&runtime, artifacts::TIERED, TIERED_CONFIG);
    let request = with_coupon(20_000, "WELCOME10");
    let called = runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &request)
        .unwrap();
    let Decision::Approve { quote } = called.value else {
        panic!("expected an approval");
    };
    let kinds: Vec<LineKind> = quote.lines.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [LineKind::Discount, LineKind::Discount, LineKind::Tax]
    );
    let settlement = settle(&quote, request.amount).unwrap();
    let credit = |name: &str| settlement.merchant_credits[&SubAccount::new(name).unwrap()];
    assert_eq!(credit("tax"), eur(1_452));
    assert_eq!(credit("partner"), eur(1_760));
    assert_eq!(credit("main"), eur(19_052 - 1_452 - 1_760));
}

#[test]
fn merchants_running_one_component_share_its_code_and_keep_their_own_configuration() {
    // One slot: every call runs in the slot the other merchant's call left.
    let runtime = Runtime::new(Limits {
        pooling_slots: 1,
        ..Limits::default()
    })
    .unwrap();
    let shop = |name: &str| MerchantId::new(name).unwrap();
    let low = load_for(
        &runtime,
        shop("shop-1"),
        artifacts::FEE,
        &[("fee_bps", "100")],
    );
    let high = load_for(
        &runtime,
        shop("shop-2"),
        artifacts::FEE,
        &[("fee_bps", "300")],
    );
    assert!(low.shares_code_with(&high), "one copy of the fee code");
    assert_eq!(runtime.components_loaded(), 1);
    for round in 0..3 {
        for (plugin, fee) in [(&low, 100), (&high, 300)] {
            let request = PaymentInput {
                merchant: plugin.merchant().clone(),
                ..pay(10_000)
            };
            let called = runtime
                .decide_payment(plugin, Arc::new(NoActivity), &request)
                .unwrap();
            let Decision::Approve { quote } = &called.value else {
                panic!("round {round}: {:?}", called.value);
            };
            let settlement = settle(quote, request.amount).unwrap();
            assert_eq!(
                settlement.payer_total.minor(),
                10_000 + fee,
                "round {round}, {}: its own configuration",
                plugin.merchant()
            );
            assert_eq!(called.plugin, *plugin.plugin_ref());
        }
    }
    let other = load_for(&runtime, shop("shop-3"), artifacts::GUARD, GUARD_CONFIG);
    assert!(!other.shares_code_with(&low), "other code is loaded apart");
    assert_eq!(runtime.components_loaded(), 2);
    drop((low, high));
    assert_eq!(runtime.components_loaded(), 1, "unused code is freed");
    drop(other);
    assert_eq!(runtime.components_loaded(), 0);
}

#[test]
fn fee_allows_a_refund_less_its_fee_and_denies_one_out_of_window() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = load(&runtime, artifacts::FEE, FEE_CONFIG);
    let allowed = runtime
        .decide_refund(&plugin, Arc::new(NoActivity), &refund(500, 10))
        .unwrap();
    assert_eq!(allowed.value, RefundDecision::Allow { fee: Some(eur(50)) });
    let late = runtime
        .decide_refund(&plugin, Arc::new(NoActivity), &refund(500, 100))
        .unwrap();
    let RefundDecision::Deny { decline } = late.value else {
        panic!("expected a denial, got {:?}", late.value);
    };
    assert_eq!(decline.code.as_str(), "refund_window_expired");
}

/// Calls `wasm` on a payment with `metadata["mode"] = mode` (if any).
fn call_with_mode(
    runtime: &Runtime,
    wasm: &[u8],
    mode: Option<&str>,
) -> Result<Called<Decision>, PluginError> {
    let plugin = load(runtime, wasm, &[]);
    let mut request = pay(10_000);
    if let Some(mode) = mode {
        request.metadata.insert("mode".into(), mode.into());
    }
    runtime.decide_payment(&plugin, Arc::new(NoActivity), &request)
}

/// The plugin to call after each hostile one, to show the runtime serves.
fn assert_still_serving(runtime: &Runtime) {
    let plugin = load(runtime, artifacts::FEE, FEE_CONFIG);
    let called = runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &pay(1_005))
        .expect("a good plugin still answers");
    assert!(matches!(called.value, Decision::Approve { .. }));
}

#[test]
fn every_hostile_plugin_ends_as_its_typed_error_and_the_runtime_keeps_serving() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    /// `(fixture, metadata["mode"], expected code, words the message has)`.
    type Hostile = (
        &'static [u8],
        Option<&'static str>,
        &'static str,
        &'static [&'static str],
    );
    let cases: &[(&str, Hostile)] = &[
        (
            "loop",
            (
                artifacts::HOSTILE_LOOP,
                None,
                "plugin_out_of_fuel",
                &["11000000"],
            ),
        ),
        (
            "memory_bomb",
            (
                artifacts::HOSTILE_MEMORY_BOMB,
                None,
                "plugin_memory_limit",
                &["16777216"],
            ),
        ),
        (
            "recursion",
            (
                artifacts::HOSTILE_RECURSION,
                None,
                "plugin_stack_overflow",
                &["524288"],
            ),
        ),
        (
            "panic",
            (
                artifacts::HOSTILE_PANIC,
                None,
                "plugin_trap",
                &[
                    "unreachable",
                    "plugin panicked: deliberate panic in payment pay_test",
                ],
            ),
        ),
        (
            "giant_output lines",
            (
                artifacts::HOSTILE_GIANT_OUTPUT,
                Some("lines"),
                "plugin_output_too_large",
                &["65536"],
            ),
        ),
        (
            "giant_output splits",
            (
                artifacts::HOSTILE_GIANT_OUTPUT,
                Some("splits"),
                "plugin_output_too_large",
                &["65536"],
            ),
        ),
        (
            "giant_output huge_strings",
            (
                artifacts::HOSTILE_GIANT_OUTPUT,
                Some("huge_strings"),
                "plugin_output_too_large",
                &["65536"],
            ),
        ),
        (
            "absurd invalid_code",
            (
                artifacts::HOSTILE_ABSURD_QUOTE,
                Some("invalid_code"),
                "plugin_malformed_output",
                &["quote line 0 code", "Not A Valid Code!"],
            ),
        ),
        (
            "absurd line_to_other_merchant",
            (
                artifacts::HOSTILE_ABSURD_QUOTE,
                Some("line_to_other_merchant"),
                "plugin_malformed_output",
                &["quote line 0 account", "../other"],
            ),
        ),
        (
            "absurd split_to_other_merchant",
            (
                artifacts::HOSTILE_ABSURD_QUOTE,
                Some("split_to_other_merchant"),
                "plugin_malformed_output",
                &["split 0 account", "../other"],
            ),
        ),
    ];
    for (name, (wasm, mode, code, words)) in cases {
        let error = call_with_mode(&runtime, wasm, *mode).expect_err(name);
        assert_eq!(error.code(), *code, "{name}: {error}");
        let message = error.to_string();
        for word in *words {
            assert!(
                message.contains(word),
                "{name}: `{message}` should mention `{word}`"
            );
        }
        assert_still_serving(&runtime);
    }
}

#[test]
fn hostile_refunds_are_denied_by_the_same_limits() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let cases: &[(&[u8], &str)] = &[
        (artifacts::HOSTILE_LOOP, "plugin_out_of_fuel"),
        (artifacts::HOSTILE_MEMORY_BOMB, "plugin_memory_limit"),
        (artifacts::HOSTILE_RECURSION, "plugin_stack_overflow"),
        (artifacts::HOSTILE_PANIC, "plugin_trap"),
        (artifacts::HOSTILE_GIANT_OUTPUT, "plugin_output_too_large"),
    ];
    for (wasm, code) in cases {
        let plugin = load(&runtime, wasm, &[]);
        let error = runtime
            .decide_refund(&plugin, Arc::new(NoActivity), &refund(500, 1))
            .expect_err(code);
        assert_eq!(error.code(), *code, "{error}");
    }
    assert_still_serving(&runtime);
}

#[test]
fn a_loop_with_unlimited_fuel_is_stopped_by_the_deadline() {
    let runtime = Runtime::new(Limits {
        fuel_max: 1 << 60,
        timeout_ms: 20,
        ..Limits::default()
    })
    .unwrap();
    let error = call_with_mode(&runtime, artifacts::HOSTILE_LOOP, None).unwrap_err();
    assert_eq!(error, PluginError::Timeout { timeout_ms: 20 });
    assert_still_serving(&runtime);
}

#[test]
fn log_spam_is_kept_within_its_budget_and_the_payment_still_approved() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let called = call_with_mode(&runtime, artifacts::HOSTILE_LOG_SPAM, None).unwrap();
    assert_eq!(
        called.value,
        Decision::Approve {
            quote: Default::default()
        }
    );
    assert!(called.logs_truncated);
    let limits = Limits::default();
    let kept: usize = called.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= limits.log_bytes_max, "kept {kept} bytes");
    assert!(
        called
            .logs
            .iter()
            .all(|l| l.message.len() <= limits.log_line_bytes_max)
    );
    // The 1 MiB first line is kept, cut to the line limit.
    assert!(called.logs[0].message.bytes().all(|b| b == b'g'));
}

/// Each absurd mode either fails conversion with the broken rule named, or
/// converts and then fails the host's `Quote::settle` with its precise error.
#[test]
fn every_absurd_quote_fails_conversion_or_settlement_precisely() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    type IsExpected = fn(&QuoteError) -> bool;
    let settle_fails: &[(&str, IsExpected)] = &[
        ("negative_fee", |e| {
            matches!(e, QuoteError::NegativeLine { .. })
        }),
        ("discount_above_amount", |e| {
            matches!(e, QuoteError::DiscountExceedsAmount { .. })
        }),
        ("wrong_currency", |e| {
            matches!(e, QuoteError::LineCurrency { .. })
        }),
        ("split_to_main", |e| matches!(e, QuoteError::SplitToMain)),
        ("splits_above_amount", |e| {
            matches!(e, QuoteError::OverRouted { .. })
        }),
        ("fee_above_amount", |e| {
            matches!(e, QuoteError::ChargesExceedAmount { .. })
        }),
    ];
    for (mode, expected) in settle_fails {
        let called = call_with_mode(&runtime, artifacts::HOSTILE_ABSURD_QUOTE, Some(mode))
            .unwrap_or_else(|e| panic!("{mode}: converts, got {e}"));
        let Decision::Approve { quote } = called.value else {
            panic!("{mode}: expected an approval to check");
        };
        let error = settle(&quote, eur(10_000)).expect_err(mode);
        assert!(expected(&error), "{mode}: {error}");
    }
    // A thousand splits are over the output limit before they are counted.
    let error = call_with_mode(
        &runtime,
        artifacts::HOSTILE_ABSURD_QUOTE,
        Some("too_many_splits"),
    )
    .unwrap_err();
    assert_eq!(error.code(), "plugin_output_too_large", "{error}");
    for mode in [
        "invalid_code",
        "line_to_other_merchant",
        "split_to_other_merchant",
    ] {
        let error =
            call_with_mode(&runtime, artifacts::HOSTILE_ABSURD_QUOTE, Some(mode)).expect_err(mode);
        assert_eq!(error.code(), "plugin_malformed_output", "{mode}: {error}");
    }
}

#[test]
fn absurd_refund_fees_fail_conversion_or_are_left_for_the_pipelines_check() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = load(&runtime, artifacts::HOSTILE_ABSURD_QUOTE, &[]);
    let ask = |reason: &str| {
        let request = RefundInput {
            reason: Some(reason.into()),
            ..refund(500, 1)
        };
        runtime.decide_refund(&plugin, Arc::new(NoActivity), &request)
    };
    // Well-typed and well-formed, so they convert; whether the fee is
    // negative, too large or in the wrong currency is the ledger's refund
    // check, with the refund's amount in hand.
    let fee = |reason: &str| match ask(reason).unwrap().value {
        RefundDecision::Allow { fee: Some(fee) } => fee,
        other => panic!("{reason}: {other:?}"),
    };
    assert!(fee("negative_refund_fee").is_negative());
    assert_eq!(fee("refund_fee_equal_to_amount"), eur(500));
    assert_eq!(fee("refund_fee_wrong_currency").currency().code(), "USD");
}

#[test]
fn wrong_world_and_wasi_components_are_refused_at_upload_naming_why() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wrong = runtime.compile(artifacts::HOSTILE_WRONG_WORLD).unwrap_err();
    assert_eq!(wrong.code(), "wrong_world", "{wrong}");
    assert!(
        wrong.to_string().contains("wasmpay:plugin/rules@0.1.0"),
        "{wrong}"
    );
    let wasi = runtime.compile(artifacts::HOSTILE_WASI_FS).unwrap_err();
    assert_eq!(wasi.code(), "forbidden_import", "{wasi}");
    assert!(wasi.to_string().contains("wasi:filesystem/"), "{wasi}");
}

#[test]
fn every_example_plugin_compiles_within_the_default_limits() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    for (name, wasm) in artifacts::EXAMPLES {
        let compiled = runtime
            .compile(wasm)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!compiled.artifact.is_empty(), "{name}");
    }
}

#[test]
fn a_payment_in_another_currency_is_priced_in_it() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugin = load(
        &runtime,
        artifacts::FEE,
        &[("fee_bps.JPY", "350"), ("fee_cap.JPY", "700")],
    );
    let jpy = Currency::parse("JPY").unwrap();
    let request = PaymentInput {
        amount: Money::from_minor(10_000, jpy),
        ..payment()
    };
    let called = runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &request)
        .unwrap();
    let Decision::Approve { quote } = called.value else {
        panic!("expected an approval");
    };
    assert_eq!(quote.lines[0].amount, Money::from_minor(350, jpy));
}

#[test]
fn the_example_plugins_answer_a_payment_without_growing_their_memory() {
    // The SDK's heap starts in the module's own zeroed data, so a call that
    // allocates a few KiB never grows memory, which the host would have to
    // take back with an `mprotect` before the slot's next call.
    let runtime = Runtime::new(Limits::default()).unwrap();
    for (name, wasm) in artifacts::EXAMPLES {
        let plugin = load(&runtime, wasm, &[("fee_bps.EUR", "150")]);
        for _ in 0..3 {
            let called = runtime
                .decide_payment(&plugin, Arc::new(Activity(3, 2_000)), &pay(20_000))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(called.memory_grows, 0, "{name}: {:?}", called.value);
        }
    }
}
