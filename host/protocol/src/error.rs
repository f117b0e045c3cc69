//! The catalogue of error codes and the refusal that `decode` returns.
//!
//! Codes are part of the protocol: clients branch on them, so a code, once
//! published, keeps its spelling and meaning. The first group is produced by
//! this crate while decoding; the rest by the pipeline from ledger and plugin
//! outcomes. `docs/PROTOCOL.md` lists every one (a test keeps it honest).

use std::fmt;

use crate::topic::Principal;

macro_rules! error_codes {
    ($($(#[$doc:meta])+ $variant:ident => $code:literal,)+) => {
        /// A stable, machine-readable error code; `as_str` is its wire form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[$doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The snake_case wire form, e.g. `"invalid_amount"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The code with this wire form, if it is in the catalogue.
            pub fn parse(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // Produced while decoding a request.
    /// The payload is larger than `payload_bytes_max` (`upload_bytes_max` for uploads).
    PayloadTooLarge => "payload_too_large",
    /// The payload is not UTF-8 (and not a binary component upload).
    InvalidUtf8 => "invalid_utf8",
    /// The payload is not well-formed JSON.
    InvalidJson => "invalid_json",
    /// The payload has a field this request does not define.
    UnknownField => "unknown_field",
    /// A required field is absent.
    MissingField => "missing_field",
    /// A field appears twice in one object.
    DuplicateField => "duplicate_field",
    /// A field has the wrong JSON type (a number where a string belongs, ...).
    WrongType => "wrong_type",
    /// A field has the right type but breaks its rule (a negative count, a zero version, a bad key).
    InvalidValue => "invalid_value",
    /// The topic is not a wasmpay request topic.
    UnknownTopic => "unknown_topic",
    /// An id in the topic or payload breaks the id rule (1-64 of `A-Za-z0-9_.-`).
    InvalidId => "invalid_id",
    /// An amount is not a plain decimal string like `"12.50"`.
    InvalidAmount => "invalid_amount",
    /// An amount has more decimals than its currency (`"12.501"` EUR).
    ExcessPrecision => "excess_precision",
    /// The currency is not an ISO 4217 code with a minor unit.
    UnknownCurrency => "unknown_currency",
    /// An amount that must be positive is zero or negative.
    AmountNotPositive => "amount_not_positive",
    /// An amount does not fit in 64-bit minor units.
    AmountOverflow => "amount_overflow",
    /// The payload names a principal other than the one its topic names.
    IdentityMismatch => "identity_mismatch",
    /// A size, count or range bound is exceeded (memo bytes, metadata entries, history limit, ...).
    LimitExceeded => "limit_exceeded",
    /// A plugin upload is not a WebAssembly component (bad base64, a core module, ...).
    InvalidUpload => "invalid_upload",

    // Produced by the pipeline, mostly forwarded from the ledger's refusals
    // (`wasmpay_ledger::Refusal::code`), whose spelling these match.
    /// The request id was used before with different parameters; `detail.differing` names them.
    Conflict => "conflict",
    /// The principal may not perform this operation.
    Forbidden => "forbidden",
    /// No account exists for this owner and currency.
    AccountNotFound => "account_not_found",
    /// The account to open exists already.
    AccountExists => "account_exists",
    /// Platform, world and merchant sub-accounts open on demand, not by request.
    AccountNotOpenable => "account_not_openable",
    /// The payer's available balance (with overdraft, less holds) does not cover the total.
    InsufficientFunds => "insufficient_funds",
    /// The amount's currency differs from the account's or the payment's.
    CurrencyMismatch => "currency_mismatch",
    /// The merchant's quote could not be turned into balanced postings.
    InvalidSettlement => "invalid_settlement",
    /// A hold's expiry is not after the time of the request.
    InvalidExpiry => "invalid_expiry",
    /// The merchant has as many sub-accounts as allowed; a split named another.
    SubaccountLimit => "subaccount_limit",
    /// A payment with this id exists already.
    PaymentExists => "payment_exists",
    /// No payment or hold with this id belongs to the merchant.
    PaymentNotFound => "payment_not_found",
    /// The merchant's rules declined the payment; `detail.decline` has the plugin's own code and message.
    PaymentDeclined => "payment_declined",
    /// Capture and void need a hold; this payment was immediate.
    NotAHold => "not_a_hold",
    /// The hold expired before it was captured; its money is released.
    HoldExpired => "hold_expired",
    /// The hold was captured already.
    AlreadyCaptured => "already_captured",
    /// The hold was voided already.
    AlreadyVoided => "already_voided",
    /// The capture amount exceeds the authorized amount.
    CaptureExceedsAuthorized => "capture_exceeds_authorized",
    /// A refund names a hold that has not been captured (void it instead).
    PaymentNotCaptured => "payment_not_captured",
    /// The refund would return more than was captured and not yet refunded.
    RefundExceedsCaptured => "refund_exceeds_captured",
    /// The merchant's refund rules asked for a fee outside zero to the refund amount.
    InvalidRefundFee => "invalid_refund_fee",
    /// The merchant's refund rules denied the refund; `detail.decline` says why.
    RefundDenied => "refund_denied",
    /// A total or balance would not fit in 64-bit minor units.
    Overflow => "overflow",
    /// The uploaded component does not implement the plugin world or breaks a plugin limit.
    PluginInvalid => "plugin_invalid",
    /// No plugin version with this number exists for the merchant, or none to roll back to.
    PluginNotFound => "plugin_not_found",
    /// A bug or an unexpected failure in the host; nothing was applied, retry with the same id.
    InternalError => "internal_error",
    /// The host cannot serve the request now (shutting down, overloaded); retry with the same id.
    Unavailable => "unavailable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `decode` refused a message, with what is needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    /// For people: says what is wrong and what to send instead.
    pub message: String,
    /// The request id, if one could be read and is valid, so that a client
    /// without MQTT 5 correlation data can match the error to its request.
    pub id: Option<String>,
    /// Whom to answer, if the topic named a valid principal. `None` means
    /// nobody can be answered: the message goes to the dead-letter topic.
    pub reply_to: Option<Principal>,
}

impl Rejection {
    /// A refusal not yet tied to a request id or a principal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            reply_to: None,
        }
    }

    /// The error reply for this refusal (see [`crate::encode_error`]).
    pub fn reply_payload(&self) -> Vec<u8> {
        crate::reply::encode_error(self.id.as_deref(), self.code.as_str(), &self.message, None)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The longest client value (an id, a key, an amount) quoted back in an
/// error message, in bytes: enough to recognise it, too little to echo a
/// payload back.
pub(crate) const SHOWN_BYTES_MAX: usize = 64;

/// `text` cut to at most `bytes_max` bytes on a character boundary and
/// escaped, so that it is safe to put in a message or a log line.
pub(crate) fn shown(text: &str, bytes_max: usize) -> String {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() { "..." } else { "" };
    format!("{}{cut}", text[..end].escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for &code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{text}"
            );
            assert_eq!(ErrorCode::parse(text), Some(code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn shown_text_is_cut_on_a_character_boundary_and_escaped() {
        assert_eq!(shown("\u{e9}\u{e9}", 3), "\u{e9}...");
        assert_eq!(shown("a\nb", 10), "a\\nb");
    }
}
