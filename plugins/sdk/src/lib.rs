//! Write a wasmpay merchant plugin in Rust.
//!
//! A merchant plugin is a WebAssembly component that implements the
//! `wasmpay:plugin/merchant-rules` world (`wit/plugin.wit` at the repository
//! root). The host calls it once per payment and once per refund, each time
//! in a fresh instance, and checks whatever it answers before any money
//! moves. This crate is everything a plugin needs besides its own rules:
//!
//! - [`bindings`]: the types and imports generated from the WIT, once, so
//!   that every plugin shares them.
//! - [`Rules`] and [`export_rules!`]: the trait a plugin implements and the
//!   macro that turns it into the component's exports.
//! - [`Host`]: the read-only questions a plugin may ask (typed configuration,
//!   the payer's recent activity, logging), as a trait so that the same rules
//!   run natively in unit tests against [`testing::FakeHost`].
//! - [`money`]: exact arithmetic on integer minor units, percentages in basis
//!   points with an explicit [`Rounding`], and decimal parsing that refuses
//!   excess precision. There are no floats anywhere.
//! - [`quote`]: constructors for quote lines, splits and declines that keep
//!   to the contract's limits.
//!
//! # Why `no_std`
//!
//! The host grants no WASI capability and refuses at upload any component
//! that imports more than `wasmpay:plugin/host`. Rust's `std` for
//! `wasm32-wasip2` always imports `wasi:cli` and `wasi:io`, even when nothing
//! uses them. So this crate and every plugin are `#![no_std]` (with `alloc`),
//! and on `wasm32` this crate supplies what `std` otherwise would: a global
//! allocator and a panic handler that reports the panic through `host.log`
//! before trapping (see `runtime.rs`). The plugin's component then imports
//! the world and nothing else.
//!
//! # A whole plugin
//!
//! ```
//! #![no_std]
//! use wasmpay_plugin_sdk::prelude::*;
//!
//! struct FlatFee;
//!
//! impl Rules for FlatFee {
//!     fn decide_payment<H: Host>(host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
//!         let currency = &request.amount.currency;
//!         let fee = host
//!             .config_money("fee", currency, request.currency_exponent)?
//!             .unwrap_or_else(|| Money::zero(currency));
//!         Ok(Quote::empty().with_line(QuoteLine::fee("service_fee", "Service fee", fee)))
//!     }
//! }
//!
//! wasmpay_plugin_sdk::export_rules!(FlatFee);
//! # fn main() {
//! #     use wasmpay_plugin_sdk::testing::{FakeHost, payment};
//! #     let host = FakeHost::new().with_config("fee", "0.30");
//! #     let quote = FlatFee::decide_payment(&host, &payment(1000, "EUR", 2)).unwrap();
//! #     assert_eq!(quote.lines[0].amount, Money::new(30, "EUR"));
//! # }
//! ```
#![no_std]

extern crate alloc;
// Natively (unit tests, `cargo check`), `std` supplies the allocator and the
// panic handler that `runtime` supplies on `wasm32`, so a `#![no_std]`
// plugin builds and tests on the developer's machine without a line of
// set-up of its own.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;
// Lets the generated bindings and the exported macro name this crate by the
// same absolute path from inside it and from the plugins that use it.
extern crate self as wasmpay_plugin_sdk;

pub mod host;
pub mod money;
pub mod quote;
// Under `cfg(test)` on wasm32 the test harness brings `std`.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod runtime;
pub mod testing;

/// Bindings generated from `wit/plugin.wit`, the `merchant-rules` world.
///
/// Plugins rarely need this module directly: the SDK re-exports the types at
/// its root and wraps the imports in [`Host`](crate::Host). It is public so
/// that [`export_rules!`](crate::export_rules) can name it from a plugin.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "merchant-rules",
        path: "../../wit",
        // Every plugin exports through the SDK's bindings; `export_rules!`
        // wraps this macro.
        pub_export_macro: true,
        export_macro_name: "__export_merchant_rules",
        default_bindings_module: "::wasmpay_plugin_sdk::bindings",
        // Plugins depend on this crate only, not on `wit-bindgen`.
        runtime_path: "::wasmpay_plugin_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::wasmpay::plugin::types::{
    Activity, Decline, LineKind, LogLevel, Money, PaymentDecision, PaymentRequest, Quote,
    QuoteLine, RefundDecision, RefundRequest, Split,
};
pub use host::{ConfigError, ConfigProblem, Host, WasmHost};
pub use money::{AmountError, MoneyError, Rounding};

/// Everything a plugin usually needs, including the `alloc` names a
/// `#![no_std]` crate would otherwise import one by one.
pub mod prelude {
    pub use crate::{
        Activity, Decline, Host, LineKind, LogLevel, Money, PaymentRequest, Quote, QuoteLine,
        RefundRequest, Rounding, Rules, Split,
    };
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

/// A merchant's rules: what the plugin decides for a payment and a refund.
///
/// Both methods get the [`Host`] to ask questions of, so the same code runs
/// against the real imports in the component ([`WasmHost`]) and against a
/// [`testing::FakeHost`] in native unit tests. Returning `Err(decline)`
/// declines; any error type of this crate converts into a [`Decline`] with a
/// stable code, so `?` works on configuration and money errors.
pub trait Rules {
    /// Price a payment into a quote (approve) or decline it.
    fn decide_payment<H: Host>(host: &H, request: &PaymentRequest) -> Result<Quote, Decline>;

    /// Allow a refund, optionally withholding a fee from what the payer gets
    /// back (`Ok(Some(fee))`), or deny it.
    ///
    /// The default allows every refund without a fee, which suits plugins
    /// that only price or validate payments.
    fn decide_refund<H: Host>(host: &H, request: &RefundRequest) -> Result<Option<Money>, Decline> {
        let _ = (host, request);
        Ok(None)
    }
}

// Every `Rules` is the generated `Guest`, so a plugin never implements the
// raw binding trait nor converts `Result`s into WIT variants itself.
impl<T: Rules> bindings::exports::wasmpay::plugin::rules::Guest for T {
    fn decide_payment(request: PaymentRequest) -> PaymentDecision {
        match T::decide_payment(&WasmHost, &request) {
            Ok(quote) => PaymentDecision::Approve(quote),
            Err(decline) => PaymentDecision::Decline(decline),
        }
    }

    fn decide_refund(request: RefundRequest) -> RefundDecision {
        match T::decide_refund(&WasmHost, &request) {
            Ok(fee) => RefundDecision::Allow(fee),
            Err(decline) => RefundDecision::Deny(decline),
        }
    }
}

/// Exports a type that implements [`Rules`] as the component's
/// `wasmpay:plugin/rules` interface. Invoke it once, at the plugin's crate
/// root (the examples in `plugins/examples/` show it whole):
///
/// ```text
/// wasmpay_plugin_sdk::export_rules!(MyRules);
/// ```
#[macro_export]
macro_rules! export_rules {
    ($rules:ident) => {
        $crate::bindings::__export_merchant_rules!($rules);
    };
}
