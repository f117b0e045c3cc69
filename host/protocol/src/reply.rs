//! Replies, notifications and dead letters: outcomes to payloads.
//!
//! Every reply is one JSON object, `{"id", "ok": true, "result"}` or
//! `{"id", "ok": false, "error": {"code", "message", "detail"?}}`. The
//! result structs are plain serde structs that the pipeline fills from
//! ledger outcomes. Money is always `{"amount": "12.50", "currency": "EUR"}`
//! ([`Amount`]), never a JSON number. Requests are strict; replies may gain
//! fields in a later version, so clients ignore fields they do not know.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wasmpay_domain::{
    Code, Currency, Decline, LineKind, MerchantId, Money, PaymentId, PluginRef, QuoteLine,
    RequestId, Settlement, SubAccount, UserId,
};

use crate::command::{Cursor, Owner};
use crate::error::{ErrorCode, Rejection};

/// Money as every reply carries it: `{"amount": "12.50", "currency": "EUR"}`,
/// the amount with exactly the currency's decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Money);

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Self(money)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountWire {
    amount: String,
    currency: String,
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AmountWire {
            amount: self.0.amount_string(),
            currency: self.0.currency().code().to_owned(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = AmountWire::deserialize(deserializer)?;
        let currency = Currency::parse(&wire.currency).map_err(D::Error::custom)?;
        Money::parse(&wire.amount, currency)
            .map(Amount)
            .map_err(D::Error::custom)
    }
}

/// The envelope of every reply. The host writes it with [`encode_ok`] and
/// [`encode_error`]; clients and tests read it back with this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T = serde_json::Value> {
    /// The request's id; `null` only when none could be read.
    pub id: Option<String>,
    pub ok: bool,
    // No `default`: serde would then demand `T: Default`; a missing
    // `Option` field is `None` anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What went wrong: a stable code from the catalogue, words for people,
/// and for some codes (`payment_declined`, `conflict`, ...) structured detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// `{"id": "r-1", "ok": true, "result": {...}}`.
pub fn encode_ok(id: &RequestId, result: &impl Serialize) -> Vec<u8> {
    let reply = Reply {
        id: Some(id.to_string()),
        ok: true,
        result: Some(result),
        error: None,
    };
    serde_json::to_vec(&reply).unwrap_or_else(|error| {
        // Only a result type with non-string map keys can fail here: a bug,
        // but the client still deserves an answer.
        debug_assert!(false, "reply result does not serialize: {error}");
        encode_error(
            Some(id.as_str()),
            ErrorCode::InternalError.as_str(),
            "the host could not encode its reply; the request may have been applied, ask again with the same id",
            None,
        )
    })
}

/// `{"id": "r-1", "ok": false, "error": {"code", "message", "detail"?}}`.
/// `code` is a string so that codes defined by the ledger and plugin
/// modules travel as they are; all are listed in docs/PROTOCOL.md.
pub fn encode_error(
    id: Option<&str>,
    code: &str,
    message: &str,
    detail: Option<serde_json::Value>,
) -> Vec<u8> {
    let reply: Reply<()> = Reply {
        id: id.map(str::to_owned),
        ok: false,
        result: None,
        error: Some(ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            detail,
        }),
    };
    // Strings and a `Value` always serialize.
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// The bytes of a rejected payload kept in a dead letter: enough to see
/// what a client sent, not enough to make the topic a store.
pub const DEAD_LETTER_PAYLOAD_PREFIX_BYTES: usize = 256;
/// The longest topic quoted in a dead letter, in bytes.
pub const DEAD_LETTER_TOPIC_BYTES_MAX: usize = 256;

/// A message no one could be answered for, as published on
/// [`crate::DEAD_LETTER_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The topic it arrived on, cut to [`DEAD_LETTER_TOPIC_BYTES_MAX`].
    pub topic: String,
    pub code: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The full payload size.
    pub payload_bytes: usize,
    /// The first [`DEAD_LETTER_PAYLOAD_PREFIX_BYTES`], base64 (it may not be text).
    pub payload_prefix_base64: String,
}

/// The dead-letter payload for a message `decode` refused with no one to
/// answer (`reason.reply_to` is `None`). Bounded whatever the input.
pub fn dead_letter_payload(topic: &str, payload: &[u8], reason: &Rejection) -> Vec<u8> {
    let mut end = topic.len().min(DEAD_LETTER_TOPIC_BYTES_MAX);
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = &payload[..payload.len().min(DEAD_LETTER_PAYLOAD_PREFIX_BYTES)];
    let letter = DeadLetter {
        topic: topic[..end].to_owned(),
        code: reason.code.as_str().to_owned(),
        reason: reason.message.clone(),
        id: reason.id.clone(),
        payload_bytes: payload.len(),
        payload_prefix_base64: base64::engine::general_purpose::STANDARD.encode(prefix),
    };
    serde_json::to_vec(&letter).unwrap_or_default()
}

/// What became of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Settled: the payer was debited and the merchant credited.
    Approved,
    /// Refused by the merchant's rules (or its plugin failed); nothing moved.
    Declined,
    /// Authorized: the payer's money is held until captured, voided or expired.
    Held,
}

/// One line of the merchant's quote, as the payer and merchant see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLineView {
    pub kind: LineKind,
    pub code: Code,
    pub description: String,
    pub amount: Amount,
    /// The merchant's account this line's money goes to.
    pub account: SubAccount,
}

impl From<&QuoteLine> for QuoteLineView {
    fn from(line: &QuoteLine) -> Self {
        Self {
            kind: line.kind,
            code: line.code.clone(),
            description: line.description.clone(),
            amount: line.amount.into(),
            account: line.account.clone(),
        }
    }
}

/// Exactly who paid and who received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementView {
    pub payer_total: Amount,
    /// Per merchant account (`main` included), after the platform fee.
    pub merchant_credits: BTreeMap<SubAccount, Amount>,
    pub platform_fee: Amount,
}

impl From<&Settlement> for SettlementView {
    fn from(settlement: &Settlement) -> Self {
        Self {
            payer_total: settlement.payer_total.into(),
            merchant_credits: settlement
                .merchant_credits
                .iter()
                .map(|(account, money)| (account.clone(), Amount(*money)))
                .collect(),
            platform_fee: settlement.platform_fee.into(),
        }
    }
}

/// The result of `pay` and `authorize`, and the body of a payment
/// notification. A declined payment is answered as error `payment_declined`
/// with this struct, `status: declined`, as `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    /// The host's id for the payment or hold; capture, void and refund name it.
    pub payment_id: PaymentId,
    pub status: PaymentStatus,
    pub merchant: MerchantId,
    /// What the payer asked to pay, before the quote's lines.
    pub amount: Amount,
    /// What the payer is (or, for a hold, may be) debited: amount less
    /// discounts plus fees, surcharges, taxes and tips. Absent when declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<Amount>,
    /// The quote's lines; empty when declined or when the rules add none.
    #[serde(default)]
    pub lines: Vec<QuoteLineView>,
    /// Absent when declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<SettlementView>,
    /// The reason when declined: the plugin's own code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    /// When a hold lapses, milliseconds since the Unix epoch; holds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// The plugin version that decided; absent when the merchant has none
    /// active and the default rules (approve, no lines) applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
}

/// One account's standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    /// `main` for users; a merchant also has its sub-accounts (`tax`, `tips`).
    pub account: SubAccount,
    /// Posted money: the sum of the account's postings.
    pub balance: Amount,
    /// Money held for open authorizations.
    pub held: Amount,
    /// What can be spent now: balance - held (it may be negative down to
    /// minus the overdraft limit).
    pub available: Amount,
    /// How far below zero `available` may go; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_limit: Option<Amount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceResult {
    /// Sorted by currency, then account.
    pub accounts: Vec<AccountBalance>,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Deposit,
    Payment,
    Hold,
    Capture,
    Void,
    HoldExpired,
    Refund,
    Payout,
}

/// The other side of a history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    User(UserId),
    Merchant(MerchantId),
    /// The operator's fee account.
    Platform,
    /// Outside the ledger: deposits come from it, payouts go to it.
    External,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Pass as `after` to list the entries older than this one.
    pub cursor: Cursor,
    /// When it was committed, milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub kind: EntryKind,
    pub account: SubAccount,
    /// The change to this account: negative for money out.
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty: Option<Party>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// The request that caused it (its sender's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// Newest first, at most the request's `limit`.
    pub entries: Vec<HistoryEntry>,
    /// Present when older entries remain: send it as `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureResult {
    pub payment_id: PaymentId,
    /// What the payer was debited.
    pub captured: Amount,
    /// What was held and is now released back to the payer.
    pub released: Amount,
    pub settlement: SettlementView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidResult {
    pub payment_id: PaymentId,
    /// The whole hold, now available to the payer again.
    pub released: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub payment_id: PaymentId,
    /// What this refund returns, before any fee.
    pub amount: Amount,
    /// Withheld by the merchant's refund rules; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<Amount>,
    /// What the payer gets back: amount - fee.
    pub payer_credited: Amount,
    /// Everything refunded on this payment so far, this refund included.
    pub refunded_total: Amount,
    /// What may still be refunded.
    pub refundable: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutResult {
    pub account: SubAccount,
    pub amount: Amount,
    /// The account's balance after the payout.
    pub balance: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginUploadResult {
    /// The new version's number and hash: name it in `plugin/activate`.
    pub plugin: PluginRef,
    pub bytes: u64,
    /// Whether this version is now the active one.
    pub active: bool,
}

/// The result of `plugin/activate` and `plugin/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginActiveResult {
    pub active: PluginRef,
    /// The version that was active before; absent if none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PluginRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    pub version: u32,
    pub sha256: String,
    pub bytes: u64,
    pub uploaded_at_ms: i64,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginListResult {
    /// Oldest first.
    pub versions: Vec<PluginVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccountResult {
    pub owner: Owner,
    pub currency: Currency,
    pub overdraft_limit: Amount,
    pub balance: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositResult {
    pub user: UserId,
    pub amount: Amount,
    /// The user's balance after the deposit.
    pub balance: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The host's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The protocol version this host speaks, `v1`.
    pub protocol: String,
    pub uptime_s: u64,
}

/// What a merchant is told on its notification topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub merchant: MerchantId,
    pub payer: UserId,
    /// The id of the request that caused the event: the payer's for a
    /// payment, the merchant's own for a capture, void or refund.
    pub request_id: RequestId,
    /// When it was committed, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Sent again for a request answered from its stored outcome (a
    /// redelivery after a crash, a client's retry): notifications are at
    /// least once, so a merchant dedupes by `request_id` and `event`.
    /// Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    #[serde(flatten)]
    pub event: NotificationEvent,
}

/// The event, tagged by `"event"`, with its result under a key of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NotificationEvent {
    /// Approved, declined or held.
    Payment {
        payment: PaymentResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<String, String>,
    },
    Capture {
        capture: CaptureResult,
    },
    Void {
        void: VoidResult,
    },
    Refund {
        refund: RefundResult,
    },
}

impl Notification {
    pub fn to_payload(&self) -> Vec<u8> {
        // Every field is a string, a number or a string-keyed map.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
