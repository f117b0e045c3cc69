//! The daemon as a child process: started from a config file, killed with
//! SIGKILL at any moment, started again on the same ledger file and broker
//! session, and finally stopped with SIGTERM.
//!
//! How the process is made is the caller's choice ([`Launcher`]): the
//! `wasmpay-chaos` binary runs the real `wasmpay` binary; the CI tests run
//! their own test binary again in a mode that calls the same
//! `wasmpay::pipeline::run`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long the daemon may take to finish in-flight work after SIGTERM.
const DAEMON_STOP_MS_MAX: u64 = 30_000;

/// Makes the command that runs the daemon with a given config file.
pub struct Launcher(Box<dyn Fn(&Path) -> Command + Send + Sync>);

impl Launcher {
    /// The real binary: `wasmpay run --config <file>`.
    pub fn binary(program: PathBuf) -> Self {
        Self(Box::new(move |config| {
            let mut command = Command::new(&program);
            command.arg("run").arg("--config").arg(config);
            command
        }))
    }

    /// Any command that runs the daemon from the config file it is given
    /// (the CI variant's re-run of its own test binary, or the daemon under
    /// strace).
    pub fn custom(make: impl Fn(&Path) -> Command + Send + Sync + 'static) -> Self {
        Self(Box::new(make))
    }
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Launcher")
    }
}

/// What the daemon's config file says.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub broker_address: String,
    pub client_id: String,
    pub db: PathBuf,
    /// `full` or `normal` (`[ledger] synchronous`).
    pub synchronous: String,
}

impl DaemonConfig {
    /// Writes the config as TOML; every other setting keeps the shipped
    /// default (reconnect backoff 100 ms doubling to 5 s included). The
    /// writer logs each outcome at debug with `replayed`, which the report
    /// counts.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "[broker]\naddress = {address:?}\nclient_id = {client:?}\nkeep_alive_s = 5\n\n\
             [ledger]\npath = {db:?}\nsynchronous = {sync:?}\n\n\
             [log]\nlevel = \"info,wasmpay::writer=debug\"\n",
            address = self.broker_address,
            client = self.client_id,
            db = self.db.display().to_string(),
            sync = self.synchronous,
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// The daemon process of a run, and its log (every incarnation appends).
#[derive(Debug)]
pub struct Daemon {
    launcher: Launcher,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Daemon {
    pub fn new(launcher: Launcher, config: PathBuf, log: PathBuf) -> Self {
        Self {
            launcher,
            config,
            log,
            child: None,
            starts: 0,
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the daemon is running already");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "=== chaos: daemon start {} ===", self.starts)?;
        let mut command = (self.launcher.0)(&self.config);
        command
            // Plain text logs: the report reads them.
            .env("NO_COLOR", "1")
            // A pipe the daemon never reads: a child that watches it (the
            // CI variant does) exits when the harness dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        self.child = Some(command.spawn().context("starting the daemon")?);
        Ok(())
    }

    /// SIGKILL: no shutdown path runs, as in a crash or an OOM kill.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL to the daemon")?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the daemon is not running")?;
        signal(&child, "TERM")?;
        match wait_exit(&mut child, Duration::from_millis(DAEMON_STOP_MS_MAX))? {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the daemon did not stop within {DAEMON_STOP_MS_MAX} ms of SIGTERM")
            }
        }
    }

    /// Sends SIGTERM and returns at once: the daemon stops taking
    /// messages, finishes and acks what is in flight, and exits.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the daemon is not running")?;
        signal(child, "TERM")
    }

    /// The process id of what the launcher started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `limit` for the process to end by itself.
    pub fn wait(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = wait_exit(child, limit)?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// The exit status if the daemon ended although nobody stopped it.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// The last `lines` lines of the log, for a report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `SIG<name>` with the system's `kill` (the harness has no libc).
pub(crate) fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {} failed", child.id());
    Ok(())
}

/// Waits up to `limit` for `child` to exit.
pub(crate) fn wait_exit(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
