//! `wasmpay_domain::Quote::settle` on arbitrary quotes, amounts and platform
//! fees, checked against a reference settlement computed here in `i128`.
//!
//! A quote is a merchant plugin's output, so it is hostile input: any lines,
//! splits, accounts, currencies and amounts up to `i64`'s extremes. `settle`
//! must never panic (its own balance assertion included), and it must accept
//! exactly the quotes the contract allows: when the reference can settle a
//! quote without leaving `i64`, `settle` must too, with the same payer total,
//! the same credit per account and the same fee; a balanced, non-negative,
//! single-currency settlement follows from that and is asserted as well.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wasmpay_domain::{
    Code, Currency, LineKind, Money, PlatformFee, Quote, QuoteLimits, QuoteLine, Split, SubAccount,
};

#[derive(Debug, Clone, Copy, Arbitrary)]
enum CurrencyPick {
    Eur,
    Jpy,
    Kwd,
    Clf,
}

impl CurrencyPick {
    fn currency(self) -> Currency {
        let code = match self {
            Self::Eur => "EUR",
            Self::Jpy => "JPY",
            Self::Kwd => "KWD",
            Self::Clf => "CLF",
        };
        Currency::parse(code).expect("a real currency")
    }
}

/// Amounts near the edges of `i64`, where checked arithmetic earns its keep,
/// as well as everyday ones and anything at all.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum AmountPick {
    Small(i16),
    Min,
    MinPlusOne,
    MinusOne,
    Zero,
    One,
    HalfMax,
    MaxMinusOne,
    Max,
    Any(i64),
}

impl AmountPick {
    fn minor(self) -> i64 {
        match self {
            Self::Small(minor) => i64::from(minor),
            Self::Min => i64::MIN,
            Self::MinPlusOne => i64::MIN + 1,
            Self::MinusOne => -1,
            Self::Zero => 0,
            Self::One => 1,
            Self::HalfMax => i64::MAX / 2 + 1,
            Self::MaxMinusOne => i64::MAX - 1,
            Self::Max => i64::MAX,
            Self::Any(minor) => minor,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum AccountPick {
    Main,
    Tax,
    Tips,
    /// Any name; one `SubAccount::new` refuses becomes `other`.
    Named(String),
}

impl AccountPick {
    fn account(&self) -> SubAccount {
        let name = match self {
            Self::Main => return SubAccount::main(),
            Self::Tax => "tax",
            Self::Tips => "tips",
            Self::Named(name) => name.as_str(),
        };
        SubAccount::new(name).unwrap_or_else(|_| SubAccount::new("other").expect("valid"))
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum KindPick {
    Fee,
    Discount,
    Surcharge,
    Tax,
    Tip,
}

#[derive(Debug, Arbitrary)]
struct LineInput {
    kind: KindPick,
    amount: AmountPick,
    /// `None`: the payment's currency.
    currency: Option<CurrencyPick>,
    account: AccountPick,
}

#[derive(Debug, Arbitrary)]
struct SplitInput {
    amount: AmountPick,
    currency: Option<CurrencyPick>,
    account: AccountPick,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum BpsPick {
    /// 0 to 100 %, what an operator would configure.
    Usual(u16),
    Any(u32),
}

#[derive(Debug, Arbitrary)]
struct Input {
    amount: AmountPick,
    currency: CurrencyPick,
    bps: BpsPick,
    lines: Vec<LineInput>,
    splits: Vec<SplitInput>,
}

/// What the reference expects `settle` to produce, in `i128`.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    payer_total: i128,
    credits: BTreeMap<SubAccount, i128>,
    platform_fee: i128,
}

/// The contract of `Quote::settle` (see its docs), computed without
/// `Money`: `None` wherever the quote must be refused, including wherever a
/// sum the settlement needs leaves `i64`.
fn reference(quote: &Quote, amount: Money, bps: u32, limits: QuoteLimits) -> Option<Expected> {
    let currency = amount.currency();
    let fits = |value: i128| i64::try_from(value).is_ok();
    if quote.lines.len() > limits.lines_max || quote.splits.len() > limits.splits_max {
        return None;
    }
    let (mut discounts, mut additions, mut charges) = (0_i128, 0_i128, 0_i128);
    let mut credits: BTreeMap<SubAccount, i128> = BTreeMap::new();
    for line in &quote.lines {
        let minor = i128::from(line.amount.minor());
        if line.amount.currency() != currency || minor < 0 {
            return None;
        }
        if matches!(line.kind, LineKind::Fee | LineKind::Surcharge) {
            charges += minor;
        }
        if line.kind == LineKind::Discount {
            discounts += minor;
        } else {
            additions += minor;
            if !line.account.is_main() {
                *credits.entry(line.account.clone()).or_default() += minor;
            }
        }
    }
    for split in &quote.splits {
        let minor = i128::from(split.amount.minor());
        if split.amount.currency() != currency || split.account.is_main() || minor <= 0 {
            return None;
        }
        *credits.entry(split.account.clone()).or_default() += minor;
    }
    // Every addend is non-negative, so a total within `i64` means every
    // partial sum was too: `settle` may only refuse on a final sum.
    let routed: i128 = credits.values().sum();
    let sums = [discounts, additions, charges, routed];
    if !sums.into_iter().all(fits) || !credits.values().all(|c| fits(*c)) {
        return None;
    }
    let amount = i128::from(amount.minor());
    // Fees and surcharges together may not exceed the amount itself.
    if charges > amount || discounts > amount {
        return None;
    }
    let payer_total = amount - discounts + additions;
    if !fits(payer_total) || payer_total <= 0 {
        return None;
    }
    // Basis points, rounded half away from zero (the total is positive).
    let product = payer_total * i128::from(bps);
    let platform_fee = product / 10_000 + i128::from(product % 10_000 >= 5_000);
    if !fits(platform_fee) {
        return None;
    }
    let main = payer_total - routed - platform_fee;
    if main < 0 {
        return None;
    }
    credits.insert(SubAccount::main(), main);
    credits.retain(|_, credit| *credit != 0);
    Some(Expected {
        payer_total,
        credits,
        platform_fee,
    })
}

fuzz_target!(|input: Input| {
    let currency = input.currency.currency();
    let pick = |c: Option<CurrencyPick>| c.map_or(currency, CurrencyPick::currency);
    let kind = |k: KindPick| match k {
        KindPick::Fee => LineKind::Fee,
        KindPick::Discount => LineKind::Discount,
        KindPick::Surcharge => LineKind::Surcharge,
        KindPick::Tax => LineKind::Tax,
        KindPick::Tip => LineKind::Tip,
    };
    let quote = Quote {
        lines: input
            .lines
            .iter()
            .map(|line| QuoteLine {
                kind: kind(line.kind),
                code: Code::new("line").expect("valid"),
                description: String::new(),
                amount: Money::from_minor(line.amount.minor(), pick(line.currency)),
                account: line.account.account(),
            })
            .collect(),
        splits: input
            .splits
            .iter()
            .map(|split| Split {
                account: split.account.account(),
                amount: Money::from_minor(split.amount.minor(), pick(split.currency)),
            })
            .collect(),
    };
    let amount = Money::from_minor(input.amount.minor(), currency);
    let bps = match input.bps {
        BpsPick::Usual(bps) => u32::from(bps) % 10_001,
        BpsPick::Any(bps) => bps,
    };
    let limits = QuoteLimits::default();

    let settled = quote.settle(amount, PlatformFee { bps }, limits);
    let expected = reference(&quote, amount, bps, limits);
    let context = || format!("{quote:?}, amount {amount:?}, {bps} bps");
    let (settlement, expected) = match (settled, expected) {
        (Ok(settlement), Some(expected)) => (settlement, expected),
        (Err(_), None) => return,
        (Ok(settlement), None) => panic!("{}: accepted as {settlement:?}", context()),
        (Err(error), Some(expected)) => {
            panic!("{}: refused ({error}), expected {expected:?}", context())
        }
    };

    let all_money = settlement
        .merchant_credits
        .values()
        .chain([&settlement.payer_total, &settlement.platform_fee]);
    for money in all_money {
        assert_eq!(money.currency(), currency, "{}: {settlement:?}", context());
    }
    for credit in settlement.merchant_credits.values() {
        assert!(credit.minor() > 0, "{}: {settlement:?}", context());
    }
    assert!(settlement.platform_fee.minor() >= 0, "{}", context());
    let credited: i128 = settlement
        .merchant_credits
        .values()
        .map(|credit| i128::from(credit.minor()))
        .sum::<i128>()
        + i128::from(settlement.platform_fee.minor());
    assert_eq!(
        credited,
        i128::from(settlement.payer_total.minor()),
        "{}: unbalanced {settlement:?}",
        context()
    );
    let actual = Expected {
        payer_total: settlement.payer_total.minor().into(),
        credits: settlement
            .merchant_credits
            .iter()
            .map(|(account, credit)| (account.clone(), i128::from(credit.minor())))
            .collect(),
        platform_fee: settlement.platform_fee.minor().into(),
    };
    assert_eq!(actual, expected, "{}", context());
});
