//! Example plugin `guard`: validation only. It never prices anything: it
//! declines a payment that breaks one of the merchant's limits, with a
//! stable code, and otherwise approves with an empty quote. Refunds are
//! always allowed (the SDK's default).
//!
//! Checks run cheapest first: the blocklist, the amount bounds, then the
//! velocity limits, which ask the host for the payer's activity once per
//! configured window. The configuration keys are in `README.md`.
#![no_std]

use wasmpay_plugin_sdk::prelude::*;

struct Guard;

impl Rules for Guard {
    fn decide_payment<H: Host>(host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        check_blocklist(host, request)?;
        check_amount_bounds(host, request)?;
        for window_seconds in host.config_u32_list("velocity_windows")? {
            check_velocity(host, request, window_seconds)?;
        }
        Ok(Quote::empty())
    }
}

fn check_blocklist<H: Host>(host: &H, request: &PaymentRequest) -> Result<(), Decline> {
    if host.config_list("blocked_payers").contains(&request.payer) {
        return Err(Decline::new(
            "payer_blocked",
            "this payer may not pay this merchant",
        ));
    }
    Ok(())
}

fn check_amount_bounds<H: Host>(host: &H, request: &PaymentRequest) -> Result<(), Decline> {
    let amount = &request.amount;
    let currency = &amount.currency;
    let exponent = request.currency_exponent;
    if let Some(min) = host.config_money(&format!("amount_min.{currency}"), currency, exponent)?
        && amount.minor_units < min.minor_units
    {
        return Err(Decline::new(
            "amount_below_min",
            format!("the smallest payment accepted is {}", min.display(exponent)),
        ));
    }
    if let Some(max) = host.config_money(&format!("amount_max.{currency}"), currency, exponent)?
        && amount.minor_units > max.minor_units
    {
        return Err(Decline::new(
            "amount_above_max",
            format!("the largest payment accepted is {}", max.display(exponent)),
        ));
    }
    Ok(())
}

/// Declines if this payment would take the payer past the window's count
/// or volume limit: the payments already approved in the window plus this
/// one.
fn check_velocity<H: Host>(
    host: &H,
    request: &PaymentRequest,
    window_seconds: u32,
) -> Result<(), Decline> {
    let amount = &request.amount;
    let currency = &amount.currency;
    let exponent = request.currency_exponent;
    let count_max = host.config_u32(&format!("velocity_count_max.{window_seconds}"))?;
    let volume_key = format!("velocity_volume_max.{window_seconds}.{currency}");
    let volume_max = host.config_money(&volume_key, currency, exponent)?;
    if count_max.is_none() && volume_max.is_none() {
        // Nothing to check: spare the host the query.
        return Ok(());
    }
    let activity = host.payer_activity(window_seconds, currency);
    if let Some(count_max) = count_max
        && u64::from(activity.count) + 1 > u64::from(count_max)
    {
        return Err(Decline::new(
            "velocity_count_exceeded",
            format!("at most {count_max} payments per {window_seconds} s"),
        ));
    }
    if let Some(volume_max) = volume_max {
        let volume = activity.volume.checked_add(amount)?;
        if volume.minor_units > volume_max.minor_units {
            return Err(Decline::new(
                "velocity_volume_exceeded",
                format!(
                    "at most {} per {window_seconds} s",
                    volume_max.display(exponent)
                ),
            ));
        }
    }
    Ok(())
}

wasmpay_plugin_sdk::export_rules!(Guard);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpay_plugin_sdk::testing::{FakeHost, payment};

    fn eur(minor_units: i64) -> Money {
        Money::new(minor_units, "EUR")
    }

    fn limits() -> FakeHost {
        FakeHost::new()
            .with_config("blocked_payers", "mallory, trudy")
            .with_config("amount_min.EUR", "1.00")
            .with_config("amount_max.EUR", "1000")
            .with_config("velocity_windows", "3600, 86400")
            .with_config("velocity_count_max.3600", "3")
            .with_config("velocity_volume_max.86400.EUR", "500.00")
    }

    fn code_of(host: &FakeHost, request: &PaymentRequest) -> Option<String> {
        Guard::decide_payment(host, request)
            .err()
            .map(|decline| decline.code)
    }

    #[test]
    fn a_payment_within_every_limit_is_approved_with_an_empty_quote() {
        let host = limits()
            .with_activity(
                3600,
                Activity {
                    count: 2,
                    volume: eur(10_000),
                },
            )
            .with_activity(
                86400,
                Activity {
                    count: 9,
                    volume: eur(40_000),
                },
            );
        assert_eq!(
            Guard::decide_payment(&host, &payment(10_000, "EUR", 2)),
            Ok(Quote::empty())
        );
    }

    #[test]
    fn each_limit_declines_with_its_own_code() {
        let mut blocked = payment(5000, "EUR", 2);
        blocked.payer = "trudy".into();
        assert_eq!(
            code_of(&limits(), &blocked).as_deref(),
            Some("payer_blocked")
        );

        let small = payment(99, "EUR", 2);
        assert_eq!(
            code_of(&limits(), &small).as_deref(),
            Some("amount_below_min")
        );
        let large = payment(100_001, "EUR", 2);
        assert_eq!(
            code_of(&limits(), &large).as_deref(),
            Some("amount_above_max")
        );

        let busy = limits().with_activity(
            3600,
            Activity {
                count: 3,
                volume: eur(300),
            },
        );
        let request = payment(5000, "EUR", 2);
        assert_eq!(
            code_of(&busy, &request).as_deref(),
            Some("velocity_count_exceeded")
        );

        let spent = limits().with_activity(
            86400,
            Activity {
                count: 1,
                volume: eur(45_001),
            },
        );
        assert_eq!(
            code_of(&spent, &request).as_deref(),
            Some("velocity_volume_exceeded")
        );
    }

    #[test]
    fn the_volume_limit_counts_this_payment() {
        let at_limit = limits().with_activity(
            86400,
            Activity {
                count: 1,
                volume: eur(45_000),
            },
        );
        assert_eq!(code_of(&at_limit, &payment(5000, "EUR", 2)), None);
        assert_eq!(
            code_of(&at_limit, &payment(5001, "EUR", 2)).as_deref(),
            Some("velocity_volume_exceeded")
        );
    }

    #[test]
    fn limits_of_other_currencies_do_not_apply() {
        let request = payment(1, "JPY", 0);
        assert_eq!(code_of(&limits(), &request), None);
    }

    #[test]
    fn a_bad_window_list_declines_as_a_config_error() {
        let host = limits().with_config("velocity_windows", "3600, soon");
        let decline = Guard::decide_payment(&host, &payment(5000, "EUR", 2)).unwrap_err();
        assert_eq!(decline.code, "plugin_config_invalid");
        assert!(decline.message.contains("velocity_windows"));
    }
}
