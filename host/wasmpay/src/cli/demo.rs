//! `wasmpay demo`: the whole system on one machine in well under a minute.
//!
//! It starts a broker and the daemon (both in this process, on a fresh
//! ledger),
//! uploads the three example plugins for three merchants, opens accounts,
//! deposits, and drives a few hundred payments, holds, captures, voids and
//! refunds through real MQTT 5 request/response, as separate users and
//! merchants would. Some are meant to fail: a blocked payer, amounts above
//! a merchant's maximum, too many payments in an hour, orders below a
//! minimum, a payer out of money. It ends with what happened, per outcome
//! and per merchant, and a `ledger verify` of the file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use wasmpay_domain::{Currency, MerchantId, Money, UserId};
use wasmpay_protocol::Principal;

use super::client::{Client, ClientError, Endpoint, Reply};
use super::render::table;
use crate::Config;
use crate::embedded_broker::EmbeddedBroker;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many payments (and authorizations) to make.
    #[arg(long, default_value_t = 300)]
    payments: usize,
    /// Keep the ledger in this file (it must not exist yet), to look at it
    /// afterwards with `wasmpay ledger`. Without it the ledger is a
    /// temporary file, deleted at the end.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Seed of the traffic: the same seed makes the same payments.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// What a demo run does; [`DemoArgs`] for the command line, and tests.
#[derive(Debug, Clone)]
pub struct Options {
    pub payments: usize,
    pub db: Option<PathBuf>,
    pub seed: u64,
    pub concurrency: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Options {
    /// A small quiet run: for tests.
    pub fn quiet(payments: usize) -> Self {
        Self {
            payments,
            db: None,
            seed: 7,
            concurrency: 16,
            progress: false,
        }
    }
}

/// A merchant of the demo, its rules and their configuration.
struct Shop {
    id: &'static str,
    plugin: &'static str,
    wasm: &'static [u8],
    config: &'static [(&'static str, &'static str)],
}

const SHOPS: [Shop; 3] = [
    Shop {
        id: "m-coffee",
        plugin: "fee",
        wasm: wasmpay_plugin_artifacts::FEE,
        // 1.5 % + 0.10, at most 2.00; refunds keep 0.20.
        config: &[
            ("fee_bps", "150"),
            ("fee_fixed.EUR", "0.10"),
            ("fee_cap.EUR", "2.00"),
            ("refund_fee.EUR", "0.20"),
            ("refund_max_age_days", "30"),
        ],
    },
    Shop {
        id: "m-books",
        plugin: "tiered",
        wasm: wasmpay_plugin_artifacts::TIERED,
        // Small orders pay 2 % more, large ones 3 % less; a welcome coupon;
        // 7 % tax to the `tax` account; 5 % to the authors.
        config: &[
            ("min_order.EUR", "5.00"),
            ("tiers.EUR", "0:2%, 50.00:0%, 200.00:-3%"),
            ("coupon.WELCOME10", "10%"),
            ("tax_rate", "7%"),
            ("split_rate", "5%"),
            ("split_account", "authors"),
        ],
    },
    Shop {
        id: "m-arcade",
        plugin: "guard",
        wasm: wasmpay_plugin_artifacts::GUARD,
        // 1.00 to 50.00 a payment, at most 5 payments an hour per payer,
        // and one payer not welcome at all.
        config: &[
            ("amount_min.EUR", "1.00"),
            ("amount_max.EUR", "50.00"),
            ("velocity_windows", "3600"),
            ("velocity_count_max.3600", "5"),
            ("blocked_payers", "mallory"),
        ],
    },
];

/// Users and what the operator deposits for them (EUR); dave runs dry.
const USERS: [(&str, &str); 9] = [
    ("alice", "2000.00"),
    ("bob", "1500.00"),
    ("carol", "1200.00"),
    ("dave", "60.00"),
    ("erin", "1800.00"),
    ("frank", "900.00"),
    ("grace", "2500.00"),
    ("heidi", "1100.00"),
    ("mallory", "300.00"),
];

/// One request of the traffic, and what it is for in the summary.
#[derive(Debug, Clone)]
struct Op {
    principal: Principal,
    action: &'static str,
    body: Value,
    /// The merchant it concerns.
    merchant: &'static str,
}

/// What happened, for the summary.
#[derive(Debug, Default)]
pub struct Summary {
    pub broker: String,
    pub ledger: PathBuf,
    pub ledger_kept: bool,
    pub elapsed: Duration,
    pub requests: usize,
    /// `approved`, `held`, `captured`, ..., `declined <code>`, `refused
    /// <code>`, `no reply`.
    pub outcomes: BTreeMap<String, usize>,
    pub merchants: BTreeMap<String, MerchantTotals>,
    pub verify: String,
    pub verify_clean: bool,
}

/// Per merchant.
#[derive(Debug, Default)]
pub struct MerchantTotals {
    pub plugin: String,
    pub approved: usize,
    pub declined: usize,
    /// What payers asked to pay, approved payments and captures.
    pub volume_minor: i64,
    /// What the rules added on top: fees, surcharges and taxes, less
    /// discounts.
    pub rules_minor: i64,
    pub platform_fee_minor: i64,
    pub refunded_minor: i64,
}

impl Summary {
    /// Every request got an answer and the ledger checks out.
    pub fn ok(&self) -> bool {
        self.verify_clean && !self.outcomes.contains_key("no reply")
    }

    pub fn count(&self, outcome: &str) -> usize {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is a currency")
}

fn eur_text(minor: i64) -> String {
    Money::from_minor(minor, eur()).to_string()
}

/// Minor units of `{"amount": "4.20", "currency": "EUR"}`, 0 if absent.
fn minor(value: &Value) -> i64 {
    value["amount"]
        .as_str()
        .and_then(|a| Money::parse(a, eur()).ok())
        .map_or(0, Money::minor)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "\n{} requests in {:.1} s ({:.0} per second), broker {}",
            self.requests,
            seconds,
            self.requests as f64 / seconds.max(0.001),
            self.broker
        )?;
        writeln!(f, "\nOutcomes")?;
        let rows: Vec<Vec<String>> = self
            .outcomes
            .iter()
            .map(|(outcome, n)| vec![outcome.clone(), n.to_string()])
            .collect();
        write!(f, "{}", indent(&table(&["outcome", "count"], &[1], &rows)))?;
        writeln!(f, "\nMerchants")?;
        let rows: Vec<Vec<String>> = self
            .merchants
            .iter()
            .map(|(merchant, t)| {
                vec![
                    merchant.clone(),
                    t.plugin.clone(),
                    t.approved.to_string(),
                    t.declined.to_string(),
                    eur_text(t.volume_minor),
                    eur_text(t.rules_minor),
                    eur_text(t.platform_fee_minor),
                    eur_text(t.refunded_minor),
                ]
            })
            .collect();
        write!(
            f,
            "{}",
            indent(&table(
                &[
                    "merchant",
                    "plugin",
                    "approved",
                    "declined",
                    "volume",
                    "rules added",
                    "platform fee",
                    "refunded",
                ],
                &[2, 3, 4, 5, 6, 7],
                &rows,
            ))
        )?;
        writeln!(f, "\nLedger {}", self.ledger.display())?;
        write!(f, "  verify: {}", self.verify)?;
        if self.ledger_kept {
            writeln!(
                f,
                "  look inside: wasmpay ledger balance --db {} --merchant m-coffee",
                self.ledger.display()
            )?;
        }
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `wasmpay demo`.
pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        payments: args.payments,
        db: args.db,
        seed: args.seed,
        concurrency: args.concurrency.max(1),
        progress: true,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(options))?;
    println!("{summary}");
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the demo and returns what happened.
pub async fn run(options: Options) -> anyhow::Result<Summary> {
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let (ledger, kept) = match &options.db {
        Some(path) => {
            anyhow::ensure!(
                !path.exists(),
                "{} exists already: the demo starts from an empty ledger; remove it or name another file",
                path.display()
            );
            (path.clone(), true)
        }
        None => (scratch.path().join("wasmpay-demo.db"), false),
    };
    let mut config = Config::default();
    let broker = EmbeddedBroker::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &config.broker,
    )?;
    let address = broker.address().to_string();
    say(&options, &format!("embedded MQTT broker on {address}"));
    config.broker.address = address.clone();
    config.broker.client_id = format!("wasmpay-demo-{}", super::random_tag());
    config.ledger.path = ledger.clone();
    // The operator's cut: 0.5 % of each payment, charged to the merchant.
    config.fees.platform_fee_bps = 50;
    config.pipeline.hold_sweep_interval_ms = 200;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::pipeline::run(config, async {
        let _ = stopped.await;
    }));

    let endpoint = Endpoint {
        address: address.clone(),
        username: None,
        password: None,
    };
    let result = drive(&options, &endpoint, &daemon).await;

    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .context("the daemon did not stop within 30 s")?;
    stopped.context("the daemon task")??;
    drop(broker);
    let (elapsed, requests, outcomes, merchants) = result?;

    let report = wasmpay_ledger::Reader::open(&ledger)
        .with_context(|| format!("opening {}", ledger.display()))?
        .verify()?;
    let summary = Summary {
        broker: address,
        ledger: if kept {
            ledger
        } else {
            PathBuf::from("(temporary, deleted)")
        },
        ledger_kept: kept,
        elapsed,
        requests,
        outcomes,
        merchants,
        verify: report.to_string(),
        verify_clean: report.is_clean(),
    };
    Ok(summary)
}

fn say(options: &Options, line: &str) {
    if options.progress {
        eprintln!("{line}");
    }
}

type Drive = (
    Duration,
    usize,
    BTreeMap<String, usize>,
    BTreeMap<String, MerchantTotals>,
);

/// Everything between "the daemon is starting" and "stop it".
async fn drive(
    options: &Options,
    endpoint: &Endpoint,
    daemon: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Drive> {
    let timeout = Duration::from_secs(20);
    let admin = Client::connect(endpoint, Principal::Admin, timeout).await?;
    wait_for_daemon(&admin, daemon).await?;

    let mut clients: HashMap<Principal, Client> = HashMap::new();
    for (user, _) in USERS {
        let principal = Principal::User(user.parse::<UserId>()?);
        clients.insert(
            principal.clone(),
            Client::connect(endpoint, principal, timeout).await?,
        );
    }
    for shop in &SHOPS {
        let principal = Principal::Merchant(shop.id.parse::<MerchantId>()?);
        clients.insert(
            principal.clone(),
            Client::connect(endpoint, principal, timeout).await?,
        );
    }
    clients.insert(Principal::Admin, admin);
    let clients = Arc::new(clients);
    let started = Instant::now();

    say(options, "opening accounts, depositing, uploading plugins");
    let mut requests = setup(&clients).await?;

    let mut merchants: BTreeMap<String, MerchantTotals> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let bar = if options.progress {
        indicatif::ProgressBar::new(options.payments as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:32}] {pos}/{len} {per_sec:>10} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );

    // Payments and authorizations.
    let traffic = traffic(options);
    let replies = run_ops(&clients, traffic, options.concurrency, &bar).await;
    requests += replies.len();
    let mut holds = Vec::new();
    let mut paid = Vec::new();
    for (op, reply) in &replies {
        let totals = merchants.entry(op.merchant.to_owned()).or_default();
        let outcome = record(op, reply, totals);
        if outcome == "held" {
            holds.push((op.merchant, reply_result(reply)["payment_id"].clone()));
        } else if outcome == "approved" && op.merchant != "m-arcade" {
            paid.push((op.merchant, reply_result(reply)["payment_id"].clone()));
        }
        *outcomes.entry(outcome).or_default() += 1;
    }

    // The merchants settle their holds and refund a few payments.
    let mut rng = fastrand::Rng::with_seed(options.seed ^ 0x5eed);
    let mut follow_ups = Vec::new();
    for (i, (merchant, payment_id)) in holds.iter().enumerate() {
        let principal = Principal::Merchant(merchant.parse()?);
        let id = format!("settle-{i}");
        let (action, body) = match rng.u8(..10) {
            0..=3 => ("capture", json!({"id": id, "payment_id": payment_id})),
            4..=6 => (
                "capture",
                json!({"id": id, "payment_id": payment_id, "amount": "1.00", "currency": "EUR"}),
            ),
            _ => (
                "void",
                json!({"id": id, "payment_id": payment_id, "reason": "customer left"}),
            ),
        };
        follow_ups.push(Op {
            principal,
            action,
            body,
            merchant,
        });
    }
    for (i, (merchant, payment_id)) in paid.iter().enumerate() {
        if rng.u8(..100) < 8 {
            follow_ups.push(Op {
                principal: Principal::Merchant(merchant.parse()?),
                action: "refund",
                body: json!({"id": format!("refund-{i}"), "payment_id": payment_id,
                             "amount": "1.00", "currency": "EUR", "reason": "order not as described"}),
                merchant,
            });
        }
    }
    bar.inc_length(follow_ups.len() as u64);
    let replies = run_ops(&clients, follow_ups, options.concurrency, &bar).await;
    requests += replies.len();
    for (op, reply) in &replies {
        let totals = merchants.entry(op.merchant.to_owned()).or_default();
        let outcome = record(op, reply, totals);
        *outcomes.entry(outcome).or_default() += 1;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    // Which plugin version decided, as each merchant sees it.
    for shop in &SHOPS {
        let client = &clients[&Principal::Merchant(shop.id.parse()?)];
        let reply = client
            .request(
                "plugin/list",
                json!({"id": "demo-list"}).to_string().into_bytes(),
                Vec::new(),
                timeout,
            )
            .await?;
        let active = reply.json["result"]["versions"]
            .as_array()
            .and_then(|versions| versions.iter().find(|v| v["active"] == true))
            .map_or_else(
                || "none".to_owned(),
                |v| {
                    let sha: String = v["sha256"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(12)
                        .collect();
                    format!("{} v{} ({sha})", shop.plugin, v["version"])
                },
            );
        merchants.entry(shop.id.to_owned()).or_default().plugin = active;
        requests += 1;
    }
    if let Ok(clients) = Arc::try_unwrap(clients) {
        for (_, client) in clients {
            client.close().await;
        }
    }
    Ok((elapsed, requests, outcomes, merchants))
}

/// Asks for the daemon's status until it answers: it subscribes only once
/// connected, and a request before that reaches nobody.
async fn wait_for_daemon(
    admin: &Client,
    daemon: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        anyhow::ensure!(!daemon.is_finished(), "the daemon stopped while starting");
        let body = json!({"id": format!("ready-{}", super::random_tag())});
        match admin
            .request(
                "status",
                body.to_string().into_bytes(),
                Vec::new(),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(ClientError::NoListener { .. } | ClientError::Timeout { .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("waiting for the daemon to answer"),
        }
    }
}

/// Accounts, deposits and plugins, one at a time; each must succeed.
async fn setup(clients: &HashMap<Principal, Client>) -> anyhow::Result<usize> {
    let admin = &clients[&Principal::Admin];
    let timeout = Duration::from_secs(20);
    let mut requests = 0;
    let mut expect_ok = |what: String, reply: Result<Reply, ClientError>| {
        requests += 1;
        let reply = reply.with_context(|| what.clone())?;
        anyhow::ensure!(reply.ok(), "{what}: {}", reply.json);
        Ok(())
    };
    for (user, deposit) in USERS {
        let body =
            json!({"id": format!("open-{user}"), "owner": {"user": user}, "currency": "EUR"});
        let reply = admin
            .request(
                "accounts/open",
                body.to_string().into_bytes(),
                Vec::new(),
                timeout,
            )
            .await;
        expect_ok(format!("opening {user}'s account"), reply)?;
        let body = json!({"id": format!("deposit-{user}"), "user": user, "amount": deposit, "currency": "EUR"});
        let reply = admin
            .request(
                "deposit",
                body.to_string().into_bytes(),
                Vec::new(),
                timeout,
            )
            .await;
        expect_ok(format!("depositing for {user}"), reply)?;
    }
    for shop in &SHOPS {
        let body = json!({"id": format!("open-{}", shop.id), "owner": {"merchant": shop.id}, "currency": "EUR"});
        let reply = admin
            .request(
                "accounts/open",
                body.to_string().into_bytes(),
                Vec::new(),
                timeout,
            )
            .await;
        expect_ok(format!("opening {}'s account", shop.id), reply)?;
        // The binary upload: the component as the payload, the id and the
        // configuration as MQTT 5 user properties.
        let mut properties = vec![(
            wasmpay_protocol::UPLOAD_ID_PROPERTY.to_owned(),
            format!("upload-{}", shop.plugin),
        )];
        properties.extend(shop.config.iter().map(|(k, v)| {
            (
                format!("{}{k}", wasmpay_protocol::UPLOAD_CONFIG_PROPERTY_PREFIX),
                (*v).to_owned(),
            )
        }));
        let client = &clients[&Principal::Merchant(shop.id.parse()?)];
        let reply = client
            .request("plugin/upload", shop.wasm.to_vec(), properties, timeout)
            .await;
        expect_ok(format!("uploading {} for {}", shop.plugin, shop.id), reply)?;
    }
    Ok(requests)
}

/// The payments and authorizations, made up from the seed.
fn traffic(options: &Options) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let cents = |rng: &mut fastrand::Rng, from: i64, to: i64| {
        Money::from_minor(rng.i64(from..=to), eur()).amount_string()
    };
    (0..options.payments)
        .map(|i| {
            let (user, _) = USERS[rng.usize(..USERS.len())];
            // Mallory mostly tries the arcade, which blocks her.
            let shop = match (user, rng.u8(..100)) {
                ("mallory", 0..=79) | (_, 75..=99) => &SHOPS[2],
                (_, 0..=44) => &SHOPS[0],
                _ => &SHOPS[1],
            };
            let mut body =
                json!({"id": format!("pay-{i}"), "merchant": shop.id, "currency": "EUR"});
            let mut action = "pay";
            let amount = match shop.id {
                "m-coffee" => {
                    if rng.u8(..100) < 15 {
                        action = "authorize";
                        body["expires_in_s"] = json!(3600);
                    }
                    body["memo"] = json!(
                        ["flat white", "espresso", "cappuccino", "croissant"][rng.usize(..4)]
                    );
                    cents(&mut rng, 200, 900)
                }
                "m-books" => {
                    if rng.u8(..100) < 20 {
                        body["metadata"] = json!({"coupon": "WELCOME10"});
                    }
                    cents(&mut rng, 300, 24_000)
                }
                _ => {
                    if rng.u8(..100) < 10 {
                        cents(&mut rng, 5_500, 9_500)
                    } else {
                        cents(&mut rng, 100, 4_000)
                    }
                }
            };
            body["amount"] = json!(amount);
            Op {
                principal: Principal::User(user.parse().expect("a valid user id")),
                action,
                body,
                merchant: shop.id,
            }
        })
        .collect()
}

/// Sends `ops` with at most `concurrency` in flight; the replies come back
/// in any order.
async fn run_ops(
    clients: &Arc<HashMap<Principal, Client>>,
    ops: Vec<Op>,
    concurrency: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<(Op, Result<Reply, ClientError>)> {
    let approved = std::sync::atomic::AtomicUsize::new(0);
    let not = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(ops)
        .map(|op| {
            let clients = clients.clone();
            async move {
                let client = &clients[&op.principal];
                let reply = client
                    .request(
                        op.action,
                        op.body.to_string().into_bytes(),
                        Vec::new(),
                        Duration::from_secs(20),
                    )
                    .await;
                (op, reply)
            }
        })
        .buffer_unordered(concurrency)
        .inspect(|(_, reply)| {
            let counter = match reply {
                Ok(reply) if reply.ok() => &approved,
                _ => &not,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bar.set_message(format!(
                "{} done, {} declined or refused",
                approved.load(std::sync::atomic::Ordering::Relaxed),
                not.load(std::sync::atomic::Ordering::Relaxed)
            ));
            bar.inc(1);
        })
        .collect()
        .await
}

fn reply_result(reply: &Result<Reply, ClientError>) -> &Value {
    match reply {
        Ok(reply) => &reply.json["result"],
        Err(_) => &Value::Null,
    }
}

/// The outcome's name for the summary, and the merchant's totals updated.
fn record(op: &Op, reply: &Result<Reply, ClientError>, totals: &mut MerchantTotals) -> String {
    let reply = match reply {
        Ok(reply) => reply,
        Err(_) => return "no reply".to_owned(),
    };
    let r = &reply.json["result"];
    if !reply.ok() {
        let error = &reply.json["error"];
        let code = error["code"].as_str().unwrap_or("?");
        if let Some(decline) = error["detail"]["decline"]["code"].as_str() {
            totals.declined += 1;
            return format!("declined {decline}");
        }
        return format!("refused {code}");
    }
    match op.action {
        "pay" | "authorize" => {
            let status = r["status"].as_str().unwrap_or("?").to_owned();
            if status == "approved" {
                totals.approved += 1;
                totals.volume_minor += minor(&r["amount"]);
                totals.rules_minor += minor(&r["payer_total"]) - minor(&r["amount"]);
                totals.platform_fee_minor += minor(&r["settlement"]["platform_fee"]);
            }
            status
        }
        "capture" => {
            totals.approved += 1;
            totals.volume_minor += minor(&r["captured"]);
            totals.platform_fee_minor += minor(&r["settlement"]["platform_fee"]);
            "captured".to_owned()
        }
        "void" => "voided".to_owned(),
        "refund" => {
            totals.refunded_minor += minor(&r["amount"]);
            "refunded".to_owned()
        }
        other => other.to_owned(),
    }
}
