//! An MQTT 5 broker inside the daemon's process, for a machine with nothing
//! else installed: `wasmpay run` with `broker.address = "embedded"` (the
//! default; it listens on `broker.embedded_listen`), the demo, and tests.
//! The only code in wasmpay that knows rmqtt.
//!
//! It listens on loopback only: it has no logins and no ACL, so whoever can
//! connect can act as any user, merchant or operator (identity is the topic,
//! and only a broker's ACL makes that true; see `config/mosquitto/`). It
//! keeps sessions and queued messages in memory: they outlive a client's
//! reconnect, not the process. A request the daemon had not committed when
//! the process stopped is gone with the broker, so its client gets no reply
//! and retries with the same id (`docs/PROTOCOL.md`, Idempotency). For
//! production, use a broker of its own with persistence, like Mosquitto.
//! It speaks plain TCP: the daemon reaches it over loopback, and
//! `broker.tls` is for a broker of its own only.
//!
//! The broker runs on a tokio runtime of its own (its own threads), so the
//! daemon's work never delays message routing, and dropping the handle stops
//! every connection at once.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;

use crate::mqtt::BrokerConfig;

/// Threads of the broker's own runtime: routing is light next to the
/// pipeline's plugin calls and commits.
const BROKER_THREADS: usize = 2;

/// Messages the broker keeps per client while they cannot be delivered (the
/// client offline, or its in-flight window full). Mosquitto's default of
/// 1000 would silently drop a burst.
const QUEUED_MESSAGES_MAX: usize = 100_000;

/// How long a listener may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running in-process broker; stops when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the embedded broker listens on loopback only (it has no logins or ACL), not on {0}: use 127.0.0.1:<port>"
    )]
    NotLoopback(SocketAddr),
    #[error(
        "the embedded broker cannot listen on {address}: {reason}. If another broker runs there, use it instead: set broker.address (or WASMPAY__BROKER__ADDRESS) to its host:port; or move the embedded broker with broker.embedded_listen"
    )]
    Listen { address: SocketAddr, reason: String },
    #[error("the embedded broker's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl EmbeddedBroker {
    /// Starts a broker listening on `listen` (port 0 picks a free port),
    /// with limits to match the daemon's `config`: packets as large as its
    /// largest upload, and sessions kept as long as it asks.
    pub fn start(listen: SocketAddr, config: &BrokerConfig) -> Result<Self, StartError> {
        if !listen.ip().is_loopback() {
            return Err(StartError::NotLoopback(listen));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(BROKER_THREADS)
            .thread_name("mqtt-broker")
            .enable_all()
            .build()?;
        let builder = Builder::new()
            .name("wasmpay-embedded")
            .laddr(listen)
            // Without it every request/response round trip waits 40+ ms
            // for Nagle's algorithm.
            .nodelay(true)
            .max_packet_size(config.packet_bytes_max)
            .max_inflight(NonZeroU16::new(config.inflight_messages_max).unwrap_or(NonZeroU16::MIN))
            .max_mqueue_len(QUEUED_MESSAGES_MAX)
            .session_expiry_interval(Duration::from_secs(u64::from(config.session_expiry_s)))
            .message_expiry_interval(Duration::from_secs(
                u64::from(config.session_expiry_s).max(300),
            ))
            .allow_anonymous(true);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            // Binding needs the runtime's reactor, so it happens here.
            let listener = match builder.bind().and_then(|l| l.tcp()) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(listener.local_addr().map_err(|e| e.to_string()));
            let context = ServerContext::new()
                // Its CPU-load check refuses connections on a busy machine;
                // the daemon must always be able to reach its own broker.
                .busy_check_enable(false)
                .build()
                .await;
            if let Err(e) = MqttServer::new(context)
                .listener(listener)
                .build()
                .run()
                .await
            {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        });
        let address = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(address)) => address,
            Ok(Err(reason)) => {
                return Err(StartError::Listen {
                    address: listen,
                    reason,
                });
            }
            Err(_) => {
                return Err(StartError::Listen {
                    address: listen,
                    reason: "no answer".to_owned(),
                });
            }
        };
        tracing::info!(%address, "embedded MQTT broker listening");
        Ok(Self {
            address,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Closes the listener and every connection without waiting.
            runtime.shutdown_background();
        }
    }
}
