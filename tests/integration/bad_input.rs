//! The bad-input corpus (`tests/corpus/bad-input/`, one file per case, its
//! format in the README there) sent through a real broker (Mosquitto, or
//! the embedded one: `TestBroker`) to the real daemon: every case is answered with exactly its code (or dead-lettered,
//! or left unanswered, as the case says), the daemon publishes nothing
//! else, keeps serving, and the ledger neither posts nor changes a balance.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use wasmpay_domain::{MerchantId, UserId};
use wasmpay_ledger::{Balances, Owner, Reader, VerifyReport};
use wasmpay_protocol::{DEAD_LETTER_TOPIC, ErrorCode};
use wasmpay_tests::{TestBroker, V311Client};

/// The longest wait for one answer. Every answer takes milliseconds; this
/// only bounds how long a missing one stalls the run.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Where a case's answer must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// An error reply (or a result, for `code: ok`) to the sender.
    Reply,
    /// Nobody can be answered: a dead letter with the code.
    DeadLetter,
    /// Neither answered nor dead-lettered: the host's own output topics,
    /// and topics outside its subscriptions, which it never receives.
    Nothing,
}

/// One corpus file.
#[derive(Debug)]
struct Case {
    name: String,
    topic: String,
    /// An error code, or `ok`; `None` when nothing answers.
    code: Option<String>,
    delivery: Delivery,
    mqtt311: bool,
    response_topic: Option<String>,
    reply_on: Option<String>,
    user_properties: Vec<(String, String)>,
    /// A request sent before the corpus runs: topic, payload and code.
    first: Option<(String, Vec<u8>, String)>,
    same_reply_as_first: bool,
    payload: Vec<u8>,
}

impl Case {
    /// The category: the file name up to its first dot.
    fn category(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }

    /// The MQTT 5 Response Topic this case's request carries.
    fn response_topic(&self) -> Option<String> {
        if self.mqtt311 {
            return None;
        }
        self.response_topic
            .clone()
            .or_else(|| own_replies(&self.topic).map(|replies| format!("{replies}/bad-input")))
    }

    /// Where the reply must arrive.
    fn reply_topic(&self) -> String {
        self.reply_on
            .clone()
            .or_else(|| {
                if self.mqtt311 {
                    own_replies(&self.topic)
                } else {
                    self.response_topic()
                }
            })
            .unwrap_or_else(|| panic!("{}: no reply topic; add `reply_on`", self.name))
    }

    /// Whether the ledger records this case's answer as a journal entry (a
    /// refusal with no postings). Decode refusals and conflicts are never
    /// recorded, nor is a replay answered from its stored outcome.
    fn is_recorded(&self) -> bool {
        let code = self.code.as_deref().and_then(ErrorCode::parse);
        // The catalogue lists decode refusals, then `conflict`, then the
        // ledger's outcomes (`host/protocol/src/error.rs`).
        !self.same_reply_as_first && code.is_some_and(|code| code > ErrorCode::Conflict)
    }
}

/// The conventional reply topic of the principal a topic names, by its
/// text alone (`wasmpay/v1/users/alice/...` gives alice's).
fn own_replies(topic: &str) -> Option<String> {
    let rest = topic.strip_prefix("wasmpay/v1/")?;
    let mut levels = rest.split('/');
    match (levels.next()?, levels.next()) {
        ("admin", _) => Some("wasmpay/v1/admin/replies".to_owned()),
        (namespace @ ("users" | "merchants"), Some(id)) => {
            Some(format!("wasmpay/v1/{namespace}/{id}/replies"))
        }
        _ => None,
    }
}

/// Decodes `\xHH` (a byte) and `\u{H...}` (a character) escapes.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let escape = &rest[at..];
        if let Some(hex) = escape.strip_prefix("\\x") {
            let byte = hex
                .get(..2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad \\x escape at {:?}", &escape[..escape.len().min(6)]))?;
            out.push(byte);
            rest = &hex[2..];
        } else if let Some(braced) = escape.strip_prefix("\\u{") {
            let (hex, after) = braced
                .split_once('}')
                .ok_or("unclosed \\u{ escape".to_owned())?;
            let c = u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad \\u{{{hex}}} escape"))?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            rest = after;
        } else {
            out.push(b'\\');
            rest = &escape[1..];
        }
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

fn unescape_text(text: &str) -> Result<String, String> {
    String::from_utf8(unescape(text)?).map_err(|_| "escapes make invalid UTF-8".to_owned())
}

/// Reads one case file (format: `tests/corpus/bad-input/README.md`).
fn parse_case(name: &str, text: &str) -> Result<Case, String> {
    let (head, body) = text
        .split_once("\n\n")
        .ok_or("no blank line between the headers and the payload")?;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    let mut why = false;
    for line in head.lines() {
        if line.starts_with('#') {
            why = true;
            continue;
        }
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("header line {line:?} is not `key: value`"))?;
        headers.push((key, value));
    }
    if !why {
        return Err("no `# why` comment".to_owned());
    }
    let one = |key: &str| -> Result<Option<&str>, String> {
        let mut values = headers.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v);
        let value = values.next();
        if values.next().is_some() {
            return Err(format!("`{key}` appears twice"));
        }
        Ok(value)
    };
    for (key, _) in &headers {
        let known = [
            "topic",
            "code",
            "delivery",
            "mqtt",
            "response_topic",
            "reply_on",
            "user_property",
            "first",
            "first_topic",
            "first_code",
            "same_reply_as_first",
            "repeat",
            "escapes",
        ];
        if !known.contains(key) {
            return Err(format!("unknown header `{key}`"));
        }
    }
    let escapes = match one("escapes")? {
        None | Some("no") => false,
        Some("yes") => true,
        Some(other) => return Err(format!("escapes: {other:?}; expected yes or no")),
    };
    let raw = |text: &str| -> Result<Vec<u8>, String> {
        if escapes {
            unescape(text)
        } else {
            Ok(text.as_bytes().to_vec())
        }
    };
    let mut payload = raw(body.strip_suffix('\n').unwrap_or(body))?;
    for (_, value) in headers.iter().filter(|(k, _)| *k == "repeat") {
        let mut parts = value.splitn(3, ' ');
        let (Some(marker), Some(count), Some(unit)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("repeat: {value:?}; expected NAME COUNT TEXT"));
        };
        let count: usize = count
            .parse()
            .map_err(|_| format!("repeat: bad count {count:?}"))?;
        let marker = format!("{{{{{marker}}}}}");
        let filled = raw(unit)?.repeat(count);
        let at = payload
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .ok_or_else(|| format!("repeat: no {marker} in the payload"))?;
        payload.splice(at..at + marker.len(), filled);
    }
    let delivery = match one("delivery")? {
        None | Some("reply") => Delivery::Reply,
        Some("dead-letter") => Delivery::DeadLetter,
        Some("none") => Delivery::Nothing,
        Some(other) => return Err(format!("delivery: {other:?}")),
    };
    let code = one("code")?.map(str::to_owned);
    match (&code, delivery) {
        (None, Delivery::Nothing) => {}
        (Some(_), Delivery::Nothing) => return Err("`delivery: none` takes no code".to_owned()),
        (None, _) => return Err("no `code`".to_owned()),
        (Some(code), _) => {
            if code != "ok" && ErrorCode::parse(code).is_none() {
                return Err(format!("code {code:?} is not in the catalogue"));
            }
        }
    }
    let mqtt311 = match one("mqtt")? {
        None | Some("5") => false,
        Some("3.1.1") => true,
        Some(other) => return Err(format!("mqtt: {other:?}; expected 5 or 3.1.1")),
    };
    let user_properties = headers
        .iter()
        .filter(|(k, _)| *k == "user_property")
        .map(|(_, v)| {
            v.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("user_property: {v:?}; expected key=value"))
        })
        .collect::<Result<_, _>>()?;
    let topic = unescape_text(one("topic")?.ok_or("no `topic`")?)?;
    if one("first")?.is_none() && (one("first_topic")?.is_some() || one("first_code")?.is_some()) {
        return Err("`first_topic` and `first_code` need a `first`".to_owned());
    }
    let first = match one("first")? {
        None => None,
        Some(first) => Some((
            one("first_topic")?.unwrap_or(&topic).to_owned(),
            first.as_bytes().to_vec(),
            one("first_code")?.unwrap_or("ok").to_owned(),
        )),
    };
    let case = Case {
        name: name.to_owned(),
        topic,
        code,
        delivery,
        mqtt311,
        response_topic: one("response_topic")?.map(unescape_text).transpose()?,
        reply_on: one("reply_on")?.map(unescape_text).transpose()?,
        user_properties,
        first,
        same_reply_as_first: one("same_reply_as_first")? == Some("yes"),
        payload,
    };
    if case.mqtt311 && (case.response_topic.is_some() || !case.user_properties.is_empty()) {
        return Err("MQTT 3.1.1 has no response topic or user properties".to_owned());
    }
    Ok(case)
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bad-input")
}

fn load_corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("the corpus directory") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "case") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_case(&name, &text));
        match parsed {
            Ok(case) => cases.push(case),
            Err(error) => errors.push(format!("{}: {error}", path.display())),
        }
    }
    assert!(
        errors.is_empty(),
        "bad corpus files:\n{}",
        errors.join("\n")
    );
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// One message the observer saw.
#[derive(Debug)]
struct Seen {
    topic: String,
    body: Value,
    correlation: Option<bytes::Bytes>,
}

/// An MQTT 5 client subscribed to everything under `wasmpay/v1/` except
/// its own publishes (No Local): it sends the MQTT 5 cases and sees every
/// reply, dead letter and notification the host publishes, wherever it goes.
struct Observer {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Seen>,
    seen: Vec<Seen>,
    next_correlation: u64,
}

impl Observer {
    async fn connect(address: &str) -> Self {
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new("bad-input-observer", host, port.parse().unwrap());
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(Some(16 * 1024 * 1024));
        // Without it every round trip waits out Nagle and a delayed ACK.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, mut eventloop) = AsyncClient::new(options, 1_000);
        let (tx, messages) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = oneshot::channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let seen = Seen {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            body: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                            correlation: p.properties.and_then(|props| props.correlation_data),
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let everything = Filter {
            nolocal: true,
            ..Filter::new("wasmpay/v1/#", QoS::AtLeastOnce)
        };
        client
            .subscribe_many([everything])
            .await
            .expect("subscribe");
        tokio::time::timeout(ANSWER_WAIT, subscribed)
            .await
            .expect("subscribed in time")
            .expect("subscribed");
        Self {
            client,
            messages,
            seen: Vec::new(),
            next_correlation: 0,
        }
    }

    /// Publishes with a Response Topic (if any) and fresh Correlation Data,
    /// which it returns.
    async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        response_topic: Option<String>,
        user_properties: Vec<(String, String)>,
    ) -> bytes::Bytes {
        self.next_correlation += 1;
        let correlation = bytes::Bytes::from(format!("bad-input-{}", self.next_correlation));
        let properties = PublishProperties {
            response_topic,
            correlation_data: Some(correlation.clone()),
            user_properties,
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await
            .expect("publish");
        correlation
    }

    /// The index in `seen` of the next message that `wanted` accepts,
    /// `None` if none comes within [`ANSWER_WAIT`].
    async fn wait_for(&mut self, wanted: impl Fn(&Seen) -> bool) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .ok()?
                .expect("observer running");
            self.seen.push(seen);
            if wanted(self.seen.last().unwrap()) {
                return Some(self.seen.len() - 1);
            }
        }
    }

    /// Asks for the host's status until it answers: it subscribes once
    /// connected, and a request before that reaches nobody.
    async fn wait_for_host(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let replies = "wasmpay/v1/admin/replies/bad-input".to_owned();
        loop {
            let correlation = self
                .publish(
                    "wasmpay/v1/admin/status",
                    br#"{"id":"ready"}"#.to_vec(),
                    Some(replies.clone()),
                    Vec::new(),
                )
                .await;
            let answered = tokio::time::timeout(
                Duration::from_millis(300),
                self.wait_for(|m| {
                    m.topic == replies && m.correlation.as_ref() == Some(&correlation)
                }),
            )
            .await;
            if matches!(answered, Ok(Some(_))) {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon never answered");
        }
    }

    /// Sends an MQTT 5 request to the principal's own replies and waits for
    /// its reply.
    async fn request(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Value {
        let replies = format!("{}/bad-input", own_replies(topic).expect("a request topic"));
        let correlation = self
            .publish(topic, payload.into(), Some(replies.clone()), Vec::new())
            .await;
        let at = self
            .wait_for(|m| m.topic == replies && m.correlation.as_ref() == Some(&correlation))
            .await
            .unwrap_or_else(|| panic!("no reply to {topic} within {ANSWER_WAIT:?}"));
        self.seen[at].body.clone()
    }
}

/// The daemon in this process (as `tests/integration/daemon.rs` starts it).
struct Host {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(broker: &TestBroker) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("wasmpay.db");
        let mut config = wasmpay::Config::default();
        config.broker.address = broker.address();
        config.broker.client_id = format!("wasmpay-host-{}", broker.port);
        config.ledger.path = db.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmpay::pipeline::run(config, async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            db,
            _dir: dir,
        }
    }

    /// Asks for a graceful shutdown and waits for a clean exit; the ledger
    /// file stays for reading.
    async fn stop(&mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task")
            .expect("daemon exits cleanly");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the ledger holds, for before and after.
#[derive(Debug, PartialEq)]
struct Books {
    report: VerifyReport,
    alice: Balances,
    shop: Balances,
}

fn books(db: &Path) -> Books {
    let reader = Reader::open(db).expect("open the ledger read-only");
    let report = reader.verify().expect("verify");
    assert!(report.is_clean(), "{report}");
    Books {
        report,
        alice: reader
            .balances(&Owner::user(&UserId::new("alice").unwrap()))
            .unwrap(),
        shop: reader
            .balances(&Owner::merchant_main(&MerchantId::new("m-shop").unwrap()))
            .unwrap(),
    }
}

/// How the books changed beyond the `recorded` refusals (journal entries
/// with no postings), if at all.
fn changes(before: &Books, after: &Books, recorded: u64) -> Vec<String> {
    let (b, a) = (&before.report, &after.report);
    let mut changes = Vec::new();
    if a.journal_entries != b.journal_entries + recorded {
        changes.push(format!(
            "journal entries went from {} to {}; only the {recorded} refusals the ledger records may add one",
            b.journal_entries, a.journal_entries
        ));
    }
    if (a.postings, a.accounts) != (b.postings, b.accounts) {
        changes.push(format!(
            "postings and accounts went from {:?} to {:?}",
            (b.postings, b.accounts),
            (a.postings, a.accounts)
        ));
    }
    for (whose, b, a) in [
        ("alice", &before.alice, &after.alice),
        ("m-shop", &before.shop, &after.shop),
    ] {
        if a != b {
            changes.push(format!("{whose}'s balances went from {b:?} to {a:?}"));
        }
    }
    changes
}

fn code_of(reply: &Value) -> &str {
    if reply["ok"] == true {
        "ok"
    } else {
        reply["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

/// Sends one case and checks its answer; returns the index of the reply or
/// dead letter that answered it.
async fn run_case(
    observer: &mut Observer,
    v311: &V311Client,
    case: &Case,
    first_reply: Option<&Value>,
) -> Result<Option<usize>, String> {
    let correlation = if case.mqtt311 {
        v311.publish(&case.topic, case.payload.clone()).await;
        None
    } else {
        Some(
            observer
                .publish(
                    &case.topic,
                    case.payload.clone(),
                    case.response_topic(),
                    case.user_properties.clone(),
                )
                .await,
        )
    };
    let expected = case.code.as_deref().unwrap_or("");
    match case.delivery {
        Delivery::Reply => {
            let reply_topic = case.reply_topic();
            let at = observer
                .wait_for(|m| {
                    m.topic == reply_topic
                        && (correlation.is_none() || m.correlation == correlation)
                })
                .await
                .ok_or_else(|| format!("no reply on {reply_topic} within {ANSWER_WAIT:?}"))?;
            let reply = &observer.seen[at].body;
            if code_of(reply) != expected {
                return Err(format!("expected {expected}, got {reply}"));
            }
            if case.same_reply_as_first && first_reply != Some(reply) {
                return Err(format!(
                    "expected the first reply again, {first_reply:?}, got {reply}"
                ));
            }
            Ok(Some(at))
        }
        Delivery::DeadLetter => {
            let at = observer
                .wait_for(|m| m.topic == DEAD_LETTER_TOPIC && m.body["topic"] == case.topic)
                .await
                .ok_or_else(|| format!("no dead letter within {ANSWER_WAIT:?}"))?;
            let letter = &observer.seen[at].body;
            if letter["code"] != expected || !letter["reason"].is_string() {
                return Err(format!(
                    "expected a dead letter with {expected}, got {letter}"
                ));
            }
            Ok(Some(at))
        }
        Delivery::Nothing => Ok(None),
    }
}

/// What the host published while the corpus ran that no case accounts for:
/// a second reply, a reply steered into another namespace, a notification,
/// a reply or dead letter for a message that must get neither. (Refusals by
/// `decode` are dead-lettered too, with the reason; those may stay.)
fn unexpected_publishes(
    cases: &[Case],
    seen: &[Seen],
    is_answer: impl Fn(usize) -> bool,
) -> Vec<String> {
    let unanswered: BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.delivery == Delivery::Nothing)
        .map(|c| c.topic.as_str())
        .collect();
    // The observer does not see its own publishes, but sees the 3.1.1
    // client's.
    let v311_requests: BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.mqtt311)
        .map(|c| c.topic.as_str())
        .collect();
    let replays: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.same_reply_as_first)
        .filter_map(|c| c.first.as_ref())
        .filter_map(|(_, first, _)| serde_json::from_slice::<Value>(first).ok())
        .filter_map(|first| first["id"].as_str().map(str::to_owned))
        .collect();
    let mut unexpected = Vec::new();
    for (at, message) in seen.iter().enumerate() {
        let expected = is_answer(at)
            || v311_requests.contains(message.topic.as_str())
            || (message.topic == DEAD_LETTER_TOPIC
                && message.body["topic"]
                    .as_str()
                    .is_some_and(|topic| !unanswered.contains(topic)));
        if expected {
            continue;
        }
        if is_replayed_notification(message, &replays) {
            continue;
        }
        unexpected.push(format!(
            "unexpected publish on {}: {}",
            message.topic, message.body
        ));
    }
    unexpected
}

/// A request answered from its stored outcome (same id, same parameters)
/// notifies its merchant again: notifications are at least once, because
/// the first may have been lost with a crash between the commit and its
/// publish. The copy must say it is one (`replayed`), so that the merchant
/// can drop it.
fn is_replayed_notification(message: &Seen, replays: &BTreeSet<String>) -> bool {
    message.topic.ends_with("/notifications")
        && message.body["replayed"] == true
        && message.body["request_id"]
            .as_str()
            .is_some_and(|id| replays.contains(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_case_is_answered_with_its_code_and_nothing_is_posted() {
    let cases = load_corpus();
    let broker = TestBroker::start();
    let mut host = Host::start(&broker);
    let mut observer = Observer::connect(&broker.address()).await;
    let v311 = V311Client::connect(&broker.address(), "bad-input-v311", &[]).await;

    observer.wait_for_host().await;
    for (topic, payload) in [
        (
            "wasmpay/v1/admin/accounts/open",
            json!({"id": "open-alice", "owner": {"user": "alice"}, "currency": "EUR"}),
        ),
        (
            "wasmpay/v1/admin/accounts/open",
            json!({"id": "open-shop", "owner": {"merchant": "m-shop"}, "currency": "EUR"}),
        ),
        (
            "wasmpay/v1/admin/deposit",
            json!({"id": "dep-1", "user": "alice", "amount": "100.00", "currency": "EUR"}),
        ),
    ] {
        let reply = observer.request(topic, payload.to_string()).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    // Replay cases' first requests change the books on purpose; they run
    // before the books are read.
    let mut first_replies = BTreeMap::new();
    for case in &cases {
        if let Some((topic, first, code)) = &case.first {
            let reply = observer.request(topic, first.clone()).await;
            assert_eq!(
                code_of(&reply),
                code,
                "{}: first request: {reply}",
                case.name
            );
            first_replies.insert(case.name.clone(), reply);
        }
    }
    // Every publish so far has been seen once this is answered (replies
    // and notifications leave in arrival order).
    let reply = observer
        .request(
            "wasmpay/v1/users/alice/balance",
            r#"{"id":"before-corpus"}"#,
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let before = books(&host.db);

    let started = Instant::now();
    let from = observer.seen.len();
    let mut answers = BTreeSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        match run_case(&mut observer, &v311, case, first_replies.get(&case.name)).await {
            Ok(answer) => answers.extend(answer),
            Err(failure) => failures.push(format!("{}: {failure}", case.name)),
        }
    }
    // Still serving, and the same barrier as above.
    let reply = observer
        .request("wasmpay/v1/users/alice/balance", r#"{"id":"after-corpus"}"#)
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let corpus_time = started.elapsed();
    let until = observer.seen.len() - 1;
    failures.extend(unexpected_publishes(
        &cases,
        &observer.seen[from..until],
        |at| answers.contains(&(from + at)),
    ));

    let after = books(&host.db);
    let recorded = cases.iter().filter(|c| c.is_recorded()).count() as u64;
    failures.extend(changes(&before, &after, recorded));
    assert!(
        failures.is_empty(),
        "{} problems with the corpus of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // And it still moves money.
    let paid = observer
        .request(
            "wasmpay/v1/users/alice/pay",
            json!({"id": "after-corpus-pay", "merchant": "m-shop", "amount": "1.00", "currency": "EUR"})
                .to_string(),
        )
        .await;
    assert_eq!(paid["result"]["status"], "approved", "{paid}");
    host.stop().await;
    let end = books(&host.db);
    assert!(
        end.report.postings > after.report.postings,
        "{}",
        end.report
    );

    let mut by_category: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &cases {
        *by_category.entry(case.category()).or_default() += 1;
    }
    println!(
        "bad-input corpus: {} cases in {corpus_time:?} ({by_category:?}); {recorded} refusals recorded by the ledger, 0 postings",
        cases.len()
    );
}
