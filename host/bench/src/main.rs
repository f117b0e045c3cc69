//! `wasmpay-bench`: the end-to-end measurement of issue 7.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo run --release -p wasmpay-bench -- \
//!     [--payments N] [--users M] [--merchants K] ...
//! ```
//!
//! Starts its own Mosquitto on a free port (or, with `--broker embedded`,
//! wasmpay's embedded broker in this process), then measures, one after the
//! other on the same broker and client library (stages, `--only` picks):
//!
//! - `ceiling`, `wasmpay`, `native`, `naive`: the echo ceiling, wasmpay (the
//!   real daemon with the `fee` plugin), the same pipeline with the fee rule
//!   in native Rust, and the naive baseline, each at a closed-loop pipelined
//!   load, with the daemon's own group-commit and plugin timings;
//! - `sweep`: wasmpay open-loop from 10% to 120% of its peak (the chart);
//! - `checkpoint`: the echo, the daemon with SQLite's checkpoint inside a
//!   commit and with the ledger's background checkpointer, in turn,
//!   open-loop at the same rates (what the background checkpointer does to
//!   the tail, against the broker's own);
//! - `proposals`: the bench's copy of the daemon's pipeline as is (to check
//!   it), and with the daemon's loop before `cbf28a1` (what batching while
//!   the writer is busy bought);
//! - `scale`: 1 versus 1,000 merchants with their own plugin version (all
//!   of one component with their own configuration, then each of a
//!   component of its own), start and restart to first reply, and resident
//!   memory;
//! - `neighbour`: hostile merchants' plugins beside the good ones, with the
//!   default quarantine and with none (issue 6).
//!
//! Prints Markdown for `BENCHMARKS.md` and writes the chart.
//!
//! `RUST_BACKTRACE` is removed from the bench's environment (it re-executes
//! itself without it): with it set, every error captures a backtrace, which
//! is not what production pays.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use wasmpay_bench::chart::{self, Point};
use wasmpay_bench::load::{Outcome, Pacing};
use wasmpay_bench::neighbour;
use wasmpay_bench::server::Variant;
use wasmpay_bench::timings::Timings;
use wasmpay_bench::{Bench, Code, fmt_ms, ms, seed_plugins, vm_rss_kib, world};
use wasmpay_ledger::page_cache::{self, PageCache};

/// Stages `--only` can pick.
const STAGES: [&str; 9] = [
    "ceiling",
    "wasmpay",
    "sweep",
    "checkpoint",
    "native",
    "naive",
    "proposals",
    "scale",
    "neighbour",
];

#[derive(Debug, Parser)]
#[command(about = "End-to-end throughput and latency of wasmpay through a real broker")]
struct Cli {
    /// Payments per closed-loop run.
    #[arg(long, default_value_t = 10_000)]
    payments: u64,
    /// Simulated users (payers).
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// Merchants, each with the `fee` plugin (its own configuration).
    #[arg(long, default_value_t = 10)]
    merchants: u64,
    /// Broker connections of the load generator.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Closed loop: requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Payments for the naive baseline (it compiles the plugin per payment).
    #[arg(long, default_value_t = 100)]
    naive_payments: u64,
    /// Open-loop sweep of wasmpay, as percentages of its closed-loop peak.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,25,50,75,90,100,110,120"
    )]
    sweep: Vec<u32>,
    /// The closed-loop peak (payments/s) that open-loop rates are a
    /// percentage of, instead of the one measured in this run: for
    /// comparisons across runs at the same rates.
    #[arg(long)]
    peak: Option<f64>,
    /// Seconds of offered load per sweep point.
    #[arg(long, default_value_t = 3.0)]
    sweep_seconds: f64,
    /// Checkpoint stage: offered loads, as percentages of wasmpay's
    /// closed-loop peak, run with each `[ledger] checkpoint` mode in turn.
    #[arg(long, value_delimiter = ',', default_value = "25,50")]
    checkpoint_percents: Vec<u32>,
    /// Checkpoint stage: seconds of offered load per point (long enough for
    /// several checkpoints: one per 10 000 log pages, some 1 000 payments).
    #[arg(long, default_value_t = 6.0)]
    checkpoint_seconds: f64,
    /// Checkpoint stage: rounds, each running both modes, alternating.
    #[arg(long, default_value_t = 1)]
    checkpoint_rounds: u32,
    /// Merchants with their own plugin version for the scale and restart
    /// measurement (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    scale_merchants: u64,
    /// Payments per scale run (default: half of `--payments`).
    #[arg(long)]
    scale_payments: Option<u64>,
    /// Hostile neighbour: the good merchants' open-loop rate (default:
    /// `--neighbour-percent` of their closed-loop peak, measured first).
    #[arg(long)]
    neighbour_rate: Option<f64>,
    /// Hostile neighbour: the good open-loop rate as a percentage of the
    /// closed-loop peak.
    #[arg(long, default_value_t = 50.0)]
    neighbour_percent: f64,
    /// Hostile neighbour: the neighbour's rate as a percentage of the good
    /// open-loop rate.
    #[arg(long, default_value_t = 10.0)]
    neighbour_share: f64,
    /// Hostile neighbour: seconds of each open-loop run.
    #[arg(long, default_value_t = 10.0)]
    neighbour_seconds: f64,
    /// Hostile neighbour: rounds of alone, hostile, polite.
    #[arg(long, default_value_t = 2)]
    neighbour_rounds: u32,
    /// Hostile neighbour: `plugin_failures_quarantine_max` of each daemon
    /// in turn (default: the daemon's default, then 0 = never).
    #[arg(long, value_delimiter = ',')]
    neighbour_quarantine: Vec<u32>,
    /// Hostile neighbour: only these hostile merchants (comma-separated
    /// case names: loop, memory_bomb, recursion, panic, giant_output,
    /// log_spam, negative_fee, fee_above_amount, wrong_currency,
    /// split_to_other_merchant, splits_above_amount; default all).
    #[arg(long, value_delimiter = ',')]
    neighbour_cases: Vec<String>,
    /// Hostile neighbour: the daemon's plugin worker threads (default: its
    /// configuration's default).
    #[arg(long)]
    neighbour_plugin_workers: Option<usize>,
    /// Hostile neighbour: calls of each hostile plugin alone, for its cost.
    #[arg(long, default_value_t = 50)]
    neighbour_cost_calls: u32,
    /// Run only these stages (comma-separated): ceiling, wasmpay, sweep,
    /// checkpoint, native, naive, proposals, scale, neighbour. The sweep and
    /// checkpoint stages need wasmpay's peak, so they run wasmpay too.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where ledger files go (default: a temporary directory on /tmp).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the chart goes (default: `wasmpay-bench/latency-vs-load.svg`
    /// in the system's temporary directory, so that a trial run never
    /// replaces the chart of record; a full run for BENCHMARKS.md passes
    /// `--svg host/bench/results/latency-vs-load.svg`).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Worker threads of the server's tokio runtime (the daemon's default
    /// is one per core).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// SQLite's page cache for the whole run: `remapped` (the ledger's
    /// default: the lock page's key moved out of the way) or `sqlite` (as
    /// SQLite comes, for comparison).
    #[arg(long, value_enum, default_value_t = PageCacheArg::Remapped)]
    page_cache: PageCacheArg,
    /// `plugins.memory_reset` of the daemons (`auto`, the default, `scan`
    /// or `madvise`), for comparison.
    #[arg(long, value_enum, default_value_t = MemoryResetArg::Auto)]
    memory_reset: MemoryResetArg,
    /// `plugins.pooling_slots` of the daemons (default: the daemon's own,
    /// 16): instance slots kept warm, each for the plugin it last ran.
    #[arg(long)]
    pooling_slots: Option<u32>,
    /// `broker.packets_per_write_max` of the daemons and the ceiling
    /// (default: the daemon's own, 1: each packet on its own).
    #[arg(long)]
    packets_per_write: Option<u16>,
    /// The load connections' packets per write.
    #[arg(long, default_value_t = wasmpay::mqtt::GATHER_PACKETS)]
    client_packets_per_write: u16,
    /// The broker every stage runs through: a Mosquitto child process, or
    /// wasmpay's embedded broker (rmqtt) in the bench's own process.
    #[arg(long, value_enum, default_value_t = BrokerArg::Mosquitto)]
    broker: BrokerArg,
}

/// `--broker`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BrokerArg {
    Mosquitto,
    Embedded,
}

/// `--memory-reset`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MemoryResetArg {
    Auto,
    Scan,
    Madvise,
}

impl From<MemoryResetArg> for wasmpay_plugin::MemoryReset {
    fn from(arg: MemoryResetArg) -> Self {
        match arg {
            MemoryResetArg::Auto => Self::Auto,
            MemoryResetArg::Scan => Self::Scan,
            MemoryResetArg::Madvise => Self::Madvise,
        }
    }
}

/// `--page-cache`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PageCacheArg {
    Remapped,
    Sqlite,
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return reexec_without_backtraces();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmpay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this same command again with `RUST_BACKTRACE` removed.
fn reexec_without_backtraces() -> ExitCode {
    eprintln!("wasmpay-bench: RUST_BACKTRACE is set; running again without it");
    let status = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env_remove("RUST_BACKTRACE")
            .status()
    });
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("wasmpay-bench: cannot re-execute: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
struct Report {
    closed: Vec<(Variant, Outcome)>,
    peak: Option<f64>,
    sweep: Vec<Point>,
    /// Open-loop points per `[ledger] checkpoint` mode and round.
    checkpoint: Vec<(&'static str, u32, Point)>,
    /// Closed-loop runs per `[ledger] checkpoint` mode and round.
    checkpoint_closed: Vec<Outcome>,
    scale: Vec<ScaleRun>,
    /// The bench's copy of the daemon's pipeline, as is and with the loop
    /// before `cbf28a1`.
    proposals: Vec<(Variant, Outcome)>,
    /// Hostile merchants beside good ones, per quarantine setting.
    neighbour: Vec<neighbour::Condition>,
    neighbour_options: Option<neighbour::Options>,
    /// Each hostile plugin's cost per call, alone.
    costs: Vec<neighbour::Cost>,
}

/// One closed-loop wasmpay run at a merchant count, with its start.
#[derive(Debug)]
struct ScaleRun {
    merchants: u64,
    code: Code,
    outcome: Outcome,
    start_to_first_reply: Duration,
    rss_before_kib: u64,
    rss_serving_kib: u64,
    restart: Option<(Duration, u64)>,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(peak) = cli.peak {
        anyhow::ensure!(
            peak.is_finite() && peak > 0.0,
            "--peak {peak}: expected payments per second above 0"
        );
    }
    let page_cache = match cli.page_cache {
        PageCacheArg::Remapped => PageCache::LockPageRemapped,
        PageCacheArg::Sqlite => PageCache::Sqlite,
    };
    anyhow::ensure!(
        page_cache::configure(page_cache) == page_cache,
        "--page-cache: SQLite was started before the bench could choose its page cache"
    );
    for stage in &cli.only {
        anyhow::ensure!(
            STAGES.contains(&stage.as_str()),
            "--only {stage}: expected some of {}",
            STAGES.join(", ")
        );
    }
    for name in &cli.neighbour_cases {
        anyhow::ensure!(
            neighbour::CASES.iter().any(|c| c.name == name),
            "--neighbour-cases {name}: expected some of {}",
            neighbour::CASES.map(|c| c.name).join(", ")
        );
    }
    let wanted: BTreeSet<&str> = if cli.only.is_empty() {
        STAGES.into_iter().collect()
    } else {
        cli.only.iter().map(String::as_str).collect()
    };
    let timings = Timings::install();
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.server_threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads)
        .thread_name("load")
        .enable_all()
        .build()?;
    let temp;
    let data_dir = match &cli.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("wasmpay-bench").tempdir()?;
            temp.path().to_owned()
        }
    };
    let broker = wasmpay_tests::TestBroker::start_named(match cli.broker {
        BrokerArg::Mosquitto => "mosquitto",
        BrokerArg::Embedded => "embedded",
    });
    let mut bench = Bench::new(
        broker.address(),
        server_runtime.handle().clone(),
        data_dir,
        cli.clients,
        cli.window,
        !cli.quiet,
    );
    bench.timings = Some(timings.clone());
    bench.memory_reset = cli.memory_reset.into();
    bench.pooling_slots = cli.pooling_slots;
    bench.packets_per_write = cli.packets_per_write;
    bench.client_packets_per_write = cli.client_packets_per_write;
    // What `auto` comes to on this machine, for the report.
    let memory_reset = wasmpay_plugin::Runtime::new(wasmpay_plugin::Limits {
        memory_reset: bench.memory_reset,
        ..wasmpay_plugin::Limits::default()
    })?
    .memory_reset();
    let started = Instant::now();
    let report = client_runtime.block_on(measure(&cli, &wanted, &bench, &timings))?;
    drop(broker);
    print_report(&cli, &report, memory_reset, started.elapsed());
    if !report.sweep.is_empty()
        && let Some(peak) = report.peak
    {
        let title = format!(
            "{}, {} cores, {} payments/s closed-loop peak, {}",
            cpu_model(),
            cores(),
            peak.round(),
            today()
        );
        let svg = cli.svg.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("wasmpay-bench")
                .join("latency-vs-load.svg")
        });
        if let Some(parent) = svg.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&svg, chart::svg(&report.sweep, peak, &title))
            .with_context(|| format!("write {}", svg.display()))?;
        println!("Chart: `{}`", svg.display());
    }
    let incomplete: Vec<&str> = report
        .closed
        .iter()
        .map(|(_, o)| o)
        .chain(report.scale.iter().map(|s| &s.outcome))
        .chain(report.proposals.iter().map(|(_, o)| o))
        .chain(&report.checkpoint_closed)
        .chain(
            report
                .neighbour
                .iter()
                .flat_map(|c| c.open.iter().chain(&c.closed))
                .map(|r| &r.good),
        )
        .filter(|o| !o.complete())
        .map(|o| o.label.as_str())
        .chain(
            report
                .neighbour
                .iter()
                .flat_map(|c| c.open.iter().chain(&c.closed))
                .filter(|r| {
                    r.neighbour
                        .as_ref()
                        .is_some_and(|n| r.as_expected != n.expected)
                })
                .map(|r| r.neighbour.as_ref().map_or("", |n| n.label.as_str())),
        )
        .collect();
    anyhow::ensure!(
        incomplete.is_empty(),
        "runs with missing or failed replies: {incomplete:?}"
    );
    Ok(())
}

async fn measure(
    cli: &Cli,
    wanted: &BTreeSet<&str>,
    bench: &Bench,
    timings: &Arc<Timings>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let (users, merchants) = (cli.users, cli.merchants);

    if wanted.contains("ceiling") {
        let outcome = bench
            .closed_loop(Variant::Ceiling, cli.payments, users, merchants)
            .await?;
        report.closed.push((Variant::Ceiling, outcome));
    }

    let daemon_stages = ["wasmpay", "sweep", "checkpoint"];
    if daemon_stages.iter().any(|s| wanted.contains(s)) {
        let server = bench.ready(Variant::Wasmpay, users, merchants).await?;
        let mut runs = Runs {
            bench,
            timings,
            users,
            merchants,
            peak: 0.0,
        };
        let outcome = runs.closed(Variant::Wasmpay.name(), cli.payments).await?;
        runs.peak = cli.peak.unwrap_or_else(|| outcome.throughput());
        report.peak = Some(runs.peak);
        if wanted.contains("wasmpay") {
            report.closed.push((Variant::Wasmpay, outcome));
        }
        if wanted.contains("sweep") {
            for &percent in &cli.sweep {
                report
                    .sweep
                    .push(runs.open(percent, cli.sweep_seconds, true).await?);
            }
        }
        server.stop().await?;
        if wanted.contains("checkpoint") {
            for round in 0..cli.checkpoint_rounds.max(1) {
                // The echo at the same rates: the broker's and the load
                // generator's own tail on this machine, the floor.
                for mode in ["echo", "commit", "background"] {
                    let server = if mode == "echo" {
                        bench.ready(Variant::Ceiling, users, merchants).await?
                    } else {
                        let mut config =
                            bench.config(&bench.fresh_tag(&format!("checkpoint-{mode}-")))?;
                        config.ledger.checkpoint = mode.to_owned();
                        bench
                            .ready_with(Variant::Wasmpay, config, users, merchants)
                            .await?
                    };
                    for &percent in &cli.checkpoint_percents {
                        let point = runs
                            .open(percent, cli.checkpoint_seconds, mode != "echo")
                            .await?;
                        report.checkpoint.push((mode, round, point));
                    }
                    if mode != "echo" {
                        // And the closed-loop peak: what the copying costs.
                        let label = format!("wasmpay, checkpoint {mode}, round {}", round + 1);
                        report
                            .checkpoint_closed
                            .push(runs.closed(&label, cli.payments).await?);
                    }
                    server.stop().await?;
                }
            }
        }
    }

    if wanted.contains("native") {
        let outcome = bench
            .closed_loop(Variant::Native, cli.payments, users, merchants)
            .await?;
        report.closed.push((Variant::Native, outcome));
    }

    if wanted.contains("naive") {
        // Only the users that pay need accounts: setup is one commit each.
        let naive_users = users.min(cli.naive_payments).max(1);
        let outcome = bench
            .closed_loop(Variant::Naive, cli.naive_payments, naive_users, merchants)
            .await?;
        report.closed.push((Variant::Naive, outcome));
    }

    if wanted.contains("proposals") {
        for variant in [Variant::Copy, Variant::WasmpayEager] {
            let outcome = bench
                .closed_loop(variant, cli.payments, users, merchants)
                .await?;
            report.proposals.push((variant, outcome));
        }
    }

    if wanted.contains("neighbour") {
        let defaults = wasmpay::Config::default();
        let options = neighbour::Options {
            users,
            merchants,
            payments: cli.payments,
            rate_per_s: cli.neighbour_rate,
            percent_of_peak: cli.neighbour_percent,
            share_percent: cli.neighbour_share,
            seconds: cli.neighbour_seconds,
            rounds: cli.neighbour_rounds.max(1),
            neighbour_clients: 2,
            quarantine: if cli.neighbour_quarantine.is_empty() {
                vec![defaults.pipeline.plugin_failures_quarantine_max, 0]
            } else {
                cli.neighbour_quarantine.clone()
            },
            cases: neighbour::CASES
                .into_iter()
                .filter(|c| {
                    cli.neighbour_cases.is_empty()
                        || cli.neighbour_cases.iter().any(|n| n == c.name)
                })
                .collect(),
            plugin_workers: cli.neighbour_plugin_workers,
        };
        report.neighbour = neighbour::measure(bench, &options).await?;
        report.neighbour_options = Some(options);
        let platform_fee = wasmpay_domain::PlatformFee {
            bps: defaults.fees.platform_fee_bps,
        };
        let calls = cli.neighbour_cost_calls.max(1);
        report.costs = tokio::task::spawn_blocking(move || {
            neighbour::call_costs(defaults.plugins, platform_fee, calls)
        })
        .await??;
    }

    if wanted.contains("scale") && cli.scale_merchants > 0 {
        let payments = cli.scale_payments.unwrap_or(cli.payments / 2).max(100);
        // One merchant; then many running one component, each with its own
        // version and configuration; then many with code of their own.
        for (merchants, code) in [
            (1, Code::Shared),
            (cli.scale_merchants, Code::Shared),
            (cli.scale_merchants, Code::Distinct),
        ] {
            report
                .scale
                .push(scale_run(bench, users, merchants, code, payments).await?);
        }
    }
    Ok(report)
}

/// What the wasmpay-based stages share: the bench, the daemon's timings,
/// the world's size and the closed-loop peak that open-loop rates are a
/// percentage of.
struct Runs<'a> {
    bench: &'a Bench,
    timings: &'a Arc<Timings>,
    users: u64,
    merchants: u64,
    peak: f64,
}

impl Runs<'_> {
    /// A closed-loop run of `payments` against the running server, with
    /// the daemon's timings.
    async fn closed(&self, label: &str, payments: u64) -> anyhow::Result<Outcome> {
        let tag = self.bench.fresh_tag("c");
        self.timings.start();
        let mut outcome = self
            .bench
            .drive(
                label,
                world::payments(&tag, self.users, self.merchants),
                payments,
                Pacing::Closed {
                    window: self.bench.window,
                },
                true,
            )
            .await?;
        outcome.timings = Some(self.timings.stop());
        Ok(outcome)
    }

    /// One open-loop point against the running server: `percent` of the
    /// peak for `seconds`, with the daemon's group commits during it. Every
    /// request must be answered (ok, if `expect_ok`).
    async fn open(&self, percent: u32, seconds: f64, expect_ok: bool) -> anyhow::Result<Point> {
        let Runs {
            bench,
            timings,
            users,
            merchants,
            peak,
        } = *self;
        let rate = peak * f64::from(percent) / 100.0;
        let total = ((rate * seconds) as u64).max(100);
        let tag = bench.fresh_tag("s");
        timings.start();
        let outcome = bench
            .drive(
                &format!("wasmpay open {percent}%"),
                world::payments(&tag, users, merchants),
                total,
                Pacing::Open { rate_per_s: rate },
                expect_ok,
            )
            .await?;
        let recorded = timings.stop();
        anyhow::ensure!(
            outcome.complete(),
            "open loop at {percent}%: {} of {total} answered ok; {:?} {:?}",
            outcome.ok,
            outcome.failures,
            outcome.errors
        );
        // Let any backlog drain before the next point.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Point {
            percent,
            offered: rate,
            achieved: outcome.throughput(),
            p50_ms: ms(outcome.at(0.5)),
            p99_ms: ms(outcome.at(0.99)),
            p999_ms: ms(outcome.at(0.999)),
            max_ms: ms(outcome.max()),
            commits: recorded.commit_us.len(),
            commit_p99_ms: recorded.commit_us.value_at_quantile(0.99) as f64 / 1_000.0,
            commit_max_ms: recorded.commit_us.max() as f64 / 1_000.0,
            // All four stages or none (a server without them), so the
            // columns stay aligned.
            stages_ms: if recorded.stages_us.iter().all(|h| h.is_empty()) {
                Vec::new()
            } else {
                recorded
                    .stages_us
                    .iter()
                    .map(|h| {
                        let at = |q| h.value_at_quantile(q) as f64 / 1_000.0;
                        (at(0.5), at(0.99))
                    })
                    .collect()
            },
            tails: recorded.tail_us.len(),
            tail_p50_ms: recorded.tail_us.value_at_quantile(0.5) as f64 / 1_000.0,
            tail_max_ms: recorded.tail_us.max() as f64 / 1_000.0,
            tail_pages_p50: recorded.tail_pages.value_at_quantile(0.5),
            tail_pages_max: recorded.tail_pages.max(),
        })
    }
}

/// wasmpay with `merchants` merchants whose plugins are already in the
/// ledger (precompiled): start to first reply and memory, a closed-loop
/// run, then a restart timed the same way.
async fn scale_run(
    bench: &Bench,
    users: u64,
    merchants: u64,
    code: Code,
    payments: u64,
) -> anyhow::Result<ScaleRun> {
    let tag = bench.fresh_tag(&format!("scale{merchants}-"));
    let config = bench.config(&tag)?;
    seed_plugins(&config.ledger.path, config.plugins, merchants, code)?;
    let rss_before_kib = vm_rss_kib().unwrap_or(0);
    let (server, start_to_first_reply) = bench
        .start(Variant::Wasmpay, config.clone(), merchants)
        .await?;
    let rss_serving_kib = vm_rss_kib().unwrap_or(0);
    bench.setup(users, merchants, false).await?;
    let pay_tag = bench.fresh_tag("k");
    if let Some(timings) = &bench.timings {
        timings.start();
    }
    let mut outcome = bench
        .drive(
            &format!("wasmpay, {merchants} merchants"),
            world::payments(&pay_tag, users, merchants),
            payments,
            Pacing::Closed {
                window: bench.window,
            },
            true,
        )
        .await?;
    outcome.timings = bench.timings.as_ref().map(|t| t.stop());
    server.stop_keeping_session().await?;
    // The same daemon again on the same ledger and session: every active
    // plugin is loaded from its stored artifact before the first reply.
    let (server, restart) = bench.start(Variant::Wasmpay, config, merchants).await?;
    let rss_restarted_kib = vm_rss_kib().unwrap_or(0);
    server.stop().await?;
    Ok(ScaleRun {
        merchants,
        code,
        outcome,
        start_to_first_reply,
        rss_before_kib,
        rss_serving_kib,
        restart: Some((restart, rss_restarted_kib)),
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Where each point's latency accumulates inside the daemon: per stage, the
/// time since the daemon took the message from the broker, beside the
/// load generator's figure (from when the request was due).
fn print_stages(points: &[Point]) {
    if points.iter().all(|p| p.stages_ms.is_empty()) {
        return;
    }
    println!();
    println!(
        "Inside the daemon, from when it took each message from the broker (p50 / p99): prepared = decoded and decided (plugin call included) with its turn come, handed = given to the writer, committed = its batch committed, acked = replies published and the message acked; the load generator's own figure beside them."
    );
    println!();
    println!(
        "| offered | prepared | handed | committed | acked | load generator | tail copies: count, p50 / longest, pages p50 / most |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for p in points {
        let stages: Vec<String> = p
            .stages_ms
            .iter()
            .map(|(p50, p99)| format!("{p50:.2} / {p99:.2} ms"))
            .collect();
        println!(
            "| {}% | {} | {:.2} / {:.2} ms | {}, {:.1} / {:.1} ms, {} / {} |",
            p.percent,
            stages.join(" | "),
            p.p50_ms,
            p.p99_ms,
            p.tails,
            p.tail_p50_ms,
            p.tail_max_ms,
            p.tail_pages_p50,
            p.tail_pages_max
        );
    }
}

/// An open-loop point's cells, from the offered percentage to the longest
/// commit, each followed by ` |`.
fn point_cells(p: &Point) -> String {
    format!(
        "{}% | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        p.percent,
        p.offered,
        p.achieved,
        p.p50_ms,
        p.p99_ms,
        p.p999_ms,
        p.max_ms,
        p.commits,
        p.commit_p99_ms,
        p.commit_max_ms
    )
}

fn outcome_row(name: &str, o: &Outcome) -> String {
    let commits = match &o.timings {
        Some(t) if !t.commit_us.is_empty() => format!(
            "{} x {:.1} ops, {} / {} µs; {} plugin calls, p50 {} µs",
            t.commit_us.len(),
            t.batch_ops.mean(),
            t.commit_us.value_at_quantile(0.5),
            t.commit_us.value_at_quantile(0.99),
            t.plugin_us.len(),
            t.plugin_us.value_at_quantile(0.5)
        ),
        _ => "-".to_owned(),
    };
    format!(
        "| {name} | {} | {} | {:.0} | {} | {} | {} | {} | {commits} |",
        o.sent,
        if o.complete() {
            "all".to_owned()
        } else {
            format!("{} ({} replies)", o.ok, o.replies)
        },
        o.throughput(),
        fmt_ms(o.at(0.5)),
        fmt_ms(o.at(0.99)),
        fmt_ms(o.at(0.999)),
        fmt_ms(o.max())
    )
}

fn print_report(
    cli: &Cli,
    report: &Report,
    memory_reset: wasmpay_plugin::MemoryReset,
    elapsed: Duration,
) {
    println!();
    println!(
        "Run {} on {} ({} cores), load average at the end {}, {:.0} s in all.",
        today(),
        cpu_model(),
        cores(),
        load_average(),
        elapsed.as_secs_f64()
    );
    println!(
        "{} users, {} merchants, {} load connections x {} in flight (closed loop), {} payments per run ({} for naive), SQLite page cache `{:?}` ({} page swaps through the lock page's key), plugin memory reset `{:?}`.",
        cli.users,
        cli.merchants,
        cli.clients,
        cli.window,
        cli.payments,
        cli.naive_payments,
        cli.page_cache,
        page_cache::lock_page_swaps(),
        memory_reset
    );
    println!();
    if !report.closed.is_empty() {
        println!(
            "| variant | payments | ok | payments/s | p50 | p99 | p99.9 | max | commits x mean batch, commit p50 / p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (variant, o) in &report.closed {
            println!("{}", outcome_row(variant.name(), o));
        }
        println!();
    }
    let rate = |v: Variant| {
        report
            .closed
            .iter()
            .find(|(x, _)| *x == v)
            .map(|(_, o)| o.throughput())
    };
    if let Some(w) = rate(Variant::Wasmpay) {
        let ratio = |name: &str, other: Option<f64>, target: f64, as_multiple: bool| {
            if let Some(other) = other.filter(|o| *o > 0.0) {
                let r = w / other;
                let met = if r >= target { "met" } else { "NOT met" };
                if as_multiple {
                    println!("- wasmpay/{name}: {r:.1}x (target >= {target:.0}x: {met})");
                } else {
                    println!(
                        "- wasmpay/{name}: {:.0}% (target >= {:.0}%: {met})",
                        r * 100.0,
                        target * 100.0
                    );
                }
            }
        };
        ratio("ceiling", rate(Variant::Ceiling), 0.5, false);
        ratio("naive", rate(Variant::Naive), 10.0, true);
        ratio("native", rate(Variant::Native), 0.8, false);
        println!();
    }
    if !report.sweep.is_empty() {
        println!(
            "Open-loop sweep of wasmpay (latency from when each request was due; peak {:.0}/s):",
            report.peak.unwrap_or(0.0)
        );
        println!();
        println!(
            "| offered | offered/s | achieved/s | p50 | p99 | p99.9 | max | commits | commit p99 | commit max |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for p in &report.sweep {
            println!("| {}", point_cells(p));
        }
        print_stages(&report.sweep);
        if let Some(half) = report.sweep.iter().find(|p| p.percent == 50) {
            let met = if half.p99_ms <= 10.0 {
                "met"
            } else {
                "NOT met"
            };
            println!();
            println!(
                "p99 at half of the peak ({:.0}/s): {:.2} ms (target <= 10 ms: {met})",
                half.offered, half.p99_ms
            );
        }
        println!();
    }
    if !report.checkpoint.is_empty() {
        println!(
            "Checkpoints: the daemon with each `[ledger] checkpoint` mode, and the echo (ceiling), open loop at the same rates (peak {:.0}/s):",
            report.peak.unwrap_or(0.0)
        );
        println!();
        println!(
            "| server | round | offered | offered/s | achieved/s | p50 | p99 | p99.9 | max | commits | commit p99 | commit max |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (mode, round, p) in &report.checkpoint {
            println!("| {mode} | {} | {}", round + 1, point_cells(p));
        }
        println!();
        for &percent in &cli.checkpoint_percents {
            let p99s = |mode: &str| -> Vec<f64> {
                report
                    .checkpoint
                    .iter()
                    .filter(|(m, _, p)| *m == mode && p.percent == percent)
                    .map(|(_, _, p)| p.p99_ms)
                    .collect()
            };
            let (commit, background) = (p99s("commit"), p99s("background"));
            let ratios: Vec<String> = commit
                .iter()
                .zip(&background)
                .map(|(c, b)| format!("{:.2}", b / c))
                .collect();
            println!(
                "- p99 at {percent}%, background / commit: {} (per round)",
                ratios.join(", ")
            );
        }
        println!();
        println!(
            "| variant | payments | ok | payments/s | p50 | p99 | p99.9 | max | commits x mean batch, commit p50 / p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for o in &report.checkpoint_closed {
            println!("{}", outcome_row(&o.label, o));
        }
        println!();
    }
    if !report.proposals.is_empty() {
        println!(
            "The bench's copy of the daemon's pipeline, as is and with the loop before cbf28a1 (same run conditions):"
        );
        println!();
        println!(
            "| variant | payments | ok | payments/s | p50 | p99 | p99.9 | max | commits x mean batch, commit p50 / p99 |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (variant, o) in &report.proposals {
            println!("{}", outcome_row(variant.name(), o));
        }
        println!();
    }
    if !report.scale.is_empty() {
        println!(
            "| merchants (own plugin version each) | code | payments/s | p50 | p99 | start to first reply | restart to first reply | VmRSS before start | serving | after restart |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for s in &report.scale {
            let (restart, rss_restart) = s.restart.unwrap_or_default();
            println!(
                "| {} | {} | {:.0}{} | {} | {} | {} | {} | {} MiB | {} MiB | {} MiB |",
                s.merchants,
                match (s.merchants, s.code) {
                    (1, _) => "its own",
                    (_, Code::Shared) => "one component, own configuration",
                    (_, Code::Distinct) => "a component each",
                },
                s.outcome.throughput(),
                if s.outcome.complete() {
                    ""
                } else {
                    " (incomplete)"
                },
                fmt_ms(s.outcome.at(0.5)),
                fmt_ms(s.outcome.at(0.99)),
                fmt_ms(s.start_to_first_reply),
                fmt_ms(restart),
                s.rss_before_kib / 1024,
                s.rss_serving_kib / 1024,
                rss_restart / 1024
            );
        }
        println!();
    }
    if let Some(options) = &report.neighbour_options {
        print!(
            "{}",
            neighbour::markdown(options, &report.neighbour, &report.costs)
        );
        println!();
    }
}
