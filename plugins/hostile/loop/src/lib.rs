//! Hostile fixture `loop`: `decide-payment` and `decide-refund` never
//! return. The host must stop them with its fuel limit (or, with fuel off,
//! its epoch deadline) and decline; see `README.md`.
#![no_std]

use core::hint::black_box;
use wasmpay_plugin_sdk::prelude::*;

struct Loop;

impl Rules for Loop {
    fn decide_payment<H: Host>(_host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        spin(request.amount.minor_units)
    }

    fn decide_refund<H: Host>(
        _host: &H,
        request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        spin(request.amount.minor_units)
    }
}

/// Counts forever. `black_box` keeps the work observable so the optimiser
/// cannot prove the loop empty; the loop itself never exits.
fn spin(seed: i64) -> ! {
    let mut counter = seed;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

wasmpay_plugin_sdk::export_rules!(Loop);
