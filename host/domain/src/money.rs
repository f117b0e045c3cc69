//! Exact money: ISO 4217 currencies and integer minor units.
//!
//! Every amount in wasmpay is a count of the currency's minor units in an
//! `i64` (cents for EUR, yen for JPY, fils for KWD). Decimal strings and
//! `rust_decimal::Decimal` appear only at the edges, and converting one into
//! [`Money`] refuses anything the currency cannot represent exactly: an amount
//! with more decimals than the currency has is an error, never a rounding.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an ISO 4217 code, or a code with no minor unit (gold, testing codes).
    #[error("unknown currency `{0}`: expected an ISO 4217 code with a minor unit, like EUR or JPY")]
    UnknownCurrency(String),
    /// Not a plain decimal number.
    #[error("invalid amount `{0}`: expected a decimal string like \"12.50\"")]
    InvalidAmount(String),
    /// More decimal places than the currency has.
    #[error("amount `{amount}` has more decimals than {currency} allows ({exponent})")]
    ExcessPrecision {
        amount: String,
        currency: Currency,
        exponent: u32,
    },
    /// Outside the range of `i64` minor units.
    #[error("amount overflows the representable range for {currency}")]
    Overflow { currency: Currency },
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: expected {expected}, found {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    /// Zero or negative where only a positive amount makes sense.
    #[error("amount must be positive, got {0}")]
    NotPositive(Money),
}

/// An ISO 4217 currency that has a minor unit.
///
/// Wraps `iso_currency`'s table, which carries every active code with its
/// exponent (JPY 0, EUR 2, KWD 3, CLF 4). Codes without a minor unit (XAU,
/// XXX, ...) are refused: they are not money that a ledger can count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses a three-letter upper-case code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(code.to_owned());
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let currency = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        if currency.exponent().is_none() {
            return Err(unknown());
        }
        Ok(Self(currency))
    }

    /// The three-letter code, e.g. `"EUR"`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// How many decimal places the minor unit has (2 for EUR, 0 for JPY).
    pub fn exponent(self) -> u32 {
        // `parse` only admits codes with an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An exact amount: integer minor units of one currency.
///
/// Arithmetic is checked and refuses to mix currencies. Negative values exist
/// (balances, postings); operations that need a positive amount say so with
/// [`Money::positive`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// The most significant digits (leading zeros aside) a whole part may have:
/// `i64` has 19 digits, so anything longer overflows anyway.
const DIGITS_MAX: usize = 19;

impl Money {
    /// An amount of `minor` minor units.
    pub const fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    /// Parses a plain decimal string (`"12.50"`, `"-3"`, `"0.125"`): an
    /// optional `-`, digits, and optionally `.` and digits. No exponent, no
    /// `+`, no spaces, no thousands separators. Refuses more decimals than the
    /// currency has.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let invalid = || MoneyError::InvalidAmount(text.to_owned());
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
            return Err(invalid());
        }
        let exponent = currency.exponent();
        let fraction = fraction.unwrap_or("");
        if fraction.len() > exponent as usize {
            return Err(MoneyError::ExcessPrecision {
                amount: text.to_owned(),
                currency,
                exponent,
            });
        }
        // Leading zeros carry no value; more significant digits than i64
        // holds is an overflow, whatever the written length.
        let significant = whole.trim_start_matches('0');
        if significant.len() > DIGITS_MAX {
            return Err(MoneyError::Overflow { currency });
        }
        let sign = if unsigned.len() < text.len() { "-" } else { "" };
        let whole = if significant.is_empty() {
            "0"
        } else {
            significant
        };
        let normalized = if fraction.is_empty() {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{fraction}")
        };
        let decimal = Decimal::from_str_exact(&normalized).map_err(|_| invalid())?;
        Self::from_decimal(decimal, currency)
    }

    /// Converts an exact decimal. Refuses a value that is not a whole number
    /// of minor units, whatever its written scale.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent();
        let scaled = amount
            .checked_mul(Decimal::from(10_i64.pow(exponent)))
            .ok_or(MoneyError::Overflow { currency })?;
        if !scaled.fract().is_zero() {
            return Err(MoneyError::ExcessPrecision {
                amount: amount.to_string(),
                currency,
                exponent,
            });
        }
        let minor = i64::try_from(scaled.trunc()).map_err(|_| MoneyError::Overflow { currency })?;
        Ok(Self { minor, currency })
    }

    /// The amount as an exact decimal with the currency's scale.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// Minor units.
    pub const fn minor(self) -> i64 {
        self.minor
    }

    pub const fn currency(self) -> Currency {
        self.currency
    }

    pub const fn is_zero(self) -> bool {
        self.minor == 0
    }

    pub const fn is_negative(self) -> bool {
        self.minor < 0
    }

    /// `self` if it is greater than zero.
    pub fn positive(self) -> Result<Self, MoneyError> {
        if self.minor > 0 {
            Ok(self)
        } else {
            Err(MoneyError::NotPositive(self))
        }
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                expected: self.currency,
                found: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow {
                currency: self.currency,
            })?;
        Ok(Self { minor, ..self })
    }

    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow {
                currency: self.currency,
            })?;
        Ok(Self { minor, ..self })
    }

    pub fn checked_neg(self) -> Result<Self, MoneyError> {
        let minor = self.minor.checked_neg().ok_or(MoneyError::Overflow {
            currency: self.currency,
        })?;
        Ok(Self { minor, ..self })
    }

    /// The sum of `amounts`, all in `currency`.
    pub fn sum<'a>(
        currency: Currency,
        amounts: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Self, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Self::zero(currency), |acc, m| acc.checked_add(*m))
    }

    /// The amount as a decimal string with exactly the currency's decimals
    /// (`"12.50"`, `"1000"`, `"0.125"`): the form every reply uses.
    pub fn amount_string(self) -> String {
        self.to_decimal().to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn exponents_follow_iso_4217() {
        for (code, exponent) in [("JPY", 0), ("EUR", 2), ("USD", 2), ("KWD", 3), ("CLF", 4)] {
            assert_eq!(cur(code).exponent(), exponent, "{code}");
        }
    }

    #[test]
    fn codes_without_minor_unit_or_malformed_are_refused() {
        for code in ["XAU", "XXX", "eur", "EU", "EURO", "ZZZ", ""] {
            assert!(
                matches!(Currency::parse(code), Err(MoneyError::UnknownCurrency(_))),
                "{code}"
            );
        }
    }

    #[test]
    fn parse_accepts_exact_amounts() {
        let check = |text: &str, code: &str, minor: i64| {
            assert_eq!(
                Money::parse(text, cur(code)).unwrap().minor(),
                minor,
                "{text} {code}"
            );
        };
        check("12.50", "EUR", 1250);
        check("12.5", "EUR", 1250);
        check("12", "EUR", 1200);
        check("-0.01", "EUR", -1);
        check("1000", "JPY", 1000);
        check("0.125", "KWD", 125);
        check("1.0001", "CLF", 10001);
        // Leading zeros carry no value and are no overflow.
        check("00000000000000000001", "EUR", 100);
        check("00000000058112091080", "CLF", 581_120_910_800_000);
        check("-000.50", "EUR", -50);
    }

    #[test]
    fn parse_refuses_excess_precision_instead_of_rounding() {
        for (text, code) in [
            ("12.501", "EUR"),
            ("1.0", "JPY"),
            ("0.0001", "KWD"),
            ("12.500", "EUR"),
        ] {
            assert!(
                matches!(
                    Money::parse(text, cur(code)),
                    Err(MoneyError::ExcessPrecision { .. })
                ),
                "{text} {code}"
            );
        }
    }

    #[test]
    fn parse_refuses_anything_but_plain_decimals() {
        for text in [
            "", "-", ".5", "5.", "+5", " 5", "5 ", "1e3", "1,000", "NaN", "0x10", "1.2.3", "١٢",
        ] {
            assert!(
                matches!(
                    Money::parse(text, cur("EUR")),
                    Err(MoneyError::InvalidAmount(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            Money::parse("92233720368547758.08", cur("EUR")),
            Err(MoneyError::Overflow { .. })
        ));
        assert!(matches!(
            Money::parse("9999999999999999999", cur("JPY")),
            Err(MoneyError::Overflow { .. })
        ));
        // Too many significant digits is an overflow, not a malformed amount.
        assert!(matches!(
            Money::parse("-92223372038654755616", cur("EUR")),
            Err(MoneyError::Overflow { .. })
        ));
        let max = Money::from_minor(i64::MAX, cur("EUR"));
        assert!(matches!(
            max.checked_add(Money::from_minor(1, cur("EUR"))),
            Err(MoneyError::Overflow { .. })
        ));
        assert!(
            Money::from_minor(i64::MIN, cur("EUR"))
                .checked_neg()
                .is_err()
        );
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let eur = Money::from_minor(1, cur("EUR"));
        let usd = Money::from_minor(1, cur("USD"));
        assert!(matches!(
            eur.checked_add(usd),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn amount_string_has_the_currency_scale() {
        assert_eq!(Money::from_minor(1250, cur("EUR")).amount_string(), "12.50");
        assert_eq!(Money::from_minor(5, cur("KWD")).amount_string(), "0.005");
        assert_eq!(Money::from_minor(-7, cur("JPY")).amount_string(), "-7");
        assert_eq!(Money::from_minor(100, cur("EUR")).to_string(), "1.00 EUR");
    }

    proptest! {
        #[test]
        fn amount_string_round_trips(minor in any::<i64>(), code in prop::sample::select(vec!["EUR", "JPY", "KWD", "CLF"])) {
            let money = Money::from_minor(minor, cur(code));
            prop_assert_eq!(Money::parse(&money.amount_string(), cur(code)).unwrap(), money);
        }
    }
}
