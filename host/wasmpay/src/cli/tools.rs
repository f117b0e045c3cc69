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

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (see config/wasmpay.toml); defaults apply without one.
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
    let (config, embedded) = load_config(args.config.as_deref(), std::env::vars().collect())?;
    init_logging(&config.log);
    let broker = match embedded {
        Some(listen) => Some(crate::embedded_broker::EmbeddedBroker::start(
            listen,
            &config.broker,
        )?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::pipeline::run(config, shutdown_signal()))?;
    // The broker outlives the daemon's last acks and replies.
    drop(broker);
    Ok(ExitCode::SUCCESS)
}

/// `broker.address = "embedded"`: run a broker in this process.
pub const EMBEDDED: &str = "embedded";

/// Where the embedded broker listens: where clients look by default.
const EMBEDDED_LISTEN: &str = "127.0.0.1:1883";

/// The config, and where to start the embedded broker if `broker.address`
/// (in the file or `WASMPAY__BROKER__ADDRESS`) is `embedded`. The daemon
/// then connects to that broker like to any other.
pub fn load_config(
    path: Option<&std::path::Path>,
    mut env: Vec<(String, String)>,
) -> anyhow::Result<(Config, Option<std::net::SocketAddr>)> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let env_key = format!("{}BROKER__ADDRESS", crate::config::ENV_PREFIX);
    let from_env = env
        .iter()
        .rev()
        .find(|(k, _)| *k == env_key)
        .map(|(_, v)| v.clone());
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid TOML: {e}"))?;
    let in_file = table
        .get("broker")
        .and_then(|b| b.get("address"))
        .and_then(toml::Value::as_str)
        == Some(EMBEDDED);
    let embedded = match from_env.as_deref() {
        Some(value) => value == EMBEDDED,
        None => in_file,
    };
    if !embedded {
        return Ok((Config::parse(&text, env)?, None));
    }
    // The config module knows host:port addresses only: hand it the
    // embedded broker's.
    env.retain(|(k, _)| *k != env_key);
    let broker = table
        .entry("broker")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(broker) = broker {
        broker.insert("address".to_owned(), EMBEDDED_LISTEN.into());
    }
    let config = Config::parse(&table.to_string(), env)?;
    let listen = EMBEDDED_LISTEN.parse().expect("a socket address");
    Ok((config, Some(listen)))
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
    let report =
        wasmpay_plugin::runner::run(&wasm, &input, config, wasmpay_plugin::Limits::default())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> (Config, Option<std::net::SocketAddr>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmpay.toml");
        std::fs::write(&path, text).expect("write config");
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_config(Some(&path), env).expect("a valid config")
    }

    #[test]
    fn embedded_in_the_file_or_the_environment_starts_a_broker_on_loopback() {
        let listen = Some("127.0.0.1:1883".parse().expect("address"));
        let (config, embedded) = load("[broker]\naddress = \"embedded\"\n", &[]);
        assert_eq!(embedded, listen);
        assert_eq!(config.broker.address, "127.0.0.1:1883");

        let env = [("WASMPAY__BROKER__ADDRESS", "embedded")];
        let (config, embedded) = load("[ledger]\npath = \"x.db\"\n", &env);
        assert_eq!(embedded, listen);
        assert_eq!(config.broker.address, "127.0.0.1:1883");
        assert_eq!(config.ledger.path, PathBuf::from("x.db"));
    }

    #[test]
    fn an_address_in_the_environment_wins_over_embedded_in_the_file() {
        let env = [("WASMPAY__BROKER__ADDRESS", "broker:1884")];
        let (config, embedded) = load("[broker]\naddress = \"embedded\"\n", &env);
        assert_eq!(embedded, None);
        assert_eq!(config.broker.address, "broker:1884");
    }

    #[test]
    fn other_problems_are_still_reported_with_their_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmpay.toml");
        std::fs::write(
            &path,
            "[broker]\naddress = \"embedded\"\n[log]\nformat = \"xml\"\n",
        )
        .expect("write config");
        let error = load_config(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("log.format"), "{error}");
    }
}
