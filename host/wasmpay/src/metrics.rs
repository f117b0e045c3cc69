//! What the daemon is doing, in numbers: Prometheus metrics and a health
//! check on one small HTTP listener (`[metrics] listen`).
//!
//! The listener answers `GET /metrics` (Prometheus text format) and
//! `GET /health` (200 when the broker connection is up, 503 and the reason
//! otherwise, like a broker certificate the CA file does not vouch for). It
//! reads at most one small request per connection: it is an operator's
//! port, not a web server.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[metrics]`: where the listener binds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` for `/metrics` and `/health`; empty turns it off.
    pub listen: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    command: String,
    outcome: String,
}

/// Every metric the daemon keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    dead_letters: Counter,
    echoes: Counter,
    plugin_fuel: Histogram,
    plugin_call_seconds: Histogram,
    ledger_batch_ops: Histogram,
    ledger_commit_seconds: Histogram,
    ledger_batches_rerun: Counter,
    reply_latency_seconds: Histogram,
    inflight_messages: Gauge,
    plugins_quarantined: Gauge,
    plugins_active: Gauge,
    plugin_components_loaded: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmpay");
        let messages = Family::<MessageLabels, Counter>::default();
        let dead_letters = Counter::default();
        let echoes = Counter::default();
        // 1k to 16M fuel: the examples use ~10-30k; the default limit is 11M.
        let plugin_fuel = Histogram::new(exponential_buckets(1_000.0, 2.0, 15));
        // 10 µs to ~0.3 s.
        let plugin_call_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 15));
        let ledger_batch_ops = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        // 50 µs to ~1.6 s: an fsync dominates.
        let ledger_commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        let ledger_batches_rerun = Counter::default();
        let reply_latency_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 15));
        let inflight_messages = Gauge::default();
        let plugins_quarantined = Gauge::default();
        let plugins_active = Gauge::default();
        let plugin_components_loaded = Gauge::default();
        registry.register(
            "messages",
            "Requests handled, by command and outcome (ok or the error code)",
            messages.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages that could not be decoded, published to the dead-letter topic",
            dead_letters.clone(),
        );
        registry.register(
            "echoes",
            "The host's own replies and notifications that the broker sent back to it, and it dropped (0 with a broker that honours MQTT 5 No Local)",
            echoes.clone(),
        );
        registry.register(
            "plugin_fuel",
            "Fuel burned per plugin call",
            plugin_fuel.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Wall time per plugin call",
            plugin_call_seconds.clone(),
        );
        registry.register(
            "ledger_batch_ops",
            "Operations per ledger transaction (group commit)",
            ledger_batch_ops.clone(),
        );
        registry.register(
            "ledger_commit_seconds",
            "Time to apply and commit one batch",
            ledger_commit_seconds.clone(),
        );
        registry.register(
            "ledger_batches_rerun",
            "Batches the ledger ran a second time with a savepoint per operation, because an operation was refused after it had written (rare: most refusals come before any write)",
            ledger_batches_rerun.clone(),
        );
        registry.register(
            "reply_latency_seconds",
            "From a message's arrival to its reply being queued",
            reply_latency_seconds.clone(),
        );
        registry.register(
            "inflight_messages",
            "Messages taken from the broker and not yet handed to the writer",
            inflight_messages.clone(),
        );
        registry.register(
            "plugins_quarantined",
            "Merchants whose plugin is quarantined after consecutive failures (alert on > 0); a new version clears it at the merchant's next payment",
            plugins_quarantined.clone(),
        );
        registry.register(
            "plugins_active",
            "Merchants with an active plugin version loaded",
            plugins_active.clone(),
        );
        registry.register(
            "plugin_components_loaded",
            "Distinct plugin components loaded: merchants whose versions run the same component share one (its native code and memory image)",
            plugin_components_loaded.clone(),
        );
        Self {
            registry,
            messages,
            dead_letters,
            echoes,
            plugin_fuel,
            plugin_call_seconds,
            ledger_batch_ops,
            ledger_commit_seconds,
            ledger_batches_rerun,
            reply_latency_seconds,
            inflight_messages,
            plugins_quarantined,
            plugins_active,
            plugin_components_loaded,
        }
    }
}

impl Metrics {
    pub fn message(&self, command: &str, outcome: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                command: command.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    pub fn echo(&self) {
        self.echoes.inc();
    }

    pub fn plugin_call(&self, fuel: u64, elapsed: Duration) {
        self.plugin_fuel.observe(fuel as f64);
        self.plugin_call_seconds.observe(elapsed.as_secs_f64());
    }

    /// One committed batch: its size, its time, and whether the ledger had
    /// to run it a second time with savepoints.
    pub fn batch(&self, ops: usize, elapsed: Duration, rerun: bool) {
        self.ledger_batch_ops.observe(ops as f64);
        self.ledger_commit_seconds.observe(elapsed.as_secs_f64());
        if rerun {
            self.ledger_batches_rerun.inc();
        }
    }

    pub fn replied(&self, latency: Duration) {
        self.reply_latency_seconds.observe(latency.as_secs_f64());
    }

    pub fn inflight(&self, count: usize) {
        self.inflight_messages
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn quarantined(&self, merchants: usize) {
        self.plugins_quarantined
            .set(i64::try_from(merchants).unwrap_or(i64::MAX));
    }

    /// The plugins loaded: merchants with an active version, and the
    /// distinct components they run.
    pub fn plugins(&self, active: usize, components: usize) {
        self.plugins_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        self.plugin_components_loaded
            .set(i64::try_from(components).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The longest request head read from a metrics client.
const REQUEST_BYTES_MAX: usize = 4 * 1024;
/// How long a metrics client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/health` on `listen` until the task is dropped.
pub async fn serve(
    listen: String,
    metrics: Arc<Metrics>,
    healthy: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "metrics and health listening");
    let healthy = Arc::new(healthy);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; REQUEST_BYTES_MAX];
                let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut head)).await;
                let Ok(Ok(n)) = read else { return };
                let line = String::from_utf8_lossy(&head[..n]);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/health" => match healthy() {
                        Ok(()) => ("200 OK", "ok\n".to_owned()),
                        Err(why) => (
                            "503 Service Unavailable",
                            format!("broker connection down: {why}\n"),
                        ),
                    },
                    _ => ("404 Not Found", "try /metrics or /health\n".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}
