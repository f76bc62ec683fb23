//! `warren-perf`: parses options, runs on a small tokio runtime, prints the
//! human line (stdout, or stderr with --json) and the JSON object (stdout).

use clap::Parser;
use warren_perf::Options;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = Options::parse();
    opts.normalize()?;
    let json = opts.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(warren_perf::run(opts))?;
    if json {
        eprintln!("{}", report.human());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.human());
    }
    // Tasks still blocked on a broker that stopped answering must not hold
    // the process open: every measurement is already printed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
