//! Each operation's effect on balances, and every refusal it can give.

use std::collections::BTreeMap;

use wasmpay_domain::{Money, Quote, Settlement, SubAccount};
use wasmpay_ledger::{
    Effect, OpKind, OpResult, Outcome, Overdraft, Owner, PaymentDecided, Principal, RefundDecided,
    Refusal,
};

use crate::support::*;

#[test]
fn a_deposit_moves_money_from_the_world_to_the_user() {
    let fx = Fixture::alice_and_shop(10_000);
    assert_eq!(fx.available(&alice()), 10_000);
    assert_eq!(fx.available(&Owner::World), -10_000);
    fx.assert_clean();
}

#[test]
fn a_payment_debits_the_payer_and_credits_merchant_and_platform() {
    let mut fx = Fixture::alice_and_shop(10_000);
    let result = fx.as_user("alice", payment("alice", "shop", "p1", eur(2_000), 150));
    let receipt = result.receipt().expect("applied");
    let Effect::Paid {
        settlement,
        payer_balance,
        plugin,
        ..
    } = &receipt.effect
    else {
        panic!("{receipt:?}")
    };
    assert_eq!(settlement.platform_fee, eur(30));
    assert_eq!(payer_balance.available, eur(8_000));
    assert_eq!(plugin.as_ref(), Some(&crate::support::plugin()));
    assert_eq!(fx.available(&alice()), 8_000);
    assert_eq!(fx.available(&shop()), 1_970);
    assert_eq!(fx.available(&Owner::Platform), 30);
    fx.assert_clean();
}

#[test]
fn split_credits_open_merchant_sub_accounts_on_first_use() {
    let mut fx = Fixture::alice_and_shop(10_000);
    let mut settlement = settle(eur(1_000), 0);
    settlement
        .merchant_credits
        .insert(SubAccount::new("tips").unwrap(), eur(100));
    settlement
        .merchant_credits
        .insert(SubAccount::main(), eur(900));
    let kind = OpKind::Payment {
        payer: user("alice"),
        merchant: merchant("shop"),
        payment_id: pid("alice", "split"),
        amount: eur(1_000),
        memo: Some("lunch".into()),
        metadata: BTreeMap::new(),
        decision: PaymentDecided::Approved {
            quote: Quote::default(),
            settlement,
            plugin: None,
        },
    };
    assert_eq!(code(&fx.as_user("alice", kind)), "applied");
    let tips = Owner::merchant(&merchant("shop"), &SubAccount::new("tips").unwrap());
    assert_eq!(fx.available(&tips), 100);
    assert_eq!(fx.available(&shop()), 900);
    fx.assert_clean();
}

#[test]
fn a_payment_beyond_the_payers_funds_is_refused_with_insufficient_funds() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let result = fx.as_user("alice", payment("alice", "shop", "p1", eur(1_001), 0));
    assert_eq!(code(&result), "insufficient_funds");
    assert_eq!(fx.available(&alice()), 1_000);
    assert_eq!(fx.available(&shop()), 0);
    fx.assert_clean();
}

#[test]
fn an_overdraft_limit_lets_a_user_go_negative_down_to_the_limit() {
    let mut fx = Fixture::new();
    fx.open(alice(), "EUR", Overdraft::Limit(eur(500)));
    fx.open_merchant("shop");
    assert_eq!(
        code(&fx.as_user("alice", payment("alice", "shop", "a", eur(500), 0))),
        "applied"
    );
    assert_eq!(fx.available(&alice()), -500);
    let result = fx.as_user("alice", payment("alice", "shop", "b", eur(1), 0));
    assert_eq!(code(&result), "insufficient_funds");
    fx.assert_clean();
}

#[test]
fn paying_from_or_to_a_missing_account_is_refused_with_account_not_found() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let to_nowhere = fx.as_user("alice", payment("alice", "nowhere", "p1", eur(10), 0));
    assert_eq!(code(&to_nowhere), "account_not_found");
    let from_nobody = fx.as_user("bob", payment("bob", "shop", "p1", eur(10), 0));
    assert_eq!(code(&from_nobody), "account_not_found");
    let deposit = fx.deposit("bob", eur(5));
    assert_eq!(code(&deposit), "account_not_found");
    fx.assert_clean();
}

#[test]
fn a_payment_in_a_currency_the_payer_has_no_account_in_is_refused() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let usd = Money::from_minor(10, cur("USD"));
    let result = fx.as_user("alice", payment("alice", "shop", "p1", usd, 0));
    assert_eq!(code(&result), "account_not_found");
    fx.assert_clean();
}

#[test]
fn a_settlement_in_another_currency_is_refused_with_currency_mismatch() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let usd = Money::from_minor(10, cur("USD"));
    let kind = OpKind::Payment {
        payer: user("alice"),
        merchant: merchant("shop"),
        payment_id: pid("alice", "p1"),
        amount: eur(10),
        memo: None,
        metadata: BTreeMap::new(),
        decision: PaymentDecided::Approved {
            quote: Quote::default(),
            settlement: settle(usd, 0),
            plugin: None,
        },
    };
    let result = fx.as_user("alice", kind);
    assert!(matches!(
        result.refusal(),
        Some(Refusal::CurrencyMismatch { .. })
    ));
    fx.assert_clean();
}

#[test]
fn an_unbalanced_settlement_is_refused_not_posted() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let mut settlement = settle(eur(100), 0);
    settlement.platform_fee = eur(1);
    let kind = settled_payment("p1", settlement);
    assert_eq!(code(&fx.as_user("alice", kind)), "invalid_settlement");
    assert_eq!(fx.available(&alice()), 1_000);
    fx.assert_clean();
}

#[test]
fn a_declined_payment_is_recorded_with_no_postings() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let mut kind = payment("alice", "shop", "p1", eur(10), 0);
    if let OpKind::Payment { decision, .. } = &mut kind {
        *decision = declined("velocity_count_exceeded");
    }
    let result = fx.as_user("alice", kind);
    let refusal = result.refusal().unwrap();
    assert_eq!(refusal.code(), "payment_declined");
    assert_eq!(
        refusal.decline().unwrap().code.as_str(),
        "velocity_count_exceeded"
    );
    assert_eq!(fx.available(&alice()), 1_000);
    fx.assert_clean();
}

#[test]
fn a_payment_id_is_paid_at_most_once_even_under_another_key() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let kind = payment("alice", "shop", "p1", eur(10), 0);
    assert_eq!(code(&fx.as_user("alice", kind.clone())), "applied");
    // A new key (as after the idempotency record was purged), same payment id.
    assert_eq!(code(&fx.as_user("alice", kind)), "payment_exists");
    assert_eq!(fx.available(&alice()), 990);
    fx.assert_clean();
}

#[test]
fn principals_may_only_act_for_themselves() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let cases = [
        (
            Principal::User(user("bob")),
            payment("alice", "shop", "p1", eur(10), 0),
        ),
        (
            Principal::Merchant(merchant("other")),
            refund("shop", &pid("alice", "p1"), eur(1), None),
        ),
        (
            Principal::User(user("alice")),
            OpKind::OpenAccount {
                owner: alice(),
                currency: cur("USD"),
                overdraft: Overdraft::Unbounded,
            },
        ),
        (
            Principal::User(user("alice")),
            OpKind::Payout {
                merchant: merchant("shop"),
                account: SubAccount::main(),
                amount: eur(1),
            },
        ),
    ];
    for (principal, kind) in cases {
        let result = fx.run(principal.clone(), kind);
        assert_eq!(code(&result), "forbidden", "{principal:?}");
    }
    fx.assert_clean();
}

#[test]
fn opening_an_account_twice_or_a_platform_account_is_refused() {
    let mut fx = Fixture::alice_and_shop(0);
    assert_eq!(
        code(&fx.open(alice(), "EUR", Overdraft::None)),
        "account_exists"
    );
    assert_eq!(
        code(&fx.open(Owner::World, "EUR", Overdraft::None)),
        "account_not_openable"
    );
    assert_eq!(
        code(&fx.open(alice(), "USD", Overdraft::Limit(eur(5)))),
        "currency_mismatch"
    );
    assert_eq!(code(&fx.open(alice(), "USD", Overdraft::None)), "applied");
    fx.assert_clean();
}

#[test]
fn zero_and_negative_amounts_are_refused_with_invalid_amount() {
    let mut fx = Fixture::alice_and_shop(1_000);
    assert_eq!(code(&fx.deposit("alice", eur(0))), "invalid_amount");
    assert_eq!(code(&fx.deposit("alice", eur(-5))), "invalid_amount");
    let mut kind = payment("alice", "shop", "p1", eur(1), 0);
    if let OpKind::Payment { amount, .. } = &mut kind {
        *amount = eur(-1);
    }
    assert_eq!(code(&fx.as_user("alice", kind)), "invalid_amount");
    fx.assert_clean();
}

/// alice with `funds` and shop, on a ledger that allows each merchant `max`
/// sub-accounts.
fn alice_and_shop_with_subaccounts_max(max: usize, funds: i64) -> Fixture {
    let mut fx = Fixture::with_options(wasmpay_ledger::LedgerOptions {
        merchant_subaccounts_max: max,
        ..Default::default()
    });
    fx.open_user("alice");
    fx.open_merchant("shop");
    fx.deposit("alice", eur(funds));
    fx
}

/// alice pays shop 1.00 EUR, credited in equal parts to `subs`, shop's
/// sub-accounts (opened on first credit, within the limit).
fn split_payment(request: &str, subs: &[&str]) -> OpKind {
    let mut settlement = settle(eur(100), 0);
    settlement.merchant_credits.clear();
    for sub in subs {
        settlement
            .merchant_credits
            .insert(SubAccount::new(*sub).unwrap(), eur(100 / subs.len() as i64));
    }
    settled_payment(request, settlement)
}

/// alice pays shop 1.00 EUR, approved with `settlement` as it stands.
fn settled_payment(request: &str, settlement: Settlement) -> OpKind {
    OpKind::Payment {
        payer: user("alice"),
        merchant: merchant("shop"),
        payment_id: pid("alice", request),
        amount: eur(100),
        memo: None,
        metadata: BTreeMap::new(),
        decision: PaymentDecided::Approved {
            quote: Quote::default(),
            settlement,
            plugin: None,
        },
    }
}

#[test]
fn merchant_sub_accounts_are_limited() {
    let mut fx = alice_and_shop_with_subaccounts_max(2, 10_000);
    let pay_to = |fx: &mut Fixture, sub: &str, request: &str| {
        fx.as_user("alice", split_payment(request, &[sub]))
    };
    assert_eq!(code(&pay_to(&mut fx, "a", "1")), "applied");
    assert_eq!(code(&pay_to(&mut fx, "b", "2")), "applied");
    assert_eq!(code(&pay_to(&mut fx, "a", "3")), "applied");
    let refused = pay_to(&mut fx, "c", "4");
    assert!(matches!(
        refused.refusal(),
        Some(Refusal::SubaccountLimit { max: 2, .. })
    ));
    assert_eq!(fx.available(&alice()), 9_700);
    fx.assert_clean();
}

#[test]
fn a_payout_moves_merchant_money_to_the_world_within_its_balance() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "p1", eur(500), 0));
    let payout = |amount| OpKind::Payout {
        merchant: merchant("shop"),
        account: SubAccount::main(),
        amount,
    };
    assert_eq!(
        code(&fx.as_merchant("shop", payout(eur(501)))),
        "insufficient_funds"
    );
    assert_eq!(code(&fx.as_merchant("shop", payout(eur(200)))), "applied");
    assert_eq!(fx.available(&shop()), 300);
    assert_eq!(fx.available(&Owner::World), -800);
    let missing = OpKind::Payout {
        merchant: merchant("shop"),
        account: SubAccount::new("tips").unwrap(),
        amount: eur(1),
    };
    assert_eq!(code(&fx.as_merchant("shop", missing)), "account_not_found");
    fx.assert_clean();
}

#[test]
fn refunds_return_money_less_the_fee_and_never_exceed_what_was_captured() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "p1", eur(600), 0));
    let id = pid("alice", "p1");
    let first = fx.as_merchant("shop", refund("shop", &id, eur(400), Some(eur(50))));
    let Some(Effect::Refunded {
        refunded_total,
        payer_balance,
        ..
    }) = first.receipt().map(|r| &r.effect)
    else {
        panic!("{first:?}")
    };
    assert_eq!(*refunded_total, eur(400));
    assert_eq!(payer_balance.available, eur(400 + 350));
    let over = fx.as_merchant("shop", refund("shop", &id, eur(201), None));
    assert_eq!(code(&over), "refund_exceeds_captured");
    let rest = fx.as_merchant("shop", refund("shop", &id, eur(200), None));
    assert_eq!(code(&rest), "applied");
    assert_eq!(fx.available(&alice()), 950);
    assert_eq!(fx.available(&shop()), 50);
    let info = fx.ledger.payment(&merchant("shop"), &id).unwrap().unwrap();
    assert_eq!(info.refunded, eur(600));
    fx.assert_clean();
}

#[test]
fn refunds_of_unknown_payments_denied_refunds_and_bad_fees_are_refused() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "p1", eur(600), 0));
    let id = pid("alice", "p1");
    let unknown = fx.as_merchant("shop", refund("shop", &pid("alice", "zz"), eur(1), None));
    assert_eq!(code(&unknown), "payment_not_found");
    let denied = OpKind::Refund {
        merchant: merchant("shop"),
        payment_id: id.clone(),
        amount: eur(10),
        reason: "changed my mind".into(),
        decision: RefundDecided::Denied {
            decline: wasmpay_domain::Decline {
                code: wasmpay_domain::Code::new("final_sale").unwrap(),
                message: "final sale".into(),
            },
            plugin: None,
        },
    };
    assert_eq!(code(&fx.as_merchant("shop", denied)), "refund_denied");
    let fee = fx.as_merchant("shop", refund("shop", &id, eur(10), Some(eur(11))));
    assert_eq!(code(&fee), "invalid_refund_fee");
    let usd = Money::from_minor(10, cur("USD"));
    let mismatch = fx.as_merchant("shop", refund("shop", &id, usd, None));
    assert_eq!(code(&mismatch), "currency_mismatch");
    assert_eq!(fx.available(&alice()), 400);
    fx.assert_clean();
}

#[test]
fn a_refund_the_merchant_cannot_cover_is_refused_with_insufficient_funds() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "p1", eur(600), 0));
    fx.as_merchant(
        "shop",
        OpKind::Payout {
            merchant: merchant("shop"),
            account: SubAccount::main(),
            amount: eur(600),
        },
    );
    let result = fx.as_merchant("shop", refund("shop", &pid("alice", "p1"), eur(100), None));
    assert_eq!(code(&result), "insufficient_funds");
    fx.assert_clean();
}

#[test]
fn one_refused_op_in_a_batch_does_not_fail_its_neighbours() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let ops = vec![
        fx.op(Principal::Admin, payment("alice", "shop", "a", eur(300), 0)),
        fx.op(
            Principal::Admin,
            payment("alice", "shop", "b", eur(5_000), 0),
        ),
        fx.op(Principal::Admin, payment("alice", "shop", "c", eur(300), 0)),
    ];
    let results = fx.ledger.apply_batch(ops).unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["applied", "insufficient_funds", "applied"]);
    assert_eq!(fx.available(&alice()), 400);
    fx.assert_clean();
}

#[test]
fn a_refusal_after_writes_in_a_batch_is_undone_and_its_neighbours_stand() {
    // With room for one sub-account, a payment crediting two new ones opens
    // the first and is then refused at the second: the only kind of refusal
    // that comes after the operation wrote, so the batch has to run again
    // with savepoints. Refusals before any write (insufficient funds) do not.
    let mut fx = alice_and_shop_with_subaccounts_max(1, 1_000);
    let ops = vec![
        fx.op(Principal::Admin, payment("alice", "shop", "a", eur(300), 0)),
        fx.op(Principal::Admin, split_payment("b", &["tips", "vat"])),
        fx.op(
            Principal::Admin,
            payment("alice", "shop", "c", eur(5_000), 0),
        ),
        fx.op(Principal::Admin, payment("alice", "shop", "d", eur(300), 0)),
    ];
    let rerun_before = fx.ledger.batches_rerun();
    let results = fx.ledger.apply_batch(ops).unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(
        codes,
        [
            "applied",
            "subaccount_limit",
            "insufficient_funds",
            "applied"
        ]
    );
    assert_eq!(fx.ledger.batches_rerun(), rerun_before + 1);
    // The refused payment's first sub-account was undone with it.
    let tips = Owner::merchant(&merchant("shop"), &SubAccount::new("tips").unwrap());
    assert!(!fx.reader().account_exists(&tips, cur("EUR")).unwrap());
    assert_eq!(fx.available(&alice()), 400);
    // Every op of the rerun has its own journal entry, consecutive: nothing
    // of the abandoned attempt is left in between.
    let seq = |i: usize| results[i].receipt().unwrap().seq;
    assert_eq!(seq(3), seq(0) + 3);

    // A batch whose only refusals come before any write runs once.
    let ops = vec![
        fx.op(Principal::Admin, split_payment("e", &["tips"])),
        fx.op(
            Principal::Admin,
            payment("alice", "shop", "f", eur(5_000), 0),
        ),
        fx.op(Principal::Admin, split_payment("g", &["vat"])),
    ];
    let results = fx.ledger.apply_batch(ops).unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["applied", "insufficient_funds", "subaccount_limit"]);
    assert_eq!(fx.ledger.batches_rerun(), rerun_before + 1);
    assert!(fx.reader().account_exists(&tips, cur("EUR")).unwrap());
    fx.assert_clean();
}

#[test]
fn receipts_carry_consecutive_journal_numbers() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let a = fx.as_user("alice", payment("alice", "shop", "a", eur(1), 0));
    let b = fx.as_user("alice", payment("alice", "shop", "b", eur(1), 0));
    assert_eq!(a.receipt().unwrap().seq + 1, b.receipt().unwrap().seq);
    fx.assert_clean();
}

#[test]
fn history_lists_an_owners_postings_newest_first_in_pages() {
    let mut fx = Fixture::alice_and_shop(1_000);
    for i in 0..5 {
        fx.as_user(
            "alice",
            payment("alice", "shop", &format!("p{i}"), eur(10), 0),
        );
    }
    let reader = fx.reader();
    let first = reader.history(&alice(), None, 4).unwrap();
    assert_eq!(first.items.len(), 4);
    // Newest first: the last payment, with what it left.
    assert_eq!(first.items[0].op, "payment");
    assert_eq!(first.items[0].payment_id, Some(pid("alice", "p4")));
    assert!(!first.items[0].request_id.is_empty());
    assert_eq!(first.items[0].amount, eur(-10));
    assert_eq!(first.items[0].balance_after, eur(950));
    assert_eq!(first.items[0].merchant, Some(merchant("shop")));
    assert_eq!(first.items[0].payer, Some(user("alice")));
    assert_eq!(first.items[0].principal, "user:alice");
    let second = reader.history(&alice(), first.next_after, 4).unwrap();
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_after, None);
    assert_eq!(second.items[0].payment_id, Some(pid("alice", "p0")));
    assert_eq!(second.items[0].balance_after, eur(990));
    // The opening deposit: from outside, no merchant, no payer.
    assert_eq!(second.items[1].op, "deposit");
    assert_eq!(
        (&second.items[1].merchant, &second.items[1].payer),
        (&None, &None)
    );
    let seqs: Vec<i64> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|e| e.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert!(second.to_string().contains("payment"));
    fx.assert_clean();
}

#[test]
fn history_names_the_payer_and_the_reason_of_a_refund_to_the_merchant() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "p", eur(10), 0));
    fx.as_merchant("shop", refund("shop", &pid("alice", "p"), eur(4), None));
    let page = fx.reader().history(&shop(), None, 10).unwrap();
    let refund = &page.items[0];
    assert_eq!(refund.op, "refund");
    assert_eq!(refund.amount, eur(-4));
    assert_eq!(refund.payer, Some(user("alice")));
    assert_eq!(refund.memo.as_deref(), Some("returned"));
    assert_eq!(refund.principal, "merchant:shop");
    fx.assert_clean();
}

#[test]
fn payer_activity_counts_approved_payments_since_a_time() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.as_user("alice", payment("alice", "shop", "a", eur(100), 0));
    fx.now_ms += 10_000;
    fx.as_user("alice", payment("alice", "shop", "b", eur(200), 0));
    fx.as_user("alice", payment("alice", "shop", "c", eur(5_000), 0));
    let reader = fx.reader();
    let since = fx.now_ms - 5_000;
    let (count, volume) = reader
        .payer_activity(&merchant("shop"), &user("alice"), cur("EUR"), since)
        .unwrap();
    assert_eq!((count, volume), (1, eur(200)));
    let (count, _) = reader
        .payer_activity(&merchant("shop"), &user("alice"), cur("EUR"), 0)
        .unwrap();
    assert_eq!(count, 2);
    fx.assert_clean();
}

#[test]
fn outcomes_serialize_to_json_and_back() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let result = fx.as_user("alice", payment("alice", "shop", "a", eur(100), 250));
    let json = serde_json::to_string(&result).unwrap();
    let back: OpResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, result);
    let Some(Outcome::Applied(_)) = back.outcome() else {
        panic!("{json}")
    };
    fx.assert_clean();
}
