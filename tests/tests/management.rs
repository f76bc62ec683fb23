//! The management HTTP API against a real broker on loopback: paths,
//! status codes, bodies and what each change does to AMQP clients.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use warren_tests::http::{Http, guest};
use warren_tests::lapin_util::{channel, connect, connect_url, within};
use warren_tests::{start_broker, start_durable_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_as_rabbitmq_answers_it() {
    let b = start_broker().await;
    let r = Http::anonymous(b.http).get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
    assert!(r.body.is_empty());

    let r = Http::new(b.http, "guest", "wrong")
        .get("/api/overview")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    assert!(r.header("www-authenticate").is_some());

    // A user without a management tag may not use the API at all.
    let admin = guest(&b);
    assert_eq!(
        admin
            .put("/api/users/plain", r#"{"password":"pw","tags":""}"#)
            .await
            .status,
        201
    );
    let r = Http::new(b.http, "plain", "pw").get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": "Not management user"})
    );
    assert!(r.header("www-authenticate").is_none());

    // management: not for administrator-only paths.
    assert_eq!(
        admin
            .put("/api/users/mgr", r#"{"password":"pw","tags":"management"}"#)
            .await
            .status,
        201
    );
    let mgr = Http::new(b.http, "mgr", "pw");
    assert_eq!(mgr.get("/api/overview").await.status, 200);
    let r = mgr.get("/api/users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Not administrator user");
    assert_eq!(
        mgr.get("/api/nodes").await.json()["reason"],
        "Not monitor user"
    );
    // It sees no vhost it has no permissions in.
    assert_eq!(mgr.get("/api/vhosts").await.json(), json!([]));
    assert_eq!(
        mgr.get("/api/queues/%2F").await.json()["reason"],
        "User not authorised to access virtual host"
    );

    let who = admin.get("/api/whoami").await.json();
    assert_eq!(who, json!({"name": "guest", "tags": ["administrator"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_missing_objects_are_rabbitmqs_404() {
    let b = start_broker().await;
    let api = guest(&b);
    for path in [
        "/api/nope",
        "/api/queues/%2F/missing",
        "/api/vhosts/missing",
        "/api/users/missing",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.json(),
            json!({"error": "Object Not Found", "reason": "Not Found"}),
            "{path}"
        );
    }
    // A trailing slash names the same resource.
    assert_eq!(api.get("/api/users/").await.status, 200);
    assert_eq!(api.delete("/api/queues/%2F/missing").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_declared_listed_read_and_deleted() {
    let b = start_broker().await;
    let api = guest(&b);
    let r = api
        .put(
            "/api/queues/%2F/work",
            r#"{"durable":"true","auto_delete":false,"arguments":{"x-message-ttl":60000}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    // The same again: 204; different: 400 with RabbitMQ's text.
    assert_eq!(
        api.put(
            "/api/queues/%2F/work",
            r#"{"durable":true,"arguments":{"x-message-ttl":60000}}"#
        )
        .await
        .status,
        204
    );
    let r = api
        .put("/api/queues/%2F/work", r#"{"durable":false}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "inequivalent arg 'durable' for queue 'work' in vhost '/': received 'false' but current is 'true'"
    );
    assert_eq!(
        api.put("/api/queues/nohost/q", "{}").await.json(),
        json!({"error": "not_found", "reason": "vhost_not_found"})
    );
    assert_eq!(
        api.put("/api/queues/%2F/q", "not json").await.json(),
        json!({"error": "bad_request", "reason": "not_json"})
    );

    // Publish through the API, see the counts, get it back.
    let r = api
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{"delivery_mode":2,"headers":{"h":"v"}},"routing_key":"work","payload":"hello","payload_encoding":"string"}"#,
        )
        .await;
    assert_eq!(r.json(), json!({"routed": true}));
    let r = api
        .post(
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{},"routing_key":"nowhere","payload":"x","payload_encoding":"string"}"#,
        )
        .await;
    assert_eq!(r.json(), json!({"routed": false}));
    let q = api.get("/api/queues/%2F/work").await.json();
    assert_eq!(q["messages"], 1);
    assert_eq!(q["messages_ready"], 1);
    assert_eq!(q["durable"], true);
    assert_eq!(q["arguments"], json!({"x-message-ttl": 60000}));
    assert_eq!(q["message_stats"]["publish"], 1);

    let got = api
        .post(
            "/api/queues/%2F/work/get",
            r#"{"count":"5","ackmode":"ack_requeue_true","encoding":"auto","truncate":3}"#,
        )
        .await
        .json();
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["payload"], "hel");
    assert_eq!(got[0]["payload_bytes"], 5);
    assert_eq!(got[0]["redelivered"], false);
    assert_eq!(got[0]["properties"]["headers"], json!({"h": "v"}));
    // Requeued: still there, now redelivered.
    let got = api
        .post(
            "/api/queues/%2F/work/get",
            r#"{"count":1,"ackmode":"ack_requeue_false","encoding":"base64"}"#,
        )
        .await
        .json();
    assert_eq!(got[0]["redelivered"], true);
    assert_eq!(got[0]["payload"], "aGVsbG8=");
    assert_eq!(got[0]["payload_encoding"], "base64");
    assert_eq!(api.get("/api/queues/%2F/work").await.json()["messages"], 0);

    // Lists: plain, paged, filtered, projected.
    api.put("/api/queues/%2F/other", "{}").await;
    let all = api.get("/api/queues").await.json();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "work"]);
    let paged = api
        .get("/api/queues?page=1&page_size=1&name=wor&columns=name,vhost")
        .await
        .json();
    assert_eq!(
        paged,
        json!({"total_count": 2, "item_count": 1, "filtered_count": 1, "page": 1, "page_size": 1,
               "page_count": 1, "items": [{"name": "work", "vhost": "/"}]})
    );
    assert_eq!(
        api.get("/api/queues?page=0").await.json()["error"],
        "invalid_pagination_parameters"
    );
    assert_eq!(
        api.get("/api/queues?page=9").await.json()["error"],
        "page_out_of_range"
    );

    // Delete with conditions, then for real.
    api.post(
        "/api/exchanges/%2F/amq.default/publish",
        r#"{"properties":{},"routing_key":"other","payload":"x","payload_encoding":"string"}"#,
    )
    .await;
    let r = api.delete("/api/queues/%2F/other?if-empty=true").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "queue 'other' in vhost '/' not empty");
    assert_eq!(
        api.delete("/api/queues/%2F/other/contents").await.status,
        204
    );
    assert_eq!(api.get("/api/queues/%2F/other").await.json()["messages"], 0);
    assert_eq!(
        api.delete("/api/queues/%2F/other?if-empty=true")
            .await
            .status,
        204
    );
    assert_eq!(api.get("/api/queues/%2F/other").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_and_bindings() {
    let b = start_broker().await;
    let api = guest(&b);
    assert_eq!(
        api.put(
            "/api/exchanges/%2F/ev",
            r#"{"type":"topic","durable":true}"#
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.put(
            "/api/exchanges/%2F/ev",
            r#"{"type":"topic","durable":true}"#
        )
        .await
        .status,
        204
    );
    assert_eq!(
        api.put("/api/exchanges/%2F/ev", r#"{"type":"fanout"}"#)
            .await
            .status,
        400
    );
    assert_eq!(
        api.put("/api/exchanges/%2F/bad", r#"{"type":"nope"}"#)
            .await
            .status,
        400
    );
    assert_eq!(
        api.put("/api/exchanges/%2F/amq.mine", r#"{"type":"topic"}"#)
            .await
            .status,
        401
    );
    api.put("/api/queues/%2F/q", "{}").await;

    let r = api
        .post("/api/bindings/%2F/e/ev/q/q", r#"{"routing_key":"a.*"}"#)
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("q/a.%2A"));
    let r = api
        .post(
            "/api/bindings/%2F/e/ev/q/q",
            r#"{"routing_key":"","arguments":{"x":1}}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let between = api.get("/api/bindings/%2F/e/ev/q/q").await.json();
    let keys: Vec<&str> = between
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"a.%2A"));
    let with_args = keys
        .iter()
        .find(|k| k.starts_with('~'))
        .unwrap()
        .to_string();
    assert_eq!(with_args.len(), 7, "{with_args}");
    // The default exchange's implicit binding is listed for the queue.
    let qb = api.get("/api/queues/%2F/q/bindings").await.json();
    assert_eq!(qb.as_array().unwrap().len(), 3);
    assert_eq!(qb[0]["source"], "");

    let r = api
        .post(
            "/api/exchanges/%2F/ev/publish",
            r#"{"properties":{},"routing_key":"a.b","payload":"x","payload_encoding":"string"}"#,
        )
        .await;
    assert_eq!(r.json(), json!({"routed": true}));

    // Delete by properties key (percent-encoded in the path).
    assert_eq!(
        api.delete("/api/bindings/%2F/e/ev/q/q/a.%252A")
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete(&format!("/api/bindings/%2F/e/ev/q/q/{with_args}"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.get("/api/bindings/%2F/e/ev/q/q").await.json(),
        json!([])
    );
    assert_eq!(
        api.post("/api/bindings/%2F/e/ev/q/missing", "{}")
            .await
            .status,
        404
    );

    assert_eq!(
        api.delete("/api/exchanges/%2F/amq.direct").await.status,
        401
    );
    assert_eq!(api.delete("/api/exchanges/%2F/ev").await.status, 204);
    assert_eq!(api.get("/api/exchanges/%2F/ev").await.status, 404);
    let xs = api.get("/api/exchanges/%2F?columns=name").await.json();
    assert!(xs.as_array().unwrap().iter().any(|x| x["name"] == ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_consumers_are_listed_and_closed() {
    let b = start_broker().await;
    let api = guest(&b);
    let conn = connect(&b).await;
    let ch = channel(&conn).await;
    within(
        "declare",
        ch.queue_declare(
            "cq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within(
        "qos",
        ch.basic_qos(7, lapin::options::BasicQosOptions::default()),
    )
    .await
    .unwrap();
    // Held: lapin cancels a consumer when it is dropped.
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "cq".into(),
            "tag-1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let conns = api.get("/api/connections").await.json();
    assert_eq!(conns.as_array().unwrap().len(), 1);
    let c = &conns[0];
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["state"], "running");
    assert_eq!(c["channels"], 1);
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["peer_host"], "127.0.0.1");
    assert_eq!(c["client_properties"]["product"], "lapin");
    let name = c["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> 127.0.0.1:"), "{name}");

    let chans = api.get("/api/channels").await.json();
    assert_eq!(chans[0]["name"], format!("{name} (1)"));
    assert_eq!(chans[0]["prefetch_count"], 7);
    assert_eq!(chans[0]["consumer_count"], 1, "{chans}");
    let cons = api.get("/api/consumers").await.json();
    assert_eq!(cons[0]["consumer_tag"], "tag-1");
    assert_eq!(cons[0]["queue"], json!({"name": "cq", "vhost": "/"}));
    assert_eq!(cons[0]["channel_details"]["connection_name"], name.as_str());
    assert_eq!(cons[0]["prefetch_count"], 7);
    let qj = api.get("/api/queues/%2F/cq").await.json();
    assert_eq!(qj["consumers"], 1, "{qj}");

    // Closed with X-Reason: the client sees 320 and the reason.
    let path = format!("/api/connections/{}", urlencode(&name));
    let r = api
        .request("DELETE", &path, None, &["X-Reason: maintenance"])
        .await;
    assert_eq!(r.status, 204);
    within("close notice", async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(api.get(&path).await.status, 404);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_change_what_clients_may_do() {
    let b = start_broker().await;
    let api = guest(&b);
    assert_eq!(
        api.put(
            "/api/vhosts/shop",
            r#"{"description":"the shop","tags":"a,b"}"#
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.put("/api/vhosts/shop", r#"{"description":"the shop"}"#)
            .await
            .status,
        204
    );
    let v = api.get("/api/vhosts/shop").await.json();
    assert_eq!(v["description"], "the shop");
    assert_eq!(v["tags"], json!(["a", "b"]));
    // The creator got full permissions on it.
    assert_eq!(
        api.get("/api/permissions/shop/guest").await.json()["configure"],
        ".*"
    );

    assert_eq!(
        api.put(
            "/api/users/ann",
            r#"{"password":"pw1","tags":["management"]}"#
        )
        .await
        .status,
        201
    );
    let u = api.get("/api/users/ann").await.json();
    assert_eq!(u["tags"], json!(["management"]));
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(u["password_hash"].as_str().unwrap().len(), 48);
    assert_eq!(
        api.put(
            "/api/permissions/shop/nobody",
            r#"{"configure":".*","write":".*","read":".*"}"#
        )
        .await
        .json(),
        json!({"error": "bad_request", "reason": "vhost_or_user_not_found"})
    );
    assert_eq!(
        api.put(
            "/api/permissions/shop/ann",
            r#"{"configure":"^ann","write":".*","read":".*"}"#
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.put(
            "/api/permissions/shop/ann",
            r#"{"configure":"(","write":".*","read":".*"}"#
        )
        .await
        .status,
        400
    );
    let url = format!("amqp://ann:pw1@{}/shop", b.addr);
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    within(
        "declare",
        ch.queue_declare(
            "ann.q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    // Revoked: the next declare on the open channel is refused.
    assert_eq!(api.delete("/api/permissions/shop/ann").await.status, 204);
    let refused = within(
        "declare",
        ch.queue_declare(
            "ann.r".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert!(refused.is_err(), "declare after revocation succeeded");

    // The user sees its own connection only; deleting it closes it.
    let ann = Http::new(b.http, "ann", "pw1");
    assert_eq!(
        ann.get("/api/connections")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get("/api/users/without-permissions").await.json()[0]["name"],
        "ann"
    );
    assert_eq!(api.delete("/api/users/ann").await.status, 204);
    assert_eq!(api.delete("/api/users/ann").await.status, 404);
    within("closed by user deletion", async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(ann.get("/api/overview").await.status, 401);

    // Deleting a vhost removes what it holds.
    api.put("/api/queues/shop/keep", r#"{"durable":true}"#)
        .await;
    assert_eq!(api.delete("/api/vhosts/shop").await.status, 204);
    assert_eq!(api.get("/api/queues/shop/keep").await.status, 404);
    assert_eq!(api.get("/api/vhosts/shop").await.status, 404);
    assert_eq!(
        api.post("/api/users/bulk-delete", r#"{"users":["x","y"]}"#)
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_definitions_fixture_imports_and_its_users_log_in() {
    let b = start_durable_broker().await;
    let api = guest(&b);
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/rabbitmq-3.10-definitions.json"
    ))
    .unwrap();
    let fixture: Value = serde_json::from_str(&fixture).unwrap();
    let r = api.post("/api/definitions", &fixture.to_string()).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let export = api.get("/api/definitions").await.json();
    for kind in [
        "users",
        "vhosts",
        "queues",
        "exchanges",
        "bindings",
        "permissions",
        "topic_permissions",
        "policies",
    ] {
        let want = fixture[kind].as_array().unwrap().len();
        let got = export[kind].as_array().unwrap().len();
        assert!(got >= want, "{kind}: exported {got}, fixture has {want}");
    }
    for q in fixture["queues"].as_array().unwrap() {
        let path = format!(
            "/api/queues/{}/{}",
            urlencode(q["vhost"].as_str().unwrap()),
            urlencode(q["name"].as_str().unwrap())
        );
        let got = api.get(&path).await.json();
        assert_eq!(got["arguments"], q["arguments"], "{path}");
    }
    // Imported hashes: the fixture's users log in with their passwords
    // (the fixture's README gives them), over AMQP and HTTP.
    let export_users: Vec<&str> = export["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(export_users.contains(&"alice"));
    // The operator policy and the vhost limit come back under parameters.
    assert!(
        export["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["component"] == "vhost-limits"
                && p["vhost"] == "shop"
                && p["value"] == json!({"max-connections": 500})),
        "{}",
        export["parameters"]
    );
    let ops: Vec<&Value> = export["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["component"] == "operator_policy")
        .collect();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        ops[0]["value"]["definition"],
        json!({"max-length-bytes": 1073741824})
    );
    let broker = b.restart().await;
    let api = guest(&broker);
    assert_eq!(api.get("/api/queues/shop/orders.created").await.status, 200);
    // Policies applied, and back after the restart.
    let cap = api.get("/api/policies/shop/cap").await.json();
    assert_eq!(
        cap["definition"],
        json!({"max-length": 100000, "overflow": "reject-publish"})
    );
    let queues = fixture["queues"].as_array().unwrap();
    let audit = queues
        .iter()
        .find(|q| q["vhost"] == "shop" && q["name"].as_str().unwrap().starts_with("audit"))
        .expect("the fixture has an audit queue in shop");
    let got = api
        .get(&format!(
            "/api/queues/shop/{}",
            urlencode(audit["name"].as_str().unwrap())
        ))
        .await
        .json();
    assert_eq!(got["policy"], "cap");
    assert_eq!(got["operator_policy"], "limits");
    // The fixture's users log in with their passwords (see
    // tests/fixtures/README.md), over HTTP and AMQP, after the restart.
    for (user, password, status) in [
        ("alice", "alice-secret", 200),
        ("bob", "bob-pass-2", 200),
        ("carol", "c4rol!", 200),
        // No management tag: known, but not let in.
        ("svc-orders", "orders-svc-pw", 401),
    ] {
        let r = Http::new(broker.http, user, password)
            .get("/api/whoami")
            .await;
        assert_eq!(r.status, status, "{user}");
        if status == 401 {
            assert_eq!(r.json()["reason"], "Not management user");
        }
        assert_eq!(
            Http::new(broker.http, user, "wrong")
                .get("/api/whoami")
                .await
                .json()["reason"],
            "Login failed"
        );
    }
    let conn = connect_url(&format!(
        "amqp://svc-orders:orders-svc-pw@{}/shop",
        broker.addr
    ))
    .await;
    let ch = channel(&conn).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare("orders.created".into(), passive, FieldTable::default()),
    )
    .await
    .unwrap();
    within("close", conn.close(200, "OK".into())).await.unwrap();
    // A file that fails part-way applies nothing.
    let bad = json!({"vhosts": [{"name": "fresh"}], "queues": [{"name": "q", "vhost": "fresh", "durable": true, "arguments": {"x-max-priority": "high"}}]});
    assert_eq!(
        api.post("/api/definitions", &bad.to_string()).await.status,
        400
    );
    assert_eq!(api.get("/api/vhosts/fresh").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_nodes_and_health_checks() {
    let b = start_broker().await;
    let api = guest(&b);
    let o = api.get("/api/overview").await.json();
    assert_eq!(o["product_name"], "Warren");
    assert!(o["rabbitmq_version"].as_str().unwrap().starts_with("3."));
    assert_eq!(o["object_totals"]["queues"], 0);
    let listeners = o["listeners"].as_array().unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| l["protocol"] == "amqp" && l["port"] == b.addr.port())
    );
    let n = api.get("/api/nodes").await.json();
    assert_eq!(n[0]["running"], true);
    assert_eq!(
        api.get("/api/health/checks/alarms").await.json(),
        json!({"status": "ok"})
    );
    assert_eq!(
        api.get(&format!(
            "/api/health/checks/port-listener/{}",
            b.addr.port()
        ))
        .await
        .status,
        200
    );
    let r = api.get("/api/health/checks/port-listener/1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "failed");
    assert_eq!(
        api.get("/api/health/checks/protocol-listener/amqp")
            .await
            .status,
        200
    );
    assert_eq!(
        api.get("/api/aliveness-test/%2F").await.json(),
        json!({"status": "ok"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_apply_to_what_they_match_and_follow_changes() {
    let b = start_durable_broker().await;
    let api = guest(&b);
    api.put("/api/queues/%2F/jobs.a", r#"{"durable":true}"#)
        .await;
    api.put(
        "/api/queues/%2F/other",
        r#"{"durable":true,"arguments":{"x-max-length":2}}"#,
    )
    .await;
    for i in 0..5 {
        for q in ["jobs.a", "other"] {
            let body = format!(
                r#"{{"properties":{{}},"routing_key":"{q}","payload":"m{i}","payload_encoding":"string"}}"#
            );
            api.post("/api/exchanges/%2F/amq.default/publish", &body)
                .await;
        }
    }
    assert_eq!(
        api.get("/api/queues/%2F/jobs.a").await.json()["messages"],
        5
    );
    // max-priority is not a policy key, as in RabbitMQ.
    let r = api
        .put(
            "/api/policies/%2F/bad",
            r#"{"pattern":".*","definition":{"max-priority":10}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Validation failed\n\n[<<\"max-priority\">>] are not recognised policy settings\n"
    );
    // A matching policy lowers the limit at once; the other queue keeps
    // its own lower argument (the lower value wins).
    let r = api
        .put(
            "/api/policies/%2F/cap",
            r#"{"pattern":"^(jobs|other)","definition":{"max-length":3},"priority":1,"apply-to":"queues"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let q = api.get("/api/queues/%2F/jobs.a").await.json();
    assert_eq!(q["messages"], 3);
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 3}));
    assert_eq!(api.get("/api/queues/%2F/other").await.json()["messages"], 2);
    // A higher-priority match takes over.
    api.put(
        "/api/policies/%2F/jobs",
        r#"{"pattern":"^jobs\\.","definition":{"max-length":1,"message-ttl":60000},"priority":5,"apply-to":"queues"}"#,
    )
    .await;
    let q = api.get("/api/queues/%2F/jobs.a").await.json();
    assert_eq!(q["policy"], "jobs");
    assert_eq!(q["messages"], 1);
    // An operator policy is merged in: the lower limit wins.
    let r = api
        .put(
            "/api/operator-policies/%2F/ops",
            r#"{"pattern":".*","definition":{"max-length":0},"apply-to":"queues"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let q = api.get("/api/queues/%2F/jobs.a").await.json();
    assert_eq!(q["operator_policy"], "ops");
    assert_eq!(q["effective_policy_definition"]["max-length"], 0);
    assert_eq!(q["messages"], 0);
    let r = api
        .put(
            "/api/operator-policies/%2F/bad",
            r#"{"pattern":".*","definition":{"dead-letter-exchange":"x"}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api.delete("/api/operator-policies/%2F/ops").await.status,
        204
    );
    // Removing the policies lifts the limits again.
    assert_eq!(api.delete("/api/policies/%2F/jobs").await.status, 204);
    assert_eq!(api.delete("/api/policies/%2F/cap").await.status, 204);
    assert_eq!(api.delete("/api/policies/%2F/cap").await.status, 404);
    assert_eq!(
        api.get("/api/queues/%2F/jobs.a").await.json()["policy"],
        Value::Null
    );
    for i in 0..3 {
        let body = format!(
            r#"{{"properties":{{}},"routing_key":"jobs.a","payload":"n{i}","payload_encoding":"string"}}"#
        );
        api.post("/api/exchanges/%2F/amq.default/publish", &body)
            .await;
    }
    assert_eq!(
        api.get("/api/queues/%2F/jobs.a").await.json()["messages"],
        3
    );

    // An alternate exchange by policy catches what does not route.
    api.put("/api/exchanges/%2F/in", r#"{"type":"direct"}"#)
        .await;
    api.put("/api/exchanges/%2F/unrouted", r#"{"type":"fanout"}"#)
        .await;
    api.put("/api/queues/%2F/lost", r#"{"durable":true}"#).await;
    api.post("/api/bindings/%2F/e/unrouted/q/lost", "{}").await;
    api.put(
        "/api/policies/%2F/ae",
        r#"{"pattern":"^in$","definition":{"alternate-exchange":"unrouted"},"apply-to":"exchanges"}"#,
    )
    .await;
    assert_eq!(
        api.get("/api/exchanges/%2F/in").await.json()["policy"],
        "ae"
    );
    let r = api
        .post(
            "/api/exchanges/%2F/in/publish",
            r#"{"properties":{},"routing_key":"nobody","payload":"x","payload_encoding":"string"}"#,
        )
        .await;
    assert_eq!(r.json(), json!({"routed": true}));
    assert_eq!(api.get("/api/queues/%2F/lost").await.json()["messages"], 1);

    // Policies are stored.
    let b = b.restart().await;
    let api = guest(&b);
    assert_eq!(
        api.get("/api/policies")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get("/api/exchanges/%2F/in").await.json()["policy"],
        "ae"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_apply_to_single_objects_too() {
    let b = start_broker().await;
    let api = guest(&b);
    let o = api
        .get("/api/overview?columns=rabbitmq_version,object_totals.queues")
        .await;
    assert_eq!(o.status, 200);
    let o = o.json();
    assert_eq!(o.as_object().unwrap().len(), 2, "{o}");
    assert_eq!(o["object_totals"], json!({"queues": 0}));
    api.put("/api/queues/%2F/c", "{}").await;
    let q = api
        .get("/api/queues/%2F/c?columns=name,durable")
        .await
        .json();
    assert_eq!(q, json!({"name": "c", "durable": false}));
    assert_eq!(api.get("/api/vhost-limits").await.json(), json!([]));
    let r = api.post("/api/definitions", "{not json").await;
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "failed_to_parse_json"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_default_queue_type_applies_to_durable_declares() {
    let b = start_broker().await;
    let api = guest(&b);
    assert_eq!(
        api.put("/api/vhosts/qq", r#"{"default_queue_type":"quorum"}"#)
            .await
            .status,
        201
    );
    assert_eq!(
        api.get("/api/vhosts/qq").await.json()["default_queue_type"],
        "quorum"
    );
    assert_eq!(
        api.put("/api/queues/qq/jobs", r#"{"durable":true}"#)
            .await
            .status,
        201
    );
    let q = api.get("/api/queues/qq/jobs").await.json();
    assert_eq!(q["type"], "quorum");
    assert_eq!(q["arguments"], json!({"x-queue-type": "quorum"}));
    // The same declare again is equivalent; an explicit type still wins.
    assert_eq!(
        api.put("/api/queues/qq/jobs", r#"{"durable":true}"#)
            .await
            .status,
        204
    );
    api.put(
        "/api/queues/qq/plain",
        r#"{"durable":true,"arguments":{"x-queue-type":"classic"}}"#,
    )
    .await;
    assert_eq!(
        api.get("/api/queues/qq/plain").await.json()["type"],
        "classic"
    );
    // Transient queues stay classic.
    api.put("/api/queues/qq/temp", r#"{"durable":false}"#).await;
    assert_eq!(
        api.get("/api/queues/qq/temp").await.json()["type"],
        "classic"
    );
    assert_eq!(
        api.put("/api/vhosts/bad", r#"{"default_queue_type":"stream"}"#)
            .await
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_limits_refuse_what_exceeds_them_and_are_stored() {
    let b = start_durable_broker().await;
    let api = guest(&b);
    assert_eq!(api.get("/api/vhost-limits").await.json(), json!([]));
    assert_eq!(
        api.put("/api/vhost-limits/%2F/max-connections", r#"{"value":1}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        api.put("/api/vhost-limits/%2F/max-queues", r#"{"value":1}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        api.put("/api/vhost-limits/%2F/max-widgets", r#"{"value":1}"#)
            .await
            .status,
        400
    );
    assert_eq!(
        api.get("/api/vhost-limits/%2F").await.json(),
        json!([{"vhost": "/", "value": {"max-connections": 1, "max-queues": 1}}])
    );
    let first = connect(&b).await;
    let second = lapin::Connection::connect(&b.url(), lapin::ConnectionProperties::default()).await;
    let err = match second {
        Ok(_) => panic!("a second connection over the limit was let in"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(
            "access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        ),
        "{err}"
    );
    assert_eq!(api.put("/api/queues/%2F/one", "{}").await.status, 201);
    let r = api.put("/api/queues/%2F/two", "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "cannot declare queue 'two': queue limit in vhost '/' (1) is reached"
    );
    // The connection already open carries on.
    let ch = channel(&first).await;
    within(
        "declare one",
        ch.queue_declare(
            "one".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    within("close", first.close(200, "OK".into()))
        .await
        .unwrap();
    // Stored, and exported as RabbitMQ's vhost-limits parameter.
    let b = b.restart().await;
    let api = guest(&b);
    assert_eq!(
        api.get("/api/vhost-limits")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let defs = api.get("/api/definitions").await.json();
    assert!(
        defs["parameters"]
            .as_array()
            .unwrap()
            .contains(&json!({"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-connections": 1, "max-queues": 1}})),
        "{}",
        defs["parameters"]
    );
    assert_eq!(
        api.delete("/api/vhost-limits/%2F/max-connections")
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete("/api/vhost-limits/%2F/max-queues").await.status,
        204
    );
    assert_eq!(api.get("/api/vhost-limits").await.json(), json!([]));
}
