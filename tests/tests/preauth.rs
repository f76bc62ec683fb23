//! What a peer can hold before it has logged in: a cap on sockets in the
//! handshake, and a bounded time for the TLS handshake as for AMQP's.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use warren_tests::tls::{TestCa, client_config, connect, write_server_files};
use warren_tests::{RawClient, start_broker_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_in_the_handshake_are_capped_and_logins_free_their_slot() {
    let b = start_broker_with(|c| c.max_unauthenticated_connections = 3).await;
    // A logged-in connection does not count against the cap.
    let mut logged_in = RawClient::connect(b.addr).await;
    logged_in.handshake().await;

    // Three peers that connect and say nothing hold the three slots.
    let mut first = RawClient::connect(b.addr).await;
    let _second = RawClient::connect(b.addr).await;
    let _third = RawClient::connect(b.addr).await;
    // Proves the broker has accepted them all (it accepts in order).
    first.read_start().await;
    // A fourth is closed at accept, before anything is read from it.
    let mut fourth = RawClient::connect(b.addr).await;
    let _ = fourth.send_raw(warren_codec::PROTOCOL_HEADER).await;
    fourth.expect_silent_close().await;

    // One of them logs in: its slot is free again for a newcomer.
    first.send_start_ok("PLAIN", b"\0guest\0guest").await;
    first.tune_and_open_ok().await;
    // The driver releases the slot before it writes open-ok, so a
    // newcomer after it is admitted.
    let mut newcomer = RawClient::connect(b.addr).await;
    assert!(!newcomer.read_start().await.is_empty());
    // Nothing of this touched the connection that was in use.
    logged_in.open_channel(1).await;
    let q = logged_in.declare_temp_queue(1).await;
    logged_in.publish(1, &q, b"unaffected").await;
    assert_eq!(
        logged_in.get(1, &q).await.as_deref(),
        Some(&b"unaffected"[..])
    );
    logged_in.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_on_the_tls_port_is_closed_after_the_handshake_timeout() {
    let ca = TestCa::new("warren test CA");
    let dir = std::env::temp_dir().join(format!("warren-preauth-{}", std::process::id()));
    let (cert, key, _) = write_server_files(&dir, &ca, &ca.server("warren-broker"));
    let b = start_broker_with(move |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.limits.handshake_timeout_ms = 300;
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = RawClient::connect(b.tls.unwrap()).await;
    silent.expect_silent_close().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the handshake timeout"
    );
    // A client that does its TLS handshake in time is served.
    let mut c = RawClient::over(
        connect(b.tls.unwrap(), client_config(&ca, None))
            .await
            .unwrap(),
    );
    c.handshake().await;
    c.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
