//! Typed requests: what `decode` hands to the pipeline.
//!
//! Everything here is validated already and holds domain types: amounts are
//! [`Money`] in the request's currency, ids follow the id rule, texts and maps
//! are within [`crate::DecodeLimits`]. The pipeline never sees raw JSON.

use std::collections::BTreeMap;
use std::fmt;

use wasmpay_domain::{Currency, MerchantId, Money, PaymentId, RequestId, SubAccount, UserId};

use crate::topic::Principal;

/// A decoded request: who asks, under which idempotency key, for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// From the topic; the broker's ACL vouches for it.
    pub principal: Principal,
    /// The client-chosen idempotency key, scoped to the principal.
    pub id: RequestId,
    pub command: Command,
}

/// One variant per request topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `users/{user}/balance`, `merchants/{merchant}/balance`.
    Balance(Balance),
    /// `users/{user}/pay`: an immediate payment.
    Pay(Payment),
    /// `users/{user}/authorize`: a hold the merchant captures or voids later.
    Authorize(Authorize),
    /// `users/{user}/history`, `merchants/{merchant}/history`.
    History(History),
    /// `merchants/{merchant}/capture`.
    Capture(Capture),
    /// `merchants/{merchant}/void`.
    Void(Void),
    /// `merchants/{merchant}/refund`.
    Refund(Refund),
    /// `merchants/{merchant}/payout`.
    Payout(Payout),
    /// `merchants/{merchant}/plugin/upload`.
    PluginUpload(PluginUpload),
    /// `merchants/{merchant}/plugin/activate`.
    PluginActivate(PluginActivate),
    /// `merchants/{merchant}/plugin/rollback`: back to the version active before.
    PluginRollback,
    /// `merchants/{merchant}/plugin/list`.
    PluginList,
    /// `admin/accounts/open`.
    OpenAccount(OpenAccount),
    /// `admin/deposit`.
    Deposit(Deposit),
    /// `admin/status`.
    Status,
}

impl Command {
    /// The request topic's action, e.g. `"pay"` or `"plugin/upload"`: for
    /// logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Balance(_) => "balance",
            Self::Pay(_) => "pay",
            Self::Authorize(_) => "authorize",
            Self::History(_) => "history",
            Self::Capture(_) => "capture",
            Self::Void(_) => "void",
            Self::Refund(_) => "refund",
            Self::Payout(_) => "payout",
            Self::PluginUpload(_) => "plugin/upload",
            Self::PluginActivate(_) => "plugin/activate",
            Self::PluginRollback => "plugin/rollback",
            Self::PluginList => "plugin/list",
            Self::OpenAccount(_) => "accounts/open",
            Self::Deposit(_) => "deposit",
            Self::Status => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Only this currency's accounts; all of them when `None`.
    pub currency: Option<Currency>,
}

/// A payment from the topic's user to a merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub merchant: MerchantId,
    /// What the payer asked to pay, before the merchant's quote; positive.
    pub amount: Money,
    /// The payer's note, at most `memo_bytes_max`.
    pub memo: Option<String>,
    /// Key/value pairs for the merchant's plugin (`order`, `coupon`).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    pub payment: Payment,
    /// Seconds until the hold lapses and its money is released; within
    /// `1..=hold_expires_in_s_max`, `hold_expires_in_s_default` if not given.
    pub expires_in_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub currency: Option<Currency>,
    /// Entries older than this cursor (the `next` of the previous page);
    /// from the newest when `None`.
    pub after: Option<Cursor>,
    /// Entries per page, within `1..=history_limit_max`.
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub payment_id: PaymentId,
    /// How much of the hold to capture; all of it when `None`. The rest of
    /// the hold is released.
    pub amount: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Void {
    pub payment_id: PaymentId,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub payment_id: PaymentId,
    /// Positive; at most what was captured and not yet refunded (the ledger checks).
    pub amount: Money,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub amount: Money,
    /// The merchant's own account paid out from; `main` unless named.
    pub account: SubAccount,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PluginUpload {
    /// The component's bytes: starts with the component header (checked),
    /// at most `upload_bytes_max`. The plugin module validates the rest.
    pub wasm: Vec<u8>,
    /// The merchant's configuration for this version, read by the plugin.
    pub config: BTreeMap<String, String>,
}

impl fmt::Debug for PluginUpload {
    // Megabytes of wasm in a debug log help nobody.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginUpload")
            .field("wasm_bytes", &self.wasm.len())
            .field("config", &self.config)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginActivate {
    /// A version number from a previous upload's reply, from 1.
    pub version: u32,
}

/// Whose account to open: `{"user": "alice"}` or `{"merchant": "shop"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    User(UserId),
    Merchant(MerchantId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAccount {
    pub owner: Owner,
    pub currency: Currency,
    /// How far below zero the account may go; zero (no overdraft) unless
    /// named. Never negative.
    pub overdraft_limit: Money,
}

/// Money arriving from outside into a user's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    pub user: UserId,
    /// Positive.
    pub amount: Money,
}

/// The longest history cursor, in bytes.
pub const CURSOR_BYTES_MAX: usize = 64;

/// An opaque position in a history, handed out as `next` in one page and
/// sent back as `after` for the following one. Its content is the ledger's
/// business; the protocol only keeps it short and safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cursor(String);

impl Cursor {
    /// 1 to [`CURSOR_BYTES_MAX`] of `A-Za-z0-9_.:-`.
    pub fn new(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= CURSOR_BYTES_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if ok {
            Ok(Self(value))
        } else {
            Err(format!(
                "a cursor is 1 to {CURSOR_BYTES_MAX} of A-Za-z0-9_.:- as given in a previous reply's `next`"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Cursor {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Cursor> for String {
    fn from(value: Cursor) -> Self {
        value.0
    }
}
