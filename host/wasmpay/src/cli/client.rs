//! Request/response over MQTT 5 for the command-line clients and the demo:
//! the only code in `cli` that knows rumqttc.
//!
//! A [`Client`] logs in as one principal (user, merchant or operator),
//! subscribes to a reply topic of its own under that principal's
//! `.../replies/` (the only place the host answers an MQTT 5 Response
//! Topic, and the only place the broker's ACL lets the login read), and
//! sends each request with that Response Topic and fresh Correlation Data.
//! Requests may overlap: replies are matched by their Correlation Data.
//!
//! The connection is plain TCP, or TLS with [`TlsFiles`] (the `--tls`
//! flags), loaded by [`crate::tls`] like the daemon's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAckReason, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use serde_json::Value;
use tokio::sync::oneshot;
use wasmpay_protocol::{Principal, TOPIC_PREFIX, reply_topic_for};

use crate::tls::{TlsFiles, TlsSetting};

/// Largest packet accepted from the broker, and so the largest reply: a
/// page of history is the largest, far below this.
const PACKET_BYTES_MAX: u32 = 8 * 1024 * 1024;

/// Where the broker is and how to log in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Why a request got no reply. Each variant tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not host:port (for example 127.0.0.1:1883)")]
    BadAddress(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "cannot reach the MQTT broker at {address}: {reason}. Is the daemon running? Start it with `wasmpay run` (it runs a broker of its own on 127.0.0.1:1883 unless its broker.address names one), or point --broker / WASMPAY_BROKER at your broker"
    )]
    Unreachable { address: String, reason: String },
    #[error(
        "the broker at {address} refused the login ({code:?}): check --username and --password (or WASMPAY_USERNAME / WASMPAY_PASSWORD)"
    )]
    LoginRefused {
        address: String,
        code: ConnectReturnCode,
    },
    #[error(
        "the broker refused to let this login read {topic} ({reason:?}): with the locked-down broker of config/mosquitto/, log in as the principal you act as (--username alice for --user alice)"
    )]
    SubscribeRefused {
        topic: String,
        reason: SubscribeReasonCode,
    },
    #[error(
        "the broker refused the request on {topic} ({reason:?}): with the locked-down broker of config/mosquitto/, log in as the principal you act as (--username alice for --user alice)"
    )]
    PublishRefused { topic: String, reason: PubAckReason },
    #[error(
        "nobody listens on {topic}: the daemon is not running (start it with `wasmpay run`), or it uses another broker. Nothing was applied"
    )]
    NoListener { topic: String },
    #[error("the connection to the broker was lost: {0}")]
    Lost(String),
    #[error("no reply within {waited_ms} ms")]
    Timeout { waited_ms: u64 },
}

impl ClientError {
    /// Whether the request may have reached the daemon (and may be applied):
    /// then a retry must reuse its id.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Lost(_))
    }
}

/// A reply as it arrived: the payload, and its JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub raw: Bytes,
    pub json: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.json["ok"] == true
    }

    /// The error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
}

/// The request topic of `action` (`pay`, `plugin/upload`, `accounts/open`)
/// for `principal`.
pub fn request_topic(principal: &Principal, action: &str) -> String {
    match principal {
        Principal::User(user) => format!("{TOPIC_PREFIX}/users/{user}/{action}"),
        Principal::Merchant(merchant) => format!("{TOPIC_PREFIX}/merchants/{merchant}/{action}"),
        Principal::Admin => format!("{TOPIC_PREFIX}/admin/{action}"),
    }
}

type Waiters = HashMap<Bytes, oneshot::Sender<Result<Reply, ClientError>>>;

/// What the event loop task and the requesters share.
#[derive(Debug, Default)]
struct Pending {
    /// Requests waiting for their reply, by Correlation Data.
    waiting: Waiters,
    /// Correlation Data and topic of publishes queued but not yet given a
    /// packet id, in queue order (the event loop sends them in that order).
    queued: VecDeque<(Bytes, String)>,
    /// Correlation Data (and topic) by packet id, until the PUBACK.
    in_flight: HashMap<u16, (Bytes, String)>,
    /// Set when the connection is gone: later requests fail at once.
    closed: Option<String>,
}

/// One principal's MQTT 5 connection, for any number of requests.
#[derive(Debug)]
pub struct Client {
    client: AsyncClient,
    principal: Principal,
    reply_topic: String,
    pending: Arc<Mutex<Pending>>,
    /// Keeps publishes and their place in `queued` in the same order.
    send_order: tokio::sync::Mutex<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects as `principal` and subscribes to a fresh reply topic below
    /// its own; fails if the broker cannot be reached or refuses either
    /// within `timeout`.
    pub async fn connect(
        endpoint: &Endpoint,
        principal: Principal,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::connect_with_tls(endpoint, None, principal, timeout).await
    }

    /// Like [`Client::connect`], over TLS with `tls`'s files when given.
    pub async fn connect_with_tls(
        endpoint: &Endpoint,
        tls: Option<&TlsFiles>,
        principal: Principal,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let (host, port) = endpoint
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| ClientError::BadAddress(endpoint.address.clone()))?;
        let tag = super::random_tag();
        let mut options = MqttOptions::new(format!("wasmpay-cli-{tag}"), host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_max_packet_size(Some(PACKET_BYTES_MAX));
        if let Some(user) = &endpoint.username {
            options.set_credentials(user.clone(), endpoint.password.clone().unwrap_or_default());
        }
        let mut network = rumqttc::NetworkOptions::new();
        // Without it every round trip waits 40+ ms for Nagle's algorithm.
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(timeout.as_secs().max(1));
        options.set_network_options(network);
        if let Some(files) = tls {
            let tls = files.load().map_err(|problems| {
                let problems: Vec<String> = problems
                    .into_iter()
                    .map(|p| format!("{}: {}", flag(p.setting), p.reason))
                    .collect();
                ClientError::Tls(problems.join("; "))
            })?;
            options.set_transport(crate::mqtt::tls_transport(&tls));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1_024);

        let reply_topic = format!("{}/cli-{tag}", reply_topic_for(&principal));
        debug_assert!(wasmpay_protocol::response_topic_allowed(
            &principal,
            &reply_topic
        ));
        let handshake = async {
            wait_connack(&mut eventloop, &endpoint.address).await?;
            client
                .subscribe(reply_topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| ClientError::Lost(e.to_string()))?;
            wait_suback(&mut eventloop, &reply_topic).await
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ClientError::Unreachable {
                    address: endpoint.address.clone(),
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                });
            }
        }

        let pending = Arc::new(Mutex::new(Pending::default()));
        let task = tokio::spawn(run_event_loop(
            eventloop,
            reply_topic.clone(),
            pending.clone(),
        ));
        Ok(Self {
            client,
            principal,
            reply_topic,
            pending,
            send_order: tokio::sync::Mutex::new(0),
            task,
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Sends `payload` to the principal's `action` topic and waits up to
    /// `timeout` for the reply.
    pub async fn request(
        &self,
        action: &str,
        payload: Vec<u8>,
        user_properties: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let topic = request_topic(&self.principal, action);
        let (tx, rx) = oneshot::channel();
        {
            let mut order = self.send_order.lock().await;
            *order += 1;
            let correlation = Bytes::from(format!("{}", *order));
            {
                let mut pending = lock(&self.pending);
                if let Some(reason) = &pending.closed {
                    return Err(ClientError::Lost(reason.clone()));
                }
                pending.waiting.insert(correlation.clone(), tx);
                pending
                    .queued
                    .push_back((correlation.clone(), topic.clone()));
            }
            let properties = PublishProperties {
                response_topic: Some(self.reply_topic.clone()),
                correlation_data: Some(correlation),
                user_properties,
                content_type: Some("application/json".to_owned()),
                ..PublishProperties::default()
            };
            self.client
                .publish_with_properties(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                    properties,
                )
                .await
                .map_err(|e| ClientError::Lost(e.to_string()))?;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Lost("the client stopped".to_owned())),
            Err(_) => Err(ClientError::Timeout {
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Disconnects cleanly, letting queued packets (acks) go out first.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.task).await;
    }
}

/// The command-line flag of a TLS setting, for error messages.
fn flag(setting: TlsSetting) -> &'static str {
    match setting {
        TlsSetting::Enabled => "--tls",
        TlsSetting::Ca => "--ca-file",
        TlsSetting::ClientCert => "--cert-file",
        TlsSetting::ClientKey => "--key-file",
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding the lock leaves plain maps behind: still usable.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn connection_error(address: &str, error: ConnectionError) -> ClientError {
    match error {
        ConnectionError::ConnectionRefused(code) => ClientError::LoginRefused {
            address: address.to_owned(),
            code,
        },
        other => ClientError::Unreachable {
            address: address.to_owned(),
            reason: other.to_string(),
        },
    }
}

async fn wait_connack(eventloop: &mut EventLoop, address: &str) -> Result<(), ClientError> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(connection_error(address, e)),
        }
    }
}

async fn wait_suback(eventloop: &mut EventLoop, topic: &str) -> Result<(), ClientError> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                return match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => Ok(()),
                    Some(reason) => Err(ClientError::SubscribeRefused {
                        topic: topic.to_owned(),
                        reason: *reason,
                    }),
                    None => Ok(()),
                };
            }
            Ok(_) => {}
            Err(e) => return Err(ClientError::Lost(e.to_string())),
        }
    }
}

/// Polls until the connection ends, handing each reply to its requester and
/// failing requests the broker refused.
async fn run_event_loop(
    mut eventloop: EventLoop,
    reply_topic: String,
    pending: Arc<Mutex<Pending>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut pending = lock(&pending);
                if let Some(queued) = pending.queued.pop_front() {
                    pending.in_flight.insert(pkid, queued);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut pending = lock(&pending);
                let Some((correlation, topic)) = pending.in_flight.remove(&ack.pkid) else {
                    continue;
                };
                let error = match ack.reason {
                    PubAckReason::Success => None,
                    PubAckReason::NoMatchingSubscribers => Some(ClientError::NoListener { topic }),
                    reason => Some(ClientError::PublishRefused { topic, reason }),
                };
                if let Some(error) = error
                    && let Some(waiter) = pending.waiting.remove(&correlation)
                {
                    let _ = waiter.send(Err(error));
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic != reply_topic.as_bytes() {
                    continue;
                }
                let Some(correlation) = publish
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_data.clone())
                else {
                    continue;
                };
                let waiter = lock(&pending).waiting.remove(&correlation);
                if let Some(waiter) = waiter {
                    let json = serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
                    let _ = waiter.send(Ok(Reply {
                        raw: publish.payload.clone(),
                        json,
                    }));
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                // Polling again would reconnect silently: stop and fail
                // whatever still waits.
                let reason = e.to_string();
                let mut pending = lock(&pending);
                for (_, waiter) in pending.waiting.drain() {
                    let _ = waiter.send(Err(ClientError::Lost(reason.clone())));
                }
                pending.closed = Some(reason);
                return;
            }
        }
    }
}
