//! The shipped Mosquitto ACL (`config/mosquitto/acl`) really confines each
//! principal to its own namespace: proven against a real broker started with
//! that file and a password file made by `mosquitto_passwd`.

use std::process::Command;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use wasmpay_tests::Mosquitto;

const PASSWORD: &str = "secret";

fn locked_broker() -> Mosquitto {
    let acl = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/mosquitto/acl"
    ))
    .expect("read the shipped acl");
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    for (i, user) in ["wasmpay-host", "alice", "bob", "m-shop"]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(PASSWORD)
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success());
    }
    let passwd = std::fs::read(&passwd).expect("read passwd");
    Mosquitto::start_with_files(
        "allow_anonymous false\npassword_file {dir}/passwd\nacl_file {dir}/acl\n",
        &[("passwd", &passwd), ("acl", &acl)],
    )
}

struct Client {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Client {
    async fn connect(broker: &Mosquitto, user: &str) -> Self {
        let mut options = MqttOptions::new(format!("acl-{user}"), "127.0.0.1", broker.port);
        options.set_credentials(user, PASSWORD);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), eventloop.poll())
                .await
                .expect("connack in time")
            {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("{user} could not connect: {e}"),
            }
        }
        Self { client, eventloop }
    }

    /// Subscribes and returns whether the broker granted it.
    async fn subscribe(&mut self, topic: &str) -> bool {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.next().await {
                return ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
            }
        }
    }

    async fn publish(&mut self, topic: &str, body: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
            .await
            .expect("publish");
        // Drive the event loop until the broker has answered the publish.
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = self.next().await {
                return;
            }
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(5), self.eventloop.poll())
            .await
            .expect("event in time")
            .expect("connection alive")
    }

    /// Every publish received within `window`.
    async fn received(&mut self, window: Duration) -> Vec<String> {
        let mut topics = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                topics.push(String::from_utf8_lossy(&p.topic).into_owned());
            }
        }
        topics
    }
}

#[tokio::test]
async fn a_user_can_publish_only_in_its_own_namespace() {
    let broker = locked_broker();
    let mut host = Client::connect(&broker, "wasmpay-host").await;
    assert!(host.subscribe("wasmpay/v1/#").await);
    let mut alice = Client::connect(&broker, "alice").await;

    alice.publish("wasmpay/v1/users/alice/pay", "{}").await;
    alice.publish("wasmpay/v1/users/bob/pay", "{}").await;
    alice
        .publish("wasmpay/v1/merchants/m-shop/refund", "{}")
        .await;
    alice
        .publish("wasmpay/v1/merchants/m-shop/plugin/upload", "{}")
        .await;
    alice.publish("wasmpay/v1/admin/deposit", "{}").await;

    let seen = host.received(Duration::from_millis(500)).await;
    assert_eq!(seen, vec!["wasmpay/v1/users/alice/pay".to_owned()]);
}

/// Mosquitto 2 may grant a subscription its ACL forbids, but never delivers
/// a forbidden message: so each test proves what arrives, not what SUBACK says.
#[tokio::test]
async fn a_user_cannot_read_another_users_replies() {
    let broker = locked_broker();
    let mut alice = Client::connect(&broker, "alice").await;
    let mut bob = Client::connect(&broker, "bob").await;
    let mut host = Client::connect(&broker, "wasmpay-host").await;

    for topic in [
        "wasmpay/v1/users/alice/replies/#",
        "wasmpay/v1/users/bob/replies",
        "wasmpay/v1/users/+/replies",
        "wasmpay/v1/#",
    ] {
        alice.subscribe(topic).await;
    }
    assert!(bob.subscribe("wasmpay/v1/users/bob/replies").await);

    host.publish("wasmpay/v1/users/bob/replies", "{\"id\":\"r1\"}")
        .await;
    host.publish("wasmpay/v1/users/alice/replies", "{\"id\":\"r2\"}")
        .await;
    assert_eq!(
        bob.received(Duration::from_millis(500)).await,
        vec!["wasmpay/v1/users/bob/replies".to_owned()]
    );
    // Alice's overlapping filters may deliver her own reply more than once;
    // nothing else may arrive.
    let seen = alice.received(Duration::from_millis(300)).await;
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| t == "wasmpay/v1/users/alice/replies"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_merchant_reads_only_its_own_notifications() {
    let broker = locked_broker();
    let mut shop = Client::connect(&broker, "m-shop").await;
    let mut alice = Client::connect(&broker, "alice").await;
    let mut host = Client::connect(&broker, "wasmpay-host").await;
    shop.subscribe("wasmpay/v1/merchants/+/notifications").await;
    alice
        .subscribe("wasmpay/v1/merchants/m-shop/notifications")
        .await;

    host.publish("wasmpay/v1/merchants/m-shop/notifications", "{}")
        .await;
    host.publish("wasmpay/v1/merchants/m-other/notifications", "{}")
        .await;
    assert_eq!(
        shop.received(Duration::from_millis(500)).await,
        vec!["wasmpay/v1/merchants/m-shop/notifications".to_owned()]
    );
    assert!(alice.received(Duration::from_millis(200)).await.is_empty());
}
