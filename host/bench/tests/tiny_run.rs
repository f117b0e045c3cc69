//! A tiny run of every variant through a real broker: each request gets a
//! reply, and every reply is ok. Behaviour only; the figures of a run this
//! small mean nothing, so none is asserted.

use std::time::Duration;

use wasmpay_bench::load::Pacing;
use wasmpay_bench::server::Variant;
use wasmpay_bench::{Bench, neighbour, world};

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A bench on a broker of its own, with 2 connections of 16 in flight; the
/// fields after `clients` are kept only to live as long as the test.
struct Tiny {
    bench: Bench,
    clients: tokio::runtime::Runtime,
    _servers: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
    _broker: wasmpay_tests::TestBroker,
}

impl Tiny {
    fn start() -> Self {
        Self::start_on("mosquitto")
    }

    /// On the broker `--broker` names: `mosquitto` or `embedded`.
    fn start_on(broker: &str) -> Self {
        let broker = wasmpay_tests::TestBroker::start_named(broker);
        let data = tempfile::tempdir().expect("temp dir");
        let servers = runtime("server");
        let bench = Bench::new(
            broker.address(),
            servers.handle().clone(),
            data.path().to_owned(),
            2,
            16,
            false,
        );
        Self {
            bench,
            clients: runtime("load"),
            _servers: servers,
            _data: data,
            _broker: broker,
        }
    }
}

/// Runs `payments` closed-loop through `variant` and asserts that each got
/// a reply, and every reply was ok.
async fn every_payment_answered_ok(bench: &Bench, variant: Variant, payments: u64) {
    let outcome = bench
        .closed_loop(variant, payments, 20, 2)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}", variant.name()));
    assert!(
        outcome.complete(),
        "{}: {} of {payments} answered, {} ok; {:?} {:?}",
        variant.name(),
        outcome.replies,
        outcome.ok,
        outcome.failures,
        outcome.errors
    );
}

#[test]
fn every_variant_answers_every_payment_ok() {
    let tiny = Tiny::start();
    let (bench, clients) = (&tiny.bench, &tiny.clients);
    clients.block_on(async {
        for (variant, payments) in [
            (Variant::Ceiling, 200),
            (Variant::Wasmpay, 200),
            (Variant::Native, 200),
            // Compiles the plugin per payment: a handful is enough.
            (Variant::Naive, 4),
        ] {
            every_payment_answered_ok(bench, variant, payments).await;
        }
    });
}

#[test]
fn the_ceiling_and_wasmpay_answer_every_payment_through_the_embedded_broker() {
    // `--broker embedded`: the same stages through wasmpay's own broker in
    // the bench's process instead of a Mosquitto child.
    let tiny = Tiny::start_on("embedded");
    let (bench, clients) = (&tiny.bench, &tiny.clients);
    clients.block_on(async {
        for variant in [Variant::Ceiling, Variant::Wasmpay] {
            every_payment_answered_ok(bench, variant, 200).await;
        }
    });
}

#[test]
fn an_open_loop_run_answers_every_payment_and_a_seeded_daemon_restarts() {
    let tiny = Tiny::start();
    let (bench, clients) = (&tiny.bench, &tiny.clients);
    clients.block_on(async {
        let config = bench.config("seeded").expect("config");
        wasmpay_bench::seed_plugins(
            &config.ledger.path,
            config.plugins,
            3,
            wasmpay_bench::Code::Distinct,
        )
        .expect("seed");
        let (server, _) = bench
            .start(Variant::Wasmpay, config.clone(), 3)
            .await
            .expect("daemon starts");
        bench.setup(10, 3, false).await.expect("setup");
        let outcome = bench
            .drive(
                "open",
                world::payments("o", 10, 3),
                100,
                Pacing::Open { rate_per_s: 500.0 },
                true,
            )
            .await
            .expect("open loop");
        assert!(
            outcome.complete(),
            "{} of 100 ok; {:?} {:?}",
            outcome.ok,
            outcome.failures,
            outcome.errors
        );
        server.stop().await.expect("stops");
        let (server, to_first_reply) = bench
            .start(Variant::Wasmpay, config, 3)
            .await
            .expect("restarts");
        assert!(to_first_reply < Duration::from_secs(120));
        server.stop().await.expect("stops again");
    });
}

#[test]
fn hostile_neighbours_are_declined_with_their_codes_and_quarantined_only_when_on() {
    let tiny = Tiny::start();
    let (bench, clients) = (&tiny.bench, &tiny.clients);
    let options = neighbour::Options {
        users: 10,
        merchants: 2,
        payments: 200,
        rate_per_s: Some(200.0),
        percent_of_peak: 50.0,
        share_percent: 50.0,
        seconds: 1.0,
        rounds: 1,
        neighbour_clients: 1,
        quarantine: vec![3, 0],
        cases: neighbour::CASES.to_vec(),
        plugin_workers: None,
    };
    let conditions = clients
        .block_on(neighbour::measure(bench, &options))
        .expect("the stage runs");
    for condition in &conditions {
        for run in condition.open.iter().chain(&condition.closed) {
            assert!(
                run.good.complete(),
                "{}: {:?}",
                run.good.label,
                run.good.failures
            );
            if let Some(n) = &run.neighbour {
                assert_eq!(run.as_expected, n.expected, "{}", n.label);
            }
        }
        let quarantined: u64 = condition.counts.iter().map(|c| c.quarantined).sum();
        let others: u64 = condition.counts.iter().map(|c| c.other.len() as u64).sum();
        assert_eq!(others, 0, "{:?}", condition.counts);
        if condition.quarantine_max == 0 {
            assert_eq!(quarantined, 0);
        } else {
            assert!(quarantined > 0, "{:?}", condition.counts);
            // Every hostile run uploads a new version, which lifts the
            // quarantine: the failing plugins run again in the next run.
            let loop_failures = condition.counts[0].expected;
            assert!(
                loop_failures > u64::from(condition.quarantine_max),
                "{loop_failures} failures: the quarantine outlived a new version"
            );
        }
    }
}
