//! `decode` is total: arbitrary bytes give an answer, never a panic, and
//! every refusal can be encoded as a reply. (A cargo-fuzz target will drive
//! the same function with coverage guidance.)

use proptest::prelude::*;
use wasmpay_domain::RequestId;
use wasmpay_protocol::{DecodeLimits, Decoded, Reply, RequestProps, SUBSCRIPTIONS, decode};

/// Request topics with real principals, so payload parsing is reached.
const TOPICS: &[&str] = &[
    "wasmpay/v1/users/alice/pay",
    "wasmpay/v1/users/alice/authorize",
    "wasmpay/v1/users/alice/history",
    "wasmpay/v1/merchants/shop/capture",
    "wasmpay/v1/merchants/shop/refund",
    "wasmpay/v1/merchants/shop/plugin/upload",
    "wasmpay/v1/admin/accounts/open",
    "wasmpay/v1/admin/deposit",
];

fn assert_well_formed(decoded: &Decoded) {
    if let Decoded::Invalid(rejection) = decoded {
        assert!(!rejection.message.is_empty());
        if let Some(id) = &rejection.id {
            assert!(
                RequestId::new(id.as_str()).is_ok(),
                "echoed id {id:?} is not a valid id"
            );
        }
        let reply: Reply =
            serde_json::from_slice(&rejection.reply_payload()).expect("reply is JSON");
        assert_eq!(reply.error.unwrap().code, rejection.code.as_str());
    }
}

/// JSON-ish payloads: objects whose keys are real field names and whose
/// values are anything, which reaches far more of `decode` than raw bytes.
fn jsonish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "id",
        "user",
        "merchant",
        "amount",
        "currency",
        "memo",
        "metadata",
        "expires_in_s",
        "payment_id",
        "reason",
        "account",
        "limit",
        "after",
        "wasm_base64",
        "config",
        "version",
        "owner",
    ]);
    let value = prop_oneof![
        Just("\"r-1\"".to_owned()),
        Just("\"EUR\"".to_owned()),
        "\"-?[0-9]{0,22}(\\.[0-9]{0,5})?\"",
        "-?[0-9]{1,25}(\\.[0-9]{1,4})?(e[0-9]{1,3})?",
        "\"[^\"\\\\]{0,10}\"",
        Just("{\"user\":\"a\"}".to_owned()),
        Just("{\"k\":\"v\"}".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("true".to_owned()),
    ];
    prop::collection::vec((key, value), 0..8).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_topics_and_bytes_never_panic(topic in any::<String>(), payload in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_well_formed(&decode(&topic, &payload, &RequestProps::default(), &DecodeLimits::default()));
    }

    #[test]
    fn arbitrary_payloads_on_real_topics_never_panic(
        topic in prop::sample::select(TOPICS),
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        assert_well_formed(&decode(topic, &payload, &RequestProps::default(), &DecodeLimits::default()));
    }

    #[test]
    fn json_shaped_payloads_never_panic(topic in prop::sample::select(TOPICS), payload in jsonish()) {
        assert_well_formed(&decode(topic, payload.as_bytes(), &RequestProps::default(), &DecodeLimits::default()));
    }

    #[test]
    fn topic_shaped_strings_never_panic(
        parts in prop::collection::vec(prop_oneof![Just("wasmpay".to_owned()), Just("v1".to_owned()), Just("users".to_owned()),
            Just("merchants".to_owned()), Just("admin".to_owned()), Just("plugin".to_owned()), Just("replies".to_owned()),
            Just("+".to_owned()), Just("#".to_owned()), Just(String::new()), "[a-z\u{e9}\u{200b}]{1,4}"], 0..7),
        props in prop::collection::vec(("(id|config\\.[a-z]{0,3}|x)", ".{0,8}"), 0..4),
    ) {
        let topic = parts.join("/");
        let props = RequestProps { user_properties: props };
        assert_well_formed(&decode(&topic, b"\0asm\x0d\x00\x01\x00", &props, &DecodeLimits::default()));
        assert_well_formed(&decode(&topic, br#"{"id":"r-1"}"#, &props, &DecodeLimits::default()));
    }
}

#[test]
fn the_subscriptions_cover_every_request_topic() {
    // Each filter is a valid MQTT filter: `#` last, wildcards whole levels.
    for filter in SUBSCRIPTIONS {
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            assert!(
                !level.contains('#') || (*level == "#" && i == levels.len() - 1),
                "{filter}"
            );
            assert!(!level.contains('+') || *level == "+", "{filter}");
        }
    }
    let matches = |filter: &str, topic: &str| {
        let (f, t): (Vec<&str>, Vec<&str>) =
            (filter.split('/').collect(), topic.split('/').collect());
        f.iter().enumerate().all(|(i, level)| {
            *level == "#" || t.get(i).is_some_and(|x| *level == "+" || level == x)
        }) && (f.last() == Some(&"#") || f.len() == t.len())
    };
    for topic in TOPICS.iter().chain(&[
        "wasmpay/v1/merchants/shop/plugin/activate",
        "wasmpay/v1/admin/status",
    ]) {
        assert!(
            SUBSCRIPTIONS.iter().any(|f| matches(f, topic)),
            "{topic} is not subscribed"
        );
    }
}
