//! Model-based property test: random batches of operations (with duplicate
//! keys, conflicting retries, wrong principals, expiring holds, credits split
//! across merchant sub-accounts up to their limit) against a plain in-memory
//! reference model. After every batch the ledger's results
//! and balances must equal the model's; at the end `verify` must be clean.

use std::collections::BTreeMap;

use proptest::prelude::*;
use wasmpay_domain::{Code, Decline, MerchantId, Money, PaymentId, Settlement, SubAccount};
use wasmpay_ledger::{
    Fields, LedgerError, LedgerOptions, Op, OpKind, Overdraft, Owner, PaymentDecided, Principal,
    RefundDecided, Synchronous,
};

use crate::support::*;

const USERS: [&str; 2] = ["alice", "bob"];
const MERCHANTS: [&str; 2] = ["shop", "mall"];
/// Sub-account names a payment may split its credit across. A split may name
/// more than the limit, so that a payment can open new sub-accounts and then
/// be refused at the next: a refusal after the batch has written, which the
/// writer must undo (it reruns the batch with a savepoint per operation).
const SUBS: [&str; 3] = ["a", "b", "c"];
const SUBACCOUNTS_MAX: usize = 2;

/// One generated step, in terms small enough to shrink well.
#[derive(Debug, Clone)]
enum Step {
    Open {
        who: usize,
        merchant: bool,
        limit: bool,
    },
    Deposit {
        user: usize,
        amount: i64,
    },
    Payout {
        merchant: usize,
        /// `None`: the main account; else an index into `SUBS`.
        sub: Option<usize>,
        amount: i64,
    },
    Pay {
        payer: usize,
        merchant: usize,
        request: u8,
        amount: i64,
        fee: bool,
        declined: bool,
        hold_ttl: Option<i64>,
        /// The merchant's credit split in equal parts between these
        /// distinct entries of `SUBS`, instead of the main account.
        split: Option<Vec<usize>>,
    },
    Capture {
        merchant: usize,
        payer: usize,
        request: u8,
        amount: Option<i64>,
    },
    Void {
        merchant: usize,
        payer: usize,
        request: u8,
    },
    Refund {
        merchant: usize,
        payer: usize,
        request: u8,
        amount: i64,
        fee: i64,
        denied: bool,
    },
}

/// Who sends a step: its rightful principal, the admin, or an impostor.
#[derive(Debug, Clone, Copy)]
enum Sender {
    Rightful,
    Admin,
    Impostor,
}

#[derive(Debug, Clone)]
struct Request {
    step: Step,
    sender: Sender,
    key: u8,
    advance_ms: i64,
    /// Re-send an earlier request as it was (a redelivery) instead.
    retry: Option<prop::sample::Index>,
}

#[derive(Debug, Clone)]
enum Batch {
    Ops(Vec<Request>),
    Sweep { advance_ms: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    let amount = 1_i64..400;
    prop_oneof![
        1 => (0..2usize, any::<bool>(), any::<bool>()).prop_map(|(who, merchant, limit)| Step::Open {
            who,
            merchant,
            limit
        }),
        1 => (0..2usize, amount.clone()).prop_map(|(user, amount)| Step::Deposit { user, amount }),
        1 => (
            0..2usize,
            prop::option::weighted(0.3, 0..SUBS.len()),
            amount.clone()
        )
            .prop_map(|(merchant, sub, amount)| Step::Payout {
                merchant,
                sub,
                amount
            }),
        // Payments carry most of the interplay (holds, fees, splits).
        3 => (
            0..2usize,
            0..2usize,
            0..4u8,
            amount.clone(),
            any::<bool>(),
            prop::bool::weighted(0.15),
            prop::option::of(0_i64..4_000),
            prop::option::weighted(
                0.5,
                prop::sample::subsequence((0..SUBS.len()).collect::<Vec<_>>(), 1..=SUBS.len())
            )
        )
            .prop_map(
                |(payer, merchant, request, amount, fee, declined, hold_ttl, split)| Step::Pay {
                    payer,
                    merchant,
                    request,
                    amount,
                    fee,
                    declined,
                    hold_ttl,
                    split
                }
            ),
        1 => (0..2usize, 0..2usize, 0..4u8, prop::option::of(1_i64..400)).prop_map(
            |(merchant, payer, request, amount)| Step::Capture {
                merchant,
                payer,
                request,
                amount
            }
        ),
        1 => (0..2usize, 0..2usize, 0..4u8).prop_map(|(merchant, payer, request)| Step::Void {
            merchant,
            payer,
            request
        }),
        1 => (
            0..2usize,
            0..2usize,
            0..4u8,
            amount,
            0_i64..30,
            prop::bool::weighted(0.1)
        )
            .prop_map(
                |(merchant, payer, request, amount, fee, denied)| Step::Refund {
                    merchant,
                    payer,
                    request,
                    amount,
                    fee,
                    denied
                }
            ),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let sender = prop_oneof![
        8 => Just(Sender::Rightful),
        2 => Just(Sender::Admin),
        1 => Just(Sender::Impostor),
    ];
    let retry = prop::option::weighted(0.2, any::<prop::sample::Index>());
    (step(), sender, 0..24u8, 0_i64..1_500, retry).prop_map(
        |(step, sender, key, advance_ms, retry)| Request {
            step,
            sender,
            key,
            advance_ms,
            retry,
        },
    )
}

fn batch() -> impl Strategy<Value = Batch> {
    prop_oneof![
        6 => prop::collection::vec(request(), 1..6).prop_map(Batch::Ops),
        1 => (0_i64..4_000).prop_map(|advance_ms| Batch::Sweep { advance_ms }),
    ]
}

fn pid_of(payer: usize, request: u8) -> PaymentId {
    pid(USERS[payer], &format!("pay{request}"))
}

fn sub(index: usize) -> SubAccount {
    SubAccount::new(SUBS[index]).unwrap()
}

/// Moves the merchant's credit in `settlement` from the main account to
/// sub-accounts, in equal parts with the remainder on the last (zero credits
/// left out, as the writer skips them).
fn split_credit(settlement: &mut Settlement, subs: &[usize]) {
    let credit = settlement.payer_total.minor() - settlement.platform_fee.minor();
    let currency = settlement.payer_total.currency();
    let parts = subs.len() as i64;
    settlement.merchant_credits.clear();
    for (i, &index) in subs.iter().enumerate() {
        let part = if i + 1 == subs.len() {
            credit - credit / parts * (parts - 1)
        } else {
            credit / parts
        };
        if part > 0 {
            settlement
                .merchant_credits
                .insert(sub(index), Money::from_minor(part, currency));
        }
    }
}

fn owner_of(who: usize, merchant_side: bool) -> Owner {
    if merchant_side {
        Owner::merchant_main(&merchant(MERCHANTS[who]))
    } else {
        Owner::user(&user(USERS[who]))
    }
}

/// The operation and its rightful principal.
fn to_kind(step: &Step) -> (OpKind, Principal) {
    match step.clone() {
        Step::Open {
            who,
            merchant: m,
            limit,
        } => (
            OpKind::OpenAccount {
                owner: owner_of(who, m),
                currency: cur("EUR"),
                overdraft: if limit {
                    Overdraft::Limit(eur(100))
                } else {
                    Overdraft::None
                },
            },
            Principal::Admin,
        ),
        Step::Deposit { user: u, amount } => (
            OpKind::Deposit {
                user: user(USERS[u]),
                amount: eur(amount),
            },
            Principal::User(user(USERS[u])),
        ),
        Step::Payout {
            merchant: m,
            sub: account,
            amount,
        } => (
            OpKind::Payout {
                merchant: merchant(MERCHANTS[m]),
                account: account.map_or_else(SubAccount::main, sub),
                amount: eur(amount),
            },
            Principal::Merchant(merchant(MERCHANTS[m])),
        ),
        Step::Pay {
            payer,
            merchant: m,
            request,
            amount,
            fee,
            declined: is_declined,
            hold_ttl,
            split,
        } => {
            let request_name = format!("pay{request}");
            let bps = if fee { 150 } else { 0 };
            let mut kind = match hold_ttl {
                None => payment(USERS[payer], MERCHANTS[m], &request_name, eur(amount), bps),
                // Expiry is filled in with the op's time in `to_op`.
                Some(_) => authorize(
                    USERS[payer],
                    MERCHANTS[m],
                    &request_name,
                    eur(amount),
                    bps,
                    0,
                ),
            };
            if let (
                Some(split),
                OpKind::Payment {
                    decision: PaymentDecided::Approved { settlement, .. },
                    ..
                }
                | OpKind::Authorize {
                    decision: PaymentDecided::Approved { settlement, .. },
                    ..
                },
            ) = (split, &mut kind)
            {
                split_credit(settlement, &split);
            }
            if is_declined {
                match &mut kind {
                    OpKind::Payment { decision, .. } | OpKind::Authorize { decision, .. } => {
                        *decision = declined("risk");
                    }
                    _ => unreachable!(),
                }
            }
            (kind, Principal::User(user(USERS[payer])))
        }
        Step::Capture {
            merchant: m,
            payer,
            request,
            amount,
        } => (
            OpKind::Capture {
                merchant: merchant(MERCHANTS[m]),
                payment_id: pid_of(payer, request),
                amount: amount.map(eur),
            },
            Principal::Merchant(merchant(MERCHANTS[m])),
        ),
        Step::Void {
            merchant: m,
            payer,
            request,
        } => (
            OpKind::Void {
                merchant: merchant(MERCHANTS[m]),
                payment_id: pid_of(payer, request),
                reason: None,
            },
            Principal::Merchant(merchant(MERCHANTS[m])),
        ),
        Step::Refund {
            merchant: m,
            payer,
            request,
            amount,
            fee,
            denied,
        } => {
            let decision = if denied {
                RefundDecided::Denied {
                    decline: Decline {
                        code: Code::new("no").unwrap(),
                        message: "no".into(),
                    },
                    plugin: None,
                }
            } else {
                RefundDecided::Allowed {
                    fee: (fee > 0).then(|| eur(fee)),
                    plugin: None,
                }
            };
            (
                OpKind::Refund {
                    merchant: merchant(MERCHANTS[m]),
                    payment_id: pid_of(payer, request),
                    amount: eur(amount),
                    reason: "r".into(),
                    decision,
                },
                Principal::Merchant(merchant(MERCHANTS[m])),
            )
        }
    }
}

fn to_op(request: &Request, at_ms: i64) -> Op {
    let (mut kind, rightful) = to_kind(&request.step);
    if let (
        OpKind::Authorize { expires_at_ms, .. },
        Step::Pay {
            hold_ttl: Some(ttl),
            ..
        },
    ) = (&mut kind, &request.step)
    {
        *expires_at_ms = at_ms + ttl;
    }
    let principal = match request.sender {
        Sender::Rightful => rightful,
        Sender::Admin => Principal::Admin,
        Sender::Impostor => Principal::User(user("mallory")),
    };
    Op {
        principal,
        key: key(&format!("k{}", request.key)),
        at_ms,
        kind,
    }
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, Default)]
struct Account {
    balance: i64,
    held: i64,
    /// `None`: unbounded.
    floor: Option<i64>,
}

#[derive(Debug, Clone)]
struct Payment {
    payer: Owner,
    hold: bool,
    status: &'static str,
    authorized: i64,
    fee: i64,
    /// The merchant's credits of a full capture (main or sub-accounts).
    credits: Vec<(Owner, i64)>,
    captured: i64,
    refunded: i64,
    expires_at_ms: i64,
}

#[derive(Debug, Default)]
struct Model {
    accounts: BTreeMap<Owner, Account>,
    payments: BTreeMap<(String, PaymentId), Payment>,
    requests: BTreeMap<(Principal, String), (Fields, &'static str)>,
}

type Refused = &'static str;

impl Model {
    fn funds(&self, owner: &Owner, amount: i64) -> Result<(), Refused> {
        let a = &self.accounts[owner];
        match a.floor {
            Some(floor) if a.balance - a.held - amount < floor => Err("insufficient_funds"),
            _ => Ok(()),
        }
    }

    /// Refuses credits that would take `merchant` past its sub-account
    /// limit, else opens the new sub-accounts.
    fn open_subaccounts(
        &mut self,
        merchant: &MerchantId,
        credits: &[(Owner, i64)],
    ) -> Result<(), Refused> {
        let is_sub_of_merchant = |owner: &Owner| matches!(owner, Owner::Merchant { merchant: m, account } if m == merchant && !account.is_main());
        let existing = self
            .accounts
            .keys()
            .filter(|owner| is_sub_of_merchant(owner))
            .count();
        let new: Vec<&Owner> = credits
            .iter()
            .map(|(owner, _)| owner)
            .filter(|owner| is_sub_of_merchant(owner) && !self.accounts.contains_key(*owner))
            .collect();
        if existing + new.len() > SUBACCOUNTS_MAX {
            return Err("subaccount_limit");
        }
        for owner in new {
            self.accounts.insert(
                owner.clone(),
                Account {
                    floor: Some(0),
                    ..Default::default()
                },
            );
        }
        Ok(())
    }

    fn exists(&self, owner: &Owner) -> Result<(), Refused> {
        if self.accounts.contains_key(owner) {
            Ok(())
        } else {
            Err("account_not_found")
        }
    }

    fn post(&mut self, legs: &[(Owner, i64)]) {
        assert_eq!(legs.iter().map(|(_, a)| a).sum::<i64>(), 0);
        for (owner, amount) in legs.iter().filter(|(_, a)| *a != 0) {
            let floor = match owner {
                Owner::World => None,
                _ => Some(0),
            };
            self.accounts
                .entry(owner.clone())
                .or_insert(Account {
                    floor,
                    ..Default::default()
                })
                .balance += amount;
        }
    }

    /// Applies one op; the result code the ledger must give.
    fn apply(&mut self, op: &Op) -> &'static str {
        let request_key = (op.principal.clone(), op.key.as_str().to_owned());
        let fields = op.kind.fields();
        if let Some((stored, code)) = self.requests.get(&request_key) {
            return if *stored == fields { code } else { "conflict" };
        }
        let code = match self.decide(op) {
            Ok(()) => "applied",
            Err(code) => code,
        };
        self.requests.insert(request_key, (fields, code));
        code
    }

    fn allow(op: &Op, rightful: Principal) -> Result<(), Refused> {
        if op.principal == Principal::Admin || op.principal == rightful {
            Ok(())
        } else {
            Err("forbidden")
        }
    }

    fn decide(&mut self, op: &Op) -> Result<(), Refused> {
        let at_ms = op.at_ms;
        match &op.kind {
            OpKind::OpenAccount {
                owner, overdraft, ..
            } => {
                Self::allow(op, Principal::Admin)?;
                if self.accounts.contains_key(owner) {
                    return Err("account_exists");
                }
                let floor = match overdraft {
                    Overdraft::Limit(limit) => -limit.minor(),
                    _ => 0,
                };
                self.accounts.insert(
                    owner.clone(),
                    Account {
                        floor: Some(floor),
                        ..Default::default()
                    },
                );
            }
            OpKind::Deposit { user, amount } => {
                Self::allow(op, Principal::User(user.clone()))?;
                let owner = Owner::user(user);
                self.exists(&owner)?;
                self.post(&[(Owner::World, -amount.minor()), (owner, amount.minor())]);
            }
            OpKind::Payout {
                merchant,
                account,
                amount,
            } => {
                Self::allow(op, Principal::Merchant(merchant.clone()))?;
                let owner = Owner::merchant(merchant, account);
                self.exists(&owner)?;
                self.funds(&owner, amount.minor())?;
                self.post(&[(owner, -amount.minor()), (Owner::World, amount.minor())]);
            }
            OpKind::Payment {
                payer,
                merchant,
                payment_id,
                amount,
                decision,
                ..
            }
            | OpKind::Authorize {
                payer,
                merchant,
                payment_id,
                amount,
                decision,
                ..
            } => {
                Self::allow(op, Principal::User(payer.clone()))?;
                let PaymentDecided::Approved { settlement, .. } = decision else {
                    return Err("payment_declined");
                };
                let expires_at_ms = match &op.kind {
                    OpKind::Authorize { expires_at_ms, .. } => Some(*expires_at_ms),
                    _ => None,
                };
                if expires_at_ms.is_some_and(|e| e <= at_ms) {
                    return Err("invalid_expiry");
                }
                let payment_key = (merchant.to_string(), payment_id.clone());
                if self.payments.contains_key(&payment_key) {
                    return Err("payment_exists");
                }
                let payer_owner = Owner::user(payer);
                let main = Owner::merchant_main(merchant);
                self.exists(&payer_owner)?;
                self.exists(&main)?;
                let total = amount.minor();
                self.funds(&payer_owner, total)?;
                let fee = settlement.platform_fee.minor();
                let credits: Vec<(Owner, i64)> = settlement
                    .merchant_credits
                    .iter()
                    .filter(|(_, credit)| !credit.is_zero())
                    .map(|(sub, credit)| (Owner::merchant(merchant, sub), credit.minor()))
                    .collect();
                // Credit accounts are resolved at authorization too.
                self.open_subaccounts(merchant, &credits)?;
                self.payments.insert(
                    payment_key,
                    Payment {
                        payer: payer_owner.clone(),
                        hold: expires_at_ms.is_some(),
                        status: if expires_at_ms.is_some() {
                            "held"
                        } else {
                            "captured"
                        },
                        authorized: total,
                        fee,
                        credits: credits.clone(),
                        captured: if expires_at_ms.is_some() { 0 } else { total },
                        refunded: 0,
                        expires_at_ms: expires_at_ms.unwrap_or(i64::MAX),
                    },
                );
                if expires_at_ms.is_some() {
                    self.accounts.get_mut(&payer_owner).unwrap().held += total;
                    if fee > 0 {
                        // Credit accounts are resolved at authorization.
                        self.accounts.entry(Owner::Platform).or_insert(Account {
                            floor: Some(0),
                            ..Default::default()
                        });
                    }
                } else {
                    let mut legs = vec![(payer_owner, -total), (Owner::Platform, fee)];
                    legs.extend(credits);
                    self.post(&legs);
                }
            }
            OpKind::Capture {
                merchant,
                payment_id,
                amount,
            } => {
                Self::allow(op, Principal::Merchant(merchant.clone()))?;
                let key = (merchant.to_string(), payment_id.clone());
                let p = self.payments.get(&key).ok_or("payment_not_found")?.clone();
                Self::open_hold(&p)?;
                if at_ms >= p.expires_at_ms {
                    return Err("hold_expired");
                }
                let captured = amount.map_or(p.authorized, |a| a.minor());
                if captured > p.authorized {
                    return Err("capture_exceeds_authorized");
                }
                let fee = if captured == p.authorized {
                    p.fee
                } else {
                    let scaled = i128::from(p.fee) * i128::from(captured);
                    let total = i128::from(p.authorized);
                    let (q, r) = (scaled / total, scaled % total);
                    i64::try_from(if r * 2 >= total { q + 1 } else { q }).unwrap()
                };
                self.accounts.get_mut(&p.payer).unwrap().held -= p.authorized;
                let mut legs = vec![(p.payer.clone(), -captured), (Owner::Platform, fee)];
                if captured == p.authorized {
                    legs.extend(p.credits.iter().cloned());
                } else {
                    // A partial capture credits the main account alone.
                    legs.push((Owner::merchant_main(merchant), captured - fee));
                }
                self.post(&legs);
                let entry = self.payments.get_mut(&key).unwrap();
                entry.status = "captured";
                entry.captured = captured;
            }
            OpKind::Void {
                merchant,
                payment_id,
                ..
            } => {
                Self::allow(op, Principal::Merchant(merchant.clone()))?;
                let key = (merchant.to_string(), payment_id.clone());
                let p = self.payments.get(&key).ok_or("payment_not_found")?.clone();
                Self::open_hold(&p)?;
                self.accounts.get_mut(&p.payer).unwrap().held -= p.authorized;
                self.payments.get_mut(&key).unwrap().status = "voided";
            }
            OpKind::Refund {
                merchant,
                payment_id,
                amount,
                decision,
                ..
            } => {
                Self::allow(op, Principal::Merchant(merchant.clone()))?;
                let key = (merchant.to_string(), payment_id.clone());
                let p = self.payments.get(&key).ok_or("payment_not_found")?.clone();
                if p.status != "captured" {
                    return Err("payment_not_captured");
                }
                let fee = match decision {
                    RefundDecided::Denied { .. } => return Err("refund_denied"),
                    RefundDecided::Allowed { fee, .. } => fee.map_or(0, |f| f.minor()),
                };
                if fee > amount.minor() {
                    return Err("invalid_refund_fee");
                }
                if p.refunded + amount.minor() > p.captured {
                    return Err("refund_exceeds_captured");
                }
                let returned = amount.minor() - fee;
                let main = Owner::merchant_main(merchant);
                self.funds(&main, returned)?;
                self.post(&[(main, -returned), (p.payer.clone(), returned)]);
                self.payments.get_mut(&key).unwrap().refunded += amount.minor();
            }
        }
        Ok(())
    }

    fn open_hold(p: &Payment) -> Result<(), Refused> {
        if !p.hold {
            return Err("not_a_hold");
        }
        match p.status {
            "held" => Ok(()),
            "captured" => Err("already_captured"),
            "voided" => Err("already_voided"),
            _ => Err("hold_expired"),
        }
    }

    fn sweep(&mut self, now_ms: i64) -> usize {
        let mut released = 0;
        for p in self.payments.values_mut() {
            if p.status == "held" && p.expires_at_ms <= now_ms {
                p.status = "expired";
                self.accounts.get_mut(&p.payer).unwrap().held -= p.authorized;
                released += 1;
            }
        }
        released
    }
}

fn check_balances(fx: &Fixture, model: &Model) -> Result<(), TestCaseError> {
    let mut owners: Vec<Owner> = vec![Owner::Platform, Owner::World];
    for (who, name) in MERCHANTS.iter().enumerate() {
        owners.push(owner_of(who, false));
        owners.push(owner_of(who, true));
        for index in 0..SUBS.len() {
            owners.push(Owner::merchant(&merchant(name), &sub(index)));
        }
    }
    for owner in owners {
        let found = fx.ledger.balance(&owner, cur("EUR"));
        match (model.accounts.get(&owner), found) {
            (Some(expected), Ok(balance)) => {
                prop_assert_eq!(
                    (balance.available.minor(), balance.held.minor()),
                    (expected.balance - expected.held, expected.held),
                    "{}",
                    owner
                );
            }
            (None, Err(LedgerError::AccountNotFound { .. })) => {}
            (expected, found) => {
                prop_assert!(false, "{owner}: model {expected:?}, ledger {found:?}")
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_agrees_with_a_reference_model_after_every_batch(batches in prop::collection::vec(batch(), 1..24)) {
        let mut fx = Fixture::with_options(LedgerOptions {
            synchronous: Synchronous::Normal,
            merchant_subaccounts_max: SUBACCOUNTS_MAX,
            ..Default::default()
        });
        let mut model = Model::default();
        // Most accounts exist from the start; `mall` has none until an
        // admin opens it.
        let setup = [
            OpKind::OpenAccount { owner: owner_of(0, false), currency: cur("EUR"), overdraft: Overdraft::Limit(eur(100)) },
            OpKind::OpenAccount { owner: owner_of(1, false), currency: cur("EUR"), overdraft: Overdraft::None },
            OpKind::OpenAccount { owner: owner_of(0, true), currency: cur("EUR"), overdraft: Overdraft::None },
            OpKind::Deposit { user: user("alice"), amount: eur(1_000) },
            OpKind::Deposit { user: user("bob"), amount: eur(500) },
        ];
        for (i, kind) in setup.into_iter().enumerate() {
            let op = Op { principal: Principal::Admin, key: key(&format!("setup{i}")), at_ms: fx.now_ms, kind };
            prop_assert_eq!(model.apply(&op), "applied");
            prop_assert_eq!(code(&fx.ledger.apply(op).unwrap()), "applied");
        }
        let mut sent: Vec<Op> = Vec::new();
        for batch in batches {
            match batch {
                Batch::Ops(requests) => {
                    let mut ops = Vec::new();
                    for request in &requests {
                        fx.now_ms += request.advance_ms;
                        let op = match &request.retry {
                            Some(index) if !sent.is_empty() => {
                                Op { at_ms: fx.now_ms, ..sent[index.index(sent.len())].clone() }
                            }
                            _ => to_op(request, fx.now_ms),
                        };
                        sent.push(op.clone());
                        ops.push(op);
                    }
                    let expected: Vec<&str> = ops.iter().map(|op| model.apply(op)).collect();
                    let results = fx.ledger.apply_batch(ops.clone()).unwrap();
                    let found: Vec<&str> = results.iter().map(code).collect();
                    prop_assert_eq!(&found, &expected, "ops: {:#?}", ops);
                    // Replays carry the stored outcome, not a fresh one.
                    for (op, result) in ops.iter().zip(&results) {
                        if result.is_replayed() {
                            let again = fx.ledger.lookup(&op.principal, &op.key, &op.kind.fields()).unwrap();
                            prop_assert_eq!(again.as_ref().and_then(|r| r.outcome()), result.outcome());
                        }
                    }
                }
                Batch::Sweep { advance_ms } => {
                    fx.now_ms += advance_ms;
                    let released = fx.ledger.release_expired_holds(fx.now_ms).unwrap();
                    prop_assert_eq!(released.len(), model.sweep(fx.now_ms));
                }
            }
            check_balances(&fx, &model)?;
        }
        let report = fx.ledger.verify().unwrap();
        prop_assert!(report.is_clean(), "{}", report);
    }
}
