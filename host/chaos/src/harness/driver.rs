//! The load: simulated users paying merchants, merchants refunding, the
//! operator depositing, each request QoS 1 with its own id. A request whose
//! reply is late is sent again with the same id and the same parameters, as
//! a real client does after a timeout; the ledger's idempotency records must
//! make that harmless.
//!
//! The first reply to a request is its answer. Every later reply for the
//! same id (the daemon answering a redelivered request again, or the broker
//! redelivering a reply) is a redelivery and must agree with the answer.
//!
//! Each user runs one request at a time, so the load's concurrency is the
//! number of users; a few MQTT connections carry them all, each with its
//! own Response Topics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::rng::Rng;

/// The one currency of the run.
pub const CURRENCY: &str = "EUR";

/// Refusals the ledger does not record: the protocol says to retry them
/// with the same id.
const TRANSIENT_CODES: [&str; 2] = ["internal_error", "unavailable"];

/// Pause before sending a request again after a transient refusal.
const TRANSIENT_RETRY_MS: u64 = 100;

/// Pause between reconnect attempts of a load connection.
const RECONNECT_MS: u64 = 50;

/// Problems kept word for word in a report; the rest are only counted.
const PROBLEMS_KEPT_MAX: usize = 20;

/// The parts of a reply that carry its meaning. Two replies to one request
/// must agree on all of them; other fields (a balance read when the reply
/// was built) may legitimately move.
const REPLY_MEANING: [&str; 10] = [
    "/ok",
    "/error/code",
    "/error/detail/payment_id",
    "/result/payment_id",
    "/result/status",
    "/result/amount",
    "/result/payer_total",
    "/result/settlement",
    "/result/payer_credited",
    "/result/user",
];

/// The shape of a load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Requests of the load proper (setup not counted).
    pub ops: usize,
    pub users: usize,
    pub merchants: usize,
    /// MQTT connections the users share.
    pub connections: usize,
    /// What each user's account starts with, in minor units.
    pub opening_deposit_minor: i64,
    /// How long to wait for a reply before sending the request again.
    pub reply_timeout: Duration,
    /// How long to keep trying one request before counting it unanswered.
    pub give_up: Duration,
}

/// Who sends a request: its topic namespace and its idempotency scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    User(String),
    Merchant(String),
    Admin,
}

impl Principal {
    fn namespace(&self) -> String {
        match self {
            Self::User(user) => format!("users/{user}"),
            Self::Merchant(merchant) => format!("merchants/{merchant}"),
            Self::Admin => "admin".to_owned(),
        }
    }
}

/// One operation of the load.
#[derive(Debug, Clone)]
pub enum Op {
    OpenUser {
        user: String,
    },
    OpenMerchant {
        merchant: String,
    },
    Deposit {
        user: String,
        amount: i64,
    },
    Pay {
        user: String,
        merchant: String,
        amount: i64,
    },
    Refund {
        user: String,
        merchant: String,
        payment_id: String,
        amount: i64,
    },
    /// An answered payment's id again with another amount: must be refused
    /// with `conflict`, and nothing applied.
    Reuse {
        user: String,
        merchant: String,
        amount: i64,
    },
}

impl Op {
    pub fn principal(&self) -> Principal {
        match self {
            Self::OpenUser { .. } | Self::OpenMerchant { .. } | Self::Deposit { .. } => {
                Principal::Admin
            }
            Self::Pay { user, .. } | Self::Reuse { user, .. } => Principal::User(user.clone()),
            Self::Refund { merchant, .. } => Principal::Merchant(merchant.clone()),
        }
    }

    fn topic(&self) -> String {
        let verb = match self {
            Self::OpenUser { .. } | Self::OpenMerchant { .. } => "accounts/open",
            Self::Deposit { .. } => "deposit",
            Self::Pay { .. } | Self::Reuse { .. } => "pay",
            Self::Refund { .. } => "refund",
        };
        format!("wasmpay/v1/{}/{verb}", self.principal().namespace())
    }

    fn body(&self, id: &str) -> Value {
        match self {
            Self::OpenUser { user } => {
                json!({"id": id, "owner": {"user": user}, "currency": CURRENCY})
            }
            Self::OpenMerchant { merchant } => {
                json!({"id": id, "owner": {"merchant": merchant}, "currency": CURRENCY})
            }
            Self::Deposit { user, amount } => {
                json!({"id": id, "user": user, "amount": decimal(*amount), "currency": CURRENCY})
            }
            Self::Pay {
                merchant, amount, ..
            }
            | Self::Reuse {
                merchant, amount, ..
            } => {
                json!({"id": id, "merchant": merchant, "amount": decimal(*amount), "currency": CURRENCY})
            }
            Self::Refund {
                payment_id, amount, ..
            } => json!({"id": id, "payment_id": payment_id, "amount": decimal(*amount),
                         "currency": CURRENCY, "reason": "chaos"}),
        }
    }
}

/// One request the load sent, and the first reply it got.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub op: Op,
    /// `None` if no reply came before the load gave up.
    pub reply: Option<Value>,
}

/// What the load saw, counted as it happened.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (the first time each).
    pub sent: AtomicU64,
    /// Requests of the load proper that got their answer.
    pub answered: AtomicU64,
    /// Requests sent again with the same id after a timeout.
    pub retries: AtomicU64,
    /// Requests answered only after at least one such retry.
    pub answered_after_retry: AtomicU64,
    /// Requests sent again after `internal_error` or `unavailable`.
    pub transient: AtomicU64,
    /// Replies for requests that had their answer already.
    pub redeliveries: AtomicU64,
    /// Redeliveries that disagree with the answer on its meaning.
    pub mismatched: AtomicU64,
    /// Redeliveries that differ from the answer only in other fields.
    pub variations: AtomicU64,
    /// Replies that answer nothing the load asked.
    pub unexpected: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Who is waiting for which reply. Keys are `namespace#id`.
#[derive(Debug, Default)]
struct Waiters {
    pending: HashMap<String, oneshot::Sender<Value>>,
    answered: HashMap<String, Value>,
    /// `Reuse` requests wait here: their reply has the id of an answered
    /// payment and must be a `conflict`.
    reuse_pending: HashMap<String, oneshot::Sender<Value>>,
    reuse_answered: HashSet<String>,
    /// Readiness checks given up on: a late reply to one is no news.
    abandoned: HashSet<String>,
}

#[derive(Debug, Default)]
struct Shared {
    waiters: Mutex<Waiters>,
    counters: Counters,
    problems: Mutex<Vec<String>>,
    problem_count: AtomicU64,
    closing: AtomicBool,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn problem(&self, text: String) {
        self.problem_count.fetch_add(1, Ordering::SeqCst);
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if problems.len() < PROBLEMS_KEPT_MAX {
            problems.push(text);
        }
    }

    /// Hands a reply to whoever waits for it, or counts it as a redelivery.
    fn route(&self, connection: usize, topic: &str, payload: &[u8]) {
        let suffix = format!("/replies/chaos{connection}");
        let namespace = topic
            .strip_prefix("wasmpay/v1/")
            .and_then(|t| t.strip_suffix(&suffix));
        let body: Option<Value> = serde_json::from_slice(payload).ok();
        let (Some(namespace), Some(body)) = (namespace, body) else {
            self.counters.unexpected.fetch_add(1, Ordering::SeqCst);
            self.problem(format!("unreadable reply on {topic}"));
            return;
        };
        let Some(id) = body["id"].as_str() else {
            self.counters.unexpected.fetch_add(1, Ordering::SeqCst);
            self.problem(format!("reply without an id on {topic}: {body}"));
            return;
        };
        let key = format!("{namespace}#{id}");
        let mut waiters = self.waiters();
        if body.pointer("/error/code") == Some(&json!("conflict")) {
            if let Some(waiter) = waiters.reuse_pending.remove(&key) {
                waiters.reuse_answered.insert(key);
                let _ = waiter.send(body);
                return;
            }
            if waiters.reuse_answered.contains(&key) {
                self.counters.redeliveries.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        if let Some(waiter) = waiters.pending.remove(&key) {
            waiters.answered.insert(key, body.clone());
            let _ = waiter.send(body);
            return;
        }
        if let Some(first) = waiters.answered.get(&key) {
            self.counters.redeliveries.fetch_add(1, Ordering::SeqCst);
            if first == &body {
                return;
            }
            let differing: Vec<&str> = REPLY_MEANING
                .iter()
                .copied()
                .filter(|p| first.pointer(p) != body.pointer(p))
                .collect();
            if differing.is_empty() {
                self.counters.variations.fetch_add(1, Ordering::SeqCst);
            } else {
                self.counters.mismatched.fetch_add(1, Ordering::SeqCst);
                self.problem(format!(
                    "{key}: a redelivered reply differs in {differing:?}: first {first}, then {body}"
                ));
            }
            return;
        }
        if waiters.abandoned.contains(&key) {
            return;
        }
        drop(waiters);
        self.counters.unexpected.fetch_add(1, Ordering::SeqCst);
        self.problem(format!("a reply nobody asked for: {key}: {body}"));
    }
}

/// The load's MQTT connections and everything they saw.
#[derive(Debug)]
pub struct Load {
    config: LoadConfig,
    clients: Vec<AsyncClient>,
    shared: Arc<Shared>,
    /// Requests of the load proper handed out so far.
    next_op: AtomicUsize,
    probes: AtomicU64,
}

impl Load {
    /// Opens the connections (persistent sessions, Nagle off) and waits
    /// until each has subscribed to its reply topics.
    pub async fn connect(address: &str, config: LoadConfig) -> anyhow::Result<Arc<Self>> {
        let (host, port) = address.rsplit_once(':').context("host:port")?;
        let port: u16 = port.parse().context("port")?;
        let shared = Arc::new(Shared::default());
        let mut clients = Vec::new();
        for connection in 0..config.connections.max(1) {
            let mut options = MqttOptions::new(format!("chaos-load-{connection}"), host, port);
            options
                .set_keep_alive(Duration::from_secs(5))
                .set_clean_start(false)
                .set_session_expiry_interval(Some(3_600))
                .set_max_packet_size(Some(1 << 20));
            let mut network = rumqttc::NetworkOptions::new();
            network.set_tcp_nodelay(true);
            options.set_network_options(network);
            let (client, mut eventloop) = AsyncClient::new(options, 10_000);
            let filters: Vec<Filter> = ["users/+", "merchants/+", "admin"]
                .iter()
                .map(|ns| {
                    Filter::new(
                        format!("wasmpay/v1/{ns}/replies/chaos{connection}"),
                        QoS::AtLeastOnce,
                    )
                })
                .collect();
            let (ready_tx, ready_rx) = oneshot::channel();
            let subscriber = client.clone();
            let routes = shared.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            // Again on every connect: a crashed broker may
                            // have lost the session. Never awaited here: the
                            // event loop must keep polling.
                            let subscriber = subscriber.clone();
                            let filters = filters.clone();
                            tokio::spawn(async move {
                                let _ = subscriber.subscribe_many(filters).await;
                            });
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let topic = String::from_utf8_lossy(&publish.topic);
                            routes.route(connection, &topic, &publish.payload);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            if routes.closing.load(Ordering::SeqCst) {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
                        }
                    }
                    if routes.closing.load(Ordering::SeqCst) {
                        return;
                    }
                }
            });
            tokio::time::timeout(Duration::from_secs(10), ready_rx)
                .await
                .context("the load's connection did not subscribe in 10 s")?
                .context("the load's connection stopped")?;
            clients.push(client);
        }
        Ok(Arc::new(Self {
            config,
            clients,
            shared,
            next_op: AtomicUsize::new(0),
            probes: AtomicU64::new(0),
        }))
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Problems seen while routing replies: how many, and the first few.
    pub fn problems(&self) -> (u64, Vec<String>) {
        let kept = self
            .shared
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.shared.problem_count.load(Ordering::SeqCst), kept)
    }

    /// Stops the connections' event loops.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for client in &self.clients {
            let _ = client.disconnect().await;
        }
    }

    /// Opens every account and makes each user's opening deposit.
    pub async fn setup(self: &Arc<Self>) -> anyhow::Result<Vec<Record>> {
        let mut tasks = tokio::task::JoinSet::new();
        for merchant in 0..self.config.merchants {
            let load = self.clone();
            tasks.spawn(async move {
                let op = Op::OpenMerchant {
                    merchant: merchant_name(merchant),
                };
                vec![load.record(merchant, op, format!("open-m{merchant}")).await]
            });
        }
        for user in 0..self.config.users {
            let load = self.clone();
            tasks.spawn(async move {
                let name = user_name(user);
                let open = Op::OpenUser { user: name.clone() };
                let deposit = Op::Deposit {
                    user: name,
                    amount: load.config.opening_deposit_minor,
                };
                vec![
                    load.record(user, open, format!("open-u{user}")).await,
                    load.record(user, deposit, format!("d-u{user}-0")).await,
                ]
            });
        }
        let mut records = Vec::new();
        while let Some(done) = tasks.join_next().await {
            records.extend(done?);
        }
        for record in &records {
            anyhow::ensure!(
                record.reply.as_ref().is_some_and(|r| r["ok"] == true),
                "setup request {} was not approved: {:?}",
                record.id,
                record.reply
            );
        }
        Ok(records)
    }

    /// Runs the load proper: every user at once, one request at a time
    /// each, until `ops` requests are answered (or given up).
    pub async fn run(self: Arc<Self>, mut rng: Rng) -> Vec<Record> {
        let mut tasks = tokio::task::JoinSet::new();
        for user in 0..self.config.users {
            let load = self.clone();
            let rng = rng.fork();
            tasks.spawn(async move { load.user(user, rng).await });
        }
        let mut records = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(done) => records.extend(done),
                Err(e) => self.shared.problem(format!("a user task failed: {e}")),
            }
        }
        records
    }

    /// Waits until the daemon answers: asks for its status every quarter
    /// second. A request published before the daemon ever subscribed has no
    /// session to wait in, and the broker drops it.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for n in 0.. {
            let id = format!("ready-{n}");
            let key = format!("admin#{id}");
            let (tx, rx) = oneshot::channel();
            self.shared.waiters().pending.insert(key.clone(), tx);
            let properties = PublishProperties {
                response_topic: Some("wasmpay/v1/admin/replies/chaos0".to_owned()),
                ..PublishProperties::default()
            };
            self.clients[0]
                .publish_with_properties(
                    "wasmpay/v1/admin/status",
                    QoS::AtLeastOnce,
                    false,
                    json!({"id": id}).to_string(),
                    properties,
                )
                .await?;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), rx).await {
                return Ok(());
            }
            let mut waiters = self.shared.waiters();
            waiters.pending.remove(&key);
            waiters.abandoned.insert(key);
            drop(waiters);
            anyhow::ensure!(
                Instant::now() < deadline,
                "the daemon did not answer within {} s",
                limit.as_secs()
            );
        }
        Ok(())
    }

    /// A fresh request (a balance read, which records nothing): when its
    /// reply came, if it did. Tells when the daemon answers new work again.
    pub async fn probe(&self) -> Option<Instant> {
        let n = self.probes.fetch_add(1, Ordering::SeqCst);
        let principal = Principal::User(user_name(0));
        let id = format!("probe-{n}");
        let topic = "wasmpay/v1/users/u0/balance".to_owned();
        let reply = self
            .request(0, &principal, &topic, &id, json!({"id": id}), false)
            .await?;
        (reply["ok"] == true).then(Instant::now)
    }

    /// One simulated user: pays, refunds its own approved payments (as the
    /// merchant), tops up (as the operator), and now and then reuses an
    /// answered payment's id with another amount.
    async fn user(&self, user: usize, mut rng: Rng) -> Vec<Record> {
        let name = user_name(user);
        let mut records = Vec::new();
        // Approved payments not yet refunded: (payment id, merchant, payer total).
        let mut refundable: Vec<(String, String, i64)> = Vec::new();
        // Answered payments: (request id, merchant, amount).
        let mut paid: Vec<(String, String, i64)> = Vec::new();
        let mut seq = 0u64;
        while self.next_op.fetch_add(1, Ordering::SeqCst) < self.config.ops {
            seq += 1;
            let roll = rng.below(100);
            let (id, op) = if roll < 2 && !paid.is_empty() {
                let (id, merchant, amount) = paid[rng.below(paid.len() as u64) as usize].clone();
                let op = Op::Reuse {
                    user: name.clone(),
                    merchant,
                    amount: amount + 1,
                };
                (id, op)
            } else if roll < 27 && !refundable.is_empty() {
                let pick = rng.below(refundable.len() as u64) as usize;
                let (payment_id, merchant, total) = refundable.swap_remove(pick);
                let op = Op::Refund {
                    user: name.clone(),
                    merchant,
                    payment_id,
                    amount: rng.range(1, total as u64) as i64,
                };
                (format!("r-u{user}-{seq}"), op)
            } else if roll < 35 {
                let op = Op::Deposit {
                    user: name.clone(),
                    amount: rng.range(100, 30_000) as i64,
                };
                (format!("d-u{user}-{seq}"), op)
            } else {
                let op = Op::Pay {
                    user: name.clone(),
                    merchant: merchant_name(rng.below(self.config.merchants as u64) as usize),
                    amount: rng.range(1, 4_000) as i64,
                };
                (format!("p-u{user}-{seq}"), op)
            };
            let record = self.record(user, op, id).await;
            if record.reply.is_some() {
                self.shared.counters.answered.fetch_add(1, Ordering::SeqCst);
            }
            if let (
                Op::Pay {
                    merchant, amount, ..
                },
                Some(reply),
            ) = (&record.op, &record.reply)
            {
                paid.push((record.id.clone(), merchant.clone(), *amount));
                if reply["ok"] == true
                    && let (Some(payment_id), Some(total)) = (
                        reply.pointer("/result/payment_id").and_then(Value::as_str),
                        minor(reply, "/result/payer_total/amount"),
                    )
                {
                    refundable.push((payment_id.to_owned(), merchant.clone(), total));
                }
            }
            records.push(record);
        }
        records
    }

    /// Sends `op` as `id` on the user's connection and keeps the first reply.
    async fn record(&self, user: usize, op: Op, id: String) -> Record {
        let connection = user % self.clients.len();
        let reuse = matches!(op, Op::Reuse { .. });
        let reply = self
            .request(
                connection,
                &op.principal(),
                &op.topic(),
                &id,
                op.body(&id),
                reuse,
            )
            .await;
        Record { id, op, reply }
    }

    /// Publishes a request and waits for its reply, sending it again with
    /// the same id whenever `reply_timeout` passes without one.
    async fn request(
        &self,
        connection: usize,
        principal: &Principal,
        topic: &str,
        id: &str,
        body: Value,
        reuse: bool,
    ) -> Option<Value> {
        let namespace = principal.namespace();
        let key = format!("{namespace}#{id}");
        let properties = PublishProperties {
            response_topic: Some(format!("wasmpay/v1/{namespace}/replies/chaos{connection}")),
            correlation_data: Some(bytes::Bytes::from(id.to_owned())),
            ..PublishProperties::default()
        };
        let payload = body.to_string();
        let client = &self.clients[connection];
        let started = Instant::now();
        self.shared.counters.sent.fetch_add(1, Ordering::SeqCst);
        let mut first = true;
        let mut first_attempt = true;
        loop {
            let (tx, mut rx) = oneshot::channel();
            {
                let mut waiters = self.shared.waiters();
                if reuse {
                    waiters.reuse_pending.insert(key.clone(), tx);
                } else {
                    waiters.answered.remove(&key);
                    waiters.pending.insert(key.clone(), tx);
                }
            }
            loop {
                if !first {
                    self.shared.counters.retries.fetch_add(1, Ordering::SeqCst);
                    first_attempt = false;
                }
                first = false;
                if let Err(e) = client
                    .publish_with_properties(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                        properties.clone(),
                    )
                    .await
                {
                    self.shared.problem(format!("{key}: publish failed: {e}"));
                    return None;
                }
                match tokio::time::timeout(self.config.reply_timeout, &mut rx).await {
                    Ok(Ok(reply)) => {
                        let code = reply.pointer("/error/code").and_then(Value::as_str);
                        if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
                            self.shared
                                .counters
                                .transient
                                .fetch_add(1, Ordering::SeqCst);
                            first = true;
                            tokio::time::sleep(Duration::from_millis(TRANSIENT_RETRY_MS)).await;
                            break; // Wait again under a fresh waiter.
                        }
                        if !first_attempt {
                            self.shared
                                .counters
                                .answered_after_retry
                                .fetch_add(1, Ordering::SeqCst);
                        }
                        return Some(reply);
                    }
                    Ok(Err(_)) => return None,
                    Err(_) if started.elapsed() >= self.config.give_up => {
                        let mut waiters = self.shared.waiters();
                        waiters.pending.remove(&key);
                        waiters.reuse_pending.remove(&key);
                        drop(waiters);
                        self.shared.problem(format!(
                            "{key}: no reply in {} s",
                            self.config.give_up.as_secs()
                        ));
                        return None;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

pub fn user_name(user: usize) -> String {
    format!("u{user}")
}

pub fn merchant_name(merchant: usize) -> String {
    format!("m{merchant}")
}

/// Minor units as the protocol's decimal string (EUR: two decimals).
pub fn decimal(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The amount at `pointer` (a decimal string) in minor units.
pub fn minor(value: &Value, pointer: &str) -> Option<i64> {
    let text = value.pointer(pointer)?.as_str()?;
    let currency = wasmpay_domain::Currency::parse(CURRENCY).ok()?;
    Some(wasmpay_domain::Money::parse(text, currency).ok()?.minor())
}
