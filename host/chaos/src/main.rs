//! `wasmpay-chaos`: proves the daemon under faults, against the real
//! release binary.
//!
//! ```text
//! cargo run --release -p wasmpay-chaos -- crash  [--ops N] [--kills K]
//! cargo run --release -p wasmpay-chaos -- broker [--ops N] [--faults F] [--outage-ms MS]
//! cargo run --release -p wasmpay-chaos -- durability [--synchronous full|normal]
//! ```
//!
//! Each run starts its own Mosquitto (persistence on, a free port) and the
//! `wasmpay` binary (built first with `cargo build --release -p wasmpay`, so
//! the run never tests a stale daemon), drives a load of payments, refunds
//! and deposits while it injects faults, then checks every answer against
//! the ledger and runs `wasmpay ledger verify`. It prints the figures and
//! exits 1 if anything was lost, doubled or disagrees.
//!
//! The short variants of the same runs are tests in
//! `tests/integration/chaos.rs`, which share the [`harness`] modules.

mod durability;
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use harness::daemon::Launcher;
use harness::scenario::{self, LoadShape, Report};

#[derive(Debug, Parser)]
#[command(
    name = "wasmpay-chaos",
    about = "Fault injection for the wasmpay daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// SIGKILL the daemon at random moments under load, and start it again.
    Crash {
        #[command(flatten)]
        common: Common,
        /// How many times to kill the daemon.
        #[arg(long, default_value_t = 200)]
        kills: u64,
    },
    /// Restart, stop (an outage) and crash the broker under load.
    Broker {
        #[command(flatten)]
        common: Common,
        /// How many broker faults, cycling restart, outage, crash.
        #[arg(long, default_value_t = 9)]
        faults: u64,
        /// How long an outage keeps the broker down.
        #[arg(long, default_value_t = 5_000)]
        outage_ms: u64,
    },
    /// Trace the daemon's system calls (strace) and count replies and acks
    /// sent while the ledger's WAL held commits not yet synced to disk.
    Durability {
        /// Requests, sent one at a time.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
        synchronous: String,
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Requests of the load (setup not counted).
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Simulated users, each with one request in flight.
    #[arg(long, default_value_t = 48)]
    users: usize,
    #[arg(long, default_value_t = 4)]
    merchants: usize,
    /// MQTT connections the users share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seed of every random choice; printed, so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// How long a request waits for its reply before it is sent again.
    #[arg(long, default_value_t = 3_000)]
    reply_timeout_ms: u64,
    /// `[ledger] synchronous` for the daemon.
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    synchronous: String,
    /// The daemon binary; by default `cargo build --release -p wasmpay`
    /// builds it and says where it is.
    #[arg(long)]
    daemon_bin: Option<PathBuf>,
    /// Where to keep the run's files (broker state, ledger, logs); a
    /// temporary directory, removed after a passing run, by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let common = match &cli.command {
        Mode::Crash { common, .. } | Mode::Broker { common, .. } => common,
        Mode::Durability {
            requests,
            synchronous,
            daemon_bin,
            dir,
        } => return durability(*requests, synchronous, daemon_bin, dir).await,
    };
    let daemon_bin = daemon_bin(&common.daemon_bin)?;
    let temp = tempfile::Builder::new()
        .prefix("wasmpay-chaos-")
        .tempdir()?;
    let dir = run_dir(&common.dir, &temp)?;
    let shape = LoadShape {
        ops: common.ops,
        users: common.users,
        merchants: common.merchants,
        connections: common.connections,
        seed: common.seed.unwrap_or_else(harness::rng::fresh_seed),
        reply_timeout_ms: common.reply_timeout_ms,
        synchronous: common.synchronous.clone(),
    };
    eprintln!(
        "wasmpay-chaos: daemon {}, seed {}, files in {}",
        daemon_bin.display(),
        shape.seed,
        dir.display()
    );
    let launcher = Launcher::binary(daemon_bin.clone());
    let report = match cli.command {
        Mode::Crash { kills, .. } => scenario::crash(&shape, kills, launcher, &dir).await?,
        Mode::Broker {
            faults, outage_ms, ..
        } => scenario::broker_faults(&shape, faults, outage_ms, launcher, &dir).await?,
        Mode::Durability { .. } => unreachable!("handled above"),
    };
    let verify = cli_verify(&daemon_bin, &dir.join("ledger.db"))?;
    print(&report, &verify);
    let passed = report.is_correct() && verify.0;
    if !passed && common.dir.is_none() {
        // Keep the evidence: broker state, ledger, daemon log.
        let kept = temp.keep();
        eprintln!("run failed; files kept in {}", kept.display());
    }
    Ok(passed)
}

async fn durability(
    requests: usize,
    synchronous: &str,
    daemon_bin_arg: &Option<PathBuf>,
    dir_arg: &Option<PathBuf>,
) -> anyhow::Result<bool> {
    let daemon_bin = daemon_bin(daemon_bin_arg)?;
    let temp = tempfile::Builder::new()
        .prefix("wasmpay-durability-")
        .tempdir()?;
    let dir = run_dir(dir_arg, &temp)?;
    let order = durability::run(&daemon_bin, synchronous, requests, &dir).await?;
    print!("{order}");
    if dir_arg.is_none() {
        let kept = temp.keep();
        println!("files kept in {}", kept.display());
    }
    // `full` must send nothing before its commit is synced; `normal` is
    // expected to, and the run only shows how much.
    Ok(synchronous != "full"
        || (order.commits > 0
            && order.commits_synced_at_once == order.commits
            && order.socket_writes_unsynced == 0))
}

fn daemon_bin(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => build_daemon(),
    }
}

/// The run's directory: the one given (created if needed), else `temp`.
fn run_dir(given: &Option<PathBuf>, temp: &tempfile::TempDir) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok(dir.clone())
        }
        None => Ok(temp.path().to_owned()),
    }
}

fn print(report: &Report, verify: &(bool, String)) {
    print!("{report}");
    println!(
        "wasmpay ledger verify {} ({})",
        if verify.0 { "exit 0" } else { "FAILED" },
        verify.1.trim()
    );
}

/// Runs `wasmpay ledger verify --db <db>`: whether it exited 0, and what it
/// said.
fn cli_verify(daemon_bin: &Path, db: &Path) -> anyhow::Result<(bool, String)> {
    let output = Command::new(daemon_bin)
        .args(["ledger", "verify", "--db"])
        .arg(db)
        .output()
        .context("running wasmpay ledger verify")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// Builds the release daemon and returns the binary cargo reports, so the
/// run never picks up a stale or a debug build by accident.
fn build_daemon() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    eprintln!("wasmpay-chaos: cargo build --release -p wasmpay");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "wasmpay",
            "--bin",
            "wasmpay",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build --release -p wasmpay failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "wasmpay")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no wasmpay executable")
}
