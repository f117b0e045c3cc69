//! The load generator: MQTT 5 clients that publish requests with a Response
//! Topic and Correlation Data, as a real client does, and time every reply.
//!
//! Each client is one broker connection. A sender thread publishes its share
//! of the requests (request `k` goes to client `k % clients`); the client's
//! event loop task receives the replies. The Correlation Data carries the
//! request's sequence number and the time it was due, so a reply needs no
//! lookup to be timed, and every reply is checked off in a bitmap.
//!
//! Two pacings:
//! - **Closed loop**: at most `window` requests in flight per client; each
//!   reply lets the next request go. Measures the peak.
//! - **Open loop**: requests are due at a fixed rate whatever the replies do,
//!   and latency is measured from when a request was *due*, not when it was
//!   sent, so a stalled sender or server is charged for the wait
//!   (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::Semaphore;
use wasmpay::mqtt::EventLoop;

/// Largest packet a bench client sends or accepts: plugin uploads in base64.
const PACKET_BYTES_MAX: u32 = 8 * 1024 * 1024;
/// Latencies are recorded in microseconds up to this bound (a minute).
const LATENCY_US_MAX: u64 = 60_000_000;
/// A run gives up when no reply has arrived for this long.
const STALL_S_MAX: u64 = 60;

/// Numbers the runs of this process, for unique client ids.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// `label` with anything but ASCII letters and digits turned into `-`, for
/// client ids (which also end up in reply topics).
fn id_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// One request: where to publish it, what, and the principal's own reply
/// topic (the client appends its id to it, as the protocol allows).
#[derive(Debug, Clone)]
pub struct Request {
    pub topic: String,
    pub payload: Vec<u8>,
    /// `wasmpay/v1/users/{user}/replies` or the merchant or admin one.
    pub reply_base: String,
}

/// Makes request number `k` of a run.
pub type Generator = Arc<dyn Fn(u64) -> Request + Send + Sync>;

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// At most `window` requests in flight per client.
    Closed { window: usize },
    /// `rate_per_s` requests a second offered in total, whatever the replies.
    Open { rate_per_s: f64 },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Names the run in client ids and the progress bar.
    pub label: String,
    pub total: u64,
    pub clients: usize,
    pub pacing: Pacing,
    /// Count a reply as ok only if it says `"ok":true` (off for the echo
    /// ceiling, whose replies are the requests themselves).
    pub expect_ok: bool,
    /// Keep every reply's payload (setup reads the plugin versions).
    pub keep_replies: bool,
    pub progress: bool,
    /// Each load connection's packets per write (`EventLoop`'s setting).
    pub packets_per_write: u16,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub label: String,
    /// Requests the plan asked for.
    pub expected: u64,
    pub sent: u64,
    /// Distinct requests answered.
    pub replies: u64,
    pub ok: u64,
    /// Replies that arrived twice (a redelivery); not counted again.
    pub duplicates: u64,
    /// From the first request due to the last reply.
    pub elapsed: Duration,
    /// Publish (open loop: due time) to reply, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Every reply, in request order, when the plan keeps replies.
    pub kept: Vec<Kept>,
    /// The first few replies that were not ok, for the report.
    pub failures: Vec<String>,
    /// Why a client stopped early, if one did.
    pub errors: Vec<String>,
    /// The server's own timings during the run, when recorded.
    pub timings: Option<crate::timings::Recorded>,
}

impl Outcome {
    /// Replies per second.
    pub fn throughput(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Every request answered, and every answer ok where that is expected.
    pub fn complete(&self) -> bool {
        self.sent == self.expected
            && self.replies == self.expected
            && self.ok == self.replies
            && self.errors.is_empty()
    }

    /// Latency at `quantile` (0..1) as a duration.
    pub fn at(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency_us.value_at_quantile(quantile))
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.latency_us.max())
    }
}

/// A reply kept for the caller to read.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The request's number in the run.
    pub k: u64,
    /// As the run's histogram has it: from publish (open loop: due time).
    pub latency: Duration,
    pub payload: Vec<u8>,
}

/// What one client's event loop saw.
#[derive(Debug)]
struct ClientResult {
    replies: u64,
    ok: u64,
    duplicates: u64,
    last_reply: Option<Instant>,
    latency_us: Histogram<u64>,
    kept: Vec<Kept>,
    failures: Vec<String>,
    error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// `seq` and the due time (ns since the run's epoch), as Correlation Data.
fn correlation(seq: u64, due_ns: u64) -> bytes::Bytes {
    let mut data = Vec::with_capacity(16);
    data.extend_from_slice(&seq.to_be_bytes());
    data.extend_from_slice(&due_ns.to_be_bytes());
    bytes::Bytes::from(data)
}

fn parse_correlation(data: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(data.get(..8)?.try_into().ok()?);
    let due_ns = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
    Some((seq, due_ns))
}

/// Whether a reply envelope says `"ok":true`. The envelope is
/// `{"id":"..","ok":..`, so the flag lies within the first bytes (ids are at
/// most 64 bytes); no need to parse the whole reply on the client's core.
pub fn reply_is_ok(payload: &[u8]) -> bool {
    let head = &payload[..payload.len().min(128)];
    head.windows(9).any(|w| w == b"\"ok\":true")
}

/// Client options shared by the load clients and the bench's own servers:
/// large packets. All of them connect through the daemon's [`EventLoop`]
/// (with TCP_NODELAY), so the ceiling, the load and the daemon share one
/// client.
pub fn mqtt_options(client_id: &str, address: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = address
        .rsplit_once(':')
        .context("broker address is host:port")?;
    let mut options = MqttOptions::new(client_id, host, port.parse().context("broker port")?);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(Some(PACKET_BYTES_MAX));
    Ok(options)
}

/// Runs `plan` against the broker at `address`: connects the clients, sends
/// every request, and waits for every reply (or a stall).
pub async fn run(address: &str, plan: &Plan, generator: Generator) -> anyhow::Result<Outcome> {
    let clients = plan.clients.max(1);
    let progress = progress_bar(plan);
    let epoch = Instant::now();
    let nonce = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut receivers = Vec::with_capacity(clients);
    let mut senders = Vec::with_capacity(clients);
    // Closed loop: each client's window. Open loop: unbounded.
    let windows: Vec<Arc<Semaphore>> = (0..clients)
        .map(|_| match plan.pacing {
            Pacing::Closed { window } => Arc::new(Semaphore::new(window.max(1))),
            Pacing::Open { .. } => Arc::new(Semaphore::new(0)),
        })
        .collect();
    let mut connected = Vec::with_capacity(clients);
    for (c, window) in windows.iter().enumerate() {
        let client_id = format!(
            "load-{}-{c}-{}-{nonce}",
            id_safe(&plan.label),
            std::process::id()
        );
        let my_total = share(plan.total, clients, c);
        let capacity = match plan.pacing {
            Pacing::Closed { window } => window * 2 + 64,
            Pacing::Open { .. } => 16_384,
        };
        let (client, mut eventloop) = EventLoop::new(mqtt_options(&client_id, address)?, capacity);
        eventloop.set_packets_per_write_max(plan.packets_per_write);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let receiver = tokio::spawn(receive(
            eventloop,
            client.clone(),
            client_id.clone(),
            my_total,
            plan.total,
            epoch,
            plan.clone(),
            window.clone(),
            progress.clone(),
            ready_tx,
        ));
        receivers.push(receiver);
        connected.push(ready_rx);
        senders.push((client, client_id, c));
    }
    for ready in connected {
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .context("a load client connects and subscribes within 10 s")?
            .context("load client stopped before subscribing")?;
    }

    // Every client is subscribed; the run starts now.
    let start_ns = duration_ns(epoch.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(clients);
    for (client, client_id, c) in senders {
        let generator = generator.clone();
        let window = windows[c].clone();
        let pacing = plan.pacing;
        let total = plan.total;
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("load-send-{c}"))
            .spawn(move || {
                send(
                    &client, &client_id, c, clients, total, pacing, epoch, start_ns, &window,
                    &generator, &stop,
                )
            })
            .context("spawn a sender thread")?;
        threads.push(thread);
    }

    let mut results = Vec::with_capacity(clients);
    for receiver in receivers {
        results.push(receiver.await.context("a load client's task")?);
    }
    stop.store(true, Ordering::Relaxed);
    for window in &windows {
        window.add_permits(Semaphore::MAX_PERMITS / 2);
    }
    let mut sent = 0;
    for thread in threads {
        sent += thread
            .join()
            .map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
    }
    progress.finish_and_clear();

    let mut outcome = Outcome {
        label: plan.label.clone(),
        expected: plan.total,
        sent,
        replies: 0,
        ok: 0,
        duplicates: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
        kept: Vec::new(),
        failures: Vec::new(),
        errors: Vec::new(),
        timings: None,
    };
    let mut last = epoch + Duration::from_nanos(start_ns);
    for r in results {
        outcome.replies += r.replies;
        outcome.ok += r.ok;
        outcome.duplicates += r.duplicates;
        outcome
            .latency_us
            .add(&r.latency_us)
            .context("merge histograms")?;
        outcome.kept.extend(r.kept);
        outcome.failures.extend(
            r.failures
                .into_iter()
                .take(5 - outcome.failures.len().min(5)),
        );
        outcome.errors.extend(r.error);
        if let Some(t) = r.last_reply {
            last = last.max(t);
        }
    }
    outcome.kept.sort_by_key(|kept| kept.k);
    outcome.elapsed = last.saturating_duration_since(epoch + Duration::from_nanos(start_ns));
    Ok(outcome)
}

/// How many of `total` requests client `c` of `clients` sends.
fn share(total: u64, clients: usize, c: usize) -> u64 {
    let clients = clients as u64;
    let c = c as u64;
    total / clients + u64::from(c < total % clients)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(plan.total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>22} [{bar:40}] {pos}/{len} replies, {per_sec}, {elapsed}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(plan.label.clone());
    bar
}

/// The sender thread of client `c`: publishes requests `c, c + clients, ...`
/// paced by `pacing`. Returns how many it published.
#[allow(clippy::too_many_arguments)]
fn send(
    client: &AsyncClient,
    client_id: &str,
    c: usize,
    clients: usize,
    total: u64,
    pacing: Pacing,
    epoch: Instant,
    start_ns: u64,
    window: &Semaphore,
    generator: &Generator,
    stop: &AtomicBool,
) -> u64 {
    let mut sent = 0;
    for k in (c as u64..total).step_by(clients) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due_ns = match pacing {
            Pacing::Closed { .. } => {
                match futures::executor::block_on(window.acquire()) {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                duration_ns(epoch.elapsed())
            }
            Pacing::Open { rate_per_s } => {
                let due_ns = start_ns + (k as f64 * 1e9 / rate_per_s) as u64;
                let now_ns = duration_ns(epoch.elapsed());
                if due_ns > now_ns {
                    std::thread::sleep(Duration::from_nanos(due_ns - now_ns));
                }
                due_ns
            }
        };
        let request = generator(k);
        let properties = PublishProperties {
            response_topic: Some(format!("{}/{client_id}", request.reply_base)),
            correlation_data: Some(correlation(k, due_ns)),
            ..PublishProperties::default()
        };
        let published = futures::executor::block_on(client.publish_with_properties(
            request.topic,
            QoS::AtLeastOnce,
            false,
            request.payload,
            properties,
        ));
        if published.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

/// A client's event loop: subscribes to its reply topics, then times and
/// checks off every reply until all of its share arrived.
#[allow(clippy::too_many_arguments)]
async fn receive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    client_id: String,
    my_total: u64,
    total: u64,
    epoch: Instant,
    plan: Plan,
    window: Arc<Semaphore>,
    progress: ProgressBar,
    ready: tokio::sync::oneshot::Sender<()>,
) -> ClientResult {
    let mut result = ClientResult {
        replies: 0,
        ok: 0,
        duplicates: 0,
        last_reply: None,
        latency_us: histogram(),
        kept: Vec::new(),
        failures: Vec::new(),
        error: None,
    };
    let mut seen = vec![false; usize::try_from(total).unwrap_or(0)];
    let mut ready = Some(ready);
    let closed = matches!(plan.pacing, Pacing::Closed { .. });
    let stall = Duration::from_secs(STALL_S_MAX);
    while result.replies < my_total || ready.is_some() {
        let event = match tokio::time::timeout(stall, eventloop.poll()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => {
                result.error = Some(format!("{client_id}: connection failed: {e}"));
                break;
            }
            Err(_) => {
                result.error = Some(format!(
                    "{client_id}: no reply for {STALL_S_MAX} s ({} of {my_total} answered)",
                    result.replies
                ));
                break;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                // Replies come under the principal's own reply topic plus
                // this client's id: users' and merchants', and the admin's.
                let filters = [
                    format!("wasmpay/v1/+/+/replies/{client_id}"),
                    format!("wasmpay/v1/admin/replies/{client_id}"),
                ]
                .map(|path| Filter::new(path, QoS::AtLeastOnce));
                if let Err(e) = client.subscribe_many(filters).await {
                    result.error = Some(format!("{client_id}: subscribe failed: {e}"));
                    break;
                }
            }
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                if my_total == 0 {
                    break;
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let now = Instant::now();
                let Some((seq, due_ns)) = publish
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_data.as_deref())
                    .and_then(parse_correlation)
                else {
                    continue;
                };
                let latency_ns = duration_ns(now.duration_since(epoch)).saturating_sub(due_ns);
                result
                    .latency_us
                    .saturating_record((latency_ns / 1_000).max(1));
                let Some(slot) = seen.get_mut(usize::try_from(seq).unwrap_or(usize::MAX)) else {
                    continue;
                };
                if *slot {
                    result.duplicates += 1;
                    continue;
                }
                *slot = true;
                result.replies += 1;
                result.last_reply = Some(now);
                if !plan.expect_ok || reply_is_ok(&publish.payload) {
                    result.ok += 1;
                } else if result.failures.len() < 5 {
                    result
                        .failures
                        .push(String::from_utf8_lossy(&publish.payload).into_owned());
                }
                if plan.keep_replies {
                    result.kept.push(Kept {
                        k: seq,
                        latency: Duration::from_nanos(latency_ns),
                        payload: publish.payload.to_vec(),
                    });
                }
                if closed {
                    window.add_permits(1);
                }
                progress.inc(1);
            }
            _ => {}
        }
    }
    // Let the last PUBACKs out; the session is clean, so nothing lingers.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    result
}

/// Sends `request(0), request(1), ...` every 20 ms until one is answered,
/// and returns when the first reply arrived: a server is serving once it
/// answers (a request published before it subscribed is simply dropped).
pub async fn probe(
    address: &str,
    label: &str,
    request: Generator,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let client_id = format!(
        "probe-{}-{}-{}",
        id_safe(label),
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let (client, mut eventloop) = EventLoop::new(mqtt_options(&client_id, address)?, 64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut subscribed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut k = 0;
    let answered = loop {
        tokio::select! {
            event = eventloop.poll() => match event? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let filters = [
                        format!("wasmpay/v1/+/+/replies/{client_id}"),
                        format!("wasmpay/v1/admin/replies/{client_id}"),
                    ]
                    .map(|path| Filter::new(path, QoS::AtLeastOnce));
                    client.subscribe_many(filters).await?;
                }
                Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                Event::Incoming(Packet::Publish(_)) => break Instant::now(),
                _ => {}
            },
            _ = tick.tick(), if subscribed => {
                let request = request(k);
                k += 1;
                let properties = PublishProperties {
                    response_topic: Some(format!("{}/{client_id}", request.reply_base)),
                    correlation_data: Some(correlation(k, 0)),
                    ..PublishProperties::default()
                };
                client
                    .publish_with_properties(request.topic, QoS::AtLeastOnce, false, request.payload, properties)
                    .await?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("{label}: no reply within {} s", timeout.as_secs())
            }
        }
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Ok(answered)
}

/// Ends the broker session of `client_id` (a daemon's, which outlives its
/// connection): connects with a clean start and no session expiry, and
/// disconnects. Without this, every later run's requests would also be
/// queued for the stopped daemon, and the broker's extra work would slow
/// the runs after it.
pub async fn forget_session(address: &str, client_id: &str) -> anyhow::Result<()> {
    let mut options = mqtt_options(client_id, address)?;
    options
        .set_clean_start(true)
        .set_session_expiry_interval(None);
    let (client, mut eventloop) = EventLoop::new(options, 8);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_disconnect();
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("forgetting {client_id}'s session: {e}")),
            }
        }
    })
    .await
    .context("forgetting a session within 10 s")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_shared_out_to_the_last_one() {
        for (total, clients) in [(10, 3), (200, 4), (1, 4), (0, 2)] {
            let sum: u64 = (0..clients).map(|c| share(total, clients, c)).sum();
            assert_eq!(sum, total, "{total} over {clients}");
        }
    }

    #[test]
    fn correlation_data_round_trips() {
        assert_eq!(
            parse_correlation(&correlation(42, 7_000_000)),
            Some((42, 7_000_000))
        );
        assert_eq!(parse_correlation(b"short"), None);
    }

    #[test]
    fn the_ok_flag_is_read_from_the_envelope() {
        assert!(reply_is_ok(br#"{"id":"p-1","ok":true,"result":{}}"#));
        assert!(!reply_is_ok(
            br#"{"id":"p-1","ok":false,"error":{"code":"x"}}"#
        ));
    }
}
