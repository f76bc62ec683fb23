//! The tool must never be the bottleneck: one producer on one worker thread
//! publishes 16-byte messages to a discard-everything sink at well over a
//! million per second. Ignored by default (it is a timing test and wants a
//! release build): `cargo test --release -p warren-perf -- --ignored`.

use clap::Parser;
use warren_perf::Options;

#[test]
#[ignore = "timing: run in release with --ignored"]
fn one_producer_pushes_a_million_publishes_per_second_to_a_sink() {
    let mut opts = Options::parse_from(["warren-perf", "--sink", "--duration", "3", "--quiet"]);
    opts.normalize().expect("valid options");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(warren_perf::run(opts)).expect("sink run");
    println!("{}", report.human());
    assert_eq!(report.errors, 0, "{:?}", report.error_messages);
    assert!(
        report.sent_rate >= 1_000_000.0,
        "only {:.0} msg/s",
        report.sent_rate
    );
    let sink = report.sink.expect("sink figures");
    assert!(
        sink.messages >= report.sent * 9 / 10,
        "sink saw {}",
        sink.messages
    );
}
