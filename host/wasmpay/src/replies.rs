//! Ledger outcomes to reply and notification payloads.
//!
//! Every reply is built from the stored outcome alone, so a redelivered
//! request gets byte for byte the reply the first delivery got.

use wasmpay_domain::{Currency, Money, RequestId, SubAccount};
use wasmpay_ledger::{Effect, Ledger, Op, OpKind, OpResult, Outcome, Owner, Reader, Refusal};
use wasmpay_protocol::reply::{
    AccountBalance, BalanceResult, CaptureResult, DepositResult, EntryKind, HistoryEntry,
    HistoryResult, OpenAccountResult, Party, PayoutResult, PluginListResult, PluginUploadResult,
    PluginVersion, RefundResult, SettlementView, VoidResult,
};
use wasmpay_protocol::{
    Cursor, Notification, NotificationEvent, PaymentResult, PaymentStatus, Principal, encode_error,
    encode_ok, notification_topic,
};

use crate::handlers::ReplyTo;
use crate::mqtt::Outbound;

/// What the ledger holds of the payment an applied operation concerns,
/// when its reply needs it: only a capture, void or refund answers with it
/// (its payer, what is left to refund). A payment's or an authorization's
/// answer is all in its receipt and request, so reading the row back would
/// be wasted on the busiest path. Read on the writer's own connection,
/// right after the commit: its page cache is warm, where a read
/// connection would start a transaction and reread pages after every
/// commit.
pub fn payment_for_reply(
    ledger: &Ledger,
    op: &Op,
    result: &OpResult,
) -> Option<wasmpay_ledger::PaymentInfo> {
    let Some(Outcome::Applied(receipt)) = result.outcome() else {
        return None;
    };
    if !matches!(
        receipt.effect,
        Effect::Captured { .. } | Effect::Voided { .. } | Effect::Refunded { .. }
    ) {
        return None;
    }
    let payment_id = op.kind.payment_id()?;
    let merchant = merchant_of(op)?;
    ledger.payment(&merchant, payment_id).ok().flatten()
}

/// The reply (to `reply`) to request `id`'s operation, and the merchant's
/// notification when it concerns a payment; `payment` is
/// [`payment_for_reply`]'s.
pub fn for_op(
    id: &RequestId,
    reply: &ReplyTo,
    op: &Op,
    result: &OpResult,
    payment: Option<&wasmpay_ledger::PaymentInfo>,
) -> Vec<Outbound> {
    let outcome = match result {
        OpResult::Conflict { differing } => {
            let message = format!(
                "request id `{id}` was used before with different parameters: {}; use a new id for a new request",
                differing.join(", ")
            );
            return vec![reply.send(encode_error(
                Some(id.as_str()),
                "conflict",
                &message,
                Some(serde_json::json!({ "differing": differing })),
            ))];
        }
        OpResult::Done { outcome, .. } => outcome,
    };
    let replayed = result.is_replayed();
    let mut out = Vec::with_capacity(2);
    match outcome {
        Outcome::Refused(refusal) => {
            let detail = declined_payment(op, refusal).map(|p| serde_json::json!(p));
            out.push(reply.send(encode_error(
                Some(id.as_str()),
                refusal.code(),
                &refusal.message(),
                detail.clone(),
            )));
            if let (
                Some(payment),
                OpKind::Payment {
                    payer,
                    memo,
                    metadata,
                    ..
                }
                | OpKind::Authorize {
                    payer,
                    memo,
                    metadata,
                    ..
                },
            ) = (declined_payment(op, refusal), &op.kind)
            {
                // A refusal stores no time: a replay's is the retry's.
                out.push(notify(
                    id,
                    op,
                    payer,
                    (op.at_ms, replayed),
                    NotificationEvent::Payment {
                        payment,
                        memo: memo.clone(),
                        metadata: metadata.clone(),
                    },
                ));
            }
        }
        Outcome::Applied(receipt) => {
            let (payload, event) = applied(id, op, &receipt.effect, payment);
            out.push(reply.send(payload));
            if let Some((payer, event)) = event {
                out.push(notify(id, op, &payer, (receipt.at_ms, replayed), event));
            }
        }
    }
    out
}

fn merchant_of(op: &Op) -> Option<wasmpay_domain::MerchantId> {
    match &op.kind {
        OpKind::Payment { merchant, .. }
        | OpKind::Authorize { merchant, .. }
        | OpKind::Capture { merchant, .. }
        | OpKind::Void { merchant, .. }
        | OpKind::Refund { merchant, .. }
        | OpKind::Payout { merchant, .. } => Some(merchant.clone()),
        OpKind::OpenAccount { .. } | OpKind::Deposit { .. } => None,
    }
}

/// The merchant's notification of `event`, committed at `at_ms`; `replayed`
/// when the request was answered from its stored outcome.
fn notify(
    id: &RequestId,
    op: &Op,
    payer: &wasmpay_domain::UserId,
    (at_ms, replayed): (i64, bool),
    event: NotificationEvent,
) -> Outbound {
    // Only operations on a merchant's payments notify.
    let merchant = merchant_of(op).expect("notifications concern a merchant");
    let notification = Notification {
        merchant: merchant.clone(),
        payer: payer.clone(),
        request_id: id.clone(),
        at_ms,
        replayed,
        event,
    };
    Outbound {
        topic: notification_topic(&merchant),
        payload: notification.to_payload(),
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

/// A declined payment's result, sent as the error's detail.
fn declined_payment(op: &Op, refusal: &Refusal) -> Option<PaymentResult> {
    let Refusal::PaymentDeclined { decline, plugin } = refusal else {
        return None;
    };
    let (OpKind::Payment {
        merchant,
        payment_id,
        amount,
        ..
    }
    | OpKind::Authorize {
        merchant,
        payment_id,
        amount,
        ..
    }) = &op.kind
    else {
        return None;
    };
    Some(PaymentResult {
        payment_id: payment_id.clone(),
        status: PaymentStatus::Declined,
        merchant: merchant.clone(),
        amount: (*amount).into(),
        payer_total: None,
        lines: Vec::new(),
        settlement: None,
        decline: Some(decline.clone()),
        expires_at_ms: None,
        plugin: plugin.clone(),
    })
}

/// The reply payload of an applied operation and, for payment operations,
/// the merchant's notification (with the payer it names). Each result is
/// encoded straight from its type, with no `serde_json::Value` between.
fn applied(
    id: &RequestId,
    op: &Op,
    effect: &Effect,
    payment: Option<&wasmpay_ledger::PaymentInfo>,
) -> (Vec<u8>, Option<(wasmpay_domain::UserId, NotificationEvent)>) {
    let payer = || payment.map(|p| p.payer.clone());
    match (effect, &op.kind) {
        (
            Effect::AccountOpened {
                owner,
                currency,
                overdraft,
            },
            _,
        ) => {
            let owner = match owner {
                Owner::User { user } => wasmpay_protocol::Owner::User(user.clone()),
                Owner::Merchant { merchant, .. } => {
                    wasmpay_protocol::Owner::Merchant(merchant.clone())
                }
                // The pipeline opens only user and merchant accounts.
                Owner::Platform | Owner::World => unreachable!("opened {owner}"),
            };
            let overdraft_limit = match overdraft {
                wasmpay_ledger::Overdraft::Limit(limit) => *limit,
                _ => Money::zero(*currency),
            };
            (
                encode_ok(
                    id,
                    &OpenAccountResult {
                        owner,
                        currency: *currency,
                        overdraft_limit: overdraft_limit.into(),
                        balance: Money::zero(*currency).into(),
                    },
                ),
                None,
            )
        }
        (
            Effect::Deposited {
                user,
                amount,
                balance,
            },
            _,
        ) => (
            encode_ok(
                id,
                &DepositResult {
                    user: user.clone(),
                    amount: (*amount).into(),
                    balance: balance.available.into(),
                },
            ),
            None,
        ),
        (
            Effect::PaidOut {
                account,
                amount,
                balance,
                ..
            },
            _,
        ) => (
            encode_ok(
                id,
                &PayoutResult {
                    account: account.clone(),
                    amount: (*amount).into(),
                    balance: balance.available.into(),
                },
            ),
            None,
        ),
        (
            Effect::Paid {
                payment_id,
                lines,
                settlement,
                plugin,
                ..
            },
            OpKind::Payment {
                payer,
                merchant,
                amount,
                memo,
                metadata,
                ..
            },
        ) => {
            let payment = PaymentResult {
                payment_id: payment_id.clone(),
                status: PaymentStatus::Approved,
                merchant: merchant.clone(),
                amount: (*amount).into(),
                payer_total: Some(settlement.payer_total.into()),
                lines: lines.iter().map(Into::into).collect(),
                settlement: Some(SettlementView::from(settlement)),
                decline: None,
                expires_at_ms: None,
                plugin: plugin.clone(),
            };
            let event = NotificationEvent::Payment {
                payment: payment.clone(),
                memo: memo.clone(),
                metadata: metadata.clone(),
            };
            (encode_ok(id, &payment), Some((payer.clone(), event)))
        }
        (
            Effect::Authorized {
                payment_id,
                lines,
                settlement,
                expires_at_ms,
                plugin,
                ..
            },
            OpKind::Authorize {
                payer,
                merchant,
                amount,
                memo,
                metadata,
                ..
            },
        ) => {
            let payment = PaymentResult {
                payment_id: payment_id.clone(),
                status: PaymentStatus::Held,
                merchant: merchant.clone(),
                amount: (*amount).into(),
                payer_total: Some(settlement.payer_total.into()),
                lines: lines.iter().map(Into::into).collect(),
                settlement: Some(SettlementView::from(settlement)),
                decline: None,
                expires_at_ms: Some(*expires_at_ms),
                plugin: plugin.clone(),
            };
            let event = NotificationEvent::Payment {
                payment: payment.clone(),
                memo: memo.clone(),
                metadata: metadata.clone(),
            };
            (encode_ok(id, &payment), Some((payer.clone(), event)))
        }
        (
            Effect::Captured {
                payment_id,
                settlement,
                released,
                payer_balance,
            },
            _,
        ) => {
            let capture = CaptureResult {
                payment_id: payment_id.clone(),
                captured: settlement.payer_total.into(),
                released: (*released).into(),
                settlement: SettlementView::from(settlement),
            };
            let _ = payer_balance;
            (
                encode_ok(id, &capture),
                payer().map(|p| (p, NotificationEvent::Capture { capture })),
            )
        }
        (
            Effect::Voided {
                payment_id,
                released,
                ..
            },
            _,
        ) => {
            let void = VoidResult {
                payment_id: payment_id.clone(),
                released: (*released).into(),
            };
            (
                encode_ok(id, &void),
                payer().map(|p| (p, NotificationEvent::Void { void })),
            )
        }
        (
            Effect::Refunded {
                payment_id,
                amount,
                fee,
                refunded_total,
                plugin,
                ..
            },
            _,
        ) => {
            let refund = RefundResult {
                payment_id: payment_id.clone(),
                amount: (*amount).into(),
                fee: (!fee.is_zero()).then_some((*fee).into()),
                payer_credited: amount.checked_sub(*fee).unwrap_or(*amount).into(),
                refunded_total: (*refunded_total).into(),
                refundable: payment
                    .and_then(|p| p.captured.checked_sub(*refunded_total).ok())
                    .unwrap_or(Money::zero(amount.currency()))
                    .into(),
                plugin: plugin.clone(),
            };
            (
                encode_ok(id, &refund),
                payer().map(|p| (p, NotificationEvent::Refund { refund })),
            )
        }
        // An effect that does not match its operation is a ledger bug.
        (effect, kind) => unreachable!("effect {effect:?} for {}", kind.name()),
    }
}

/// The principal's accounts, one line per currency and sub-account.
pub fn balance(
    reader: &Reader,
    principal: &Principal,
    currency: Option<Currency>,
) -> Result<BalanceResult, (&'static str, String)> {
    let owners: Vec<Owner> = match principal {
        Principal::User(user) => vec![Owner::user(user)],
        Principal::Merchant(merchant) => vec![Owner::merchant_main(merchant)],
        Principal::Admin => vec![Owner::Platform],
    };
    let mut accounts = Vec::new();
    for owner in owners {
        let account = match &owner {
            Owner::Merchant { account, .. } => account.clone(),
            _ => SubAccount::main(),
        };
        for b in reader.balances(&owner).map_err(internal)?.balances {
            if currency.is_some_and(|c| c != b.currency()) {
                continue;
            }
            let posted = b.available.checked_add(b.held).unwrap_or(b.available);
            accounts.push(AccountBalance {
                account: account.clone(),
                balance: posted.into(),
                held: b.held.into(),
                available: b.available.into(),
                overdraft_limit: None,
            });
        }
    }
    accounts.sort_by(|a, b| {
        (a.balance.0.currency().code(), a.account.as_str())
            .cmp(&(b.balance.0.currency().code(), b.account.as_str()))
    });
    Ok(BalanceResult { accounts })
}

/// A page of the principal's main account history, newest first.
pub fn history(
    reader: &Reader,
    principal: &Principal,
    query: &wasmpay_protocol::command::History,
) -> Result<HistoryResult, (&'static str, String)> {
    let owner = match principal {
        Principal::User(user) => Owner::user(user),
        Principal::Merchant(merchant) => Owner::merchant_main(merchant),
        Principal::Admin => Owner::Platform,
    };
    let after = match &query.after {
        Some(cursor) => Some(cursor.as_str().parse::<i64>().map_err(|_| {
            (
                "invalid_cursor",
                format!("cursor `{}` was not issued by this host", cursor.as_str()),
            )
        })?),
        None => None,
    };
    let page = reader
        .history(&owner, after, query.limit)
        .map_err(internal)?;
    let own_key = crate::handlers::ledger_principal(principal).key();
    let entries = page
        .items
        .iter()
        .filter(|e| query.currency.is_none_or(|c| c == e.amount.currency()))
        .map(|e| HistoryEntry {
            cursor: cursor(e.seq),
            at_ms: e.at_ms,
            kind: entry_kind(&e.op),
            account: SubAccount::main(),
            amount: e.amount.into(),
            counterparty: counterparty(principal, e),
            payment_id: e.payment_id.clone(),
            // Only the sender's own ids: a merchant does not learn the
            // payer's request ids, nor a payer the merchant's.
            request_id: (e.principal == own_key)
                .then(|| RequestId::new(e.request_id.as_str()).ok())
                .flatten(),
            memo: e.memo.clone(),
        })
        .collect();
    Ok(HistoryResult {
        entries,
        next: page.next_after.map(cursor),
    })
}

/// The other side of an entry, as the reader of `principal`'s history
/// sees it: a user pays merchants, a merchant is paid by users, deposits
/// come from and payouts go to outside the ledger.
fn counterparty(principal: &Principal, e: &wasmpay_ledger::HistoryEntry) -> Option<Party> {
    match (e.op.as_str(), principal) {
        ("deposit" | "payout", _) => Some(Party::External),
        (_, Principal::User(_)) => e.merchant.clone().map(Party::Merchant),
        (_, Principal::Merchant(_)) => e.payer.clone().map(Party::User),
        (_, Principal::Admin) => None,
    }
}

fn cursor(seq: i64) -> Cursor {
    // Decimal digits always satisfy the cursor rule.
    Cursor::new(seq.to_string()).expect("a number is a valid cursor")
}

fn entry_kind(op: &str) -> EntryKind {
    match op {
        "deposit" => EntryKind::Deposit,
        "authorize" => EntryKind::Hold,
        "capture" => EntryKind::Capture,
        "void" => EntryKind::Void,
        "expire_hold" | "release_expired_hold" | "hold_expired" => EntryKind::HoldExpired,
        "refund" => EntryKind::Refund,
        "payout" => EntryKind::Payout,
        _ => EntryKind::Payment,
    }
}

fn internal(error: wasmpay_ledger::LedgerError) -> (&'static str, String) {
    tracing::error!(%error, "ledger read failed");
    ("internal_error", error.to_string())
}

pub fn plugin_list(versions: &[wasmpay_ledger::PluginVersionInfo]) -> PluginListResult {
    PluginListResult {
        versions: versions
            .iter()
            .map(|v| PluginVersion {
                version: v.version,
                sha256: v.sha256.clone(),
                bytes: v.size_bytes,
                uploaded_at_ms: v.uploaded_at_ms,
                active: v.active,
            })
            .collect(),
    }
}

pub fn upload_result(info: &wasmpay_ledger::PluginVersionInfo, active: bool) -> PluginUploadResult {
    PluginUploadResult {
        plugin: wasmpay_domain::PluginRef {
            version: info.version,
            sha256: info.sha256.clone(),
        },
        bytes: info.size_bytes,
        active,
    }
}
