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

/// Opens `owner`'s account, as request `k` of run `tag`.
fn open_account(tag: &str, k: u64, owner: serde_json::Value) -> Request {
    admin(
        "accounts/open",
        json!({ "id": format!("{tag}-open-{k}"), "owner": owner, "currency": CURRENCY }),
    )
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
        open_account(&tag, k, owner)
    })
}

/// Request `k` opens the account of the merchant named `names[k]`.
pub fn open_merchant_accounts(tag: &str, names: Vec<String>) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| {
        let name = names.get(k as usize).cloned().unwrap_or_default();
        open_account(&tag, k, json!({ "merchant": name }))
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

/// One merchant's plugin upload: the component and its configuration.
#[derive(Debug, Clone)]
pub struct PluginUpload {
    pub merchant: String,
    pub wasm: &'static [u8],
    pub config: BTreeMap<String, String>,
}

/// Merchants `m0..m{merchants}`, each with the `fee` plugin and its own
/// [`fee_config`].
pub fn fee_uploads(merchants: u64) -> Vec<PluginUpload> {
    (0..merchants)
        .map(|j| PluginUpload {
            merchant: merchant(j),
            wasm: wasmpay_plugin_artifacts::FEE,
            config: fee_config(j),
        })
        .collect()
}

/// Request `k` uploads `uploads[k]` (JSON with base64).
pub fn uploads(tag: &str, uploads: Vec<PluginUpload>) -> Generator {
    let tag = tag.to_owned();
    // Each distinct component is encoded once, however many merchants
    // upload it.
    let mut encoded: Vec<(&'static [u8], Arc<String>)> = Vec::new();
    let uploads: Vec<(PluginUpload, Arc<String>)> = uploads
        .into_iter()
        .map(|upload| {
            let known = encoded.iter().find(|(w, _)| std::ptr::eq(*w, upload.wasm));
            let base64 = match known {
                Some((_, base64)) => base64.clone(),
                None => {
                    let base64 =
                        Arc::new(base64::engine::general_purpose::STANDARD.encode(upload.wasm));
                    encoded.push((upload.wasm, base64.clone()));
                    base64
                }
            };
            (upload, base64)
        })
        .collect();
    Arc::new(move |k| {
        let (upload, wasm_base64) = &uploads[k as usize];
        let m = &upload.merchant;
        let body = json!({
            "id": format!("{tag}-up-{k}"),
            "wasm_base64": wasm_base64.as_str(),
            "config": upload.config,
        });
        Request {
            topic: format!("wasmpay/v1/merchants/{m}/plugin/upload"),
            payload: body.to_string().into_bytes(),
            reply_base: format!("wasmpay/v1/merchants/{m}/replies"),
        }
    })
}

/// Request `k`: merchant `versions[k].0` activates version `versions[k].1`.
pub fn activations(tag: &str, versions: Vec<(String, u64)>) -> Generator {
    let tag = tag.to_owned();
    Arc::new(move |k| {
        let (m, version) = &versions[k as usize];
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

/// User `u` pays `amount` EUR to merchant `m`, as request id `{tag}-{k}`,
/// with `metadata` for the merchant's rules.
fn pay(tag: &str, k: u64, u: &str, m: &str, amount: &str, metadata: &str) -> Request {
    Request {
        topic: format!("wasmpay/v1/users/{u}/pay"),
        payload: format!(
            r#"{{"id":"{tag}-{k}","merchant":"{m}","amount":"{amount}","currency":"{CURRENCY}"{metadata}}}"#
        )
        .into_bytes(),
        reply_base: format!("wasmpay/v1/users/{u}/replies"),
    }
}

/// Payment `k`: user `k % users` pays merchant `(k / users + k) % merchants`,
/// so every user pays every merchant over a long run. `tag` keeps request
/// ids unique across runs on the same ledger.
pub fn payments(tag: &str, users: u64, merchants: u64) -> Generator {
    let tag = tag.to_owned();
    let users = users.max(1);
    let merchants = merchants.max(1);
    Arc::new(move |k| {
        let m = merchant((k / users + k) % merchants);
        pay(&tag, k, &user(k % users), &m, AMOUNT, "")
    })
}

/// Payment `k`: user `k % users` pays `amount` to `payees[k % payees.len()]`,
/// a merchant name and, if any, the `metadata["mode"]` its rules read.
pub fn payments_to(
    tag: &str,
    users: u64,
    amount: &'static str,
    payees: Vec<(String, Option<String>)>,
) -> Generator {
    let tag = tag.to_owned();
    let users = users.max(1);
    let payees: Vec<(String, String)> = payees
        .into_iter()
        .map(|(m, mode)| {
            let metadata = mode
                .map(|mode| format!(r#","metadata":{{"mode":"{mode}"}}"#))
                .unwrap_or_default();
            (m, metadata)
        })
        .collect();
    Arc::new(move |k| {
        let (m, metadata) = &payees[(k % payees.len() as u64) as usize];
        pay(&tag, k, &user(k % users), m, amount, metadata)
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

    #[test]
    fn a_payment_to_a_named_merchant_carries_its_mode() {
        let payees = vec![
            ("h-a".to_owned(), Some("negative_fee".to_owned())),
            ("h-b".to_owned(), None),
        ];
        let pay = payments_to("t", 10, "12.00", payees);
        let body = |k| serde_json::from_slice::<serde_json::Value>(&pay(k).payload).unwrap();
        assert_eq!(body(2)["merchant"], "h-a");
        assert_eq!(body(2)["metadata"], json!({"mode": "negative_fee"}));
        assert_eq!(body(2)["amount"], "12.00");
        assert_eq!(body(3)["merchant"], "h-b");
        assert!(body(3).get("metadata").is_none());
    }
}
