//! The edge between WIT types and domain types.
//!
//! Requests go in as the WIT records the plugin expects; answers come out as
//! domain types or not at all. Converting an answer *is* validating it:
//! every code must be a [`Code`], every text within [`check_text`], every
//! currency a known [`Currency`], every account a [`SubAccount`]. Whether the
//! quote makes economic sense (fees above the amount, unbalanced routes) is
//! for [`wasmpay_domain::Quote::settle`], which the pipeline calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmpay_domain::quote::check_text;
use wasmpay_domain::{
    Code, Currency, Decision, Decline, LineKind, MerchantId, Money, PaymentId, Quote, QuoteLine,
    RefundDecision, Split, SubAccount, UserId,
};

use crate::bindings::wasmpay::plugin::types as wit;

/// A payment for a plugin to decide: the host-side mirror of the WIT
/// `payment-request`, in domain types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    pub payment_id: PaymentId,
    /// The calling merchant: the plugin's owner.
    pub merchant: MerchantId,
    pub payer: UserId,
    /// What the payer asked to pay, before the quote's lines.
    pub amount: Money,
    #[serde(default)]
    pub memo: Option<String>,
    /// Pairs the payer attached (`order_id`, `coupon`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the host received the request, in ms since the Unix epoch: the
    /// plugin's only clock.
    pub received_at_ms: i64,
    /// A two-phase authorization (a hold) rather than an immediate payment.
    #[serde(default)]
    pub is_authorization: bool,
}

/// A refund for a plugin to allow or deny: the host-side mirror of the WIT
/// `refund-request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// The payment being refunded.
    pub payment_id: PaymentId,
    pub merchant: MerchantId,
    pub payer: UserId,
    /// What the payer was charged for the payment.
    pub captured: Money,
    /// What was refunded before this request.
    pub refunded: Money,
    /// What this refund asks to return.
    pub amount: Money,
    #[serde(default)]
    pub reason: Option<String>,
    pub received_at_ms: i64,
    pub captured_at_ms: i64,
}

pub(crate) fn money_to_wit(money: Money) -> wit::Money {
    wit::Money {
        minor_units: money.minor(),
        currency: money.currency().code().to_owned(),
    }
}

/// ISO 4217 exponents are at most 4, so this never saturates in practice.
fn exponent(currency: Currency) -> u8 {
    u8::try_from(currency.exponent()).unwrap_or(u8::MAX)
}

impl PaymentInput {
    pub(crate) fn to_wit(&self) -> wit::PaymentRequest {
        wit::PaymentRequest {
            payment_id: self.payment_id.as_str().to_owned(),
            merchant: self.merchant.as_str().to_owned(),
            payer: self.payer.as_str().to_owned(),
            amount: money_to_wit(self.amount),
            currency_exponent: exponent(self.amount.currency()),
            memo: self.memo.clone(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            received_at_ms: self.received_at_ms,
            is_authorization: self.is_authorization,
        }
    }
}

impl RefundInput {
    pub(crate) fn to_wit(&self) -> wit::RefundRequest {
        wit::RefundRequest {
            payment_id: self.payment_id.as_str().to_owned(),
            merchant: self.merchant.as_str().to_owned(),
            payer: self.payer.as_str().to_owned(),
            captured: money_to_wit(self.captured),
            refunded: money_to_wit(self.refunded),
            amount: money_to_wit(self.amount),
            currency_exponent: exponent(self.amount.currency()),
            reason: self.reason.clone(),
            received_at_ms: self.received_at_ms,
            captured_at_ms: self.captured_at_ms,
        }
    }
}

/// Why a plugin's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Larger than `output_bytes_max`.
    TooLarge { size_bytes: usize },
    /// Breaks a rule of the contract; says which, and where.
    Malformed(String),
}

/// A rule of the contract the plugin's answer breaks, with where.
type Malformed = String;

/// What the host holds for an answer: each item at its in-memory size plus
/// the bytes of its strings. Counted before any conversion, so an oversized
/// answer is refused as such rather than for its first bad string.
fn money_bytes(value: &wit::Money) -> usize {
    value.currency.len()
}

fn decline_bytes(value: &wit::Decline) -> usize {
    size_of::<wit::Decline>() + value.code.len() + value.message.len()
}

fn decision_bytes(value: &wit::PaymentDecision) -> usize {
    match value {
        wit::PaymentDecision::Approve(quote) => {
            let lines = quote.lines.iter().map(|line| {
                size_of::<wit::QuoteLine>()
                    + line.code.len()
                    + line.description.len()
                    + money_bytes(&line.amount)
                    + line.account.as_ref().map_or(0, String::len)
            });
            let splits = (quote.splits.iter()).map(|split| {
                size_of::<wit::Split>() + split.account.len() + money_bytes(&split.amount)
            });
            lines.chain(splits).fold(0, usize::saturating_add)
        }
        wit::PaymentDecision::Decline(decline) => decline_bytes(decline),
    }
}

fn refund_decision_bytes(value: &wit::RefundDecision) -> usize {
    match value {
        wit::RefundDecision::Allow(fee) => fee.as_ref().map_or(0, money_bytes),
        wit::RefundDecision::Deny(decline) => decline_bytes(decline),
    }
}

fn within(size_bytes: usize, output_bytes_max: usize) -> Result<(), Refusal> {
    if size_bytes > output_bytes_max {
        Err(Refusal::TooLarge { size_bytes })
    } else {
        Ok(())
    }
}

fn money(value: wit::Money, at: &str) -> Result<Money, Malformed> {
    let currency = Currency::parse(&value.currency).map_err(|e| format!("{at}: {e}"))?;
    Ok(Money::from_minor(value.minor_units, currency))
}

fn code(value: String, at: &str) -> Result<Code, Malformed> {
    Code::new(value).map_err(|e| format!("{at}: {e}"))
}

fn text(value: String, at: &str) -> Result<String, Malformed> {
    check_text(&value).map_err(|e| format!("{at}: {e}"))?;
    Ok(value)
}

fn account(value: String, at: &str) -> Result<SubAccount, Malformed> {
    SubAccount::new(value).map_err(|e| format!("{at}: {e}"))
}

fn decline(value: wit::Decline) -> Result<Decline, Malformed> {
    Ok(Decline {
        code: code(value.code, "decline code")?,
        message: text(value.message, "decline message")?,
    })
}

fn line(value: wit::QuoteLine, index: usize) -> Result<QuoteLine, Malformed> {
    let at = |field: &str| format!("quote line {index} {field}");
    Ok(QuoteLine {
        kind: match value.kind {
            wit::LineKind::Fee => LineKind::Fee,
            wit::LineKind::Discount => LineKind::Discount,
            wit::LineKind::Surcharge => LineKind::Surcharge,
            wit::LineKind::Tax => LineKind::Tax,
            wit::LineKind::Tip => LineKind::Tip,
        },
        code: code(value.code, &at("code"))?,
        description: text(value.description, &at("description"))?,
        amount: money(value.amount, &at("amount"))?,
        account: match value.account {
            None => SubAccount::main(),
            Some(name) => account(name, &at("account"))?,
        },
    })
}

fn split(value: wit::Split, index: usize) -> Result<Split, Malformed> {
    let at = |field: &str| format!("split {index} {field}");
    Ok(Split {
        account: account(value.account, &at("account"))?,
        amount: money(value.amount, &at("amount"))?,
    })
}

pub(crate) fn decision(
    value: wit::PaymentDecision,
    output_bytes_max: usize,
) -> Result<Decision, Refusal> {
    within(decision_bytes(&value), output_bytes_max)?;
    decision_checked(value).map_err(Refusal::Malformed)
}

fn decision_checked(value: wit::PaymentDecision) -> Result<Decision, Malformed> {
    Ok(match value {
        wit::PaymentDecision::Approve(quote) => Decision::Approve {
            quote: Quote {
                lines: (quote.lines.into_iter().enumerate())
                    .map(|(i, l)| line(l, i))
                    .collect::<Result<_, _>>()?,
                splits: (quote.splits.into_iter().enumerate())
                    .map(|(i, s)| split(s, i))
                    .collect::<Result<_, _>>()?,
            },
        },
        wit::PaymentDecision::Decline(value) => Decision::Decline {
            decline: decline(value)?,
        },
    })
}

pub(crate) fn refund_decision(
    value: wit::RefundDecision,
    output_bytes_max: usize,
) -> Result<RefundDecision, Refusal> {
    within(refund_decision_bytes(&value), output_bytes_max)?;
    refund_checked(value).map_err(Refusal::Malformed)
}

fn refund_checked(value: wit::RefundDecision) -> Result<RefundDecision, Malformed> {
    Ok(match value {
        wit::RefundDecision::Allow(fee) => RefundDecision::Allow {
            fee: fee.map(|fee| money(fee, "refund fee")).transpose()?,
        },
        wit::RefundDecision::Deny(value) => RefundDecision::Deny {
            decline: decline(value)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_line(code: &str, currency: &str, account: Option<&str>) -> wit::QuoteLine {
        wit::QuoteLine {
            kind: wit::LineKind::Fee,
            code: code.into(),
            description: "Service fee".into(),
            amount: wit::Money {
                minor_units: 30,
                currency: currency.into(),
            },
            account: account.map(Into::into),
        }
    }

    fn approve(lines: Vec<wit::QuoteLine>) -> wit::PaymentDecision {
        wit::PaymentDecision::Approve(wit::Quote {
            lines,
            splits: vec![],
        })
    }

    #[test]
    fn a_well_formed_quote_converts_with_main_as_the_default_account() {
        let Decision::Approve { quote } =
            decision(approve(vec![wit_line("fee", "EUR", None)]), 1 << 16).unwrap()
        else {
            panic!("expected an approval");
        };
        assert!(quote.lines[0].account.is_main());
        assert_eq!(quote.lines[0].amount.minor(), 30);
    }

    #[test]
    fn each_broken_rule_is_named_with_its_place() {
        let check = |answer: wit::PaymentDecision, expected: &str| {
            let Err(Refusal::Malformed(error)) = decision(answer, 1 << 16) else {
                panic!("expected a malformed answer");
            };
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        };
        check(
            approve(vec![wit_line("Fee", "EUR", None)]),
            "quote line 0 code",
        );
        check(
            approve(vec![wit_line("fee", "eur", None)]),
            "quote line 0 amount",
        );
        check(
            approve(vec![
                wit_line("fee", "EUR", None),
                wit_line("fee", "EUR", Some("../x")),
            ]),
            "quote line 1 account",
        );
        check(
            wit::PaymentDecision::Decline(wit::Decline {
                code: "no".into(),
                message: "x".repeat(201),
            }),
            "decline message",
        );
    }

    #[test]
    fn an_answer_over_the_size_limit_is_refused_before_its_content_is_checked() {
        let lines = vec![wit_line("Not A Code", "EUR", None); 100];
        let size = decision_bytes(&approve(lines.clone()));
        assert!(size > 100 * size_of::<wit::QuoteLine>());
        assert_eq!(
            decision(approve(lines.clone()), size - 1),
            Err(Refusal::TooLarge { size_bytes: size })
        );
        assert!(matches!(
            decision(approve(lines), size),
            Err(Refusal::Malformed(_))
        ));
    }
}
