//! Hostile fixture `absurd_quote`: each mode answers a quote (or refund
//! fee) that breaks exactly one rule of the contract. The host must refuse
//! every one; see `README.md`.
//!
//! The answers are built from the raw WIT records on purpose: the SDK's
//! constructors keep to some of the rules this fixture breaks.
#![no_std]

use wasmpay_plugin_sdk::prelude::*;

/// Splits in the `too_many_splits` mode: beyond any sane per-quote limit.
const TOO_MANY_SPLITS: usize = 1000;

struct AbsurdQuote;

impl Rules for AbsurdQuote {
    fn decide_payment<H: Host>(_host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        let amount = &request.amount;
        let currency = amount.currency.as_str();
        let in_currency = |minor_units: i64| Money::new(minor_units, currency);
        let mode = request.metadata_value("mode").unwrap_or("");
        let quote = match mode {
            "negative_fee" => line(LineKind::Fee, "fee", in_currency(-100)),
            "fee_above_amount" => line(
                LineKind::Fee,
                "fee",
                in_currency(amount.minor_units.saturating_add(1)),
            ),
            "discount_above_amount" => line(
                LineKind::Discount,
                "discount",
                in_currency(amount.minor_units.saturating_add(1)),
            ),
            "wrong_currency" => line(
                LineKind::Fee,
                "fee",
                Money::new(100, other_currency(currency)),
            ),
            "invalid_code" => line(LineKind::Fee, "Not A Valid Code!", in_currency(100)),
            "line_to_other_merchant" => {
                let mut quote = line(LineKind::Tax, "tax", in_currency(100));
                quote.lines[0].account = Some("../other".into());
                quote
            }
            "split_to_other_merchant" => split("../other", in_currency(1)),
            "split_to_main" => split("main", in_currency(1)),
            "splits_above_amount" => {
                split("partner", in_currency(amount.minor_units.saturating_add(1)))
            }
            "too_many_splits" => Quote {
                lines: Vec::new(),
                splits: (0..TOO_MANY_SPLITS)
                    .map(|i| Split {
                        account: format!("part-{i}"),
                        amount: in_currency(1),
                    })
                    .collect(),
            },
            _ => {
                return Err(Decline {
                    code: "absurd_quote_unknown_mode".into(),
                    message: format!("unknown mode {mode:?}"),
                });
            }
        };
        Ok(quote)
    }

    fn decide_refund<H: Host>(
        _host: &H,
        request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        let amount = &request.amount;
        let currency = amount.currency.as_str();
        let mode = request.reason.as_deref().unwrap_or("");
        match mode {
            "negative_refund_fee" => Ok(Some(Money::new(-100, currency))),
            "refund_fee_equal_to_amount" => Ok(Some(amount.clone())),
            "refund_fee_wrong_currency" => Ok(Some(Money::new(1, other_currency(currency)))),
            _ => Err(Decline {
                code: "absurd_quote_unknown_mode".into(),
                message: format!("unknown mode {mode:?}"),
            }),
        }
    }
}

/// A quote of one line of `kind`, credited to the merchant's main account.
fn line(kind: LineKind, code: &str, amount: Money) -> Quote {
    Quote {
        lines: vec![QuoteLine {
            kind,
            code: code.into(),
            description: "absurd".into(),
            amount,
            account: None,
        }],
        splits: Vec::new(),
    }
}

/// A quote of one split.
fn split(account: &str, amount: Money) -> Quote {
    Quote {
        lines: Vec::new(),
        splits: vec![Split {
            account: account.into(),
            amount,
        }],
    }
}

/// A valid ISO 4217 code that is not `currency`.
fn other_currency(currency: &str) -> &'static str {
    if currency == "USD" { "EUR" } else { "USD" }
}

wasmpay_plugin_sdk::export_rules!(AbsurdQuote);
