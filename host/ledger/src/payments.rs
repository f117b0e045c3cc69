//! Payment and authorization rows: what capture, void and refund check
//! against, and what plugins' payer-activity queries count.

use std::fmt;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use wasmpay_domain::{Currency, MerchantId, Money, PaymentId, Settlement, UserId};

use crate::LedgerError;
use crate::accounts::parse_currency;

/// A one-step payment or a two-phase authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Payment,
    Hold,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Authorized, funds held, not yet captured or released.
    Held,
    /// Money moved (a payment, or a captured authorization).
    Captured,
    Voided,
    /// Released by the expiry sweep.
    Expired,
}

impl PaymentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Captured => "captured",
            Self::Voided => "voided",
            Self::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "held" => Self::Held,
            "captured" => Self::Captured,
            "voided" => Self::Voided,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ledger knows about one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    pub merchant: MerchantId,
    pub payment_id: PaymentId,
    pub payer: UserId,
    pub currency: Currency,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    /// The payer's total that was approved (and, for a hold, reserved).
    pub authorized: Money,
    /// What was actually taken from the payer (zero until captured).
    pub captured: Money,
    /// Refunded so far (refund amounts, fees included).
    pub refunded: Money,
    /// The settlement a full capture posts (or that the payment posted).
    pub settlement: Settlement,
    pub created_at_ms: i64,
    pub captured_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
}

/// A payment row with the payer's account id, for the writer.
#[derive(Debug, Clone)]
pub(crate) struct PaymentRow {
    pub info: PaymentInfo,
    pub payer_account: i64,
}

pub(crate) fn load(
    conn: &Connection,
    merchant: &MerchantId,
    payment_id: &PaymentId,
) -> Result<Option<PaymentRow>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT payer, payer_account, currency, kind, status, authorized, captured, refunded,
                settlement, created_at_ms, captured_at_ms, expires_at_ms
         FROM payments WHERE merchant = ?1 AND payment_id = ?2",
    )?;
    let row = stmt
        .query_row(params![merchant.as_str(), payment_id.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<i64>>(11)?,
            ))
        })
        .optional()?;
    let Some((
        payer,
        payer_account,
        currency,
        kind,
        status,
        authorized,
        captured,
        refunded,
        settlement,
        created_at_ms,
        captured_at_ms,
        expires_at_ms,
    )) = row
    else {
        return Ok(None);
    };
    let bad = |what: &str| LedgerError::corrupt(format!("payment {payment_id}: bad {what}"));
    let currency = parse_currency(&currency)?;
    let money = |minor| Money::from_minor(minor, currency);
    let info = PaymentInfo {
        merchant: merchant.clone(),
        payment_id: payment_id.clone(),
        payer: UserId::new(payer).map_err(|_| bad("payer"))?,
        currency,
        kind: match kind.as_str() {
            "payment" => PaymentKind::Payment,
            "hold" => PaymentKind::Hold,
            _ => return Err(bad("kind")),
        },
        status: PaymentStatus::parse(&status).ok_or_else(|| bad("status"))?,
        authorized: money(authorized),
        captured: money(captured),
        refunded: money(refunded),
        settlement: serde_json::from_str(&settlement).map_err(|_| bad("settlement"))?,
        created_at_ms,
        captured_at_ms,
        expires_at_ms,
    };
    Ok(Some(PaymentRow {
        info,
        payer_account,
    }))
}

/// What a new payment row holds.
pub(crate) struct NewPayment<'a> {
    pub merchant: &'a MerchantId,
    pub payment_id: &'a PaymentId,
    pub payer: &'a UserId,
    pub payer_account: i64,
    pub kind: PaymentKind,
    pub settlement: &'a Settlement,
    pub at_ms: i64,
    pub seq: i64,
    pub expires_at_ms: Option<i64>,
}

pub(crate) fn insert(conn: &Connection, new: &NewPayment<'_>) -> Result<(), LedgerError> {
    let total = new.settlement.payer_total;
    let (kind, status, captured, captured_at_ms) = match new.kind {
        PaymentKind::Payment => ("payment", "captured", total.minor(), Some(new.at_ms)),
        PaymentKind::Hold => ("hold", "held", 0, None),
    };
    let settlement =
        serde_json::to_string(new.settlement).map_err(|e| LedgerError::corrupt(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO payments (merchant, payment_id, payer, payer_account, currency, kind, status,
                               authorized, captured, settlement, created_at_ms, created_seq,
                               expires_at_ms, captured_at_ms, closed_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    stmt.execute(params![
        new.merchant.as_str(),
        new.payment_id.as_str(),
        new.payer.as_str(),
        new.payer_account,
        total.currency().code(),
        kind,
        status,
        total.minor(),
        captured,
        settlement,
        new.at_ms,
        new.seq,
        new.expires_at_ms,
        captured_at_ms,
        captured_at_ms.map(|_| new.seq),
    ])?;
    Ok(())
}

pub(crate) fn exists(
    conn: &Connection,
    merchant: &MerchantId,
    payment_id: &PaymentId,
) -> Result<bool, LedgerError> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM payments WHERE merchant = ?1 AND payment_id = ?2")?;
    Ok(stmt.exists(params![merchant.as_str(), payment_id.as_str()])?)
}

/// Closes a hold: captured (with the amount), voided or expired.
pub(crate) fn close(
    conn: &Connection,
    info: &PaymentInfo,
    status: PaymentStatus,
    captured: i64,
    at_ms: i64,
    seq: i64,
) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE payments SET status = ?1, captured = ?2, captured_at_ms = ?3, closed_seq = ?4
         WHERE merchant = ?5 AND payment_id = ?6",
    )?;
    let captured_at_ms = (status == PaymentStatus::Captured).then_some(at_ms);
    stmt.execute(params![
        status.as_str(),
        captured,
        captured_at_ms,
        seq,
        info.merchant.as_str(),
        info.payment_id.as_str()
    ])?;
    Ok(())
}

pub(crate) fn set_refunded(
    conn: &Connection,
    info: &PaymentInfo,
    refunded: i64,
) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE payments SET refunded = ?1 WHERE merchant = ?2 AND payment_id = ?3",
    )?;
    stmt.execute(params![
        refunded,
        info.merchant.as_str(),
        info.payment_id.as_str()
    ])?;
    Ok(())
}

/// Holds whose expiry has passed at `now_ms`, oldest first, at most `limit`.
pub(crate) fn expired_holds(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<(MerchantId, PaymentId)>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT merchant, payment_id FROM payments
         WHERE status = 'held' AND expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut holds = Vec::new();
    for row in rows {
        let (merchant, payment_id) = row?;
        let merchant = MerchantId::new(merchant).map_err(LedgerError::corrupt)?;
        let payment_id = PaymentId::new(payment_id).map_err(LedgerError::corrupt)?;
        holds.push((merchant, payment_id));
    }
    Ok(holds)
}
