//! The broker connection: the only code in wasmpay that knows rumqttc.
//!
//! It turns broker events into [`Inbound`] messages (topic, payload, the MQTT 5
//! properties that matter, and an ack handle) and [`Outbound`] replies into
//! QoS 1 publishes. Three rules keep delivery effectively-once:
//!
//! - The session is persistent (clean start off, a session expiry, a stable
//!   client id), so the broker keeps and redelivers whatever was not acked.
//! - Acks are manual. The pipeline acks a message only after its outcome is
//!   committed and its reply published, and always in arrival order (MQTT
//!   requires PUBACKs in order; rumqttc does not enforce it).
//! - The event loop task never waits on the pipeline: the inbound channel holds
//!   as many messages as the broker may have in flight (`receive_maximum`),
//!   and acks and publishes go through the client from other tasks.
//!
//! The connection itself is [`EventLoop`] (in `event_loop.rs`): rumqttc's
//! protocol state and codec, able to gather queued requests into one write
//! (`broker.packets_per_write_max`), with `TCP_NODELAY` so that no reply
//! waits for Nagle's algorithm.
//!
//! With `broker.tls` the connection is TLS, with the files [`crate::tls`]
//! loads. A connection the broker (or its certificate) refuses is retried
//! like any other, logged at ERROR when only an operator can fix it, and
//! [`Broker::health`] says why, for `/health`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::tls::{TlsClient, TlsFiles, TlsSetting};

mod event_loop;
pub use event_loop::{EventLoop, GATHER_PACKETS};

/// `broker.address` for a broker in this process ([`crate::embedded_broker`]),
/// the default: `wasmpay run` starts it on `broker.embedded_listen` and
/// connects there.
pub const EMBEDDED_ADDRESS: &str = "embedded";

/// Broker settings (`[broker]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `host:port` of the MQTT broker, or [`EMBEDDED_ADDRESS`] for one in
    /// this process, so that a machine with nothing else installed runs.
    pub address: String,
    /// Where the embedded broker listens: loopback only, because it has no
    /// logins or ACL. Clients look at 127.0.0.1:1883 by default.
    pub embedded_listen: String,
    /// Stable client id: the broker keeps this session's unacked messages
    /// across reconnects and restarts.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to an external broker. The embedded broker is plain TCP on
    /// loopback, so `tls` with it is a config error rather than a silent
    /// no-op.
    pub tls: bool,
    /// PEM bundle of the CA certificates that may sign the broker's
    /// certificate; unset trusts the platform's CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate and key for a broker that requires client
    /// certificates; both or neither.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    pub keep_alive_s: u64,
    /// How long the broker keeps the session after a disconnect.
    pub session_expiry_s: u32,
    /// QoS 1 messages the broker may send before we ack (MQTT 5 Receive
    /// Maximum): the pipeline's queue depth, and so its backpressure.
    pub inflight_messages_max: u16,
    /// Largest packet accepted from the broker; plugin uploads are the
    /// largest messages. rumqttc's default (10 KiB) would drop the connection.
    pub packet_bytes_max: u32,
    /// Packets written to the socket in one system call at most: replies,
    /// notifications and acks queued while the last write ran go out
    /// together. 1 (the default) writes each on its own: see
    /// `mqtt/event_loop.rs` for why.
    pub packets_per_write_max: u16,
    pub reconnect_backoff_ms_min: u64,
    pub reconnect_backoff_ms_max: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            address: EMBEDDED_ADDRESS.to_owned(),
            embedded_listen: "127.0.0.1:1883".to_owned(),
            client_id: "wasmpay-host".to_owned(),
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            keep_alive_s: 30,
            session_expiry_s: 3_600,
            inflight_messages_max: 256,
            packet_bytes_max: 8 * 1024 * 1024,
            packets_per_write_max: 1,
            reconnect_backoff_ms_min: 100,
            reconnect_backoff_ms_max: 5_000,
        }
    }
}

impl BrokerConfig {
    /// Whether the daemon runs its own broker ([`EMBEDDED_ADDRESS`]).
    pub fn is_embedded(&self) -> bool {
        self.address == EMBEDDED_ADDRESS
    }

    /// Host and port, or a message naming the key.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        if self.is_embedded() {
            return Err(format!(
                "broker.address `{EMBEDDED_ADDRESS}`: start the embedded broker first (as `wasmpay run` does) and set broker.address to where it listens"
            ));
        }
        let (host, port) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| format!("broker.address `{}`: expected host:port", self.address))?;
        let port = port
            .parse()
            .map_err(|_| format!("broker.address `{}`: invalid port", self.address))?;
        Ok((host.to_owned(), port))
    }

    /// Where the embedded broker listens, or a message naming the key.
    pub fn embedded_listen_addr(&self) -> Result<SocketAddr, String> {
        let listen: SocketAddr = self.embedded_listen.parse().map_err(|_| {
            format!(
                "broker.embedded_listen `{}`: expected ip:port, like 127.0.0.1:1883",
                self.embedded_listen
            )
        })?;
        if !listen.ip().is_loopback() {
            return Err(format!(
                "broker.embedded_listen `{listen}`: loopback only (the embedded broker has no logins or ACL): use 127.0.0.1:<port>"
            ));
        }
        Ok(listen)
    }

    /// Every problem with the TLS keys, each naming its key: files set
    /// without `tls` (which would otherwise talk plain TCP while the
    /// operator believes it is encrypted), TLS with the embedded broker,
    /// and files that cannot be read or parsed.
    pub(crate) fn tls_problems(&self) -> Vec<String> {
        let files = [
            ("broker.tls_ca_file", &self.tls_ca_file),
            ("broker.tls_client_cert_file", &self.tls_client_cert_file),
            ("broker.tls_client_key_file", &self.tls_client_key_file),
        ];
        if !self.tls {
            return files
                .iter()
                .filter(|(_, path)| path.is_some())
                .map(|(key, _)| format!("{key}: set, but broker.tls is false: set tls = true to use it, or remove it"))
                .collect();
        }
        if self.is_embedded() {
            return vec![
                "broker.tls: the embedded broker is plain TCP on loopback; TLS is for a broker of its own: set broker.address to its host:port, or tls = false"
                    .to_owned(),
            ];
        }
        match self.tls_client() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    /// The loaded TLS configuration, or every problem naming its key.
    fn tls_client(&self) -> Result<TlsClient, Vec<String>> {
        let files = TlsFiles {
            ca: self.tls_ca_file.clone(),
            client_cert: self.tls_client_cert_file.clone(),
            client_key: self.tls_client_key_file.clone(),
        };
        files.load().map_err(|problems| {
            problems
                .into_iter()
                .map(|p| {
                    let key = match p.setting {
                        TlsSetting::Enabled => "broker.tls",
                        TlsSetting::Ca => "broker.tls_ca_file",
                        TlsSetting::ClientCert => "broker.tls_client_cert_file",
                        TlsSetting::ClientKey => "broker.tls_client_key_file",
                    };
                    format!("{key}: {}", p.reason)
                })
                .collect()
        })
    }
}

/// The transport of a TLS connection with `tls`'s settings. Shared with the
/// command-line clients, which know rumqttc too.
#[cfg(feature = "tls")]
pub(crate) fn tls_transport(tls: &TlsClient) -> rumqttc::Transport {
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.rustls_config()))
}

/// Without the `tls` feature there is no [`TlsClient`] to connect with.
#[cfg(not(feature = "tls"))]
pub(crate) fn tls_transport(tls: &TlsClient) -> rumqttc::Transport {
    match *tls {}
}

/// One message from the broker, with what a reply and an ack need.
#[derive(Debug)]
pub struct Inbound {
    pub topic: String,
    pub payload: bytes::Bytes,
    /// MQTT 5 Response Topic: where the requester wants its reply.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data, echoed on the reply.
    pub correlation_data: Option<bytes::Bytes>,
    pub user_properties: Vec<(String, String)>,
    /// The broker says it may have sent this before.
    pub redelivered: bool,
    /// When the host took it from the broker.
    pub received: Instant,
    ack: Option<Publish>,
}

/// A message to publish at QoS 1.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub correlation_data: Option<bytes::Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// Publishes and acks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    client: AsyncClient,
    link: Arc<Mutex<Link>>,
}

/// The connection's state, as the event loop last saw it.
#[derive(Debug, Default)]
struct Link {
    connected: bool,
    /// Why the last attempt failed: what `/health` tells an operator (a
    /// certificate the CA file does not vouch for, a refused login).
    last_error: Option<String>,
}

impl Link {
    fn set(link: &Mutex<Link>, connected: bool, error: Option<String>) {
        // A panic while holding the lock leaves two plain fields: still usable.
        let mut link = link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        link.connected = connected;
        link.last_error = error;
    }
}

impl Broker {
    /// Queues a QoS 1 publish. Waits only if the client's request queue is
    /// full, never on the network.
    pub async fn publish(&self, out: Outbound) -> Result<(), String> {
        let properties = PublishProperties {
            correlation_data: out.correlation_data,
            user_properties: out.user_properties,
            content_type: Some("application/json".to_owned()),
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(out.topic, QoS::AtLeastOnce, false, out.payload, properties)
            .await
            .map_err(|e| format!("publish failed: {e}"))
    }

    /// Acknowledges `inbound` to the broker. Call only after its outcome is
    /// committed, and in arrival order.
    pub async fn ack(&self, inbound: &Inbound) -> Result<(), String> {
        match &inbound.ack {
            Some(publish) => self
                .client
                .ack(publish)
                .await
                .map_err(|e| format!("ack failed: {e}")),
            None => Ok(()),
        }
    }

    /// `Ok` while the broker connection is up; otherwise why it is not.
    pub fn health(&self) -> Result<(), String> {
        let link = self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&link.last_error, link.connected) {
            (_, true) => Ok(()),
            (Some(error), false) => Err(error.clone()),
            (None, false) => Err("not connected yet".to_owned()),
        }
    }

    /// Asks the broker for a clean disconnect (the session stays).
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// Connects (lazily: the event loop connects on first poll), subscribes to
/// `topics` on every (re)connect, and forwards every publish to the returned
/// channel. Stops when `shutdown` turns true.
pub fn start(
    config: &BrokerConfig,
    topics: &'static [&'static str],
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Broker, mpsc::Receiver<Inbound>, tokio::task::JoinHandle<()>), String> {
    let (host, port) = config.host_port()?;
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(config.session_expiry_s))
        .set_receive_maximum(Some(config.inflight_messages_max))
        .set_max_packet_size(Some(config.packet_bytes_max))
        .set_manual_acks(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options.set_credentials(user.clone(), password.clone());
    }
    if config.tls {
        let tls = config
            .tls_client()
            .map_err(|problems| problems.join("; "))?;
        options.set_transport(tls_transport(&tls));
    }

    let capacity = usize::from(config.inflight_messages_max) + 16;
    let (client, mut eventloop) = EventLoop::new(options, capacity);
    eventloop.set_packets_per_write_max(config.packets_per_write_max);
    // Room for every message the broker may have in flight, so forwarding
    // never blocks the event loop (which must keep answering pings).
    let (tx, rx) = mpsc::channel(capacity);
    let backoff = (
        Duration::from_millis(config.reconnect_backoff_ms_min.max(1)),
        Duration::from_millis(config.reconnect_backoff_ms_max.max(1)),
    );
    let subscriber = client.clone();
    let link = Arc::new(Mutex::new(Link::default()));
    let state = link.clone();
    let task = tokio::spawn(async move {
        run_event_loop(
            eventloop,
            subscriber,
            topics,
            tx,
            backoff,
            &mut shutdown,
            &state,
        )
        .await;
        Link::set(&state, false, Some("stopped".to_owned()));
    });
    Ok((Broker { client, link }, rx, task))
}

async fn run_event_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: &'static [&'static str],
    tx: mpsc::Sender<Inbound>,
    (backoff_min, backoff_max): (Duration, Duration),
    shutdown: &mut watch::Receiver<bool>,
    link: &Mutex<Link>,
) {
    let mut backoff = backoff_min;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    // Let the last acks and replies queued by the pipeline
                    // reach the broker before the socket closes. The session
                    // outlives the disconnect, so nothing unacked is lost.
                    let _ = client.try_disconnect();
                    drain(&mut eventloop).await;
                    return;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = backoff_min;
                Link::set(link, true, None);
                tracing::info!(session_present = ack.session_present, "connected to broker");
                // No Local: the request topics' wildcards also match the
                // host's own replies and notifications, which the broker
                // would otherwise send back to it, each a wasted delivery,
                // decode and ack.
                let filters = topics.iter().map(|topic| {
                    let mut filter = Filter::new(*topic, QoS::AtLeastOnce);
                    filter.nolocal = true;
                    filter
                });
                if let Err(e) = client.subscribe_many(filters).await {
                    tracing::error!(?topics, error = %e, "subscribe failed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let inbound = to_inbound(publish);
                if tx.send(inbound).await.is_err() {
                    return; // The pipeline is gone: shutting down.
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                tracing::warn!(reason = ?d.reason_code, "broker sent disconnect");
            }
            Ok(_) => {}
            Err(e) => {
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                if needs_operator(&e) {
                    // Retrying cannot fix a certificate or a login: say so
                    // loudly, and keep trying in case the broker is fixed.
                    tracing::error!(error = %e, retry_in_ms, "broker refused the connection");
                } else {
                    tracing::warn!(error = %e, retry_in_ms, "broker connection lost");
                }
                Link::set(link, false, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => if *shutdown.borrow() { return },
                }
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// Whether `error` is one that only an operator can fix (ERROR), rather
/// than a broker that is down or restarting (WARN).
fn needs_operator(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::ConnectionRefused(code) => matches!(
            code,
            ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::Banned
                | ConnectReturnCode::BadAuthenticationMethod
        ),
        #[cfg(feature = "tls")]
        ConnectionError::Tls(_) => true,
        _ => false,
    }
}

/// Polls briefly so queued outgoing packets are flushed, then disconnects.
async fn drain(eventloop: &mut EventLoop) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
            break;
        }
    }
}

fn to_inbound(publish: Publish) -> Inbound {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let (response_topic, correlation_data, user_properties) = match &publish.properties {
        Some(p) => (
            p.response_topic.clone(),
            p.correlation_data.clone(),
            p.user_properties.clone(),
        ),
        None => (None, None, Vec::new()),
    };
    let needs_ack = publish.qos != QoS::AtMostOnce;
    Inbound {
        topic,
        payload: publish.payload.clone(),
        response_topic,
        correlation_data,
        user_properties,
        redelivered: publish.dup,
        received: Instant::now(),
        ack: needs_ack.then_some(publish),
    }
}
