//! Types shared by every part of wasmpay, free of I/O.
//!
//! - [`money`]: ISO 4217 currencies and exact amounts in integer minor units.
//! - [`ids`]: identifiers that arrive from MQTT topics and payloads.
//! - [`quote`]: what a merchant's plugin proposes (quotes, declines) and the
//!   host's check that turns a proposal into a balanced settlement.
//!
//! No float appears in any money path; the lint below keeps it that way.
#![deny(clippy::float_arithmetic)]

pub mod ids;
pub mod money;
pub mod quote;

pub use ids::{IdError, MerchantId, PaymentId, RequestId, SubAccount, UserId};
pub use money::{Currency, Money, MoneyError};
pub use quote::{
    Code, Decision, Decline, LineKind, PlatformFee, PluginRef, Quote, QuoteError, QuoteLimits,
    QuoteLine, RefundDecision, Settlement, Split,
};
