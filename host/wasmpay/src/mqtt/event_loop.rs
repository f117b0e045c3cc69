//! The broker connection's event loop: rumqttc's protocol state
//! ([`MqttState`]) and packet codec, driven so that requests already queued
//! can reach the socket in one write.
//!
//! Why not rumqttc's own `EventLoop`: in 0.25 it writes and flushes each
//! request on its own (upstream issue bytebeamio/rumqtt#810): a `writev`
//! system call per packet. Here, with [`EventLoop::set_packets_per_write_max`]
//! above 1, a request taken from the queue is followed by every other request
//! already waiting (up to that many, and no further than the broker's Receive
//! Maximum allows), and then one flush. A lone request is written at once, so
//! nothing waits for company.
//!
//! The default is 1, rumqttc's behaviour, and the daemon's default too
//! (`broker.packets_per_write_max`): against Mosquitto, a daemon that
//! gathered its writes made 0.12x the calls at the same throughput, but
//! under overload its acks lagged its commits (by up to 1.4 s) more often
//! than with one packet per write (BENCHMARKS.md, "The broker connection's
//! writes, gathered"). The bench's load connections, one packet per request
//! each, gather [`GATHER_PACKETS`].
//!
//! Everything else is rumqttc's behaviour, with the same types, so callers
//! use it as they would rumqttc's: [`EventLoop::new`] returns an
//! [`AsyncClient`], [`EventLoop::poll`] yields rumqttc [`Event`]s and
//! [`ConnectionError`]s, reconnects when polled after an error, resends the
//! unacknowledged publishes of a resumed session, and pings every keep-alive
//! interval. The transports are plain TCP (always with `TCP_NODELAY`: a reply
//! must not wait for Nagle's algorithm) and, with the `tls` feature, rustls.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use rumqttc::v5::mqttbytes::v5::{Codec, ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::v5::{
    AsyncClient, ConnectionError, Event, MqttOptions, MqttState, Request, StateError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{self, Instant, Sleep};
use tokio_util::codec::Framed;

/// Packets read in one go before the acks they call for are flushed; and
/// the write batch of the bench's load connections.
pub const GATHER_PACKETS: u16 = 64;

/// rumqttc's default for a packet from the broker when the options set no
/// Maximum Packet Size.
const INCOMING_BYTES_DEFAULT: u32 = 10 * 1024;

/// Gathered bytes past which the codec writes before taking more.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

type Network = Framed<Box<dyn Socket>, Codec>;

/// A connection to the broker, polled by one task; see the module docs.
pub struct EventLoop {
    options: MqttOptions,
    state: MqttState,
    requests: flume::Receiver<Request>,
    /// What the last session left unacknowledged, to resend first.
    pending: VecDeque<Request>,
    network: Option<Network>,
    keep_alive: Option<Pin<Box<Sleep>>>,
    /// Publishes the broker accepts unacknowledged (its Receive Maximum, at
    /// most the options' upper limit).
    inflight_max: u16,
    /// Flushes that had bytes to write: see [`EventLoop::writes`].
    writes: u64,
    packets_per_write_max: usize,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("connected", &self.network.is_some())
            .field("inflight", &self.state.inflight())
            .field("inflight_max", &self.inflight_max)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// A client and the loop that serves it; `capacity` bounds the client's
    /// request queue. Nothing connects until the first [`EventLoop::poll`].
    pub fn new(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
        let (requests_tx, requests) = flume::bounded(capacity);
        let inflight_upper = options
            .get_outgoing_inflight_upper_limit()
            .unwrap_or(u16::MAX);
        let state = MqttState::new(inflight_upper, options.manual_acks());
        let event_loop = EventLoop {
            options,
            state,
            requests,
            pending: VecDeque::new(),
            network: None,
            keep_alive: None,
            inflight_max: inflight_upper,
            writes: 0,
            packets_per_write_max: 1,
        };
        (AsyncClient::from_senders(requests_tx), event_loop)
    }

    /// The next event: connects first if there is no connection. After an
    /// error the connection is dropped, and the next poll reconnects.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        if self.network.is_none() {
            let timeout = Duration::from_secs(self.options.connection_timeout());
            let (network, connack) = time::timeout(timeout, connect(&mut self.options)).await??;
            if !connack.session_present {
                self.pending.clear();
            }
            let upper = self
                .options
                .get_outgoing_inflight_upper_limit()
                .unwrap_or(u16::MAX);
            self.inflight_max = connack
                .properties
                .as_ref()
                .and_then(|p| p.receive_max)
                .map_or(upper, |max| max.min(upper));
            self.network = Some(network);
            if self.keep_alive.is_none() {
                self.keep_alive = Some(Box::pin(time::sleep(self.options.keep_alive())));
            }
            self.state
                .handle_incoming_packet(Packet::ConnAck(connack))?;
        }
        match self.select().await {
            Ok(event) => Ok(event),
            Err(e) => {
                self.clean();
                Err(e)
            }
        }
    }

    /// Packets gathered into one write at most; 1 (the default) writes each
    /// on its own, as rumqttc's own event loop does.
    pub fn set_packets_per_write_max(&mut self, packets: u16) {
        self.packets_per_write_max = usize::from(packets.max(1));
    }

    /// How many times the loop has flushed gathered packets to the socket:
    /// one write each, whatever the packet count (plus one per
    /// `WRITE_BUFFER_BYTES` of a larger batch).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Drops the connection, keeping what must be resent: the session's
    /// unacknowledged publishes and the queued requests, except acks (the
    /// broker resends those messages, and an ack for the old delivery would
    /// confuse it).
    fn clean(&mut self) {
        self.network = None;
        self.keep_alive = None;
        self.pending.extend(self.state.clean());
        self.pending.extend(
            self.requests
                .drain()
                .filter(|request| !matches!(request, Request::PubAck(_))),
        );
    }

    async fn select(&mut self) -> Result<Event, ConnectionError> {
        if let Some(event) = self.state.events.pop_front() {
            return Ok(event);
        }
        let may_take = !self.pending.is_empty() || may_send(&self.state, self.inflight_max);
        let (Some(network), Some(keep_alive)) = (self.network.as_mut(), self.keep_alive.as_mut())
        else {
            unreachable!("select runs only when connected");
        };
        tokio::select! {
            request = next_request(&mut self.pending, &self.requests), if may_take => {
                let request = request?;
                write_request(&mut self.state, network, request).await?;
                // Everything else already queued goes in the same flush.
                for _ in 1..self.packets_per_write_max {
                    if !may_send(&self.state, self.inflight_max) {
                        break;
                    }
                    let Some(request) = self.pending.pop_front().or_else(|| self.requests.try_recv().ok())
                    else {
                        break;
                    };
                    write_request(&mut self.state, network, request).await?;
                }
                flush(network, &mut self.writes).await?;
            }
            packet = network.next() => {
                read_packets(&mut self.state, network, packet).await?;
                flush(network, &mut self.writes).await?;
            }
            () = keep_alive.as_mut() => {
                keep_alive.as_mut().reset(Instant::now() + self.options.keep_alive());
                write_request(&mut self.state, network, Request::PingReq).await?;
                flush(network, &mut self.writes).await?;
            }
        }
        Ok(self
            .state
            .events
            .pop_front()
            .expect("every request and packet handled records an event"))
    }
}

/// Whether another request may go out now: the broker's Receive Maximum is
/// not reached and no packet id is waiting on a collision.
fn may_send(state: &MqttState, inflight_max: u16) -> bool {
    state.inflight() < inflight_max && state.collision.is_none()
}

/// The next request: what the last session left first, then the client's.
async fn next_request(
    pending: &mut VecDeque<Request>,
    requests: &flume::Receiver<Request>,
) -> Result<Request, ConnectionError> {
    match pending.pop_front() {
        Some(request) => Ok(request),
        None => requests
            .recv_async()
            .await
            .map_err(|_| ConnectionError::RequestsDone),
    }
}

/// Writes out what the packets since the last flush encoded, if anything.
async fn flush(network: &mut Network, writes: &mut u64) -> Result<(), StateError> {
    if !network.write_buffer().is_empty() {
        *writes += 1;
    }
    network.flush().await.map_err(StateError::Deserialization)
}

/// Records `request` in the protocol state and encodes what it calls for
/// into the write buffer (written out at the flush, or earlier past
/// [`WRITE_BUFFER_BYTES`]).
async fn write_request(
    state: &mut MqttState,
    network: &mut Network,
    request: Request,
) -> Result<(), StateError> {
    if let Some(packet) = state.handle_outgoing_packet(request)? {
        network
            .feed(packet)
            .await
            .map_err(StateError::Deserialization)?;
    }
    Ok(())
}

/// Handles `first` and whatever else has already arrived (up to
/// [`GATHER_PACKETS`] in all), encoding the packets they call for.
async fn read_packets(
    state: &mut MqttState,
    network: &mut Network,
    first: Option<Result<Packet, rumqttc::v5::mqttbytes::Error>>,
) -> Result<(), StateError> {
    let mut next = first;
    let mut handled = 0;
    loop {
        match next {
            Some(Ok(packet)) => {
                if let Some(outgoing) = state.handle_incoming_packet(packet)? {
                    network
                        .feed(outgoing)
                        .await
                        .map_err(StateError::Deserialization)?;
                }
            }
            Some(Err(e)) => return Err(StateError::Deserialization(e)),
            None => return Err(StateError::ConnectionAborted),
        }
        handled += 1;
        // Take a packet only to handle it: one taken and dropped is lost.
        if handled >= usize::from(GATHER_PACKETS) {
            return Ok(());
        }
        match network.next().now_or_never() {
            Some(packet) => next = packet,
            None => return Ok(()),
        }
    }
}

/// Opens the socket, sends CONNECT and waits for a successful CONNACK.
async fn connect(options: &mut MqttOptions) -> Result<(Network, ConnAck), ConnectionError> {
    let (host, port) = options.broker_address();
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let socket = secure(options, &host, tcp).await?;
    let incoming_max = options
        .connect_properties()
        .and_then(|p| p.max_packet_size)
        .unwrap_or(INCOMING_BYTES_DEFAULT);
    let codec = Codec {
        max_incoming_size: Some(incoming_max),
        max_outgoing_size: None,
    };
    let mut network = Framed::new(socket, codec);
    network.set_backpressure_boundary(WRITE_BUFFER_BYTES);

    let keep_alive_s = u16::try_from(options.keep_alive().as_secs()).unwrap_or(u16::MAX);
    let connect = Connect {
        client_id: options.client_id(),
        keep_alive: keep_alive_s,
        clean_start: options.clean_start(),
        properties: options.connect_properties(),
    };
    network
        .send(Packet::Connect(
            connect,
            options.last_will(),
            options.credentials(),
        ))
        .await
        .map_err(StateError::Deserialization)?;
    let reply = match network.next().await {
        Some(Ok(packet)) => packet,
        Some(Err(e)) => return Err(StateError::Deserialization(e).into()),
        None => return Err(StateError::ConnectionAborted.into()),
    };
    match reply {
        Packet::ConnAck(connack) if connack.code == ConnectReturnCode::Success => {
            if let Some(properties) = &connack.properties {
                if let Some(keep_alive) = properties.server_keep_alive {
                    options.set_keep_alive(Duration::from_secs(u64::from(keep_alive)));
                }
                network.codec_mut().max_outgoing_size = properties.max_packet_size;
                if properties.session_expiry_interval.is_some() {
                    options.set_session_expiry_interval(properties.session_expiry_interval);
                }
            }
            Ok((network, connack))
        }
        Packet::ConnAck(connack) => Err(ConnectionError::ConnectionRefused(connack.code)),
        packet => Err(ConnectionError::NotConnAck(Box::new(packet))),
    }
}

/// The TCP stream as is, or inside TLS when the options ask for it.
async fn secure(
    options: &MqttOptions,
    host: &str,
    tcp: TcpStream,
) -> Result<Box<dyn Socket>, ConnectionError> {
    match options.transport() {
        rumqttc::Transport::Tcp => Ok(Box::new(tcp)),
        #[cfg(feature = "tls")]
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(config)) => {
            use rumqttc::TlsError;
            use rumqttc::tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};
            let name = ServerName::try_from(host.to_owned()).map_err(TlsError::from)?;
            let stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(TlsError::from)?;
            Ok(Box::new(stream))
        }
        _ => Err(ConnectionError::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            "only TCP and rustls TLS transports are supported",
        ))),
    }
}
