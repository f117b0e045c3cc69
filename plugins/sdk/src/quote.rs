//! Building answers: quote lines, splits, quotes and declines, plus small
//! readers on the requests.
//!
//! The constructors keep to the contract's text limits (free text is cut at
//! a character boundary) so that a well-meaning plugin never has its answer
//! refused for a long description. Amounts and codes are the plugin's to get
//! right; the host checks them all.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::money::MoneyError;
use crate::{Decline, LineKind, Money, PaymentRequest, Quote, QuoteLine, RefundRequest, Split};

/// The most bytes of free text (a line's description, a decline's message)
/// the contract allows.
pub const TEXT_BYTES_MAX: usize = 200;

/// The most bytes in a stable code (`[a-z0-9_.-]{1,64}`).
pub const CODE_BYTES_MAX: usize = 64;

/// Whether `code` is a valid line or decline code: 1 to 64 bytes of
/// `[a-z0-9_.-]`.
pub fn is_valid_code(code: &str) -> bool {
    (1..=CODE_BYTES_MAX).contains(&code.len())
        && code.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// `text` cut to at most `bytes_max` bytes without splitting a character.
pub fn truncate_utf8(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn bounded_text(text: &str) -> String {
    truncate_utf8(text, TEXT_BYTES_MAX).to_string()
}

impl QuoteLine {
    /// A line of `kind`, credited to the merchant's main account. The
    /// description is cut to [`TEXT_BYTES_MAX`] bytes.
    pub fn new(kind: LineKind, code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine {
            kind,
            code: code.to_string(),
            description: bounded_text(description),
            amount,
            account: None,
        }
    }

    /// A fee charged to the payer on top of the amount.
    pub fn fee(code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine::new(LineKind::Fee, code, description, amount)
    }

    /// A discount taken off the payer's total, borne by the merchant.
    pub fn discount(code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine::new(LineKind::Discount, code, description, amount)
    }

    /// A surcharge added to the payer's total.
    pub fn surcharge(code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine::new(LineKind::Surcharge, code, description, amount)
    }

    /// A tax added to the payer's total; route it with
    /// [`to_account`](QuoteLine::to_account).
    pub fn tax(code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine::new(LineKind::Tax, code, description, amount)
    }

    /// A tip added to the payer's total.
    pub fn tip(code: &str, description: &str, amount: Money) -> QuoteLine {
        QuoteLine::new(LineKind::Tip, code, description, amount)
    }

    /// The same line, its money credited to the merchant's sub-account
    /// `account` (`tax`, `tips`) instead of its main account.
    pub fn to_account(self, account: &str) -> QuoteLine {
        QuoteLine {
            account: Some(account.to_string()),
            ..self
        }
    }
}

impl Split {
    /// Routes `amount` of the merchant's proceeds to its sub-account
    /// `account`.
    pub fn new(account: &str, amount: Money) -> Split {
        Split {
            account: account.to_string(),
            amount,
        }
    }
}

impl Quote {
    /// No lines and no splits: the payer pays the amount, the merchant gets
    /// it (less the platform's fee).
    pub fn empty() -> Quote {
        Quote {
            lines: Vec::new(),
            splits: Vec::new(),
        }
    }

    /// The quote with `line` appended.
    pub fn with_line(mut self, line: QuoteLine) -> Quote {
        self.lines.push(line);
        self
    }

    /// The quote with `split` appended.
    pub fn with_split(mut self, split: Split) -> Quote {
        self.splits.push(split);
        self
    }

    /// What the payer is charged for `amount` under this quote:
    /// `amount - discounts + fees + surcharges + taxes + tips`, as the host
    /// computes it.
    pub fn payer_total(&self, amount: &Money) -> Result<Money, MoneyError> {
        self.lines
            .iter()
            .try_fold(amount.clone(), |total, line| match line.kind {
                LineKind::Discount => total.checked_sub(&line.amount),
                LineKind::Fee | LineKind::Surcharge | LineKind::Tax | LineKind::Tip => {
                    total.checked_add(&line.amount)
                }
            })
    }
}

impl Decline {
    /// A decline with a stable `code` and a message for people, cut to
    /// [`TEXT_BYTES_MAX`] bytes.
    pub fn new(code: &str, message: impl AsRef<str>) -> Decline {
        Decline {
            code: code.to_string(),
            message: bounded_text(message.as_ref()),
        }
    }
}

impl From<MoneyError> for Decline {
    fn from(error: MoneyError) -> Decline {
        Decline::new(error.code(), error.to_string())
    }
}

impl PaymentRequest {
    /// The value the payer attached under `key` in the metadata, if any.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        metadata_value(&self.metadata, key)
    }
}

impl RefundRequest {
    /// How long ago the payment was captured, in milliseconds, by the
    /// request's own clock (`received_at_ms - captured_at_ms`, never below
    /// zero).
    pub fn captured_age_ms(&self) -> i64 {
        self.received_at_ms
            .saturating_sub(self.captured_at_ms)
            .max(0)
    }
}

fn metadata_value<'a>(metadata: &'a [(String, String)], key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract_pattern() {
        assert!(is_valid_code("velocity_count_exceeded"));
        assert!(is_valid_code("fee.v2-eu"));
        assert!(!is_valid_code(""));
        assert!(!is_valid_code("Fee"));
        assert!(!is_valid_code("fee fee"));
        assert!(!is_valid_code(&"a".repeat(65)));
        assert!(is_valid_code(&"a".repeat(64)));
    }

    #[test]
    fn free_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("short", 200), "short");
        // "é" is two bytes: a limit in its middle keeps the character out.
        assert_eq!(truncate_utf8("aé", 2), "a");
        let long = "€".repeat(100);
        let decline = Decline::new("too_long", &long);
        assert_eq!(decline.message.len(), 198);
    }

    #[test]
    fn payer_total_adds_charges_and_subtracts_discounts() {
        let eur = |minor| Money::new(minor, "EUR");
        let quote = Quote::empty()
            .with_line(QuoteLine::fee("fee", "Fee", eur(30)))
            .with_line(QuoteLine::discount("coupon", "Coupon", eur(100)))
            .with_line(QuoteLine::tax("vat", "VAT", eur(190)).to_account("tax"))
            .with_split(Split::new("partner", eur(50)));
        assert_eq!(quote.payer_total(&eur(1000)), Ok(eur(1120)));
        assert_eq!(quote.lines[2].account.as_deref(), Some("tax"));
    }
}
