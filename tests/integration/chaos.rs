//! Chaos in CI: short runs of the fault-injection harness of `host/chaos`
//! (`wasmpay-chaos crash|broker` runs the long ones against the release
//! binary). They assert correctness only (nothing lost, nothing doubled,
//! every answer agrees with the ledger, `ledger verify` exits 0), never
//! timing.
//!
//! The daemon must be a process of its own, or SIGKILL would take the test
//! with it. It is the real `wasmpay` command line, built by cargo as this
//! package's `wasmpay-e2e` binary (see `tests/Cargo.toml`): cargo builds a
//! package's own binaries before its integration tests, so the daemon is
//! always the code under test, in the same profile, with no nested `cargo
//! build` and no second copy of the entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../host/chaos/src/harness/mod.rs"]
// A few parts serve only the `wasmpay-chaos` binary (its strace launcher).
#[allow(dead_code)]
mod harness;

use harness::daemon::Launcher;
use harness::rng::fresh_seed;
use harness::scenario::{self, LoadShape, Report};

/// Repeats a run: `WASMPAY_CHAOS_SEED=<seed from a failure message>`.
const SEED_ENV: &str = "WASMPAY_CHAOS_SEED";

fn wasmpay() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wasmpay-e2e"))
}

fn shape(ops: usize) -> LoadShape {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(fresh_seed);
    LoadShape {
        ops,
        users: 16,
        merchants: 3,
        connections: 2,
        seed,
        // Generous: CI machines are slow and run other tests alongside.
        reply_timeout_ms: 3_000,
        synchronous: "full".to_owned(),
    }
}

/// The run passed the oracle, and `wasmpay ledger verify` agrees.
fn assert_correct(report: &Report, dir: &Path) {
    println!("{report}");
    let verify = Command::new(wasmpay())
        .args(["ledger", "verify", "--db"])
        .arg(dir.join("ledger.db"))
        .output()
        .expect("run wasmpay ledger verify");
    let log = std::fs::read_to_string(&report.daemon_log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        report.is_correct() && verify.status.success(),
        "{report}\nledger verify: {}{}\nrepeat with {SEED_ENV}={}\ndaemon log tail:\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
        report.seed,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_survives_sigkill_without_losing_or_doubling_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = Launcher::binary(wasmpay());
    let report = scenario::crash(&shape(1_000), 10, launcher, dir.path())
        .await
        .expect("the run completes");
    assert_eq!(report.kills, 10);
    assert_correct(&report, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_outages_and_crashes_lose_and_double_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = Launcher::binary(wasmpay());
    let report = scenario::broker_faults(&shape(600), 3, 2_000, launcher, dir.path())
        .await
        .expect("the run completes");
    assert_eq!(report.faults.len(), 3);
    assert_correct(&report, dir.path());
}
