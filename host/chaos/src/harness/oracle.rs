//! What the replies said against what the ledger holds.
//!
//! From the answers alone it predicts, for every user and merchant, each
//! effect the ledger must show exactly once (a payment's debit and credit, a
//! refund's, each deposit) and the final balance (deposits, less approved
//! payments, plus refunds). Then it reads the ledger through
//! `wasmpay_ledger::Reader`, as the CLI does, and counts:
//!
//! - **lost**: an effect an answer promised that the ledger lacks;
//! - **duplicated**: an effect the ledger holds more often than answered
//!   (or at all, when the answer was a refusal);
//! - **mismatched**: an answer that disagrees with the ledger (an amount, a
//!   balance, a payment's row) or with the protocol (a reused id not
//!   refused with `conflict`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde_json::Value;
use wasmpay_domain::{Currency, MerchantId, PaymentId, RequestId, UserId};
use wasmpay_ledger::{HISTORY_PAGE_MAX, Owner, Reader};

use super::driver::{CURRENCY, Op, Record, minor};

/// Problems kept word for word; the rest are only counted.
const PROBLEMS_KEPT_MAX: usize = 30;

/// The oracle's findings.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub lost: u64,
    pub duplicated: u64,
    pub mismatched: u64,
    /// Requests that never got an answer.
    pub unanswered: u64,
    /// `Reader::verify` found nothing (the same check as
    /// `wasmpay ledger verify`).
    pub verify_clean: bool,
    pub verify_problems: Vec<String>,
    pub problems: Vec<String>,
    pub problem_count: u64,
    pub approved_payments: u64,
    pub refunds: u64,
    pub deposits: u64,
    /// Reused ids answered `conflict`.
    pub conflicts: u64,
    /// Refusals by code.
    pub refused: BTreeMap<String, u64>,
}

impl Verdict {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_KEPT_MAX {
            self.problems.push(text);
        }
    }
}

/// An owner's account, as the oracle names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    User(String),
    Merchant(String),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {user}"),
            Self::Merchant(merchant) => write!(f, "merchant {merchant}"),
        }
    }
}

/// An effect on one account: the journal's operation and its payment.
type Effect = (String, Option<String>);

/// How often an effect appears, and its amounts' sum, in minor units.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: i64,
}

#[derive(Debug, Default)]
struct Expected {
    effects: BTreeMap<Effect, Tally>,
    balance: i64,
}

impl Expected {
    fn add(&mut self, op: &str, payment: Option<&str>, amount: i64) {
        let tally = self
            .effects
            .entry((op.to_owned(), payment.map(str::to_owned)))
            .or_default();
        tally.count += 1;
        tally.sum += amount;
        self.balance += amount;
    }
}

/// An approved payment, from its answer.
#[derive(Debug)]
struct Paid {
    merchant: String,
    payer_total: i64,
    refunded: i64,
}

/// Checks `records` (every request of a run and its answer) against the
/// ledger file at `db`. Call it after the daemon stopped.
pub fn check(db: &Path, records: &[Record]) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();
    let mut expected: BTreeMap<Who, Expected> = BTreeMap::new();
    let mut paid: BTreeMap<String, Paid> = BTreeMap::new();
    let mut refused_payments: Vec<(String, String)> = Vec::new();
    // Payments whose fate the load never learned: the ledger may hold them.
    let mut unknown: BTreeSet<String> = BTreeSet::new();

    for record in records {
        let Some(reply) = &record.reply else {
            verdict.unanswered += 1;
            if let Op::Pay { user, .. } = &record.op {
                unknown.insert(derive(user, &record.id)?);
            }
            if let Op::Refund { payment_id, .. } = &record.op {
                unknown.insert(payment_id.clone());
            }
            continue;
        };
        let ok = reply["ok"] == true;
        let code = reply
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if !ok {
            *verdict.refused.entry(code.clone()).or_default() += 1;
        }
        match &record.op {
            Op::OpenUser { .. } | Op::OpenMerchant { .. } => {
                if !ok {
                    verdict.mismatched += 1;
                    verdict.problem(format!("{}: opening refused: {reply}", record.id));
                }
            }
            Op::Deposit { user, amount } => {
                if !ok {
                    verdict.mismatched += 1;
                    verdict.problem(format!("{}: deposit refused: {reply}", record.id));
                    continue;
                }
                if minor(reply, "/result/amount/amount") != Some(*amount) {
                    verdict.mismatched += 1;
                    verdict.problem(format!("{}: deposit answered {reply}", record.id));
                }
                verdict.deposits += 1;
                expected
                    .entry(Who::User(user.clone()))
                    .or_default()
                    .add("deposit", None, *amount);
            }
            Op::Pay {
                user,
                merchant,
                amount,
            } => {
                let derived = derive(user, &record.id)?;
                if !ok {
                    if code != "insufficient_funds" {
                        verdict.problem(format!("{}: payment refused: {reply}", record.id));
                    }
                    refused_payments.push((merchant.clone(), derived));
                    continue;
                }
                let payment_id = reply
                    .pointer("/result/payment_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let total = minor(reply, "/result/payer_total/amount");
                let credit = minor(reply, "/result/settlement/merchant_credits/main/amount");
                let (Some(total), Some(credit)) = (total, credit) else {
                    verdict.mismatched += 1;
                    verdict.problem(format!("{}: approval without amounts: {reply}", record.id));
                    continue;
                };
                if payment_id != derived || minor(reply, "/result/amount/amount") != Some(*amount) {
                    verdict.mismatched += 1;
                    verdict.problem(format!(
                        "{}: approval of another payment ({derived}, {amount}): {reply}",
                        record.id
                    ));
                }
                verdict.approved_payments += 1;
                expected.entry(Who::User(user.clone())).or_default().add(
                    "payment",
                    Some(&derived),
                    -total,
                );
                expected
                    .entry(Who::Merchant(merchant.clone()))
                    .or_default()
                    .add("payment", Some(&derived), credit);
                paid.insert(
                    derived,
                    Paid {
                        merchant: merchant.clone(),
                        payer_total: total,
                        refunded: 0,
                    },
                );
            }
            Op::Refund {
                user,
                merchant,
                payment_id,
                amount,
            } => {
                if !ok {
                    verdict.problem(format!("{}: refund refused: {reply}", record.id));
                    continue;
                }
                let credited = minor(reply, "/result/payer_credited/amount");
                if minor(reply, "/result/amount/amount") != Some(*amount)
                    || reply.pointer("/result/payment_id").and_then(Value::as_str)
                        != Some(payment_id.as_str())
                {
                    verdict.mismatched += 1;
                    verdict.problem(format!("{}: refund answered {reply}", record.id));
                }
                verdict.refunds += 1;
                expected.entry(Who::User(user.clone())).or_default().add(
                    "refund",
                    Some(payment_id),
                    credited.unwrap_or(*amount),
                );
                expected
                    .entry(Who::Merchant(merchant.clone()))
                    .or_default()
                    .add("refund", Some(payment_id), -amount);
                match paid.get_mut(payment_id) {
                    Some(p) => p.refunded += amount,
                    None => {
                        verdict.mismatched += 1;
                        verdict.problem(format!(
                            "{}: refund of {payment_id}, which no answer approved",
                            record.id
                        ));
                    }
                }
            }
            Op::Reuse { .. } => {
                if code == "conflict" {
                    verdict.conflicts += 1;
                } else {
                    verdict.mismatched += 1;
                    verdict.problem(format!(
                        "{}: a reused id with another amount was answered {reply}",
                        record.id
                    ));
                }
            }
        }
    }

    let reader = Reader::open(db)?;
    let currency = Currency::parse(CURRENCY)?;
    for (who, want) in &expected {
        let owner = match who {
            Who::User(user) => Owner::user(&UserId::new(user.as_str())?),
            Who::Merchant(merchant) => Owner::merchant_main(&MerchantId::new(merchant.as_str())?),
        };
        let have = effects(&reader, &owner)?;
        for (effect, wanted) in &want.effects {
            let found = have.get(effect).copied().unwrap_or_default();
            if found.count < wanted.count {
                verdict.lost += wanted.count - found.count;
                verdict.problem(format!(
                    "{who}: {effect:?} answered {} times, in the ledger {} times",
                    wanted.count, found.count
                ));
            } else if found.count > wanted.count {
                verdict.duplicated += found.count - wanted.count;
                verdict.problem(format!(
                    "{who}: {effect:?} answered {} times, in the ledger {} times",
                    wanted.count, found.count
                ));
            } else if found.sum != wanted.sum {
                verdict.mismatched += 1;
                verdict.problem(format!(
                    "{who}: {effect:?} answered with {} in all, the ledger posted {}",
                    wanted.sum, found.sum
                ));
            }
        }
        let mut unaccounted = false;
        for (effect, found) in &have {
            if want.effects.contains_key(effect) {
                continue;
            }
            if effect.1.as_ref().is_some_and(|p| unknown.contains(p)) {
                unaccounted = true;
                continue;
            }
            verdict.duplicated += found.count;
            verdict.problem(format!(
                "{who}: the ledger holds {effect:?} ({} times) that no answer approved",
                found.count
            ));
        }
        let balance = reader.balance(&owner, currency)?;
        let posted = balance.available.minor() + balance.held.minor();
        if !unaccounted && posted != want.balance {
            verdict.mismatched += 1;
            verdict.problem(format!(
                "{who}: balance {posted}, the answers add up to {}",
                want.balance
            ));
        }
    }
    for (payment_id, p) in &paid {
        let row = reader.payment(
            &MerchantId::new(p.merchant.as_str())?,
            &PaymentId::new(payment_id.as_str())?,
        )?;
        match row {
            Some(row)
                if row.captured.minor() == p.payer_total && row.refunded.minor() == p.refunded => {}
            Some(row) => {
                verdict.mismatched += 1;
                verdict.problem(format!(
                    "payment {payment_id}: captured {} refunded {}, answered {} and {}",
                    row.captured, row.refunded, p.payer_total, p.refunded
                ));
            }
            None => {
                verdict.lost += 1;
                verdict.problem(format!("payment {payment_id} was approved but has no row"));
            }
        }
    }
    for (merchant, payment_id) in &refused_payments {
        if reader
            .payment(
                &MerchantId::new(merchant.as_str())?,
                &PaymentId::new(payment_id.as_str())?,
            )?
            .is_some()
        {
            verdict.duplicated += 1;
            verdict.problem(format!("payment {payment_id} was refused but has a row"));
        }
    }
    let report = reader.verify()?;
    verdict.verify_clean = report.is_clean();
    if !verdict.verify_clean {
        verdict.verify_problems = report.to_string().lines().map(str::to_owned).collect();
    }
    Ok(verdict)
}

/// The payment id the daemon derives from the payer and the request id.
fn derive(user: &str, request: &str) -> anyhow::Result<String> {
    Ok(
        PaymentId::derive(&UserId::new(user)?, &RequestId::new(request)?)
            .as_str()
            .to_owned(),
    )
}

/// Every posting to `owner`'s accounts, tallied by operation and payment.
fn effects(reader: &Reader, owner: &Owner) -> anyhow::Result<BTreeMap<Effect, Tally>> {
    let mut effects: BTreeMap<Effect, Tally> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = reader.history(owner, after, HISTORY_PAGE_MAX)?;
        for entry in page.items {
            let tally = effects
                .entry((entry.op, entry.payment_id.map(|p| p.as_str().to_owned())))
                .or_default();
            tally.count += 1;
            tally.sum += entry.amount.minor();
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(effects),
        }
    }
}
