//! AMQPS and HTTPS against a real broker on loopback, with certificates
//! each test makes: sessions that work and are listed as TLS, client
//! certificates verified or refused, `EXTERNAL` logins, the wrong protocol
//! on either port closed cleanly, and certificates reloaded while
//! connections stay open.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::PathBuf;

use warren_codec::{Frame, Method};
use warren_server::tls::{LoginFrom, TlsConfig};
use warren_tests::http::Http;
use warren_tests::tls::{TestCa, client_config, connect, write_server_files};
use warren_tests::{READ_TIMEOUT, RawClient, Read, TestBroker, start_broker_with};

fn cert_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("warren-tls-{name}-{}", std::process::id()))
}

/// A broker with a server certificate from `ca`; `adjust` sets the rest.
async fn tls_broker(
    name: &str,
    ca: &TestCa,
    adjust: impl FnOnce(&mut TlsConfig),
    users: &[&str],
) -> (TestBroker, PathBuf) {
    let dir = cert_dir(name);
    let server = ca.server("warren-broker");
    let (cert, key, ca_path) = write_server_files(&dir, ca, &server);
    let users: Vec<String> = users.iter().map(|u| (*u).to_string()).collect();
    let b = start_broker_with(move |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.tls.ca = Some(ca_path);
        adjust(&mut c.tls);
        for u in users {
            let mut user = c.users[0].clone();
            user.name = u;
            user.password = Some("unused-password".to_string());
            user.loopback_only = false;
            c.users.push(user);
        }
    })
    .await;
    (b, dir)
}

async fn declare_publish_get(c: &mut RawClient, channel: u16, body: &[u8]) {
    c.open_channel(channel).await;
    let q = c.declare_temp_queue(channel).await;
    c.publish(channel, &q, body).await;
    assert_eq!(c.get(channel, &q).await.as_deref(), Some(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_carries_a_session_and_lists_it_as_tls() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker("plain", &ca, |_| {}, &[]).await;
    let tls_addr = b.tls.unwrap();
    let stream = connect(tls_addr, client_config(&ca, None)).await.unwrap();
    let (_, session) = stream.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3)
    );
    let mut c = RawClient::over(stream);
    // No client certificate: nothing for EXTERNAL to log in with.
    assert_eq!(c.read_start().await, "PLAIN AMQPLAIN");
    c.send_start_ok("PLAIN", b"\0guest\0guest").await;
    c.tune_and_open_ok().await;
    declare_publish_get(&mut c, 1, b"over tls").await;

    let conns = Http::new(b.http, "guest", "guest")
        .get("/api/connections")
        .await
        .json();
    let conn = &conns.as_array().unwrap()[0];
    assert_eq!(conn["ssl"], true, "{conn}");
    assert_eq!(conn["ssl_protocol"], "tlsv1.3", "{conn}");
    assert!(
        conn["ssl_cipher"].as_str().unwrap().contains("aes")
            || conn["ssl_cipher"].as_str().unwrap().contains("chacha"),
        "{conn}"
    );
    assert_eq!(conn["peer_cert_subject"], serde_json::Value::Null);
    assert_eq!(conn["port"], tls_addr.port(), "{conn}");
    c.close().await;

    // The plaintext listener is still there beside it.
    warren_tests::assert_broker_works(b.addr).await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_client_certificates_log_in_with_external() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker(
        "external",
        &ca,
        |t| {
            t.verify_peer = true;
            t.fail_if_no_peer_cert = true;
        },
        &["app-1"],
    )
    .await;
    let tls_addr = b.tls.unwrap();
    let leaf = ca.client("app-1", &["app-1.example"]);
    let stream = connect(tls_addr, client_config(&ca, Some(&leaf)))
        .await
        .unwrap();
    let mut c = RawClient::over(stream);
    assert_eq!(c.read_start().await, "PLAIN AMQPLAIN EXTERNAL");
    c.send_start_ok("EXTERNAL", b"").await;
    c.tune_and_open_ok().await;
    declare_publish_get(&mut c, 1, b"as app-1").await;

    let conns = Http::new(b.http, "guest", "guest")
        .get("/api/connections")
        .await
        .json();
    let conn = &conns.as_array().unwrap()[0];
    assert_eq!(conn["user"], "app-1", "{conn}");
    assert_eq!(conn["auth_mechanism"], "EXTERNAL", "{conn}");
    // RFC 4514 order: the last RDN of the certificate first (rcgen
    // writes CN, then O).
    assert_eq!(
        conn["peer_cert_subject"], "O=Warren tests,CN=app-1",
        "{conn}"
    );
    assert_eq!(
        conn["peer_cert_issuer"], "O=Warren tests,CN=warren test CA",
        "{conn}"
    );

    // A certificate naming a user the broker does not know: refused as
    // RabbitMQ refuses a login, and the connection that works carries on.
    let stranger = ca.client("nobody", &[]);
    let stream = connect(tls_addr, client_config(&ca, Some(&stranger)))
        .await
        .unwrap();
    let mut s = RawClient::over(stream);
    s.read_start().await;
    s.send_start_ok("EXTERNAL", b"").await;
    let close = s.expect_close().await;
    assert_eq!(close.code, 403);
    assert_eq!(
        close.text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    );

    // No certificate at all, with fail_if_no_peer_cert: the handshake
    // fails (TLS 1.3 reports it on the client's first read) and the
    // socket closes.
    match connect(tls_addr, client_config(&ca, None)).await {
        Err(_) => {}
        Ok(stream) => {
            let mut n = RawClient::over(stream);
            let _ = n.send_raw(warren_codec::PROTOCOL_HEADER).await;
            assert!(matches!(n.read().await, Read::Eof));
        }
    }
    // A certificate from a CA the broker does not trust: the same.
    let other_ca = TestCa::new("someone else's CA");
    let forged = other_ca.client("app-1", &[]);
    match connect(tls_addr, client_config(&ca, Some(&forged))).await {
        Err(_) => {}
        Ok(stream) => {
            let mut n = RawClient::over(stream);
            let _ = n.send_raw(warren_codec::PROTOCOL_HEADER).await;
            assert!(matches!(n.read().await, Read::Eof));
        }
    }
    declare_publish_get(&mut c, 2, b"still here").await;
    c.close().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_can_take_a_subject_alternative_name() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker(
        "san",
        &ca,
        |t| {
            t.verify_peer = true;
            t.login_from = LoginFrom::SubjectAlternativeName;
        },
        &["svc.example"],
    )
    .await;
    let leaf = ca.client("ignored-cn", &["svc.example"]);
    let stream = connect(b.tls.unwrap(), client_config(&ca, Some(&leaf)))
        .await
        .unwrap();
    let mut c = RawClient::over(stream);
    c.read_start().await;
    c.send_start_ok("EXTERNAL", b"").await;
    assert!(matches!(
        c.read_method().await,
        (0, Method::ConnectionTune(_))
    ));
    // verify_peer without fail_if_no_peer_cert: a client without a
    // certificate still connects, and logs in with a password.
    let stream = connect(b.tls.unwrap(), client_config(&ca, None))
        .await
        .unwrap();
    let mut p = RawClient::over(stream);
    assert_eq!(p.read_start().await, "PLAIN AMQPLAIN");
    p.send_start_ok("EXTERNAL", b"").await;
    let close = p.expect_close().await;
    assert_eq!(close.code, 403);
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_protocol_on_either_port_gets_a_clean_close() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker("wrong", &ca, |_| {}, &[]).await;
    // Plain AMQP on the TLS port: the TLS handshake fails, the socket
    // closes (with at most a TLS alert before it).
    let mut plain = RawClient::connect(b.tls.unwrap()).await;
    plain.send_raw(warren_codec::PROTOCOL_HEADER).await.unwrap();
    let seen = plain.expect_eof().await;
    assert!(
        seen.iter().all(|r| matches!(r, Read::Bytes(_))),
        "expected at most an alert, got {seen:?}"
    );
    // TLS on the plaintext port: the broker answers a ClientHello as any
    // bad protocol header, and closes; the client's handshake fails.
    let started = tokio::time::Instant::now();
    let r = connect(b.addr, client_config(&ca, None)).await;
    assert!(
        r.is_err(),
        "a TLS handshake with the plaintext port succeeded"
    );
    assert!(started.elapsed() < READ_TIMEOUT, "the handshake hung");
    warren_tests::assert_broker_works(b.addr).await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_certificates_serve_new_sessions_and_keep_old_ones() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker("reload", &ca, |_| {}, &[]).await;
    let tls_addr = b.tls.unwrap();
    let config = client_config(&ca, None);
    let first = connect(tls_addr, config.clone()).await.unwrap();
    let old_cert = first.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut old = RawClient::over(first);
    old.handshake().await;

    // New files, then the reload SIGHUP triggers in the binary.
    let renewed = ca.server("warren-broker-renewed");
    write_server_files(&dir, &ca, &renewed);
    b.tls_handle.as_ref().unwrap().reload().unwrap();
    let second = connect(tls_addr, config.clone()).await.unwrap();
    let new_cert = second.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(old_cert, new_cert);
    assert_eq!(new_cert, renewed.der);
    let mut new = RawClient::over(second);
    new.handshake().await;
    declare_publish_get(&mut new, 1, b"new session").await;
    // The session that started before the reload is untouched.
    declare_publish_get(&mut old, 1, b"old session").await;

    // A broken file is refused and the certificates in use stay.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    assert!(b.tls_handle.as_ref().unwrap().reload().is_err());
    let third = connect(tls_addr, config).await.unwrap();
    assert_eq!(
        third.get_ref().1.peer_certificates().unwrap()[0],
        renewed.der
    );
    old.close().await;
    new.close().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_serves_https() {
    let ca = TestCa::new("warren test CA");
    let dir = cert_dir("https");
    let server = ca.server("warren-broker");
    let (cert, key, _) = write_server_files(&dir, &ca, &server);
    let b = start_broker_with(move |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.management.tls = true;
        c.metrics.tls = true;
    })
    .await;
    // Prometheus over HTTPS too (RabbitMQ's prometheus.ssl).
    let scrape = Http::anonymous(b.metrics)
        .with_tls(client_config(&ca, None))
        .get("/metrics")
        .await;
    assert_eq!(scrape.status, 200);
    assert!(
        String::from_utf8_lossy(&scrape.body).contains("rabbitmq_connections "),
        "no rabbitmq_connections in the scrape"
    );
    let api = Http::new(b.http, "guest", "guest").with_tls(client_config(&ca, None));
    let r = api.get("/api/overview").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["product_name"], "Warren");
    let listeners = r.json()["listeners"].clone();
    let protocols: Vec<&str> = listeners
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["protocol"].as_str().unwrap())
        .collect();
    assert!(protocols.contains(&"amqp/ssl"), "{listeners}");
    assert!(protocols.contains(&"https"), "{listeners}");
    let r = api.get("/api/whoami").await;
    assert_eq!(r.json()["name"], "guest");
    // Plain HTTP on the HTTPS port gets no answer but a close.
    let mut plain = RawClient::connect(b.http).await;
    plain
        .send_raw(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = plain.expect_eof().await;
    assert!(
        !seen
            .iter()
            .any(|r| matches!(r, Read::Frame(Frame::Method { .. }))),
        "{seen:?}"
    );
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offered_versions_are_configurable() {
    let ca = TestCa::new("warren test CA");
    let (b, dir) = tls_broker(
        "versions",
        &ca,
        |t| t.versions = vec!["tlsv1.2".into()],
        &[],
    )
    .await;
    let stream = connect(b.tls.unwrap(), client_config(&ca, None))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_2)
    );
    let mut c = RawClient::over(stream);
    c.handshake().await;
    let conns = Http::new(b.http, "guest", "guest")
        .get("/api/connections")
        .await
        .json();
    assert_eq!(conns[0]["ssl_protocol"], "tlsv1.2", "{conns}");
    c.close().await;
    // Names outside RabbitMQ's list, or older versions, are refused.
    let bad = TlsConfig {
        versions: vec!["tlsv1.1".into()],
        ..TlsConfig::default()
    };
    assert!(bad.validate().is_err());
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
