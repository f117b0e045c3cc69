//! The daemon's per-message stage events reach the bench's timings layer:
//! every payment passes prepared, handed and committed, in that order. A
//! binary of its own, because the layer is the process's only subscriber.

use wasmpay_bench::Bench;
use wasmpay_bench::server::Variant;
use wasmpay_bench::timings::{STAGES, Timings};

#[test]
fn every_payment_reports_its_stages_in_order() {
    let timings = Timings::install();
    let broker = wasmpay_tests::Mosquitto::start();
    let data = tempfile::tempdir().expect("temp dir");
    let servers = tokio::runtime::Runtime::new().expect("runtime");
    let clients = tokio::runtime::Runtime::new().expect("runtime");
    let mut bench = Bench::new(
        broker.address(),
        servers.handle().clone(),
        data.path().to_owned(),
        2,
        16,
        false,
    );
    bench.timings = Some(timings);
    let payments = 200;
    let outcome = clients
        .block_on(bench.closed_loop(Variant::Wasmpay, payments, 20, 2))
        .expect("closed loop");
    assert!(outcome.complete(), "{} of {payments} ok", outcome.ok);
    let recorded = outcome.timings.expect("timings recorded");
    assert_eq!(recorded.stages_us.len(), STAGES.len());
    // The ack of the last replies may come after recording stopped; every
    // earlier stage precedes the reply the load generator waited for.
    let [prepared, handed, committed, acked] = &recorded.stages_us;
    for (name, stage) in STAGES.iter().zip([prepared, handed, committed]) {
        assert_eq!(stage.len(), payments, "{name}");
    }
    assert!(!acked.is_empty());
    // The same messages, each reaching the stages in order: every quantile
    // is ordered too.
    for q in [0.5, 0.9, 1.0] {
        let at = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(q);
        assert!(
            at(prepared) <= at(handed) && at(handed) <= at(committed),
            "quantile {q}: prepared {} handed {} committed {} µs",
            at(prepared),
            at(handed),
            at(committed)
        );
    }
}
