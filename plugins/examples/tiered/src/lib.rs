//! Example plugin `tiered`: prices an order by amount band, applies a
//! payer's coupon, enforces a minimum order, adds tax routed to the `tax`
//! sub-account and splits a share of the proceeds to a partner sub-account.
//!
//! The steps, in order, each from its own configuration keys (see
//! `README.md`):
//! 1. the order (the request's amount) must reach `min_order.<CUR>`;
//! 2. the band the amount falls in adds a surcharge or takes a discount;
//! 3. `metadata["coupon"]` takes a further discount;
//! 4. the net (amount + surcharge - discounts) must stay positive;
//! 5. tax is charged on the net, to the tax sub-account;
//! 6. a share of the net is split to a sub-account.
#![no_std]

use wasmpay_plugin_sdk::money::{AmountError, BPS_PER_WHOLE, parse_percent_bps};
use wasmpay_plugin_sdk::prelude::*;
use wasmpay_plugin_sdk::{ConfigError, ConfigProblem};

/// The most bytes of a coupon code: longer codes are refused before they
/// reach a configuration key.
const COUPON_BYTES_MAX: usize = 32;

struct Tiered;

impl Rules for Tiered {
    fn decide_payment<H: Host>(host: &H, request: &PaymentRequest) -> Result<Quote, Decline> {
        let amount = &request.amount;
        let currency = amount.currency.as_str();
        let exponent = request.currency_exponent;
        let mut quote = Quote::empty();

        if let Some(min) =
            host.config_money(&format!("min_order.{currency}"), currency, exponent)?
            && amount.minor_units < min.minor_units
        {
            return Err(Decline::new(
                "below_minimum_order",
                format!("the minimum order is {}", min.display(exponent)),
            ));
        }

        let bands = bands(host, currency, exponent)?;
        if let Some(line) = band_line(&bands, amount)? {
            quote = quote.with_line(line);
        }
        if let Some(code) = request.metadata_value("coupon") {
            quote = quote.with_line(coupon_line(host, code, amount, exponent)?);
        }

        // Only the amount, the surcharges and the discounts so far: the net
        // the merchant sells for, which tax and the split are shares of.
        let net = quote.payer_total(amount)?;
        if net.minor_units <= 0 {
            return Err(Decline::new(
                "discount_exceeds_order",
                "the discounts are worth the whole order",
            ));
        }

        if let Some(rate) = host.config_percent("tax_rate")? {
            let tax = net.percent_bps(rate, Rounding::HalfUp)?;
            if !tax.is_zero() {
                let account = host
                    .config_get("tax_account")
                    .unwrap_or_else(|| "tax".into());
                let line = QuoteLine::tax("tax", &format!("Tax {}", percent(rate)), tax);
                quote = quote.with_line(line.to_account(&account));
            }
        }

        if let Some(rate) = host.config_percent("split_rate")? {
            let account = host
                .config_get("split_account")
                .ok_or_else(|| ConfigError::missing("split_account"))?;
            // Rounded down so that the split never takes more than its share.
            let share = net.percent_bps(rate, Rounding::Down)?;
            if !share.is_zero() {
                quote = quote.with_split(Split::new(&account, share));
            }
        }
        Ok(quote)
    }
}

/// From `from` upward (until the next band), the order is adjusted by
/// `adjustment_bps`: positive is a surcharge, negative a discount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Band {
    from: Money,
    adjustment_bps: i64,
}

/// The bands of `tiers.<CUR>`: `"<from>:<percent>"` items, comma-separated,
/// in strictly ascending order of `from`. Unset means no bands.
fn bands<H: Host>(host: &H, currency: &str, exponent: u8) -> Result<Vec<Band>, ConfigError> {
    let key = format!("tiers.{currency}");
    let malformed = || {
        ConfigError::new(
            &key,
            ConfigProblem::Malformed("ascending <from>:<percent> items, like 0:2.5%, 500.00:-1%"),
        )
    };
    let amount_error = |error: AmountError| ConfigError::new(&key, ConfigProblem::Amount(error));
    let mut bands: Vec<Band> = Vec::new();
    for item in host.config_list(&key) {
        let (from, adjustment) = item.split_once(':').ok_or_else(malformed)?;
        let from = Money::parse(from.trim(), currency, exponent).map_err(amount_error)?;
        let adjustment_bps = parse_percent_bps(adjustment.trim()).map_err(amount_error)?;
        let ascending = bands
            .last()
            .is_none_or(|last| from.minor_units > last.from.minor_units);
        if from.is_negative() || !ascending || adjustment_bps.abs() > i64::from(BPS_PER_WHOLE) {
            return Err(malformed());
        }
        bands.push(Band {
            from,
            adjustment_bps,
        });
    }
    Ok(bands)
}

/// The surcharge or discount of the highest band the amount reaches, if
/// any and not zero.
fn band_line(bands: &[Band], amount: &Money) -> Result<Option<QuoteLine>, Decline> {
    let Some(band) = bands
        .iter()
        .rev()
        .find(|band| amount.minor_units >= band.from.minor_units)
    else {
        return Ok(None);
    };
    let magnitude = u32::try_from(band.adjustment_bps.unsigned_abs())
        .map_err(|_| Decline::new("plugin_config_invalid", "tier percentage out of range"))?;
    let adjustment = amount.percent_bps(magnitude, Rounding::HalfUp)?;
    if adjustment.is_zero() {
        return Ok(None);
    }
    let description = format!("Order band {}", percent_signed(band.adjustment_bps));
    Ok(Some(if band.adjustment_bps > 0 {
        QuoteLine::surcharge("tier_surcharge", &description, adjustment)
    } else {
        QuoteLine::discount("tier_discount", &description, adjustment)
    }))
}

/// The discount line for the payer's coupon `code`, looked up (in upper
/// case) as `coupon.<CODE>`: `"10%"` of the amount, or a fixed
/// `"5.00 EUR"` in the payment's currency.
fn coupon_line<H: Host>(
    host: &H,
    code: &str,
    amount: &Money,
    exponent: u8,
) -> Result<QuoteLine, Decline> {
    let code = code.trim().to_ascii_uppercase();
    let well_formed = (1..=COUPON_BYTES_MAX).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let unknown = || Decline::new("coupon_invalid", "unknown coupon code");
    if !well_formed {
        return Err(unknown());
    }
    let key = format!("coupon.{code}");
    let value = host.config_get(&key).ok_or_else(unknown)?;
    let value = value.trim();
    let amount_error = |error: AmountError| ConfigError::new(&key, ConfigProblem::Amount(error));
    let discount = if value.ends_with('%') {
        let bps = parse_percent_bps(value).map_err(amount_error)?;
        let bps = u32::try_from(bps)
            .ok()
            .filter(|bps| *bps <= BPS_PER_WHOLE)
            .ok_or_else(|| ConfigError::new(&key, ConfigProblem::OutOfRange { max: 10_000 }))?;
        amount.percent_bps(bps, Rounding::HalfUp)?
    } else {
        let (number, coupon_currency) = value.split_once(' ').ok_or_else(|| {
            ConfigError::new(
                &key,
                ConfigProblem::Malformed("a percentage or an amount like 5.00 EUR"),
            )
        })?;
        if coupon_currency.trim() != amount.currency {
            return Err(Decline::new(
                "coupon_not_applicable",
                format!(
                    "coupon {code} is for payments in {}",
                    coupon_currency.trim()
                ),
            ));
        }
        let discount = Money::parse(number, &amount.currency, exponent).map_err(amount_error)?;
        if discount.is_negative() {
            return Err(ConfigError::new(&key, ConfigProblem::Negative).into());
        }
        discount
    };
    Ok(QuoteLine::discount(
        "coupon",
        &format!("Coupon {code}"),
        discount,
    ))
}

/// `bps` as people read a percentage: `8.25%`, `10%`.
fn percent(bps: u32) -> String {
    format_percent(i64::from(bps), "")
}

/// Signed `bps` as a percentage, with an explicit `+` for surcharges.
fn percent_signed(bps: i64) -> String {
    format_percent(bps, if bps > 0 { "+" } else { "" })
}

fn format_percent(bps: i64, plus: &str) -> String {
    let sign = if bps < 0 { "-" } else { plus };
    let magnitude = bps.unsigned_abs();
    let (whole, hundredths) = (magnitude / 100, magnitude % 100);
    match hundredths {
        0 => format!("{sign}{whole}%"),
        h if h % 10 == 0 => format!("{sign}{whole}.{}%", h / 10),
        h => format!("{sign}{whole}.{h:02}%"),
    }
}

wasmpay_plugin_sdk::export_rules!(Tiered);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpay_plugin_sdk::testing::{FakeHost, payment};

    fn eur(minor_units: i64) -> Money {
        Money::new(minor_units, "EUR")
    }

    fn shop() -> FakeHost {
        FakeHost::new()
            .with_config("min_order.EUR", "5.00")
            .with_config("tiers.EUR", "0:2.5%, 20.00:0%, 500.00:-1%")
            .with_config("coupon.WELCOME10", "10%")
            .with_config("coupon.FIVEOFF", "5.00 EUR")
            .with_config("coupon.YENOFF", "500 JPY")
            .with_config("tax_rate", "8.25%")
            .with_config("split_rate", "10%")
            .with_config("split_account", "partner")
    }

    fn order(minor_units: i64, coupon: Option<&str>) -> PaymentRequest {
        let mut request = payment(minor_units, "EUR", 2);
        if let Some(coupon) = coupon {
            request.metadata.push(("coupon".into(), coupon.into()));
        }
        request
    }

    fn lines(quote: &Quote) -> Vec<(LineKind, &str, i64, Option<&str>)> {
        quote
            .lines
            .iter()
            .map(|l| {
                (
                    l.kind,
                    l.code.as_str(),
                    l.amount.minor_units,
                    l.account.as_deref(),
                )
            })
            .collect()
    }

    #[test]
    fn a_small_order_pays_the_band_surcharge_tax_and_splits() {
        let quote = Tiered::decide_payment(&shop(), &order(1000, None)).unwrap();
        // 2.5 % of 10.00 = 0.25; net 10.25; tax 8.25 % = 0.845625 -> 0.85.
        assert_eq!(
            lines(&quote),
            vec![
                (LineKind::Surcharge, "tier_surcharge", 25, None),
                (LineKind::Tax, "tax", 85, Some("tax")),
            ]
        );
        assert_eq!(quote.lines[0].description, "Order band +2.5%");
        assert_eq!(quote.lines[1].description, "Tax 8.25%");
        // 10 % of the 10.25 net, rounded down.
        assert_eq!(quote.splits, vec![Split::new("partner", eur(102))]);
    }

    #[test]
    fn a_large_order_gets_the_band_discount_and_a_coupon() {
        let quote = Tiered::decide_payment(&shop(), &order(100_000, Some("welcome10"))).unwrap();
        assert_eq!(
            lines(&quote),
            vec![
                (LineKind::Discount, "tier_discount", 1000, None),
                (LineKind::Discount, "coupon", 10_000, None),
                // 8.25 % of 890.00.
                (LineKind::Tax, "tax", 7343, Some("tax")),
            ]
        );
        assert_eq!(quote.splits, vec![Split::new("partner", eur(8900))]);
    }

    #[test]
    fn a_middle_band_of_zero_adds_no_line() {
        let host = FakeHost::new().with_config("tiers.EUR", "0:2.5%, 20.00:0%, 500.00:-1%");
        assert_eq!(
            Tiered::decide_payment(&host, &order(5000, None)),
            Ok(Quote::empty())
        );
    }

    #[test]
    fn orders_and_coupons_are_declined_with_stable_codes() {
        let code = |minor_units, coupon| {
            Tiered::decide_payment(&shop(), &order(minor_units, coupon))
                .unwrap_err()
                .code
        };
        assert_eq!(code(499, None), "below_minimum_order");
        assert_eq!(code(1000, Some("NOPE")), "coupon_invalid");
        assert_eq!(code(1000, Some("../x")), "coupon_invalid");
        assert_eq!(code(1000, Some("YENOFF")), "coupon_not_applicable");
        // 5.00 EUR off a 5.00 EUR order with a 0.13 surcharge still leaves
        // 0.13; a bigger coupon would not.
        let host = shop().with_config("coupon.FIVEOFF", "6.00 EUR");
        let request = order(500, Some("FIVEOFF"));
        assert_eq!(
            Tiered::decide_payment(&host, &request).unwrap_err().code,
            "discount_exceeds_order"
        );
    }

    #[test]
    fn bands_must_ascend_and_splits_need_an_account() {
        let host = shop().with_config("tiers.EUR", "20.00:1%, 0:2%");
        let decline = Tiered::decide_payment(&host, &order(1000, None)).unwrap_err();
        assert_eq!(decline.code, "plugin_config_invalid");
        assert!(decline.message.contains("tiers.EUR"), "{}", decline.message);

        let host = FakeHost::new().with_config("split_rate", "10%");
        let decline = Tiered::decide_payment(&host, &order(1000, None)).unwrap_err();
        assert!(
            decline.message.contains("split_account"),
            "{}",
            decline.message
        );
    }

    #[test]
    fn percentages_print_as_people_write_them() {
        assert_eq!(percent(825), "8.25%");
        assert_eq!(percent(1000), "10%");
        assert_eq!(percent_signed(250), "+2.5%");
        assert_eq!(percent_signed(-100), "-1%");
        assert_eq!(percent_signed(0), "0%");
    }
}
