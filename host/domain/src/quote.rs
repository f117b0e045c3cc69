//! Quotes and decisions: what a merchant's plugin proposes, and the host's
//! check that turns a proposal into money movements or refuses it.
//!
//! A plugin's output is untrusted input. [`Quote::settle`] is the one place
//! that decides whether a proposed quote is acceptable and, if so, exactly who
//! is debited and credited. The ledger posts a [`Settlement`] as it is.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::SubAccount;
use crate::money::{Currency, Money, MoneyError};

/// The longest reason or line code, in bytes.
pub const CODE_BYTES_MAX: usize = 64;
/// The longest human text a plugin may put in a line or decline, in bytes.
pub const TEXT_BYTES_MAX: usize = 200;

/// A stable machine-readable code (`velocity_count_exceeded`,
/// `service_fee`): 1 to 64 of `a-z`, `0-9`, `_`, `.`, `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Code(String);

/// A code or text that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("invalid code `{0}`: expected 1 to {CODE_BYTES_MAX} of a-z, 0-9, `_`, `.`, `-`")]
    Code(String),
    #[error("text of {0} bytes is longer than {TEXT_BYTES_MAX}")]
    TooLong(usize),
}

impl Code {
    pub fn new(value: impl Into<String>) -> Result<Self, TextError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= CODE_BYTES_MAX
            && value.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if ok {
            Ok(Self(value))
        } else {
            let shown: String = value.chars().take(CODE_BYTES_MAX).collect();
            Err(TextError::Code(shown.escape_debug().to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Code {
    type Error = TextError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Code> for String {
    fn from(value: Code) -> Self {
        value.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({:?})", self.0)
    }
}

/// Checks a plugin-supplied human text against [`TEXT_BYTES_MAX`].
pub fn check_text(text: &str) -> Result<(), TextError> {
    if text.len() > TEXT_BYTES_MAX {
        Err(TextError::TooLong(text.len()))
    } else {
        Ok(())
    }
}

/// What a quote line does to the payer's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Fee,
    Discount,
    Surcharge,
    Tax,
    Tip,
}

impl LineKind {
    /// Whether the line adds to the payer's total (everything but discounts).
    pub fn adds(self) -> bool {
        !matches!(self, Self::Discount)
    }
}

/// One line of a quote: a non-negative amount that adds to or subtracts from
/// the payer's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLine {
    pub kind: LineKind,
    pub code: Code,
    pub description: String,
    pub amount: Money,
    /// The merchant's own account credited with this line's money.
    pub account: SubAccount,
}

/// Part of the merchant's proceeds routed to one of its sub-accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub account: SubAccount,
    pub amount: Money,
}

/// A plugin's proposal for one payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub lines: Vec<QuoteLine>,
    pub splits: Vec<Split>,
}

/// A plugin's refusal, or the host's on its behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    pub code: Code,
    pub message: String,
}

/// A plugin's answer for a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Decision {
    Approve { quote: Quote },
    Decline { decline: Decline },
}

/// A plugin's answer for a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RefundDecision {
    /// Allowed; `fee` is withheld from what the payer gets back.
    Allow {
        fee: Option<Money>,
    },
    Deny {
        decline: Decline,
    },
}

/// Which plugin version made a decision: recorded with every ledger entry it
/// decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PluginRef {
    /// Per-merchant version number, from 1.
    pub version: u32,
    /// Lower-case hex SHA-256 of the component's bytes.
    pub sha256: String,
}

/// Limits on the shape of a quote: plugin output is outside input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLimits {
    pub lines_max: usize,
    pub splits_max: usize,
}

impl Default for QuoteLimits {
    fn default() -> Self {
        Self {
            lines_max: 32,
            splits_max: 16,
        }
    }
}

/// The operator's cut of every payment, charged to the merchant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFee {
    /// Basis points of the payer's total (100 = 1%), rounded half up to the
    /// minor unit.
    pub bps: u32,
}

impl PlatformFee {
    pub fn of(self, total: Money) -> Result<Money, MoneyError> {
        bps_of(total, self.bps)
    }
}

/// `bps` basis points of `amount`, rounded half away from zero to the minor
/// unit. Exact: computed in `i128`.
pub fn bps_of(amount: Money, bps: u32) -> Result<Money, MoneyError> {
    let product = i128::from(amount.minor()) * i128::from(bps);
    let quotient = product / 10_000;
    let remainder = product % 10_000;
    let rounded = if remainder.abs() * 2 >= 10_000 {
        quotient + remainder.signum()
    } else {
        quotient
    };
    let minor = i64::try_from(rounded).map_err(|_| MoneyError::Overflow {
        currency: amount.currency(),
    })?;
    Ok(Money::from_minor(minor, amount.currency()))
}

/// Why the host refused a plugin's quote. Each becomes a decline with code
/// `quote_invalid` and this text as its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("quote has {found} lines; at most {max} are allowed")]
    TooManyLines { found: usize, max: usize },
    #[error("quote has {found} splits; at most {max} are allowed")]
    TooManySplits { found: usize, max: usize },
    #[error("line `{code}` is in {found}, the payment is in {expected}")]
    LineCurrency {
        code: Code,
        expected: Currency,
        found: Currency,
    },
    #[error("split to `{account}` is in {found}, the payment is in {expected}")]
    SplitCurrency {
        account: SubAccount,
        expected: Currency,
        found: Currency,
    },
    #[error("line `{code}` has a negative amount {amount}")]
    NegativeLine { code: Code, amount: Money },
    #[error("split to `{account}` is not positive: {amount}")]
    NonPositiveSplit { account: SubAccount, amount: Money },
    #[error("split names the main account; the remainder goes there already")]
    SplitToMain,
    #[error("fees and surcharges {charges} exceed the amount {amount}")]
    ChargesExceedAmount { charges: Money, amount: Money },
    #[error("discounts {discounts} exceed the amount {amount}")]
    DiscountExceedsAmount { discounts: Money, amount: Money },
    #[error("the payer's total {0} is not positive")]
    TotalNotPositive(Money),
    #[error(
        "lines and splits route {routed} of a total {total} with a platform fee {platform_fee}: the main account would go negative"
    )]
    OverRouted {
        routed: Money,
        total: Money,
        platform_fee: Money,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Exactly who pays and who receives for an accepted quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// What the payer is debited.
    pub payer_total: Money,
    /// What each of the merchant's accounts is credited, `main` included
    /// (after the platform fee); zero credits are left out. Sorted by name.
    pub merchant_credits: BTreeMap<SubAccount, Money>,
    /// What the platform's fee account is credited.
    pub platform_fee: Money,
}

impl Settlement {
    /// The sum of all credits, which equals `payer_total` by construction.
    pub fn credited(&self) -> Result<Money, MoneyError> {
        Money::sum(self.payer_total.currency(), self.merchant_credits.values())?
            .checked_add(self.platform_fee)
    }
}

impl Quote {
    /// Checks this quote against `amount` (what the payer asked to pay) and
    /// turns it into a balanced [`Settlement`], or says precisely why not.
    ///
    /// The payer pays `amount - discounts + every other line`. Each adding
    /// line credits its account; each split moves part of the proceeds to a
    /// sub-account; the platform fee is taken from the total; what remains
    /// goes to `main` and must not be negative.
    pub fn settle(
        &self,
        amount: Money,
        platform_fee: PlatformFee,
        limits: QuoteLimits,
    ) -> Result<Settlement, QuoteError> {
        let currency = amount.currency();
        if self.lines.len() > limits.lines_max {
            return Err(QuoteError::TooManyLines {
                found: self.lines.len(),
                max: limits.lines_max,
            });
        }
        if self.splits.len() > limits.splits_max {
            return Err(QuoteError::TooManySplits {
                found: self.splits.len(),
                max: limits.splits_max,
            });
        }
        let mut discounts = Money::zero(currency);
        let mut additions = Money::zero(currency);
        // Fees and surcharges are the merchant's price for the service; more
        // than the amount itself is a plugin bug or an abuse, never a price.
        let mut charges = Money::zero(currency);
        let mut credits: BTreeMap<SubAccount, Money> = BTreeMap::new();
        let mut credit = |account: &SubAccount, value: Money| -> Result<(), QuoteError> {
            let entry = credits
                .entry(account.clone())
                .or_insert(Money::zero(currency));
            *entry = entry.checked_add(value)?;
            Ok(())
        };
        for line in &self.lines {
            if line.amount.currency() != currency {
                return Err(QuoteError::LineCurrency {
                    code: line.code.clone(),
                    expected: currency,
                    found: line.amount.currency(),
                });
            }
            if line.amount.is_negative() {
                return Err(QuoteError::NegativeLine {
                    code: line.code.clone(),
                    amount: line.amount,
                });
            }
            if matches!(line.kind, LineKind::Fee | LineKind::Surcharge) {
                charges = charges.checked_add(line.amount)?;
            }
            if line.kind.adds() {
                additions = additions.checked_add(line.amount)?;
                if !line.account.is_main() {
                    credit(&line.account, line.amount)?;
                }
            } else {
                discounts = discounts.checked_add(line.amount)?;
            }
        }
        for split in &self.splits {
            if split.amount.currency() != currency {
                return Err(QuoteError::SplitCurrency {
                    account: split.account.clone(),
                    expected: currency,
                    found: split.amount.currency(),
                });
            }
            if split.account.is_main() {
                return Err(QuoteError::SplitToMain);
            }
            if split.amount.minor() <= 0 {
                return Err(QuoteError::NonPositiveSplit {
                    account: split.account.clone(),
                    amount: split.amount,
                });
            }
            credit(&split.account, split.amount)?;
        }
        if charges.minor() > amount.minor() {
            return Err(QuoteError::ChargesExceedAmount { charges, amount });
        }
        if discounts.minor() > amount.minor() {
            return Err(QuoteError::DiscountExceedsAmount { discounts, amount });
        }
        let payer_total = amount.checked_sub(discounts)?.checked_add(additions)?;
        if payer_total.minor() <= 0 {
            return Err(QuoteError::TotalNotPositive(payer_total));
        }
        let fee = platform_fee.of(payer_total)?;
        let routed = Money::sum(currency, credits.values())?;
        let main = payer_total.checked_sub(routed)?.checked_sub(fee)?;
        if main.is_negative() {
            return Err(QuoteError::OverRouted {
                routed,
                total: payer_total,
                platform_fee: fee,
            });
        }
        credits.insert(SubAccount::main(), main);
        credits.retain(|_, value| !value.is_zero());
        let settlement = Settlement {
            payer_total,
            merchant_credits: credits,
            platform_fee: fee,
        };
        // A broken balance here is a bug in this function, not bad input.
        assert_eq!(
            settlement.credited()?,
            payer_total,
            "settlement must balance"
        );
        Ok(settlement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("EUR").unwrap())
    }

    fn line(kind: LineKind, minor: i64, account: &str) -> QuoteLine {
        QuoteLine {
            kind,
            code: Code::new("x").unwrap(),
            description: String::new(),
            amount: eur(minor),
            account: SubAccount::new(account).unwrap(),
        }
    }

    fn settle(quote: &Quote, amount: i64, bps: u32) -> Result<Settlement, QuoteError> {
        quote.settle(eur(amount), PlatformFee { bps }, QuoteLimits::default())
    }

    #[test]
    fn an_empty_quote_pays_the_amount_to_main_less_the_platform_fee() {
        let s = settle(&Quote::default(), 10_000, 150).unwrap();
        assert_eq!(s.payer_total, eur(10_000));
        assert_eq!(s.platform_fee, eur(150));
        assert_eq!(s.merchant_credits[&SubAccount::main()], eur(9_850));
    }

    #[test]
    fn lines_and_splits_are_routed_and_balance() {
        let quote = Quote {
            lines: vec![
                line(LineKind::Fee, 59, "main"),
                line(LineKind::Discount, 1_000, "main"),
                line(LineKind::Tax, 1_710, "tax"),
                line(LineKind::Tip, 200, "tips"),
            ],
            splits: vec![Split {
                account: SubAccount::new("tips").unwrap(),
                amount: eur(100),
            }],
        };
        let s = settle(&quote, 10_000, 0).unwrap();
        assert_eq!(s.payer_total, eur(10_000 - 1_000 + 59 + 1_710 + 200));
        assert_eq!(
            s.merchant_credits[&SubAccount::new("tax").unwrap()],
            eur(1_710)
        );
        assert_eq!(
            s.merchant_credits[&SubAccount::new("tips").unwrap()],
            eur(300)
        );
        assert_eq!(s.credited().unwrap(), s.payer_total);
    }

    #[test]
    fn every_absurd_quote_is_refused_with_its_reason() {
        let usd = Money::from_minor(5, Currency::parse("USD").unwrap());
        type Expect = fn(&QuoteError) -> bool;
        let cases: Vec<(Quote, Expect)> = vec![
            (
                Quote {
                    lines: vec![line(LineKind::Fee, -5, "main")],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::NegativeLine { .. }),
            ),
            (
                Quote {
                    lines: vec![QuoteLine {
                        amount: usd,
                        ..line(LineKind::Fee, 0, "main")
                    }],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::LineCurrency { .. }),
            ),
            (
                Quote {
                    lines: vec![
                        line(LineKind::Fee, 5_001, "main"),
                        line(LineKind::Surcharge, 5_000, "main"),
                    ],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::ChargesExceedAmount { .. }),
            ),
            (
                Quote {
                    lines: vec![line(LineKind::Discount, 10_001, "main")],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::DiscountExceedsAmount { .. }),
            ),
            (
                Quote {
                    lines: vec![line(LineKind::Discount, 10_000, "main")],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::TotalNotPositive(_)),
            ),
            (
                Quote {
                    lines: vec![],
                    splits: vec![Split {
                        account: SubAccount::new("other").unwrap(),
                        amount: eur(10_001),
                    }],
                },
                |e| matches!(e, QuoteError::OverRouted { .. }),
            ),
            (
                Quote {
                    lines: vec![],
                    splits: vec![Split {
                        account: SubAccount::main(),
                        amount: eur(1),
                    }],
                },
                |e| matches!(e, QuoteError::SplitToMain),
            ),
            (
                Quote {
                    lines: vec![],
                    splits: vec![Split {
                        account: SubAccount::new("a").unwrap(),
                        amount: eur(0),
                    }],
                },
                |e| matches!(e, QuoteError::NonPositiveSplit { .. }),
            ),
            (
                Quote {
                    lines: vec![line(LineKind::Tip, 1, "main"); 33],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::TooManyLines { .. }),
            ),
            (
                Quote {
                    lines: vec![line(LineKind::Tip, i64::MAX, "main")],
                    splits: vec![],
                },
                |e| matches!(e, QuoteError::Money(MoneyError::Overflow { .. })),
            ),
        ];
        for (quote, expected) in cases {
            let err = settle(&quote, 10_000, 100).unwrap_err();
            assert!(expected(&err), "{quote:?} gave {err}");
        }
    }

    #[test]
    fn basis_points_round_half_away_from_zero() {
        assert_eq!(bps_of(eur(10_000), 290).unwrap(), eur(290));
        assert_eq!(bps_of(eur(50), 100).unwrap(), eur(1)); // 0.5 -> 1
        assert_eq!(bps_of(eur(49), 100).unwrap(), eur(0)); // 0.49 -> 0
        assert_eq!(bps_of(eur(-50), 100).unwrap(), eur(-1));
        assert_eq!(bps_of(eur(i64::MAX), 10_000).unwrap(), eur(i64::MAX));
        assert!(bps_of(eur(i64::MAX), 20_000).is_err());
    }

    #[test]
    fn codes_follow_their_rule() {
        assert!(Code::new("velocity_count_exceeded").is_ok());
        for bad in ["", "Upper", "a b", "a/b", &"x".repeat(CODE_BYTES_MAX + 1)] {
            assert!(Code::new(bad).is_err(), "{bad}");
        }
    }
}
