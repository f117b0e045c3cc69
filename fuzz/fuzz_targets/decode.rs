//! `wasmpay_protocol::decode` on arbitrary topics, user properties and
//! payloads (layout: `wasmpay_fuzz::DecodeInput`).
//!
//! `decode` promises to be total: any message gets an answer, never a panic.
//! Every refusal is also answered on the wire, so its reply must be a JSON
//! envelope carrying the refusal's code, and an id echoed back to a client
//! must be one a client could have sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpay_domain::RequestId;
use wasmpay_fuzz::DecodeInput;
use wasmpay_protocol::{DecodeLimits, Decoded, RequestProps, decode};

fuzz_target!(|data: &[u8]| {
    let input = DecodeInput::read(data);
    let props = RequestProps {
        user_properties: input.user_properties,
    };
    let decoded = decode(
        &input.topic,
        input.payload,
        &props,
        &DecodeLimits::default(),
    );
    let Decoded::Invalid(rejection) = decoded else {
        return;
    };
    assert!(
        !rejection.message.is_empty(),
        "{rejection:?} has no message"
    );
    let payload = rejection.reply_payload();
    let reply: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_else(|error| {
        panic!(
            "reply to {rejection:?} is not JSON ({error}): {:?}",
            String::from_utf8_lossy(&payload)
        )
    });
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], rejection.code.as_str(), "{reply}");
    assert_eq!(
        reply["error"]["message"],
        rejection.message.as_str(),
        "{reply}"
    );
    match &rejection.id {
        Some(id) => {
            assert!(RequestId::new(id.as_str()).is_ok(), "echoed id {id:?}");
            assert_eq!(reply["id"], id.as_str(), "{reply}");
        }
        None => assert!(reply["id"].is_null(), "{reply}"),
    }
});
