//! Hostile fixture `panic`: panics with a known message. The SDK's panic
//! handler must log it through `host.log` before trapping; see `README.md`.
#![no_std]

use wasmpay_plugin_sdk::prelude::*;

struct Panic;

impl Rules for Panic {
    fn decide_payment<H: Host>(_host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        panic!("deliberate panic in payment {}", request.payment_id)
    }

    fn decide_refund<H: Host>(
        _host: &H,
        request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        panic!("deliberate panic in refund of {}", request.payment_id)
    }
}

wasmpay_plugin_sdk::export_rules!(Panic);
