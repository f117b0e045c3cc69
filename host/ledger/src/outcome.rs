//! What an operation came to: a receipt, a refusal with a stable code, or a
//! conflict with an earlier request under the same key.
//!
//! Receipts and refusals are stored (as JSON) in the same transaction as the
//! postings, so a retry is answered with exactly the same outcome. Conflicts
//! are not stored: they answer a bad retry and change nothing.

use serde::{Deserialize, Serialize};
use wasmpay_domain::{
    Currency, Decline, MerchantId, Money, PaymentId, PluginRef, QuoteLine, Settlement, SubAccount,
    UserId,
};

use crate::types::{Balance, Overdraft, Owner};

/// The answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum OpResult {
    /// The operation's outcome; `replayed` when it was decided by an earlier
    /// request with the same key and parameters and is answered from storage.
    Done { outcome: Outcome, replayed: bool },
    /// The key was used before with different parameters; `differing` names
    /// them (the `op` field when the kind of operation differs).
    Conflict { differing: Vec<String> },
}

impl OpResult {
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::Done { outcome, .. } => Some(outcome),
            Self::Conflict { .. } => None,
        }
    }

    pub fn is_replayed(&self) -> bool {
        matches!(self, Self::Done { replayed: true, .. })
    }

    /// The receipt, if the operation was applied.
    pub fn receipt(&self) -> Option<&Receipt> {
        match self.outcome()? {
            Outcome::Applied(receipt) => Some(receipt),
            Outcome::Refused(_) => None,
        }
    }

    /// The refusal, if the operation was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self.outcome()? {
            Outcome::Refused(refusal) => Some(refusal),
            Outcome::Applied(_) => None,
        }
    }
}

/// A decided operation: applied with a receipt, or refused with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    Applied(Receipt),
    Refused(Refusal),
}

/// Proof that an operation was applied, with what a reply needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The journal entry that records the operation.
    pub seq: i64,
    pub at_ms: i64,
    pub effect: Effect,
}

/// What an applied operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    AccountOpened {
        owner: Owner,
        currency: Currency,
        overdraft: Overdraft,
    },
    Deposited {
        user: UserId,
        amount: Money,
        /// The user's balance after the deposit.
        balance: Balance,
    },
    PaidOut {
        merchant: MerchantId,
        account: SubAccount,
        amount: Money,
        /// The merchant account's balance after the payout.
        balance: Balance,
    },
    Paid {
        payment_id: PaymentId,
        /// The quote's lines, so a replayed reply shows what the first did.
        #[serde(default)]
        lines: Vec<QuoteLine>,
        settlement: Settlement,
        payer_balance: Balance,
        plugin: Option<PluginRef>,
    },
    Authorized {
        payment_id: PaymentId,
        #[serde(default)]
        lines: Vec<QuoteLine>,
        /// What a full capture will post.
        settlement: Settlement,
        expires_at_ms: i64,
        payer_balance: Balance,
        plugin: Option<PluginRef>,
    },
    Captured {
        payment_id: PaymentId,
        /// What was posted: the authorized settlement for a full capture,
        /// the proportional one for a partial capture.
        settlement: Settlement,
        /// What went back to the payer's available balance.
        released: Money,
        payer_balance: Balance,
    },
    Voided {
        payment_id: PaymentId,
        released: Money,
        payer_balance: Balance,
    },
    /// An authorization released by the expiry sweep.
    Expired {
        payment_id: PaymentId,
        released: Money,
        payer_balance: Balance,
    },
    Refunded {
        payment_id: PaymentId,
        amount: Money,
        /// Kept by the merchant: the payer got `amount - fee` back.
        fee: Money,
        /// Refunded on this payment so far, this refund included.
        refunded_total: Money,
        payer_balance: Balance,
        plugin: Option<PluginRef>,
    },
}

/// Why an operation was refused. Each has a stable snake_case
/// [`code`](Refusal::code) and a human message (`Display`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum Refusal {
    #[error("{principal} may not {op}")]
    Forbidden { principal: String, op: String },
    #[error("no {currency} account for {owner}")]
    AccountNotFound { owner: Owner, currency: Currency },
    #[error("{owner} already has a {currency} account")]
    AccountExists { owner: Owner, currency: Currency },
    #[error("{owner} accounts open on demand and cannot be opened explicitly")]
    AccountNotOpenable { owner: Owner },
    #[error("{owner} would have {available} available after {needed}, beyond its {overdraft}")]
    InsufficientFunds {
        owner: Owner,
        needed: Money,
        available: Money,
        overdraft: Overdraft,
    },
    #[error("currency mismatch: expected {expected}, found {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    #[error("{what} must be positive, got {amount}")]
    InvalidAmount { what: String, amount: Money },
    #[error("invalid settlement: {reason}")]
    InvalidSettlement { reason: String },
    #[error("invalid hold expiry {expires_at_ms}: not after the request time {at_ms}")]
    InvalidExpiry { expires_at_ms: i64, at_ms: i64 },
    #[error("merchant {merchant} already has {max} sub-accounts; `{account}` cannot be opened")]
    SubaccountLimit {
        merchant: MerchantId,
        account: SubAccount,
        max: usize,
    },
    #[error("payment {payment_id} already exists for merchant {merchant}")]
    PaymentExists {
        merchant: MerchantId,
        payment_id: PaymentId,
    },
    #[error("no payment {payment_id} for merchant {merchant}")]
    PaymentNotFound {
        merchant: MerchantId,
        payment_id: PaymentId,
    },
    #[error("payment declined: {} ({})", decline.message, decline.code)]
    PaymentDeclined {
        decline: Decline,
        plugin: Option<PluginRef>,
    },
    #[error("payment {payment_id} is not an authorization")]
    NotAHold { payment_id: PaymentId },
    #[error("authorization {payment_id} expired at {expires_at_ms}")]
    HoldExpired {
        payment_id: PaymentId,
        expires_at_ms: i64,
    },
    #[error("payment {payment_id} was captured already")]
    AlreadyCaptured { payment_id: PaymentId },
    #[error("authorization {payment_id} was voided already")]
    AlreadyVoided { payment_id: PaymentId },
    #[error("capture of {requested} exceeds the authorized {authorized}")]
    CaptureExceedsAuthorized { requested: Money, authorized: Money },
    #[error("payment {payment_id} has not been captured")]
    PaymentNotCaptured { payment_id: PaymentId },
    #[error(
        "refund of {requested} exceeds what is refundable: captured {captured}, refunded {refunded}"
    )]
    RefundExceedsCaptured {
        requested: Money,
        captured: Money,
        refunded: Money,
    },
    #[error("refund fee {fee} is not between zero and the refund {amount}")]
    InvalidRefundFee { fee: Money, amount: Money },
    #[error("refund denied: {} ({})", decline.message, decline.code)]
    RefundDenied {
        decline: Decline,
        plugin: Option<PluginRef>,
    },
    #[error("amount overflows what the ledger can count")]
    Overflow,
    /// An unexpected storage error confined to this operation (its savepoint
    /// was rolled back). Never stored, so a retry runs the operation again.
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl Refusal {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::AccountNotFound { .. } => "account_not_found",
            Self::AccountExists { .. } => "account_exists",
            Self::AccountNotOpenable { .. } => "account_not_openable",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
            Self::InvalidAmount { .. } => "invalid_amount",
            Self::InvalidSettlement { .. } => "invalid_settlement",
            Self::InvalidExpiry { .. } => "invalid_expiry",
            Self::SubaccountLimit { .. } => "subaccount_limit",
            Self::PaymentExists { .. } => "payment_exists",
            Self::PaymentNotFound { .. } => "payment_not_found",
            Self::PaymentDeclined { .. } => "payment_declined",
            Self::NotAHold { .. } => "not_a_hold",
            Self::HoldExpired { .. } => "hold_expired",
            Self::AlreadyCaptured { .. } => "already_captured",
            Self::AlreadyVoided { .. } => "already_voided",
            Self::CaptureExceedsAuthorized { .. } => "capture_exceeds_authorized",
            Self::PaymentNotCaptured { .. } => "payment_not_captured",
            Self::RefundExceedsCaptured { .. } => "refund_exceeds_captured",
            Self::InvalidRefundFee { .. } => "invalid_refund_fee",
            Self::RefundDenied { .. } => "refund_denied",
            Self::Overflow => "overflow",
            Self::Internal { .. } => "internal_error",
        }
    }

    /// The human message.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The plugin's own decline, for a declined payment or denied refund.
    pub fn decline(&self) -> Option<&Decline> {
        match self {
            Self::PaymentDeclined { decline, .. } | Self::RefundDenied { decline, .. } => {
                Some(decline)
            }
            _ => None,
        }
    }
}

impl From<wasmpay_domain::MoneyError> for Refusal {
    fn from(error: wasmpay_domain::MoneyError) -> Self {
        match error {
            wasmpay_domain::MoneyError::CurrencyMismatch { expected, found } => {
                Self::CurrencyMismatch { expected, found }
            }
            _ => Self::Overflow,
        }
    }
}

/// Every refusal code, for documentation and for tests that check each is
/// reachable.
pub const REFUSAL_CODES: &[&str] = &[
    "forbidden",
    "account_not_found",
    "account_exists",
    "account_not_openable",
    "insufficient_funds",
    "currency_mismatch",
    "invalid_amount",
    "invalid_settlement",
    "invalid_expiry",
    "subaccount_limit",
    "payment_exists",
    "payment_not_found",
    "payment_declined",
    "not_a_hold",
    "hold_expired",
    "already_captured",
    "already_voided",
    "capture_exceeds_authorized",
    "payment_not_captured",
    "refund_exceeds_captured",
    "invalid_refund_fee",
    "refund_denied",
    "overflow",
    "internal_error",
];
