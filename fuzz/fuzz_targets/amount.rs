//! `wasmpay_domain::Money::parse` against a reference parser written here
//! (layout: `wasmpay_fuzz::AmountInput`).
//!
//! Every amount a client sends goes through `Money::parse`, which leans on
//! `rust_decimal`. The reference below uses nothing but digits and `i128`,
//! so the two agreeing on every input is evidence that neither rounds,
//! truncates or misreads an amount. Whatever parses must also print back to
//! the same money with exactly the currency's decimals, since replies and
//! the ledger's journal carry amounts as those strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpay_domain::{Currency, Money, MoneyError};
use wasmpay_fuzz::AmountInput;

/// What an amount text is, in the terms both parsers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    Minor(i64),
    Invalid,
    ExcessPrecision,
    Overflow,
}

/// The documented grammar (an optional `-`, digits, optionally `.` and
/// digits), more decimals than the currency has refused, the value exact in
/// minor units or refused as out of `i64` range.
fn reference(text: &str, exponent: u32) -> Parsed {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Parsed::Invalid;
    }
    let fraction = fraction.unwrap_or("");
    let exponent = exponent as usize;
    if fraction.len() > exponent {
        return Parsed::ExcessPrecision;
    }
    // One past `i64::MAX` in magnitude is `i64::MIN`; anything beyond
    // overflows whatever the sign, so stop there before `i128` could.
    let magnitude_max = i128::from(i64::MAX) + 1;
    let padding = std::iter::repeat_n(b'0', exponent - fraction.len());
    let mut magnitude: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()).chain(padding) {
        magnitude = magnitude * 10 + i128::from(b - b'0');
        if magnitude > magnitude_max {
            return Parsed::Overflow;
        }
    }
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_or(Parsed::Overflow, Parsed::Minor)
}

fn parsed(result: &Result<Money, MoneyError>) -> Parsed {
    match result {
        Ok(money) => Parsed::Minor(money.minor()),
        Err(MoneyError::InvalidAmount(_)) => Parsed::Invalid,
        Err(MoneyError::ExcessPrecision { .. }) => Parsed::ExcessPrecision,
        Err(MoneyError::Overflow { .. }) => Parsed::Overflow,
        Err(other) => panic!("Money::parse gave an error it never should: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let input = AmountInput::read(data);
    let currency = Currency::parse(input.currency).expect("a real currency");
    let exponent = currency.exponent();
    let result = Money::parse(input.text, currency);
    let (domain, reference) = (parsed(&result), reference(input.text, exponent));
    assert_eq!(
        domain, reference,
        "{:?} in {currency}: Money::parse gave {result:?}, the reference {reference:?}",
        input.text
    );
    let Ok(money) = result else {
        return;
    };
    assert_eq!(money.currency(), currency);
    let printed = money.amount_string();
    let decimals = printed.split_once('.').map_or(0, |(_, f)| f.len());
    assert_eq!(
        decimals, exponent as usize,
        "{:?} printed as {printed:?}",
        input.text
    );
    assert_eq!(
        Money::parse(&printed, currency),
        Ok(money),
        "{:?} printed as {printed:?} does not parse back",
        input.text
    );
});
