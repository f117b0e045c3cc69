//! Native test doubles: run a plugin's [`Rules`](crate::Rules) in a plain
//! `cargo test`, without a wasm runtime.
//!
//! [`FakeHost`] answers configuration and activity from values the test sets
//! and records every log line; [`payment`] and [`refund`] build requests
//! with sensible defaults for a test to adjust.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::{Activity, Host, LogLevel, Money, PaymentRequest, RefundRequest};

/// A host whose answers a test chooses.
#[derive(Debug, Default)]
pub struct FakeHost {
    config: BTreeMap<String, String>,
    activity: BTreeMap<(u32, String), Activity>,
    logs: RefCell<Vec<(LogLevel, String)>>,
}

impl FakeHost {
    /// No configuration, no past activity, no logs.
    pub fn new() -> FakeHost {
        FakeHost::default()
    }

    /// Sets the configuration value of `key`.
    pub fn with_config(mut self, key: &str, value: &str) -> FakeHost {
        self.config.insert(key.to_string(), value.to_string());
        self
    }

    /// Makes `payer_activity(window_seconds, activity.volume.currency)`
    /// answer `activity`. Windows and currencies not set answer nothing
    /// done: a count of zero and a zero volume.
    pub fn with_activity(mut self, window_seconds: u32, activity: Activity) -> FakeHost {
        self.activity
            .insert((window_seconds, activity.volume.currency.clone()), activity);
        self
    }

    /// Every line logged so far, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.borrow().clone()
    }
}

impl Host for FakeHost {
    fn config_get(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn payer_activity(&self, window_seconds: u32, currency: &str) -> Activity {
        self.activity
            .get(&(window_seconds, currency.to_string()))
            .cloned()
            .unwrap_or_else(|| Activity {
                count: 0,
                volume: Money::zero(currency),
            })
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}

/// A payment of `minor_units` in `currency` (exponent `exponent`) from
/// `payer-1` to `merchant-1`, received at 1 000 000 000 000 ms, with no memo
/// or metadata.
pub fn payment(minor_units: i64, currency: &str, exponent: u8) -> PaymentRequest {
    PaymentRequest {
        payment_id: "payment-1".to_string(),
        merchant: "merchant-1".to_string(),
        payer: "payer-1".to_string(),
        amount: Money::new(minor_units, currency),
        currency_exponent: exponent,
        memo: None,
        metadata: Vec::new(),
        received_at_ms: 1_000_000_000_000,
        is_authorization: false,
    }
}

/// A refund of `minor_units` of a payment of `captured_minor_units`, both in
/// `currency`, nothing refunded before, captured `age_ms` before the request
/// was received.
pub fn refund(
    minor_units: i64,
    captured_minor_units: i64,
    currency: &str,
    exponent: u8,
    age_ms: i64,
) -> RefundRequest {
    let received_at_ms = 1_000_000_000_000;
    RefundRequest {
        payment_id: "payment-1".to_string(),
        merchant: "merchant-1".to_string(),
        payer: "payer-1".to_string(),
        captured: Money::new(captured_minor_units, currency),
        refunded: Money::zero(currency),
        amount: Money::new(minor_units, currency),
        currency_exponent: exponent,
        reason: None,
        received_at_ms,
        captured_at_ms: received_at_ms - age_ms,
    }
}
