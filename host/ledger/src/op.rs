//! Operations: what the pipeline asks the ledger to do.
//!
//! An [`Op`] is one client request after the plugin (if any) has decided it:
//! who asked ([`Principal`]), their idempotency key, the host's clock, and
//! the [`OpKind`]. Each kind names its client-supplied parameters with
//! [`OpKind::fields`]; the ledger stores them with the outcome so that a retry
//! with the same key and different parameters is answered with a conflict
//! naming the fields that differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmpay_domain::{
    Currency, Decline, MerchantId, Money, PaymentId, PluginRef, Quote, RequestId, Settlement,
    SubAccount, UserId,
};

use crate::types::{Overdraft, Owner, Principal};

/// Client-supplied parameters of a request, by name, in a canonical string
/// form. Two requests with the same key are the same request exactly when
/// their fields are equal.
pub type Fields = BTreeMap<&'static str, String>;

/// One request for the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub principal: Principal,
    pub key: RequestId,
    /// The host's clock when the request arrived (ms since the Unix epoch).
    /// Host-supplied so that tests and replays are deterministic.
    pub at_ms: i64,
    pub kind: OpKind,
}

/// What the merchant's plugin decided about a payment or authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum PaymentDecided {
    /// Approved: the ledger posts `settlement` (computed by the caller with
    /// [`Quote::settle`], platform fee included) as it is.
    Approved {
        quote: Quote,
        settlement: Settlement,
        plugin: Option<PluginRef>,
    },
    /// Declined: recorded with no postings, so a redelivery gets the same
    /// decline without running the plugin again.
    Declined {
        decline: Decline,
        plugin: Option<PluginRef>,
    },
}

impl PaymentDecided {
    pub fn plugin(&self) -> Option<&PluginRef> {
        match self {
            Self::Approved { plugin, .. } | Self::Declined { plugin, .. } => plugin.as_ref(),
        }
    }
}

/// What the merchant's plugin decided about a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum RefundDecided {
    /// Allowed; `fee` (if any) is kept by the merchant: the payer gets
    /// `amount - fee` back.
    Allowed {
        fee: Option<Money>,
        plugin: Option<PluginRef>,
    },
    Denied {
        decline: Decline,
        plugin: Option<PluginRef>,
    },
}

impl RefundDecided {
    pub fn plugin(&self) -> Option<&PluginRef> {
        match self {
            Self::Allowed { plugin, .. } | Self::Denied { plugin, .. } => plugin.as_ref(),
        }
    }
}

/// The operations the ledger performs. Each is atomic and double-entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpKind {
    /// Admin only. Opens a user's account or a merchant's account in one
    /// currency. Platform and world accounts open on demand and cannot be
    /// opened here.
    OpenAccount {
        owner: Owner,
        currency: Currency,
        overdraft: Overdraft,
    },
    /// Money from outside (the world account) to a user's account.
    Deposit { user: UserId, amount: Money },
    /// Money from one of a merchant's accounts to the outside world.
    Payout {
        merchant: MerchantId,
        account: SubAccount,
        amount: Money,
    },
    /// A one-step payment: the payer is debited and the merchant credited in
    /// the same transaction.
    Payment {
        payer: UserId,
        merchant: MerchantId,
        payment_id: PaymentId,
        amount: Money,
        memo: Option<String>,
        metadata: BTreeMap<String, String>,
        decision: PaymentDecided,
    },
    /// The first half of a two-phase payment: reserves the payer's total
    /// (available -> held) until captured, voided or expired.
    Authorize {
        payer: UserId,
        merchant: MerchantId,
        payment_id: PaymentId,
        amount: Money,
        memo: Option<String>,
        metadata: BTreeMap<String, String>,
        decision: PaymentDecided,
        /// When the hold lapses: the request's time plus `expires_in_s`.
        /// Derived, like `at_ms`, so not compared on a redelivery.
        expires_at_ms: i64,
        /// How long the client asked the hold to last: compared, so the same
        /// id with another duration is a conflict, not the stored hold.
        #[serde(default)]
        expires_in_s: u32,
    },
    /// Settles an authorization, in full (`amount: None` or the whole
    /// authorized total) or in part. At most once.
    Capture {
        merchant: MerchantId,
        payment_id: PaymentId,
        amount: Option<Money>,
    },
    /// Releases an authorization without paying. At most once.
    Void {
        merchant: MerchantId,
        payment_id: PaymentId,
        /// The merchant's reason, for the payer's history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Returns money from the merchant's main account to the payer; never
    /// more than was captured less what was refunded already.
    Refund {
        merchant: MerchantId,
        payment_id: PaymentId,
        amount: Money,
        reason: String,
        decision: RefundDecided,
    },
}

impl OpKind {
    /// The stable name stored in the journal (`payment`, `refund`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::OpenAccount { .. } => "open_account",
            Self::Deposit { .. } => "deposit",
            Self::Payout { .. } => "payout",
            Self::Payment { .. } => "payment",
            Self::Authorize { .. } => "authorize",
            Self::Capture { .. } => "capture",
            Self::Void { .. } => "void",
            Self::Refund { .. } => "refund",
        }
    }

    /// The payment this operation concerns, if any.
    pub fn payment_id(&self) -> Option<&PaymentId> {
        match self {
            Self::Payment { payment_id, .. }
            | Self::Authorize { payment_id, .. }
            | Self::Capture { payment_id, .. }
            | Self::Void { payment_id, .. }
            | Self::Refund { payment_id, .. } => Some(payment_id),
            Self::OpenAccount { .. } | Self::Deposit { .. } | Self::Payout { .. } => None,
        }
    }

    /// The plugin version that decided this operation, if one did.
    pub fn plugin(&self) -> Option<&PluginRef> {
        match self {
            Self::Payment { decision, .. } | Self::Authorize { decision, .. } => decision.plugin(),
            Self::Refund { decision, .. } => decision.plugin(),
            _ => None,
        }
    }

    /// The client-supplied parameters, to tell a retry from a different
    /// request under the same key. `op` names the operation itself, so a key
    /// reused for another kind of request is a conflict too. Decisions,
    /// derived ids and host policy (expiry) are left out: they are not the
    /// client's, and a redelivery may legitimately see them differ.
    pub fn fields(&self) -> Fields {
        let mut fields = Fields::new();
        fields.insert("op", self.name().to_owned());
        let money = |fields: &mut Fields, amount: &Money| {
            fields.insert("amount", amount.amount_string());
            fields.insert("currency", amount.currency().code().to_owned());
        };
        match self {
            Self::OpenAccount {
                owner,
                currency,
                overdraft,
            } => {
                fields.insert("owner", owner.to_string());
                fields.insert("currency", currency.code().to_owned());
                fields.insert("overdraft", overdraft.to_string());
            }
            Self::Deposit { user, amount } => {
                fields.insert("user", user.to_string());
                money(&mut fields, amount);
            }
            Self::Payout {
                merchant,
                account,
                amount,
            } => {
                fields.insert("merchant", merchant.to_string());
                fields.insert("account", account.to_string());
                money(&mut fields, amount);
            }
            Self::Payment {
                merchant,
                amount,
                memo,
                metadata,
                ..
            }
            | Self::Authorize {
                merchant,
                amount,
                memo,
                metadata,
                ..
            } => {
                fields.insert("merchant", merchant.to_string());
                money(&mut fields, amount);
                fields.insert("memo", canonical_json(memo));
                fields.insert("metadata", canonical_json(metadata));
                if let Self::Authorize { expires_in_s, .. } = self {
                    fields.insert("expires_in_s", expires_in_s.to_string());
                }
            }
            Self::Capture {
                merchant,
                payment_id,
                amount,
            } => {
                fields.insert("merchant", merchant.to_string());
                fields.insert("payment_id", payment_id.to_string());
                match amount {
                    Some(amount) => money(&mut fields, amount),
                    None => {
                        fields.insert("amount", "full".to_owned());
                    }
                }
            }
            Self::Void {
                merchant,
                payment_id,
                reason,
            } => {
                fields.insert("merchant", merchant.to_string());
                fields.insert("payment_id", payment_id.to_string());
                fields.insert("reason", canonical_json(reason));
            }
            Self::Refund {
                merchant,
                payment_id,
                amount,
                reason,
                ..
            } => {
                fields.insert("merchant", merchant.to_string());
                fields.insert("payment_id", payment_id.to_string());
                money(&mut fields, amount);
                fields.insert("reason", reason.clone());
            }
        }
        fields
    }
}

/// JSON with sorted keys (BTreeMaps and `Option`s serialize canonically).
fn canonical_json<T: Serialize>(value: &T) -> String {
    // Serializing maps of strings and options cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}
