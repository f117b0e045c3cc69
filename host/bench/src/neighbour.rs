//! The hostile neighbour of issue 6, as benchmark figures: what merchants
//! whose plugins misbehave cost a well-behaved merchant on the same daemon.
//!
//! Every hostile fixture of `plugins/hostile/` that gets as far as deciding
//! payments (`wrong_world` and `wasi_fs` are refused at upload) is one
//! merchant, `h-<case>`; the absurd quotes are five merchants, one rule
//! broken each. They are paid round-robin, at a fixed rate, on connections
//! of their own, while the good merchants `m0..` (the `fee` plugin) are paid
//! as in the rest of the bench. All cases run at once rather than one after
//! the other: a daemon has many tenants, and one run per condition leaves
//! time to repeat it; the per-case cost of a call, measured alone, says
//! which case weighs what.
//!
//! On one daemon, runs alternate so that drift and noise fall on all arms
//! alike: the good load **alone**, then beside the **hostile** merchants,
//! then beside a **polite** neighbour (the same rate of extra payments to
//! the good merchants: what any neighbour costs, plugin failures or not),
//! and again. Each hostile run starts with fresh uploads of the hostile
//! plugins, so that a quarantine from the run before does not carry over.
//!
//! The whole stage runs once with the daemon's default quarantine (after
//! `plugin_failures_quarantine_max` consecutive failures, payments are
//! declined with `plugin_quarantined` without running the plugin) and once
//! with quarantine off, where every hostile payment runs its plugin to the
//! limit that stops it: the real test of isolation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use wasmpay_domain::{
    Currency, Decision, MerchantId, Money, PaymentId, PlatformFee, QuoteLimits, RequestId, UserId,
};
use wasmpay_plugin::{Called, NoActivity, PaymentInput, PluginError, PluginMeta, Runtime};
use wasmpay_plugin_artifacts as artifacts;

use crate::load::{self, Outcome, Pacing, Plan};
use crate::server::Variant;
use crate::{Bench, fmt_ms, world};

/// One hostile merchant: a fixture, the mode its payments ask for, and what
/// the host must answer (the fixture's README).
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The merchant is `h-<name>`.
    pub name: &'static str,
    /// The folder under `plugins/hostile/`.
    pub fixture: &'static str,
    pub wasm: &'static [u8],
    /// `metadata["mode"]` of every payment, for fixtures that read one.
    pub mode: Option<&'static str>,
    /// The decline code every payment must get, or `approved`: logging too
    /// much is not a failure.
    pub expected: &'static str,
}

/// What a payment gets once its merchant is quarantined.
pub const QUARANTINED: &str = "plugin_quarantined";
/// What a hostile payment asks for: `absurd_quote` needs at least 10.00 so
/// that only the rule its mode names is broken.
pub const AMOUNT: &str = "12.00";

/// The hostile merchants, in the order their payments go round.
pub const CASES: [Case; 11] = [
    Case {
        name: "loop",
        fixture: "loop",
        wasm: artifacts::HOSTILE_LOOP,
        mode: None,
        expected: "plugin_out_of_fuel",
    },
    Case {
        name: "memory_bomb",
        fixture: "memory_bomb",
        wasm: artifacts::HOSTILE_MEMORY_BOMB,
        mode: None,
        expected: "plugin_memory_limit",
    },
    Case {
        name: "recursion",
        fixture: "recursion",
        wasm: artifacts::HOSTILE_RECURSION,
        mode: None,
        expected: "plugin_stack_overflow",
    },
    Case {
        name: "panic",
        fixture: "panic",
        wasm: artifacts::HOSTILE_PANIC,
        mode: None,
        expected: "plugin_trap",
    },
    Case {
        name: "giant_output",
        fixture: "giant_output",
        wasm: artifacts::HOSTILE_GIANT_OUTPUT,
        mode: Some("lines"),
        expected: "plugin_output_too_large",
    },
    Case {
        name: "log_spam",
        fixture: "log_spam",
        wasm: artifacts::HOSTILE_LOG_SPAM,
        mode: None,
        expected: "approved",
    },
    Case {
        name: "negative_fee",
        fixture: "absurd_quote",
        wasm: artifacts::HOSTILE_ABSURD_QUOTE,
        mode: Some("negative_fee"),
        expected: "quote_invalid",
    },
    Case {
        name: "fee_above_amount",
        fixture: "absurd_quote",
        wasm: artifacts::HOSTILE_ABSURD_QUOTE,
        mode: Some("fee_above_amount"),
        expected: "quote_invalid",
    },
    Case {
        name: "wrong_currency",
        fixture: "absurd_quote",
        wasm: artifacts::HOSTILE_ABSURD_QUOTE,
        mode: Some("wrong_currency"),
        expected: "quote_invalid",
    },
    Case {
        name: "split_to_other_merchant",
        fixture: "absurd_quote",
        wasm: artifacts::HOSTILE_ABSURD_QUOTE,
        mode: Some("split_to_other_merchant"),
        expected: "plugin_malformed_output",
    },
    Case {
        name: "splits_above_amount",
        fixture: "absurd_quote",
        wasm: artifacts::HOSTILE_ABSURD_QUOTE,
        mode: Some("splits_above_amount"),
        expected: "quote_invalid",
    },
];

/// The merchant whose plugin is `case`'s fixture.
pub fn merchant(case: &Case) -> String {
    format!("h-{}", case.name)
}

/// How the stage runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub users: u64,
    /// Good merchants `m0..`, each with the `fee` plugin.
    pub merchants: u64,
    /// Good payments per closed-loop run.
    pub payments: u64,
    /// The good merchants' offered rate in the open-loop runs; by default
    /// `percent_of_peak` of the closed-loop peak measured first.
    pub rate_per_s: Option<f64>,
    pub percent_of_peak: f64,
    /// The neighbour's rate, as a percentage of the good open-loop rate.
    pub share_percent: f64,
    /// Seconds of each open-loop run.
    pub seconds: f64,
    /// Alternations of alone, hostile and polite.
    pub rounds: u32,
    /// The neighbour's broker connections.
    pub neighbour_clients: usize,
    /// `plugin_failures_quarantine_max` of each daemon, in turn.
    pub quarantine: Vec<u32>,
    /// The hostile merchants (by default all of [`CASES`]).
    pub cases: Vec<Case>,
    /// `pipeline.plugin_workers` of each daemon, if not the default: tells
    /// whether a neighbour is held up by the worker count or by the CPU.
    pub plugin_workers: Option<usize>,
}

/// What runs beside the good load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Alone,
    Hostile,
    /// Extra payments to the good merchants at the hostile rate.
    Polite,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::Hostile => "hostile",
            Self::Polite => "polite",
        }
    }
}

/// One measured run: the good merchants' outcome and the neighbour's.
#[derive(Debug)]
pub struct Run {
    pub round: u32,
    pub arm: Arm,
    pub good: Outcome,
    pub neighbour: Option<Outcome>,
    /// The neighbour's replies that were what they must be.
    pub as_expected: u64,
}

/// The replies of one case, over every hostile run of a daemon.
#[derive(Debug)]
pub struct CaseCount {
    pub case: Case,
    pub replies: u64,
    pub expected: u64,
    pub quarantined: u64,
    /// Any other answer, by code.
    pub other: BTreeMap<String, u64>,
    /// Of the replies with the expected answer.
    pub latency_us: Histogram<u64>,
}

/// One daemon's runs.
#[derive(Debug)]
pub struct Condition {
    pub quarantine_max: u32,
    pub plugin_workers: usize,
    /// The first closed-loop run, good merchants alone (also a warm-up).
    pub peak: f64,
    pub rate: f64,
    pub neighbour_rate: f64,
    pub open: Vec<Run>,
    pub closed: Vec<Run>,
    pub counts: Vec<CaseCount>,
}

/// Runs the stage once per quarantine setting.
pub async fn measure(bench: &Bench, options: &Options) -> anyhow::Result<Vec<Condition>> {
    let mut conditions = Vec::with_capacity(options.quarantine.len());
    for &quarantine_max in &options.quarantine {
        conditions.push(condition(bench, options, quarantine_max).await?);
    }
    Ok(conditions)
}

async fn condition(
    bench: &Bench,
    options: &Options,
    quarantine_max: u32,
) -> anyhow::Result<Condition> {
    let tag = bench.fresh_tag("neighbour");
    let mut config = bench.config(&tag)?;
    config.pipeline.plugin_failures_quarantine_max = quarantine_max;
    if let Some(workers) = options.plugin_workers {
        config.pipeline.plugin_workers = workers;
    }
    let plugin_workers = config.pipeline.plugin_workers;
    let server = bench
        .ready_with(Variant::Wasmpay, config, options.users, options.merchants)
        .await?;
    bench
        .open_merchants(options.cases.iter().map(merchant).collect())
        .await?;

    let warm = good_closed(bench, options).await?;
    let peak = warm.throughput();
    let rate = options
        .rate_per_s
        .unwrap_or(peak * options.percent_of_peak / 100.0);
    let neighbour_rate = rate * options.share_percent / 100.0;
    let mut counts: Vec<CaseCount> = options
        .cases
        .iter()
        .map(|&case| CaseCount {
            case,
            replies: 0,
            expected: 0,
            quarantined: 0,
            other: BTreeMap::new(),
            latency_us: histogram(),
        })
        .collect();

    let mut open = Vec::new();
    for round in 1..=options.rounds + 1 {
        for &arm in arms(round, options.rounds) {
            let total = ((rate * options.seconds) as u64).max(100);
            let label = format!("good, {} {round}", arm.name());
            let generator =
                world::payments(&bench.fresh_tag("ng"), options.users, options.merchants);
            let good = async move {
                bench
                    .drive(
                        &label,
                        generator,
                        total,
                        Pacing::Open { rate_per_s: rate },
                        true,
                    )
                    .await
            };
            let neighbour_total = ((neighbour_rate * options.seconds) as u64).max(1);
            open.push(
                run(
                    bench,
                    options,
                    (round, arm),
                    (neighbour_rate, neighbour_total),
                    good,
                    &mut counts,
                )
                .await?,
            );
        }
    }
    let mut closed = Vec::new();
    for round in 1..=options.rounds + 1 {
        for &arm in arms(round, options.rounds) {
            // The neighbour's stream outlasts the good run it accompanies.
            let seconds = options.payments as f64 / peak.max(1.0) * 1.5;
            let neighbour_total = ((neighbour_rate * seconds) as u64).max(1);
            closed.push(
                run(
                    bench,
                    options,
                    (round, arm),
                    (neighbour_rate, neighbour_total),
                    good_closed(bench, options),
                    &mut counts,
                )
                .await?,
            );
        }
    }
    server.stop().await?;
    Ok(Condition {
        quarantine_max,
        plugin_workers,
        peak,
        rate,
        neighbour_rate,
        open,
        closed,
        counts,
    })
}

/// The arms of round `round` of `rounds`: alone, hostile, polite, and a
/// last round of alone only, so that every neighbour's run lies between two
/// alone runs. The ledger grows with every run and the daemon slows a
/// little with it; the mean of the runs before and after cancels that
/// drift, which would otherwise count against the later arms.
fn arms(round: u32, rounds: u32) -> &'static [Arm] {
    if round <= rounds {
        &[Arm::Alone, Arm::Hostile, Arm::Polite]
    } else {
        &[Arm::Alone]
    }
}

/// The good merchants' payments, closed loop.
async fn good_closed(bench: &Bench, options: &Options) -> anyhow::Result<Outcome> {
    let tag = bench.fresh_tag("nc");
    bench
        .drive(
            "good, closed loop",
            world::payments(&tag, options.users, options.merchants),
            options.payments,
            Pacing::Closed {
                window: bench.window,
            },
            true,
        )
        .await
}

/// Round `round`'s run of `arm`: the good load `good` (not started yet:
/// futures are lazy), and beside it, started at the same moment,
/// `neighbour_total` payments of the neighbour at `neighbour_rate`.
/// Hostile replies are counted into `counts`.
async fn run(
    bench: &Bench,
    options: &Options,
    (round, arm): (u32, Arm),
    (neighbour_rate, neighbour_total): (f64, u64),
    good: impl std::future::Future<Output = anyhow::Result<Outcome>>,
    counts: &mut [CaseCount],
) -> anyhow::Result<Run> {
    if arm == Arm::Hostile {
        // Fresh versions: a quarantine of the last run's does not carry
        // over, so every hostile run meets the plugins before quarantine.
        let upload = bench.fresh_tag("hostile");
        bench
            .upload_plugins(hostile_uploads(&options.cases, &upload))
            .await?;
    }
    let tag = bench.fresh_tag("nn");
    let neighbour = match arm {
        Arm::Alone => None,
        Arm::Hostile => Some(world::payments_to(
            &tag,
            options.users,
            AMOUNT,
            options
                .cases
                .iter()
                .map(|case| (merchant(case), case.mode.map(str::to_owned)))
                .collect(),
        )),
        Arm::Polite => Some(world::payments_to(
            &tag,
            options.users,
            AMOUNT,
            (0..options.merchants)
                .map(|j| (world::merchant(j), None))
                .collect(),
        )),
    };
    if let Some(timings) = &bench.timings {
        timings.start();
    }
    let (good, neighbour) = match neighbour {
        None => (good.await, None),
        Some(generator) => {
            let plan = Plan {
                label: format!("neighbour {} {round}", arm.name()),
                total: neighbour_total,
                clients: options.neighbour_clients,
                pacing: Pacing::Open {
                    rate_per_s: neighbour_rate,
                },
                expect_ok: arm == Arm::Polite,
                keep_replies: arm == Arm::Hostile,
                progress: false,
                packets_per_write: bench.client_packets_per_write,
            };
            let (good, neighbour) = tokio::join!(good, load::run(&bench.address, &plan, generator));
            (good, Some(neighbour?))
        }
    };
    let mut good = good?;
    good.timings = bench.timings.as_ref().map(|t| t.stop());
    let as_expected = match (&neighbour, arm) {
        (Some(outcome), Arm::Hostile) => count(outcome, counts)?,
        (Some(outcome), _) => outcome.ok,
        (None, _) => 0,
    };
    // Let any backlog drain before the next run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Run {
        round,
        arm,
        good,
        neighbour,
        as_expected,
    })
}

/// Every hostile merchant of `cases` uploads its fixture, configured with
/// `upload` (which no fixture reads): the daemon answers an upload of the
/// active component with the active configuration with the active version,
/// so the configuration must differ for the upload to be a new version.
fn hostile_uploads(cases: &[Case], upload: &str) -> Vec<world::PluginUpload> {
    cases
        .iter()
        .map(|case| world::PluginUpload {
            merchant: merchant(case),
            wasm: case.wasm,
            config: BTreeMap::from([("bench_upload".to_owned(), upload.to_owned())]),
        })
        .collect()
}

/// What a payment reply says: `approved`, or the decline's own code, or
/// the error's code for any other refusal.
pub fn reply_code(payload: &[u8]) -> String {
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return "unreadable".to_owned();
    };
    if reply["ok"] == true {
        return "approved".to_owned();
    }
    let error = &reply["error"];
    error["detail"]["decline"]["code"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .unwrap_or("no code")
        .to_owned()
}

/// Counts a hostile run's replies into `counts`; returns how many were as
/// expected (quarantined ones included: that is the expected answer once
/// a plugin keeps failing).
fn count(outcome: &Outcome, counts: &mut [CaseCount]) -> anyhow::Result<u64> {
    let mut as_expected = 0;
    for kept in &outcome.kept {
        let slot = &mut counts[(kept.k % counts.len() as u64) as usize];
        let code = reply_code(&kept.payload);
        slot.replies += 1;
        if code == slot.case.expected {
            slot.expected += 1;
            as_expected += 1;
            slot.latency_us
                .record(
                    u64::try_from(kept.latency.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                )
                .context("record a hostile latency")?;
        } else if code == QUARANTINED {
            slot.quarantined += 1;
            as_expected += 1;
        } else {
            *slot.other.entry(code).or_default() += 1;
        }
    }
    Ok(as_expected)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One case's plugin called alone, in this process, on one thread: what
/// each hostile payment costs a plugin worker before any queueing.
#[derive(Debug)]
pub struct Cost {
    pub case: Case,
    /// What the host would answer.
    pub code: String,
    pub calls: u32,
    pub p50: Duration,
    pub p99: Duration,
}

/// Calls every case's plugin `calls` times with the daemon's limits and
/// the host's quote check, as `handlers::decide_payment` does.
pub fn call_costs(
    limits: wasmpay_plugin::Limits,
    platform_fee: PlatformFee,
    calls: u32,
) -> anyhow::Result<Vec<Cost>> {
    let runtime = Runtime::new(limits)?;
    let eur = Currency::parse("EUR")?;
    let amount = Money::parse(AMOUNT, eur)?;
    let payer = UserId::new("u0")?;
    let mut costs = Vec::with_capacity(CASES.len());
    for case in CASES {
        let compiled = runtime
            .compile(case.wasm)
            .with_context(|| format!("compile {}", case.fixture))?;
        let merchant = MerchantId::new(merchant(&case))?;
        let plugin = runtime.load(
            &compiled.artifact,
            PluginMeta {
                merchant: merchant.clone(),
                version: 1,
                sha256: compiled.sha256.clone(),
                config: BTreeMap::new(),
            },
        )?;
        let mut elapsed_us = histogram();
        let mut code = String::new();
        for call in 0..calls {
            let input = PaymentInput {
                payment_id: PaymentId::derive(&payer, &RequestId::new(format!("cost-{call}"))?),
                merchant: merchant.clone(),
                payer: payer.clone(),
                amount,
                memo: None,
                metadata: case
                    .mode
                    .map(|mode| BTreeMap::from([("mode".to_owned(), mode.to_owned())]))
                    .unwrap_or_default(),
                received_at_ms: 0,
                is_authorization: false,
            };
            let started = Instant::now();
            let called = runtime.decide_payment(&plugin, Arc::new(NoActivity), &input);
            code = decided_code(called, amount, platform_fee);
            elapsed_us.saturating_record(
                u64::try_from(started.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        }
        costs.push(Cost {
            case,
            code,
            calls,
            p50: Duration::from_micros(elapsed_us.value_at_quantile(0.5)),
            p99: Duration::from_micros(elapsed_us.value_at_quantile(0.99)),
        });
    }
    Ok(costs)
}

/// The code the host answers a call's result with.
fn decided_code(
    called: Result<Called<Decision>, PluginError>,
    amount: Money,
    platform_fee: PlatformFee,
) -> String {
    match called {
        Err(error) => error.code().to_owned(),
        Ok(called) => match called.value {
            Decision::Decline { decline } => decline.code.as_str().to_owned(),
            Decision::Approve { quote } => {
                match quote.settle(amount, platform_fee, QuoteLimits::default()) {
                    Ok(_) => "approved".to_owned(),
                    Err(_) => "quote_invalid".to_owned(),
                }
            }
        },
    }
}

fn run_row(run: &Run) -> String {
    let good = &run.good;
    let neighbour = match &run.neighbour {
        Some(n) => format!(
            "{:.0}/s, {} of {} as expected",
            n.sent as f64 / n.elapsed.as_secs_f64().max(1e-9),
            run.as_expected,
            n.sent
        ),
        None => "-".to_owned(),
    };
    let daemon = match &good.timings {
        Some(t) if !t.commit_us.is_empty() => format!(
            "{} x {:.1}; {} µs",
            t.commit_us.len(),
            t.batch_ops.mean(),
            t.plugin_us.value_at_quantile(0.5)
        ),
        _ => "-".to_owned(),
    };
    format!(
        "| {} {} | {:.0} | {} | {} | {} | {} | {} | {neighbour} | {daemon} |",
        run.arm.name(),
        run.round,
        good.throughput(),
        if good.complete() {
            "all".to_owned()
        } else {
            format!("{} of {}", good.ok, good.expected)
        },
        fmt_ms(good.at(0.5)),
        fmt_ms(good.at(0.99)),
        fmt_ms(good.at(0.999)),
        fmt_ms(good.max()),
    )
}

/// The good merchants' throughput and p99 in `run` over the mean of those
/// in `bases`.
fn ratios(run: &Run, bases: &[&Run]) -> (f64, f64) {
    let p99 = |o: &Outcome| o.at(0.99).as_secs_f64();
    let n = bases.len().max(1) as f64;
    let throughput = bases.iter().map(|b| b.good.throughput()).sum::<f64>() / n;
    let latency = bases.iter().map(|b| p99(&b.good)).sum::<f64>() / n;
    (
        run.good.throughput() / throughput.max(1e-9),
        p99(&run.good) / latency.max(1e-9),
    )
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Per round, each neighbour's run against the alone runs before and after
/// it (and hostile against polite: the hostility's own price), the median
/// over rounds, and the verdict against issue 6's 10%.
fn ratio_table(out: &mut String, runs: &[Run]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "Each neighbour's run over the mean of the alone runs before and after it; hostile over the polite run after it:"
    );
    let _ = writeln!(out);
    let find = |arm: Arm, round: u32| runs.iter().find(|r| r.arm == arm && r.round == round);
    let polite = runs.iter().any(|r| r.arm == Arm::Polite);
    let rounds: Vec<u32> = runs
        .iter()
        .filter(|r| r.arm == Arm::Hostile)
        .map(|r| r.round)
        .collect();
    let mut columns: [Vec<f64>; 6] = Default::default();
    let _ = writeln!(
        out,
        "| round | hostile / alone: payments/s | p99 |{}",
        if polite {
            " polite / alone: payments/s | p99 | hostile / polite: payments/s | p99 |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- |{}",
        if polite {
            " --- | --- | --- | --- |"
        } else {
            ""
        }
    );
    for &round in &rounds {
        let alone: Vec<&Run> = [round, round + 1]
            .into_iter()
            .filter_map(|r| find(Arm::Alone, r))
            .collect();
        let mut cells = Vec::new();
        if let Some(hostile) = find(Arm::Hostile, round) {
            let (t, p) = ratios(hostile, &alone);
            columns[0].push(t);
            columns[1].push(p);
            cells.extend([format!("{t:.2}"), format!("{p:.2}")]);
        }
        if polite && let Some(polite) = find(Arm::Polite, round) {
            let (t, p) = ratios(polite, &alone);
            columns[2].push(t);
            columns[3].push(p);
            cells.extend([format!("{t:.2}"), format!("{p:.2}")]);
            if let Some(hostile) = find(Arm::Hostile, round) {
                let (t, p) = ratios(hostile, &[polite]);
                columns[4].push(t);
                columns[5].push(p);
                cells.extend([format!("{t:.2}"), format!("{p:.2}")]);
            }
        }
        let _ = writeln!(out, "| {round} | {} |", cells.join(" | "));
    }
    let medians: Vec<String> = columns[..if polite { 6 } else { 2 }]
        .iter()
        .map(|c| median(c.clone()).map_or("-".to_owned(), |m| format!("**{m:.2}**")))
        .collect();
    let _ = writeln!(out, "| median | {} |", medians.join(" | "));
    let _ = writeln!(out);
    if let (Some(t), Some(p)) = (median(columns[0].clone()), median(columns[1].clone())) {
        let within = (t - 1.0).abs() <= 0.10 && p <= 1.10;
        let _ = writeln!(
            out,
            "Good merchants beside the hostile ones, median over {} rounds: payments/s {t:.2}, p99 {p:.2} of alone: {}.",
            rounds.len(),
            if within {
                "within 10%"
            } else {
                "NOT within 10%"
            }
        );
    }
    let noise: Vec<String> = rounds
        .iter()
        .filter_map(|&round| {
            let after = find(Arm::Alone, round + 1)?;
            let (t, p) = ratios(after, &[find(Arm::Alone, round)?]);
            Some(format!(
                "alone {} / alone {round}: payments/s {t:.2}, p99 {p:.2}",
                round + 1
            ))
        })
        .collect();
    if !noise.is_empty() {
        let _ = writeln!(
            out,
            "Drift and noise between the alone runs: {}.",
            noise.join("; ")
        );
    }
}

/// The stage's tables, in Markdown.
pub fn markdown(options: &Options, conditions: &[Condition], costs: &[Cost]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let head = "| run | good payments/s | ok | p50 | p99 | p99.9 | max | neighbour: sent/s, replies as expected | commits x mean ops; plugin p50 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |";
    for c in conditions {
        let title = if c.quarantine_max == 0 {
            "quarantine off (`plugin_failures_quarantine_max = 0`)".to_owned()
        } else {
            format!("quarantine after {} consecutive failures", c.quarantine_max)
        };
        let _ = writeln!(
            out,
            "Hostile neighbour, {title}, {} plugin workers: good closed-loop peak {:.0}/s; open loop at {:.0}/s for {} s; neighbour at {:.0}/s ({}% of the good rate), {} connections.",
            c.plugin_workers,
            c.peak,
            c.rate,
            options.seconds,
            c.neighbour_rate,
            options.share_percent,
            options.neighbour_clients
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Open loop (latency from when each payment was due):");
        let _ = writeln!(out);
        let _ = writeln!(out, "{head}");
        for run in &c.open {
            let _ = writeln!(out, "{}", run_row(run));
        }
        let _ = writeln!(out);
        ratio_table(&mut out, &c.open);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Closed loop ({} good payments as fast as they go; the neighbour at the same {:.0}/s):",
            options.payments, c.neighbour_rate
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "{head}");
        for run in &c.closed {
            let _ = writeln!(out, "{}", run_row(run));
        }
        let _ = writeln!(out);
        ratio_table(&mut out, &c.closed);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| hostile merchant | fixture, mode | expected | replies | as expected | `plugin_quarantined` | other | expected reply p50 / p99 |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for n in &c.counts {
            let other = if n.other.is_empty() {
                "0".to_owned()
            } else {
                n.other
                    .iter()
                    .map(|(code, count)| format!("{count} `{code}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let latency = if n.latency_us.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{} / {}",
                    fmt_ms(Duration::from_micros(n.latency_us.value_at_quantile(0.5))),
                    fmt_ms(Duration::from_micros(n.latency_us.value_at_quantile(0.99)))
                )
            };
            let _ = writeln!(
                out,
                "| {} | {}{} | `{}` | {} | {} | {} | {other} | {latency} |",
                merchant(&n.case),
                n.case.fixture,
                n.case.mode.map(|m| format!(", {m}")).unwrap_or_default(),
                n.case.expected,
                n.replies,
                n.expected,
                n.quarantined
            );
        }
        let _ = writeln!(out);
    }
    if !costs.is_empty() {
        let _ = writeln!(
            out,
            "Each hostile plugin called alone (one thread, the daemon's limits, {} calls each):",
            costs[0].calls
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "| hostile merchant | answer | p50 | p99 |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        for cost in costs {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                merchant(&cost.case),
                cost.code,
                fmt_ms(cost.p50),
                fmt_ms(cost.p99)
            );
        }
        // The mean over the merchants the neighbour pays round-robin.
        let paid: Vec<f64> = costs
            .iter()
            .filter(|c| options.cases.iter().any(|o| o.name == c.case.name))
            .map(|c| c.p50.as_secs_f64())
            .collect();
        let per_payment = paid.iter().sum::<f64>() / paid.len().max(1) as f64;
        let _ = writeln!(out);
        let off = conditions.iter().find(|c| c.quarantine_max == 0);
        if let Some(c) = off.or(conditions.first()) {
            let _ = writeln!(
                out,
                "Without quarantine, the neighbour's {:.0} payments/s cost the plugin workers about {:.0} ms of CPU a second ({:.2} ms per hostile payment at p50).",
                c.neighbour_rate,
                c.neighbour_rate * per_payment * 1e3,
                per_payment * 1e3
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_are_read_from_the_decline() {
        assert_eq!(
            reply_code(br#"{"id":"a","ok":true,"result":{}}"#),
            "approved"
        );
        assert_eq!(
            reply_code(
                br#"{"id":"a","ok":false,"error":{"code":"payment_declined","detail":{"decline":{"code":"plugin_trap"}}}}"#
            ),
            "plugin_trap"
        );
        assert_eq!(
            reply_code(br#"{"id":"a","ok":false,"error":{"code":"insufficient_funds"}}"#),
            "insufficient_funds"
        );
    }

    #[test]
    fn every_hostile_case_is_answered_as_its_readme_says() {
        let costs = call_costs(wasmpay_plugin::Limits::default(), PlatformFee::default(), 1)
            .expect("every case compiles and loads");
        for cost in costs {
            assert_eq!(cost.code, cost.case.expected, "{}", cost.case.name);
        }
    }
}
