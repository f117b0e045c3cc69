//! Commands that need no daemon: `run` (which is the daemon), `ledger` on a
//! ledger file, and `plugin run` for plugin authors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use wasmpay_domain::{MerchantId, UserId};
use wasmpay_ledger::{Owner, Reader};

use crate::Config;
use crate::embedded_broker::EmbeddedBroker;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (see config/wasmpay.toml). Without one, the daemon
    /// runs its own broker on 127.0.0.1:1883 and keeps the ledger in
    /// ./wasmpay.db.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Db {
    /// The ledger's SQLite file.
    #[arg(long, default_value = "wasmpay.db")]
    db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct Whose {
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
pub enum LedgerCmd {
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

#[derive(Debug, Args)]
pub struct PluginRunArgs {
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
}

pub(crate) fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}`: expected key=value"))
}

pub fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    init_logging(&config.log);
    // With `broker.address = "embedded"` (the default) the daemon runs its
    // own broker and connects to it like to any other.
    let broker = if config.broker.is_embedded() {
        let listen = config
            .broker
            .embedded_listen_addr()
            .map_err(anyhow::Error::msg)?;
        let broker = EmbeddedBroker::start(listen, &config.broker)?;
        config.broker.address = broker.address().to_string();
        Some(broker)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::pipeline::run(config, shutdown_signal()))?;
    // The broker outlives the daemon's last acks and replies.
    drop(broker);
    Ok(ExitCode::SUCCESS)
}

pub fn plugin_run(args: PluginRunArgs) -> anyhow::Result<ExitCode> {
    let PluginRunArgs {
        file,
        input,
        config,
        json,
    } = args;
    let wasm = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let input =
        std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
    let config: BTreeMap<String, String> = config.into_iter().collect();
    // The daemon's limits and engine, with a pool of one slot: one call
    // needs no more, and the daemon's 1,024 would reserve 194 GiB of address
    // space for it.
    let limits = wasmpay_plugin::Limits {
        pooling_slots: 1,
        ..wasmpay_plugin::Limits::default()
    };
    let report = wasmpay_plugin::runner::run(&wasm, &input, config, limits)?;
    print(&report, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn ledger(cmd: LedgerCmd) -> anyhow::Result<ExitCode> {
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

pub(crate) fn init_logging(log: &crate::config::LogConfig) {
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
pub(crate) async fn shutdown_signal() {
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
