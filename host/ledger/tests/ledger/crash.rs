//! Crash test: a child process (this test binary, re-run on this same test
//! with the ledger's path in its environment) applies batches and prints
//! each batch number after its commit; the parent kills it with SIGKILL at
//! random moments, many times. After each
//! kill the file must open, verify clean, and hold every reported batch
//! exactly once, and every other batch entirely or not at all.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmpay_ledger::{Ledger, LedgerOptions, Op, OpKind, Owner, Principal};

use crate::support::*;

const PATH_VAR: &str = "WASMPAY_LEDGER_CRASH_PATH";
const START_VAR: &str = "WASMPAY_LEDGER_CRASH_START";
const DEPOSITS_PER_BATCH: usize = 8;
const PAYMENTS_PER_BATCH: usize = 2;
const KILLS: usize = 20;

/// Batch `b`: deposits of 1 cent and payments of 1 cent, so Alice gains
/// `DEPOSITS_PER_BATCH - PAYMENTS_PER_BATCH` cents per batch applied.
fn batch_ops(b: u64) -> Vec<Op> {
    let deposits = (0..DEPOSITS_PER_BATCH).map(|i| Op {
        principal: Principal::Admin,
        key: key(&format!("b{b}-d{i}")),
        at_ms: 1_000 + b as i64,
        kind: OpKind::Deposit {
            user: user("alice"),
            amount: eur(1),
        },
    });
    let payments = (0..PAYMENTS_PER_BATCH).map(|i| {
        let request = format!("b{b}-p{i}");
        Op {
            principal: Principal::User(user("alice")),
            key: key(&request),
            at_ms: 1_000 + b as i64,
            kind: payment("alice", "shop", &request, eur(1), 0),
        }
    });
    deposits.chain(payments).collect()
}

/// How many of batch `b`'s ops the file holds (0 or all, if atomic).
fn ops_present(ledger: &Ledger, b: u64) -> usize {
    batch_ops(b)
        .iter()
        .filter(|op| {
            let found = ledger
                .lookup(&op.principal, &op.key, &op.kind.fields())
                .unwrap();
            found.is_some_and(|r| r.is_replayed() && r.receipt().is_some())
        })
        .count()
}

/// The child's work: applies batches from `START_VAR` on until killed.
fn apply_batches_until_killed(path: &str) -> ! {
    let start: u64 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let mut ledger = Ledger::open(Path::new(path), LedgerOptions::default()).unwrap();
    for b in start.. {
        let results = ledger.apply_batch(batch_ops(b)).unwrap();
        assert!(results.iter().all(|r| r.receipt().is_some()));
        // Printed only after the commit returned: the parent may rely on it.
        println!("committed {b}");
    }
    unreachable!("batch numbers ran out")
}

/// A small deterministic generator; the seed is printed for reruns.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn batches_survive_sigkill_whole_or_not_at_all_and_reported_ones_exactly_once() {
    // Run as the child, by the parent below.
    if let Ok(path) = std::env::var(PATH_VAR) {
        apply_batches_until_killed(&path);
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut fx = Fixture::alice_and_shop(0);
    let path = fx.path();
    drop(std::mem::replace(
        &mut fx.ledger,
        Ledger::open(&fx.dir.path().join("unused.db"), LedgerOptions::default()).unwrap(),
    ));

    let exe = std::env::current_exe().unwrap();
    let mut next: u64 = 0;
    let mut reported_total = 0;
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "crash::batches_survive_sigkill_whole_or_not_at_all_and_reported_ones_exactly_once",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PATH_VAR, &path)
            .env(START_VAR, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // libtest's "test name ... " has no newline: the first line
                // may follow it.
                .filter_map(|l| {
                    l.rsplit_once("committed ")
                        .map(|(_, n)| n.parse::<u64>().unwrap())
                })
                .collect::<Vec<u64>>()
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let reported = lines.join().unwrap();
        reported_total += reported.len();

        let ledger = Ledger::open(&path, LedgerOptions::default()).unwrap();
        let report = ledger.verify().unwrap();
        assert!(report.is_clean(), "after kill {kill}: {report}");
        for b in &reported {
            assert_eq!(
                ops_present(&ledger, *b),
                batch_ops(*b).len(),
                "reported batch {b} after kill {kill}"
            );
        }
        // The batch in flight at the kill may or may not have committed,
        // but never in part.
        let mut end = reported.last().map_or(next, |b| b + 1);
        match ops_present(&ledger, end) {
            0 => {}
            n if n == batch_ops(end).len() => end += 1,
            n => panic!("batch {end} is half-written ({n} ops) after kill {kill}"),
        }
        assert_eq!(ops_present(&ledger, end), 0);
        next = end;
        let net = (DEPOSITS_PER_BATCH - PAYMENTS_PER_BATCH) as i64;
        let alice = ledger
            .balance(&Owner::user(&user("alice")), cur("EUR"))
            .unwrap();
        assert_eq!(
            alice.available.minor(),
            net * next as i64,
            "after kill {kill}"
        );
    }
    assert!(reported_total > 0, "the child never committed a batch");
    eprintln!("{KILLS} kills, {next} batches committed, {reported_total} reported");
}
