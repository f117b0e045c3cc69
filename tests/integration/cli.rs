//! The `wasmpay` client commands as a person or a script uses them: the real
//! binary, run as a process against a real broker and the daemon.
//!
//! The binary is `wasmpay-e2e`, the same `host/wasmpay/src/main.rs` built as
//! a binary of this package (see `tests/Cargo.toml`): cargo builds a
//! package's own binaries before its integration tests and tells them where
//! (`CARGO_BIN_EXE_<name>`), but never a dependency's binaries. Building it
//! here keeps the profile, the features and the freshness of the test run,
//! with no nested cargo.
//!
//! The broker is Mosquitto or the daemon's embedded broker, as
//! `WASMPAY_TEST_BROKER` says ([`TestBroker`]); the locked-down broker
//! tests need Mosquitto's password file and ACL, so they always use it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use wasmpay_tests::{Mosquitto, TestBroker, V5Client, free_port};

/// The daemon in this process against `broker`, on a ledger of its own;
/// stopped gracefully by [`Host::stop`].
struct Host {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Host {
    async fn start(broker: &TestBroker) -> Self {
        Self::start_at(&broker.address(), None).await
    }

    /// The daemon on the broker at `address`, logging in with `login` if
    /// the broker wants one (the operator's login then checks readiness).
    async fn start_at(address: &str, login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = wasmpay::Config::default();
        config.broker.address = address.to_owned();
        config.broker.client_id = format!("wasmpay-host-{}", address.replace([':', '.'], "-"));
        config.ledger.path = dir.path().join("wasmpay.db");
        if let Some((user, password)) = login {
            config.broker.username = Some(user.to_owned());
            config.broker.password = Some(password.to_owned());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmpay::pipeline::run(config, async {
            let _ = stopped.await;
        }));
        // Ready once it answers: before it subscribes, requests reach nobody.
        let mut status = vec!["status", "--timeout-ms", "1000"];
        if login.is_some() {
            status.extend(["--username", "wasmpay-admin", "--password", PASSWORD]);
        }
        for _ in 0..200 {
            if wasmpay(address, &status).await.code == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task")
            .expect("daemon exits cleanly");
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs `wasmpay <args>` with the broker given the way a shell user would
/// (`WASMPAY_BROKER`), and nothing else inherited that could change it.
async fn wasmpay(broker: &str, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmpay-e2e"));
    command
        .args(args)
        .env("WASMPAY_BROKER", broker)
        .env_remove("WASMPAY_USERNAME")
        .env_remove("WASMPAY_PASSWORD");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run the wasmpay binary");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts the exit code, showing everything the run printed if it differs.
fn expect(run: &Run, code: i32) -> &Run {
    assert_eq!(run.code, code, "{run:#?}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_user_opens_accounts_deposits_pays_and_reads_the_balance() {
    let broker = TestBroker::start();
    let daemon = Host::start(&broker).await;
    let b = broker.address();

    let run = wasmpay(&b, &["open-account", "--user", "alice", "EUR"]).await;
    assert!(
        expect(&run, 0)
            .stdout
            .contains("opened a EUR account for user alice"),
        "{run:#?}"
    );
    expect(
        &wasmpay(&b, &["open-account", "--merchant", "m-shop", "EUR"]).await,
        0,
    );
    let run = wasmpay(&b, &["deposit", "--user", "alice", "100.00", "EUR"]).await;
    assert!(
        expect(&run, 0).stdout.contains("balance now 100.00 EUR"),
        "{run:#?}"
    );

    let run = wasmpay(
        &b,
        &[
            "pay",
            "--user",
            "alice",
            "--merchant",
            "m-shop",
            "4.20",
            "EUR",
            "--memo",
            "flat white",
        ],
    )
    .await;
    let out = &expect(&run, 0).stdout;
    assert!(
        out.starts_with("approved: 4.20 EUR to m-shop, payment pay_"),
        "{out}"
    );
    assert!(out.contains("default rules"), "{out}");
    // A generated id is printed, so the user can retry with it.
    assert!(out.contains("request id cli-"), "{out}");

    let run = wasmpay(&b, &["balance", "--user", "alice"]).await;
    let out = &expect(&run, 0).stdout;
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("main") && l.contains("95.80 EUR")),
        "{out}"
    );

    let run = wasmpay(&b, &["history", "--user", "alice"]).await;
    let out = &expect(&run, 0).stdout;
    // Newest first: the payment, to whom and why, then the deposit.
    let payment = out.lines().position(|l| l.contains("-4.20 EUR"));
    let deposit = out.lines().position(|l| l.contains("100.00 EUR"));
    assert!(payment.is_some() && payment < deposit, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("-4.20 EUR"))
        .unwrap_or_default();
    assert!(
        line.contains("payment") && line.contains("m-shop") && line.contains("flat white"),
        "{out}"
    );
    assert!(
        out.contains("deposit") && out.contains("100.00 EUR"),
        "{out}"
    );
    // The merchant sees who paid, with the memo, but not the payer's
    // request id.
    let run = wasmpay(&b, &["history", "--merchant", "m-shop", "--json"]).await;
    let reply: Value = serde_json::from_str(&expect(&run, 0).stdout).expect("JSON");
    let entry = &reply["result"]["entries"][0];
    assert_eq!(
        entry["counterparty"],
        serde_json::json!({"user": "alice"}),
        "{reply}"
    );
    assert_eq!(entry["memo"], "flat white", "{reply}");
    assert_eq!(entry["amount"]["amount"], "4.20", "{reply}");
    assert!(entry.get("request_id").is_none(), "{reply}");

    let run = wasmpay(&b, &["status"]).await;
    assert!(
        expect(&run, 0)
            .stdout
            .starts_with("wasmpay 0.1.0 (protocol "),
        "{run:#?}"
    );
    daemon.stop().await;
}

/// The real `wasmpay run` as an operator starts it, logging JSON to stderr;
/// its lines are read after it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_log_names_the_request_behind_each_line() {
    let broker = TestBroker::start();
    let b = broker.address();
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpay-e2e"))
        .arg("run")
        .env("WASMPAY__BROKER__ADDRESS", &b)
        .env(
            "WASMPAY__BROKER__CLIENT_ID",
            format!("wasmpay-log-{}", broker.port),
        )
        .env("WASMPAY__LEDGER__PATH", dir.path().join("wasmpay.db"))
        .env("WASMPAY__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wasmpay run");
    for _ in 0..200 {
        if wasmpay(&b, &["status", "--timeout-ms", "1000"]).await.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    expect(
        &wasmpay(&b, &["open-account", "--user", "alice", "EUR"]).await,
        0,
    );
    expect(
        &wasmpay(&b, &["open-account", "--merchant", "m-shop", "EUR"]).await,
        0,
    );
    let args = [
        "pay",
        "--user",
        "alice",
        "--merchant",
        "m-shop",
        "5.00",
        "EUR",
        "--id",
        "log-1",
    ];
    expect(&wasmpay(&b, &args).await, 1);

    // SIGTERM: a clean stop, then the whole log.
    let pid = daemon.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let output = tokio::task::spawn_blocking(move || daemon.wait_with_output())
        .await
        .expect("join")
        .expect("wasmpay run exits");
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stderr);
    // The refusal is logged by the ledger writer, on its own thread, inside
    // the span prepare opened for the request.
    let refused: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["code"] == "insufficient_funds")
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert_eq!(refused["span"]["id"], "log-1", "{refused}");
    assert_eq!(refused["span"]["principal"], "user alice", "{refused}");
    assert_eq!(refused["span"]["merchant"], "m-shop", "{refused}");
    assert_eq!(refused["span"]["command"], "pay", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_declines_exit_1_naming_their_code() {
    let broker = TestBroker::start();
    let daemon = Host::start(&broker).await;
    let b = broker.address();
    expect(
        &wasmpay(&b, &["open-account", "--user", "bob", "EUR"]).await,
        0,
    );
    expect(
        &wasmpay(&b, &["open-account", "--merchant", "m-shop", "EUR"]).await,
        0,
    );
    expect(
        &wasmpay(&b, &["deposit", "--user", "bob", "50", "EUR"]).await,
        0,
    );

    let run = wasmpay(
        &b,
        &[
            "pay",
            "--user",
            "bob",
            "--merchant",
            "m-shop",
            "80.00",
            "EUR",
        ],
    )
    .await;
    assert!(
        expect(&run, 1)
            .stderr
            .starts_with("refused: insufficient_funds\n"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("wasmpay deposit"),
        "the advice names the fix: {run:#?}"
    );

    // The guard plugin, uploaded in binary form with its configuration as
    // user properties, declines what is above its maximum.
    let dir = tempfile::tempdir().expect("temp dir");
    let guard = dir.path().join("guard.wasm");
    std::fs::write(&guard, wasmpay_plugin_artifacts::GUARD).expect("write guard.wasm");
    let run = wasmpay(
        &b,
        &[
            "plugin",
            "upload",
            "--merchant",
            "m-shop",
            guard.to_str().expect("utf-8 path"),
            "--config",
            "amount_max.EUR=5.00",
        ],
    )
    .await;
    assert!(
        expect(&run, 0).stdout.starts_with("stored plugin v1 ("),
        "{run:#?}"
    );
    let run = wasmpay(&b, &["plugin", "list", "--merchant", "m-shop"]).await;
    assert!(
        expect(&run, 0)
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("*") && l.contains("v1")),
        "{run:#?}"
    );

    let run = wasmpay(
        &b,
        &[
            "pay",
            "--user",
            "bob",
            "--merchant",
            "m-shop",
            "6.00",
            "EUR",
            "--id",
            "big-1",
        ],
    )
    .await;
    assert!(
        expect(&run, 1)
            .stderr
            .starts_with("declined: payment_declined (amount_above_max): the largest payment accepted is 5.00 EUR\n"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("plugin v1 ("), "{run:#?}");

    // Scripts read the reply as it arrived; the exit code still says it.
    let run = wasmpay(
        &b,
        &[
            "pay",
            "--user",
            "bob",
            "--merchant",
            "m-shop",
            "6.00",
            "EUR",
            "--id",
            "big-1",
            "--json",
        ],
    )
    .await;
    let reply = expect(&run, 1).json();
    assert_eq!(reply["id"], "big-1");
    assert_eq!(
        reply["error"]["detail"]["decline"]["code"], "amount_above_max",
        "{reply}"
    );

    // The same id with other parameters is a conflict, not a new payment.
    let run = wasmpay(
        &b,
        &[
            "pay",
            "--user",
            "bob",
            "--merchant",
            "m-shop",
            "2.00",
            "EUR",
            "--id",
            "big-1",
        ],
    )
    .await;
    assert!(
        expect(&run, 1).stderr.starts_with("refused: conflict\n"),
        "{run:#?}"
    );

    let run = wasmpay(&b, &["balance", "--user", "bob", "--json"]).await;
    let reply = expect(&run, 0).json();
    assert_eq!(
        reply["result"]["accounts"][0]["available"]["amount"], "50.00",
        "{reply}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_id_is_answered_not_applied_twice() {
    let broker = TestBroker::start();
    let daemon = Host::start(&broker).await;
    let b = broker.address();
    expect(
        &wasmpay(&b, &["open-account", "--user", "carol", "EUR"]).await,
        0,
    );
    expect(
        &wasmpay(&b, &["open-account", "--merchant", "m-shop", "EUR"]).await,
        0,
    );
    expect(
        &wasmpay(
            &b,
            &["deposit", "--user", "carol", "10", "EUR", "--id", "d-1"],
        )
        .await,
        0,
    );
    expect(
        &wasmpay(
            &b,
            &["deposit", "--user", "carol", "10", "EUR", "--id", "d-1"],
        )
        .await,
        0,
    );
    let pay = [
        "pay",
        "--user",
        "carol",
        "--merchant",
        "m-shop",
        "3",
        "EUR",
        "--id",
        "p-1",
        "--json",
    ];
    let first = expect(&wasmpay(&b, &pay).await, 0).json();
    let again = expect(&wasmpay(&b, &pay).await, 0).json();
    assert_eq!(first, again);

    // Holds: authorize as the user, capture part as the merchant.
    let hold = wasmpay(
        &b,
        &[
            "authorize",
            "--user",
            "carol",
            "--merchant",
            "m-shop",
            "5.00",
            "EUR",
            "--json",
        ],
    )
    .await;
    let hold = expect(&hold, 0).json();
    let payment_id = hold["result"]["payment_id"]
        .as_str()
        .expect("payment id")
        .to_owned();
    let run = wasmpay(
        &b,
        &[
            "capture",
            "--merchant",
            "m-shop",
            &payment_id,
            "2.00",
            "EUR",
        ],
    )
    .await;
    assert!(
        expect(&run, 0).stdout.starts_with(&format!(
            "captured 2.00 EUR of {payment_id}; released 3.00 EUR"
        )),
        "{run:#?}"
    );
    let run = wasmpay(&b, &["void", "--merchant", "m-shop", &payment_id]).await;
    assert!(
        expect(&run, 1)
            .stderr
            .starts_with("refused: already_captured"),
        "{run:#?}"
    );
    let run = wasmpay(
        &b,
        &["refund", "--merchant", "m-shop", &payment_id, "1.00", "EUR"],
    )
    .await;
    assert!(
        expect(&run, 0).stdout.starts_with("refunded 1.00 EUR"),
        "{run:#?}"
    );

    let run = wasmpay(&b, &["balance", "--user", "carol", "--json"]).await;
    // 10 deposited once, 3 paid once, 2 captured, 1 refunded.
    assert_eq!(
        expect(&run, 0).json()["result"]["accounts"][0]["balance"]["amount"],
        "6.00"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_connection_and_timeout_errors_have_their_own_exit_codes() {
    // Nobody listens on this port: exit 2, and the message says what to do.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let run = wasmpay(&nowhere, &["balance", "--user", "alice"]).await;
    assert!(
        expect(&run, 2).stderr.contains("Is the daemon running?"),
        "{run:#?}"
    );

    // Bad arguments never reach the broker.
    let run = wasmpay(
        &nowhere,
        &[
            "pay",
            "--user",
            "alice",
            "--merchant",
            "m-shop",
            "4.201",
            "EUR",
        ],
    )
    .await;
    assert!(expect(&run, 2).stderr.contains("4.201"), "{run:#?}");
    expect(
        &wasmpay(
            &nowhere,
            &["pay", "--user", "al ice", "--merchant", "m", "1", "EUR"],
        )
        .await,
        2,
    );

    // A broker with no daemon behind it. Mosquitto says at once that nobody
    // listens (MQTT 5 PUBACK "no matching subscribers"); a broker that
    // does not say so leaves the request unanswered. Either way the user
    // is told to start the daemon.
    let broker = TestBroker::start();
    let run = wasmpay(
        &broker.address(),
        &["balance", "--user", "alice", "--timeout-ms", "500"],
    )
    .await;
    match run.code {
        2 => assert!(run.stderr.contains("nobody listens"), "{run:#?}"),
        3 => assert!(run.stderr.contains("Is the daemon running?"), "{run:#?}"),
        _ => panic!("{run:#?}"),
    }
    assert!(run.stderr.contains("wasmpay run"), "{run:#?}");

    // Something subscribes but never answers: exit 3, with the id to retry.
    let _silent = V5Client::connect(
        &broker.address(),
        "silent",
        "unused",
        None,
        &["wasmpay/v1/users/+/+"],
    )
    .await;
    let run = wasmpay(
        &broker.address(),
        &[
            "pay",
            "--user",
            "alice",
            "--merchant",
            "m-shop",
            "1",
            "EUR",
            "--timeout-ms",
            "300",
        ],
    )
    .await;
    expect(&run, 3);
    assert!(run.stderr.contains("no reply within 300 ms"), "{run:#?}");
    assert!(
        run.stderr.contains("--id cli-"),
        "the retry command carries the id: {run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_drives_every_kind_of_request_and_leaves_a_clean_ledger() {
    let summary = wasmpay::cli::demo::run(wasmpay::cli::demo::Options::quiet(60))
        .await
        .expect("the demo runs");
    assert!(summary.ok(), "{summary}");
    assert!(summary.count("approved") > 0, "{summary}");
    assert!(summary.count("declined payer_blocked") > 0, "{summary}");
    assert!(summary.verify_clean, "{summary}");
    let answered: usize = summary.outcomes.values().sum();
    assert!(answered >= 60, "{summary}");
    for merchant in ["m-coffee", "m-books", "m-arcade"] {
        assert!(
            summary.merchants[merchant].plugin.contains(" v1 ("),
            "{merchant}: {summary}"
        );
    }
}

/// The password of every login of [`locked_broker`].
const PASSWORD: &str = "secret";

/// A Mosquitto with the shipped ACL (`config/mosquitto/acl`) and a login for
/// the daemon, the operator, two users and a merchant.
fn locked_broker() -> Mosquitto {
    let acl = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/mosquitto/acl"
    ))
    .expect("read the shipped acl");
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    for (i, user) in ["wasmpay-host", "wasmpay-admin", "alice", "bob", "m-shop"]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .args(["-b"])
            .arg(&passwd)
            .args([*user, PASSWORD])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_locked_down_broker_each_login_acts_only_as_itself() {
    let broker = locked_broker();
    let b = broker.address();
    let daemon = Host::start_at(&b, Some(("wasmpay-host", PASSWORD))).await;
    let admin = ["--username", "wasmpay-admin", "--password", PASSWORD];
    for args in [
        &["open-account", "--user", "alice", "EUR"][..],
        &["open-account", "--merchant", "m-shop", "EUR"],
        &["deposit", "--user", "alice", "20", "EUR"],
    ] {
        expect(&wasmpay(&b, &[args, &admin].concat()).await, 0);
    }
    let pay = [
        "pay",
        "--user",
        "alice",
        "--merchant",
        "m-shop",
        "1.50",
        "EUR",
    ];
    let login =
        |user: &'static str, password: &'static str| ["--username", user, "--password", password];
    let run = wasmpay(&b, &[&pay[..], &login("alice", PASSWORD)].concat()).await;
    assert!(
        expect(&run, 0).stdout.starts_with("approved: 1.50 EUR"),
        "{run:#?}"
    );

    let run = wasmpay(&b, &[&pay[..], &login("alice", "wrong")].concat()).await;
    assert!(
        expect(&run, 2).stderr.contains("refused the login"),
        "{run:#?}"
    );

    // Bob may not read alice's replies, so he cannot act as alice.
    let run = wasmpay(&b, &[&pay[..], &login("bob", PASSWORD)].concat()).await;
    assert!(
        expect(&run, 2)
            .stderr
            .contains("--username alice for --user alice"),
        "{run:#?}"
    );

    let run = wasmpay(
        &b,
        &[
            &["balance", "--user", "alice"][..],
            &login("alice", PASSWORD),
        ]
        .concat(),
    )
    .await;
    assert!(expect(&run, 0).stdout.contains("18.50 EUR"), "{run:#?}");
    daemon.stop().await;
}
