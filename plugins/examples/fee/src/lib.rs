//! Example plugin `fee`: a percentage plus a fixed fee, capped, charged to the
//! payer as one `service_fee` line; refunds allowed within a window, less a
//! fixed refund fee.
//!
//! The configuration keys are in `README.md`. Everything is read per call
//! through the host, so a merchant changes its fees by changing the
//! configuration, not the plugin.
#![no_std]

use wasmpay_plugin_sdk::ConfigError;
use wasmpay_plugin_sdk::prelude::*;

/// The fee line's stable code in reports.
const FEE_CODE: &str = "service_fee";

/// Milliseconds in a day, for `refund_max_age_days`.
const DAY_MS: i64 = 86_400_000;

struct Fee;

impl Rules for Fee {
    fn decide_payment<H: Host>(host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        let fee = payment_fee(host, &request.amount, request.currency_exponent)?;
        if fee.is_zero() {
            return Ok(Quote::empty());
        }
        let description = format!("Service fee {}", fee.display(request.currency_exponent));
        Ok(Quote::empty().with_line(QuoteLine::fee(FEE_CODE, &description, fee)))
    }

    fn decide_refund<H: Host>(host: &H, request: &RefundRequest) -> Result<Option<Money>, Decline> {
        if let Some(days) = host.config_u32("refund_max_age_days")? {
            let age_ms = request.captured_age_ms();
            if age_ms > i64::from(days) * DAY_MS {
                return Err(Decline::new(
                    "refund_window_expired",
                    format!("refunds are accepted for {days} days after capture"),
                ));
            }
        }
        let currency = &request.amount.currency;
        let key = format!("refund_fee.{currency}");
        let Some(fee) = host.config_money(&key, currency, request.currency_exponent)? else {
            return Ok(None);
        };
        if fee.is_zero() {
            return Ok(None);
        }
        // The contract requires the fee to be less than the refund: a refund
        // that would return nothing is refused instead.
        if fee.minor_units >= request.amount.minor_units {
            return Err(Decline::new(
                "refund_below_fee",
                format!(
                    "the refund must exceed the refund fee of {}",
                    fee.display(request.currency_exponent)
                ),
            ));
        }
        Ok(Some(fee))
    }
}

/// `fee_bps` of the amount (rounded per `fee_rounding`) plus
/// `fee_fixed.<CUR>`, at most `fee_cap.<CUR>`.
fn payment_fee<H: Host>(host: &H, amount: &Money, exponent: u8) -> Result<Money, Decline> {
    let currency = &amount.currency;
    let bps = match host.config_bps(&format!("fee_bps.{currency}"))? {
        Some(bps) => bps,
        None => host.config_bps("fee_bps")?.unwrap_or(0),
    };
    let rounding = rounding(host)?;
    let fixed = host
        .config_money(&format!("fee_fixed.{currency}"), currency, exponent)?
        .unwrap_or_else(|| Money::zero(currency));
    let fee = amount.percent_bps(bps, rounding)?.checked_add(&fixed)?;
    match host.config_money(&format!("fee_cap.{currency}"), currency, exponent)? {
        Some(cap) => Ok(fee.min(&cap)?),
        None => Ok(fee),
    }
}

/// How the percentage is rounded: `fee_rounding` is `half_up` (the
/// default), `down` or `up`.
fn rounding<H: Host>(host: &H) -> Result<Rounding, ConfigError> {
    const KEY: &str = "fee_rounding";
    match host.config_get(KEY).as_deref().map(str::trim) {
        None | Some("half_up") => Ok(Rounding::HalfUp),
        Some("down") => Ok(Rounding::Down),
        Some("up") => Ok(Rounding::Up),
        Some(_) => Err(ConfigError::new(
            KEY,
            wasmpay_plugin_sdk::ConfigProblem::NotOneOf(&["half_up", "down", "up"]),
        )),
    }
}

wasmpay_plugin_sdk::export_rules!(Fee);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpay_plugin_sdk::testing::{FakeHost, payment, refund};

    fn eur(minor_units: i64) -> Money {
        Money::new(minor_units, "EUR")
    }

    fn stripe_like() -> FakeHost {
        FakeHost::new()
            .with_config("fee_bps", "290")
            .with_config("fee_fixed.EUR", "0.30")
            .with_config("fee_cap.EUR", "5.00")
    }

    fn fee_of(host: &FakeHost, minor_units: i64) -> Result<Quote, Decline> {
        Fee::decide_payment(host, &payment(minor_units, "EUR", 2))
    }

    #[test]
    fn percentage_plus_fixed_fee_is_one_fee_line() {
        // 2.9 % of 10.05 EUR is 29.145 cents, rounded half up to 29, plus 30.
        let quote = fee_of(&stripe_like(), 1005).unwrap();
        assert_eq!(quote.lines.len(), 1);
        let line = &quote.lines[0];
        assert_eq!(line.kind, LineKind::Fee);
        assert_eq!(line.code, "service_fee");
        assert_eq!(line.amount, eur(59));
        assert_eq!(line.description, "Service fee 0.59 EUR");
        assert!(quote.splits.is_empty());
    }

    #[test]
    fn the_cap_bounds_the_fee() {
        let quote = fee_of(&stripe_like(), 1_000_000).unwrap();
        assert_eq!(quote.lines[0].amount, eur(500));
    }

    #[test]
    fn per_currency_rate_and_rounding_apply() {
        let host = stripe_like()
            .with_config("fee_bps.JPY", "350")
            .with_config("fee_rounding", "up");
        let quote = Fee::decide_payment(&host, &payment(1001, "JPY", 0)).unwrap();
        // 3.5 % of 1001 JPY is 35.035, rounded up; no fixed fee for JPY.
        assert_eq!(quote.lines[0].amount, Money::new(36, "JPY"));
    }

    #[test]
    fn no_fee_configured_approves_with_an_empty_quote() {
        assert_eq!(fee_of(&FakeHost::new(), 1000), Ok(Quote::empty()));
    }

    #[test]
    fn a_bad_setting_declines_naming_the_key() {
        let host = stripe_like().with_config("fee_fixed.EUR", "0.305");
        let decline = fee_of(&host, 1000).unwrap_err();
        assert_eq!(decline.code, "plugin_config_invalid");
        assert!(
            decline.message.contains("fee_fixed.EUR"),
            "{}",
            decline.message
        );

        let host = stripe_like().with_config("fee_rounding", "bankers");
        assert_eq!(
            fee_of(&host, 1000).unwrap_err().code,
            "plugin_config_invalid"
        );
    }

    #[test]
    fn refunds_keep_the_refund_fee_inside_the_window() {
        let host = FakeHost::new()
            .with_config("refund_fee.EUR", "0.50")
            .with_config("refund_max_age_days", "30");
        let recent = refund(2000, 5000, "EUR", 2, 29 * DAY_MS);
        assert_eq!(Fee::decide_refund(&host, &recent), Ok(Some(eur(50))));

        let old = refund(2000, 5000, "EUR", 2, 30 * DAY_MS + 1);
        assert_eq!(
            Fee::decide_refund(&host, &old).unwrap_err().code,
            "refund_window_expired"
        );

        let tiny = refund(50, 5000, "EUR", 2, DAY_MS);
        assert_eq!(
            Fee::decide_refund(&host, &tiny).unwrap_err().code,
            "refund_below_fee"
        );
    }

    #[test]
    fn refunds_without_configuration_are_free_and_unlimited() {
        let old = refund(2000, 5000, "EUR", 2, 3650 * DAY_MS);
        assert_eq!(Fee::decide_refund(&FakeHost::new(), &old), Ok(None));
    }
}
