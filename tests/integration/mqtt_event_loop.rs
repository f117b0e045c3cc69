//! The daemon's broker connection (`wasmpay::mqtt::EventLoop`) against a
//! real Mosquitto: by default each packet is its own write; gathering,
//! queued requests leave in few writes, within the broker's Receive Maximum
//! and in order; and a burst of incoming messages larger than one read's
//! share arrives whole.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use wasmpay::mqtt::{EventLoop, GATHER_PACKETS};

/// The batch the tests gather, as a count.
const PER_WRITE: usize = GATHER_PACKETS as usize;
use wasmpay_tests::Mosquitto;

fn options(client_id: &str, broker: &Mosquitto) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls until the CONNACK, and returns it.
async fn connect(event_loop: &mut EventLoop) -> rumqttc::v5::mqttbytes::v5::ConnAck {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), event_loop.poll())
            .await
            .expect("connect within 10 s")
            .expect("connect");
        if let Event::Incoming(Packet::ConnAck(ack)) = event {
            return ack;
        }
    }
}

/// Polls until `count` PUBACKs came back; any connection error fails.
async fn until_acked(event_loop: &mut EventLoop, count: usize) {
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout(Duration::from_secs(10), event_loop.poll())
            .await
            .unwrap_or_else(|_| panic!("stalled after {acked} of {count} acks"))
            .unwrap_or_else(|e| panic!("connection failed after {acked} of {count} acks: {e}"));
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
}

/// A subscriber on rumqttc's own event loop (an independent reader of what
/// the broker got): the payloads published on `filter`, in arrival order.
async fn subscriber(broker: &Mosquitto, filter: &str) -> mpsc::UnboundedReceiver<String> {
    let (client, mut event_loop) = AsyncClient::new(options("reader", broker), 64);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(event) = event_loop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("subscribed within 10 s")
        .expect("subscriber running");
    rx
}

/// Queues QoS 1 publishes of "0", "1", ... on `topic` (nothing is sent
/// until the event loop is polled).
async fn queue_numbered(client: &AsyncClient, topic: &str, count: usize) {
    for i in 0..count {
        client
            .publish(topic, QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("queue a publish");
    }
}

async fn expect_in_order(received: &mut mpsc::UnboundedReceiver<String>, count: usize) {
    for i in 0..count {
        let payload = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {count} never arrived"))
            .expect("subscriber running");
        assert_eq!(payload, i.to_string(), "message {i} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_publishes_leave_together_and_arrive_in_order() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "gather/#").await;
    let (client, mut event_loop) = EventLoop::new(options("gatherer", &broker), 1_000);
    event_loop.set_packets_per_write_max(GATHER_PACKETS);
    connect(&mut event_loop).await;

    let count = 6 * PER_WRITE;
    queue_numbered(&client, "gather/t", count).await;
    let before = event_loop.writes();
    until_acked(&mut event_loop, count).await;
    let writes = event_loop.writes() - before;
    // One write per gathered batch, not one per publish.
    assert!(
        writes <= 6 + 1,
        "{writes} writes for {count} queued publishes (batches of {PER_WRITE})"
    );
    expect_in_order(&mut received, count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_each_publish_is_its_own_write() {
    let broker = Mosquitto::start();
    let mut received = subscriber(&broker, "single/#").await;
    let (client, mut event_loop) = EventLoop::new(options("single", &broker), 1_000);
    connect(&mut event_loop).await;
    let count = 2 * PER_WRITE;
    queue_numbered(&client, "single/t", count).await;
    let before = event_loop.writes();
    until_acked(&mut event_loop, count).await;
    assert_eq!(event_loop.writes() - before, count as u64);
    expect_in_order(&mut received, count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathering_waits_at_the_brokers_receive_maximum_and_loses_nothing() {
    // With a Receive Maximum of 5, packet ids come round every 5 publishes:
    // a batch that ran on past the limit would have a publish wait for an id
    // still in use, and the next such publish overwrite it. (Mosquitto acks
    // QoS 1 at once, so it would not notice an excess itself.)
    let broker = Mosquitto::start_with("allow_anonymous true\nmax_inflight_messages 5\n");
    let mut received = subscriber(&broker, "limited/#").await;
    let (client, mut event_loop) = EventLoop::new(options("limited", &broker), 1_000);
    event_loop.set_packets_per_write_max(GATHER_PACKETS);
    let connack = connect(&mut event_loop).await;
    assert_eq!(
        connack.properties.and_then(|p| p.receive_max),
        Some(5),
        "the broker announces its Receive Maximum"
    );

    let count = 3 * PER_WRITE;
    queue_numbered(&client, "limited/t", count).await;
    until_acked(&mut event_loop, count).await;
    expect_in_order(&mut received, count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_longer_than_one_reads_share_arrives_whole() {
    let broker = Mosquitto::start();
    let session = |broker: &Mosquitto| {
        let mut options = options("burst-reader", broker);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(600))
            .set_receive_maximum(Some(1_000));
        options
    };
    // Subscribe with a persistent session, then go away.
    let (client, mut event_loop) = EventLoop::new(session(&broker), 64);
    connect(&mut event_loop).await;
    client
        .subscribe("burst/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = event_loop.poll().await.expect("suback") {
            break;
        }
    }
    client.disconnect().await.expect("disconnect");
    while event_loop.poll().await.is_ok() {}

    // The broker queues the burst for the session.
    let count = 3 * PER_WRITE + 1;
    let (publisher, mut publisher_loop) = EventLoop::new(options("burst-writer", &broker), 1_000);
    connect(&mut publisher_loop).await;
    queue_numbered(&publisher, "burst/t", count).await;
    until_acked(&mut publisher_loop, count).await;

    // Back again: the queued messages arrive at once, many per read.
    let (_client, mut event_loop) = EventLoop::new(session(&broker), 64);
    assert!(connect(&mut event_loop).await.session_present);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), event_loop.poll())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<usize> = (0..count).filter(|i| !seen.contains(i)).collect();
                panic!("{} of {count} never arrived: {missing:?}", missing.len())
            })
            .expect("connection");
        if let Event::Incoming(Packet::Publish(p)) = event {
            let i: usize = std::str::from_utf8(&p.payload)
                .expect("utf-8")
                .parse()
                .expect("a number");
            seen.insert(i);
        }
    }
}
