//! Helpers shared by the integration tests: a real Mosquitto broker on a free
//! port, and real MQTT clients (v5 and 3.1.1) that talk to the daemon the way
//! users and merchants do.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tokio::sync::mpsc;
use wasmpay::embedded_broker::EmbeddedBroker;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A Mosquitto broker of the test's own, killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port with anonymous access.
    pub fn start() -> Self {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts a broker with `extra` appended to a minimal config (ACLs,
    /// password files, persistence). Files named in `extra` may use `{dir}`
    /// for the broker's own temporary directory.
    pub fn start_with(extra: &str) -> Self {
        Self::start_with_files(extra, &[])
    }

    /// Like [`Mosquitto::start_with`], writing `files` (name, contents) into
    /// the broker's directory first.
    pub fn start_with_files(extra: &str, files: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).expect("write broker file");
        }
        let conf = dir.path().join("mosquitto.conf");
        let port = free_port();
        let body = format!(
            "listener {port} 127.0.0.1\nset_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 100000\n{}",
            extra.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&conf, body).expect("write mosquitto.conf");
        let child = Self::spawn(&conf);
        let broker = Self { port, child, dir };
        broker.wait_listening();
        broker
    }

    fn spawn(conf: &Path) -> Child {
        Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (is it installed? scripts/test installs it)")
    }

    /// Stops the broker (as a crash would) and starts it again on the same
    /// port with the same configuration and directory.
    pub fn restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir.path().join("mosquitto.conf"));
        self.wait_listening();
        self
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port` for the daemon's config.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the broker's directory (password files, ACLs).
    pub fn write_file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut file = std::fs::File::create(&path).expect("create file");
        file.write_all(body.as_bytes()).expect("write file");
        path
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which broker [`TestBroker::start`] starts: `WASMPAY_TEST_BROKER`.
pub const TEST_BROKER_ENV: &str = "WASMPAY_TEST_BROKER";

/// The broker of a test that needs no broker-specific setup: a Mosquitto
/// child (`WASMPAY_TEST_BROKER` unset or `mosquitto`), or wasmpay's own
/// embedded broker in this process (`embedded`), so that one suite proves
/// the daemon on either. `scripts/test` runs the suite both ways. It offers
/// what the flows use of [`Mosquitto`]: `start`, `address`, `port`.
#[derive(Debug)]
pub struct TestBroker {
    pub port: u16,
    _broker: EitherBroker,
}

/// Kept only to be dropped (which stops the broker) with the test.
#[derive(Debug)]
enum EitherBroker {
    Mosquitto { _child: Mosquitto },
    Embedded { _in_process: EmbeddedBroker },
}

impl TestBroker {
    pub fn start() -> Self {
        Self::start_named(
            std::env::var(TEST_BROKER_ENV)
                .as_deref()
                .unwrap_or("mosquitto"),
        )
    }

    /// Starts the broker `name`d as `WASMPAY_TEST_BROKER` (or the bench's
    /// `--broker`) names it: `mosquitto` or `embedded`.
    pub fn start_named(name: &str) -> Self {
        match name {
            "embedded" => {
                let config = wasmpay::Config::default();
                let broker = EmbeddedBroker::start(([127, 0, 0, 1], 0).into(), &config.broker)
                    .expect("start the embedded broker");
                Self {
                    port: broker.address().port(),
                    _broker: EitherBroker::Embedded {
                        _in_process: broker,
                    },
                }
            }
            "mosquitto" => {
                let broker = Mosquitto::start();
                Self {
                    port: broker.port,
                    _broker: EitherBroker::Mosquitto { _child: broker },
                }
            }
            other => panic!(
                "broker `{other}` ({TEST_BROKER_ENV} or --broker): expected embedded or mosquitto"
            ),
        }
    }

    /// `host:port` for clients and the daemon.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A v5 client that sends requests with a Response Topic and Correlation
/// Data, as a modern MQTT client would.
#[derive(Debug)]
pub struct V5Client {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Value, Option<bytes::Bytes>)>,
    reply_topic: String,
    next: u64,
}

impl V5Client {
    /// Connects as `client_id` and subscribes to its own response topic,
    /// `{reply_base}/{client_id}` (the host only answers under the
    /// principal's own `.../replies`), and to `extra_topics`.
    pub async fn connect(
        address: &str,
        client_id: &str,
        reply_base: &str,
        credentials: Option<(&str, &str)>,
        extra_topics: &[&str],
    ) -> Self {
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new(client_id, host, port.parse().expect("port"));
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(Some(8 * 1024 * 1024));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1_000);
        let (tx, messages) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let correlation = p.properties.and_then(|props| props.correlation_data);
                        if tx.send((topic, body, correlation)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("connect in time")
            .expect("connected");
        let reply_topic = format!("{reply_base}/{client_id}");
        client
            .subscribe(reply_topic.clone(), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        for topic in extra_topics {
            client
                .subscribe(*topic, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        // Let the SUBACKs arrive before the first request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Self {
            client,
            messages,
            reply_topic,
            next: 0,
        }
    }

    /// Publishes `payload` to `topic` with a Response Topic and fresh
    /// Correlation Data, and waits for the reply that carries it back.
    pub async fn request(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Value {
        self.request_with(topic, payload, Vec::new()).await
    }

    pub async fn request_with(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        user_properties: Vec<(String, String)>,
    ) -> Value {
        self.next += 1;
        let correlation = bytes::Bytes::from(format!("c{}", self.next));
        let properties = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(correlation.clone()),
            user_properties,
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .await
            .expect("publish");
        let reply_topic = self.reply_topic.clone();
        self.wait_for(|t, _, c| t == reply_topic && c.as_ref() == Some(&correlation))
            .await
    }

    /// Publishes without asking for a reply.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// The next message on `topic`.
    pub async fn next_on(&mut self, topic: &str) -> Value {
        self.wait_for(|t, _, _| t == topic).await
    }

    async fn wait_for(
        &mut self,
        wanted: impl Fn(&str, &Value, &Option<bytes::Bytes>) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (topic, body, correlation) =
                tokio::time::timeout_at(deadline, self.messages.recv())
                    .await
                    .expect("a reply within 20 s")
                    .expect("client running");
            if wanted(&topic, &body, &correlation) {
                return body;
            }
        }
    }
}

/// An MQTT 3.1.1 client like the seed's PHP one: no properties, so replies
/// come on the principal's conventional reply topic.
#[derive(Debug)]
pub struct V311Client {
    client: rumqttc::AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Value)>,
}

impl V311Client {
    pub async fn connect(address: &str, client_id: &str, topics: &[&str]) -> Self {
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = rumqttc::MqttOptions::new(client_id, host, port.parse().expect("port"));
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1_000);
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send((p.topic.clone(), body)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for topic in topics {
            client
                .subscribe(*topic, rumqttc::QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Self { client, messages }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// The replies on `topic` to every one of `ids`, in whatever order they
    /// come (a broker may redeliver a session's unacked requests in another
    /// order than it first sent them); later copies of one id are dropped.
    pub async fn replies(
        &mut self,
        topic: &str,
        ids: &[String],
    ) -> std::collections::HashMap<String, Value> {
        let mut wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut found = std::collections::HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !wanted.is_empty() {
            let Ok(next) = tokio::time::timeout_at(deadline, self.messages.recv()).await else {
                let mut missing: Vec<&str> = wanted.into_iter().collect();
                missing.sort_unstable();
                panic!(
                    "no reply within 20 s to {} requests: {missing:?}",
                    missing.len()
                );
            };
            let (t, body) = next.expect("client running");
            if t != topic {
                continue;
            }
            if let Some(id) = body["id"].as_str()
                && wanted.remove(id)
            {
                found.insert(id.to_owned(), body);
            }
        }
        found
    }

    /// The next message on `topic` whose `id` field is `id`.
    pub async fn reply(&mut self, topic: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (t, body) = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .expect("a reply within 20 s")
                .expect("client running");
            if t == topic && body["id"] == id {
                return body;
            }
        }
    }
}

/// `GET path` from the daemon's metrics listener at `address`: the whole
/// response, status line first, or an empty string if nothing answers.
pub async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).await.is_ok() {
        let _ = stream.read_to_string(&mut response).await;
    }
    response
}
