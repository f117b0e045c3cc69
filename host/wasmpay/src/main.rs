//! The `wasmpay` binary: the daemon, and tools for operators and plugin
//! authors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use wasmpay::Config;
use wasmpay_domain::{MerchantId, UserId};
use wasmpay_ledger::{Owner, Reader};

#[derive(Debug, Parser)]
#[command(
    name = "wasmpay",
    version,
    about = "Real-time payments over MQTT with merchant rules in sandboxed WebAssembly"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon: connect to the broker and process payment traffic.
    Run {
        /// TOML config file (see config/wasmpay.toml); defaults apply without one.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Inspect and check a ledger file.
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCmd),
}

#[derive(Debug, Args)]
struct Db {
    /// The ledger's SQLite file.
    #[arg(long, default_value = "wasmpay.db")]
    db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct Whose {
    /// A user's accounts.
    #[arg(
        long,
        conflicts_with = "merchant",
        required_unless_present = "merchant"
    )]
    user: Option<UserId>,
    /// A merchant's main account.
    #[arg(long)]
    merchant: Option<MerchantId>,
}

impl Whose {
    fn owner(&self) -> Owner {
        match (&self.user, &self.merchant) {
            (Some(user), _) => Owner::user(user),
            (None, Some(merchant)) => Owner::merchant_main(merchant),
            (None, None) => unreachable!("clap requires one of --user, --merchant"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum LedgerCmd {
    /// Balances of a user or merchant, per currency.
    Balance {
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        whose: Whose,
    },
    /// Postings of a user or merchant, newest first.
    History {
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        whose: Whose,
        /// Entries before this sequence number (the `more:` line of a page).
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check every invariant; exits 1 and names each problem if any fails.
    Verify {
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCmd {
    /// Run a plugin against a JSON payment (or refund) and show its decision,
    /// fuel, time and logs.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// The request as JSON (see host/plugin/examples/payment.json).
        #[arg(long)]
        input: PathBuf,
        /// A configuration value, as the merchant would set at upload.
        #[arg(long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}`: expected key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Run { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            init_logging(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(wasmpay::pipeline::run(config, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ledger(cmd) => ledger(cmd),
        Cmd::Plugin(PluginCmd::Run {
            file,
            input,
            config,
            json,
        }) => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let input = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let config: BTreeMap<String, String> = config.into_iter().collect();
            let report = wasmpay_plugin::runner::run(
                &wasm,
                &input,
                config,
                wasmpay_plugin::Limits::default(),
            )?;
            print(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ledger(cmd: LedgerCmd) -> anyhow::Result<ExitCode> {
    let open = |db: &Db| {
        anyhow::ensure!(db.db.exists(), "{}: no such ledger file", db.db.display());
        Reader::open(&db.db).with_context(|| format!("opening {}", db.db.display()))
    };
    match cmd {
        LedgerCmd::Balance { db, whose } => {
            let balances = open(&db)?.balances(&whose.owner())?;
            print(&balances, db.json)?;
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::History {
            db,
            whose,
            after,
            limit,
        } => {
            let page = open(&db)?.history(&whose.owner(), after, limit)?;
            print(&page, db.json)?;
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::Verify { db } => {
            let report = open(&db)?.verify()?;
            print(&report, db.json)?;
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print<T: std::fmt::Display + serde::Serialize>(value: &T, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{value}");
    }
    Ok(())
}

fn init_logging(log: &wasmpay::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
