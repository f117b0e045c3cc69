//! `wasmpay-chaos durability`: shows, from the daemon's own system calls,
//! that every commit reaches the disk before anything about it leaves the
//! process.
//!
//! The daemon runs under `strace -f`, and one user sends payments, refunds
//! and deposits one at a time. Reading the trace in order:
//!
//! - SQLite appends a transaction to the write-ahead log (`ledger.db-wal`)
//!   as frames, each behind a 24-byte header; the header of the last frame
//!   carries the database size, which marks the commit.
//! - With `synchronous = "full"` the writer thread's next call on the WAL
//!   after a commit frame is `fdatasync` (or `fsync`), before the commit
//!   returns and so before the pipeline can reply or ack.
//! - Any write to the broker connection while a commit frame is not yet
//!   synced is a reply or ack that a power loss could contradict.
//!
//! With `"full"` both must hold for every commit; with `"normal"` neither
//! does, which is what a power loss would cost.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::harness::broker::Broker;
use crate::harness::daemon::{Daemon, DaemonConfig, Launcher};
use crate::harness::driver::{Load, LoadConfig};
use crate::harness::rng::Rng;

/// The system calls the check reads.
const TRACED: &str =
    "trace=openat,socket,close,write,writev,pwrite64,sendto,sendmsg,fsync,fdatasync";

/// The size of a WAL frame header; bytes 4..8 of it are non-zero only on a
/// transaction's commit frame (sqlite.org/fileformat2.html, "WAL Format").
const WAL_FRAME_HEADER_BYTES: &str = "24";

/// What the trace shows.
#[derive(Debug, Default)]
pub struct SyncOrder {
    pub synchronous: String,
    pub requests: u64,
    /// Transactions committed to the WAL (commit frames written).
    pub commits: u64,
    /// Commits whose thread synced the WAL next, before anything else on it.
    pub commits_synced_at_once: u64,
    pub wal_syncs: u64,
    pub socket_writes: u64,
    /// Writes to the broker while a commit frame was not yet synced.
    pub socket_writes_unsynced: u64,
    pub trace: PathBuf,
}

impl fmt::Display for SyncOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synchronous                     {}", self.synchronous)?;
        writeln!(f, "requests (one at a time)        {}", self.requests)?;
        writeln!(f, "commits (WAL commit frames)     {}", self.commits)?;
        writeln!(
            f,
            "  synced before anything else   {}",
            self.commits_synced_at_once
        )?;
        writeln!(f, "WAL syncs (fdatasync/fsync)     {}", self.wal_syncs)?;
        writeln!(f, "socket writes (replies, acks)   {}", self.socket_writes)?;
        writeln!(
            f,
            "  while a commit was unsynced   {}",
            self.socket_writes_unsynced
        )?;
        writeln!(
            f,
            "trace                           {}",
            self.trace.display()
        )
    }
}

/// Runs `requests` requests through a traced daemon and reads the trace.
pub async fn run(
    daemon_bin: &Path,
    synchronous: &str,
    requests: usize,
    dir: &Path,
) -> anyhow::Result<SyncOrder> {
    let trace = dir.join("strace.txt");
    let mut broker = tokio::task::block_in_place(|| Broker::start(dir))?;
    let config = dir.join("wasmpay.toml");
    DaemonConfig {
        broker_address: broker.address(),
        client_id: "wasmpay-durability".to_owned(),
        db: dir.join("ledger.db"),
        synchronous: synchronous.to_owned(),
    }
    .write(&config)?;
    let (bin, out) = (daemon_bin.to_owned(), trace.clone());
    let launcher = Launcher::custom(move |config| {
        let mut command = Command::new("strace");
        command
            .args(["-f", "-xx", "-e", TRACED, "-o"])
            .arg(&out)
            .arg("--")
            .arg(&bin)
            .args(["run", "--config"])
            .arg(config);
        command
    });
    let mut daemon = Daemon::new(launcher, config, dir.join("daemon.log"));
    daemon.start()?;
    let load = Load::connect(
        &broker.address(),
        LoadConfig {
            ops: requests,
            users: 1,
            merchants: 1,
            connections: 1,
            opening_deposit_minor: 50_000,
            reply_timeout: Duration::from_secs(10),
            give_up: Duration::from_secs(60),
        },
    )
    .await?;
    load.wait_ready(Duration::from_secs(60)).await?;
    let setup = load.setup().await?;
    let records = load.clone().run(Rng::new(1)).await;
    let answered = records.iter().filter(|r| r.reply.is_some()).count();
    anyhow::ensure!(
        answered == requests,
        "only {answered} of {requests} answered"
    );
    // SIGTERM to the daemon itself (strace's only child): it stops
    // gracefully, and strace ends with it, its trace complete.
    let strace = daemon.pid().context("strace is not running")?;
    let output = Command::new("pgrep")
        .arg("-P")
        .arg(strace.to_string())
        .output()?;
    let traced = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    anyhow::ensure!(!traced.is_empty(), "strace has no child process");
    let status = Command::new("kill").args(["-TERM", &traced]).status()?;
    anyhow::ensure!(status.success(), "kill -TERM {traced} failed");
    let ended = tokio::task::block_in_place(|| daemon.wait(Duration::from_secs(30)))?;
    anyhow::ensure!(ended.is_some(), "the traced daemon did not stop in 30 s");
    load.close().await;
    broker.crash();
    let mut order = read_trace(&trace)?;
    order.synchronous = synchronous.to_owned();
    order.requests = (setup.len() + records.len()) as u64;
    order.trace = trace;
    Ok(order)
}

/// One system call of the trace: name, arguments, return value.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    args: Vec<String>,
    ret: Option<String>,
}

impl Call {
    fn parse(name: &str, args: &str) -> Self {
        Self {
            name: name.to_owned(),
            args: args.split(", ").map(str::to_owned).collect(),
            ret: None,
        }
    }

    fn arg(&self, n: usize) -> &str {
        self.args.get(n).map_or("", |a| a.trim_end_matches(')'))
    }

    fn fd(&self) -> &str {
        self.arg(0).split([' ', ')']).next().unwrap_or_default()
    }

    fn is_write(&self) -> bool {
        matches!(
            self.name.as_str(),
            "write" | "writev" | "pwrite64" | "sendto" | "sendmsg"
        )
    }

    /// A WAL frame header whose commit field (bytes 4..8) is set.
    fn is_commit_frame(&self) -> bool {
        if self.name != "pwrite64" || self.arg(2) != WAL_FRAME_HEADER_BYTES {
            return false;
        }
        let header = unquote(self.arg(1));
        header.len() >= 8 && header[4..8].iter().any(|b| *b != 0)
    }
}

/// The bytes of a string as `strace -xx` prints it (`"\x2f\x74..."`,
/// perhaps followed by `...` when cut short).
fn unquote(literal: &str) -> Vec<u8> {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.split('"').next())
        .unwrap_or_default();
    inner
        .split("\\x")
        .filter_map(|hex| u8::from_str_radix(hex.get(..2)?, 16).ok())
        .collect()
}

/// The trace, in order, per the rules in the module docs.
#[derive(Debug, Default)]
struct Reading {
    order: SyncOrder,
    wal_fds: HashSet<String>,
    socket_fds: HashSet<String>,
    /// A commit frame is written and no sync has completed since.
    unsynced_commit: bool,
    /// Threads whose last WAL call wrote a commit frame.
    just_committed: HashSet<String>,
}

impl Reading {
    /// A call starts: writes count from here (their bytes may reach the
    /// file or the peer before the call returns).
    fn start(&mut self, pid: &str, call: &Call) {
        let on_wal = self.wal_fds.contains(call.fd());
        let sync = matches!(call.name.as_str(), "fsync" | "fdatasync");
        let header = call.name == "pwrite64" && call.arg(2) == WAL_FRAME_HEADER_BYTES;
        // After a commit frame's header comes its page; what comes next on
        // that thread is either a sync or the next transaction's first frame.
        if on_wal && (sync || header) && self.just_committed.remove(pid) {
            // The call after the commit's page on its thread.
            if sync {
                self.order.commits_synced_at_once += 1;
            }
        }
        if on_wal && call.is_commit_frame() {
            self.order.commits += 1;
            self.unsynced_commit = true;
            self.just_committed.insert(pid.to_owned());
        }
        if call.is_write() && call.name != "pwrite64" && self.socket_fds.contains(call.fd()) {
            self.order.socket_writes += 1;
            if self.unsynced_commit {
                self.order.socket_writes_unsynced += 1;
            }
        }
    }

    /// A call returns.
    fn finish(&mut self, call: &Call) {
        let ret = call.ret.as_deref().unwrap_or("-1");
        let fd = ret.split_whitespace().next().unwrap_or("-1").to_owned();
        let ok = !ret.starts_with('-');
        match call.name.as_str() {
            "openat" if ok && unquote(call.arg(1)).ends_with(b"-wal") => {
                self.wal_fds.insert(fd);
            }
            "socket" if ok && call.arg(0).starts_with("AF_INET") => {
                self.socket_fds.insert(fd);
            }
            "close" => {
                self.wal_fds.remove(call.fd());
                self.socket_fds.remove(call.fd());
            }
            "fsync" | "fdatasync" if ret == "0" && self.wal_fds.contains(call.fd()) => {
                self.order.wal_syncs += 1;
                self.unsynced_commit = false;
            }
            _ => {}
        }
    }
}

fn read_trace(path: &Path) -> anyhow::Result<SyncOrder> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reading = Reading::default();
    let mut unfinished: HashMap<String, Call> = HashMap::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(mut call) = unfinished.remove(pid) {
                call.ret = resumed.rsplit_once(" = ").map(|(_, r)| r.trim().to_owned());
                reading.finish(&call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if let Some(args) = args.strip_suffix(" <unfinished ...>") {
            let call = Call::parse(name, args);
            reading.start(pid, &call);
            unfinished.insert(pid.to_owned(), call);
            continue;
        }
        let (args, ret) = match args.rsplit_once(" = ") {
            Some((args, ret)) => (args, Some(ret.trim().to_owned())),
            None => (args, None),
        };
        let mut call = Call::parse(name, args);
        call.ret = ret;
        reading.start(pid, &call);
        reading.finish(&call);
    }
    Ok(reading.order)
}
