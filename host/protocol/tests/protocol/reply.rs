//! The reply encoders round-trip through the documented shapes.

use std::collections::BTreeMap;

use serde_json::json;
use wasmpay_domain::{
    Code, Currency, Decline, LineKind, MerchantId, Money, PaymentId, PluginRef, QuoteLine,
    RequestId, Settlement, SubAccount, UserId,
};
use wasmpay_protocol::reply::{
    AccountBalance, BalanceResult, QuoteLineView, SettlementView, VoidResult,
};
use wasmpay_protocol::{
    Amount, DeadLetter, ErrorCode, Notification, NotificationEvent, PaymentResult, PaymentStatus,
    Principal, Rejection, Reply, dead_letter_payload, encode_error, encode_ok,
};

fn money(text: &str, code: &str) -> Money {
    Money::parse(text, Currency::parse(code).unwrap()).unwrap()
}

fn approved_payment() -> PaymentResult {
    let main = SubAccount::main();
    let tax = SubAccount::new("tax").unwrap();
    let settlement = Settlement {
        payer_total: money("4.50", "EUR"),
        merchant_credits: [(main, money("4.10", "EUR")), (tax, money("0.30", "EUR"))].into(),
        platform_fee: money("0.10", "EUR"),
    };
    let line = QuoteLine {
        kind: LineKind::Tax,
        code: Code::new("vat").unwrap(),
        description: "VAT 7%".into(),
        amount: money("0.30", "EUR"),
        account: SubAccount::new("tax").unwrap(),
    };
    PaymentResult {
        payment_id: PaymentId::derive(
            &UserId::new("alice").unwrap(),
            &RequestId::new("r-1").unwrap(),
        ),
        status: PaymentStatus::Approved,
        merchant: MerchantId::new("coffee-shop").unwrap(),
        amount: money("4.20", "EUR").into(),
        payer_total: Some(money("4.50", "EUR").into()),
        lines: vec![QuoteLineView::from(&line)],
        settlement: Some(SettlementView::from(&settlement)),
        decline: None,
        expires_at_ms: None,
        plugin: Some(PluginRef {
            version: 3,
            sha256: "ab".repeat(32),
        }),
    }
}

#[test]
fn an_ok_reply_carries_id_and_result() {
    let id = RequestId::new("r-1").unwrap();
    let result = approved_payment();
    let bytes = encode_ok(&id, &result);
    let reply: Reply<PaymentResult> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        reply,
        Reply {
            id: Some("r-1".into()),
            ok: true,
            result: Some(result),
            error: None
        }
    );
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        value["result"]["amount"],
        json!({"amount": "4.20", "currency": "EUR"})
    );
    assert_eq!(value["result"]["status"], "approved");
    assert_eq!(
        value["result"]["settlement"]["merchant_credits"]["tax"]["amount"],
        "0.30"
    );
    assert!(value.get("error").is_none());
}

#[test]
fn an_error_reply_carries_code_message_and_detail() {
    let mut declined = approved_payment();
    declined.status = PaymentStatus::Declined;
    declined.payer_total = None;
    declined.settlement = None;
    declined.lines.clear();
    declined.decline = Some(Decline {
        code: Code::new("velocity_count_exceeded").unwrap(),
        message: "too many".into(),
    });
    let detail = serde_json::to_value(&declined).unwrap();
    let bytes = encode_error(
        Some("r-1"),
        ErrorCode::PaymentDeclined.as_str(),
        "declined by coffee-shop",
        Some(detail),
    );
    let reply: Reply = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(reply.id.as_deref(), Some("r-1"));
    assert!(!reply.ok);
    let error = reply.error.unwrap();
    assert_eq!(error.code, "payment_declined");
    let back: PaymentResult = serde_json::from_value(error.detail.unwrap()).unwrap();
    assert_eq!(back, declined);
    assert_eq!(
        back.decline.unwrap().code.as_str(),
        "velocity_count_exceeded"
    );
}

#[test]
fn an_error_without_a_readable_id_says_null() {
    let value: serde_json::Value =
        serde_json::from_slice(&encode_error(None, "invalid_json", "bad", None)).unwrap();
    assert_eq!(
        value,
        json!({"id": null, "ok": false, "error": {"code": "invalid_json", "message": "bad"}})
    );
}

#[test]
fn a_rejection_encodes_as_its_error_reply() {
    let rejection = Rejection {
        code: ErrorCode::ExcessPrecision,
        message: "field `amount`: 12.501 has more decimals than EUR allows (2)".into(),
        id: Some("r-1".into()),
        reply_to: Some(Principal::User(UserId::new("alice").unwrap())),
    };
    let reply: Reply = serde_json::from_slice(&rejection.reply_payload()).unwrap();
    assert_eq!(reply.id.as_deref(), Some("r-1"));
    assert_eq!(reply.error.unwrap().code, "excess_precision");
}

#[test]
fn amounts_always_carry_the_currency_scale_as_strings() {
    for (text, code, wire) in [
        ("12.5", "EUR", "12.50"),
        ("1000", "JPY", "1000"),
        ("0.005", "KWD", "0.005"),
        ("-3", "EUR", "-3.00"),
    ] {
        let amount = Amount(money(text, code));
        let value = serde_json::to_value(amount).unwrap();
        assert_eq!(value, json!({"amount": wire, "currency": code}));
        assert_eq!(serde_json::from_value::<Amount>(value).unwrap(), amount);
    }
    assert!(serde_json::from_value::<Amount>(json!({"amount": 12.5, "currency": "EUR"})).is_err());
    assert!(
        serde_json::from_value::<Amount>(json!({"amount": "1.001", "currency": "EUR"})).is_err()
    );
}

#[test]
fn balances_round_trip() {
    let result = BalanceResult {
        accounts: vec![AccountBalance {
            account: SubAccount::main(),
            balance: money("10.00", "EUR").into(),
            held: money("2.00", "EUR").into(),
            available: money("8.00", "EUR").into(),
            overdraft_limit: None,
        }],
    };
    let reply: Reply<BalanceResult> =
        serde_json::from_slice(&encode_ok(&RequestId::new("b-1").unwrap(), &result)).unwrap();
    assert_eq!(reply.result, Some(result));
}

#[test]
fn notifications_are_tagged_by_event_and_round_trip() {
    let payment = Notification {
        merchant: MerchantId::new("coffee-shop").unwrap(),
        payer: UserId::new("alice").unwrap(),
        request_id: RequestId::new("r-1").unwrap(),
        at_ms: 1_700_000_000_000,
        replayed: false,
        event: NotificationEvent::Payment {
            payment: approved_payment(),
            memo: Some("flat white".into()),
            metadata: BTreeMap::from([("order".to_owned(), "42".to_owned())]),
        },
    };
    let void = Notification {
        event: NotificationEvent::Void {
            void: VoidResult {
                payment_id: "pay_1".parse().unwrap(),
                released: money("4.50", "EUR").into(),
            },
        },
        ..payment.clone()
    };
    for notification in [payment, void] {
        let bytes = notification.to_payload();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(value["event"].is_string(), "{value}");
        assert_eq!(
            serde_json::from_slice::<Notification>(&bytes).unwrap(),
            notification
        );
    }
}

#[test]
fn dead_letters_are_bounded_whatever_the_input() {
    let topic = "\u{e9}".repeat(10_000);
    let payload = vec![0xff; 1 << 20];
    let rejection = Rejection::new(ErrorCode::InvalidId, "topic names an invalid user id");
    let bytes = dead_letter_payload(&topic, &payload, &rejection);
    assert!(bytes.len() < 2_048, "{} bytes", bytes.len());
    let letter: DeadLetter = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(letter.code, "invalid_id");
    assert_eq!(letter.payload_bytes, 1 << 20);
    assert!(letter.topic.len() <= 256);
}
