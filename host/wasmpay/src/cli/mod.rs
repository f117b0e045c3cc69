//! The `wasmpay` command line.
//!
//! - `run`: the daemon ([`crate::pipeline`]), with a broker of its own
//!   ([`crate::embedded_broker`]) unless `broker.address` names one.
//! - Clients for people (`pay`, `balance`, `history`, `refund`, `capture`,
//!   `void`, `authorize`, `payout`, `deposit`, `open-account`, `status`,
//!   `plugin upload|activate|rollback|list`): each sends one request over
//!   MQTT 5 like any other client ([`client`]), waits for its reply and
//!   prints it ([`render`]).
//! - Local tools that need no daemon: `ledger balance|history|verify` on a
//!   ledger file and `plugin run` for plugin authors ([`tools`]).
//! - `demo`: a broker, the daemon and a few hundred payments, end to end
//!   ([`demo`]).
//!
//! Exit codes, for scripts: 0 done; 1 the host refused or declined (the
//! error code is printed); 2 usage or connection error; 3 no reply in time.

pub mod client;
mod commands;
pub mod demo;
mod render;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The request succeeded.
pub const EXIT_OK: u8 = 0;
/// The host answered with an error: refused, declined, conflict.
pub const EXIT_REFUSED: u8 = 1;
/// Bad arguments, or the broker could not be reached or refused us.
pub const EXIT_USAGE: u8 = 2;
/// The request went out but no reply came in time.
pub const EXIT_TIMEOUT: u8 = 3;

const AFTER_HELP: &str = "\
Exit codes: 0 done; 1 refused or declined by the host (the error code is
printed); 2 usage or connection error; 3 no reply in time (retry with the
same --id: a request id is never applied twice).

Client commands talk MQTT 5 to the broker at --broker (WASMPAY_BROKER,
default 127.0.0.1:1883); the daemon must be running (`wasmpay run`).";

#[derive(Debug, Parser)]
#[command(
    name = "wasmpay",
    version,
    about = "Real-time payments over MQTT with merchant rules in sandboxed WebAssembly",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon: start a broker of its own on 127.0.0.1:1883 (or
    /// connect to `broker.address`) and process payment traffic.
    Run(tools::RunArgs),
    #[command(flatten)]
    Client(commands::ClientCmd),
    /// Merchant plugins: upload, activate, roll back, list (over MQTT), and
    /// run one locally.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Inspect and check a ledger file (no daemon needed).
    #[command(subcommand)]
    Ledger(tools::LedgerCmd),
    /// Start a broker and the daemon, drive a few hundred payments through
    /// three merchants' plugins over MQTT, and print a summary.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCmd {
    #[command(flatten)]
    Client(commands::PluginClientCmd),
    /// Run a plugin against a JSON payment (or refund) and show its decision,
    /// fuel, time and logs.
    Run(tools::PluginRunArgs),
}

/// Parses the command line and runs it; the binary's whole `main`.
pub fn main() -> ExitCode {
    // SQLite takes its page cache before its first connection, so choose it
    // before anything can open one (the ledger would, on its first open).
    wasmpay_ledger::page_cache::configure(Default::default());
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => tools::run_daemon(args),
        Cmd::Client(cmd) => Ok(commands::run(cmd.into())),
        Cmd::Plugin(PluginCmd::Client(cmd)) => Ok(commands::run(cmd.into())),
        Cmd::Plugin(PluginCmd::Run(args)) => tools::plugin_run(args),
        Cmd::Ledger(cmd) => tools::ledger(cmd),
        Cmd::Demo(args) => demo::main(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A short random tag for client ids, reply topics and request ids.
pub(crate) fn random_tag() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// A fresh request id: time-ordered (so ids sort in the order they were
/// made) with a random suffix (so two shells in the same millisecond differ).
pub(crate) fn new_request_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("cli-{ms}-{}", random_tag())
}
