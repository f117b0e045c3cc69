//! The questions a plugin may ask the host, typed.
//!
//! The WIT gives a plugin three imports: `config-get` (the merchant's
//! configuration, as text), `payer-activity` and `log`. [`Host`] is those
//! three as a trait, plus typed readers for configuration values built on
//! `config-get`, so that every plugin parses configuration the same strict
//! way and reports a bad value by its key.
//!
//! In the component the host is [`WasmHost`], the real imports. In native
//! unit tests it is [`crate::testing::FakeHost`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::bindings::wasmpay::plugin::host as imports;
use crate::money::{AmountError, BPS_PER_WHOLE, parse_percent_bps};
use crate::{Activity, Decline, LogLevel, Money};

/// The read-only host a plugin runs against.
///
/// Implement the three required methods to fake a host; the rest are built
/// on them.
pub trait Host {
    /// The merchant's configuration value for `key`, if set.
    fn config_get(&self, key: &str) -> Option<String>;

    /// The payer's approved payments with this merchant in `currency` during
    /// the `window_seconds` before the request was received.
    fn payer_activity(&self, window_seconds: u32, currency: &str) -> Activity;

    /// Writes a line to the merchant's plugin log. The host bounds the bytes
    /// it keeps per call.
    fn log(&self, level: LogLevel, message: &str);

    /// A whole number such as `config_u32("velocity_count_max")`: ASCII
    /// digits only (surrounding spaces are ignored), at most `u32::MAX`.
    fn config_u32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.config_get(key)
            .map(|text| parse_u32(text.trim()).map_err(|problem| ConfigError::new(key, problem)))
            .transpose()
    }

    /// A percentage in basis points (`290` is 2.90 %), at most 10 000.
    fn config_bps(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.config_u32(key)? {
            Some(bps) if bps > BPS_PER_WHOLE => Err(ConfigError::new(
                key,
                ConfigProblem::OutOfRange {
                    max: u64::from(BPS_PER_WHOLE),
                },
            )),
            bps => Ok(bps),
        }
    }

    /// A percentage written as text with a `%` sign and up to two decimals
    /// (`"8.25%"`), as basis points (825), from 0 to 100 %.
    fn config_percent(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        let Some(text) = self.config_get(key) else {
            return Ok(None);
        };
        let bps = parse_percent_bps(text.trim())
            .map_err(|error| ConfigError::new(key, ConfigProblem::Amount(error)))?;
        u32::try_from(bps)
            .ok()
            .filter(|bps| *bps <= BPS_PER_WHOLE)
            .map(Some)
            .ok_or_else(|| {
                ConfigError::new(
                    key,
                    ConfigProblem::OutOfRange {
                        max: u64::from(BPS_PER_WHOLE),
                    },
                )
            })
    }

    /// A non-negative amount written in major units (`"0.30"`), in
    /// `currency` with `exponent` fraction digits. Excess precision is an
    /// error, never a rounding; see [`Money::parse`].
    fn config_money(
        &self,
        key: &str,
        currency: &str,
        exponent: u8,
    ) -> Result<Option<Money>, ConfigError> {
        let Some(text) = self.config_get(key) else {
            return Ok(None);
        };
        let money = Money::parse(text.trim(), currency, exponent)
            .map_err(|error| ConfigError::new(key, ConfigProblem::Amount(error)))?;
        if money.is_negative() {
            return Err(ConfigError::new(key, ConfigProblem::Negative));
        }
        Ok(Some(money))
    }

    /// A comma-separated list, each item trimmed, empty items dropped; an
    /// unset key is an empty list.
    fn config_list(&self, key: &str) -> Vec<String> {
        self.config_get(key)
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A comma-separated list of whole numbers (`"3600, 86400"`); an unset
    /// key is an empty list.
    fn config_u32_list(&self, key: &str) -> Result<Vec<u32>, ConfigError> {
        self.config_list(key)
            .iter()
            .map(|item| parse_u32(item).map_err(|problem| ConfigError::new(key, problem)))
            .collect()
    }

    /// Logs at debug level.
    fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message);
    }

    /// Logs at info level.
    fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at warn level.
    fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at error level.
    fn error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }
}

/// The real host: the component's `wasmpay:plugin/host` imports.
///
/// Only meaningful inside the component; natively its methods panic, so
/// unit tests use [`crate::testing::FakeHost`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmHost;

impl Host for WasmHost {
    fn config_get(&self, key: &str) -> Option<String> {
        imports::config_get(key)
    }

    fn payer_activity(&self, window_seconds: u32, currency: &str) -> Activity {
        imports::payer_activity(window_seconds, currency)
    }

    fn log(&self, level: LogLevel, message: &str) {
        imports::log(level, message);
    }
}

/// A configuration value that is missing or does not mean what its key
/// needs. Converts into a [`Decline`] coded `plugin_config_invalid` that
/// names the key, so the merchant sees which setting to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration key.
    pub key: String,
    /// What is wrong with its value.
    pub problem: ConfigProblem,
}

/// What is wrong with a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigProblem {
    /// The plugin needs the key and it is not set.
    Missing,
    /// Not a whole number written in ASCII digits.
    NotAnInteger,
    /// A number above the most the key allows.
    OutOfRange {
        /// The largest allowed value.
        max: u64,
    },
    /// Not an amount of the currency.
    Amount(AmountError),
    /// An amount below zero where only zero or more makes sense.
    Negative,
    /// Not one of the words the key accepts.
    NotOneOf(&'static [&'static str]),
    /// Not of the form the key needs, described for people.
    Malformed(&'static str),
}

impl ConfigError {
    /// The value of `key` has `problem`.
    pub fn new(key: &str, problem: ConfigProblem) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            problem,
        }
    }

    /// The plugin needs `key` and it is not set.
    pub fn missing(key: &str) -> ConfigError {
        ConfigError::new(key, ConfigProblem::Missing)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match self.problem {
            ConfigProblem::Missing => write!(f, "config {key} is not set"),
            ConfigProblem::NotAnInteger => write!(f, "config {key}: not a whole number"),
            ConfigProblem::OutOfRange { max } => write!(f, "config {key}: above {max}"),
            ConfigProblem::Amount(error) => write!(f, "config {key}: {error}"),
            ConfigProblem::Negative => write!(f, "config {key}: negative amount"),
            ConfigProblem::NotOneOf(words) => {
                write!(f, "config {key}: not one of {}", words.join(", "))
            }
            ConfigProblem::Malformed(expected) => write!(f, "config {key}: expected {expected}"),
        }
    }
}

fn parse_u32(text: &str) -> Result<u32, ConfigProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigProblem::NotAnInteger);
    }
    text.parse().map_err(|_| ConfigProblem::OutOfRange {
        max: u64::from(u32::MAX),
    })
}

impl From<ConfigError> for Decline {
    fn from(error: ConfigError) -> Decline {
        Decline::new("plugin_config_invalid", error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use alloc::vec;

    #[test]
    fn typed_config_values_parse_strictly_and_name_their_key() {
        let host = FakeHost::new()
            .with_config("count", " 12 ")
            .with_config("huge", "4294967296")
            .with_config("signed", "+3")
            .with_config("bps", "10001")
            .with_config("fixed", "0.30")
            .with_config("precise", "0.305")
            .with_config("negative", "-1")
            .with_config("list", "alice, bob,,carol ")
            .with_config("windows", "3600, 86400")
            .with_config("bad_windows", "3600, soon")
            .with_config("rate", "8.25%")
            .with_config("rate_too_high", "100.01%")
            .with_config("rate_without_sign", "8");

        assert_eq!(host.config_u32("count"), Ok(Some(12)));
        assert_eq!(host.config_u32("unset"), Ok(None));
        assert_eq!(
            host.config_u32("huge"),
            Err(ConfigError::new(
                "huge",
                ConfigProblem::OutOfRange {
                    max: u64::from(u32::MAX)
                }
            ))
        );
        assert_eq!(
            host.config_u32("signed"),
            Err(ConfigError::new("signed", ConfigProblem::NotAnInteger))
        );
        assert_eq!(
            host.config_bps("bps"),
            Err(ConfigError::new(
                "bps",
                ConfigProblem::OutOfRange { max: 10_000 }
            ))
        );
        assert_eq!(
            host.config_money("fixed", "EUR", 2),
            Ok(Some(Money::new(30, "EUR")))
        );
        assert_eq!(
            host.config_money("precise", "EUR", 2),
            Err(ConfigError::new(
                "precise",
                ConfigProblem::Amount(AmountError::ExcessPrecision { exponent: 2 })
            ))
        );
        assert_eq!(
            host.config_money("negative", "EUR", 2),
            Err(ConfigError::new("negative", ConfigProblem::Negative))
        );
        assert_eq!(host.config_list("list"), vec!["alice", "bob", "carol"]);
        assert!(host.config_list("unset").is_empty());
        assert_eq!(host.config_u32_list("windows"), Ok(vec![3600, 86400]));
        assert_eq!(
            host.config_u32_list("bad_windows"),
            Err(ConfigError::new("bad_windows", ConfigProblem::NotAnInteger))
        );
        assert_eq!(host.config_percent("rate"), Ok(Some(825)));
        assert_eq!(
            host.config_percent("rate_too_high"),
            Err(ConfigError::new(
                "rate_too_high",
                ConfigProblem::OutOfRange { max: 10_000 }
            ))
        );
        assert_eq!(
            host.config_percent("rate_without_sign"),
            Err(ConfigError::new(
                "rate_without_sign",
                ConfigProblem::Amount(AmountError::Malformed)
            ))
        );
    }

    #[test]
    fn a_config_error_declines_naming_the_key() {
        let decline = Decline::from(ConfigError::new(
            "fee_fixed.EUR",
            ConfigProblem::Amount(AmountError::ExcessPrecision { exponent: 2 }),
        ));
        assert_eq!(decline.code, "plugin_config_invalid");
        assert_eq!(
            decline.message,
            "config fee_fixed.EUR: more than 2 digits after the decimal point"
        );
    }
}
