//! Hostile fixture `recursion`: recurses without bound. The host's wasm stack
//! limit must stop it; see `README.md`.
#![no_std]

use core::hint::black_box;
use wasmpay_plugin_sdk::prelude::*;

struct Recursion;

impl Rules for Recursion {
    fn decide_payment<H: Host>(_host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        descend(black_box(request.amount.minor_units));
        Ok(Quote::empty())
    }

    fn decide_refund<H: Host>(
        _host: &H,
        request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        descend(black_box(request.amount.minor_units));
        Ok(None)
    }
}

/// Calls itself for ever. The addition after the call keeps it from being a
/// tail call, and `black_box` keeps the optimiser from turning the recursion
/// into a loop; every level costs a real wasm frame.
#[inline(never)]
#[allow(unconditional_recursion)] // The point of this fixture.
fn descend(depth: i64) -> i64 {
    let below = descend(black_box(depth.wrapping_add(1)));
    black_box(below.wrapping_add(depth))
}

wasmpay_plugin_sdk::export_rules!(Recursion);
