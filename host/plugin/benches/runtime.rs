//! What a plugin call costs, and what the alternatives would.
//!
//! A bench binary rather than criterion: the questions are medians and
//! 99th percentiles of single calls, compile and load times, and memory per
//! loaded plugin, printed as one Markdown table for `BENCHMARKS.md`.
//!
//! ```sh
//! env -u RUST_BACKTRACE CARGO_TARGET_DIR=/work/target-runtime \
//!     cargo bench -p wasmpay-plugin --bench runtime
//! ```
//!
//! Schemes compared, each with a fresh instance per call unless it says so:
//! - `on-demand`: `pooling_slots = 0`; each call's memory is mapped on demand
//!   (copy-on-write from the plugin's image).
//! - `pooling, madvise`: the pooling allocator (`Limits::pooling_slots`, the
//!   default), which keeps warm instance slots; between calls the lowest
//!   64 KiB of a slot's memory is reset in place and the rest unmapped
//!   (`plugins.memory_reset = "madvise"`).
//! - `pooling, scan`: the same slots, with only the pages a call touched
//!   copied back and nothing unmapped (`"scan"`, what `"auto"` takes on
//!   Linux 6.7 and later); left out where the kernel lacks it.
//! - `reused instance`: one instance called again and again. Not isolated
//!   (one call's state leaks into the next, and a trap poisons it), so it is
//!   here only as the floor that isolation is paid against.
//! - `native`: the fee rule written in Rust against the domain types.
//!
//! Then calls rotating over 1, 1,000 and 10,000 merchants, on one component
//! or a component each (`RUNTIME_BENCH_MERCHANTS=1,1000` picks the counts;
//! `RUNTIME_BENCH_ONLY=merchants` runs that part alone, and
//! `RUNTIME_BENCH_CODE="a component each"` or `"one component"` one case,
//! `RUNTIME_BENCH_SLOTS` sets `pooling_slots`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpay_domain::{
    Code, Currency, Decision, LineKind, MerchantId, Money, PaymentId, Quote, QuoteLine, SubAccount,
    UserId,
};
use wasmpay_plugin::{
    Limits, LoadedPlugin, MemoryReset, NoActivity, PaymentInput, PluginMeta, Runtime,
};
use wasmpay_plugin_artifacts as artifacts;

/// Samples per per-call measurement: enough for a stable 99th percentile.
const CALLS: usize = 20_000;
/// Calls before measuring, so caches, slots and lazy images are warm.
const WARMUP: usize = 500;

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fee_config() -> BTreeMap<String, String> {
    config(&[
        ("fee_bps", "290"),
        ("fee_fixed.EUR", "0.30"),
        ("fee_cap.EUR", "5.00"),
    ])
}

fn examples() -> Vec<(&'static str, &'static [u8], BTreeMap<String, String>)> {
    vec![
        ("fee", artifacts::FEE, fee_config()),
        (
            "tiered",
            artifacts::TIERED,
            config(&[
                ("tiers.EUR", "0:0%, 100.00:-2%"),
                ("coupon.WELCOME10", "10%"),
                ("tax_rate", "8.25%"),
                ("split_rate", "10%"),
                ("split_account", "partner"),
            ]),
        ),
        (
            "guard",
            artifacts::GUARD,
            config(&[
                ("blocked_payers", "mallory, trudy"),
                ("amount_min.EUR", "1.00"),
                ("velocity_windows", "3600"),
                ("velocity_count_max.3600", "3"),
            ]),
        ),
    ]
}

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("EUR").unwrap())
}

fn payment() -> PaymentInput {
    let mut metadata = BTreeMap::new();
    metadata.insert("coupon".to_owned(), "WELCOME10".to_owned());
    PaymentInput {
        payment_id: PaymentId::new("pay_bench").unwrap(),
        merchant: MerchantId::new("shop-1").unwrap(),
        payer: UserId::new("alice").unwrap(),
        amount: eur(20_000),
        memo: None,
        metadata,
        received_at_ms: 1_700_000_000_000,
        is_authorization: false,
    }
}

fn load(runtime: &Runtime, wasm: &[u8], config: BTreeMap<String, String>) -> Arc<LoadedPlugin> {
    let compiled = runtime.compile(wasm).unwrap();
    runtime
        .load(
            &compiled.artifact,
            PluginMeta {
                merchant: MerchantId::new("shop-1").unwrap(),
                version: 1,
                sha256: compiled.sha256,
                config,
            },
        )
        .unwrap()
}

/// Median, 99th percentile and mean of `samples`.
struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(50),
        p99: at(99),
        mean: total / samples.len() as u32,
    }
}

/// Times `f` once per sample.
fn sample(mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUP {
        f();
    }
    let samples = (0..CALLS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    stats(samples)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, scheme: &str, s: &Stats, note: &str) {
    println!(
        "| {name} | {scheme} | {} | {} | {:.0} | {note} |",
        us(s.p50),
        us(s.p99),
        1.0 / s.mean.as_secs_f64()
    );
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The `fee` example's rule, natively: the same configuration parsing
/// (from text, each call, as the plugin must) and the same quote.
fn native_fee(config: &BTreeMap<String, String>, request: &PaymentInput) -> Decision {
    let amount = request.amount;
    let currency = amount.currency();
    let money = |key: &str| {
        config
            .get(key)
            .map(|text| Money::parse(text.trim(), currency).expect("valid config"))
    };
    let bps: i128 = config
        .get(&format!("fee_bps.{currency}"))
        .or_else(|| config.get("fee_bps"))
        .map_or(0, |text| text.trim().parse().expect("valid config"));
    let product = i128::from(amount.minor()) * bps;
    let rounded = (product + 5_000) / 10_000;
    let fixed = money(&format!("fee_fixed.{currency}")).map_or(0, Money::minor);
    let mut fee = i64::try_from(rounded).expect("in range") + fixed;
    if let Some(cap) = money(&format!("fee_cap.{currency}")) {
        fee = fee.min(cap.minor());
    }
    let mut quote = Quote::default();
    if fee > 0 {
        let fee = Money::from_minor(fee, currency);
        quote.lines.push(QuoteLine {
            kind: LineKind::Fee,
            code: Code::new("service_fee").unwrap(),
            description: format!("Service fee {fee}"),
            amount: fee,
            account: SubAccount::main(),
        });
    }
    Decision::Approve { quote }
}

/// One instance called repeatedly (not isolated; the floor).
mod reused {
    use std::collections::BTreeMap;

    use wasmtime::component::{Component, HasSelf, Linker};
    use wasmtime::{Config, Engine, Store};

    wasmtime::component::bindgen!({ path: "../../wit", world: "merchant-rules" });

    use wasmpay::plugin::types::{Activity, LogLevel, Money, PaymentRequest};

    pub struct State(pub BTreeMap<String, String>);

    impl wasmpay::plugin::types::Host for State {}

    impl wasmpay::plugin::host::Host for State {
        fn config_get(&mut self, key: String) -> Option<String> {
            self.0.get(&key).cloned()
        }
        fn payer_activity(&mut self, _: u32, currency: String) -> Activity {
            Activity {
                count: 0,
                volume: Money {
                    minor_units: 0,
                    currency,
                },
            }
        }
        fn log(&mut self, _: LogLevel, _: String) {}
    }

    pub struct Reused {
        store: Store<State>,
        rules: MerchantRules,
    }

    impl Reused {
        pub fn new(wasm: &[u8], config: BTreeMap<String, String>) -> Self {
            let mut engine_config = Config::new();
            engine_config.consume_fuel(true).epoch_interruption(true);
            let engine = Engine::new(&engine_config).unwrap();
            let component = Component::new(&engine, wasm).unwrap();
            let mut linker = Linker::new(&engine);
            MerchantRules::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).unwrap();
            let mut store = Store::new(&engine, State(config));
            store.set_epoch_deadline(u64::MAX / 2);
            store.set_fuel(u64::MAX / 2).unwrap();
            let rules = MerchantRules::instantiate(&mut store, &component, &linker).unwrap();
            Self { store, rules }
        }

        pub fn call(&mut self, request: &PaymentRequest) {
            self.store.set_fuel(11_000_000).unwrap();
            let decision = self
                .rules
                .wasmpay_plugin_rules()
                .call_decide_payment(&mut self.store, request)
                .unwrap();
            std::hint::black_box(decision);
        }
    }

    pub fn request(input: &wasmpay_plugin::PaymentInput) -> PaymentRequest {
        PaymentRequest {
            payment_id: input.payment_id.to_string(),
            merchant: input.merchant.to_string(),
            payer: input.payer.to_string(),
            amount: Money {
                minor_units: input.amount.minor(),
                currency: input.amount.currency().code().to_owned(),
            },
            currency_exponent: 2,
            memo: input.memo.clone(),
            metadata: input.metadata.clone().into_iter().collect(),
            received_at_ms: input.received_at_ms,
            is_authorization: input.is_authorization,
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    if std::env::var("RUNTIME_BENCH_ONLY").as_deref() == Ok("merchants") {
        merchants(&payment());
        return;
    }
    let backtrace = std::env::var("RUST_BACKTRACE").unwrap_or_else(|_| "unset".into());
    println!("RUST_BACKTRACE: {backtrace}; {CALLS} calls per row after {WARMUP} warm-up calls");
    let request = payment();
    let on_demand = Runtime::new(Limits {
        pooling_slots: 0,
        ..Limits::default()
    })
    .unwrap();
    let pooled = |memory_reset| {
        Runtime::new(Limits {
            pooling_slots: 16,
            memory_reset,
            ..Limits::default()
        })
    };
    let madvise = pooled(MemoryReset::Madvise).unwrap();
    let scan = pooled(MemoryReset::Scan).ok();
    let mut schemes = vec![("on-demand", &on_demand), ("pooling, madvise", &madvise)];
    if let Some(scan) = &scan {
        schemes.push(("pooling, scan", scan));
    }

    println!("\n### Upload and load (on-demand engine)\n");
    println!("| plugin | component | artifact | compile p50 | load p50 | fuel per call |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, wasm, config) in examples() {
        let compile_times: Vec<Duration> = (0..7)
            .map(|_| {
                let started = Instant::now();
                black_box(on_demand.compile(wasm).unwrap());
                started.elapsed()
            })
            .collect();
        let compiled = on_demand.compile(wasm).unwrap();
        let load_times: Vec<Duration> = (0..50)
            .map(|_| {
                let meta = PluginMeta {
                    merchant: MerchantId::new("shop-1").unwrap(),
                    version: 1,
                    sha256: compiled.sha256.clone(),
                    config: config.clone(),
                };
                let started = Instant::now();
                black_box(on_demand.load(&compiled.artifact, meta).unwrap());
                started.elapsed()
            })
            .collect();
        let plugin = load(&on_demand, wasm, config);
        let fuel = on_demand
            .decide_payment(&plugin, Arc::new(NoActivity), &request)
            .unwrap()
            .fuel_used;
        println!(
            "| {name} | {} KiB | {} KiB | {:.1} ms | {} | {fuel} |",
            wasm.len() / 1024,
            compiled.artifact.len() / 1024,
            stats(compile_times).p50.as_secs_f64() * 1e3,
            us(stats(load_times).p50),
        );
    }

    println!("\n### Per call: instantiate + call + convert, one thread\n");
    println!("| plugin | scheme | p50 | p99 | calls/s (1/mean) | note |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut fee_p50 = Duration::ZERO;
    for (name, wasm, config) in examples() {
        for &(scheme, runtime) in &schemes {
            let plugin = load(runtime, wasm, config.clone());
            let s = sample(|| {
                black_box(
                    runtime
                        .decide_payment(&plugin, Arc::new(NoActivity), &request)
                        .unwrap(),
                );
            });
            if name == "fee" && scheme == "on-demand" {
                fee_p50 = s.p50;
            }
            row(name, scheme, &s, "fresh instance per call");
        }
    }
    let mut reused = reused::Reused::new(artifacts::FEE, fee_config());
    let wit_request = reused::request(&request);
    let s = sample(|| reused.call(&wit_request));
    row("fee", "reused instance", &s, "not isolated: the floor");
    let native_config = fee_config();
    // Native calls are far shorter than the clock's resolution allows one
    // by one: time batches and report per call.
    const BATCH: u32 = 100;
    let s = sample(|| {
        for _ in 0..BATCH {
            black_box(native_fee(black_box(&native_config), black_box(&request)));
        }
    });
    let native = Stats {
        p50: s.p50 / BATCH,
        p99: s.p99 / BATCH,
        mean: s.mean / BATCH,
    };
    let ratio = fee_p50.as_secs_f64() / native.p50.as_secs_f64();
    row(
        "fee",
        "native Rust",
        &native,
        &format!("per call, batches of {BATCH}; wasm on-demand p50 is {ratio:.0}x"),
    );

    println!("\n### Failures (on-demand engine)\n");
    println!("| plugin | outcome | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, wasm) in [
        ("hostile panic", artifacts::HOSTILE_PANIC),
        ("hostile memory_bomb", artifacts::HOSTILE_MEMORY_BOMB),
        ("hostile loop (11M fuel)", artifacts::HOSTILE_LOOP),
    ] {
        let plugin = load(&on_demand, wasm, BTreeMap::new());
        let mut code = "";
        let mut one = || {
            let error = on_demand
                .decide_payment(&plugin, Arc::new(NoActivity), &request)
                .unwrap_err();
            code = error.code();
        };
        let samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                one();
                started.elapsed()
            })
            .collect();
        let s = stats(samples);
        println!("| {name} | {code} | {} | {} |", us(s.p50), us(s.p99));
    }

    println!("\n### Memory per loaded plugin (on-demand engine)\n");
    const COPIES: usize = 200;
    let compiled = on_demand.compile(artifacts::FEE).unwrap();
    // Versions of one component share its loaded code, so each copy is
    // stored under a hash of its own: what a merchant with code of its own
    // costs. The shared case follows.
    for (case, shared) in [("a component each", false), ("one component", true)] {
        let before = rss_bytes();
        let loaded: Vec<Arc<LoadedPlugin>> = (0..COPIES)
            .map(|version| {
                let merchant = MerchantId::new("shop-1").unwrap();
                load_copy(
                    &on_demand,
                    &compiled,
                    version,
                    shared,
                    merchant,
                    fee_config(),
                )
            })
            .collect();
        let after = rss_bytes();
        println!(
            "{COPIES} versions of fee loaded, {case}: RSS +{} KiB, {} KiB each (artifact {} KiB)",
            (after - before) / 1024,
            (after - before) / COPIES / 1024,
            compiled.artifact.len() / 1024
        );
        drop(loaded);
    }

    merchants(&request);
}

/// A stand-in hash for copy `n` of one artifact: loaded under it, the copy
/// is code of its own, as another merchant's component would be.
fn distinct_sha256(n: usize) -> String {
    format!("{n:064x}")
}

/// Copy `n` of `compiled` for `merchant`: on the component's own code when
/// `shared`, else on code of its own (stored under [`distinct_sha256`]).
fn load_copy(
    runtime: &Runtime,
    compiled: &wasmpay_plugin::Compiled,
    n: usize,
    shared: bool,
    merchant: MerchantId,
    config: BTreeMap<String, String>,
) -> Arc<LoadedPlugin> {
    let sha256 = if shared {
        compiled.sha256.clone()
    } else {
        distinct_sha256(n)
    };
    let meta = PluginMeta {
        merchant,
        version: n as u32 + 1,
        sha256,
        config,
    };
    runtime.load(&compiled.artifact, meta).unwrap()
}

/// Minor page faults of this process so far, from `/proc/self/stat`.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends at the last `)`: state is
    // field 3, minflt field 10.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Calls rotating over many merchants' `fee` plugins, on the default
/// pooling limits: all on one component (each with its own configuration),
/// or each on code of its own. Round robin is the hardest order for every
/// cache: no plugin runs again until all the others have.
fn merchants(request: &PaymentInput) {
    let counts: Vec<usize> = std::env::var("RUNTIME_BENCH_MERCHANTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1_000, 10_000]);
    let limits = Limits {
        pooling_slots: std::env::var("RUNTIME_BENCH_SLOTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Limits::default().pooling_slots),
        ..Limits::default()
    };
    println!(
        "\n### Per call across merchants ({} pooled slots, round robin)\n",
        limits.pooling_slots
    );
    let runtime = Runtime::new(limits).unwrap();
    let compiled = runtime.compile(artifacts::FEE).unwrap();
    println!(
        "| merchants | code | p50 | p99 | calls/s (1/mean) | minor faults per call | RSS for the plugins |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let only = std::env::var("RUNTIME_BENCH_CODE").ok();
    for &count in &counts {
        for (case, shared) in [("one component", true), ("a component each", false)] {
            if (count == 1 && !shared) || only.as_deref().is_some_and(|only| only != case) {
                continue;
            }
            let before = rss_bytes();
            let plugins: Vec<Arc<LoadedPlugin>> = (0..count)
                .map(|n| {
                    let mut config = fee_config();
                    config.insert("fee_bps".into(), (100 + n % 200).to_string());
                    let merchant = MerchantId::new(format!("shop-{n}")).unwrap();
                    load_copy(&runtime, &compiled, n, shared, merchant, config)
                })
                .collect();
            let requests: Vec<PaymentInput> = (0..count)
                .map(|n| PaymentInput {
                    merchant: MerchantId::new(format!("shop-{n}")).unwrap(),
                    ..request.clone()
                })
                .collect();
            let mut next = 0;
            let mut call = || {
                let n = next % count;
                next += 1;
                black_box(
                    runtime
                        .decide_payment(&plugins[n], Arc::new(NoActivity), &requests[n])
                        .unwrap(),
                );
            };
            // One call each first: every slot and every plugin's code warm.
            for _ in 0..count {
                call();
            }
            let rss = rss_bytes().saturating_sub(before);
            let faults = minor_faults();
            let s = sample(&mut call);
            let faults = minor_faults().saturating_sub(faults) as f64 / (CALLS + WARMUP) as f64;
            println!(
                "| {count} | {case} | {} | {} | {:.0} | {faults:.1} | {} MiB |",
                us(s.p50),
                us(s.p99),
                1.0 / s.mean.as_secs_f64(),
                rss >> 20
            );
        }
    }
}
