//! docs/PROTOCOL.md is the protocol's one reference: it must name every
//! error code and every default limit this crate has.

use std::path::Path;

use wasmpay_protocol::limits;
use wasmpay_protocol::{DecodeLimits, ErrorCode, SUBSCRIPTIONS};

fn protocol_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_protocol_doc_lists_every_error_code() {
    let doc = protocol_doc();
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "docs/PROTOCOL.md lacks `{code}`"
        );
    }
}

#[test]
fn the_protocol_doc_lists_every_limit_with_its_default() {
    let doc = protocol_doc();
    let value = serde_json::to_value(DecodeLimits::default()).unwrap();
    for (name, default) in value.as_object().unwrap() {
        let row = format!("`{name}` | {default}");
        assert!(doc.contains(&row), "docs/PROTOCOL.md lacks the row `{row}`");
    }
    assert!(doc.contains(&limits::HOLD_EXPIRES_IN_S_MAX.to_string()));
}

#[test]
fn the_protocol_doc_lists_the_subscriptions() {
    let doc = protocol_doc();
    for filter in SUBSCRIPTIONS {
        assert!(doc.contains(filter), "docs/PROTOCOL.md lacks {filter}");
    }
}

/// The JSON values in the doc's `json` blocks, each with the `###` section
/// it stands in (empty outside one).
fn json_blocks(doc: &str) -> Vec<(String, serde_json::Value)> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        let trimmed = line.trim();
        if let Some(heading) = line.strip_prefix("### ") {
            section = heading.to_owned();
        } else if line.starts_with("## ") {
            section.clear();
        } else if trimmed == "```json" {
            block = Some(String::new());
        } else if trimmed == "```" {
            if let Some(text) = block.take() {
                for value in serde_json::Deserializer::from_str(&text).into_iter() {
                    let value = value.unwrap_or_else(|e| panic!("{section}: {e}\n{text}"));
                    blocks.push((section.clone(), value));
                }
            }
        } else if let Some(text) = block.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks
}

#[test]
fn every_example_request_in_the_doc_decodes_and_every_reply_has_the_envelope() {
    use wasmpay_protocol::{Decoded, Reply, RequestProps, decode};
    let topic_of = |section: &str| {
        let action = match section {
            "balance" => "users/alice/balance",
            "pay" => "users/alice/pay",
            "authorize" => "users/alice/authorize",
            "history" => "users/alice/history",
            "capture" => "merchants/m-coffee/capture",
            "void" => "merchants/m-coffee/void",
            "refund" => "merchants/m-coffee/refund",
            "payout" => "merchants/m-coffee/payout",
            "plugin upload" => "merchants/m-coffee/plugin/upload",
            "plugin activate" => "merchants/m-coffee/plugin/activate",
            "plugin rollback" => "merchants/m-coffee/plugin/rollback",
            "plugin list" => "merchants/m-coffee/plugin/list",
            "open an account" => "admin/accounts/open",
            "deposit" => "admin/deposit",
            "status" => "admin/status",
            _ => return None,
        };
        Some(format!("wasmpay/v1/{action}"))
    };
    let mut requests = 0;
    for (section, value) in json_blocks(&protocol_doc()) {
        if value.get("ok").is_some() {
            let reply: Reply =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{section}: {e}"));
            assert_eq!(reply.ok, reply.result.is_some(), "{section}: {value}");
            assert_eq!(!reply.ok, reply.error.is_some(), "{section}: {value}");
        } else if let Some(topic) = topic_of(&section) {
            let payload = serde_json::to_vec(&value).unwrap();
            let decoded = decode(
                &topic,
                &payload,
                &RequestProps::default(),
                &DecodeLimits::default(),
            );
            assert!(
                matches!(decoded, Decoded::Request(_)),
                "{section}: {value} gave {decoded:?}"
            );
            requests += 1;
        }
    }
    assert!(requests >= 15, "only {requests} example requests found");
}
