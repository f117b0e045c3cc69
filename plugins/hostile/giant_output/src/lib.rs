//! Hostile fixture `giant_output`: answers with far more than any quote
//! needs, in the mode `metadata["mode"]` asks for. The host's output limit
//! must refuse it; see `README.md`.
#![no_std]

use wasmpay_plugin_sdk::prelude::*;

/// Lines in the `lines` mode, and splits in the `splits` mode: far beyond
/// any sane quote, yet cheap enough in fuel (see `README.md`) that a fuel
/// limit of a few million does not stop the plugin before its output is
/// checked.
const ITEMS: usize = 2_000;

/// Bytes of each string in the `huge_strings` mode and of the refund's
/// decline message; sized, like `ITEMS`, to stay within fuel and memory.
const HUGE_STRING_BYTES: usize = 1 << 20;

struct GiantOutput;

impl Rules for GiantOutput {
    fn decide_payment<H: Host>(_host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        let one = Money::new(1, &request.amount.currency);
        let mut quote = Quote::empty();
        match request.metadata_value("mode").unwrap_or("lines") {
            "huge_strings" => {
                // Built by hand: `QuoteLine::fee` would cut the description
                // to the contract's 200 bytes.
                quote.lines.push(QuoteLine {
                    kind: LineKind::Fee,
                    code: "x".repeat(HUGE_STRING_BYTES),
                    description: "y".repeat(HUGE_STRING_BYTES),
                    amount: one,
                    account: Some("z".repeat(HUGE_STRING_BYTES)),
                });
            }
            "splits" => {
                quote.splits = (0..ITEMS)
                    .map(|i| Split::new(&format!("part-{i}"), one.clone()))
                    .collect();
            }
            _ => {
                let description = "d".repeat(200);
                quote.lines = (0..ITEMS)
                    .map(|i| QuoteLine::fee(&format!("fee_{i}"), &description, one.clone()))
                    .collect();
            }
        }
        Ok(quote)
    }

    fn decide_refund<H: Host>(
        _host: &H,
        _request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        // Built by hand: `Decline::new` would cut the message to 200 bytes.
        Err(Decline {
            code: "giant_decline".into(),
            message: "m".repeat(HUGE_STRING_BYTES),
        })
    }
}

wasmpay_plugin_sdk::export_rules!(GiantOutput);
