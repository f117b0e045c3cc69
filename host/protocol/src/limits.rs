//! Bounds on everything a client controls.
//!
//! Every size, count and range that arrives from the outside has a named
//! default here, with its unit last in the name, and a field in
//! [`DecodeLimits`], which the daemon's config embeds (`[protocol]` in the
//! TOML). A payload that breaks a bound is refused with `payload_too_large`
//! or `limit_exceeded` and a message that names the bound.

use serde::{Deserialize, Serialize};

/// Largest request payload, in bytes. A payment with a full memo and full
/// metadata is about 5 KiB, so this leaves room without inviting abuse.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// Largest plugin component, in bytes. A Rust guest is about 100 KiB; this
/// leaves room for larger ones while bounding what the host compiles.
pub const UPLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest payment memo, in bytes of UTF-8.
pub const MEMO_BYTES_MAX: usize = 256;
/// Longest refund or void reason, in bytes of UTF-8.
pub const REASON_BYTES_MAX: usize = 256;
/// Most metadata entries on one payment: each goes to the merchant's plugin.
pub const METADATA_ENTRIES_MAX: usize = 16;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_BYTES_MAX: usize = 64;
/// Longest metadata value, in bytes of UTF-8.
pub const METADATA_VALUE_BYTES_MAX: usize = 256;
/// Most configuration entries on one plugin upload.
pub const CONFIG_ENTRIES_MAX: usize = 64;
/// Longest plugin configuration key, in bytes.
pub const CONFIG_KEY_BYTES_MAX: usize = 64;
/// Longest plugin configuration value, in bytes of UTF-8.
pub const CONFIG_VALUE_BYTES_MAX: usize = 1024;
/// History entries per page when the request names no `limit`.
pub const HISTORY_LIMIT_DEFAULT: u32 = 50;
/// Most history entries per page: one reply must stay a reasonable size.
pub const HISTORY_LIMIT_MAX: u32 = 500;
/// How long a hold lasts when the request names no `expires_in_s`: a day
/// keeps a payer's money locked no longer than a usual checkout needs.
pub const HOLD_EXPIRES_IN_S_DEFAULT: u32 = 24 * 60 * 60;
/// The longest hold, in seconds: seven days, like a card authorization.
pub const HOLD_EXPIRES_IN_S_MAX: u32 = 7 * 24 * 60 * 60;

/// The limits [`crate::decode`] applies. Every field defaults to the
/// constant of the same name, so a config file names only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest request payload, in bytes (uploads excepted).
    pub payload_bytes_max: usize,
    /// Largest plugin component, in bytes. A JSON upload may be larger by
    /// the base64 overhead (see [`DecodeLimits::upload_payload_bytes_max`]).
    pub upload_bytes_max: usize,
    /// See [`MEMO_BYTES_MAX`].
    pub memo_bytes_max: usize,
    /// See [`REASON_BYTES_MAX`].
    pub reason_bytes_max: usize,
    /// See [`METADATA_ENTRIES_MAX`].
    pub metadata_entries_max: usize,
    /// See [`METADATA_KEY_BYTES_MAX`].
    pub metadata_key_bytes_max: usize,
    /// See [`METADATA_VALUE_BYTES_MAX`].
    pub metadata_value_bytes_max: usize,
    /// See [`CONFIG_ENTRIES_MAX`].
    pub config_entries_max: usize,
    /// See [`CONFIG_KEY_BYTES_MAX`].
    pub config_key_bytes_max: usize,
    /// See [`CONFIG_VALUE_BYTES_MAX`].
    pub config_value_bytes_max: usize,
    /// See [`HISTORY_LIMIT_DEFAULT`].
    pub history_limit_default: u32,
    /// See [`HISTORY_LIMIT_MAX`].
    pub history_limit_max: u32,
    /// See [`HOLD_EXPIRES_IN_S_DEFAULT`].
    pub hold_expires_in_s_default: u32,
    /// See [`HOLD_EXPIRES_IN_S_MAX`].
    pub hold_expires_in_s_max: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            payload_bytes_max: PAYLOAD_BYTES_MAX,
            upload_bytes_max: UPLOAD_BYTES_MAX,
            memo_bytes_max: MEMO_BYTES_MAX,
            reason_bytes_max: REASON_BYTES_MAX,
            metadata_entries_max: METADATA_ENTRIES_MAX,
            metadata_key_bytes_max: METADATA_KEY_BYTES_MAX,
            metadata_value_bytes_max: METADATA_VALUE_BYTES_MAX,
            config_entries_max: CONFIG_ENTRIES_MAX,
            config_key_bytes_max: CONFIG_KEY_BYTES_MAX,
            config_value_bytes_max: CONFIG_VALUE_BYTES_MAX,
            history_limit_default: HISTORY_LIMIT_DEFAULT,
            history_limit_max: HISTORY_LIMIT_MAX,
            hold_expires_in_s_default: HOLD_EXPIRES_IN_S_DEFAULT,
            hold_expires_in_s_max: HOLD_EXPIRES_IN_S_MAX,
        }
    }
}

impl DecodeLimits {
    /// Largest payload accepted on the upload topic: a JSON body carries the
    /// component in base64 (4 bytes per 3) beside an ordinary request's worth
    /// of configuration.
    pub fn upload_payload_bytes_max(&self) -> usize {
        self.upload_bytes_max
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(self.payload_bytes_max)
    }

    /// Every inconsistency in these limits at once, so an operator fixes a
    /// config file in one go. Empty when the limits make sense.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: u64| {
            if value == 0 {
                problems.push(format!("`{name}` must be at least 1"));
            }
        };
        for (name, value) in [
            ("payload_bytes_max", self.payload_bytes_max),
            ("upload_bytes_max", self.upload_bytes_max),
            ("metadata_key_bytes_max", self.metadata_key_bytes_max),
            ("config_key_bytes_max", self.config_key_bytes_max),
        ] {
            positive(name, value as u64);
        }
        for (name, value) in [
            ("history_limit_default", self.history_limit_default),
            ("hold_expires_in_s_default", self.hold_expires_in_s_default),
        ] {
            positive(name, u64::from(value));
        }
        if self.history_limit_default > self.history_limit_max {
            problems.push(format!(
                "`history_limit_default` ({}) exceeds `history_limit_max` ({})",
                self.history_limit_default, self.history_limit_max
            ));
        }
        if self.hold_expires_in_s_default > self.hold_expires_in_s_max {
            problems.push(format!(
                "`hold_expires_in_s_default` ({}) exceeds `hold_expires_in_s_max` ({})",
                self.hold_expires_in_s_default, self.hold_expires_in_s_max
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        assert_eq!(DecodeLimits::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn a_config_names_only_what_it_changes() {
        let limits: DecodeLimits = serde_json::from_str(r#"{"memo_bytes_max": 10}"#).unwrap();
        assert_eq!(limits.memo_bytes_max, 10);
        assert_eq!(limits.payload_bytes_max, PAYLOAD_BYTES_MAX);
        assert!(serde_json::from_str::<DecodeLimits>(r#"{"memo_max": 10}"#).is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let limits = DecodeLimits {
            payload_bytes_max: 0,
            history_limit_default: 10,
            history_limit_max: 5,
            hold_expires_in_s_default: 10,
            hold_expires_in_s_max: 5,
            ..DecodeLimits::default()
        };
        assert_eq!(limits.problems().len(), 3, "{:?}", limits.problems());
    }
}
