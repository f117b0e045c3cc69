//! Request payloads exactly as they travel, and the JSON parse into them.
//!
//! Each struct is one payload schema: strict (`deny_unknown_fields`), with
//! ids, codes and amounts still as the strings the client sent. Turning
//! them into domain types happens in `decode`, where each failure gets its
//! own code; serde's part is only the shape (syntax, unknown, missing,
//! duplicate and wrongly typed fields), classified in [`parse`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};

use serde_path_to_error::Segment;

use crate::error::{ErrorCode, Rejection, SHOWN_BYTES_MAX, shown};

/// An amount as sent. JSON numbers are let through the parse only to be
/// refused in `decode` with a message that says why strings are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireAmount {
    Text(String),
    /// A JSON number, as serde_json reads it back.
    Number(String),
}

impl<'de> Deserialize<'de> for WireAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = WireAmount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string like \"12.50\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireAmount, E> {
                Ok(WireAmount::Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireAmount, E> {
                Ok(WireAmount::Number(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireAmount, E> {
                Ok(WireAmount::Number(v.to_string()))
            }
            // The float is only ever displayed in the refusal, never used.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireAmount, E> {
                Ok(WireAmount::Number(v.to_string()))
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

/// A JSON object of string values that refuses duplicate keys (a plain map
/// would keep the last one silently).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StrictMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StrictMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StrictMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictMap, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if entries.contains_key(&key) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            key.escape_debug()
                        )));
                    }
                    entries.insert(key, value);
                }
                Ok(StrictMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// The id alone, read leniently from a payload that failed strict parsing,
/// so that the error reply can still carry it.
#[derive(Deserialize)]
struct IdProbe {
    id: Option<String>,
}

/// The `id` field of `text`, if it is a JSON object with a string `id`.
pub(crate) fn probe_id(text: &str) -> Option<String> {
    serde_json::from_str::<IdProbe>(text)
        .ok()
        .and_then(|probe| probe.id)
}

/// `{"id"}` alone: requests whose topic says everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Bare {
    pub id: String,
}

/// `{"id", "user"?|"merchant"?}` for plugin/rollback, plugin/list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct MerchantBare {
    pub id: String,
    pub merchant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct UserBalance {
    pub id: String,
    pub user: Option<String>,
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct MerchantBalance {
    pub id: String,
    pub merchant: Option<String>,
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Pay {
    pub id: String,
    pub user: Option<String>,
    pub merchant: String,
    pub amount: WireAmount,
    pub currency: String,
    pub memo: Option<String>,
    pub metadata: Option<StrictMap>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Authorize {
    pub id: String,
    pub user: Option<String>,
    pub merchant: String,
    pub amount: WireAmount,
    pub currency: String,
    pub memo: Option<String>,
    pub metadata: Option<StrictMap>,
    pub expires_in_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct UserHistory {
    pub id: String,
    pub user: Option<String>,
    pub currency: Option<String>,
    pub after: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct MerchantHistory {
    pub id: String,
    pub merchant: Option<String>,
    pub currency: Option<String>,
    pub after: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Capture {
    pub id: String,
    pub merchant: Option<String>,
    pub payment_id: String,
    pub amount: Option<WireAmount>,
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Void {
    pub id: String,
    pub merchant: Option<String>,
    pub payment_id: String,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Refund {
    pub id: String,
    pub merchant: Option<String>,
    pub payment_id: String,
    pub amount: WireAmount,
    pub currency: String,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Payout {
    pub id: String,
    pub merchant: Option<String>,
    pub amount: WireAmount,
    pub currency: String,
    pub account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct PluginUpload {
    pub id: String,
    pub merchant: Option<String>,
    pub wasm_base64: String,
    pub config: Option<StrictMap>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct PluginActivate {
    pub id: String,
    pub merchant: Option<String>,
    pub version: u64,
}

/// `{"user": "alice"}` or `{"merchant": "shop"}`: a struct rather than an
/// enum, so that naming both or neither gets a clear message in `decode`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object like {\"user\": \"alice\"} or {\"merchant\": \"shop\"}"
)]
pub(crate) struct Owner {
    pub user: Option<String>,
    pub merchant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct OpenAccount {
    pub id: String,
    pub owner: Owner,
    pub currency: String,
    pub overdraft_limit: Option<WireAmount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub(crate) struct Deposit {
    pub id: String,
    pub user: String,
    pub amount: WireAmount,
    pub currency: String,
}

/// Parses `text` as the payload schema `T`, or says precisely what is wrong
/// and where.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Rejection> {
    // serde lets a struct be written as an array of its fields; the
    // protocol only has objects.
    if text.trim_start().starts_with('[') {
        return Err(Rejection::new(
            ErrorCode::WrongType,
            "the payload is a JSON array; expected one JSON object like {\"id\": \"r-1\", ...}",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| classify(error.path().iter().collect(), error.inner()))?;
    deserializer
        .end()
        .map_err(|error| classify(Vec::new(), &error))?;
    Ok(value)
}

/// Maps a serde_json error onto the catalogue. serde's built-in messages
/// start with stable phrases (`unknown field`, `missing field`, ...); the
/// tests pin each one, so a change in serde shows up as a failing test.
fn classify(mut segments: Vec<&Segment>, error: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    let location = format!(" at line {} column {}", error.line(), error.column());
    let full = error.to_string();
    let message = full.strip_suffix(&location).unwrap_or(&full);
    if message == NUMBER_OUT_OF_RANGE
        && let Some(Segment::Map { key }) = segments.last()
    {
        let is_amount = segments.len() == 1 && AMOUNT_FIELDS.contains(&key.as_str());
        return number_out_of_range(&path_text(&segments), is_amount);
    }
    if !matches!(error.classify(), Category::Data) {
        return Rejection::new(
            ErrorCode::InvalidJson,
            format!(
                "invalid JSON at line {} column {}: {message}; expected one JSON object",
                error.line(),
                error.column()
            ),
        );
    }
    let (code, message) = if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path ends at the unknown key itself; the reader wants the
        // object it is in.
        segments.pop();
        (
            ErrorCode::UnknownField,
            format!("unknown field {}", expected_list(rest)),
        )
    } else if message.starts_with("missing field") {
        (ErrorCode::MissingField, message.to_owned())
    } else if message.starts_with("duplicate field") {
        (ErrorCode::DuplicateField, message.to_owned())
    } else if message.starts_with("invalid value") {
        (ErrorCode::InvalidValue, message.to_owned())
    } else {
        // `invalid type`, `invalid length`: the value has the wrong shape.
        (ErrorCode::WrongType, message.to_owned())
    };
    let path = path_text(&segments);
    if path.is_empty() {
        Rejection::new(code, message)
    } else {
        Rejection::new(code, format!("field `{path}`: {message}"))
    }
}

/// serde_json's message for a number no `f64` holds (`1e400`). The JSON is
/// well-formed (RFC 8259 leaves number range to implementations), so this is
/// the field's value refused, not the payload's syntax.
const NUMBER_OUT_OF_RANGE: &str = "number out of range";

/// The payload fields (all top-level) that hold a [`WireAmount`]: a JSON
/// number there, however large, is an amount sent as a number.
const AMOUNT_FIELDS: [&str; 2] = ["amount", "overdraft_limit"];

/// A number beyond any float in field `path`: `invalid_amount` where an
/// amount belongs, as for any JSON number there, else `wrong_type`, as for
/// a float where a whole number or a string belongs.
fn number_out_of_range(path: &str, is_amount: bool) -> Rejection {
    if is_amount {
        Rejection::new(
            ErrorCode::InvalidAmount,
            format!(
                "field `{path}`: got a JSON number too large for any float; send amounts as decimal strings like \"12.50\", because JSON numbers are binary floats that lose money"
            ),
        )
    } else {
        Rejection::new(
            ErrorCode::WrongType,
            format!("field `{path}`: got a JSON number too large for any float"),
        )
    }
}

/// `metadata.order`, `lines[2].code`; empty for the payload itself.
fn path_text(segments: &[&Segment]) -> String {
    let mut text = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(&shown(key, SHOWN_BYTES_MAX));
            }
            Segment::Unknown => {}
        }
    }
    text
}

/// serde's "`amout`, expected one of `id`, `amount`" as
/// "`amout`, expected one of: id, amount".
fn expected_list(rest: &str) -> String {
    match rest.split_once(", expected ") {
        Some((field, expected)) => {
            let names = expected
                .strip_prefix("one of ")
                .unwrap_or(expected)
                .replace('`', "")
                .replace(" or ", ", ");
            format!("{field}, expected one of: {names}")
        }
        None => rest.to_owned(),
    }
}
