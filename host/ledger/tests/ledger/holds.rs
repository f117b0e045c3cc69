//! Two-phase payments: authorize (available -> held), then capture in full
//! or in part, void, or let expire.

use wasmpay_domain::Money;
use wasmpay_ledger::{Effect, OpKind, Owner, PaymentStatus};

use crate::support::*;

fn capture(request: &str, amount: Option<Money>) -> OpKind {
    OpKind::Capture {
        merchant: merchant("shop"),
        payment_id: pid("alice", request),
        amount,
    }
}

fn void(request: &str) -> OpKind {
    OpKind::Void {
        merchant: merchant("shop"),
        payment_id: pid("alice", request),
        reason: None,
    }
}

/// Alice with 1,000.00 EUR and an authorization `h` of 400.00 at 1.5%.
fn held() -> Fixture {
    let mut fx = Fixture::alice_and_shop(100_000);
    let expires = fx.now_ms + 60_000;
    let result = fx.as_user(
        "alice",
        authorize("alice", "shop", "h", eur(40_000), 150, expires),
    );
    assert_eq!(code(&result), "applied");
    fx
}

#[test]
fn an_authorization_moves_the_total_from_available_to_held() {
    let fx = held();
    assert_eq!(fx.available(&alice()), 60_000);
    assert_eq!(fx.held(&alice()), 40_000);
    assert_eq!(fx.available(&shop()), 0);
    fx.assert_clean();
}

#[test]
fn an_authorization_beyond_the_available_balance_is_refused() {
    let mut fx = held();
    let expires = fx.now_ms + 1;
    let result = fx.as_user(
        "alice",
        authorize("alice", "shop", "h2", eur(60_001), 0, expires),
    );
    assert_eq!(code(&result), "insufficient_funds");
    let past = fx.as_user(
        "alice",
        authorize("alice", "shop", "h3", eur(1), 0, fx.now_ms),
    );
    assert_eq!(code(&past), "invalid_expiry");
    fx.assert_clean();
}

#[test]
fn a_full_capture_posts_the_authorized_settlement_exactly() {
    let mut fx = held();
    let result = fx.as_merchant("shop", capture("h", None));
    let Some(Effect::Captured {
        settlement,
        released,
        ..
    }) = result.receipt().map(|r| &r.effect)
    else {
        panic!("{result:?}")
    };
    assert_eq!(settlement.platform_fee, eur(600));
    assert_eq!(*released, eur(0));
    assert_eq!(fx.available(&alice()), 60_000);
    assert_eq!(fx.held(&alice()), 0);
    assert_eq!(fx.available(&shop()), 39_400);
    assert_eq!(fx.available(&Owner::Platform), 600);
    fx.assert_clean();
}

#[test]
fn a_partial_capture_pays_main_less_a_proportional_fee_and_releases_the_rest() {
    let mut fx = held();
    let result = fx.as_merchant("shop", capture("h", Some(eur(10_001))));
    let Some(Effect::Captured {
        settlement,
        released,
        ..
    }) = result.receipt().map(|r| &r.effect)
    else {
        panic!("{result:?}")
    };
    // 600 * 10001 / 40000 = 150.015 -> 150
    assert_eq!(settlement.platform_fee, eur(150));
    assert_eq!(*released, eur(29_999));
    assert_eq!(fx.available(&alice()), 100_000 - 10_001);
    assert_eq!(fx.held(&alice()), 0);
    assert_eq!(fx.available(&shop()), 10_001 - 150);
    let info = fx
        .reader()
        .payment(&merchant("shop"), &pid("alice", "h"))
        .unwrap()
        .unwrap();
    assert_eq!(info.status, PaymentStatus::Captured);
    assert_eq!(info.captured, eur(10_001));
    fx.assert_clean();
}

#[test]
fn a_hold_is_captured_at_most_once() {
    let mut fx = held();
    assert_eq!(code(&fx.as_merchant("shop", capture("h", None))), "applied");
    assert_eq!(
        code(&fx.as_merchant("shop", capture("h", None))),
        "already_captured"
    );
    assert_eq!(fx.available(&alice()), 60_000);
    fx.assert_clean();
}

#[test]
fn a_capture_beyond_the_authorized_total_is_refused() {
    let mut fx = held();
    let result = fx.as_merchant("shop", capture("h", Some(eur(40_001))));
    assert_eq!(code(&result), "capture_exceeds_authorized");
    let usd = Money::from_minor(1, cur("USD"));
    assert_eq!(
        code(&fx.as_merchant("shop", capture("h", Some(usd)))),
        "currency_mismatch"
    );
    fx.assert_clean();
}

#[test]
fn a_capture_after_expiry_is_refused_with_hold_expired() {
    let mut fx = held();
    fx.now_ms += 60_000;
    assert_eq!(
        code(&fx.as_merchant("shop", capture("h", None))),
        "hold_expired"
    );
    assert_eq!(fx.held(&alice()), 40_000);
    fx.assert_clean();
}

#[test]
fn a_void_releases_the_hold_and_a_void_after_capture_is_refused() {
    let mut fx = held();
    assert_eq!(code(&fx.as_merchant("shop", void("h"))), "applied");
    assert_eq!(fx.available(&alice()), 100_000);
    assert_eq!(code(&fx.as_merchant("shop", void("h"))), "already_voided");
    assert_eq!(
        code(&fx.as_merchant("shop", capture("h", None))),
        "already_voided"
    );

    let mut fx = held();
    fx.as_merchant("shop", capture("h", None));
    assert_eq!(code(&fx.as_merchant("shop", void("h"))), "already_captured");
    fx.assert_clean();
}

#[test]
fn capturing_or_voiding_a_plain_payment_or_unknown_id_is_refused() {
    let mut fx = held();
    fx.as_user("alice", payment("alice", "shop", "p", eur(1), 0));
    assert_eq!(
        code(&fx.as_merchant("shop", capture("p", None))),
        "not_a_hold"
    );
    assert_eq!(
        code(&fx.as_merchant("shop", void("nope"))),
        "payment_not_found"
    );
    fx.assert_clean();
}

#[test]
fn expired_holds_are_released_by_the_sweep_and_journaled() {
    let mut fx = held();
    assert!(
        fx.ledger
            .release_expired_holds(fx.now_ms)
            .unwrap()
            .is_empty()
    );
    let receipts = fx.ledger.release_expired_holds(fx.now_ms + 60_000).unwrap();
    assert_eq!(receipts.len(), 1);
    assert!(matches!(receipts[0].effect, Effect::Expired { .. }));
    assert_eq!(fx.held(&alice()), 0);
    assert_eq!(fx.available(&alice()), 100_000);
    assert_eq!(code(&fx.as_merchant("shop", void("h"))), "hold_expired");
    assert!(
        fx.ledger
            .release_expired_holds(fx.now_ms + 120_000)
            .unwrap()
            .is_empty()
    );
    fx.assert_clean();
}

#[test]
fn a_captured_hold_can_be_refunded_up_to_the_captured_amount() {
    let mut fx = held();
    assert_eq!(
        code(&fx.as_merchant("shop", refund("shop", &pid("alice", "h"), eur(1), None))),
        "payment_not_captured"
    );
    fx.as_merchant("shop", capture("h", Some(eur(10_000))));
    let over = fx.as_merchant(
        "shop",
        refund("shop", &pid("alice", "h"), eur(10_001), None),
    );
    assert_eq!(code(&over), "refund_exceeds_captured");
    let ok = fx.as_merchant("shop", refund("shop", &pid("alice", "h"), eur(5_000), None));
    assert_eq!(code(&ok), "applied");
    fx.assert_clean();
}

#[test]
fn payer_activity_counts_open_holds_at_their_held_amount() {
    let fx = held();
    let (count, volume) = fx
        .reader()
        .payer_activity(&merchant("shop"), &user("alice"), cur("EUR"), 0)
        .unwrap();
    assert_eq!((count, volume), (1, eur(40_000)));
    fx.assert_clean();
}

#[test]
fn an_unreadable_row_refuses_only_its_op_and_is_not_stored() {
    let mut fx = held();
    rusqlite::Connection::open(fx.path())
        .unwrap()
        .execute("UPDATE payments SET settlement = 'garbage'", [])
        .unwrap();
    let ops = vec![
        fx.op(wasmpay_ledger::Principal::Admin, capture("h", None)),
        fx.op(
            wasmpay_ledger::Principal::Admin,
            payment("alice", "shop", "p", eur(1), 0),
        ),
    ];
    let retry = ops[0].clone();
    let results = fx.ledger.apply_batch(ops).unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["internal_error", "applied"]);
    // Not stored: a retry runs the operation again (and fails again here).
    let again = fx.ledger.apply(retry).unwrap();
    assert!(!again.is_replayed());
    assert_eq!(fx.held(&alice()), 40_000);
}
