//! Same key, same parameters: the stored outcome again. Same key, different
//! parameters: a conflict naming the fields. Different principal: a new
//! request.

use std::collections::BTreeMap;

use wasmpay_ledger::{Ledger, LedgerOptions, Op, OpKind, OpResult, Principal};

use crate::support::*;

fn op(principal: Principal, request: &str, kind: OpKind) -> Op {
    Op {
        principal,
        key: key(request),
        at_ms: 5_000,
        kind,
    }
}

#[test]
fn a_redelivered_payment_is_answered_not_applied_twice() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let alice_p = Principal::User(user("alice"));
    let pay = op(
        alice_p.clone(),
        "r1",
        payment("alice", "shop", "r1", eur(100), 100),
    );
    let first = fx.ledger.apply(pay.clone()).unwrap();
    let mut later = pay.clone();
    later.at_ms += 60_000;
    let second = fx.ledger.apply(later).unwrap();
    assert!(!first.is_replayed());
    assert!(second.is_replayed());
    assert_eq!(first.outcome(), second.outcome());
    assert_eq!(fx.available(&alice()), 900);
    fx.assert_clean();
}

#[test]
fn a_refusal_is_stored_and_replayed_too() {
    let mut fx = Fixture::alice_and_shop(50);
    let pay = op(
        Principal::Admin,
        "r1",
        payment("alice", "shop", "r1", eur(100), 0),
    );
    let first = fx.ledger.apply(pay.clone()).unwrap();
    assert_eq!(code(&first), "insufficient_funds");
    fx.deposit("alice", eur(1_000));
    let again = fx.ledger.apply(pay).unwrap();
    assert!(again.is_replayed());
    assert_eq!(again.outcome(), first.outcome());
    fx.assert_clean();
}

#[test]
fn the_same_key_with_different_parameters_is_a_conflict_naming_the_fields() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let alice_p = Principal::User(user("alice"));
    fx.ledger
        .apply(op(
            alice_p.clone(),
            "r1",
            payment("alice", "shop", "r1", eur(100), 0),
        ))
        .unwrap();
    let mut changed = payment("alice", "shop", "r1", eur(200), 0);
    if let OpKind::Payment { metadata, .. } = &mut changed {
        metadata.insert("order".into(), "42".into());
    }
    let result = fx.ledger.apply(op(alice_p.clone(), "r1", changed)).unwrap();
    assert_eq!(
        result,
        OpResult::Conflict {
            differing: vec!["amount".into(), "metadata".into()]
        }
    );
    let other_kind = OpKind::Deposit {
        user: user("alice"),
        amount: eur(100),
    };
    let result = fx.ledger.apply(op(alice_p, "r1", other_kind)).unwrap();
    let OpResult::Conflict { differing } = result else {
        panic!("{result:?}")
    };
    assert!(differing.contains(&"op".to_owned()), "{differing:?}");
    assert_eq!(fx.available(&alice()), 900);
    fx.assert_clean();
}

#[test]
fn the_same_key_from_two_principals_is_two_requests() {
    let mut fx = Fixture::alice_and_shop(1_000);
    fx.open_user("bob");
    fx.deposit("bob", eur(1_000));
    let a = fx
        .ledger
        .apply(op(
            Principal::User(user("alice")),
            "same",
            payment("alice", "shop", "same", eur(1), 0),
        ))
        .unwrap();
    let b = fx
        .ledger
        .apply(op(
            Principal::User(user("bob")),
            "same",
            payment("bob", "shop", "same", eur(1), 0),
        ))
        .unwrap();
    assert!(!a.is_replayed() && !b.is_replayed());
    assert_eq!(code(&b), "applied");
    fx.assert_clean();
}

#[test]
fn lookup_answers_before_the_plugin_runs() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let principal = Principal::User(user("alice"));
    let kind = payment("alice", "shop", "r1", eur(100), 0);
    let fields = kind.fields();
    assert_eq!(
        fx.ledger.lookup(&principal, &key("r1"), &fields).unwrap(),
        None
    );
    let applied = fx
        .ledger
        .apply(op(principal.clone(), "r1", kind.clone()))
        .unwrap();
    let found = fx
        .ledger
        .lookup(&principal, &key("r1"), &fields)
        .unwrap()
        .unwrap();
    assert!(found.is_replayed());
    assert_eq!(found.outcome(), applied.outcome());
    let mut other = BTreeMap::new();
    other.extend(fields);
    other.insert("memo", "\"hi\"".to_owned());
    assert!(matches!(
        fx.ledger.lookup(&principal, &key("r1"), &other).unwrap(),
        Some(OpResult::Conflict { .. })
    ));
    fx.assert_clean();
}

#[test]
fn duplicates_inside_one_batch_are_applied_once() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let pay = op(
        Principal::Admin,
        "r1",
        payment("alice", "shop", "r1", eur(100), 0),
    );
    let results = fx.ledger.apply_batch(vec![pay.clone(), pay]).unwrap();
    assert!(!results[0].is_replayed());
    assert!(results[1].is_replayed());
    assert_eq!(fx.available(&alice()), 900);
    fx.assert_clean();
}

#[test]
fn purging_drops_only_records_older_than_the_retention() {
    let mut fx = Fixture::alice_and_shop(1_000);
    let day = wasmpay_ledger::IDEMPOTENCY_RETENTION_MS_MIN;
    let pay = op(
        Principal::Admin,
        "r1",
        payment("alice", "shop", "r1", eur(100), 0),
    );
    fx.ledger.apply(pay.clone()).unwrap();
    let retention = fx.ledger.options().idempotency_retention_ms;
    assert_eq!(
        fx.ledger.purge_idempotency(pay.at_ms + retention).unwrap(),
        0
    );
    assert!(
        fx.ledger
            .purge_idempotency(pay.at_ms + retention + day)
            .unwrap()
            >= 1
    );
    // The key is forgotten, but the payment id still guards against a
    // second charge.
    let again = fx.ledger.apply(pay).unwrap();
    assert_eq!(code(&again), "payment_exists");
    fx.assert_clean();
}

#[test]
fn retention_shorter_than_a_day_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        idempotency_retention_ms: 1_000,
        ..Default::default()
    };
    let error = Ledger::open(&dir.path().join("l.db"), options).unwrap_err();
    assert!(error.to_string().contains("24 h"), "{error}");
}
