//! Ledger throughput, printed as Markdown for BENCHMARKS.md.
//!
//! `cargo bench -p wasmpay-ledger --bench ledger` measures:
//! 1. payments/s at batch sizes 1, 10, 100, 1000 with `synchronous=FULL` and
//!    `NORMAL`, beside a raw SQLite loop inserting the same rows (no checks,
//!    no hashing, no JSON) as the ceiling;
//! 2. the same at batch 100 on a ledger pre-filled with
//!    `LEDGER_BENCH_PREFILL` journal entries (default 1,000,000), to show
//!    whether history size slows writes;
//! 3. `verify` time on that ledger, per million entries.
//!
//! `LEDGER_BENCH_CURVE=250000,500000,1000000` measures instead batch 100
//! with `FULL` on one ledger as it grows through those sizes (payments,
//! filled at batch 1000 with `NORMAL` between points): where with history
//! the throughput falls, and where it levels.
//!
//! `LEDGER_BENCH_PAGE_CACHE=sqlite` runs it all on SQLite's page cache as it
//! comes instead of the ledger's (`page_cache`), for comparison.
//!
//! A plain binary rather than criterion: each point is a long steady run
//! against a file on disk, and the fsync-bound points take seconds each.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use wasmpay_domain::{
    Currency, MerchantId, Money, PaymentId, PlatformFee, Quote, QuoteLimits, RequestId, UserId,
};
use wasmpay_ledger::page_cache::{self, PageCache};
use wasmpay_ledger::{
    Ledger, LedgerOptions, Op, OpKind, Overdraft, Owner, PaymentDecided, Principal, Synchronous,
};

const USERS: usize = 1_000;
const MERCHANTS: usize = 10;
/// Each measured point runs at least this long (and at least one batch);
/// `LEDGER_BENCH_POINT_MS` overrides it.
fn point_duration() -> Duration {
    let ms = std::env::var("LEDGER_BENCH_POINT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    Duration::from_millis(ms)
}

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("EUR").unwrap())
}

fn user(i: usize) -> UserId {
    UserId::new(format!("user{i}")).unwrap()
}

fn merchant(i: usize) -> MerchantId {
    MerchantId::new(format!("shop{i}")).unwrap()
}

/// Payment number `n`: a rotating payer and merchant, 1.5% platform fee.
fn payment(n: u64) -> Op {
    let payer = user(n as usize % USERS);
    let key = RequestId::new(format!("r{n}")).unwrap();
    let amount = eur(1_000 + (n % 97) as i64);
    let settlement = Quote::default()
        .settle(amount, PlatformFee { bps: 150 }, QuoteLimits::default())
        .unwrap();
    Op {
        principal: Principal::User(payer.clone()),
        key: key.clone(),
        at_ms: 1_700_000_000_000 + n as i64,
        kind: OpKind::Payment {
            payment_id: PaymentId::derive(&payer, &key),
            payer,
            merchant: merchant(n as usize % MERCHANTS),
            amount,
            memo: Some("order".to_owned()),
            metadata: BTreeMap::new(),
            decision: PaymentDecided::Approved {
                quote: Quote::default(),
                settlement,
                plugin: None,
            },
        },
    }
}

/// A fresh ledger with funded users and open merchants.
fn setup(path: &Path, synchronous: Synchronous) -> Ledger {
    let mut ledger = Ledger::open(
        path,
        LedgerOptions {
            synchronous,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ops = Vec::new();
    let admin = |n: usize, kind| Op {
        principal: Principal::Admin,
        key: RequestId::new(format!("setup{n}")).unwrap(),
        at_ms: 0,
        kind,
    };
    for i in 0..USERS {
        let owner = Owner::user(&user(i));
        ops.push(admin(ops.len(), open(owner)));
        let deposit = OpKind::Deposit {
            user: user(i),
            amount: eur(i64::MAX / 4 / USERS as i64),
        };
        ops.push(admin(ops.len(), deposit));
    }
    for i in 0..MERCHANTS {
        ops.push(admin(ops.len(), open(Owner::merchant_main(&merchant(i)))));
    }
    for result in ledger.apply_batch(ops).unwrap() {
        assert!(result.receipt().is_some(), "{result:?}");
    }
    ledger
}

fn open(owner: Owner) -> OpKind {
    OpKind::OpenAccount {
        owner,
        currency: eur(0).currency(),
        overdraft: Overdraft::None,
    }
}

/// One measured point: wall-clock throughput, and this process's CPU time
/// per payment, which other load on a shared machine disturbs far less.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    cpu_us: f64,
}

/// This process's user + system CPU time, from /proc (Linux; ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are the 12th and 13th fields after the parenthesised
    // command name.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn measure(count: u64, start: Instant, cpu_start: Duration) -> Rate {
    let cpu = cpu_time().saturating_sub(cpu_start);
    Rate {
        per_second: per_second(count, start.elapsed()),
        cpu_us: cpu.as_secs_f64() * 1e6 / count as f64,
    }
}

/// Applies payments in batches of `batch` from payment number `*next` for
/// at least `point_duration()`.
fn run_ledger(ledger: &mut Ledger, batch: usize, next: &mut u64) -> Rate {
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let mut done = 0_u64;
    while start.elapsed() < point_duration() {
        let ops: Vec<Op> = (0..batch as u64).map(|i| payment(*next + i)).collect();
        *next += batch as u64;
        let results = ledger.apply_batch(ops).unwrap();
        debug_assert!(results.iter().all(|r| r.receipt().is_some()));
        done += batch as u64;
    }
    measure(done, start, cpu_start)
}

/// Applies payments from `next` on at batch 1000 until `to` are done.
fn fill(ledger: &mut Ledger, next: &mut u64, to: u64) {
    while *next < to {
        let ops: Vec<Op> = (0..1_000).map(|i| payment(*next + i)).collect();
        *next += 1_000;
        ledger.apply_batch(ops).unwrap();
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Inserts the rows a payment writes (journal entry, three postings, three
/// balance updates, payment row, idempotency record) with plain prepared
/// statements: the ceiling for any ledger on this schema and disk.
fn run_raw(path: &Path, synchronous: Synchronous, batch: usize) -> Rate {
    let mut conn = Connection::open(path).unwrap();
    let level = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    // Same-sized payloads as the ledger's own rows.
    let (request, outcome): (String, String) = conn
        .query_row(
            "SELECT request, outcome FROM journal WHERE op = 'payment' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let settlement: String = conn
        .query_row("SELECT settlement FROM payments LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let accounts: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT id FROM accounts ORDER BY id LIMIT 3")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut seq: i64 = conn
        .query_row("SELECT max(seq) FROM journal", [], |r| r.get(0))
        .unwrap();
    let hash = [7_u8; 32];
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let mut done = 0_u64;
    while start.elapsed() < point_duration() {
        let tx = conn.transaction().unwrap();
        {
            let mut journal = tx
                .prepare_cached(
                    "INSERT INTO journal (seq, at_ms, op, principal, key, payment_id, request, plugin,
                                          applied, outcome, prev_hash, hash)
                     VALUES (?1, 0, 'payment', 'user:user1', ?2, ?3, ?4, NULL, 1, ?5, ?6, ?6)",
                )
                .unwrap();
            let mut posting = tx
                .prepare_cached(
                    "INSERT INTO postings (seq, leg, account, amount, balance_after) VALUES (?1, ?2, ?3, ?4, 0)",
                )
                .unwrap();
            let mut update = tx
                .prepare_cached("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2")
                .unwrap();
            let mut payment = tx
                .prepare_cached(
                    "INSERT INTO payments (merchant, payment_id, payer, payer_account, currency, kind,
                                           status, authorized, captured, settlement, created_at_ms,
                                           created_seq)
                     VALUES ('shop1', ?1, 'user1', ?2, 'EUR', 'payment', 'captured', 1000, 1000, ?3, 0, ?4)",
                )
                .unwrap();
            let mut request_row = tx
                .prepare_cached(
                    "INSERT INTO requests (principal, key, fields, seq, at_ms) VALUES ('user:user1', ?1, ?2, ?3, 0)",
                )
                .unwrap();
            for _ in 0..batch {
                seq += 1;
                let key = format!("raw{seq}");
                let pid = format!("pay_raw{seq}");
                journal
                    .execute(params![seq, key, pid, request, outcome, &hash[..]])
                    .unwrap();
                for (leg, (account, amount)) in
                    accounts.iter().zip([-1000_i64, 985, 15]).enumerate()
                {
                    posting
                        .execute(params![seq, leg as i64, account, amount])
                        .unwrap();
                    update.execute(params![amount, account]).unwrap();
                }
                payment
                    .execute(params![pid, accounts[0], settlement, seq])
                    .unwrap();
                request_row.execute(params![key, request, seq]).unwrap();
            }
        }
        tx.commit().unwrap();
        done += batch as u64;
    }
    measure(done, start, cpu_start)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let prefill: u64 = std::env::var("LEDGER_BENCH_PREFILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // SQLite's page cache, process-wide: `LEDGER_BENCH_PAGE_CACHE=sqlite`
    // runs SQLite's own as it comes, for comparison with the default.
    let page_cache = match std::env::var("LEDGER_BENCH_PAGE_CACHE").as_deref() {
        Ok("sqlite") => PageCache::Sqlite,
        _ => PageCache::LockPageRemapped,
    };
    assert_eq!(page_cache::configure(page_cache), page_cache);
    let dir = tempfile::tempdir().unwrap();
    if let Ok(points) = std::env::var("LEDGER_BENCH_CURVE") {
        let points: Vec<u64> = points.split(',').filter_map(|p| p.parse().ok()).collect();
        curve(&dir.path().join("curve.db"), &points);
        return;
    }

    println!("### Payments per second by batch size (fresh ledger, page cache {page_cache:?})\n");
    println!(
        "| synchronous | batch | ledger payments/s | ledger CPU µs/payment | raw SQLite same rows/s | raw CPU µs/payment | ledger / raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for synchronous in [Synchronous::Full, Synchronous::Normal] {
        for batch in [1, 10, 100, 1000] {
            let path = dir.path().join(format!("{synchronous:?}-{batch}.db"));
            let mut ledger = setup(&path, synchronous);
            let mut next = 0;
            let ledger_rate = run_ledger(&mut ledger, batch, &mut next);
            drop(ledger);
            let raw = run_raw(&path, synchronous, batch);
            println!(
                "| {synchronous:?} | {batch} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                ledger_rate.per_second,
                ledger_rate.cpu_us,
                raw.per_second,
                raw.cpu_us,
                ledger_rate.per_second / raw.per_second
            );
        }
    }

    println!("\n### History size: batch 100 on a fresh vs a pre-filled ledger\n");
    let path = dir.path().join("prefilled.db");
    let mut ledger = setup(&path, Synchronous::Normal);
    let mut next = 0;
    let fresh_full;
    let fresh_normal;
    {
        // Fresh figures on this same file before filling it.
        drop(ledger);
        let mut full = Ledger::open(&path, LedgerOptions::default()).unwrap();
        fresh_full = run_ledger(&mut full, 100, &mut next);
        drop(full);
        ledger = Ledger::open(
            &path,
            LedgerOptions {
                synchronous: Synchronous::Normal,
                ..Default::default()
            },
        )
        .unwrap();
        fresh_normal = run_ledger(&mut ledger, 100, &mut next);
    }
    let (fill_start, fill_cpu) = (Instant::now(), cpu_time());
    let fill_from = next;
    fill(&mut ledger, &mut next, prefill);
    let fill = measure(next.saturating_sub(fill_from).max(1), fill_start, fill_cpu);
    let fill_elapsed = fill_start.elapsed();
    let filled_normal = run_ledger(&mut ledger, 100, &mut next);
    drop(ledger);
    let mut full = Ledger::open(&path, LedgerOptions::default()).unwrap();
    let filled_full = run_ledger(&mut full, 100, &mut next);
    drop(full);
    let reader = wasmpay_ledger::Reader::open(&path).unwrap();
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let report = reader.verify().unwrap();
    let elapsed = start.elapsed();
    let verify_cpu = cpu_time().saturating_sub(cpu_start);
    assert!(report.is_clean(), "{report}");
    let entries = report.journal_entries;
    println!(
        "| synchronous | fresh payments/s | fresh CPU µs/payment | with {entries} entries payments/s | with {entries} entries CPU µs/payment |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, fresh, filled) in [
        ("Full", fresh_full, filled_full),
        ("Normal", fresh_normal, filled_normal),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            fresh.per_second, fresh.cpu_us, filled.per_second, filled.cpu_us
        );
    }
    println!(
        "\nFilling to {} payments at batch 1000 (NORMAL) took {:.1} s ({:.0} payments/s, {:.0} CPU µs/payment).",
        prefill,
        fill_elapsed.as_secs_f64(),
        fill.per_second,
        fill.cpu_us
    );

    println!("\n### verify\n");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let per_million = elapsed.as_secs_f64() * 1e6 / report.journal_entries as f64;
    println!(
        "verify of {} entries / {} postings / {} accounts: {:.1} s wall, {:.1} s CPU ({per_million:.1} s wall per million entries); file {} MiB",
        report.journal_entries,
        report.postings,
        report.accounts,
        elapsed.as_secs_f64(),
        verify_cpu.as_secs_f64(),
        size / (1 << 20)
    );
}

/// Throughput at batch 100 with `FULL` on one ledger filled in turn to each
/// of `points` payments; between points it is filled at batch 1000 with
/// `NORMAL`, as in the history section.
fn curve(path: &Path, points: &[u64]) {
    drop(setup(path, Synchronous::Normal));
    let open = |synchronous| {
        Ledger::open(
            path,
            LedgerOptions {
                synchronous,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let mut next = 0;
    let mut first: Option<Rate> = None;
    println!("### Batch 100, FULL, as the ledger grows\n");
    println!(
        "| payments before | payments/s | CPU µs/payment | / first | fill payments/s | fill CPU µs/payment |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &point in points {
        let mut ledger = open(Synchronous::Normal);
        let (fill_start, fill_cpu) = (Instant::now(), cpu_time());
        let from = next;
        fill(&mut ledger, &mut next, point);
        let fill = (next > from).then(|| measure(next - from, fill_start, fill_cpu));
        drop(ledger);
        let before = next;
        let rate = run_ledger(&mut open(Synchronous::Full), 100, &mut next);
        let first = *first.get_or_insert(rate);
        let (fill_rate, fill_cpu) = fill.map_or(("".to_owned(), "".to_owned()), |f| {
            (format!("{:.0}", f.per_second), format!("{:.0}", f.cpu_us))
        });
        println!(
            "| {before} | {:.0} | {:.0} | {:.2} | {fill_rate} | {fill_cpu} |",
            rate.per_second,
            rate.cpu_us,
            rate.per_second / first.per_second,
        );
    }
}
