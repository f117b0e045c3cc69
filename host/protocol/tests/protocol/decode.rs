//! `decode` at its boundary: a `check(topic, payload, expected)` helper,
//! a table of cases that need code (topics, binary uploads, limits), and
//! every fixture under `tests/fixtures/`.

use std::path::Path;

use wasmpay_domain::{Currency, MerchantId, Money, RequestId, UserId};
use wasmpay_protocol::command::{Authorize, Balance, Capture, History, Payment, PluginUpload};
use wasmpay_protocol::limits::{HISTORY_LIMIT_DEFAULT, HOLD_EXPIRES_IN_S_DEFAULT};
use wasmpay_protocol::{
    Command, DecodeLimits, Decoded, ErrorCode, Principal, Rejection, Request, RequestProps, decode,
};

/// What a case expects.
#[derive(Debug)]
enum Expect {
    /// Decodes to a request with this command.
    Command(Command),
    /// Decodes to some request (the fixtures' `ok.*`).
    AnyRequest,
    Ignore,
    /// Refused with this code, and a message containing this text.
    Code(ErrorCode, &'static str),
}

fn check_with(
    topic: &str,
    payload: &[u8],
    props: &RequestProps,
    limits: &DecodeLimits,
    expected: &Expect,
) -> Decoded {
    let decoded = decode(topic, payload, props, limits);
    let context = format!(
        "{topic} {:?}",
        String::from_utf8_lossy(&payload[..payload.len().min(200)])
    );
    match (expected, &decoded) {
        (Expect::Command(command), Decoded::Request(request)) => {
            assert_eq!(&request.command, command, "{context}");
        }
        (Expect::AnyRequest, Decoded::Request(_)) | (Expect::Ignore, Decoded::Ignore) => {}
        (Expect::Code(code, fragment), Decoded::Invalid(rejection)) => {
            assert_eq!(rejection.code, *code, "{context}: {}", rejection.message);
            assert!(
                rejection.message.contains(fragment),
                "{context}: message {:?} lacks {fragment:?}",
                rejection.message
            );
        }
        _ => panic!("{context}: expected {expected:?}, got {decoded:?}"),
    }
    decoded
}

fn check(topic: &str, payload: &str, expected: Expect) -> Decoded {
    check_with(
        topic,
        payload.as_bytes(),
        &RequestProps::default(),
        &DecodeLimits::default(),
        &expected,
    )
}

fn eur(text: &str) -> Money {
    Money::parse(text, Currency::parse("EUR").unwrap()).unwrap()
}

const PAY: &str = "wasmpay/v1/users/alice/pay";
const UPLOAD: &str = "wasmpay/v1/merchants/coffee-shop/plugin/upload";
/// The smallest byte string with a component's preamble.
const COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
const CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

#[test]
fn a_payment_decodes_into_domain_types() {
    let decoded = check(
        PAY,
        r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EUR","memo":"flat white","metadata":{"order":"42"}}"#,
        Expect::Command(Command::Pay(Payment {
            merchant: MerchantId::new("coffee-shop").unwrap(),
            amount: eur("4.20"),
            memo: Some("flat white".into()),
            metadata: [("order".to_owned(), "42".to_owned())].into(),
        })),
    );
    let Decoded::Request(Request { principal, id, .. }) = decoded else {
        unreachable!()
    };
    assert_eq!(principal, Principal::User(UserId::new("alice").unwrap()));
    assert_eq!(id, RequestId::new("r-1").unwrap());
}

#[test]
fn omitted_optional_fields_take_their_documented_defaults() {
    let pay = r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.2","currency":"EUR"}"#;
    let payment = Payment {
        merchant: MerchantId::new("coffee-shop").unwrap(),
        amount: eur("4.20"),
        memo: None,
        metadata: Default::default(),
    };
    check(PAY, pay, Expect::Command(Command::Pay(payment.clone())));
    check(
        "wasmpay/v1/users/alice/authorize",
        pay,
        Expect::Command(Command::Authorize(Authorize {
            payment,
            expires_in_s: HOLD_EXPIRES_IN_S_DEFAULT,
        })),
    );
    check(
        "wasmpay/v1/users/alice/history",
        r#"{"id":"h-1"}"#,
        Expect::Command(Command::History(History {
            currency: None,
            after: None,
            limit: HISTORY_LIMIT_DEFAULT,
        })),
    );
    check(
        "wasmpay/v1/users/alice/balance",
        r#"{"id":"b-1"}"#,
        Expect::Command(Command::Balance(Balance { currency: None })),
    );
    check(
        "wasmpay/v1/merchants/coffee-shop/capture",
        r#"{"id":"c-1","payment_id":"pay_1"}"#,
        Expect::Command(Command::Capture(Capture {
            payment_id: "pay_1".parse().unwrap(),
            amount: None,
        })),
    );
}

#[test]
fn topics_decide_principal_and_whether_to_answer() {
    let cases: &[(&str, Expect)] = &[
        ("wasmpay/v1/users/alice/replies", Expect::Ignore),
        (
            "wasmpay/v1/users/alice/replies/mqtt5-session",
            Expect::Ignore,
        ),
        (
            "wasmpay/v1/merchants/coffee-shop/notifications",
            Expect::Ignore,
        ),
        ("wasmpay/v1/admin/replies", Expect::Ignore),
        ("wasmpay/v1/dead-letter", Expect::Ignore),
        (
            "wasmpay/v2/users/alice/pay",
            Expect::Code(ErrorCode::UnknownTopic, "v1, not v2"),
        ),
        (
            "wasmpay/v1/users/alice/refund",
            Expect::Code(ErrorCode::UnknownTopic, "balance, pay, authorize, history"),
        ),
        (
            "wasmpay/v1/merchants/coffee-shop/pay",
            Expect::Code(ErrorCode::UnknownTopic, "capture, void"),
        ),
        (
            "wasmpay/v1/merchants/coffee-shop/plugin/delete",
            Expect::Code(ErrorCode::UnknownTopic, "plugin/upload"),
        ),
        (
            "wasmpay/v1/admin/accounts/close",
            Expect::Code(ErrorCode::UnknownTopic, "accounts/open, deposit, status"),
        ),
        (
            "wasmpay/v1/users/alice/pay/extra",
            Expect::Code(ErrorCode::UnknownTopic, ""),
        ),
        (
            "wasmpay/v1/banks/x/pay",
            Expect::Code(ErrorCode::UnknownTopic, ""),
        ),
        (
            "$SYS/broker/uptime",
            Expect::Code(ErrorCode::UnknownTopic, ""),
        ),
        ("", Expect::Code(ErrorCode::UnknownTopic, "")),
        (
            "wasmpay/v1/users//pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/+/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/#/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/al ice/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/\u{430}lice/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/alice\u{200b}/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/users/.alice/pay",
            Expect::Code(ErrorCode::InvalidId, "user id"),
        ),
        (
            "wasmpay/v1/merchants/caf\u{e9}/refund",
            Expect::Code(ErrorCode::InvalidId, "merchant id"),
        ),
    ];
    let payload = r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EUR"}"#;
    for (topic, expected) in cases {
        let decoded = check_with(
            topic,
            payload.as_bytes(),
            &RequestProps::default(),
            &DecodeLimits::default(),
            expected,
        );
        if let Decoded::Invalid(rejection) = decoded {
            // An unknown action under a valid principal is answered; anything
            // else has no one to answer and goes to the dead-letter topic.
            let answerable = rejection.code == ErrorCode::UnknownTopic
                && [
                    "wasmpay/v1/users/alice/",
                    "wasmpay/v1/merchants/coffee-shop/",
                    "wasmpay/v1/admin/",
                ]
                .iter()
                .any(|prefix| topic.starts_with(prefix));
            assert_eq!(rejection.reply_to.is_some(), answerable, "{topic}");
        }
    }
}

#[test]
fn refusals_name_the_request_id_when_it_can_be_read() {
    let cases = [
        (
            r#"{"id":"r-9","merchant":"coffee-shop","amount":4.2,"currency":"EUR"}"#,
            Some("r-9"),
        ),
        (r#"{"id":"r-9","amout":"4.20"}"#, Some("r-9")),
        (
            r#"{"amount":"4.20","id":"r-9","merchant":"x y","currency":"EUR"}"#,
            Some("r-9"),
        ),
        (
            r#"{"id":"r/9","merchant":"coffee-shop","amount":"4.20","currency":"EUR"}"#,
            None,
        ),
        (r#"{"id":"r-9","#, None),
        (r#"{"id":9}"#, None),
    ];
    for (payload, id) in cases {
        let Decoded::Invalid(rejection) = decode(
            PAY,
            payload.as_bytes(),
            &RequestProps::default(),
            &DecodeLimits::default(),
        ) else {
            panic!("{payload} decoded");
        };
        assert_eq!(rejection.id.as_deref(), id, "{payload}");
        assert_eq!(
            rejection.reply_to,
            Some(Principal::User(UserId::new("alice").unwrap()))
        );
    }
}

#[test]
fn error_messages_say_what_is_wrong_and_what_to_send() {
    let cases = [
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":"12.501","currency":"EUR"}"#,
            "field `amount`: 12.501 has more decimals than EUR allows (2)",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amout":"4.20","currency":"EUR"}"#,
            "unknown field `amout`, expected one of: id, user, merchant, amount, currency, memo, metadata",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":4.2,"currency":"EUR"}"#,
            "decimal strings",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EUR","metadata":{"order":42}}"#,
            "field `metadata.order`: invalid type",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EUR","user":"bob"}"#,
            "omit the field",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EURO"}"#,
            "like EUR or JPY",
        ),
        (
            r#"{"id":"r-1","merchant":"coffee-shop","amount":"92233720368547758.08","currency":"EUR"}"#,
            "at most 92233720368547758.07",
        ),
    ];
    for (payload, fragment) in cases {
        let Decoded::Invalid(rejection) = decode(
            PAY,
            payload.as_bytes(),
            &RequestProps::default(),
            &DecodeLimits::default(),
        ) else {
            panic!("{payload} decoded");
        };
        assert!(
            rejection.message.contains(fragment),
            "{payload}: {:?}",
            rejection.message
        );
    }
}

fn props(pairs: &[(&str, &str)]) -> RequestProps {
    RequestProps {
        user_properties: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn a_binary_upload_takes_id_and_config_from_user_properties() {
    let decoded = check_with(
        UPLOAD,
        COMPONENT,
        &props(&[
            ("id", "u-1"),
            ("config.fee_bps", "150"),
            ("traceparent", "00-ab"),
            ("config.tier", "gold"),
        ]),
        &DecodeLimits::default(),
        &Expect::Command(Command::PluginUpload(PluginUpload {
            wasm: COMPONENT.to_vec(),
            config: [
                ("fee_bps".to_owned(), "150".to_owned()),
                ("tier".to_owned(), "gold".to_owned()),
            ]
            .into(),
        })),
    );
    let Decoded::Request(request) = decoded else {
        unreachable!()
    };
    assert_eq!(request.id.as_str(), "u-1");
    assert_eq!(request.command.name(), "plugin/upload");
}

#[test]
fn binary_uploads_are_checked_like_json_ones() {
    let small = DecodeLimits {
        upload_bytes_max: 8,
        ..DecodeLimits::default()
    };
    let cases: &[(&[u8], RequestProps, &DecodeLimits, Expect)] = &[
        (
            COMPONENT,
            props(&[]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::MissingField, "user property `id`"),
        ),
        (
            COMPONENT,
            props(&[("id", "a/b")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidId, "request id"),
        ),
        (
            COMPONENT,
            props(&[("id", "u-1"), ("id", "u-2")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::DuplicateField, "`id`"),
        ),
        (
            COMPONENT,
            props(&[("id", "u-1"), ("config.k", "1"), ("config.k", "2")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::DuplicateField, "config.k"),
        ),
        (
            COMPONENT,
            props(&[("id", "u-1"), ("config.a b", "1")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidValue, "a b"),
        ),
        (
            CORE_MODULE,
            props(&[("id", "u-1")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidUpload, "core WebAssembly module"),
        ),
        (
            b"\0asm",
            props(&[("id", "u-1")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidUpload, "not WebAssembly"),
        ),
        (
            b"\0asm\x0d\x00\x01\x00\x00",
            props(&[("id", "u-1")]),
            &small,
            Expect::Code(ErrorCode::PayloadTooLarge, "at most 8"),
        ),
        (
            b"MZ\x90\x00",
            props(&[("id", "u-1")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidUtf8, "binary component"),
        ),
        (
            b"hello",
            props(&[("id", "u-1")]),
            &DecodeLimits::default(),
            Expect::Code(ErrorCode::InvalidJson, ""),
        ),
    ];
    for (payload, props, limits, expected) in cases {
        check_with(UPLOAD, payload, props, limits, expected);
    }
    // The id travels with a refusal of a binary upload, for MQTT 5 clients
    // that send no correlation data.
    let Decoded::Invalid(rejection) = decode(
        UPLOAD,
        CORE_MODULE,
        &props(&[("id", "u-1")]),
        &DecodeLimits::default(),
    ) else {
        panic!("a core module was accepted");
    };
    assert_eq!(rejection.id.as_deref(), Some("u-1"));
}

#[test]
fn every_limit_is_read_from_decode_limits() {
    let tight = DecodeLimits {
        payload_bytes_max: 200,
        memo_bytes_max: 3,
        metadata_entries_max: 1,
        metadata_key_bytes_max: 2,
        metadata_value_bytes_max: 2,
        history_limit_max: 5,
        hold_expires_in_s_max: 60,
        hold_expires_in_s_default: 30,
        reason_bytes_max: 2,
        config_entries_max: 1,
        config_key_bytes_max: 1,
        config_value_bytes_max: 1,
        ..DecodeLimits::default()
    };
    let pay = |extra: &str| {
        format!(r#"{{"id":"r-1","merchant":"m","amount":"1","currency":"EUR"{extra}}}"#)
    };
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            PAY,
            pay(r#","memo":"abcd""#),
            Expect::Code(ErrorCode::LimitExceeded, "at most 3"),
        ),
        (PAY, pay(r#","memo":"abc""#), Expect::AnyRequest),
        (
            PAY,
            pay(r#","metadata":{"a":"1","b":"2"}"#),
            Expect::Code(ErrorCode::LimitExceeded, "2 entries, at most 1"),
        ),
        (
            PAY,
            pay(r#","metadata":{"abc":"1"}"#),
            Expect::Code(ErrorCode::LimitExceeded, "at most 2"),
        ),
        (
            PAY,
            pay(r#","metadata":{"ab":"123"}"#),
            Expect::Code(ErrorCode::LimitExceeded, "`metadata.ab`"),
        ),
        (
            PAY,
            pay(&format!(r#","memo":"{}""#, "x".repeat(200))),
            Expect::Code(ErrorCode::PayloadTooLarge, "at most 200"),
        ),
        (
            "wasmpay/v1/users/alice/history",
            r#"{"id":"h","limit":6}"#.into(),
            Expect::Code(ErrorCode::LimitExceeded, "limit of 5 entries"),
        ),
        (
            "wasmpay/v1/users/alice/authorize",
            pay(r#","expires_in_s":61"#),
            Expect::Code(ErrorCode::LimitExceeded, "limit of 60 seconds"),
        ),
        (
            "wasmpay/v1/merchants/m/void",
            r#"{"id":"v","payment_id":"p","reason":"abc"}"#.into(),
            Expect::Code(ErrorCode::LimitExceeded, "`reason`"),
        ),
        (
            UPLOAD,
            r#"{"id":"u","wasm_base64":"AGFzbQ0AAQA=","config":{"ab":"1"}}"#.into(),
            Expect::Code(ErrorCode::LimitExceeded, "at most 1"),
        ),
        (
            UPLOAD,
            r#"{"id":"u","wasm_base64":"AGFzbQ0AAQA=","config":{"a":"1"}}"#.into(),
            Expect::AnyRequest,
        ),
    ];
    for (topic, payload, expected) in cases {
        check_with(
            topic,
            payload.as_bytes(),
            &RequestProps::default(),
            &tight,
            &expected,
        );
    }
    let Decoded::Request(request) = decode(
        "wasmpay/v1/users/alice/authorize",
        pay("").as_bytes(),
        &RequestProps::default(),
        &tight,
    ) else {
        panic!("authorize refused");
    };
    assert!(matches!(
        request.command,
        Command::Authorize(Authorize {
            expires_in_s: 30,
            ..
        })
    ));
}

#[test]
fn a_json_upload_may_exceed_the_request_limit_by_the_base64_overhead() {
    let limits = DecodeLimits {
        upload_bytes_max: 3000,
        payload_bytes_max: 100,
        ..DecodeLimits::default()
    };
    let mut wasm = COMPONENT.to_vec();
    wasm.resize(3000, 0);
    use base64::Engine as _;
    let body = format!(
        r#"{{"id":"u-1","wasm_base64":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(&wasm)
    );
    check_with(
        UPLOAD,
        body.as_bytes(),
        &RequestProps::default(),
        &limits,
        &Expect::AnyRequest,
    );
    wasm.push(0);
    let body = format!(
        r#"{{"id":"u-1","wasm_base64":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(&wasm)
    );
    check_with(
        UPLOAD,
        body.as_bytes(),
        &RequestProps::default(),
        &limits,
        &Expect::Code(ErrorCode::PayloadTooLarge, "3001 bytes"),
    );
}

/// `tests/fixtures/<topic with . for />/<code>.<description>.json`: the
/// file is the payload as sent; `ok` means it must decode.
#[test]
fn every_fixture_decodes_as_its_name_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut checked = 0;
    let mut codes = std::collections::BTreeSet::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let topic = format!(
            "wasmpay/v1/{}",
            dir.file_name().unwrap().to_str().unwrap().replace('.', "/")
        );
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            let code = name.split('.').next().unwrap();
            let payload = std::fs::read(&file).unwrap();
            let expected = if code == "ok" {
                Expect::AnyRequest
            } else {
                let parsed = ErrorCode::parse(code)
                    .unwrap_or_else(|| panic!("{name}: `{code}` is not a code"));
                codes.insert(parsed);
                Expect::Code(parsed, "")
            };
            let decoded = check_with(
                &topic,
                &payload,
                &RequestProps::default(),
                &DecodeLimits::default(),
                &expected,
            );
            if let Decoded::Invalid(Rejection {
                reply_to, message, ..
            }) = decoded
            {
                assert!(
                    reply_to.is_some(),
                    "{name}: a valid topic's sender can be answered"
                );
                assert!(
                    !message.is_empty() && message.len() < 512,
                    "{name}: {message:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 100,
        "only {checked} fixtures found under {}",
        root.display()
    );
    // Every code `decode` produces from a payload has at least one fixture.
    for code in [
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidJson,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::DuplicateField,
        ErrorCode::WrongType,
        ErrorCode::InvalidValue,
        ErrorCode::InvalidId,
        ErrorCode::InvalidAmount,
        ErrorCode::ExcessPrecision,
        ErrorCode::UnknownCurrency,
        ErrorCode::AmountNotPositive,
        ErrorCode::AmountOverflow,
        ErrorCode::IdentityMismatch,
        ErrorCode::LimitExceeded,
        ErrorCode::InvalidUpload,
    ] {
        assert!(codes.contains(&code), "no fixture for {code}");
    }
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let depth = 16_000;
    let payload = format!(
        r#"{{"id":"r-1","metadata":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let limits = DecodeLimits {
        payload_bytes_max: payload.len(),
        ..DecodeLimits::default()
    };
    let decoded = decode(PAY, payload.as_bytes(), &RequestProps::default(), &limits);
    assert!(matches!(decoded, Decoded::Invalid(_)), "{decoded:?}");
}
