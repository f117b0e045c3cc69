//! The local runner: a plugin, a JSON input, a report for people or JSON.

use std::collections::BTreeMap;

use wasmpay_plugin::Limits;
use wasmpay_plugin::runner::{self, RunError, RunOutcome};
use wasmpay_plugin_artifacts as artifacts;

const EXAMPLE: &str = include_str!("../../examples/payment.json");

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_example_input_shows_decision_settlement_fuel_and_time() {
    let fee = config(&[("fee_bps", "290"), ("fee_fixed.EUR", "0.30")]);
    let report = runner::run(artifacts::FEE, EXAMPLE, fee, Limits::default()).unwrap();
    let RunOutcome::Payment { settlement, .. } = &report.outcome else {
        panic!("expected a payment, got {:?}", report.outcome);
    };
    assert_eq!(settlement.as_ref().unwrap().payer_total.minor(), 1_064);
    assert!(report.fuel_used > 0 && report.fuel_used < report.fuel_max);
    let text = report.to_string();
    for expected in [
        "decision    approve",
        "service_fee",
        "payer pays  10.64 EUR",
        "fuel ",
        "memory      grown 0 times",
    ] {
        assert!(text.contains(expected), "{text}\nshould contain {expected}");
    }
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["outcome"]["kind"], "payment");
    assert_eq!(json["outcome"]["decision"]["outcome"], "approve");
}

#[test]
fn the_inputs_activity_answers_the_plugins_questions() {
    let guard = config(&[
        ("velocity_windows", "3600"),
        ("velocity_count_max.3600", "3"),
    ]);
    let report = runner::run(artifacts::GUARD, EXAMPLE, guard, Limits::default()).unwrap();
    assert!(
        report
            .to_string()
            .contains("decline velocity_count_exceeded"),
        "{report}"
    );
}

#[test]
fn a_refund_input_asks_decide_refund() {
    let input = r#"{"refund": {"currency": "EUR", "captured": "12.50", "amount": "5.00"}}"#;
    let fee = config(&[("refund_fee.EUR", "0.50")]);
    let report = runner::run(artifacts::FEE, input, fee, Limits::default()).unwrap();
    assert!(matches!(report.outcome, RunOutcome::Refund { .. }));
    assert!(
        report.to_string().contains("withholding a fee of 0.50 EUR"),
        "{report}"
    );
}

#[test]
fn a_failing_plugin_is_reported_with_its_code_and_logs() {
    let input = r#"{"amount": "12.50", "currency": "EUR"}"#;
    let report = runner::run(
        artifacts::HOSTILE_PANIC,
        input,
        BTreeMap::new(),
        Limits::default(),
    )
    .unwrap();
    let RunOutcome::Failed { code, .. } = &report.outcome else {
        panic!("expected a failure, got {:?}", report.outcome);
    };
    assert_eq!(code, "plugin_trap");
    assert!(
        report.logs[0]
            .message
            .starts_with("plugin panicked: deliberate panic")
    );
    assert!(
        report.to_string().contains("[error] plugin panicked"),
        "{report}"
    );
}

#[test]
fn bad_input_is_an_error_naming_what_is_wrong() {
    let run = |input: &str| runner::run(artifacts::FEE, input, BTreeMap::new(), Limits::default());
    let cases = [
        (r#"{"currency": "EUR"}"#, "amount"),
        (r#"{"amount": "1.005", "currency": "EUR"}"#, "more decimals"),
        (
            r#"{"amount": "1", "currency": "EUR", "colour": "red"}"#,
            "colour",
        ),
        ("not json", "expected"),
    ];
    for (input, words) in cases {
        let error = run(input).unwrap_err();
        assert!(matches!(error, RunError::Input(_)), "{input}: {error}");
        assert!(error.to_string().contains(words), "{input}: {error}");
    }
    let refused = runner::run(
        artifacts::HOSTILE_WASI_FS,
        EXAMPLE,
        BTreeMap::new(),
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        refused.to_string().contains("forbidden_import"),
        "{refused}"
    );
}
