//! The local runner behind `wasmpay plugin run`: executes a plugin against
//! one JSON input, the way the host would, and reports the decision, the
//! settlement it would lead to, the fuel and time it took and what it
//! logged.
//!
//! The input is a payment, written for people: amounts as decimal text,
//! everything but `amount` and `currency` optional (see
//! `examples/payment.json`), and the payer's recent activity given in the
//! file, since there is no ledger to ask:
//!
//! ```json
//! {"amount": "12.50", "currency": "EUR", "activity": {"count": 3, "volume": "120.00"}}
//! ```
//!
//! A refund is `{"refund": {"currency": "EUR", "captured": "12.50", "amount": "5.00"}}`.
//! A plugin that fails is a report too (with its decline code and logs);
//! only bad input, a refused upload or a broken runtime are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmpay_domain::{
    Currency, Decision, LineKind, MerchantId, Money, PaymentId, PlatformFee, QuoteLimits,
    RefundDecision, Settlement, UserId,
};

use crate::error::{RuntimeError, UploadError};
use crate::host::{HostQueries, LogLine};
use crate::limits::Limits;
use crate::runtime::{PluginMeta, Runtime};
use crate::{PaymentInput, RefundInput};

/// Why the runner could not run the plugin at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("plugin refused at upload ({code}): {0}", code = .0.code())]
    Upload(#[from] UploadError),
}

/// What one run showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// SHA-256 of the component, as the host would store it.
    pub sha256: String,
    pub outcome: RunOutcome,
    pub fuel_used: u64,
    pub fuel_max: u64,
    /// Times the plugin grew its linear memory (see `Called::memory_grows`).
    pub memory_grows: u32,
    /// Instantiation, call and conversion, in microseconds.
    pub elapsed_us: u64,
    pub logs: Vec<LogLine>,
    pub logs_truncated: bool,
}

/// The plugin's answer, or how it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunOutcome {
    Payment {
        amount: Money,
        decision: Decision,
        /// What an approval would post, with no platform fee; `None` for a
        /// decline or a quote the host would refuse.
        settlement: Option<Settlement>,
        /// Why the host would refuse the quote (`quote_invalid`).
        settlement_error: Option<String>,
    },
    Refund {
        amount: Money,
        decision: RefundDecision,
    },
    /// The call failed: the host would decline with `code`.
    Failed { code: String, message: String },
}

/// Runs `wasm` on the payment or refund in `input_json` with the merchant
/// configuration `config`, under `limits`.
pub fn run(
    wasm: &[u8],
    input_json: &str,
    config: BTreeMap<String, String>,
    limits: Limits,
) -> Result<RunReport, RunError> {
    let input = parse_input(input_json)?;
    let runtime = Runtime::new(limits)?;
    let compiled = runtime.compile(wasm)?;
    let meta = PluginMeta {
        merchant: input.merchant().clone(),
        version: 0,
        sha256: compiled.sha256.clone(),
        config,
    };
    let plugin = runtime.load(&compiled.artifact, meta)?;
    let (outcome, trace) = match input {
        Input::Payment(payment, activity) => {
            let traced = runtime.decide_payment_traced(&plugin, activity, &payment);
            let outcome = match traced.result {
                Ok(decision) => payment_outcome(payment.amount, decision),
                Err(error) => failed(&error),
            };
            (outcome, traced.trace)
        }
        Input::Refund(refund, activity) => {
            let traced = runtime.decide_refund_traced(&plugin, activity, &refund);
            let outcome = match traced.result {
                Ok(decision) => RunOutcome::Refund {
                    amount: refund.amount,
                    decision,
                },
                Err(error) => failed(&error),
            };
            (outcome, traced.trace)
        }
    };
    Ok(RunReport {
        sha256: compiled.sha256,
        outcome,
        fuel_used: trace.fuel_used,
        fuel_max: runtime.limits().fuel_max,
        memory_grows: trace.memory_grows,
        elapsed_us: u64::try_from(trace.elapsed.as_micros()).unwrap_or(u64::MAX),
        logs: trace.logs,
        logs_truncated: trace.logs_truncated,
    })
}

fn failed(error: &crate::PluginError) -> RunOutcome {
    RunOutcome::Failed {
        code: error.code().to_owned(),
        message: error.to_string(),
    }
}

fn payment_outcome(amount: Money, decision: Decision) -> RunOutcome {
    let (settlement, settlement_error) = match &decision {
        Decision::Approve { quote } => {
            match quote.settle(amount, PlatformFee::default(), QuoteLimits::default()) {
                Ok(settlement) => (Some(settlement), None),
                Err(error) => (None, Some(error.to_string())),
            }
        }
        Decision::Decline { .. } => (None, None),
    };
    RunOutcome::Payment {
        amount,
        decision,
        settlement,
        settlement_error,
    }
}

enum Input {
    Payment(PaymentInput, Arc<dyn HostQueries>),
    Refund(RefundInput, Arc<dyn HostQueries>),
}

impl Input {
    fn merchant(&self) -> &MerchantId {
        match self {
            Self::Payment(payment, _) => &payment.merchant,
            Self::Refund(refund, _) => &refund.merchant,
        }
    }
}

fn default_payment_id() -> PaymentId {
    PaymentId::new("pay_local").expect("a valid id")
}
fn default_merchant() -> MerchantId {
    MerchantId::new("local-merchant").expect("a valid id")
}
fn default_payer() -> UserId {
    UserId::new("local-payer").expect("a valid id")
}
fn zero() -> String {
    "0".into()
}

/// A payment as a person writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentFields {
    #[serde(default = "default_payment_id")]
    payment_id: PaymentId,
    #[serde(default = "default_merchant")]
    merchant: MerchantId,
    #[serde(default = "default_payer")]
    payer: UserId,
    /// Decimal text in major units (`"12.50"`).
    amount: String,
    currency: Currency,
    #[serde(default)]
    memo: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    received_at_ms: i64,
    #[serde(default)]
    is_authorization: bool,
    #[serde(default)]
    activity: Option<ActivityFields>,
}

/// A refund as a person writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundFields {
    #[serde(default = "default_payment_id")]
    payment_id: PaymentId,
    #[serde(default = "default_merchant")]
    merchant: MerchantId,
    #[serde(default = "default_payer")]
    payer: UserId,
    currency: Currency,
    captured: String,
    #[serde(default = "zero")]
    refunded: String,
    amount: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    received_at_ms: i64,
    #[serde(default)]
    captured_at_ms: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundEnvelope {
    refund: RefundFields,
    #[serde(default)]
    activity: Option<ActivityFields>,
}

/// The answer to every `payer-activity` question.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityFields {
    #[serde(default)]
    count: u32,
    /// Decimal text in whatever currency the plugin asks about.
    #[serde(default = "zero")]
    volume: String,
}

impl HostQueries for ActivityFields {
    fn payer_activity(&self, _: u32, currency: Currency) -> Result<(u32, Money), String> {
        let volume = Money::parse(&self.volume, currency)
            .map_err(|e| format!("the input's activity volume: {e}"))?;
        Ok((self.count, volume))
    }
}

fn parse_input(json: &str) -> Result<Input, RunError> {
    let invalid = |e: &dyn fmt::Display| RunError::Input(e.to_string());
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(&e))?;
    let money = |text: &str, currency: Currency, field: &str| {
        Money::parse(text, currency).map_err(|e| RunError::Input(format!("{field}: {e}")))
    };
    if value.get("refund").is_some() {
        let envelope: RefundEnvelope = serde_json::from_value(value).map_err(|e| invalid(&e))?;
        let r = envelope.refund;
        let refund = RefundInput {
            captured: money(&r.captured, r.currency, "refund.captured")?,
            refunded: money(&r.refunded, r.currency, "refund.refunded")?,
            amount: money(&r.amount, r.currency, "refund.amount")?,
            payment_id: r.payment_id,
            merchant: r.merchant,
            payer: r.payer,
            reason: r.reason,
            received_at_ms: r.received_at_ms,
            captured_at_ms: r.captured_at_ms,
        };
        Ok(Input::Refund(
            refund,
            Arc::new(envelope.activity.unwrap_or_default()),
        ))
    } else {
        let p: PaymentFields = serde_json::from_value(value).map_err(|e| invalid(&e))?;
        let payment = PaymentInput {
            amount: money(&p.amount, p.currency, "amount")?,
            payment_id: p.payment_id,
            merchant: p.merchant,
            payer: p.payer,
            memo: p.memo,
            metadata: p.metadata,
            received_at_ms: p.received_at_ms,
            is_authorization: p.is_authorization,
        };
        Ok(Input::Payment(
            payment,
            Arc::new(p.activity.unwrap_or_default()),
        ))
    }
}

fn kind_name(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Fee => "fee",
        LineKind::Discount => "discount",
        LineKind::Surcharge => "surcharge",
        LineKind::Tax => "tax",
        LineKind::Tip => "tip",
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plugin      sha256 {}", self.sha256)?;
        match &self.outcome {
            RunOutcome::Payment {
                amount,
                decision,
                settlement,
                settlement_error,
            } => {
                writeln!(f, "payment     {amount}")?;
                match decision {
                    Decision::Approve { quote } => {
                        writeln!(f, "decision    approve")?;
                        for line in &quote.lines {
                            writeln!(
                                f,
                                "  {:<10}{:<20}{:>16}  -> {}  {}",
                                kind_name(line.kind),
                                line.code.as_str(),
                                line.amount.to_string(),
                                line.account.as_str(),
                                line.description
                            )?;
                        }
                        for split in &quote.splits {
                            writeln!(
                                f,
                                "  {:<30}{:>16}  -> {}",
                                "split",
                                split.amount.to_string(),
                                split.account.as_str()
                            )?;
                        }
                    }
                    Decision::Decline { decline } => {
                        writeln!(
                            f,
                            "decision    decline {}: {}",
                            decline.code, decline.message
                        )?;
                    }
                }
                if let Some(settlement) = settlement {
                    writeln!(f, "settlement  (no platform fee)")?;
                    writeln!(f, "  payer pays  {}", settlement.payer_total)?;
                    for (account, credit) in &settlement.merchant_credits {
                        writeln!(f, "  {:<12}{credit}", account.as_str())?;
                    }
                }
                if let Some(error) = settlement_error {
                    writeln!(f, "settlement  refused (quote_invalid): {error}")?;
                }
            }
            RunOutcome::Refund { amount, decision } => {
                writeln!(f, "refund      {amount}")?;
                match decision {
                    RefundDecision::Allow { fee: None } => writeln!(f, "decision    allow")?,
                    RefundDecision::Allow { fee: Some(fee) } => {
                        writeln!(f, "decision    allow, withholding a fee of {fee}")?;
                    }
                    RefundDecision::Deny { decline } => {
                        writeln!(f, "decision    deny {}: {}", decline.code, decline.message)?;
                    }
                }
            }
            RunOutcome::Failed { code, message } => {
                writeln!(f, "failed      {code}: {message}")?;
            }
        }
        writeln!(f, "fuel        {} of {}", self.fuel_used, self.fuel_max)?;
        writeln!(f, "memory      grown {} times", self.memory_grows)?;
        writeln!(
            f,
            "time        {:?}",
            Duration::from_micros(self.elapsed_us)
        )?;
        let truncated = if self.logs_truncated {
            " (truncated)"
        } else {
            ""
        };
        writeln!(f, "logs        {} lines{truncated}", self.logs.len())?;
        for line in &self.logs {
            writeln!(f, "  [{}] {}", line.level, line.message.escape_debug())?;
        }
        Ok(())
    }
}
