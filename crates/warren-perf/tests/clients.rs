//! Every client style (--client pipelined, single, lapin, amqprs) against a real
//! Warren broker: a short confirmed, persistent run with a consumer must
//! account for every message (published == confirmed == received), and
//! with --broker-pid the report must carry the broker's CPU per message.
//!
//! The broker runs in this test process (as `tests/src/lib.rs` starts
//! one, with a data directory so persistence is real), on `127.0.0.1:0`;
//! warren-perf runs as its own process, so `--broker-pid` of this process
//! measures the broker and not the load generator.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long one warren-perf run may take: 1 s of load, a few of setup,
/// settle and close in a debug build.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker on a runtime of its own; dropping it stops the broker.
struct Broker {
    port: u16,
    data_dir: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Broker {
    fn start() -> Broker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data_dir =
            std::env::temp_dir().join(format!("warren-perf-clients-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let config = warren_server::Config {
            data_dir: data_dir.clone(),
            shutdown_timeout_ms: 1_000,
            ..warren_server::Config::default()
        };
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = warren_server::Server::open(config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = warren_server::Listeners {
            amqp: Some(listener),
            amqps: None,
        };
        runtime.spawn(warren_server::run_listeners(
            listeners,
            server,
            async move {
                let _ = stopped.await;
            },
        ));
        Broker {
            port,
            data_dir,
            stop: Some(stop),
            runtime: Some(runtime),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Runs warren-perf with `args`, bounded by [`RUN_TIMEOUT`]; its JSON.
fn perf(args: &[String]) -> serde_json::Value {
    let child = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("warren-perf {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "warren-perf {args:?} failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("no JSON from warren-perf ({e}): {stdout}\n{stderr}"))
}

#[test]
fn every_client_style_accounts_for_every_message_and_reports_broker_cpu_per_message() {
    let broker = Broker::start();
    for style in ["pipelined", "single", "lapin", "amqprs"] {
        let args: Vec<String> = [
            "--port",
            &broker.port.to_string(),
            "--client",
            style,
            "--queue-prefix",
            &format!("clients-{style}"),
            "--producers",
            "1",
            "--consumers",
            "1",
            "--size",
            "256",
            "--persistent",
            "--durable",
            "--confirm",
            "100",
            "--prefetch",
            "100",
            "--rate",
            "3000",
            "--duration",
            "1",
            "--settle",
            "5",
            "--broker-pid",
            &std::process::id().to_string(),
            "--json",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let report = perf(&args);
        assert_eq!(report["options"]["client"], style, "{report}");
        assert_eq!(report["errors"], 0, "{style}: {report}");
        let settle = &report["settle"];
        let sent = settle["sent_total"].as_u64().unwrap();
        assert!(sent > 0, "{style}: nothing published: {report}");
        assert_eq!(settle["confirmed_total"], sent, "{style}: {report}");
        assert_eq!(settle["received_total"], sent, "{style}: {report}");
        let cpu = report["broker"]["cpu_us_per_msg"].as_f64();
        println!("{style}: {sent} messages, broker cpu {cpu:?} us/msg");
        assert!(
            cpu.is_some_and(|us| us > 0.0),
            "{style}: no broker cpu per message: {report}"
        );
    }
}
