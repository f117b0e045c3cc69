//! TLS to a broker of its own (`broker.tls`, the clients' `--tls`): a
//! Mosquitto with a TLS listener that requires client certificates, all
//! signed by a CA made at test time. The daemon and the command-line client
//! round-trip an operator's deposit and a user's balance over it; a daemon
//! that does not trust the broker's certificate never connects, and its
//! `/health` says why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wasmpay::Config;
use wasmpay::cli::client::{Client, ClientError, Endpoint};
use wasmpay::tls::TlsFiles;
use wasmpay_domain::UserId;
use wasmpay_protocol::Principal;
use wasmpay_tests::{Mosquitto, free_port};

/// How long anything here may take before the test fails: generous, since
/// it bounds a wait for a condition, not a measurement.
const PATIENCE: Duration = Duration::from_secs(20);

/// The certificates of one test, as PEM files in the broker's directory
/// (which outlives the test's use of them).
struct Pki {
    ca: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, the broker's certificate for 127.0.0.1 and localhost, and one
/// client certificate (the daemon and the clients share it).
fn make_pki() -> Vec<(&'static str, Vec<u8>)> {
    let (ca, issuer) = new_ca();
    let (other_ca, _) = new_ca();
    let (broker, broker_key) = leaf(&issuer, &["127.0.0.1", "localhost"]);
    let (client, client_key) = leaf(&issuer, &["wasmpay-test-client"]);
    vec![
        ("ca.pem", ca.into_bytes()),
        ("other-ca.pem", other_ca.into_bytes()),
        ("broker.pem", broker.into_bytes()),
        ("broker.key", broker_key.into_bytes()),
        ("client.pem", client.into_bytes()),
        ("client.key", client_key.into_bytes()),
    ]
}

fn new_ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "wasmpay test CA");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("leaf params");
    // Its own subject: OpenSSL (Mosquitto) takes a certificate whose
    // subject is its issuer's for self-signed, and refuses it.
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// Mosquitto with, beside its plain listener, a TLS one on a port of its
/// own that requires a client certificate signed by the test's CA.
fn start_broker() -> (Mosquitto, String, Pki) {
    let files = make_pki();
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let tls_port = free_port();
    let broker = Mosquitto::start_with_files(
        &format!(
            "allow_anonymous true\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {{dir}}/ca.pem\n\
             certfile {{dir}}/broker.pem\n\
             keyfile {{dir}}/broker.key\n\
             require_certificate true\n"
        ),
        &borrowed,
    );
    wait_listening(tls_port);
    let dir = broker.dir();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    (broker, format!("127.0.0.1:{tls_port}"), pki)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS listener did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tls_files(pki: &Pki, ca: &Path) -> TlsFiles {
    TlsFiles {
        ca: Some(ca.to_owned()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    }
}

/// The daemon in this process, connecting over TLS trusting `ca`, with its
/// health on `metrics`.
struct TlsDaemon {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl TlsDaemon {
    fn start(address: &str, pki: &Pki, ca: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = format!("127.0.0.1:{}", free_port());
        let files = tls_files(pki, ca);
        let mut config = Config::default();
        config.broker.address = address.to_owned();
        config.broker.client_id = format!("wasmpay-host-tls-{}", free_port());
        config.broker.tls = true;
        config.broker.tls_ca_file = files.ca;
        config.broker.tls_client_cert_file = files.client_cert;
        config.broker.tls_client_key_file = files.client_key;
        config.ledger.path = dir.path().join("wasmpay.db");
        config.metrics.listen = metrics.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmpay::pipeline::run(config, async {
            let _ = stopped.await;
        }));
        Self {
            stop,
            task,
            metrics,
            _dir: dir,
        }
    }

    /// Polls `/health` until `done` accepts its response; returns it.
    async fn health_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let response = wasmpay_tests::http_get(&self.metrics, "/health").await;
            if done(&response) {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "health never turned as expected; last response:\n{response}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task")
            .expect("daemon exits cleanly");
    }
}

/// Sends one request as `client`, retrying while the daemon has not
/// subscribed yet (the broker then says nobody listens).
async fn request(client: &Client, action: &str, body: Value) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let payload = body.to_string().into_bytes();
        match client
            .request(action, payload, Vec::new(), Duration::from_secs(10))
            .await
        {
            Ok(reply) => return reply.json,
            Err(ClientError::NoListener { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("{action}: {e}"),
        }
    }
}

/// The command-line clients' connection, over TLS with `files`.
async fn connect(
    address: &str,
    files: &TlsFiles,
    principal: Principal,
) -> Result<Client, ClientError> {
    let endpoint = Endpoint {
        address: address.to_owned(),
        username: None,
        password: None,
    };
    Client::connect_with_tls(&endpoint, Some(files), principal, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_and_a_balance_round_trip_over_tls_with_client_certificates() {
    let (_broker, address, pki) = start_broker();
    let daemon = TlsDaemon::start(&address, &pki, &pki.ca);
    let health = daemon.health_until(|r| r.starts_with("HTTP/1.1 200")).await;
    assert!(health.ends_with("ok\n"), "{health}");

    let files = tls_files(&pki, &pki.ca);
    let admin = connect(&address, &files, Principal::Admin)
        .await
        .expect("the operator connects over TLS");
    let opened = request(
        &admin,
        "accounts/open",
        json!({"id": "tls-open", "owner": {"user": "alice"}, "currency": "EUR"}),
    )
    .await;
    assert_eq!(opened["ok"], true, "{opened}");
    let deposit = request(
        &admin,
        "deposit",
        json!({"id": "tls-dep", "user": "alice", "amount": "12.34", "currency": "EUR"}),
    )
    .await;
    assert_eq!(deposit["ok"], true, "{deposit}");

    let alice = UserId::new("alice").expect("a user id");
    let user = connect(&address, &files, Principal::User(alice))
        .await
        .expect("alice connects over TLS");
    let balance = request(&user, "balance", json!({"id": "tls-bal"})).await;
    assert_eq!(
        balance["result"]["accounts"][0]["available"]["amount"], "12.34",
        "{balance}"
    );

    admin.close().await;
    user.close().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_certificate_the_ca_file_does_not_vouch_for_is_refused() {
    let (_broker, address, pki) = start_broker();

    let daemon = TlsDaemon::start(&address, &pki, &pki.other_ca);
    // Never connected: `/health` names the TLS failure, not just "down".
    let health = daemon.health_until(|r| r.contains("TLS")).await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("certificate"), "{health}");
    daemon.stop().await;

    // The command-line client refuses it the same way.
    let files = tls_files(&pki, &pki.other_ca);
    let refused = connect(&address, &files, Principal::Admin)
        .await
        .expect_err("an untrusted broker is refused");
    let message = refused.to_string();
    assert!(
        matches!(refused, ClientError::Unreachable { .. }) && message.contains("TLS"),
        "{message}"
    );
}
