//! Exact money: integer minor units, checked arithmetic, basis-point
//! percentages with an explicit rounding, and decimal text parsed without
//! ever rounding.
//!
//! Amounts are the WIT's [`Money`]: an `i64` count of minor units and an
//! ISO 4217 code. How many minor units make a major unit (the currency's
//! exponent: 2 for EUR, 0 for JPY, 3 for KWD) arrives with every request as
//! `currency_exponent`, so this module never guesses it.

use alloc::string::{String, ToString};
use core::fmt;

use crate::Money;

/// One hundred percent in basis points.
pub const BPS_PER_WHOLE: u32 = 10_000;

/// The largest currency exponent accepted when parsing or formatting.
/// ISO 4217 stops at 4; 18 is the most that still fits `10^exponent` in an
/// `i64`.
pub const EXPONENT_MAX: u8 = 18;

/// How a percentage that falls between two minor units is made whole.
///
/// Directions are about the magnitude, so a negative amount rounds the
/// mirror image of its positive counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// To the nearest minor unit; exactly half goes away from zero
    /// (commercial rounding: 0.5 cent becomes 1 cent).
    HalfUp,
    /// Toward zero: the payer is never charged the fraction.
    Down,
    /// Away from zero: any fraction becomes a whole minor unit.
    Up,
}

/// Arithmetic that would give a wrong amount instead of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// The two amounts are in different currencies.
    CurrencyMismatch {
        /// The currency of the left-hand amount.
        left: String,
        /// The currency of the right-hand amount.
        right: String,
    },
    /// The result does not fit in an `i64` of minor units.
    Overflow,
}

impl MoneyError {
    /// The stable code a plugin declines with when it meets this error.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::CurrencyMismatch { .. } => "plugin_currency_mismatch",
            MoneyError::Overflow => "plugin_amount_overflow",
        }
    }
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::CurrencyMismatch { left, right } => {
                write!(f, "cannot combine {left} with {right}")
            }
            MoneyError::Overflow => f.write_str("amount out of range"),
        }
    }
}

/// Why a decimal text is not an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    /// Nothing to parse.
    Empty,
    /// Not of the form `123`, `123.4` or `-123.45`: a stray character, a
    /// missing digit on either side of the point, or a second point.
    Malformed,
    /// More digits after the point than the currency has minor units.
    /// Money is never rounded on the way in.
    ExcessPrecision {
        /// The currency's exponent, the most fraction digits allowed.
        exponent: u8,
    },
    /// Too large for an `i64` of minor units.
    Overflow,
    /// The exponent is above [`EXPONENT_MAX`].
    BadExponent,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::Empty => f.write_str("empty amount"),
            AmountError::Malformed => f.write_str("not a decimal amount such as 12.50"),
            AmountError::ExcessPrecision { exponent } => {
                write!(f, "more than {exponent} digits after the decimal point")
            }
            AmountError::Overflow => f.write_str("amount out of range"),
            AmountError::BadExponent => f.write_str("currency exponent out of range"),
        }
    }
}

impl Money {
    /// An amount of `minor_units` in `currency`.
    pub fn new(minor_units: i64, currency: &str) -> Money {
        Money {
            minor_units,
            currency: currency.to_string(),
        }
    }

    /// Nothing, in `currency`.
    pub fn zero(currency: &str) -> Money {
        Money::new(0, currency)
    }

    /// Parses a decimal text in major units (`"0.30"`, `"5"`, `"-1.5"`) into
    /// minor units of a currency with `exponent` fraction digits.
    ///
    /// The text must be exactly an optional `-`, one or more ASCII digits,
    /// and optionally a point followed by one to `exponent` digits. Excess
    /// precision is an error, never a rounding: `"0.305"` is not a EUR
    /// amount, and neither is `"0.300"`.
    pub fn parse(text: &str, currency: &str, exponent: u8) -> Result<Money, AmountError> {
        parse_minor_units(text, exponent).map(|minor_units| Money::new(minor_units, currency))
    }

    /// Whether the amount is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.minor_units == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.minor_units < 0
    }

    /// `self + other`, in their common currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, i64::checked_add)
    }

    /// `self - other`, in their common currency.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, i64::checked_sub)
    }

    /// The smaller of two amounts in the same currency (a fee under its cap).
    pub fn min(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, |a, b| Some(a.min(b)))
    }

    /// The larger of two amounts in the same currency (a fee over its floor).
    pub fn max(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, |a, b| Some(a.max(b)))
    }

    /// `self * count`, for per-item fees.
    pub fn checked_mul(&self, count: u32) -> Result<Money, MoneyError> {
        let minor_units = self
            .minor_units
            .checked_mul(i64::from(count))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor_units, &self.currency))
    }

    /// `bps` basis points of this amount (290 bps is 2.90 %), made whole
    /// with `rounding`. Percentages above 100 % are allowed; the product is
    /// computed in 128 bits, so only a result beyond `i64` overflows.
    pub fn percent_bps(&self, bps: u32, rounding: Rounding) -> Result<Money, MoneyError> {
        let minor_units = mul_div_rounded(self.minor_units, bps, BPS_PER_WHOLE, rounding)?;
        Ok(Money::new(minor_units, &self.currency))
    }

    /// The amount as people read it, `"12.50 EUR"`, given the currency's
    /// exponent. An exponent above [`EXPONENT_MAX`] prints minor units.
    pub fn display(&self, exponent: u8) -> impl fmt::Display + '_ {
        DisplayMoney {
            money: self,
            exponent,
        }
    }

    fn combine(
        &self,
        other: &Money,
        op: impl FnOnce(i64, i64) -> Option<i64>,
    ) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency.clone(),
                right: other.currency.clone(),
            });
        }
        let minor_units = op(self.minor_units, other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor_units, &self.currency))
    }
}

/// `value * numerator / denominator`, made whole with `rounding`, exact in
/// 128-bit integers.
///
/// # Panics
/// If `denominator` is zero: that is a programming error, not an input.
pub fn mul_div_rounded(
    value: i64,
    numerator: u32,
    denominator: u32,
    rounding: Rounding,
) -> Result<i64, MoneyError> {
    assert!(denominator > 0, "mul_div_rounded: zero denominator");
    // An i64 times a u32 always fits in an i128, so only the final
    // narrowing can fail.
    let product = i128::from(value) * i128::from(numerator);
    let denominator = i128::from(denominator);
    let magnitude = product.unsigned_abs();
    let denominator_u = denominator.unsigned_abs();
    let quotient = magnitude / denominator_u;
    let remainder = magnitude % denominator_u;
    let round_away = match rounding {
        Rounding::Down => false,
        Rounding::Up => remainder != 0,
        // remainder >= denominator / 2, written without dividing so odd
        // denominators round exactly.
        Rounding::HalfUp => remainder * 2 >= denominator_u,
    };
    let magnitude = quotient + u128::from(round_away);
    let magnitude = i128::try_from(magnitude).map_err(|_| MoneyError::Overflow)?;
    let signed = if product < 0 { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| MoneyError::Overflow)
}

/// Parses decimal text in major units into minor units; see
/// [`Money::parse`] for the accepted form.
pub fn parse_minor_units(text: &str, exponent: u8) -> Result<i64, AmountError> {
    if exponent > EXPONENT_MAX {
        return Err(AmountError::BadExponent);
    }
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(AmountError::Malformed);
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > usize::from(exponent) {
        return Err(AmountError::ExcessPrecision { exponent });
    }
    // Accumulate as a negative number when the text is negative so that
    // i64::MIN parses too; digits are checked above.
    let sign: i64 = if negative { -1 } else { 1 };
    let mut minor: i64 = 0;
    let padding = usize::from(exponent) - fraction.len();
    let digits = whole
        .bytes()
        .chain(fraction.bytes())
        .chain(core::iter::repeat_n(b'0', padding));
    for digit in digits {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(sign * i64::from(digit - b'0')))
            .ok_or(AmountError::Overflow)?;
    }
    Ok(minor)
}

/// Parses a percentage written with up to two decimals and a `%` sign
/// (`"2.9%"`, `"-1%"`, `"12.50%"`) into basis points (290, -100, 1250).
/// More than two decimals is an error, never a rounding.
pub fn parse_percent_bps(text: &str) -> Result<i64, AmountError> {
    let number = text.strip_suffix('%').ok_or(AmountError::Malformed)?;
    // A percentage with two decimals is a whole number of basis points, the
    // way an amount with two decimals is a whole number of cents.
    parse_minor_units(number, 2)
}

struct DisplayMoney<'a> {
    money: &'a Money,
    exponent: u8,
}

impl fmt::Display for DisplayMoney<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Money {
            minor_units,
            currency,
        } = self.money;
        if self.exponent == 0 || self.exponent > EXPONENT_MAX {
            return write!(f, "{minor_units} {currency}");
        }
        let scale = 10_u64.pow(u32::from(self.exponent));
        let sign = if *minor_units < 0 { "-" } else { "" };
        let magnitude = minor_units.unsigned_abs();
        let whole = magnitude / scale;
        let fraction = magnitude % scale;
        let width = usize::from(self.exponent);
        write!(f, "{sign}{whole}.{fraction:0width$} {currency}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor_units: i64) -> Money {
        Money::new(minor_units, "EUR")
    }

    #[test]
    fn decimal_text_parses_exactly_into_minor_units() {
        let cases: &[(&str, u8, Result<i64, AmountError>)] = &[
            ("0.30", 2, Ok(30)),
            ("0.3", 2, Ok(30)),
            ("5", 2, Ok(500)),
            ("1234.56", 2, Ok(123_456)),
            ("-1.5", 2, Ok(-150)),
            ("100", 0, Ok(100)),
            ("1.234", 3, Ok(1234)),
            ("007.10", 2, Ok(710)),
            (
                "0.305",
                2,
                Err(AmountError::ExcessPrecision { exponent: 2 }),
            ),
            (
                "0.300",
                2,
                Err(AmountError::ExcessPrecision { exponent: 2 }),
            ),
            ("1.0", 0, Err(AmountError::ExcessPrecision { exponent: 0 })),
            ("", 2, Err(AmountError::Empty)),
            ("-", 2, Err(AmountError::Malformed)),
            (".5", 2, Err(AmountError::Malformed)),
            ("5.", 2, Err(AmountError::Malformed)),
            ("1.2.3", 2, Err(AmountError::Malformed)),
            ("+1", 2, Err(AmountError::Malformed)),
            (" 1", 2, Err(AmountError::Malformed)),
            ("1e3", 2, Err(AmountError::Malformed)),
            ("1,50", 2, Err(AmountError::Malformed)),
            ("92233720368547758.07", 2, Ok(i64::MAX)),
            ("-92233720368547758.08", 2, Ok(i64::MIN)),
            ("92233720368547758.08", 2, Err(AmountError::Overflow)),
            ("1", 19, Err(AmountError::BadExponent)),
        ];
        for (text, exponent, expected) in cases {
            assert_eq!(
                parse_minor_units(text, *exponent),
                *expected,
                "{text:?} at exponent {exponent}"
            );
        }
    }

    #[test]
    fn percentages_parse_exactly_into_basis_points() {
        assert_eq!(parse_percent_bps("2.9%"), Ok(290));
        assert_eq!(parse_percent_bps("12.50%"), Ok(1250));
        assert_eq!(parse_percent_bps("-1%"), Ok(-100));
        assert_eq!(parse_percent_bps("100%"), Ok(10_000));
        assert_eq!(
            parse_percent_bps("8.125%"),
            Err(AmountError::ExcessPrecision { exponent: 2 })
        );
        assert_eq!(parse_percent_bps("10"), Err(AmountError::Malformed));
        assert_eq!(parse_percent_bps("%"), Err(AmountError::Empty));
    }

    #[test]
    fn basis_points_round_as_asked() {
        // 2.9 % of 10.05 EUR is 29.145 cents.
        let amount = eur(1005);
        assert_eq!(amount.percent_bps(290, Rounding::HalfUp), Ok(eur(29)));
        assert_eq!(amount.percent_bps(290, Rounding::Down), Ok(eur(29)));
        assert_eq!(amount.percent_bps(290, Rounding::Up), Ok(eur(30)));
        // 1 % of 0.50 EUR is exactly half a cent.
        assert_eq!(eur(50).percent_bps(100, Rounding::HalfUp), Ok(eur(1)));
        assert_eq!(eur(50).percent_bps(100, Rounding::Down), Ok(eur(0)));
        // Negative amounts mirror positive ones.
        assert_eq!(eur(-50).percent_bps(100, Rounding::HalfUp), Ok(eur(-1)));
        assert_eq!(eur(-1005).percent_bps(290, Rounding::Up), Ok(eur(-30)));
        // Whole results are not nudged by any rounding.
        assert_eq!(eur(10_000).percent_bps(250, Rounding::Up), Ok(eur(250)));
        assert_eq!(eur(1234).percent_bps(0, Rounding::Up), Ok(eur(0)));
    }

    #[test]
    fn percentages_do_not_overflow_before_the_result_does() {
        assert_eq!(
            eur(i64::MAX).percent_bps(BPS_PER_WHOLE, Rounding::Down),
            Ok(eur(i64::MAX))
        );
        assert_eq!(
            eur(i64::MAX).percent_bps(20_000, Rounding::Down),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            eur(i64::MIN).percent_bps(BPS_PER_WHOLE, Rounding::HalfUp),
            Ok(eur(i64::MIN))
        );
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_and_overflow() {
        assert_eq!(eur(100).checked_add(&eur(30)), Ok(eur(130)));
        assert_eq!(eur(100).checked_sub(&eur(130)), Ok(eur(-30)));
        assert_eq!(eur(100).min(&eur(30)), Ok(eur(30)));
        assert_eq!(eur(100).max(&eur(30)), Ok(eur(100)));
        assert_eq!(eur(30).checked_mul(3), Ok(eur(90)));
        assert_eq!(
            eur(1).checked_add(&Money::new(1, "USD")),
            Err(MoneyError::CurrencyMismatch {
                left: "EUR".into(),
                right: "USD".into()
            })
        );
        assert_eq!(
            eur(i64::MAX).checked_add(&eur(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            eur(i64::MIN).checked_sub(&eur(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(eur(i64::MAX).checked_mul(2), Err(MoneyError::Overflow));
    }

    #[test]
    fn amounts_display_in_major_units() {
        assert_eq!(eur(1250).display(2).to_string(), "12.50 EUR");
        assert_eq!(eur(-5).display(2).to_string(), "-0.05 EUR");
        assert_eq!(Money::new(500, "JPY").display(0).to_string(), "500 JPY");
        assert_eq!(Money::new(1001, "KWD").display(3).to_string(), "1.001 KWD");
        assert_eq!(
            eur(i64::MIN).display(2).to_string(),
            "-92233720368547758.08 EUR"
        );
    }
}
