//! One step per request kind: what to prepare off the writer thread (decode,
//! plugin decision, upload compile), and what the writer does with it.
//!
//! [`prepare`] runs for many messages at once; it never writes. Whatever
//! needs the ledger's write connection becomes a [`Prepared`] value that
//! [`crate::writer::Writer`] applies in arrival order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmpay_domain::{
    Code, Currency, Decision, Decline, MerchantId, Money, PaymentId, PlatformFee, QuoteLimits,
    RefundDecision, UserId,
};
use wasmpay_ledger::{Op, OpKind, PaymentDecided, Reader, RefundDecided};
use wasmpay_plugin::{HostQueries, PaymentInput, PluginError, PluginSet, RefundInput, Runtime};
use wasmpay_protocol::{
    Command, DecodeLimits, Decoded, Principal, Rejection, Request, RequestProps,
    dead_letter_payload, encode_error, reply_topic_for,
};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{Inbound, Outbound};
use crate::workers::Workers;
use tracing::Instrument as _;

/// The topics the daemon subscribes to.
pub const SUBSCRIPTIONS: &[&str] = &wasmpay_protocol::SUBSCRIPTIONS;

/// What every preparing task shares: the sandbox, the active plugins and the
/// limits. Read-only apart from the plugin set's atomic swaps.
#[derive(Debug)]
pub struct Shared {
    pub runtime: Runtime,
    pub plugins: PluginSet,
    pub db_path: PathBuf,
    pub decode_limits: DecodeLimits,
    pub platform_fee: PlatformFee,
    pub quote_limits: QuoteLimits,
    /// The threads that run plugin calls, the ledger reads around them and
    /// upload compiles, `pipeline.plugin_workers` of them.
    workers: Workers,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    quarantine: Quarantine,
}

/// Counts each merchant's consecutive plugin failures, per plugin version,
/// so that a broken or hostile plugin stops costing a full fuel budget per
/// payment. A new version starts with a clean count.
#[derive(Debug)]
struct Quarantine {
    failures_max: u32,
    failures:
        std::sync::Mutex<std::collections::HashMap<MerchantId, (wasmpay_domain::PluginRef, u32)>>,
}

impl Quarantine {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<MerchantId, (wasmpay_domain::PluginRef, u32)>,
    > {
        // The map holds counters only; a panic mid-update leaves a valid map.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_quarantined(&self, merchant: &MerchantId, plugin: &wasmpay_domain::PluginRef) -> bool {
        self.failures_max > 0
            && self
                .lock()
                .get(merchant)
                .is_some_and(|(version, count)| version == plugin && *count >= self.failures_max)
    }

    /// Records a call's result for `plugin`, and keeps the count of
    /// quarantined merchants in `metrics` (the operator's alert).
    fn record(
        &self,
        merchant: &MerchantId,
        plugin: &wasmpay_domain::PluginRef,
        failed: bool,
        metrics: &Metrics,
    ) {
        if self.failures_max == 0 {
            return;
        }
        let mut failures = self.lock();
        let quarantined = |failures: &std::collections::HashMap<_, (_, u32)>| {
            failures
                .values()
                .filter(|(_, count)| *count >= self.failures_max)
                .count()
        };
        if !failed {
            if failures.remove(merchant).is_some() {
                metrics.quarantined(quarantined(&failures));
            }
            return;
        }
        let entry = failures
            .entry(merchant.clone())
            .or_insert_with(|| (plugin.clone(), 0));
        if &entry.0 != plugin {
            *entry = (plugin.clone(), 0);
        }
        entry.1 += 1;
        let count = entry.1;
        metrics.quarantined(quarantined(&failures));
        if count == self.failures_max {
            tracing::error!(%merchant, version = plugin.version, sha256 = %plugin.sha256, failures = count, "plugin quarantined after consecutive failures; its payments are declined until the merchant uploads or activates a version");
        }
    }
}

impl Shared {
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let runtime = Runtime::new(config.plugins)?;
        tracing::info!(
            pooling_slots = config.plugins.pooling_slots,
            memory_reset = ?runtime.memory_reset(),
            "plugin runtime ready"
        );
        Ok(Self {
            runtime,
            plugins: PluginSet::default(),
            db_path: config.ledger.path.clone(),
            decode_limits: config.protocol.clone(),
            platform_fee: PlatformFee {
                bps: config.fees.platform_fee_bps,
            },
            quote_limits: QuoteLimits::default(),
            workers: Workers::start(
                config.pipeline.plugin_workers,
                config.plugins.stack_bytes_max,
            )?,
            started: Instant::now(),
            metrics: Arc::new(Metrics::default()),
            quarantine: Quarantine {
                failures_max: config.pipeline.plugin_failures_quarantine_max,
                failures: Default::default(),
            },
        })
    }

    /// Runs `work` on a plugin worker thread, at most `plugin_workers` at
    /// once.
    async fn on_worker<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        self.workers.run(work).await
    }
}

/// Where and how to answer one request.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub topic: String,
    pub correlation: Option<bytes::Bytes>,
}

impl ReplyTo {
    /// The request's MQTT 5 Response Topic if it lies in the principal's own
    /// reply namespace, else the conventional reply topic. A client must not
    /// be able to make the host publish into someone else's topics (a fake
    /// merchant notification, say).
    fn for_message(message: &Inbound, principal: &Principal) -> Self {
        let conventional = reply_topic_for(principal);
        let topic = match &message.response_topic {
            Some(topic) if wasmpay_protocol::response_topic_allowed(principal, topic) => {
                topic.clone()
            }
            Some(topic) => {
                tracing::warn!(%topic, %conventional, "response topic outside the principal's reply namespace; using the conventional one");
                conventional
            }
            None => conventional,
        };
        Self {
            topic,
            correlation: message.correlation_data.clone(),
        }
    }

    pub fn send(&self, payload: Vec<u8>) -> Outbound {
        Outbound {
            topic: self.topic.clone(),
            payload,
            correlation_data: self.correlation.clone(),
            user_properties: Vec::new(),
        }
    }
}

/// A request ready for the writer.
#[derive(Debug)]
pub struct Ready {
    pub request: Request,
    pub reply: ReplyTo,
    pub work: Work,
    /// The request's span (`id`, `principal`, `command`, `merchant`): every
    /// stage that handles it logs inside it, the writer thread included.
    pub span: tracing::Span,
}

/// What the writer must do for a request.
#[derive(Debug)]
pub enum Work {
    /// A ledger operation (its plugin decision, if any, already made).
    Apply(Box<Op>),
    /// A read answered after the batch commits.
    Read,
    /// A compiled upload to store and activate.
    Upload(Box<wasmpay_plugin::Compiled>),
}

/// The result of preparing one message.
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to commit: the replies (if any) are ready.
    Answer(Vec<Outbound>),
    Ready(Box<Ready>),
    /// Release holds that expired by now.
    SweepHolds {
        now_ms: i64,
    },
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn sweep_holds() -> (Option<Inbound>, Prepared) {
    (None, Prepared::SweepHolds { now_ms: now_ms() })
}

/// Decodes a message and does everything that can happen before the writer:
/// the merchant's plugin decision, an upload's compile.
pub async fn prepare(shared: &Arc<Shared>, message: &Inbound) -> Prepared {
    let props = RequestProps {
        user_properties: message.user_properties.clone(),
    };
    let request = match wasmpay_protocol::decode(
        &message.topic,
        &message.payload,
        &props,
        &shared.decode_limits,
    ) {
        Decoded::Request(request) => request,
        Decoded::Ignore => {
            shared.metrics.echo();
            return Prepared::Answer(Vec::new());
        }
        Decoded::Invalid(rejection) => {
            shared.metrics.message("invalid", rejection.code.as_str());
            shared.metrics.dead_letter();
            return Prepared::Answer(reject(message, &rejection));
        }
    };
    let reply = ReplyTo::for_message(message, &request.principal);
    // INFO, so that the warnings and errors of a request name it.
    let span = tracing::info_span!(
        "request",
        id = %request.id,
        principal = %request.principal,
        command = request.command.name(),
        merchant = tracing::field::Empty,
    );
    if let Some(merchant) = merchant_of(&request) {
        span.record("merchant", tracing::field::display(merchant));
    }
    let at_ms = now_ms();
    // Instrumented, not entered: the future awaits plugin calls, and a
    // guard held across them would lend this span to whatever else the
    // thread polls meanwhile.
    let work = match prepare_work(shared, &request, at_ms)
        .instrument(span.clone())
        .await
    {
        Ok(work) => work,
        Err(failure) => {
            let _in = span.enter();
            tracing::info!(code = failure.code, message = %failure.message, "request refused before the ledger");
            shared.metrics.message(request.command.name(), failure.code);
            return Prepared::Answer(vec![reply.send(encode_error(
                Some(request.id.as_str()),
                failure.code,
                &failure.message,
                None,
            ))]);
        }
    };
    Prepared::Ready(Box::new(Ready {
        request,
        reply,
        work,
        span,
    }))
}

/// The merchant a request concerns: the payee of a payment or hold, or the
/// merchant asking.
fn merchant_of(request: &Request) -> Option<&MerchantId> {
    match (&request.principal, &request.command) {
        (_, Command::Pay(pay)) => Some(&pay.merchant),
        (_, Command::Authorize(auth)) => Some(&auth.payment.merchant),
        (Principal::Merchant(merchant), _) => Some(merchant),
        _ => None,
    }
}

/// A request refused before it reached the ledger.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The answer to a message `decode` refused: an error reply when the topic
/// names someone to answer, and always a dead letter with the reason.
fn reject(message: &Inbound, rejection: &Rejection) -> Vec<Outbound> {
    tracing::warn!(topic = %message.topic, code = rejection.code.as_str(), reason = %rejection.message, "rejected message");
    let mut out = Vec::with_capacity(2);
    if let Some(principal) = &rejection.reply_to {
        let reply = ReplyTo::for_message(message, principal);
        out.push(reply.send(rejection.reply_payload()));
    }
    out.push(Outbound {
        topic: wasmpay_protocol::DEAD_LETTER_TOPIC.to_owned(),
        payload: dead_letter_payload(&message.topic, &message.payload, rejection),
        correlation_data: None,
        user_properties: Vec::new(),
    });
    out
}

pub(crate) fn ledger_principal(principal: &Principal) -> wasmpay_ledger::Principal {
    match principal {
        Principal::User(user) => wasmpay_ledger::Principal::User(user.clone()),
        Principal::Merchant(merchant) => wasmpay_ledger::Principal::Merchant(merchant.clone()),
        Principal::Admin => wasmpay_ledger::Principal::Admin,
    }
}

async fn prepare_work(
    shared: &Arc<Shared>,
    request: &Request,
    at_ms: i64,
) -> Result<Work, Failure> {
    let principal = ledger_principal(&request.principal);
    let op = |kind: OpKind| {
        Ok(Work::Apply(Box::new(Op {
            principal: principal.clone(),
            key: request.id.clone(),
            at_ms,
            kind,
        })))
    };
    match (&request.principal, &request.command) {
        (Principal::User(payer), Command::Pay(pay)) => {
            let payment_id = PaymentId::derive(payer, &request.id);
            let mut kind = OpKind::Payment {
                payer: payer.clone(),
                merchant: pay.merchant.clone(),
                payment_id: payment_id.clone(),
                amount: pay.amount,
                memo: pay.memo.clone(),
                metadata: pay.metadata.clone(),
                decision: replayed_payment(),
            };
            let seen = (&principal, &request.id, &kind);
            let decided = decide_payment(shared, payer, &payment_id, pay, at_ms, false, seen).await;
            if let (Some(decided), OpKind::Payment { decision, .. }) = (decided, &mut kind) {
                *decision = decided;
            }
            op(kind)
        }
        (Principal::User(payer), Command::Authorize(auth)) => {
            let pay = &auth.payment;
            let payment_id = PaymentId::derive(payer, &request.id);
            // `decode` bounded it by `protocol.hold_expires_in_s_max`.
            let expires_in_s = i64::from(auth.expires_in_s);
            let mut kind = OpKind::Authorize {
                payer: payer.clone(),
                merchant: pay.merchant.clone(),
                payment_id: payment_id.clone(),
                amount: pay.amount,
                memo: pay.memo.clone(),
                metadata: pay.metadata.clone(),
                decision: replayed_payment(),
                expires_at_ms: at_ms.saturating_add(expires_in_s * 1_000),
                expires_in_s: auth.expires_in_s,
            };
            let seen = (&principal, &request.id, &kind);
            let decided = decide_payment(shared, payer, &payment_id, pay, at_ms, true, seen).await;
            if let (Some(decided), OpKind::Authorize { decision, .. }) = (decided, &mut kind) {
                *decision = decided;
            }
            op(kind)
        }
        (Principal::Merchant(merchant), Command::Capture(capture)) => op(OpKind::Capture {
            merchant: merchant.clone(),
            payment_id: capture.payment_id.clone(),
            amount: capture.amount,
        }),
        (Principal::Merchant(merchant), Command::Void(void)) => op(OpKind::Void {
            merchant: merchant.clone(),
            payment_id: void.payment_id.clone(),
            reason: void.reason.clone(),
        }),
        (Principal::Merchant(merchant), Command::Refund(refund)) => {
            let decision = decide_refund(shared, merchant, refund, at_ms).await?;
            op(OpKind::Refund {
                merchant: merchant.clone(),
                payment_id: refund.payment_id.clone(),
                amount: refund.amount,
                reason: refund.reason.clone().unwrap_or_default(),
                decision,
            })
        }
        (Principal::Merchant(merchant), Command::Payout(payout)) => op(OpKind::Payout {
            merchant: merchant.clone(),
            account: payout.account.clone(),
            amount: payout.amount,
        }),
        (Principal::Admin, Command::OpenAccount(open)) => {
            let owner = match &open.owner {
                wasmpay_protocol::Owner::User(user) => wasmpay_ledger::Owner::user(user),
                wasmpay_protocol::Owner::Merchant(merchant) => {
                    wasmpay_ledger::Owner::merchant_main(merchant)
                }
            };
            let overdraft = if open.overdraft_limit.is_zero() {
                wasmpay_ledger::Overdraft::None
            } else {
                wasmpay_ledger::Overdraft::Limit(open.overdraft_limit)
            };
            op(OpKind::OpenAccount {
                owner,
                currency: open.currency,
                overdraft,
            })
        }
        (Principal::Admin, Command::Deposit(deposit)) => op(OpKind::Deposit {
            user: deposit.user.clone(),
            amount: deposit.amount,
        }),
        (Principal::Merchant(_), Command::PluginUpload(upload)) => {
            shared
                .runtime
                .check_config(&upload.config)
                .map_err(|e| Failure::new(e.code(), e.to_string()))?;
            let wasm = upload.wasm.clone();
            let worker = shared.clone();
            let compiled = shared
                .on_worker(move || worker.runtime.compile(&wasm))
                .await
                .map_err(|e| Failure::new("unavailable", e))?
                .map_err(|e| Failure::new(e.code(), e.to_string()))?;
            Ok(Work::Upload(Box::new(compiled)))
        }
        (
            _,
            Command::Balance(_)
            | Command::History(_)
            | Command::Status
            | Command::PluginActivate(_)
            | Command::PluginRollback
            | Command::PluginList,
        ) => Ok(Work::Read),
        (principal, command) => Err(Failure::new(
            "forbidden",
            format!("{principal:?} may not {}", command.name()),
        )),
    }
}

/// The decision carried by an operation whose request id is already
/// decided: the writer answers it from the stored outcome and never posts
/// this. (Were the record purged in between, after the retention period, the
/// client would get this decline rather than a second charge.)
fn replayed_payment() -> PaymentDecided {
    declined(
        "replay_unavailable",
        "this request id was decided before but its outcome is no longer stored; use a new id",
        None,
    )
}

/// A request id to look up before a plugin runs: when it already has a
/// stored outcome, the merchant's plugin need not run again, as the writer
/// answers from storage. The lookup runs on the worker thread, in the same
/// hop as the plugin call. A failed read (or a conflict, which the writer
/// reports) only costs a plugin run.
struct Seen {
    principal: wasmpay_ledger::Principal,
    key: wasmpay_domain::RequestId,
    fields: wasmpay_ledger::Fields,
}

impl Seen {
    fn new(
        principal: &wasmpay_ledger::Principal,
        key: &wasmpay_domain::RequestId,
        kind: &OpKind,
    ) -> Self {
        Self {
            principal: principal.clone(),
            key: key.clone(),
            fields: kind.fields(),
        }
    }

    /// Whether the ledger at `path` holds an outcome for this request.
    fn decided(&self, path: &Path) -> bool {
        matches!(
            with_reader(path, |reader| reader.lookup(
                &self.principal,
                &self.key,
                &self.fields
            )),
            Ok(Ok(Some(_)))
        )
    }
}

thread_local! {
    /// One read connection per worker thread, opened on first use.
    static READER: RefCell<Option<(PathBuf, Reader)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's read connection to the ledger at `path`.
fn with_reader<T>(path: &Path, f: impl FnOnce(&Reader) -> T) -> Result<T, String> {
    READER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(p, _)| p != path) {
            let reader = Reader::open(path).map_err(|e| format!("ledger read failed: {e}"))?;
            *slot = Some((path.to_owned(), reader));
        }
        let (_, reader) = slot.as_ref().ok_or("no reader")?;
        Ok(f(reader))
    })
}

/// Answers a plugin's `payer-activity` from the ledger, scoped to the
/// calling merchant, the payer, and the time the request arrived.
struct Activity {
    db_path: PathBuf,
    merchant: MerchantId,
    payer: UserId,
    at_ms: i64,
}

impl HostQueries for Activity {
    fn payer_activity(
        &self,
        window_seconds: u32,
        currency: Currency,
    ) -> Result<(u32, Money), String> {
        let since_ms = self.at_ms.saturating_sub(i64::from(window_seconds) * 1_000);
        with_reader(&self.db_path, |reader| {
            reader
                .payer_activity(&self.merchant, &self.payer, currency, since_ms)
                .map_err(|e| e.to_string())
        })?
    }
}

/// The merchant's plugin decides, and the host checks its quote. A merchant
/// with no plugin gets the default rules: approve with no lines. Any plugin
/// failure is a decline with the failure's code. `None` when the request
/// (`seen`: principal, id, operation) is already decided: the writer
/// answers it from storage. Only a plugin call is worth that lookup.
async fn decide_payment(
    shared: &Arc<Shared>,
    payer: &UserId,
    payment_id: &PaymentId,
    pay: &wasmpay_protocol::command::Payment,
    at_ms: i64,
    is_authorization: bool,
    (principal, key, kind): (
        &wasmpay_ledger::Principal,
        &wasmpay_domain::RequestId,
        &OpKind,
    ),
) -> Option<PaymentDecided> {
    let Some(plugin) = shared.plugins.get(&pay.merchant) else {
        return Some(settle(
            shared,
            pay.amount,
            wasmpay_domain::Quote::default(),
            None,
        ));
    };
    let input = PaymentInput {
        payment_id: payment_id.clone(),
        merchant: pay.merchant.clone(),
        payer: payer.clone(),
        amount: pay.amount,
        memo: pay.memo.clone(),
        metadata: pay.metadata.clone(),
        received_at_ms: at_ms,
        is_authorization,
    };
    let worker = shared.clone();
    let plugin_ref = plugin.plugin_ref().clone();
    if shared.quarantine.is_quarantined(&pay.merchant, &plugin_ref) {
        return Some(declined(
            "plugin_quarantined",
            "the merchant's rules failed repeatedly and are suspended until the merchant uploads or activates a version",
            Some(plugin_ref),
        ));
    }
    let seen = Seen::new(principal, key, kind);
    let call = shared
        .on_worker(move || {
            if seen.decided(&worker.db_path) {
                return None;
            }
            let queries = Arc::new(Activity {
                db_path: worker.db_path.clone(),
                merchant: input.merchant.clone(),
                payer: input.payer.clone(),
                at_ms,
            });
            Some(worker.runtime.decide_payment(&plugin, queries, &input))
        })
        .await
        .transpose()?;
    // A transient failure (a busy pool, a failed ledger read) is the
    // host's, not the plugin's.
    let trapped = matches!(&call, Ok(Err(e)) if !e.is_transient());
    let decided = decide_from(shared, pay, call, plugin_ref.clone());
    let failed = trapped
        || matches!(&decided, PaymentDecided::Declined { decline, .. } if decline.code.as_str() == "quote_invalid");
    shared
        .quarantine
        .record(&pay.merchant, &plugin_ref, failed, &shared.metrics);
    Some(decided)
}

fn decide_from(
    shared: &Shared,
    pay: &wasmpay_protocol::command::Payment,
    call: Result<Result<wasmpay_plugin::Called<Decision>, PluginError>, String>,
    plugin_ref: wasmpay_domain::PluginRef,
) -> PaymentDecided {
    match call {
        Ok(Ok(called)) => {
            shared.metrics.plugin_call(called.fuel_used, called.elapsed);
            tracing::debug!(
                fuel = called.fuel_used,
                memory_grows = called.memory_grows,
                elapsed_us = called.elapsed.as_micros() as u64,
                plugin = called.plugin.version,
                "plugin decided"
            );
            match called.value {
                Decision::Approve { quote } => {
                    settle(shared, pay.amount, quote, Some(called.plugin))
                }
                Decision::Decline { decline } => PaymentDecided::Declined {
                    decline,
                    plugin: Some(called.plugin),
                },
            }
        }
        Ok(Err(error)) => plugin_failed(&error, Some(plugin_ref)),
        Err(message) => declined("unavailable", &message, None),
    }
}

fn settle(
    shared: &Shared,
    amount: Money,
    quote: wasmpay_domain::Quote,
    plugin: Option<wasmpay_domain::PluginRef>,
) -> PaymentDecided {
    match quote.settle(amount, shared.platform_fee, shared.quote_limits) {
        Ok(settlement) => PaymentDecided::Approved {
            quote,
            settlement,
            plugin,
        },
        Err(error) => {
            tracing::warn!(%error, "plugin proposed an invalid quote");
            declined("quote_invalid", &error.to_string(), plugin)
        }
    }
}

fn declined(
    code: &str,
    message: &str,
    plugin: Option<wasmpay_domain::PluginRef>,
) -> PaymentDecided {
    PaymentDecided::Declined {
        decline: decline(code, message),
        plugin,
    }
}

fn decline(code: &str, message: &str) -> Decline {
    let mut text = message.to_owned();
    let mut end = text.len().min(wasmpay_domain::quote::TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    Decline {
        // Host codes are constants that follow the code rule.
        code: Code::new(code).unwrap_or_else(|_| Code::new("declined").expect("valid code")),
        message: text,
    }
}

fn plugin_failed(error: &PluginError, plugin: Option<wasmpay_domain::PluginRef>) -> PaymentDecided {
    tracing::warn!(code = error.code(), %error, "plugin failed; payment declined");
    declined(error.code(), &error.to_string(), plugin)
}

/// The merchant's plugin allows or denies a refund, seeing what was
/// captured and refunded so far. The ledger checks the amounts again when
/// it applies the refund.
async fn decide_refund(
    shared: &Arc<Shared>,
    merchant: &MerchantId,
    refund: &wasmpay_protocol::command::Refund,
    at_ms: i64,
) -> Result<RefundDecided, Failure> {
    let Some(plugin) = shared.plugins.get(merchant) else {
        return Ok(RefundDecided::Allowed {
            fee: None,
            plugin: None,
        });
    };
    let (merchant_id, payment_id) = (merchant.clone(), refund.payment_id.clone());
    let (amount, reason) = (refund.amount, refund.reason.clone());
    let worker = shared.clone();
    let plugin_ref = plugin.plugin_ref().clone();
    // The payment's read and the plugin call share one worker hop.
    let call = shared
        .on_worker(move || {
            let info = with_reader(&worker.db_path, |r| r.payment(&merchant_id, &payment_id))?
                .map_err(|e| e.to_string())?;
            // An unknown payment is the ledger's to refuse, with its own code.
            let Some(info) = info else {
                return Ok(None);
            };
            let input = RefundInput {
                payment_id,
                merchant: merchant_id,
                payer: info.payer.clone(),
                captured: info.captured,
                refunded: info.refunded,
                amount,
                reason,
                received_at_ms: at_ms,
                captured_at_ms: info.captured_at_ms.unwrap_or(info.created_at_ms),
            };
            let queries = Arc::new(Activity {
                db_path: worker.db_path.clone(),
                merchant: input.merchant.clone(),
                payer: input.payer.clone(),
                at_ms,
            });
            Ok(Some(worker.runtime.decide_refund(&plugin, queries, &input)))
        })
        .await
        .and_then(|r| r)
        .map_err(|e| Failure::new("unavailable", e))?;
    let Some(call) = call else {
        return Ok(RefundDecided::Allowed {
            fee: None,
            plugin: None,
        });
    };
    Ok(match call {
        Ok(called) => match called.value {
            RefundDecision::Allow { fee } => RefundDecided::Allowed {
                fee,
                plugin: Some(called.plugin),
            },
            RefundDecision::Deny { decline } => RefundDecided::Denied {
                decline,
                plugin: Some(called.plugin),
            },
        },
        Err(error) => {
            tracing::warn!(code = error.code(), %error, "plugin failed; refund denied");
            RefundDecided::Denied {
                decline: decline(error.code(), &error.to_string()),
                plugin: Some(plugin_ref),
            }
        }
    })
}

/// Config entries of an upload, for the registry.
pub type PluginConfig = BTreeMap<String, String>;
