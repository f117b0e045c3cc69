//! The two runs and their report.
//!
//! - [`crash`]: the daemon is killed with SIGKILL at random moments under
//!   load and started again, `kills` times over `ops` requests.
//! - [`broker_faults`]: the broker is restarted (gracefully, with its
//!   persistence), stopped for a while (an outage) and crashed (SIGKILL,
//!   losing what it had not saved) under load; each time, how long until the
//!   daemon answers new work again.
//!
//! Both end the same way: the daemon is stopped with SIGTERM, and the
//! [`oracle`] checks every answer against the ledger.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::broker::Broker;
use super::daemon::{Daemon, DaemonConfig, Launcher};
use super::driver::{Counters, Load, LoadConfig, Record};
use super::oracle::{self, Verdict};
use super::rng::Rng;

/// How long one request is retried before it counts as unanswered.
const GIVE_UP_S: u64 = 120;
/// Each user's opening deposit: 500.00.
const OPENING_DEPOSIT_MINOR: i64 = 50_000;
/// How long a graceful stop under load may take.
const GRACEFUL_STOP_MS_MAX: u64 = 30_000;
/// How long the first daemon may take to start answering.
const READY_S: u64 = 60;
/// How often the controller looks at the load and the daemon.
const WATCH_MS: u64 = 5;

/// The load's shape, common to both runs.
#[derive(Debug, Clone)]
pub struct LoadShape {
    pub ops: usize,
    pub users: usize,
    pub merchants: usize,
    pub connections: usize,
    pub seed: u64,
    /// How long a request waits for its reply before it is sent again.
    pub reply_timeout_ms: u64,
    /// `[ledger] synchronous` for the daemon: `full` or `normal`.
    pub synchronous: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGTERM (Mosquitto saves its state) and start again at once.
    Restart,
    /// SIGTERM, stay down for the outage, start again on the same port.
    Outage,
    /// SIGKILL (unsaved state is lost), down for a second, start again.
    Crash,
}

/// One broker fault and how the daemon came back from it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// Load requests answered when it struck.
    pub at_answered: u64,
    /// From the stop to the broker accepting connections again.
    pub down: Duration,
    /// From the broker accepting connections again to the reply to a fresh
    /// request sent at that moment; `None` if it never came.
    pub recovery: Option<Duration>,
}

/// Everything a run measured, and the oracle's verdict.
#[derive(Debug, Default)]
pub struct Report {
    pub mode: &'static str,
    pub seed: u64,
    pub elapsed: Duration,
    /// Requests of the load proper, and the setup's (accounts, deposits).
    pub ops: u64,
    pub setup_ops: u64,
    pub kills: u64,
    /// Kills that came before the daemon answered anything since its last
    /// start (during startup or recovery).
    pub kills_before_first_answer: u64,
    /// Kills of an idle daemon: the load had ended.
    pub kills_after_load: u64,
    /// SIGKILLs while the daemon was shutting down after a SIGTERM.
    pub kills_during_shutdown: u64,
    /// SIGTERMs under load after which the daemon exited 0.
    pub graceful_stops: u64,
    pub daemon_starts: u32,
    pub faults: Vec<Fault>,
    pub retries: u64,
    pub answered_after_retry: u64,
    pub transient: u64,
    pub redeliveries: u64,
    pub redelivery_variations: u64,
    pub redelivery_mismatches: u64,
    pub unexpected_replies: u64,
    pub load_problems: Vec<String>,
    /// The daemon ended although nobody stopped it.
    pub unexpected_exits: Vec<String>,
    pub clean_stop: bool,
    /// "connected to broker" lines in the daemon's log, and how many of
    /// them found the session still there (zero when the daemon does not
    /// log, as in the CI variant).
    pub connects: u64,
    pub sessions_resumed: u64,
    /// Outcomes the daemon answered from the ledger's idempotency records
    /// (`replayed=true` in its log): requests it had committed but not
    /// acked when it was killed, redelivered by the broker, or retried.
    pub replayed: u64,
    pub verdict: Verdict,
    pub dir: PathBuf,
    pub daemon_log: PathBuf,
}

impl Report {
    /// Why the run failed, one line each; empty if it proved its point.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let v = &self.verdict;
        let mut check = |bad: bool, what: String| {
            if bad {
                failures.push(what);
            }
        };
        check(v.lost > 0, format!("lost {}", v.lost));
        check(v.duplicated > 0, format!("duplicated {}", v.duplicated));
        check(
            v.mismatched > 0,
            format!("answers disagreeing with the ledger {}", v.mismatched),
        );
        check(v.unanswered > 0, format!("unanswered {}", v.unanswered));
        check(
            !v.verify_clean,
            format!("ledger verify: {:?}", v.verify_problems),
        );
        check(
            v.problem_count > 0,
            format!("oracle problems {}", v.problem_count),
        );
        check(
            self.redelivery_mismatches > 0,
            format!(
                "redelivered replies disagreeing {}",
                self.redelivery_mismatches
            ),
        );
        check(
            self.unexpected_replies > 0,
            format!("replies nobody asked for {}", self.unexpected_replies),
        );
        check(
            !self.unexpected_exits.is_empty(),
            format!("daemon exits nobody asked for: {:?}", self.unexpected_exits),
        );
        check(
            !self.clean_stop,
            "the daemon did not stop cleanly on SIGTERM".to_owned(),
        );
        check(
            self.faults.iter().any(|f| f.recovery.is_none()),
            "a broker fault the daemon never recovered from".to_owned(),
        );
        failures
    }

    pub fn is_correct(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        writeln!(f, "mode                  {}", self.mode)?;
        writeln!(f, "seed                  {}", self.seed)?;
        writeln!(
            f,
            "elapsed               {:.1} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "operations            {} (+{} setup)",
            self.ops, self.setup_ops
        )?;
        writeln!(
            f,
            "  approved payments   {}, refunds {}, deposits {}, reused ids refused as conflict {}",
            v.approved_payments, v.refunds, v.deposits, v.conflicts
        )?;
        writeln!(f, "  refused             {:?}", v.refused)?;
        if self.mode == "crash" {
            writeln!(
                f,
                "kills (SIGKILL)       {} ({} before the new daemon's first answer, {} during a graceful shutdown, {} after the load)",
                self.kills,
                self.kills_before_first_answer,
                self.kills_during_shutdown,
                self.kills_after_load
            )?;
            writeln!(
                f,
                "graceful stops        {} (SIGTERM under load, exit 0)",
                self.graceful_stops
            )?;
        }
        writeln!(f, "daemon starts         {}", self.daemon_starts)?;
        if self.connects > 0 {
            writeln!(
                f,
                "broker connects       {} ({} found their session)",
                self.connects, self.sessions_resumed
            )?;
        }
        for fault in &self.faults {
            writeln!(
                f,
                "broker {:<8}        at {} answered, down {} ms, recovery {}",
                format!("{:?}", fault.kind).to_lowercase(),
                fault.at_answered,
                fault.down.as_millis(),
                fault
                    .recovery
                    .map_or("never".to_owned(), |r| format!("{} ms", r.as_millis()))
            )?;
        }
        if self.connects > 0 {
            writeln!(f, "replayed from ledger  {}", self.replayed)?;
        }
        writeln!(
            f,
            "retries (same id)     {} ({} requests answered only after one)",
            self.retries, self.answered_after_retry
        )?;
        writeln!(f, "transient refusals    {}", self.transient)?;
        writeln!(
            f,
            "redeliveries observed {} (disagreeing {}, other fields only {})",
            self.redeliveries, self.redelivery_mismatches, self.redelivery_variations
        )?;
        writeln!(f, "unanswered            {}", v.unanswered)?;
        writeln!(f, "lost                  {}", v.lost)?;
        writeln!(f, "duplicated            {}", v.duplicated)?;
        writeln!(f, "disagreeing answers   {}", v.mismatched)?;
        writeln!(
            f,
            "ledger verify         {}",
            if v.verify_clean { "clean" } else { "PROBLEMS" }
        )?;
        writeln!(f, "clean stop (SIGTERM)  {}", self.clean_stop)?;
        for problem in v.problems.iter().chain(&self.load_problems) {
            writeln!(f, "  problem: {problem}")?;
        }
        for line in &v.verify_problems {
            writeln!(f, "  verify: {line}")?;
        }
        for exit in &self.unexpected_exits {
            writeln!(f, "  unexpected exit: {exit}")?;
        }
        writeln!(f, "run directory         {}", self.dir.display())?;
        writeln!(f, "daemon log            {}", self.daemon_log.display())?;
        let failures = self.failures();
        if failures.is_empty() {
            writeln!(f, "verdict               PASS")
        } else {
            writeln!(f, "verdict               FAIL: {}", failures.join("; "))
        }
    }
}

/// The processes and the load of one run.
struct Rig {
    broker: Broker,
    daemon: Daemon,
    load: Arc<Load>,
    setup: Vec<Record>,
    db: PathBuf,
    report: Report,
    started: Instant,
}

impl Rig {
    /// Starts the broker and the daemon, connects the load and opens every
    /// account.
    async fn start(
        mode: &'static str,
        shape: &LoadShape,
        launcher: Launcher,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let broker = tokio::task::block_in_place(|| Broker::start(dir))?;
        let db = dir.join("ledger.db");
        let config = dir.join("wasmpay.toml");
        DaemonConfig {
            broker_address: broker.address(),
            client_id: "wasmpay-chaos".to_owned(),
            db: db.clone(),
            synchronous: shape.synchronous.clone(),
        }
        .write(&config)?;
        let mut daemon = Daemon::new(launcher, config, dir.join("daemon.log"));
        daemon.start()?;
        let load = Load::connect(
            &broker.address(),
            LoadConfig {
                ops: shape.ops,
                users: shape.users,
                merchants: shape.merchants,
                connections: shape.connections,
                opening_deposit_minor: OPENING_DEPOSIT_MINOR,
                reply_timeout: Duration::from_millis(shape.reply_timeout_ms),
                give_up: Duration::from_secs(GIVE_UP_S),
            },
        )
        .await?;
        load.wait_ready(Duration::from_secs(READY_S)).await?;
        let setup = load.setup().await?;
        let report = Report {
            mode,
            seed: shape.seed,
            dir: dir.to_owned(),
            daemon_log: daemon.log_path().to_owned(),
            ..Report::default()
        };
        Ok(Self {
            broker,
            daemon,
            load,
            setup,
            db,
            report,
            started,
        })
    }

    /// Starts the daemon again if it ended by itself, and notes it.
    fn watch(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.daemon.exited() {
            let tail = self.daemon.log_tail(20);
            self.report
                .unexpected_exits
                .push(format!("{status}; log tail:\n{tail}"));
            self.daemon.start()?;
        }
        Ok(())
    }

    /// SIGTERM under load; half of the time, a SIGKILL follows after 0-12
    /// ms if the daemon is still finishing its in-flight work (a shutdown
    /// under this load takes 3-11 ms).
    fn stop_gracefully_or_kill(&mut self, rng: &mut Rng) -> anyhow::Result<()> {
        self.daemon.sigterm()?;
        let patience_ms = if rng.percent(50) {
            rng.range(0, 12)
        } else {
            GRACEFUL_STOP_MS_MAX
        };
        let status =
            tokio::task::block_in_place(|| self.daemon.wait(Duration::from_millis(patience_ms)))?;
        match status {
            Some(status) if status.success() => self.report.graceful_stops += 1,
            Some(status) => {
                let tail = self.daemon.log_tail(20);
                self.report
                    .unexpected_exits
                    .push(format!("after SIGTERM: {status}; log tail:\n{tail}"));
            }
            None if patience_ms == GRACEFUL_STOP_MS_MAX => {
                self.daemon.kill()?;
                self.report.unexpected_exits.push(format!(
                    "no exit within {GRACEFUL_STOP_MS_MAX} ms of SIGTERM"
                ));
            }
            None => {
                self.daemon.kill()?;
                self.report.kills += 1;
                self.report.kills_during_shutdown += 1;
            }
        }
        Ok(())
    }

    /// Waits until the load has `answered` answers or is done.
    async fn until_answered(
        &mut self,
        answered: u64,
        runner: &tokio::task::JoinHandle<Vec<Record>>,
    ) -> anyhow::Result<()> {
        while Counters::get(&self.load.counters().answered) < answered && !runner.is_finished() {
            self.watch()?;
            tokio::time::sleep(Duration::from_millis(WATCH_MS)).await;
        }
        Ok(())
    }

    /// Waits for the load to finish, stops the daemon, and checks the
    /// ledger.
    async fn finish(
        mut self,
        runner: tokio::task::JoinHandle<Vec<Record>>,
    ) -> anyhow::Result<Report> {
        while !runner.is_finished() {
            self.watch()?;
            tokio::time::sleep(Duration::from_millis(WATCH_MS * 4)).await;
        }
        let records = runner.await?;
        // A fresh answer first: the daemon is up and serving (its SIGTERM
        // handler installed), so the stop below tests the graceful path.
        let serving = self.load.probe().await;
        if serving.is_none() {
            self.report
                .load_problems
                .push("the daemon did not answer a request after the load".to_owned());
        }
        self.watch()?;
        let stopped = tokio::task::block_in_place(|| self.daemon.terminate());
        self.report.clean_stop = matches!(&stopped, Ok(status) if status.success());
        if let Err(e) = &stopped {
            self.report
                .load_problems
                .push(format!("stopping the daemon: {e}"));
        }
        self.load.close().await;
        let counters = self.load.counters();
        let report = &mut self.report;
        report.ops = records.len() as u64;
        report.setup_ops = self.setup.len() as u64;
        report.retries = Counters::get(&counters.retries);
        report.answered_after_retry = Counters::get(&counters.answered_after_retry);
        report.transient = Counters::get(&counters.transient);
        report.redeliveries = Counters::get(&counters.redeliveries);
        report.redelivery_variations = Counters::get(&counters.variations);
        report.redelivery_mismatches = Counters::get(&counters.mismatched);
        report.unexpected_replies = Counters::get(&counters.unexpected);
        report.load_problems.extend(self.load.problems().1);
        report.daemon_starts = self.daemon.starts;
        let log = std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default();
        for line in log.lines().map(strip_ansi) {
            if line.contains("connected to broker") {
                report.connects += 1;
                if line.contains("session_present=true") {
                    report.sessions_resumed += 1;
                }
            }
            if line.contains("replayed=true") {
                report.replayed += 1;
            }
        }
        let mut all = std::mem::take(&mut self.setup);
        all.extend(records);
        let db = self.db.clone();
        report.verdict = tokio::task::spawn_blocking(move || oracle::check(&db, &all)).await??;
        report.elapsed = self.started.elapsed();
        drop(self.broker);
        Ok(self.report)
    }
}

/// One stop in this many percent is a SIGTERM under load instead of a
/// SIGKILL (and half of those are cut short by a SIGKILL).
const GRACEFUL_PERCENT: u64 = 10;

/// SIGKILL chaos: `kills` kills at random moments over `shape.ops`
/// requests. After a kill the daemon starts again within 0-100 ms; one
/// start in four is killed again within 5-150 ms and a few answers (while it
/// starts, or while the broker redelivers what the dead process had not
/// acked). Between the kills, a few graceful stops under load, half of them
/// cut short by a SIGKILL during the shutdown.
pub async fn crash(
    shape: &LoadShape,
    kills: u64,
    launcher: Launcher,
    dir: &Path,
) -> anyhow::Result<Report> {
    let mut rng = Rng::new(shape.seed);
    let mut rig = Rig::start("crash", shape, launcher, dir).await?;
    let runner = tokio::spawn(rig.load.clone().run(rng.fork()));
    let mut early = false;
    while rig.report.kills < kills {
        let since = Counters::get(&rig.load.counters().answered);
        // Answers before this kill: 10-60% of an even share of what is
        // left (the daemon answers more while it is being killed), so the
        // kills spread over the whole load and all land while it runs.
        let share = (shape.ops as u64).saturating_sub(since) / (kills - rig.report.kills);
        if runner.is_finished() {
            rig.report.kills_after_load += 1;
        }
        if early {
            // Within 5-150 ms of the start, and before many answers.
            let deadline = Instant::now() + Duration::from_millis(rng.range(5, 150));
            while Instant::now() < deadline
                && Counters::get(&rig.load.counters().answered) < since + share / 10
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            let gap = rng.range(share / 10, share * 6 / 10).max(1);
            rig.until_answered(since + gap, &runner).await?;
            tokio::time::sleep(Duration::from_millis(rng.range(0, 30))).await;
        }
        rig.watch()?;
        let answered_since_start = Counters::get(&rig.load.counters().answered) > since;
        if !answered_since_start {
            rig.report.kills_before_first_answer += 1;
        }
        if answered_since_start && rng.percent(GRACEFUL_PERCENT) {
            rig.stop_gracefully_or_kill(&mut rng)?;
        } else {
            rig.daemon.kill()?;
            rig.report.kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 100))).await;
        rig.daemon.start()?;
        early = rng.percent(25);
    }
    rig.finish(runner).await
}

/// Broker faults under load: `faults` of them, cycling through restart,
/// outage (`outage_ms` down) and crash, spread over the load.
pub async fn broker_faults(
    shape: &LoadShape,
    faults: u64,
    outage_ms: u64,
    launcher: Launcher,
    dir: &Path,
) -> anyhow::Result<Report> {
    let mut rng = Rng::new(shape.seed);
    let mut rig = Rig::start("broker", shape, launcher, dir).await?;
    let kinds = [FaultKind::Restart, FaultKind::Outage, FaultKind::Crash];
    let runner = tokio::spawn(rig.load.clone().run(rng.fork()));
    for n in 0..faults {
        // Evenly spread, each somewhere in its own slice of the load.
        let slice = shape.ops as u64 * 9 / 10 / faults.max(1);
        let point = n * slice + rng.range(slice / 4, slice * 3 / 4);
        rig.until_answered(point, &runner).await?;
        let kind = kinds[(n % 3) as usize];
        let at_answered = Counters::get(&rig.load.counters().answered);
        let down_at = Instant::now();
        match kind {
            FaultKind::Restart => tokio::task::block_in_place(|| rig.broker.stop())?,
            FaultKind::Outage => {
                tokio::task::block_in_place(|| rig.broker.stop())?;
                tokio::time::sleep(Duration::from_millis(outage_ms)).await;
            }
            FaultKind::Crash => {
                rig.broker.crash();
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
        }
        let up_at = tokio::task::block_in_place(|| rig.broker.start_again())?;
        let recovery = rig.load.probe().await.map(|answered| answered - up_at);
        rig.report.faults.push(Fault {
            kind,
            at_answered,
            down: up_at - down_at,
            recovery,
        });
        rig.watch()?;
    }
    rig.finish(runner).await
}

/// A log line without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
