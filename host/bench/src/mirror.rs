//! Two pipelines built from the daemon's own parts, for comparison. Neither
//! is a way to run wasmpay; both exist to price one design choice.
//!
//! - [`run_pipeline`] with [`Rule::Native`]: the daemon's pipeline (`wasmpay::pipeline::run`) stage
//!   for stage, with the same broker layer (`wasmpay::mqtt`), the same
//!   decode (`wasmpay_protocol::decode`), the same quote check
//!   (`Quote::settle`), the same ledger writer thread (`wasmpay::writer`,
//!   group commit through `Ledger::apply_batch`, `synchronous=FULL`), the
//!   same replies and notifications and the same in-order acks. Only the rule
//!   differs: the `fee` example's rule as a native Rust function, called
//!   inline instead of in a fresh wasm instance on a worker thread. The gap
//!   between the two is the price of the sandbox.
//! - [`run_naive`]: the seed's architecture done straightforwardly. One
//!   message at a time: decode, compile the merchant's component from its
//!   bytes (no precompiled artifact), load it, instantiate and call it,
//!   commit the one payment in its own transaction (an fsync each), publish
//!   the reply, ack, and only then take the next message.
//!
//! The loop of [`run_pipeline`] is a copy of `pipeline::run`'s, because the
//! daemon has no hook to swap the rule; the bench's report names the change
//! that would remove the copy. With [`Batching::Daemon`] it is the loop of
//! the daemon as it is (batching while the writer is busy, since
//! `cbf28a1`); run with the daemon's own prepare stage it checks that the
//! copy performs as the daemon does. [`Batching::Eager`] is the loop before
//! `cbf28a1`, kept to show on every run what that change bought.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use tokio::sync::{Semaphore, mpsc, watch};
use wasmpay::Config;
use wasmpay::handlers::{self, Prepared, Ready, ReplyTo, Shared, Work};
use wasmpay::mqtt::{self, Inbound};
use wasmpay::writer::{Done, Item, Writer};
use wasmpay_domain::{
    Code, Decision, Decline, LineKind, MerchantId, Money, PaymentId, PluginRef, Quote, QuoteLine,
    SubAccount,
};
use wasmpay_ledger::{Op, OpKind, PaymentDecided};
use wasmpay_plugin::{NoActivity, PaymentInput, PluginMeta};
use wasmpay_protocol::{Command, Decoded, Principal, Request, RequestProps};

/// Each merchant's `fee` configuration, as the plugin would read it.
#[derive(Debug, Clone, Default)]
pub struct FeeRules {
    pub configs: HashMap<MerchantId, BTreeMap<String, String>>,
}

impl FeeRules {
    /// The `fee` example's payment rule, natively: `fee_bps` (or
    /// `fee_bps.<CUR>`) of the amount rounded half up, plus
    /// `fee_fixed.<CUR>`, at most `fee_cap.<CUR>`, as one `service_fee` line.
    /// The configuration is parsed from text on every call, as the plugin
    /// must. A merchant without configuration gets the default rules
    /// (approve, no lines), as one without a plugin does.
    pub fn decide(&self, merchant: &MerchantId, amount: Money) -> Decision {
        let Some(config) = self.configs.get(merchant) else {
            return Decision::Approve {
                quote: Quote::default(),
            };
        };
        match native_fee(config, amount) {
            Some(quote) => Decision::Approve { quote },
            None => Decision::Decline {
                decline: Decline {
                    code: Code::new("plugin_config_invalid").expect("valid code"),
                    message: "the fee configuration does not parse".to_owned(),
                },
            },
        }
    }
}

fn native_fee(config: &BTreeMap<String, String>, amount: Money) -> Option<Quote> {
    let currency = amount.currency();
    let money = |key: &str| -> Option<Option<Money>> {
        match config.get(key) {
            Some(text) => Money::parse(text.trim(), currency).ok().map(Some),
            None => Some(None),
        }
    };
    let bps: i128 = match config
        .get(&format!("fee_bps.{currency}"))
        .or_else(|| config.get("fee_bps"))
    {
        Some(text) => text.trim().parse().ok()?,
        None => 0,
    };
    let rounded = (i128::from(amount.minor()) * bps + 5_000) / 10_000;
    let fixed = money(&format!("fee_fixed.{currency}"))?.map_or(0, Money::minor);
    let mut fee = i64::try_from(rounded).ok()?.checked_add(fixed)?;
    if let Some(cap) = money(&format!("fee_cap.{currency}"))? {
        fee = fee.min(cap.minor());
    }
    let mut quote = Quote::default();
    if fee > 0 {
        let fee = Money::from_minor(fee, currency);
        quote.lines.push(QuoteLine {
            kind: LineKind::Fee,
            code: Code::new("service_fee").ok()?,
            description: format!("Service fee {fee}"),
            amount: fee,
            account: SubAccount::main(),
        });
    }
    Some(quote)
}

/// The reply destination the daemon would choose: the Response Topic if it
/// lies in the principal's own reply namespace, else the conventional one.
fn reply_to(message: &Inbound, principal: &Principal) -> ReplyTo {
    let topic = match &message.response_topic {
        Some(topic) if wasmpay_protocol::response_topic_allowed(principal, topic) => topic.clone(),
        _ => wasmpay_protocol::reply_topic_for(principal),
    };
    ReplyTo {
        topic,
        correlation: message.correlation_data.clone(),
    }
}

/// What the mirrors do with a message.
enum Incoming {
    /// A user's payment: the rule under test decides it.
    Payment(Request),
    /// The host's own output coming back: nothing to answer.
    Ignore,
    /// Anything else (setup): the daemon's own handler answers it.
    Other,
}

fn classify(shared: &Shared, message: &Inbound) -> Incoming {
    let props = RequestProps {
        user_properties: message.user_properties.clone(),
    };
    match wasmpay_protocol::decode(
        &message.topic,
        &message.payload,
        &props,
        &shared.decode_limits,
    ) {
        Decoded::Request(request)
            if matches!(
                (&request.principal, &request.command),
                (Principal::User(_), Command::Pay(_))
            ) =>
        {
            Incoming::Payment(request)
        }
        Decoded::Ignore => Incoming::Ignore,
        _ => Incoming::Other,
    }
}

/// The payment operation for a decided request, as the daemon's handler
/// builds it: the host checks the rule's quote with `Quote::settle`.
fn ready_payment(
    shared: &Shared,
    message: &Inbound,
    request: Request,
    decision: Decision,
    plugin: Option<PluginRef>,
) -> Prepared {
    let (Principal::User(payer), Command::Pay(pay)) = (&request.principal, &request.command) else {
        unreachable!("classify only passes user payments");
    };
    let decided = match decision {
        Decision::Approve { quote } => {
            match quote.settle(pay.amount, shared.platform_fee, shared.quote_limits) {
                Ok(settlement) => PaymentDecided::Approved {
                    quote,
                    settlement,
                    plugin,
                },
                Err(error) => PaymentDecided::Declined {
                    decline: Decline {
                        code: Code::new("quote_invalid").expect("valid code"),
                        message: error.to_string(),
                    },
                    plugin,
                },
            }
        }
        Decision::Decline { decline } => PaymentDecided::Declined { decline, plugin },
    };
    let op = Op {
        principal: wasmpay_ledger::Principal::User(payer.clone()),
        key: request.id.clone(),
        at_ms: handlers::now_ms(),
        kind: OpKind::Payment {
            payer: payer.clone(),
            merchant: pay.merchant.clone(),
            payment_id: PaymentId::derive(payer, &request.id),
            amount: pay.amount,
            memo: pay.memo.clone(),
            metadata: pay.metadata.clone(),
            decision: decided,
        },
    };
    // The span the daemon's `handlers::prepare` gives every request (off in
    // the bench, whose subscriber listens to two events only).
    let span = tracing::info_span!(
        "request",
        id = %request.id,
        principal = %request.principal,
        command = request.command.name(),
        merchant = %pay.merchant,
    );
    Prepared::Ready(Box::new(Ready {
        reply: reply_to(message, &request.principal),
        request,
        work: Work::Apply(Box::new(op)),
        span,
    }))
}

/// Which rule decides payments in [`run_pipeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The daemon's own prepare stage (`wasmpay::handlers::prepare`): the
    /// merchant's wasm plugin on a worker thread.
    Plugin,
    /// The `fee` rule in native Rust ([`FeeRules`]), inline.
    Native,
}

/// How [`run_pipeline`] hands prepared work to the ledger writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// As `pipeline::run` does: prepared work waits in the loop, in arrival
    /// order, while the writer commits, and goes as one batch (up to
    /// `batch_ops_max`) when the writer is done with the last batch (no
    /// batch queued ahead of it), and intake never waits on the writer (the
    /// broker's receive maximum still bounds what is in flight).
    Daemon,
    /// The daemon's loop before `cbf28a1`: a batch is whatever is prepared
    /// the moment the first item is, queued for the writer (4 batches
    /// deep); while the queue is full the loop waits and takes no new
    /// messages, so a busy writer gets a queue of tiny batches.
    Eager,
}

/// The prepare stage: payments are decided by `rule`; everything else
/// (setup, the daemon's own notifications coming back) goes through the
/// daemon's own handler.
async fn prepare(
    shared: &Arc<Shared>,
    rule: Rule,
    rules: &FeeRules,
    message: &Inbound,
) -> Prepared {
    if rule == Rule::Plugin {
        return handlers::prepare(shared, message).await;
    }
    match classify(shared, message) {
        Incoming::Payment(request) => {
            let Command::Pay(pay) = &request.command else {
                unreachable!("classify only passes payments")
            };
            let decision = rules.decide(&pay.merchant, pay.amount);
            ready_payment(shared, message, request, decision, None)
        }
        Incoming::Ignore => Prepared::Answer(Vec::new()),
        Incoming::Other => handlers::prepare(shared, message).await,
    }
}

/// Runs a copy of `wasmpay::pipeline::run`, stage for stage, until
/// `shutdown` resolves, with the payment rule and the batching chosen. With
/// [`Rule::Plugin`] and [`Batching::Daemon`] it is the daemon (a check that
/// the copy is faithful); the other choices price one change each.
pub async fn run_pipeline(
    config: Config,
    rule: Rule,
    rules: FeeRules,
    batching: Batching,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::open(&config)?);
    let rules = Arc::new(rules);
    let writer = Writer::open(&config, shared.clone())?;
    let (stop_mqtt, stop_mqtt_rx) = watch::channel(false);
    let (broker, mut inbound, mqtt_task) =
        mqtt::start(&config.broker, handlers::SUBSCRIPTIONS, stop_mqtt_rx)
            .map_err(anyhow::Error::msg)?;

    let depth = usize::from(config.broker.inflight_messages_max);
    let queued_batches_max = match batching {
        Batching::Daemon => 1,
        Batching::Eager => 4,
    };
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<Item>>(queued_batches_max);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
    // As in the daemon: the next batch leaves when the writer is free
    // (`Daemon`; `Eager` queues batches instead and ignores it).
    let writer_free = Arc::new(Semaphore::new(1));
    let writer_thread = {
        let free = writer_free.clone();
        std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer.run(batch_rx, done_tx, &free))?
    };
    let replier_broker = broker.clone();
    let replier_metrics = shared.metrics.clone();
    let replier = tokio::spawn(async move {
        while let Some(batch) = done_rx.recv().await {
            for (message, replies) in batch {
                for reply in replies {
                    let _ = replier_broker.publish(reply).await;
                }
                if let Some(message) = message {
                    replier_metrics.replied(message.received.elapsed());
                    let _ = replier_broker.ack(&message).await;
                }
            }
        }
    });

    let batch_ops_max = config.pipeline.batch_ops_max;
    let mut sweep = tokio::time::interval(Duration::from_millis(
        config.pipeline.hold_sweep_interval_ms.max(10),
    ));
    let mut ordered = FuturesOrdered::new();
    // Prepared, in arrival order, waiting for the writer (`Daemon` only).
    let mut pending: Vec<Item> = Vec::new();
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => stopping = true,
            free = writer_free.acquire(), if !pending.is_empty() => {
                free.map_err(|_| anyhow::anyhow!("the ledger writer stopped"))?.forget();
                let count = pending.len().min(batch_ops_max);
                batch_tx
                    .try_send(pending.drain(..count).collect())
                    .map_err(|_| anyhow::anyhow!("the ledger writer stopped"))?;
            }
            Some(first) = ordered.next(), if !ordered.is_empty() => match batching {
                Batching::Daemon => {
                    pending.push(first);
                    while let Some(Some(item)) = ordered.next().now_or_never() {
                        pending.push(item);
                    }
                }
                Batching::Eager => {
                    let mut batch: Vec<Item> = vec![first];
                    while batch.len() < batch_ops_max {
                        match ordered.next().now_or_never() {
                            Some(Some(item)) => batch.push(item),
                            _ => break,
                        }
                    }
                    if batch_tx.send(batch).await.is_err() {
                        anyhow::bail!("the ledger writer stopped");
                    }
                }
            },
            message = inbound.recv(), if !stopping && ordered.len() + pending.len() < depth => {
                let Some(message) = message else { break };
                let (shared, rules) = (shared.clone(), rules.clone());
                ordered.push_back(async move {
                    let prepared = prepare(&shared, rule, &rules, &message).await;
                    (Some(message), prepared)
                }.boxed());
            }
            _ = sweep.tick(), if !stopping => {
                ordered.push_back(async { handlers::sweep_holds() }.boxed());
            }
        }
        shared.metrics.inflight(ordered.len() + pending.len());
        if stopping && ordered.is_empty() && pending.is_empty() {
            break;
        }
    }
    finish(
        inbound,
        batch_tx,
        writer_thread,
        replier,
        stop_mqtt,
        mqtt_task,
    )
    .await
}

/// Stops the writer, the replier and the broker connection, in that order,
/// as the daemon does.
async fn finish(
    mut inbound: mpsc::Receiver<Inbound>,
    batch_tx: mpsc::Sender<Vec<Item>>,
    writer_thread: std::thread::JoinHandle<anyhow::Result<()>>,
    replier: tokio::task::JoinHandle<()>,
    stop_mqtt: watch::Sender<bool>,
    mqtt_task: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    let drain = tokio::spawn(async move { while inbound.recv().await.is_some() {} });
    drop(batch_tx);
    let writer_result = tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the ledger writer panicked"))?;
    replier.await?;
    let _ = stop_mqtt.send(true);
    let _ = mqtt_task.await;
    drain.abort();
    writer_result
}

/// The component and configuration each merchant's payments run through in
/// the naive baseline.
#[derive(Debug, Clone)]
pub struct NaiveRules {
    pub wasm: &'static [u8],
    pub configs: HashMap<MerchantId, BTreeMap<String, String>>,
}

/// The naive baseline's rule: compile the component from its bytes, load
/// it, instantiate and call it, every time.
fn decide_naive(
    shared: &Shared,
    rules: &NaiveRules,
    request: &Request,
) -> (Decision, Option<PluginRef>) {
    let (Principal::User(payer), Command::Pay(pay)) = (&request.principal, &request.command) else {
        unreachable!("classify only passes user payments");
    };
    let Some(config) = rules.configs.get(&pay.merchant) else {
        return (
            Decision::Approve {
                quote: Quote::default(),
            },
            None,
        );
    };
    let declined = |code: &str, message: String| Decision::Decline {
        decline: Decline {
            code: Code::new(code).expect("valid code"),
            message,
        },
    };
    let compiled = match shared.runtime.compile(rules.wasm) {
        Ok(compiled) => compiled,
        Err(e) => return (declined("plugin_invalid", e.to_string()), None),
    };
    let meta = PluginMeta {
        merchant: pay.merchant.clone(),
        version: 1,
        sha256: compiled.sha256.clone(),
        config: config.clone(),
    };
    let plugin = match shared.runtime.load(&compiled.artifact, meta) {
        Ok(plugin) => plugin,
        Err(e) => return (declined("plugin_invalid", e.to_string()), None),
    };
    let input = PaymentInput {
        payment_id: PaymentId::derive(payer, &request.id),
        merchant: pay.merchant.clone(),
        payer: payer.clone(),
        amount: pay.amount,
        memo: pay.memo.clone(),
        metadata: pay.metadata.clone(),
        received_at_ms: handlers::now_ms(),
        is_authorization: false,
    };
    match shared
        .runtime
        .decide_payment(&plugin, Arc::new(NoActivity), &input)
    {
        Ok(called) => (called.value, Some(called.plugin)),
        Err(error) => (
            declined(error.code(), error.to_string()),
            Some(plugin.plugin_ref().clone()),
        ),
    }
}

/// Runs the naive baseline until `shutdown` resolves: one message at a time,
/// from decode to ack, each payment compiled, called and committed alone.
pub async fn run_naive(
    config: Config,
    rules: NaiveRules,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::open(&config)?);
    let rules = Arc::new(rules);
    let writer = Writer::open(&config, shared.clone())?;
    let (stop_mqtt, stop_mqtt_rx) = watch::channel(false);
    let (broker, mut inbound, mqtt_task) =
        mqtt::start(&config.broker, handlers::SUBSCRIPTIONS, stop_mqtt_rx)
            .map_err(anyhow::Error::msg)?;
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<Item>>(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
    // One message at a time: the writer's permits are never waited for.
    let writer_thread = std::thread::Builder::new()
        .name("ledger-writer".to_owned())
        .spawn(move || writer.run(batch_rx, done_tx, &Semaphore::new(0)))?;
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut shutdown => break,
            message = inbound.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let prepared = match classify(&shared, &message) {
            Incoming::Payment(request) => {
                let (worker, rules2) = (shared.clone(), rules.clone());
                let (request, (decision, plugin)) = tokio::task::spawn_blocking(move || {
                    let decided = decide_naive(&worker, &rules2, &request);
                    (request, decided)
                })
                .await?;
                ready_payment(&shared, &message, request, decision, plugin)
            }
            Incoming::Ignore => Prepared::Answer(Vec::new()),
            Incoming::Other => handlers::prepare(&shared, &message).await,
        };
        batch_tx
            .send(vec![(Some(message), prepared)])
            .await
            .map_err(|_| anyhow::anyhow!("the ledger writer stopped"))?;
        let Some(done) = done_rx.recv().await else {
            anyhow::bail!("the ledger writer stopped");
        };
        for (message, replies) in done {
            for reply in replies {
                let _ = broker.publish(reply).await;
            }
            if let Some(message) = message {
                let _ = broker.ack(&message).await;
            }
        }
    }
    let replier = tokio::spawn(async move { while done_rx.recv().await.is_some() {} });
    finish(
        inbound,
        batch_tx,
        writer_thread,
        replier,
        stop_mqtt,
        mqtt_task,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpay_domain::Currency;

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("EUR").unwrap())
    }

    fn rules() -> (FeeRules, MerchantId) {
        let merchant = MerchantId::new("m0").unwrap();
        let config = BTreeMap::from([
            ("fee_bps".to_owned(), "290".to_owned()),
            ("fee_fixed.EUR".to_owned(), "0.30".to_owned()),
            ("fee_cap.EUR".to_owned(), "5.00".to_owned()),
        ]);
        let rules = FeeRules {
            configs: HashMap::from([(merchant.clone(), config)]),
        };
        (rules, merchant)
    }

    fn fee(decision: Decision) -> Option<Money> {
        match decision {
            Decision::Approve { quote } => quote.lines.first().map(|l| l.amount),
            Decision::Decline { .. } => panic!("declined"),
        }
    }

    #[test]
    fn the_native_rule_matches_the_fee_plugin() {
        // The plugin's own test: 2.9 % of 10.05 EUR is 29.145 cents, rounded
        // half up to 29, plus 30.
        let (rules, merchant) = rules();
        assert_eq!(fee(rules.decide(&merchant, eur(1005))), Some(eur(59)));
        assert_eq!(fee(rules.decide(&merchant, eur(1_000_000))), Some(eur(500)));
    }

    #[test]
    fn a_merchant_without_rules_gets_the_default() {
        let (rules, _) = rules();
        let other = MerchantId::new("m1").unwrap();
        assert_eq!(fee(rules.decide(&other, eur(1005))), None);
    }
}
