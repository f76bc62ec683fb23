//! Resource limits end to end: the node's connection limit
//! (`max_connections`, RabbitMQ's `connection_max`), user limits
//! (`max-connections`, `max-channels`) set through the management API,
//! stored, exported and imported, and consumers per channel
//! (`consumer_max_per_channel`). Each limit is reached and refused with
//! RabbitMQ's code and text while another connection goes on publishing
//! and consuming.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::net::SocketAddr;

use serde_json::{Value, json};
use warren_cli::config::Env;
use warren_codec::{
    BasicConsume, FieldTable, FieldValue, Frame, Method, PROTOCOL_HEADER, ShortStr,
};
use warren_tests::http::{Http, guest};
use warren_tests::lapin_util::within;
use warren_tests::{
    CloseInfo, RawClient, TestBroker, start_broker, start_broker_with, start_durable_broker,
};

/// Logs in as `user` and sends `connection.open` of `/`; the answer to the
/// open is left to the caller.
async fn login(addr: SocketAddr, user: &str, password: &str) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.read_start().await;
    let caps = FieldTable::new().with("authentication_failure_close", FieldValue::Bool(true));
    let props = FieldTable::new().with("capabilities", FieldValue::Table(caps));
    c.send_start_ok_with(props, "PLAIN", format!("\0{user}\0{password}").as_bytes())
        .await;
    c.tune_and_open().await;
    c
}

/// A connection of `user` that opened.
async fn open(addr: SocketAddr, user: &str, password: &str) -> RawClient {
    let mut c = login(addr, user, password).await;
    match c.read_method().await {
        (0, Method::ConnectionOpenOk(_)) => c,
        other => panic!("expected connection.open-ok for {user}, got {other:?}"),
    }
}

/// A connection of `user` refused at `connection.open`.
async fn refused(addr: SocketAddr, user: &str, password: &str) -> CloseInfo {
    login(addr, user, password).await.expect_close().await
}

/// Proves `c` still works: declares a queue on channel `ch` (opened here),
/// consumes from it, publishes to it and receives the delivery.
async fn publishes_and_consumes(c: &mut RawClient, ch: u16) {
    c.open_channel(ch).await;
    let q = c.declare_temp_queue(ch).await;
    c.send_method(
        ch,
        BasicConsume {
            queue: q.clone(),
            consumer_tag: "carry-on".into(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    match c.read_method().await {
        (n, Method::BasicConsumeOk(_)) if n == ch => {}
        other => panic!("expected basic.consume-ok, got {other:?}"),
    }
    c.publish(ch, &q, b"carry on").await;
    match c.read_method().await {
        (n, Method::BasicDeliver(d)) if n == ch => {
            assert_eq!(d.consumer_tag, ShortStr::from("carry-on"));
        }
        other => panic!("expected basic.deliver, got {other:?}"),
    }
    let mut body = Vec::new();
    for _ in 0..3 {
        match c.read_frame().await {
            Frame::Header { .. } => {}
            Frame::Body { payload, .. } => {
                body.extend_from_slice(&payload);
                break;
            }
            other => panic!("expected the delivered content, got {other:?}"),
        }
    }
    assert_eq!(body, b"carry on");
}

/// Creates user `name` (password `pw`, no tags) with every permission on
/// `/`, through the API.
async fn add_user(api: &Http, name: &str) {
    let r = api
        .put(
            &format!("/api/users/{name}"),
            r#"{"password":"pw","tags":""}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let r = api
        .put(
            &format!("/api/permissions/%2F/{name}"),
            r#"{"configure":".*","write":".*","read":".*"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_connection_limit_refuses_at_open_while_others_carry_on() {
    let b = start_broker_with(|c| c.max_connections = 2).await;
    let mut first = open(b.addr, "guest", "guest").await;
    // Accepted and not yet open: it counts, as ranch's connections do.
    let mut pending = RawClient::connect(b.addr).await;
    pending.send_raw(PROTOCOL_HEADER).await.unwrap();
    assert!(matches!(
        pending.read_method().await,
        (0, Method::ConnectionStart(_))
    ));
    let close = refused(b.addr, "guest", "guest").await;
    assert_eq!(
        close,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - connection refused: node connection limit (2) is reached".into(),
            class_id: 10,
            method_id: 40,
        }
    );
    publishes_and_consumes(&mut first, 1).await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_set_through_the_api_are_enforced_for_that_user_only() {
    let b = start_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    assert_eq!(api.get("/api/user-limits").await.json(), json!([]));
    assert_eq!(api.get("/api/user-limits/app").await.json(), json!([]));
    for (name, value) in [("max-connections", 1), ("max-channels", 2)] {
        let r = api
            .put(
                &format!("/api/user-limits/app/{name}"),
                &format!(r#"{{"value":{value}}}"#),
            )
            .await;
        assert_eq!(r.status, 204, "{name}");
    }
    let expected = json!([{"user": "app", "value": {"max-connections": 1, "max-channels": 2}}]);
    assert_eq!(api.get("/api/user-limits").await.json(), expected);
    assert_eq!(api.get("/api/user-limits/app").await.json(), expected);
    assert_eq!(
        api.get("/api/users/app").await.json()["limits"],
        json!({"max-connections": 1, "max-channels": 2})
    );

    let mut others = open(b.addr, "guest", "guest").await;
    let mut app = open(b.addr, "app", "pw").await;
    assert_eq!(
        refused(b.addr, "app", "pw").await,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - Connection refused for user 'app': user connection limit (1) is reached"
                .into(),
            class_id: 10,
            method_id: 40,
        }
    );
    // guest has no limit: a second and third connection of its own open.
    let mut more = open(b.addr, "guest", "guest").await;
    more.close().await;
    app.open_channel(1).await;
    app.open_channel(2).await;
    app.send_method(3, warren_codec::ChannelOpen::default())
        .await;
    assert_eq!(
        app.expect_close().await,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - number of channels opened for user 'app' has reached the maximum allowed user limit of (2)"
                .into(),
            class_id: 0,
            method_id: 0,
        }
    );
    publishes_and_consumes(&mut others, 1).await;

    // Clearing one limit, then all; clearing what is not set is fine.
    assert_eq!(
        api.delete("/api/user-limits/app/max-connections")
            .await
            .status,
        204
    );
    assert_eq!(
        api.get("/api/user-limits/app").await.json(),
        json!([{"user": "app", "value": {"max-channels": 2}}])
    );
    assert_eq!(api.delete("/api/user-limits/app/all").await.status, 204);
    assert_eq!(
        api.delete("/api/user-limits/app/max-connections")
            .await
            .status,
        204
    );
    assert_eq!(api.get("/api/user-limits").await.json(), json!([]));
    assert_eq!(api.get("/api/users/app").await.json()["limits"], json!({}));
    others.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limit_of_zero_refuses_all_and_a_negative_one_none() {
    let b = start_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    let put = |v: i64| {
        let api = api.clone();
        async move {
            api.put(
                "/api/user-limits/app/max-connections",
                &format!(r#"{{"value":{v}}}"#),
            )
            .await
            .status
        }
    };
    assert_eq!(put(0).await, 204);
    assert_eq!(refused(b.addr, "app", "pw").await.code, 530);
    assert_eq!(put(-1).await, 204);
    let mut a = open(b.addr, "app", "pw").await;
    let mut c = open(b.addr, "app", "pw").await;
    a.close().await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limit_requests_get_rabbitmqs_answers() {
    let b = start_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    let r = api
        .put("/api/user-limits/app/max-queues", r#"{"value":5}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "Unrecognised terms [{<<\"max-queues\">>,5}] in user-limits"})
    );
    let r = api
        .put("/api/user-limits/app/max-connections", r#"{"value":"5"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "max-connections should be a number, actually was <<\"5\">>"
    );
    let r = api
        .put("/api/user-limits/app/max-connections", r#"{"limit":5}"#)
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .put("/api/user-limits/nobody/max-connections", r#"{"value":5}"#)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["reason"], "user_not_found");
    assert_eq!(api.get("/api/user-limits/nobody").await.status, 404);
    assert_eq!(api.get("/api/user-limits").await.json(), json!([]));

    // Only administrators change limits; any management user reads them.
    assert_eq!(
        api.put(
            "/api/users/watcher",
            r#"{"password":"pw","tags":"management"}"#
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.put("/api/user-limits/app/max-channels", r#"{"value":7}"#)
            .await
            .status,
        204
    );
    let watcher = Http::new(b.http, "watcher", "pw");
    assert_eq!(
        watcher.get("/api/user-limits/app").await.json(),
        json!([{"user": "app", "value": {"max-channels": 7}}])
    );
    let r = watcher
        .put("/api/user-limits/app/max-channels", r#"{"value":1}"#)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        watcher
            .delete("/api/user-limits/app/max-channels")
            .await
            .status,
        401
    );
    // Deleting the user drops its limits.
    assert_eq!(api.delete("/api/users/app").await.status, 204);
    assert_eq!(api.get("/api/user-limits").await.json(), json!([]));
    add_user(&api, "app").await;
    assert_eq!(api.get("/api/user-limits/app").await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_survive_a_restart() {
    let b = start_durable_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    add_user(&api, "gone").await;
    for (user, name, value) in [
        ("app", "max-connections", 1),
        ("app", "max-channels", 3),
        ("gone", "max-channels", 1),
    ] {
        let r = api
            .put(
                &format!("/api/user-limits/{user}/{name}"),
                &format!(r#"{{"value":{value}}}"#),
            )
            .await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(api.delete("/api/users/gone").await.status, 204);
    let b = b.restart().await;
    let api = guest(&b);
    assert_eq!(
        api.get("/api/user-limits").await.json(),
        json!([{"user": "app", "value": {"max-connections": 1, "max-channels": 3}}])
    );
    // Still enforced after the restart.
    let mut app = open(b.addr, "app", "pw").await;
    assert_eq!(refused(b.addr, "app", "pw").await.code, 530);
    publishes_and_consumes(&mut app, 1).await;
    app.close().await;
    // A user made again under a deleted one's name has no limits.
    add_user(&api, "gone").await;
    assert_eq!(api.get("/api/user-limits/gone").await.json(), json!([]));
    // Clearing is stored too.
    assert_eq!(api.delete("/api/user-limits/app/all").await.status, 204);
    let b = b.restart().await;
    assert_eq!(guest(&b).get("/api/user-limits").await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_carry_user_limits_on_each_user_both_ways() {
    let b = start_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    assert_eq!(
        api.put("/api/user-limits/app/max-connections", r#"{"value":3}"#)
            .await
            .status,
        204
    );
    let defs = api.get("/api/definitions").await.json();
    let user = |defs: &Value, name: &str| -> Value {
        defs["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no user {name} in {defs}"))
    };
    assert_eq!(user(&defs, "app")["limits"], json!({"max-connections": 3}));
    assert_eq!(user(&defs, "guest")["limits"], json!({}));

    // Into another broker: the limits arrive and are enforced.
    let other = start_broker().await;
    let other_api = guest(&other);
    let r = other_api.post("/api/definitions", &defs.to_string()).await;
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        other_api.get("/api/user-limits").await.json(),
        json!([{"user": "app", "value": {"max-connections": 3}}])
    );
    // An import merges: limits it does not name stay.
    assert_eq!(
        other_api
            .put("/api/user-limits/app/max-channels", r#"{"value":9}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        other_api
            .post("/api/definitions", &defs.to_string())
            .await
            .status,
        204
    );
    assert_eq!(
        other_api.get("/api/user-limits/app").await.json(),
        json!([{"user": "app", "value": {"max-connections": 3, "max-channels": 9}}])
    );
    // A limit RabbitMQ does not know refuses the whole file.
    let mut bad = defs.clone();
    bad["users"] = json!([{
        "name": "new", "password_hash": "", "tags": [],
        "limits": {"max-queues": 1},
    }]);
    let r = other_api.post("/api/definitions", &bad.to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Unrecognised terms [{<<\"max-queues\">>,1}] in user-limits"
    );
    assert_eq!(other_api.get("/api/users/new").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_per_channel_are_limited_by_the_configuration() {
    let b = start_broker_with(|c| c.limits.consumer_max_per_channel = Some(2)).await;
    let mut others = open(b.addr, "guest", "guest").await;
    let mut c = open(b.addr, "guest", "guest").await;
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    for tag in ["one", "two"] {
        c.send_method(
            1,
            BasicConsume {
                queue: q.clone(),
                consumer_tag: tag.into(),
                ..Default::default()
            },
        )
        .await;
        match c.read_method().await {
            (1, Method::BasicConsumeOk(_)) => {}
            other => panic!("expected basic.consume-ok, got {other:?}"),
        }
    }
    c.send_method(
        1,
        BasicConsume {
            queue: q.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        c.expect_close().await,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - reached maximum (2) of consumers per channel".into(),
            class_id: 60,
            method_id: 20,
        }
    );
    // Another connection's channels have limits of their own.
    publishes_and_consumes(&mut others, 1).await;
    others.close().await;
}

/// What one warrenctl run printed, and how it ended.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

async fn warrenctl(b: &TestBroker, args: &[&str]) -> Ran {
    let mut argv: Vec<String> = [
        "warrenctl",
        "--url",
        &format!("http://{}", b.http),
        "--user",
        "guest",
        "--password",
        "guest",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(args.iter().map(|s| s.to_string()));
    within(
        "warrenctl",
        tokio::task::spawn_blocking(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut input: &[u8] = &[];
            let code = warren_cli::run(
                argv,
                &Env::default(),
                &mut warren_cli::Io {
                    out: &mut out,
                    err: &mut err,
                    input: &mut input,
                    tty: false,
                },
            );
            Ran {
                code,
                out: String::from_utf8_lossy(&out).into_owned(),
                err: String::from_utf8_lossy(&err).into_owned(),
            }
        }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warrenctl_sets_lists_and_clears_user_limits() {
    let b = start_broker().await;
    let api = guest(&b);
    add_user(&api, "app").await;
    let r = warrenctl(
        &b,
        &[
            "set-user-limits",
            "app",
            r#"{"max-connections": 4, "max-channels": 8}"#,
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{} {}", r.out, r.err);
    let r = warrenctl(&b, &["--format", "json", "list-user-limits"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        serde_json::from_str::<Value>(&r.out).unwrap(),
        json!([{"user": "app", "value": {"max-connections": 4, "max-channels": 8}}])
    );
    let r = warrenctl(&b, &["list-user-limits", "--for-user", "app"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("app") && r.out.contains('4') && r.out.contains('8'),
        "{}",
        r.out
    );
    let r = warrenctl(&b, &["clear-user-limits", "app", "max-channels"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        api.get("/api/user-limits/app").await.json(),
        json!([{"user": "app", "value": {"max-connections": 4}}])
    );
    let r = warrenctl(&b, &["clear-user-limits", "app", "all"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(api.get("/api/user-limits").await.json(), json!([]));
    // The server's refusals, with warrenctl's exit codes.
    let r = warrenctl(&b, &["set-user-limits", "app", r#"{"max-queues": 1}"#]).await;
    assert_eq!(r.code, 6, "{} {}", r.out, r.err);
    assert!(r.err.contains("Unrecognised terms"), "{}", r.err);
    let r = warrenctl(&b, &["set-user-limits", "nobody", r#"{"max-channels": 1}"#]).await;
    assert_eq!(r.code, 5, "{}", r.err);
    let r = warrenctl(&b, &["set-user-limits", "app", "[1]"]).await;
    assert_eq!(r.code, 2, "{}", r.err);
}
