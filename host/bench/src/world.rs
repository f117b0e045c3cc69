//! The simulated world: users `u0..`, merchants `m0..`, and the requests
//! that set them up and make them pay, as a client would send them over MQTT
//! (see `docs/PROTOCOL.md`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;

use crate::load::{Generator, Request};

/// Every account is in this currency.
pub const CURRENCY: &str = "EUR";
/// What each user gets before paying: enough for any run.
pub const DEPOSIT: &str = "1000000.00";
/// What each payment asks for.
pub const AMOUNT: &str = "4.20";

const ADMIN_REPLIES: &str = "wasmpay/v1/admin/replies";

pub fn user(i: u64) -> String {
    format!("u{i}")
}

pub fn merchant(j: u64) -> String {
    format!("m{j}")
}

/// The `fee` plugin's configuration for merchant `j`: a card-like fee, the
/// rate varying by merchant so that each has a configuration of its own.
pub fn fee_config(j: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("fee_bps".to_owned(), (250 + j % 100).to_string()),
        ("fee_fixed.EUR".to_owned(), "0.30".to_owned()),
        ("fee_cap.EUR".to_owned(), "5.00".to_owned()),
    ])
}

fn admin(topic: &str, body: serde_json::Value) -> Request {
    Request {
        topic: format!("wasmpay/v1/admin/{topic}"),
        payload: body.to_string().into_bytes(),
        reply_base: ADMIN_REPLIES.to_owned(),
    }
}

/// Request `k` opens user `k`'s account for `k < users`, else merchant
/// `k - users`'s.
pub fn open_accounts(tag: &str, users: u64) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| {
        let owner = if k < users {
            json!({ "user": user(k) })
        } else {
            json!({ "merchant": merchant(k - users) })
        };
        admin(
            "accounts/open",
            json!({ "id": format!("{tag}-open-{k}"), "owner": owner, "currency": CURRENCY }),
        )
    })
}

/// Deposits [`DEPOSIT`] for every user.
pub fn deposits(tag: &str) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| {
        admin(
            "deposit",
            json!({ "id": format!("{tag}-dep-{k}"), "user": user(k), "amount": DEPOSIT, "currency": CURRENCY }),
        )
    })
}

/// Merchant `k` uploads `wasm` (JSON with base64) with [`fee_config`].
pub fn uploads(tag: &str, wasm: &'static [u8]) -> Generator {
    let tag = tag.to_owned();
    let wasm_base64 = Arc::new(base64::engine::general_purpose::STANDARD.encode(wasm));
    Arc::new(move |k| {
        let m = merchant(k);
        let body = json!({
            "id": format!("{tag}-up-{k}"),
            "wasm_base64": wasm_base64.as_str(),
            "config": fee_config(k),
        });
        Request {
            topic: format!("wasmpay/v1/merchants/{m}/plugin/upload"),
            payload: body.to_string().into_bytes(),
            reply_base: format!("wasmpay/v1/merchants/{m}/replies"),
        }
    })
}

/// Merchant `k` activates `versions[k]`.
pub fn activations(tag: &str, versions: Vec<u64>) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| {
        let m = merchant(k);
        let version = versions.get(k as usize).copied().unwrap_or(1);
        Request {
            topic: format!("wasmpay/v1/merchants/{m}/plugin/activate"),
            payload: json!({ "id": format!("{tag}-act-{k}"), "version": version })
                .to_string()
                .into_bytes(),
            reply_base: format!("wasmpay/v1/merchants/{m}/replies"),
        }
    })
}

/// The operator asks for the daemon's status (the cheapest request with a
/// reply: it shows the daemon is serving).
pub fn status(tag: &str) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| admin("status", json!({ "id": format!("{tag}-status-{k}") })))
}

/// Payment `k`: user `k % users` pays merchant `(k / users + k) % merchants`,
/// so every user pays every merchant over a long run. `tag` keeps request
/// ids unique across runs on the same ledger.
pub fn payments(tag: &str, users: u64, merchants: u64) -> Generator {
    let tag = tag.to_owned();
    let users = users.max(1);
    let merchants = merchants.max(1);
    Arc::new(move |k| {
        let u = user(k % users);
        let m = merchant((k / users + k) % merchants);
        Request {
            topic: format!("wasmpay/v1/users/{u}/pay"),
            payload: format!(
                r#"{{"id":"{tag}-{k}","merchant":"{m}","amount":"{AMOUNT}","currency":"{CURRENCY}"}}"#
            )
            .into_bytes(),
            reply_base: format!("wasmpay/v1/users/{u}/replies"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_is_valid_json_naming_its_payer_and_merchant() {
        let request = payments("t", 10, 3)(13);
        assert_eq!(request.topic, "wasmpay/v1/users/u3/pay");
        let body: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
        assert_eq!(body["id"], "t-13");
        assert_eq!(body["merchant"], "m2");
        assert_eq!(request.reply_base, "wasmpay/v1/users/u3/replies");
    }

    #[test]
    fn accounts_open_for_users_then_merchants() {
        let open = open_accounts("t", 2);
        let owner = |k| {
            let body: serde_json::Value = serde_json::from_slice(&open(k).payload).unwrap();
            body["owner"].clone()
        };
        assert_eq!(owner(1), json!({"user": "u1"}));
        assert_eq!(owner(2), json!({"merchant": "m0"}));
    }
}
