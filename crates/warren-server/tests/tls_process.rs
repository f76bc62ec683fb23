//! The real `warren` binary with TLS from its command-line flags: AMQPS
//! serves, SIGHUP reloads the certificates without dropping a session
//! that is open (and without ending the process, which SIGHUP's default
//! would), and `--log-format json` writes the connection lifecycle as
//! one JSON object a line.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_codec::{Frame, FrameDecoder, Method};

#[path = "../../../tests/src/tls.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the tests crate")]
mod tls;

/// Bound on waiting for one log line.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

struct Warren {
    child: Option<Child>,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Warren {
    /// The next log line whose message is `message`, within [`LOG_TIMEOUT`].
    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        self.wait_for_where(message, |_| true)
    }

    /// The next log line with `message` that `pred` accepts.
    fn wait_for_where(
        &mut self,
        message: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no log line '{message}' within {LOG_TIMEOUT:?}; saw {:#?}",
                    self.seen
                )
            });
            self.seen.push(line.clone());
            if line["fields"]["message"] == message && pred(&line) {
                return line;
            }
        }
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

async fn read_frame(s: &mut (impl tokio::io::AsyncRead + Unpin), buf: &mut BytesMut) -> Frame {
    let decoder = FrameDecoder::new(1 << 20);
    for _ in 0..100 {
        if let Some(f) = decoder.decode(buf).unwrap() {
            return f;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_buf(buf))
            .await
            .expect("no frame within 5 s")
            .unwrap();
        assert!(n > 0, "the broker closed the connection");
    }
    panic!("no whole frame after 100 reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_and_keeps_sessions() {
    let dir = std::env::temp_dir().join(format!("warren-tls-process-{}", std::process::id()));
    let ca = tls::TestCa::new("warren test CA");
    let first = ca.server("warren-first");
    let (cert, key, _) = tls::write_server_files(&dir, &ca, &first);
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .args([
            "--management-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--log-format", "json", "--log", "info"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = child;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // Every line must be JSON: a line that is not fails the test.
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(
                |e| serde_json::json!({"fields": {"message": format!("NOT JSON ({e}): {line}")}}),
            );
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let pid = child.id();
    let mut w = Warren {
        child: Some(child),
        lines: rx,
        seen: Vec::new(),
    };
    let listening = w.wait_for("AMQPS listening");
    let addr: SocketAddr = listening["fields"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    w.wait_for("warren started");

    let config = tls::client_config(&ca, None);
    let mut old = tls::connect(addr, config.clone()).await.unwrap();
    assert_eq!(old.get_ref().1.peer_certificates().unwrap()[0], first.der);
    old.write_all(warren_codec::PROTOCOL_HEADER).await.unwrap();
    let mut buf = BytesMut::new();
    let start = read_frame(&mut old, &mut buf).await;
    assert!(matches!(
        start,
        Frame::Method {
            method: Method::ConnectionStart(_),
            ..
        }
    ));
    let accepted = w.wait_for("accepting AMQP connection");
    assert_eq!(accepted["fields"]["tls"], "tlsv1.3", "{accepted}");
    assert!(accepted["span"]["peer"].as_str().is_some(), "{accepted}");

    let renewed = ca.server("warren-renewed");
    tls::write_server_files(&dir, &ca, &renewed);
    signal(pid, "HUP");
    w.wait_for("SIGHUP: TLS certificates reloaded");
    let new = tls::connect(addr, config).await.unwrap();
    assert_eq!(new.get_ref().1.peer_certificates().unwrap()[0], renewed.der);
    drop(new);

    // The session from before the reload goes on with its handshake.
    let mut out = BytesMut::new();
    warren_codec::encode_method(
        &mut out,
        0,
        &Method::ConnectionStartOk(warren_codec::ConnectionStartOk {
            client_properties: warren_codec::FieldTable::new(),
            mechanism: "PLAIN".into(),
            response: warren_codec::LongStr::from(bytes::Bytes::from_static(b"\0guest\0guest")),
            locale: "en_US".into(),
        }),
    );
    old.write_all(&out).await.unwrap();
    let tune = read_frame(&mut old, &mut buf).await;
    assert!(
        matches!(
            tune,
            Frame::Method {
                method: Method::ConnectionTune(_),
                ..
            }
        ),
        "{tune:?}"
    );
    // The rest of the handshake, for RabbitMQ's login line.
    out.clear();
    let tune = match tune {
        Frame::Method {
            method: Method::ConnectionTune(t),
            ..
        } => t,
        _ => unreachable!(),
    };
    warren_codec::encode_method(
        &mut out,
        0,
        &Method::ConnectionTuneOk(warren_codec::ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        }),
    );
    warren_codec::encode_method(
        &mut out,
        0,
        &Method::ConnectionOpen(warren_codec::ConnectionOpen {
            virtual_host: "/".into(),
            ..Default::default()
        }),
    );
    old.write_all(&out).await.unwrap();
    let open_ok = read_frame(&mut old, &mut buf).await;
    assert!(
        matches!(
            open_ok,
            Frame::Method {
                method: Method::ConnectionOpenOk(_),
                ..
            }
        ),
        "{open_ok:?}"
    );
    let login = w.wait_for("user 'guest' authenticated and granted access to vhost '/'");
    assert_eq!(login["fields"]["user"], "guest", "{login}");
    drop(old);
    let conn = accepted["span"]["conn"].clone();
    let closed = w.wait_for_where("closing AMQP connection: closed by the client", |l| {
        l["span"]["conn"] == conn
    });
    assert_eq!(closed["level"], "INFO", "{closed}");
    assert_eq!(closed["fields"]["user"], "guest", "{closed}");
    assert_eq!(closed["fields"]["vhost"], "/", "{closed}");

    // SIGTERM still stops it cleanly.
    signal(pid, "TERM");
    w.wait_for("warren stopped");
    let mut child = w.child.take().unwrap();
    let exit = tokio::time::timeout(
        LOG_TIMEOUT,
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("warren did not exit after SIGTERM")
    .unwrap()
    .unwrap();
    assert!(exit.success(), "{exit}");
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}
