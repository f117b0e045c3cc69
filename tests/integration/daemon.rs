//! The daemon end to end: a real broker (Mosquitto, or the embedded one:
//! [`TestBroker`]), the real pipeline, a real SQLite file and real plugin
//! components, driven by v5 and 3.1.1 clients the way users, merchants and
//! the operator use it.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wasmpay::Config;
use wasmpay_tests::{TestBroker, V5Client, V311Client};

/// A daemon running in this process against `broker`, stopped on drop
/// (or explicitly, to wait for a clean exit).
pub struct Daemon {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub async fn start(broker: &TestBroker) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("wasmpay.db");
        Self::start_on(broker, dir, db, |_| {}).await
    }

    pub async fn start_on(
        broker: &TestBroker,
        dir: tempfile::TempDir,
        db: PathBuf,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::default();
        config.broker.address = broker.address();
        config.broker.client_id = format!("wasmpay-host-{}", broker.port);
        config.ledger.path = db.clone();
        config.pipeline.hold_sweep_interval_ms = 50;
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmpay::pipeline::run(config, async {
            let _ = stopped.await;
        }));
        // The daemon subscribes once connected; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            stop: Some(stop),
            task: Some(task),
            db,
            _dir: dir,
        }
    }

    /// Asks for a graceful shutdown and waits for the daemon to finish.
    pub async fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("daemon stops in time")
                .expect("daemon task")
                .expect("daemon exits cleanly");
        }
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
        (dir, self.db.clone())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The operator, a user and a merchant, each with its own v5 client.
pub struct World {
    pub _admin: V5Client,
    pub alice: V5Client,
    pub shop: V5Client,
}

pub const NOTIFICATIONS: &str = "wasmpay/v1/merchants/m-shop/notifications";

impl World {
    /// Opens EUR accounts for alice and m-shop and deposits 100.00 for alice.
    pub async fn open(broker: &TestBroker, tag: &str) -> Self {
        let address = broker.address();
        let mut admin = V5Client::connect(
            &address,
            &format!("admin-{tag}"),
            "wasmpay/v1/admin/replies",
            None,
            &[],
        )
        .await;
        let alice = V5Client::connect(
            &address,
            &format!("alice-{tag}"),
            "wasmpay/v1/users/alice/replies",
            None,
            &[],
        )
        .await;
        let shop = V5Client::connect(
            &address,
            &format!("shop-{tag}"),
            "wasmpay/v1/merchants/m-shop/replies",
            None,
            &[NOTIFICATIONS],
        )
        .await;
        for (id, owner) in [
            ("open-alice", json!({"user": "alice"})),
            ("open-shop", json!({"merchant": "m-shop"})),
        ] {
            let reply = admin
                .request(
                    "wasmpay/v1/admin/accounts/open",
                    json!({"id": id, "owner": owner, "currency": "EUR"}).to_string(),
                )
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let reply = admin
            .request(
                "wasmpay/v1/admin/deposit",
                json!({"id": "dep-1", "user": "alice", "amount": "100.00", "currency": "EUR"})
                    .to_string(),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        Self {
            _admin: admin,
            alice,
            shop,
        }
    }

    pub async fn pay(&mut self, id: &str, amount: &str) -> Value {
        self.alice
            .request(
                "wasmpay/v1/users/alice/pay",
                json!({"id": id, "merchant": "m-shop", "amount": amount, "currency": "EUR"})
                    .to_string(),
            )
            .await
    }

    pub async fn balance(&mut self, id: &str) -> String {
        let reply = self
            .alice
            .request(
                "wasmpay/v1/users/alice/balance",
                json!({"id": id}).to_string(),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["result"]["accounts"][0]["available"]["amount"]
            .as_str()
            .expect("an available amount")
            .to_owned()
    }

    /// Uploads `wasm` for m-shop with `config`, as JSON with base64.
    pub async fn upload(&mut self, id: &str, wasm: &[u8], config: Value) -> Value {
        let body = json!({
            "id": id,
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
            "config": config,
        });
        self.shop
            .request(
                "wasmpay/v1/merchants/m-shop/plugin/upload",
                body.to_string(),
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flows_work_over_mqtt5_request_response() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "seed").await;

    assert_eq!(world.balance("b1").await, "100.00");
    let reply = world.pay("p1", "4.20").await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["status"], "approved");
    let payment_id = reply["result"]["payment_id"]
        .as_str()
        .expect("payment id")
        .to_owned();
    assert_eq!(world.balance("b2").await, "95.80");

    let note = world.shop.next_on(NOTIFICATIONS).await;
    assert_eq!(note["event"], "payment");
    assert_eq!(note["payer"], "alice");
    assert_eq!(note["payment"]["payment_id"], payment_id.as_str());

    let refund = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/refund",
            json!({"id": "rf1", "payment_id": payment_id, "amount": "1.20", "currency": "EUR"})
                .to_string(),
        )
        .await;
    assert_eq!(refund["ok"], true, "{refund}");
    assert_eq!(world.balance("b3").await, "97.00");

    let too_much = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/refund",
            json!({"id": "rf2", "payment_id": payment_id, "amount": "3.01", "currency": "EUR"})
                .to_string(),
        )
        .await;
    assert_eq!(
        too_much["error"]["code"], "refund_exceeds_captured",
        "{too_much}"
    );
    assert_eq!(world.balance("b4").await, "97.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_311_client_gets_replies_on_its_conventional_topic() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let _world = World::open(&broker, "v311").await;
    let replies = "wasmpay/v1/users/alice/replies";
    let mut php = V311Client::connect(&broker.address(), "php-alice", &[replies]).await;

    php.publish(
        "wasmpay/v1/users/alice/pay",
        json!({"id": "php-1", "merchant": "m-shop", "amount": "10", "currency": "EUR"}).to_string(),
    )
    .await;
    let reply = php.reply(replies, "php-1").await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["payer_total"]["amount"], "10.00");

    php.publish(
        "wasmpay/v1/users/alice/balance",
        json!({"id": "php-2"}).to_string(),
    )
    .await;
    let reply = php.reply(replies, "php-2").await;
    assert_eq!(
        reply["result"]["accounts"][0]["available"]["amount"],
        "90.00"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_payment_is_answered_not_applied_twice() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "dup").await;

    let first = world.pay("same-id", "7.00").await;
    let second = world.pay("same-id", "7.00").await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first, second);
    assert_eq!(world.balance("b").await, "93.00");

    let conflict = world.pay("same-id", "8.00").await;
    assert_eq!(conflict["error"]["code"], "conflict", "{conflict}");
    assert!(
        conflict["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("amount"),
        "{conflict}"
    );
    assert_eq!(world.balance("b2").await, "93.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_its_code_and_posts_nothing() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "bad").await;
    let mut watcher = V5Client::connect(
        &broker.address(),
        "dead-letter-watcher",
        "unused",
        None,
        &["wasmpay/v1/dead-letter"],
    )
    .await;

    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid_json"),
        (
            r#"{"id":"x1","merchant":"m-shop","amount":4.2,"currency":"EUR"}"#,
            "invalid_amount",
        ),
        (
            r#"{"id":"x2","merchant":"m-shop","amount":"4.201","currency":"EUR"}"#,
            "excess_precision",
        ),
        (
            r#"{"id":"x3","merchant":"m-shop","amount":"-1","currency":"EUR"}"#,
            "amount_not_positive",
        ),
        (
            r#"{"id":"x4","merchant":"m-shop","amount":"1","currency":"XYZ"}"#,
            "unknown_currency",
        ),
        (
            r#"{"id":"x5","merchant":"m-shop","amount":"1","currency":"EUR","tip":"1"}"#,
            "unknown_field",
        ),
        (
            r#"{"id":"x6","merchant":"m-shop","currency":"EUR"}"#,
            "missing_field",
        ),
        (
            r#"{"id":"x7","merchant":"m-shop","amount":"1000.00","currency":"EUR"}"#,
            "insufficient_funds",
        ),
        (
            r#"{"id":"x8","merchant":"m-nobody","amount":"1","currency":"EUR"}"#,
            "account_not_found",
        ),
    ];
    for (payload, code) in cases {
        let reply = world
            .alice
            .request("wasmpay/v1/users/alice/pay", *payload)
            .await;
        assert_eq!(reply["ok"], false, "{payload}");
        assert_eq!(reply["error"]["code"], *code, "{payload} gave {reply}");
    }
    // A topic that names no valid principal cannot be answered: it is
    // dead-lettered with the reason.
    world
        .alice
        .publish("wasmpay/v1/users/al!ce/pay", "{}")
        .await;
    // Every refused message is dead-lettered too; wait for this one.
    loop {
        let letter = watcher.next_on("wasmpay/v1/dead-letter").await;
        if letter["topic"] == "wasmpay/v1/users/al!ce/pay" {
            assert_eq!(letter["code"], "invalid_id", "{letter}");
            break;
        }
    }

    assert_eq!(world.balance("after").await, "100.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_prices_payments_and_a_hot_swap_takes_over() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "plugin").await;

    let upload = world
        .upload(
            "up-1",
            wasmpay_plugin_artifacts::FEE,
            json!({"fee_bps": "290", "fee_fixed.EUR": "0.30"}),
        )
        .await;
    assert_eq!(upload["ok"], true, "{upload}");
    assert_eq!(upload["result"]["plugin"]["version"], 1);

    let paid = world.pay("p-fee", "10.00").await;
    assert_eq!(paid["ok"], true, "{paid}");
    // 2.90% of 10.00 plus 0.30.
    assert_eq!(paid["result"]["payer_total"]["amount"], "10.59", "{paid}");
    assert_eq!(paid["result"]["plugin"]["version"], 1);

    let upload = world
        .upload(
            "up-2",
            wasmpay_plugin_artifacts::GUARD,
            json!({"amount_max.EUR": "5.00"}),
        )
        .await;
    assert_eq!(upload["result"]["plugin"]["version"], 2, "{upload}");
    let declined = world.pay("p-big", "6.00").await;
    assert_eq!(declined["error"]["code"], "payment_declined", "{declined}");
    assert_eq!(
        declined["error"]["detail"]["decline"]["code"],
        "amount_above_max"
    );
    assert_eq!(declined["error"]["detail"]["plugin"]["version"], 2);

    let rollback = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/plugin/rollback",
            json!({"id": "rb-1"}).to_string(),
        )
        .await;
    assert_eq!(rollback["result"]["active"]["version"], 1, "{rollback}");
    let paid = world.pay("p-after", "6.00").await;
    assert_eq!(paid["result"]["plugin"]["version"], 1, "{paid}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_declines_precisely_and_the_host_keeps_serving() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "hostile").await;

    for (i, (wasm, code)) in [
        (wasmpay_plugin_artifacts::HOSTILE_LOOP, "plugin_out_of_fuel"),
        (wasmpay_plugin_artifacts::HOSTILE_PANIC, "plugin_trap"),
    ]
    .into_iter()
    .enumerate()
    {
        let upload = world.upload(&format!("h-up-{i}"), wasm, json!({})).await;
        assert_eq!(upload["ok"], true, "{upload}");
        let reply = world.pay(&format!("h-pay-{i}"), "1.00").await;
        assert_eq!(reply["error"]["code"], "payment_declined", "{reply}");
        assert_eq!(reply["error"]["detail"]["decline"]["code"], code, "{reply}");
    }
    let upload = world
        .upload(
            "h-good",
            wasmpay_plugin_artifacts::FEE,
            json!({"fee_bps": "100"}),
        )
        .await;
    assert_eq!(upload["ok"], true, "{upload}");
    let reply = world.pay("h-ok", "1.00").await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(world.balance("b").await, "98.99");

    // A component that imports WASI is refused at upload, naming the import.
    let refused = world
        .upload(
            "h-wasi",
            wasmpay_plugin_artifacts::HOSTILE_WASI_FS,
            json!({}),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("wasi:"),
        "{refused}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_money_and_the_active_plugin() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "restart").await;
    let upload = world
        .upload(
            "r-up",
            wasmpay_plugin_artifacts::FEE,
            json!({"fee_fixed.EUR": "1.00"}),
        )
        .await;
    assert_eq!(upload["ok"], true, "{upload}");
    let first = world.pay("r-1", "10.00").await;
    let (dir, db) = daemon.stop().await;

    let daemon = Daemon::start_on(&broker, dir, db, |_| {}).await;
    // The same request after the restart is answered from the ledger.
    assert_eq!(world.pay("r-1", "10.00").await, first);
    let second = world.pay("r-2", "10.00").await;
    assert_eq!(
        second["result"]["payer_total"]["amount"], "11.00",
        "{second}"
    );
    assert_eq!(world.balance("b").await, "78.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_captured_once_and_voids_release_the_money() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "holds").await;

    let hold = world
        .alice
        .request(
            "wasmpay/v1/users/alice/authorize",
            json!({"id": "h1", "merchant": "m-shop", "amount": "30.00", "currency": "EUR"})
                .to_string(),
        )
        .await;
    assert_eq!(hold["result"]["status"], "held", "{hold}");
    let payment_id = hold["result"]["payment_id"].clone();
    assert_eq!(world.balance("b1").await, "70.00");

    let capture = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/capture",
            json!({"id": "c1", "payment_id": payment_id}).to_string(),
        )
        .await;
    assert_eq!(capture["ok"], true, "{capture}");
    let again = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/capture",
            json!({"id": "c2", "payment_id": payment_id}).to_string(),
        )
        .await;
    assert_eq!(again["error"]["code"], "already_captured", "{again}");

    let hold = world
        .alice
        .request(
            "wasmpay/v1/users/alice/authorize",
            json!({"id": "h2", "merchant": "m-shop", "amount": "20.00", "currency": "EUR"})
                .to_string(),
        )
        .await;
    let void = world
        .shop
        .request(
            "wasmpay/v1/merchants/m-shop/void",
            json!({"id": "v1", "payment_id": hold["result"]["payment_id"]}).to_string(),
        )
        .await;
    assert_eq!(void["ok"], true, "{void}");
    assert_eq!(world.balance("b2").await, "70.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upload_with_mqtt5_user_properties_is_accepted() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "binary").await;
    let reply = world
        .shop
        .request_with(
            "wasmpay/v1/merchants/m-shop/plugin/upload",
            wasmpay_plugin_artifacts::FEE.to_vec(),
            vec![
                ("id".to_owned(), "bin-1".to_owned()),
                ("config.fee_fixed.EUR".to_owned(), "0.25".to_owned()),
            ],
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let paid = world.pay("bin-pay", "1.00").await;
    assert_eq!(paid["result"]["payer_total"]["amount"], "1.25", "{paid}");
    daemon.stop().await;
}

/// Publishes `count` payments without waiting, each with its own id, and
/// returns a client that collects their replies on alice's reply topic.
async fn fire_payments(broker: &TestBroker, tag: &str, count: usize) -> V311Client {
    let replies = "wasmpay/v1/users/alice/replies";
    let client = V311Client::connect(&broker.address(), &format!("burst-{tag}"), &[replies]).await;
    for i in 0..count {
        client
            .publish(
                "wasmpay/v1/users/alice/pay",
                json!({"id": format!("{tag}-{i}"), "merchant": "m-shop", "amount": "0.10", "currency": "EUR"})
                    .to_string(),
            )
            .await;
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_under_load_loses_nothing() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "shutdown").await;
    let count = 200;
    let mut burst = fire_payments(&broker, "sd", count).await;
    // Stop while the burst is in flight; what was not committed stays in
    // the broker's session for the next run.
    let (dir, db) = daemon.stop().await;
    let daemon = Daemon::start_on(&broker, dir, db, |_| {}).await;
    let ids: Vec<String> = (0..count).map(|i| format!("sd-{i}")).collect();
    let replies = burst.replies("wasmpay/v1/users/alice/replies", &ids).await;
    for reply in replies.values() {
        assert_eq!(reply["ok"], true, "{reply}");
    }
    // 200 payments of 0.10: each applied exactly once.
    assert_eq!(world.balance("after").await, "80.00");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_hot_swap_under_traffic_loses_no_decision() {
    let broker = TestBroker::start();
    let daemon = Daemon::start(&broker).await;
    let mut world = World::open(&broker, "swap").await;
    let upload = world
        .upload(
            "sw-1",
            wasmpay_plugin_artifacts::FEE,
            json!({"fee_fixed.EUR": "0.01"}),
        )
        .await;
    assert_eq!(upload["result"]["plugin"]["version"], 1, "{upload}");

    let count = 100;
    let mut burst = fire_payments(&broker, "sw", count).await;
    let upload = world
        .upload(
            "sw-2",
            wasmpay_plugin_artifacts::FEE,
            json!({"fee_fixed.EUR": "0.02"}),
        )
        .await;
    assert_eq!(upload["result"]["plugin"]["version"], 2, "{upload}");

    let mut charged_minor = 0i64;
    let ids: Vec<String> = (0..count).map(|i| format!("sw-{i}")).collect();
    let replies = burst.replies("wasmpay/v1/users/alice/replies", &ids).await;
    for reply in replies.values() {
        assert_eq!(reply["ok"], true, "{reply}");
        // Each decision names the version that made it, and its fee matches.
        let (version, total) = (
            reply["result"]["plugin"]["version"].as_u64(),
            reply["result"]["payer_total"]["amount"].as_str(),
        );
        match (version, total) {
            (Some(1), Some("0.11")) => charged_minor += 11,
            (Some(2), Some("0.12")) => charged_minor += 12,
            other => panic!("decision {other:?} does not match its plugin version: {reply}"),
        }
    }
    let after = world.pay("sw-after", "1.00").await;
    assert_eq!(after["result"]["plugin"]["version"], 2, "{after}");
    let expected = 10_000 - charged_minor - 102;
    assert_eq!(
        world.balance("b").await,
        format!("{}.{:02}", expected / 100, expected % 100)
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_and_health_follows_the_broker() {
    let broker = TestBroker::start();
    let listen = format!("127.0.0.1:{}", wasmpay_tests::free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("wasmpay.db");
    let metrics_listen = listen.clone();
    let daemon =
        Daemon::start_on(&broker, dir, db, move |c| c.metrics.listen = metrics_listen).await;
    let mut world = World::open(&broker, "metrics").await;
    let gauge = async |name: &str| {
        let metrics = wasmpay_tests::http_get(&listen, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
    };
    assert_eq!(gauge("wasmpay_plugins_active").await.as_deref(), Some("0"));
    // One version, then another of other code: the first one's code is
    // freed once no merchant runs it.
    for (id, wasm) in [
        ("m-up-1", wasmpay_plugin_artifacts::FEE),
        ("m-up-2", wasmpay_plugin_artifacts::GUARD),
    ] {
        assert_eq!(world.upload(id, wasm, json!({})).await["ok"], true);
        assert_eq!(gauge("wasmpay_plugins_active").await.as_deref(), Some("1"));
        assert_eq!(
            gauge("wasmpay_plugin_components_loaded").await.as_deref(),
            Some("1"),
            "after {id}"
        );
    }
    assert_eq!(world.pay("m-1", "1.00").await["ok"], true);
    assert_eq!(
        world.pay("m-2", "1000.00").await["error"]["code"],
        "insufficient_funds"
    );

    let health = wasmpay_tests::http_get(&listen, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = wasmpay_tests::http_get(&listen, "/metrics").await;
    for line in [
        r#"wasmpay_messages_total{command="pay",outcome="ok"} 1"#,
        r#"wasmpay_messages_total{command="pay",outcome="insufficient_funds"} 1"#,
        "wasmpay_ledger_commit_seconds_count",
        // The refusal came before the payment wrote anything: its batch
        // needed no second run with savepoints.
        "wasmpay_ledger_batches_rerun_total 0",
        "wasmpay_reply_latency_seconds_count",
        // Subscribed with No Local: the payment's notification and the
        // replies on `.../replies` are not sent back to the host.
        "wasmpay_echoes_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    drop(broker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = wasmpay_tests::http_get(&listen, "/health").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_failing_is_quarantined_until_a_new_version() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("wasmpay.db");
    let listen = format!("127.0.0.1:{}", wasmpay_tests::free_port());
    let metrics_listen = listen.clone();
    let daemon = Daemon::start_on(&broker, dir, db, move |c| {
        c.pipeline.plugin_failures_quarantine_max = 3;
        c.metrics.listen = metrics_listen;
    })
    .await;
    let quarantined = async || {
        let metrics = wasmpay_tests::http_get(&listen, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("wasmpay_plugins_quarantined "))
            .map(str::to_owned)
    };
    let mut world = World::open(&broker, "quarantine").await;
    let upload = world
        .upload("q-up", wasmpay_plugin_artifacts::HOSTILE_LOOP, json!({}))
        .await;
    assert_eq!(upload["ok"], true, "{upload}");
    let codes: Vec<Value> = {
        let mut codes = Vec::new();
        for i in 0..5 {
            let reply = world.pay(&format!("q-{i}"), "1.00").await;
            codes.push(reply["error"]["detail"]["decline"]["code"].clone());
        }
        codes
    };
    assert_eq!(
        codes,
        vec![
            json!("plugin_out_of_fuel"),
            json!("plugin_out_of_fuel"),
            json!("plugin_out_of_fuel"),
            json!("plugin_quarantined"),
            json!("plugin_quarantined"),
        ]
    );
    // The operator's alert: a gauge of quarantined merchants.
    assert_eq!(quarantined().await.as_deref(), Some("1"));
    let upload = world
        .upload("q-fix", wasmpay_plugin_artifacts::FEE, json!({}))
        .await;
    assert_eq!(upload["ok"], true, "{upload}");
    assert_eq!(world.pay("q-ok", "1.00").await["ok"], true);
    assert_eq!(quarantined().await.as_deref(), Some("0"));
    daemon.stop().await;
}
