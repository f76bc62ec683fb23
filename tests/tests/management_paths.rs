//! The management HTTP API paths `management.rs` leaves out, checked
//! against RabbitMQ 3.x's answers (status codes, bodies, shapes): cluster
//! name, extensions, single nodes, vhost-scoped lists, per-user and topic
//! permissions, a connection's channels and a user's connections,
//! parameters, per-vhost definitions, queue actions, exchange bindings,
//! `if-unused` deletes, the health checks, OPTIONS, HEAD and trailing
//! slashes; then what each user tag may do and see, and how bad input is
//! refused without leaving anything half-made.
//!
//! Where Warren answers differently from RabbitMQ the test still asserts
//! RabbitMQ's answer and is ignored with the difference as its reason.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use lapin::options::BasicConsumeOptions;
use serde_json::{Value, json};
use warren_tests::http::{Http, Reply, guest};
use warren_tests::lapin_util::{channel, connect, connect_url, consume, declare, within};
use warren_tests::{RawClient, TestBroker, start_broker, start_broker_with};

/// Status and body, for assertion messages.
fn show(r: &Reply) -> String {
    format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as
/// clients encode path segments (connection names hold spaces and `->`).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `key` field of every item of a JSON list, in order.
fn field(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {list}"))
        .iter()
        .map(|i| match &i[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// [`field`], sorted.
fn sorted(list: &Value, key: &str) -> Vec<String> {
    let mut v = field(list, key);
    v.sort();
    v
}

/// Asserts the status, showing the body when it differs.
fn expect(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", show(r));
}

/// Asserts RabbitMQ's 404 for a missing object or path.
fn expect_not_found(r: &Reply, what: &str) {
    expect(r, 404, what);
    assert_eq!(
        r.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"}),
        "{what}"
    );
}

/// Asserts a 401 `not_authorised` with `reason` and no challenge.
fn expect_refused(r: &Reply, reason: &str, what: &str) {
    expect(r, 401, what);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": reason}),
        "{what}"
    );
    assert!(
        r.header("www-authenticate").is_none(),
        "{what}: a refusal after login asks for no credentials"
    );
}

/// Asserts a 400 `bad_request` and returns its reason rendered as text
/// (RabbitMQ sends some reasons as arrays).
fn expect_bad_request(r: &Reply, what: &str) -> String {
    expect(r, 400, what);
    let body = r.json();
    assert_eq!(body["error"], "bad_request", "{what}: {body}");
    match &body["reason"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Creates `name` with `tags` and full permissions on `vhost`.
async fn user_with(api: &Http, name: &str, password: &str, tags: &str, vhost: &str) {
    let body = json!({"password": password, "tags": tags}).to_string();
    expect(
        &api.put(&format!("/api/users/{name}"), &body).await,
        201,
        "create user",
    );
    let r = api
        .put(
            &format!("/api/permissions/{}/{name}", urlencode(vhost)),
            r#"{"configure":".*","write":".*","read":".*"}"#,
        )
        .await;
    expect(&r, 201, "grant permissions");
}

/// The names of `user`'s connections, as an administrator lists them.
async fn connection_names(api: &Http, user: &str) -> Vec<String> {
    let all = api.get("/api/connections").await.json();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["user"] == user)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (bounded) until lapin sees the broker close `conn`.
async fn wait_closed(conn: &lapin::Connection, what: &str) {
    within(what, async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

// ------------------------------------------------------------ cluster, nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_name_is_read_by_everyone_and_set_by_administrators() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    let mgr = Http::new(b.http, "mgr", "pw");

    let r = api.get("/api/cluster-name").await;
    expect(&r, 200, "GET cluster-name");
    let original = r.json()["name"].as_str().unwrap().to_string();
    assert!(!original.is_empty());
    assert_eq!(
        mgr.get("/api/cluster-name").await.json(),
        json!({ "name": original })
    );

    let r = mgr.put("/api/cluster-name", r#"{"name":"by-mgr"}"#).await;
    expect_refused(
        &r,
        "Not administrator user",
        "PUT cluster-name as management",
    );
    // A name is mandatory.
    expect_bad_request(&api.put("/api/cluster-name", "{}").await, "no name");
    assert_eq!(
        api.get("/api/cluster-name").await.json()["name"],
        original.as_str()
    );

    let r = api
        .put("/api/cluster-name", r#"{"name":"warren-paths"}"#)
        .await;
    expect(&r, 204, "PUT cluster-name as administrator");
    assert!(r.body.is_empty());
    assert_eq!(
        api.get("/api/cluster-name").await.json(),
        json!({"name": "warren-paths"})
    );
    assert_eq!(
        api.get("/api/overview").await.json()["cluster_name"],
        "warren-paths"
    );
    let defs = api.get("/api/definitions").await.json();
    assert!(
        defs["global_parameters"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "cluster_name", "value": "warren-paths"})),
        "{}",
        defs["global_parameters"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_and_a_single_node() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    let mgr = Http::new(b.http, "mgr", "pw");

    // Any management user may list the UI extensions (Warren has no UI,
    // so its list is empty where RabbitMQ names `dispatcher.js`).
    for who in [&api, &mgr] {
        let r = who.get("/api/extensions").await;
        expect(&r, 200, "extensions");
        assert!(r.json().is_array(), "{}", show(&r));
    }

    let nodes = api.get("/api/nodes").await.json();
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let name = nodes[0]["name"].as_str().unwrap().to_string();
    let path = format!("/api/nodes/{}", urlencode(&name));
    let r = api.get(&path).await;
    expect(&r, 200, "GET nodes/{node}");
    let node = r.json();
    assert_eq!(node["name"], name.as_str());
    assert_eq!(node["running"], true);
    // Types the Go client needs: os_pid a string, gauges numbers, alarms booleans.
    assert!(node["os_pid"].is_string(), "{node}");
    assert!(node["mem_used"].is_u64(), "{node}");
    assert!(node["uptime"].is_u64(), "{node}");
    assert!(node["mem_alarm"].is_boolean(), "{node}");
    assert!(node["disk_free_alarm"].is_boolean(), "{node}");

    expect_not_found(&api.get("/api/nodes/rabbit%40nowhere").await, "other node");
    expect_refused(
        &mgr.get(&path).await,
        "Not monitor user",
        "node as management",
    );
}

// ------------------------------------------------------------ vhost-scoped lists

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhosts_permissions_connections_and_channels_are_listed() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/vhosts/shop", "{}").await, 201, "vhost");
    user_with(&api, "ann", "pw", "management", "shop").await;
    let r = api
        .put(
            "/api/topic-permissions/shop/ann",
            r#"{"exchange":"amq.topic","write":"^ann\\.","read":".*"}"#,
        )
        .await;
    expect(&r, 201, "topic permission");

    let perms = api.get("/api/vhosts/shop/permissions").await.json();
    let mut perms = perms.as_array().unwrap().clone();
    perms.sort_by_key(|p| p["user"].as_str().unwrap().to_string());
    assert_eq!(
        perms,
        [
            json!({"user": "ann", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"}),
            // The creator of a vhost gets everything on it.
            json!({"user": "guest", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"}),
        ]
    );
    let root = api.get("/api/vhosts/%2F/permissions").await.json();
    assert_eq!(field(&root, "user"), ["guest"]);
    assert_eq!(field(&root, "vhost"), ["/"]);
    expect_not_found(
        &api.get("/api/vhosts/missing/permissions").await,
        "permissions of a missing vhost",
    );

    assert_eq!(
        api.get("/api/vhosts/shop/topic-permissions").await.json(),
        json!([{"user": "ann", "vhost": "shop", "exchange": "amq.topic", "write": "^ann\\.", "read": ".*"}])
    );
    assert_eq!(
        api.get("/api/vhosts/%2F/topic-permissions").await.json(),
        json!([])
    );
    expect_not_found(
        &api.get("/api/vhosts/missing/topic-permissions").await,
        "topic permissions of a missing vhost",
    );

    // One connection in each vhost; ann's has two channels.
    let g = connect(&b).await;
    let _gch = channel(&g).await;
    let a = connect_url(&format!("amqp://ann:pw@{}/shop", b.addr)).await;
    let _a1 = channel(&a).await;
    let _a2 = channel(&a).await;

    let shop = api.get("/api/vhosts/shop/connections").await.json();
    assert_eq!(field(&shop, "user"), ["ann"]);
    assert_eq!(field(&shop, "vhost"), ["shop"]);
    assert_eq!(shop[0]["channels"], 2);
    let root = api.get("/api/vhosts/%2F/connections").await.json();
    assert_eq!(field(&root, "user"), ["guest"]);
    let shop_channels = api.get("/api/vhosts/shop/channels").await.json();
    assert_eq!(sorted(&shop_channels, "number"), ["1", "2"]);
    assert_eq!(field(&shop_channels, "vhost"), ["shop", "shop"]);
    assert_eq!(field(&shop_channels, "user"), ["ann", "ann"]);
    let root_channels = api.get("/api/vhosts/%2F/channels").await.json();
    assert_eq!(field(&root_channels, "user"), ["guest"]);
    expect_not_found(
        &api.get("/api/vhosts/missing/connections").await,
        "connections of a missing vhost",
    );
    expect_not_found(
        &api.get("/api/vhosts/missing/channels").await,
        "channels of a missing vhost",
    );

    // A management user: no permission lists, and only its own vhosts.
    let ann = Http::new(b.http, "ann", "pw");
    expect_refused(
        &ann.get("/api/vhosts/shop/permissions").await,
        "Not administrator user",
        "vhost permissions as management",
    );
    expect_refused(
        &ann.get("/api/vhosts/shop/topic-permissions").await,
        "Not administrator user",
        "vhost topic permissions as management",
    );
    assert_eq!(
        field(
            &ann.get("/api/vhosts/shop/connections").await.json(),
            "user"
        ),
        ["ann"]
    );
    expect_refused(
        &ann.get("/api/vhosts/%2F/connections").await,
        "User not authorised to access virtual host",
        "connections of a vhost ann may not use",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_permissions_and_the_permissions_list() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/vhosts/shop", "{}").await, 201, "vhost");
    user_with(&api, "ann", "pw", "management", "shop").await;
    api.put(
        "/api/topic-permissions/shop/ann",
        r#"{"exchange":"amq.topic","write":".*","read":".*"}"#,
    )
    .await;

    assert_eq!(
        api.get("/api/users/ann/permissions").await.json(),
        json!([{"user": "ann", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"}])
    );
    assert_eq!(
        sorted(
            &api.get("/api/users/guest/permissions").await.json(),
            "vhost"
        ),
        ["/", "shop"]
    );
    assert_eq!(
        api.get("/api/users/ann/topic-permissions").await.json(),
        json!([{"user": "ann", "vhost": "shop", "exchange": "amq.topic", "write": ".*", "read": ".*"}])
    );
    assert_eq!(
        api.get("/api/users/guest/topic-permissions").await.json(),
        json!([])
    );
    expect_not_found(
        &api.get("/api/users/missing/permissions").await,
        "permissions of a missing user",
    );
    expect_not_found(
        &api.get("/api/users/missing/topic-permissions").await,
        "topic permissions of a missing user",
    );

    let all = api.get("/api/permissions").await.json();
    let mut pairs: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 5, "{p}");
            (
                p["user"].as_str().unwrap().to_string(),
                p["vhost"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("ann".to_string(), "shop".to_string()),
            ("guest".to_string(), "/".to_string()),
            ("guest".to_string(), "shop".to_string()),
        ]
    );

    assert_eq!(
        api.get("/api/permissions/%2F/guest").await.json(),
        json!({"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    );
    expect_not_found(
        &api.get("/api/permissions/%2F/ann").await,
        "a permission never granted",
    );
    expect_not_found(
        &api.get("/api/permissions/missing/guest").await,
        "a permission in a missing vhost",
    );
    let ann = Http::new(b.http, "ann", "pw");
    for path in [
        "/api/users/ann/permissions",
        "/api/users/ann/topic-permissions",
        "/api/permissions",
        "/api/permissions/shop/ann",
    ] {
        expect_refused(&ann.get(path).await, "Not administrator user", path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_are_put_listed_and_deleted() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "ann", "pw", "management", "/").await;

    let amq_topic = r#"{"exchange":"amq.topic","write":"^ann\\.","read":".*"}"#;
    expect(
        &api.put("/api/topic-permissions/%2F/ann", amq_topic).await,
        201,
        "new topic permission",
    );
    expect(
        &api.put("/api/topic-permissions/%2F/ann", amq_topic).await,
        204,
        "the same again",
    );
    expect(
        &api.put(
            "/api/topic-permissions/%2F/ann",
            r#"{"exchange":"logs","write":".*","read":"^ann"}"#,
        )
        .await,
        201,
        "a second exchange",
    );
    let mine = api.get("/api/topic-permissions/%2F/ann").await.json();
    let mut mine = mine.as_array().unwrap().clone();
    mine.sort_by_key(|t| t["exchange"].as_str().unwrap().to_string());
    assert_eq!(
        mine,
        [
            json!({"user": "ann", "vhost": "/", "exchange": "amq.topic", "write": "^ann\\.", "read": ".*"}),
            json!({"user": "ann", "vhost": "/", "exchange": "logs", "write": ".*", "read": "^ann"}),
        ]
    );
    let all = api.get("/api/topic-permissions").await.json();
    assert_eq!(sorted(&all, "exchange"), ["amq.topic", "logs"]);

    // One exchange's, then all of them.
    expect(
        &api.delete("/api/topic-permissions/%2F/ann/amq.topic").await,
        204,
        "delete one exchange's",
    );
    assert_eq!(
        field(
            &api.get("/api/topic-permissions/%2F/ann").await.json(),
            "exchange"
        ),
        ["logs"]
    );
    expect(
        &api.delete("/api/topic-permissions/%2F/ann").await,
        204,
        "delete all",
    );
    expect_not_found(
        &api.get("/api/topic-permissions/%2F/ann").await,
        "after deleting all",
    );
    assert_eq!(api.get("/api/topic-permissions").await.json(), json!([]));

    // Refusals: unknown user or vhost, a missing key, a bad expression.
    assert_eq!(
        api.put("/api/topic-permissions/%2F/nobody", amq_topic)
            .await
            .json(),
        json!({"error": "bad_request", "reason": "vhost_or_user_not_found"})
    );
    assert_eq!(
        api.put("/api/topic-permissions/nohost/ann", amq_topic)
            .await
            .json(),
        json!({"error": "bad_request", "reason": "vhost_or_user_not_found"})
    );
    expect_bad_request(
        &api.put(
            "/api/topic-permissions/%2F/ann",
            r#"{"write":".*","read":".*"}"#,
        )
        .await,
        "no exchange",
    );
    expect_bad_request(
        &api.put(
            "/api/topic-permissions/%2F/ann",
            r#"{"exchange":"amq.topic","write":"(","read":".*"}"#,
        )
        .await,
        "a bad regular expression",
    );
    assert_eq!(api.get("/api/topic-permissions").await.json(), json!([]));

    let ann = Http::new(b.http, "ann", "pw");
    expect_refused(
        &ann.get("/api/topic-permissions").await,
        "Not administrator user",
        "list as management",
    );
    expect_refused(
        &ann.put("/api/topic-permissions/%2F/ann", amq_topic).await,
        "Not administrator user",
        "PUT as management",
    );
}

// ------------------------------------------------------------ live objects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_its_channels_and_a_users_connections() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "ann", "pw", "management", "/").await;
    let node = api.get("/api/nodes").await.json()[0]["name"].clone();

    let g = connect(&b).await;
    let _g1 = channel(&g).await;
    let _g2 = channel(&g).await;
    let ann_url = format!("amqp://ann:pw@{}/%2f", b.addr);
    let a1 = connect_url(&ann_url).await;
    let a2 = connect_url(&ann_url).await;

    let name = connection_names(&api, "guest").await.pop().unwrap();
    let path = format!("/api/connections/{}", urlencode(&name));
    let r = api.get(&path).await;
    expect(&r, 200, "GET one connection");
    let c = r.json();
    assert_eq!(c["name"], name.as_str());
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["channels"], 2);
    assert!(c["recv_oct"].is_u64() && c["send_oct"].is_u64(), "{c}");
    assert!(c["send_oct_details"]["rate"].is_number(), "{c}");
    assert!(c["client_properties"].is_object(), "{c}");

    let chans = api.get(&format!("{path}/channels")).await.json();
    assert_eq!(sorted(&chans, "number"), ["1", "2"]);
    for ch in chans.as_array().unwrap() {
        assert_eq!(ch["connection_details"]["name"], name.as_str(), "{ch}");
        assert_eq!(ch["user"], "guest");
    }

    let one = format!("/api/channels/{}", urlencode(&format!("{name} (1)")));
    let r = api.get(&one).await;
    expect(&r, 200, "GET one channel");
    let ch = r.json();
    assert_eq!(ch["name"], format!("{name} (1)"));
    assert_eq!(ch["number"], 1);
    assert_eq!(ch["vhost"], "/");
    assert_eq!(ch["connection_details"]["name"], name.as_str());
    expect_not_found(
        &api.get(&format!(
            "/api/channels/{}",
            urlencode(&format!("{name} (9)"))
        ))
        .await,
        "a channel not open",
    );
    expect_not_found(
        &api.get("/api/connections/nobody%20-%3E%20nowhere").await,
        "a missing connection",
    );
    expect_not_found(
        &api.get("/api/connections/nobody%20-%3E%20nowhere/channels")
            .await,
        "channels of a missing connection",
    );

    // Someone else's connection and channel are not a management user's.
    let ann = Http::new(b.http, "ann", "pw");
    let refusal = "User not authorised to access object";
    expect_refused(&ann.get(&path).await, refusal, "guest's connection");
    expect_refused(
        &ann.get(&format!("{path}/channels")).await,
        refusal,
        "guest's connection's channels",
    );
    expect_refused(&ann.get(&one).await, refusal, "guest's channel");

    // A user's connections, in brief.
    let mut anns = connection_names(&api, "ann").await;
    anns.sort();
    assert_eq!(anns.len(), 2);
    let brief = api.get("/api/connections/username/ann").await.json();
    assert_eq!(sorted(&brief, "name"), anns);
    for item in brief.as_array().unwrap() {
        assert_eq!(item["user"], "ann", "{item}");
        assert_eq!(item["vhost"], "/", "{item}");
        assert_eq!(item["node"], node, "{item}");
    }
    // Ann reads her own, not guest's.
    assert_eq!(
        ann.get("/api/connections/username/ann")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    expect_refused(
        &ann.get("/api/connections/username/guest").await,
        refusal,
        "guest's connections as ann",
    );
    expect_refused(
        &ann.delete("/api/connections/username/guest").await,
        refusal,
        "closing guest's connections as ann",
    );
    assert!(g.status().connected());

    // DELETE closes all of them, and only them.
    expect(
        &api.delete("/api/connections/username/ann").await,
        204,
        "DELETE a user's connections",
    );
    wait_closed(&a1, "ann's first connection closed").await;
    wait_closed(&a2, "ann's second connection closed").await;
    within("ann's connections unlisted", async {
        while api.get("/api/connections/username/ann").await.json() != json!([]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(g.status().connected(), "guest's connection was closed too");
    assert_eq!(connection_names(&api, "guest").await, [name]);

    // The client is told why, as RabbitMQ tells it.
    let mut raw = RawClient::connect(b.addr).await;
    raw.handshake().await;
    expect(
        &api.delete("/api/connections/username/guest").await,
        204,
        "DELETE guest's connections",
    );
    let close = raw.expect_close().await;
    assert_eq!(close.code, 320);
    assert_eq!(
        close.text,
        "CONNECTION_FORCED - Closed via management plugin"
    );
    wait_closed(&g, "guest's lapin connection closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_a_vhost_and_deletes_of_what_is_in_use() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/vhosts/shop", "{}").await, 201, "vhost");
    let conn = connect(&b).await;
    let ch = channel(&conn).await;
    declare(&ch, "busy").await;
    // Held: lapin cancels a consumer when it is dropped.
    let _consumer = consume(&ch, "busy", "c-busy", BasicConsumeOptions::default()).await;
    let name = connection_names(&api, "guest").await.pop().unwrap();

    let cons = api.get("/api/consumers/%2F").await.json();
    assert_eq!(cons.as_array().unwrap().len(), 1, "{cons}");
    let c = &cons[0];
    assert_eq!(c["consumer_tag"], "c-busy");
    assert_eq!(c["queue"], json!({"name": "busy", "vhost": "/"}));
    assert_eq!(c["channel_details"]["connection_name"], name.as_str());
    assert_eq!(c["channel_details"]["number"], 1);
    assert_eq!(c["channel_details"]["user"], "guest");
    assert_eq!(c["ack_required"], true);
    assert_eq!(c["exclusive"], false);
    assert_eq!(c["active"], true);
    assert_eq!(c["activity_status"], "up");
    assert_eq!(c["arguments"], json!({}));
    assert_eq!(api.get("/api/consumers/shop").await.json(), json!([]));
    expect_not_found(
        &api.get("/api/consumers/missing").await,
        "consumers of a missing vhost",
    );

    // A queue with a consumer is in use.
    let r = api.delete("/api/queues/%2F/busy?if-unused=true").await;
    let reason = expect_bad_request(&r, "DELETE a queue in use with if-unused");
    assert!(reason.contains("in use"), "{reason}");
    let q = api.get("/api/queues/%2F/busy").await;
    expect(&q, 200, "the queue is still there");
    assert_eq!(q.json()["consumers"], 1);

    // An exchange that is the source of a binding is in use.
    expect(
        &api.put("/api/exchanges/%2F/src", r#"{"type":"direct"}"#)
            .await,
        201,
        "src",
    );
    expect(
        &api.put("/api/exchanges/%2F/dst", r#"{"type":"fanout"}"#)
            .await,
        201,
        "dst",
    );
    expect(
        &api.post("/api/bindings/%2F/e/src/e/dst", r#"{"routing_key":"k"}"#)
            .await,
        201,
        "bind",
    );
    let r = api.delete("/api/exchanges/%2F/src?if-unused=true").await;
    let reason = expect_bad_request(&r, "DELETE a bound exchange with if-unused");
    assert!(reason.contains("in use"), "{reason}");
    expect(
        &api.get("/api/exchanges/%2F/src").await,
        200,
        "the exchange is still there",
    );
    assert_eq!(
        api.get("/api/bindings/%2F/e/src/e/dst")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Without the condition both go.
    expect(
        &api.delete("/api/exchanges/%2F/src").await,
        204,
        "DELETE exchange",
    );
    expect(
        &api.delete("/api/queues/%2F/busy").await,
        204,
        "DELETE queue",
    );
    expect_not_found(&api.get("/api/queues/%2F/busy").await, "deleted queue");
}

// ------------------------------------------------------------ topology

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_are_listed_from_both_ends() {
    let b = start_broker().await;
    let api = guest(&b);
    for (x, kind) in [("src", "topic"), ("dst", "fanout")] {
        let body = json!({ "type": kind }).to_string();
        expect(
            &api.put(&format!("/api/exchanges/%2F/{x}"), &body).await,
            201,
            x,
        );
    }
    expect(&api.put("/api/queues/%2F/q", "{}").await, 201, "queue");
    expect(&api.put("/api/queues/%2F/q2", "{}").await, 201, "queue");

    let r = api
        .post("/api/bindings/%2F/e/src/e/dst", r#"{"routing_key":"a.#"}"#)
        .await;
    expect(&r, 201, "exchange-to-exchange binding");
    assert_eq!(r.header("location"), Some("dst/a.%23"));
    expect(
        &api.post("/api/bindings/%2F/e/src/q/q", r#"{"routing_key":"k"}"#)
            .await,
        201,
        "exchange-to-queue binding",
    );
    expect(
        &api.post("/api/bindings/%2F/e/dst/q/q2", "{}").await,
        201,
        "fanout to q2",
    );

    let e2e = json!({
        "source": "src", "vhost": "/", "destination": "dst", "destination_type": "exchange",
        "routing_key": "a.#", "arguments": {}, "properties_key": "a.%23",
    });
    let from_src = api
        .get("/api/exchanges/%2F/src/bindings/source")
        .await
        .json();
    let mut dests = field(&from_src, "destination");
    dests.sort();
    assert_eq!(dests, ["dst", "q"]);
    assert!(from_src.as_array().unwrap().contains(&e2e), "{from_src}");
    assert_eq!(
        api.get("/api/exchanges/%2F/dst/bindings/destination")
            .await
            .json(),
        json!([e2e])
    );
    assert_eq!(
        api.get("/api/exchanges/%2F/src/bindings/destination")
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        field(
            &api.get("/api/exchanges/%2F/dst/bindings/source")
                .await
                .json(),
            "destination"
        ),
        ["q2"]
    );
    expect_not_found(
        &api.get("/api/exchanges/%2F/missing/bindings/source").await,
        "bindings of a missing exchange",
    );
    expect_not_found(
        &api.get("/api/exchanges/%2F/missing/bindings/destination")
            .await,
        "bindings to a missing exchange",
    );

    // The binding by itself, and in the vhost's and the broker's lists.
    assert_eq!(
        api.get("/api/bindings/%2F/e/src/e/dst").await.json(),
        json!([e2e])
    );
    assert_eq!(
        api.get("/api/bindings/%2F/e/src/e/dst/a.%2523")
            .await
            .json(),
        e2e
    );
    expect_not_found(
        &api.get("/api/bindings/%2F/e/src/e/dst/nope").await,
        "a binding with another key",
    );
    for path in ["/api/bindings", "/api/bindings/", "/api/bindings/%2F"] {
        let all = api.get(path).await.json();
        assert!(all.as_array().unwrap().contains(&e2e), "{path}: {all}");
        // Each queue's implicit binding from the default exchange is listed.
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .any(|b| b["source"] == "" && b["destination"] == "q2"),
            "{path}: {all}"
        );
    }

    // Messages follow it: src -> dst -> q2.
    let r = api
        .post(
            "/api/exchanges/%2F/src/publish",
            r#"{"properties":{},"routing_key":"a.b","payload":"x","payload_encoding":"string"}"#,
        )
        .await;
    assert_eq!(r.json(), json!({"routed": true}));
    assert_eq!(api.get("/api/queues/%2F/q2").await.json()["messages"], 1);
    assert_eq!(api.get("/api/queues/%2F/q").await.json()["messages"], 0);

    expect(
        &api.delete("/api/bindings/%2F/e/src/e/dst/a.%2523").await,
        204,
        "unbind",
    );
    assert_eq!(
        api.get("/api/exchanges/%2F/dst/bindings/destination")
            .await
            .json(),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_actions_are_for_administrators() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    expect(&api.put("/api/queues/%2F/aq", "{}").await, 201, "queue");

    for action in ["sync", "cancel_sync"] {
        let body = json!({ "action": action }).to_string();
        let r = api.post("/api/queues/%2F/aq/actions", &body).await;
        expect(&r, 204, action);
        assert!(r.body.is_empty());
    }
    let reason = expect_bad_request(
        &api.post(
            "/api/queues/%2F/aq/actions",
            r#"{"action":"change_colour"}"#,
        )
        .await,
        "an unknown action",
    );
    assert!(reason.contains("change_colour"), "{reason}");
    expect_bad_request(
        &api.post("/api/queues/%2F/aq/actions", "{}").await,
        "no action",
    );
    expect_not_found(
        &api.post("/api/queues/%2F/missing/actions", r#"{"action":"sync"}"#)
            .await,
        "actions on a missing queue",
    );
    expect_refused(
        &Http::new(b.http, "mgr", "pw")
            .post("/api/queues/%2F/aq/actions", r#"{"action":"sync"}"#)
            .await,
        "Not administrator user",
        "sync as management",
    );
}

// ------------------------------------------------------------ parameters, definitions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_operator_policies_and_a_vhosts_policies() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    let r = api
        .put(
            "/api/operator-policies/%2F/ops",
            r#"{"pattern":"^x","definition":{"max-length":10},"priority":2,"apply-to":"queues"}"#,
        )
        .await;
    expect(&r, 201, "operator policy");
    expect(
        &api.put(
            "/api/policies/%2F/p1",
            r#"{"pattern":"^y","definition":{"message-ttl":1000}}"#,
        )
        .await,
        201,
        "policy",
    );

    let param = json!({
        "vhost": "/", "component": "operator_policy", "name": "ops",
        "value": {"pattern": "^x", "definition": {"max-length": 10}, "priority": 2, "apply-to": "queues"},
    });
    assert_eq!(api.get("/api/parameters").await.json(), json!([param]));
    assert_eq!(
        api.get("/api/parameters/operator_policy").await.json(),
        json!([param])
    );
    // An unknown component has no parameters.
    assert_eq!(
        api.get("/api/parameters/federation-upstream").await.json(),
        json!([])
    );

    let op = json!({"vhost": "/", "name": "ops", "pattern": "^x", "apply-to": "queues",
                    "definition": {"max-length": 10}, "priority": 2});
    assert_eq!(api.get("/api/operator-policies").await.json(), json!([op]));
    assert_eq!(
        api.get("/api/operator-policies/%2F").await.json(),
        json!([op])
    );
    assert_eq!(api.get("/api/operator-policies/%2F/ops").await.json(), op);
    expect_not_found(
        &api.get("/api/operator-policies/%2F/nope").await,
        "a missing operator policy",
    );

    // A vhost's policies: its own, not the operator's.
    assert_eq!(
        api.get("/api/policies/%2F").await.json(),
        json!([{"vhost": "/", "name": "p1", "pattern": "^y", "apply-to": "all",
                "definition": {"message-ttl": 1000}, "priority": 0}])
    );
    expect_not_found(
        &api.get("/api/policies/missing").await,
        "policies of a missing vhost",
    );

    let mgr = Http::new(b.http, "mgr", "pw");
    expect_refused(
        &mgr.get("/api/parameters").await,
        "User not authorised to access object",
        "parameters as management",
    );
    expect_refused(
        &mgr.get("/api/parameters/operator_policy").await,
        "User not authorised to access object",
        "a component's parameters as management",
    );
    for path in [
        "/api/operator-policies",
        "/api/operator-policies/%2F",
        "/api/operator-policies/%2F/ops",
    ] {
        expect_refused(&mgr.get(path).await, "Not administrator user", path);
    }
    // The policy list is readable by any management user.
    assert_eq!(
        field(&mgr.get("/api/policies/%2F").await.json(), "name"),
        ["p1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhosts_definitions_export_and_import_into_another_vhost() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    for v in ["shop", "copy"] {
        expect(&api.put(&format!("/api/vhosts/{v}"), "{}").await, 201, v);
    }
    expect(
        &api.put(
            "/api/queues/shop/orders",
            r#"{"durable":true,"arguments":{"x-max-length":10}}"#,
        )
        .await,
        201,
        "queue",
    );
    expect(
        &api.put(
            "/api/exchanges/shop/events",
            r#"{"type":"topic","durable":true}"#,
        )
        .await,
        201,
        "exchange",
    );
    expect(
        &api.post(
            "/api/bindings/shop/e/events/q/orders",
            r#"{"routing_key":"order.*"}"#,
        )
        .await,
        201,
        "binding",
    );
    expect(
        &api.put(
            "/api/policies/shop/cap",
            r#"{"pattern":"^orders$","definition":{"max-length":5},"priority":1,"apply-to":"queues"}"#,
        )
        .await,
        201,
        "policy",
    );

    let r = api.get("/api/definitions/shop").await;
    expect(&r, 200, "export a vhost");
    let d = r.json();
    for key in [
        "rabbit_version",
        "parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        assert!(d.get(key).is_some(), "{key} missing from {d}");
    }
    for key in [
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "global_parameters",
    ] {
        assert!(d.get(key).is_none(), "{key} in a vhost's export: {d}");
    }
    // Queues, exchanges and bindings name no vhost.
    assert_eq!(
        d["queues"],
        json!([{"name": "orders", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 10}}])
    );
    assert_eq!(
        d["exchanges"],
        json!([{"name": "events", "type": "topic", "durable": true, "auto_delete": false,
                "internal": false, "arguments": {}}])
    );
    assert_eq!(
        d["bindings"],
        json!([{"source": "events", "destination": "orders", "destination_type": "queue",
                "routing_key": "order.*", "arguments": {}}])
    );
    let p = &d["policies"][0];
    assert_eq!(d["policies"].as_array().unwrap().len(), 1);
    assert_eq!(p["name"], "cap");
    assert_eq!(p["pattern"], "^orders$");
    assert_eq!(p["definition"], json!({"max-length": 5}));
    assert_eq!(p["priority"], 1);
    assert_eq!(p["apply-to"], "queues");

    // Imported into "copy": the same things appear there, and only there.
    let r = api.post("/api/definitions/copy", &d.to_string()).await;
    expect(&r, 204, "import into a vhost");
    let q = api.get("/api/queues/copy/orders").await.json();
    assert_eq!(q["durable"], true);
    assert_eq!(q["arguments"], json!({"x-max-length": 10}));
    assert_eq!(q["policy"], "cap");
    assert_eq!(
        api.get("/api/exchanges/copy/events").await.json()["type"],
        "topic"
    );
    assert_eq!(
        field(
            &api.get("/api/bindings/copy/e/events/q/orders").await.json(),
            "routing_key"
        ),
        ["order.*"]
    );
    assert_eq!(
        api.get("/api/policies/copy/cap").await.json()["definition"],
        json!({"max-length": 5})
    );
    let copy = api.get("/api/definitions/copy").await.json();
    for key in ["queues", "exchanges", "bindings"] {
        assert_eq!(copy[key], d[key], "{key}");
    }
    expect_not_found(&api.get("/api/queues/%2F/orders").await, "nothing in /");
    expect_not_found(&api.get("/api/exchanges/%2F/events").await, "nothing in /");

    // A file that does not check out adds nothing (Warren checks a whole
    // file before applying any of it).
    let bad = json!({"queues": [
        {"name": "extra", "durable": true, "auto_delete": false, "arguments": {}},
        {"name": "orders", "durable": false, "auto_delete": false, "arguments": {}},
    ]});
    expect_bad_request(
        &api.post("/api/definitions/copy", &bad.to_string()).await,
        "an inequivalent queue",
    );
    expect_not_found(&api.get("/api/queues/copy/extra").await, "half an import");

    // A vhost that does not exist (RabbitMQ 3.10's 404; some 3.x copies
    // answer 400 with the same reason).
    let r = api.post("/api/definitions/missing", &d.to_string()).await;
    assert_eq!(
        r.json(),
        json!({"error": "not_found", "reason": "vhost_not_found"}),
        "{}",
        show(&r)
    );
    assert_eq!(r.status, 404);
    expect_refused(
        &Http::new(b.http, "mgr", "pw")
            .get("/api/definitions/shop")
            .await,
        "Not administrator user",
        "export as management",
    );
    expect_refused(
        &Http::new(b.http, "mgr", "pw")
            .post("/api/definitions/copy", &d.to_string())
            .await,
        "Not administrator user",
        "import as management",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhosts_exported_policies_keep_their_vhost() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/vhosts/shop", "{}").await, 201, "vhost");
    expect(
        &api.put(
            "/api/policies/shop/cap",
            r#"{"pattern":"^orders$","definition":{"max-length":5}}"#,
        )
        .await,
        201,
        "policy",
    );
    let d = api.get("/api/definitions/shop").await.json();
    assert_eq!(d["policies"][0]["vhost"], "shop", "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_a_missing_vhost_is_rabbitmqs_400() {
    let b = start_broker().await;
    let r = guest(&b).get("/api/definitions/missing").await;
    expect(&r, 400, "export a missing vhost");
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "vhost_not_found"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_queues_and_exchanges_are_exported() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(
        &api.put("/api/queues/%2F/passing", r#"{"durable":false}"#)
            .await,
        201,
        "transient queue",
    );
    expect(
        &api.put(
            "/api/exchanges/%2F/fleeting",
            r#"{"type":"direct","durable":false}"#,
        )
        .await,
        201,
        "transient exchange",
    );
    let d = api.get("/api/definitions").await.json();
    assert!(
        d["queues"].as_array().unwrap().contains(&json!({
            "name": "passing", "vhost": "/", "durable": false, "auto_delete": false, "arguments": {}
        })),
        "{}",
        d["queues"]
    );
    assert!(
        d["exchanges"].as_array().unwrap().contains(&json!({
            "name": "fleeting", "vhost": "/", "type": "direct", "durable": false,
            "auto_delete": false, "internal": false, "arguments": {}
        })),
        "{}",
        d["exchanges"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_configuration_is_the_definitions() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(
        &api.put("/api/queues/%2F/keep", r#"{"durable":true}"#).await,
        201,
        "queue",
    );
    let r = api.get("/api/all-configuration").await;
    expect(&r, 200, "all-configuration");
    let all = r.json();
    assert_eq!(all, api.get("/api/definitions").await.json());
    assert!(field(&all["users"], "name").contains(&"guest".to_string()));
    assert_eq!(field(&all["queues"], "name"), ["keep"]);
}

// ------------------------------------------------------------ health checks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_ok_or_503() {
    let b = start_broker().await;
    let api = guest(&b);
    user_with(&api, "mgr", "pw", "management", "/").await;
    let mgr = Http::new(b.http, "mgr", "pw");
    let node = api.get("/api/nodes").await.json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let by_node = format!("/api/healthchecks/node/{}", urlencode(&node));
    for path in [
        "/api/healthchecks/node",
        "/api/healthchecks/node/",
        by_node.as_str(),
        "/api/health/checks/virtual-hosts",
        "/api/health/checks/node-is-quorum-critical",
        "/api/health/checks/node-is-mirror-sync-critical",
        "/api/health/checks/local-alarms",
        "/api/health/checks/certificate-expiration/1/months",
    ] {
        for who in [&api, &mgr] {
            let r = who.get(path).await;
            expect(&r, 200, path);
            assert_eq!(r.json(), json!({"status": "ok"}), "{path}");
        }
    }

    let r = api.get("/api/health/checks/protocol-listener/http").await;
    expect(&r, 200, "http listener");
    let ok = r.json();
    assert_eq!(ok["status"], "ok");
    assert!(ok["protocol"].is_string(), "{ok}");
    for proto in ["stomp", "no-such-protocol"] {
        let r = api
            .get(&format!("/api/health/checks/protocol-listener/{proto}"))
            .await;
        expect(&r, 503, proto);
        let failed = r.json();
        assert_eq!(failed["status"], "failed", "{failed}");
        assert!(failed["reason"].is_string(), "{failed}");
    }
    assert_eq!(
        Http::anonymous(b.http)
            .get("/api/healthchecks/node")
            .await
            .status,
        401
    );
}

// ------------------------------------------------------------ HTTP plumbing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_needs_no_credentials_and_a_trailing_slash_names_the_same_thing() {
    let b = start_broker().await;
    let api = guest(&b);
    let anon = Http::anonymous(b.http);
    for path in [
        "/api/overview",
        "/api/queues/%2F/q",
        "/api/definitions",
        "/api/users/guest",
        "/api/connections",
    ] {
        let r = anon.request("OPTIONS", path, None, &[]).await;
        expect(&r, 200, path);
    }

    assert_eq!(field(&api.get("/api/vhosts/").await.json(), "name"), ["/"]);
    assert_eq!(api.get("/api/vhosts/%2F/").await.json()["name"], "/");
    expect(
        &api.put("/api/queues/%2F/slashed/", "{}").await,
        201,
        "PUT with a trailing slash",
    );
    expect(
        &api.get("/api/queues/%2F/slashed").await,
        200,
        "GET without",
    );
    assert_eq!(
        field(&api.get("/api/queues/%2F/").await.json(), "name"),
        ["slashed"]
    );
    expect(
        &api.delete("/api/queues/%2F/slashed/").await,
        204,
        "DELETE with a trailing slash",
    );
    expect_not_found(&api.get("/api/queues/%2F/slashed/").await, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_wherever_get_is() {
    let b = start_broker().await;
    let api = guest(&b);
    for path in ["/api/overview", "/api/queues", "/api/vhosts/%2F"] {
        let r = api.request("HEAD", path, None, &[]).await;
        expect(&r, 200, path);
        assert!(r.body.is_empty(), "{path}: HEAD has no body");
    }
    let r = api
        .request("HEAD", "/api/queues/%2F/missing", None, &[])
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    let r = Http::anonymous(b.http)
        .request("HEAD", "/api/overview", None, &[])
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_take_is_405_with_allow() {
    let b = start_broker().await;
    let api = guest(&b);
    for (method, path) in [
        ("PUT", "/api/overview"),
        ("DELETE", "/api/nodes"),
        ("POST", "/api/queues/%2F"),
    ] {
        let r = api.request(method, path, Some("{}"), &[]).await;
        expect(&r, 405, &format!("{method} {path}"));
        assert!(r.header("allow").is_some(), "{method} {path}: no allow");
        assert!(r.body.is_empty(), "{method} {path}: {}", show(&r));
    }
}

// ------------------------------------------------------------ tags

/// Tags in the order of RabbitMQ's table; each is also its user's name
/// (`none` has no tags).
const TAGS: [&str; 5] = [
    "none",
    "management",
    "policymaker",
    "monitoring",
    "administrator",
];

/// A user per tag with permissions on `/` only, each with an AMQP
/// connection of its own on `/`; a vhost `other` where only
/// `administrator` has permissions (it created it), holding a queue and a
/// policy; and a connection of `guest`'s that none of them owns.
struct Matrix {
    b: TestBroker,
    users: Vec<(&'static str, Http, lapin::Connection)>,
    guests: lapin::Connection,
}

async fn matrix() -> Matrix {
    let b = start_broker().await;
    let api = guest(&b);
    let mut users = Vec::new();
    for tag in TAGS {
        let tags = if tag == "none" { "" } else { tag };
        let password = format!("pw-{tag}");
        user_with(&api, tag, &password, tags, "/").await;
        let conn = connect_url(&format!("amqp://{tag}:{password}@{}/%2f", b.addr)).await;
        users.push((tag, Http::new(b.http, tag, &password), conn));
    }
    let admin = &users[4].1;
    expect(&admin.put("/api/vhosts/other", "{}").await, 201, "other");
    expect(
        &api.get("/api/permissions/other/administrator").await,
        200,
        "the creator's permissions",
    );
    expect_not_found(
        &api.get("/api/permissions/other/guest").await,
        "guest has none in other",
    );
    expect(
        &api.put("/api/queues/%2F/root-q", "{}").await,
        201,
        "root-q",
    );
    expect(
        &admin.put("/api/queues/other/other-q", "{}").await,
        201,
        "other-q",
    );
    let policy = r#"{"pattern":"^none$","definition":{"max-length":100}}"#;
    expect(
        &api.put("/api/policies/%2F/p-root", policy).await,
        201,
        "p-root",
    );
    expect(
        &admin.put("/api/policies/other/p-other", policy).await,
        201,
        "p-other",
    );
    let guests = connect(&b).await;
    Matrix { b, users, guests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tag_reads_what_rabbitmq_lets_it() {
    let m = matrix().await;
    const OK: u16 = 200;
    const NO: u16 = 401;
    let rows: [(&str, [u16; 5], &str); 12] = [
        ("/api/overview", [NO, OK, OK, OK, OK], ""),
        ("/api/whoami", [NO, OK, OK, OK, OK], ""),
        ("/api/vhosts", [NO, OK, OK, OK, OK], ""),
        ("/api/users", [NO, NO, NO, NO, OK], "Not administrator user"),
        (
            "/api/permissions",
            [NO, NO, NO, NO, OK],
            "Not administrator user",
        ),
        ("/api/nodes", [NO, NO, NO, OK, OK], "Not monitor user"),
        ("/api/connections", [NO, OK, OK, OK, OK], ""),
        ("/api/queues", [NO, OK, OK, OK, OK], ""),
        (
            "/api/queues/other",
            [NO, NO, NO, NO, OK],
            "User not authorised to access virtual host",
        ),
        ("/api/policies", [NO, OK, OK, OK, OK], ""),
        (
            "/api/policies/%2F/p-root",
            [NO, NO, OK, NO, OK],
            "User not authorised to access object",
        ),
        (
            "/api/definitions",
            [NO, NO, NO, NO, OK],
            "Not administrator user",
        ),
    ];
    for (path, want, reason) in rows {
        for (i, (tag, http, _)) in m.users.iter().enumerate() {
            let r = http.get(path).await;
            let what = format!("{tag} GET {path}");
            if want[i] == NO {
                let reason = if i == 0 {
                    "Not management user"
                } else {
                    reason
                };
                expect_refused(&r, reason, &what);
            } else {
                expect(&r, want[i], &what);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tag_sees_only_what_rabbitmq_shows_it() {
    let m = matrix().await;
    // Skip `none`: it sees nothing at all.
    for (tag, http, _) in &m.users[1..] {
        let monitor = matches!(*tag, "monitoring" | "administrator");
        let admin = *tag == "administrator";

        assert_eq!(
            http.get("/api/whoami").await.json(),
            json!({"name": tag, "tags": [tag]}),
            "{tag}"
        );

        // Only monitors get the consumer count, the node and the listeners.
        let o = http.get("/api/overview").await.json();
        assert_eq!(
            o["object_totals"].get("consumers").is_some(),
            monitor,
            "{tag}: {}",
            o["object_totals"]
        );
        assert_eq!(o.get("node").is_some(), monitor, "{tag}");
        assert_eq!(o.get("listeners").is_some(), monitor, "{tag}");

        // Monitors see every vhost; others those they may use.
        let vhosts = sorted(&http.get("/api/vhosts").await.json(), "name");
        let want: &[&str] = if monitor { &["/", "other"] } else { &["/"] };
        assert_eq!(vhosts, want, "{tag}: vhosts");

        // Non-monitors see their own connections only.
        let conns = http.get("/api/connections").await.json();
        let mut users = field(&conns, "user");
        users.sort();
        if monitor {
            let mut all: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
            all.push("guest".to_string());
            all.sort();
            assert_eq!(users, all, "{tag}: connections");
        } else {
            assert_eq!(users, [tag.to_string()], "{tag}: connections");
        }

        // Queues and policies of the vhosts a user may log in to; only
        // administrators see every vhost's.
        let want: &[&str] = if admin {
            &["other-q", "root-q"]
        } else {
            &["root-q"]
        };
        assert_eq!(
            sorted(&http.get("/api/queues").await.json(), "name"),
            want,
            "{tag}: queues"
        );
        let mut vhosts = field(&http.get("/api/exchanges").await.json(), "vhost");
        vhosts.dedup();
        let want: &[&str] = if admin { &["/", "other"] } else { &["/"] };
        assert_eq!(vhosts, want, "{tag}: exchanges' vhosts");
        let want: &[&str] = if admin {
            &["p-other", "p-root"]
        } else {
            &["p-root"]
        };
        assert_eq!(
            sorted(&http.get("/api/policies").await.json(), "name"),
            want,
            "{tag}: policies"
        );
    }
    let admin = &m.users[4].1;
    assert_eq!(
        field(&admin.get("/api/queues/other").await.json(), "name"),
        ["other-q"]
    );
    assert_eq!(
        sorted(&admin.get("/api/users").await.json(), "name"),
        [
            "administrator",
            "guest",
            "management",
            "monitoring",
            "none",
            "policymaker"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tag_changes_only_what_rabbitmq_lets_it() {
    let m = matrix().await;
    let api = guest(&m.b);
    let policy = r#"{"pattern":"^nothing$","definition":{"max-length":1}}"#;
    let object = "User not authorised to access object";
    let admin_only = "Not administrator user";
    let puts: [(&str, [u16; 5], &str); 2] = [
        ("/api/policies/%2F", [401, 401, 201, 401, 201], object),
        (
            "/api/operator-policies/%2F",
            [401, 401, 401, 401, 201],
            admin_only,
        ),
    ];
    for (base, want, reason) in puts {
        for (i, (tag, http, _)) in m.users.iter().enumerate() {
            let path = format!("{base}/by-{tag}");
            let r = http.put(&path, policy).await;
            let what = format!("{tag} PUT {path}");
            match (want[i], i) {
                (401, 0) => expect_refused(&r, "Not management user", &what),
                (401, _) => expect_refused(&r, reason, &what),
                (status, _) => expect(&r, status, &what),
            }
        }
    }
    assert_eq!(
        sorted(&api.get("/api/policies/%2F").await.json(), "name"),
        ["by-administrator", "by-policymaker", "p-root"]
    );
    assert_eq!(
        field(&api.get("/api/operator-policies/%2F").await.json(), "name"),
        ["by-administrator"]
    );

    // Another user's connection: only an administrator closes it.
    let victim = connection_names(&api, "guest").await.pop().unwrap();
    let path = format!("/api/connections/{}", urlencode(&victim));
    for (i, (tag, http, _)) in m.users.iter().enumerate() {
        let r = http.delete(&path).await;
        let what = format!("{tag} DELETE guest's connection");
        match i {
            0 => expect_refused(&r, "Not management user", &what),
            4 => expect(&r, 204, &what),
            _ => {
                expect_refused(&r, object, &what);
                assert!(m.guests.status().connected(), "{what} closed it");
            }
        }
    }
    wait_closed(&m.guests, "guest's connection closed by the administrator").await;

    // A management user closes its own.
    let (_, mgmt, own) = &m.users[1];
    let mine = connection_names(&api, "management").await.pop().unwrap();
    expect(
        &mgmt
            .delete(&format!("/api/connections/{}", urlencode(&mine)))
            .await,
        204,
        "management closes its own connection",
    );
    wait_closed(own, "management's connection closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policymaker_outside_its_vhosts_is_refused_as_rabbitmq_refuses_it() {
    let m = matrix().await;
    let policymaker = &m.users[2].1;
    let r = policymaker
        .put(
            "/api/policies/other/mine",
            r#"{"pattern":"^x$","definition":{"max-length":1}}"#,
        )
        .await;
    expect_refused(
        &r,
        "User not authorised to access object",
        "policymaker PUT in other",
    );
    expect_not_found(
        &guest(&m.b).get("/api/policies/other/mine").await,
        "nothing made",
    );
}

// ------------------------------------------------------------ bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_and_change_nothing() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/queues/%2F/target", "{}").await, 201, "queue");
    let not_json = json!({"error": "bad_request", "reason": "not_json"});
    for (path, body) in [
        ("/api/queues/%2F/bad1", "{not json"),
        ("/api/exchanges/%2F/bad2", r#"{"type":"#),
        ("/api/vhosts/badv", "not json at all"),
        ("/api/users/badu", "{'password': 'x'}"),
        ("/api/policies/%2F/badp", "{"),
        ("/api/queues/%2F/bad7", "[1,2]"),
    ] {
        let r = api.put(path, body).await;
        expect(&r, 400, path);
        assert_eq!(r.json(), not_json, "{path}");
    }
    expect_bad_request(
        &api.post("/api/bindings/%2F/e/amq.direct/q/target", "{oops")
            .await,
        "binding",
    );
    expect_bad_request(
        &api.post("/api/definitions", "{\"queues\": [").await,
        "definitions",
    );
    expect_bad_request(
        &api.put("/api/permissions/%2F/guest", "nope").await,
        "permissions",
    );

    // A JSON string where an object belongs (JSON-encoded twice).
    let twice = serde_json::to_string(r#"{"durable":true}"#).unwrap();
    expect_bad_request(&api.put("/api/queues/%2F/bad3", &twice).await, "a string");

    // Wrong types.
    let reason = expect_bad_request(
        &api.put("/api/queues/%2F/bad4", r#"{"durable":"maybe"}"#)
            .await,
        "durable: maybe",
    );
    assert!(reason.contains("not_boolean"), "{reason}");
    let reason = expect_bad_request(
        &api.put(
            "/api/exchanges/%2F/bad5",
            r#"{"type":"direct","auto_delete":"maybe"}"#,
        )
        .await,
        "auto_delete: maybe",
    );
    assert!(reason.contains("not_boolean"), "{reason}");
    let reason = expect_bad_request(
        &api.put(
            "/api/queues/%2F/bad6",
            r#"{"arguments":{"x-message-ttl":null}}"#,
        )
        .await,
        "a null argument",
    );
    assert!(reason.contains("null_not_allowed"), "{reason}");

    // None of them made anything.
    for n in 1..=7 {
        expect_not_found(
            &api.get(&format!("/api/queues/%2F/bad{n}")).await,
            &format!("queue bad{n}"),
        );
        expect_not_found(
            &api.get(&format!("/api/exchanges/%2F/bad{n}")).await,
            &format!("exchange bad{n}"),
        );
    }
    expect_not_found(&api.get("/api/vhosts/badv").await, "vhost");
    expect_not_found(&api.get("/api/users/badu").await, "user");
    assert_eq!(api.get("/api/policies").await.json(), json!([]));
    assert_eq!(
        field(&api.get("/api/queues").await.json(), "name"),
        ["target"]
    );
    assert_eq!(
        api.get("/api/bindings/%2F/e/amq.direct/q/target")
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        api.get("/api/permissions/%2F/guest").await.json(),
        json!({"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_put_that_does_not_check_out_creates_no_user() {
    let b = start_broker().await;
    let api = guest(&b);
    let hash = api.get("/api/users/guest").await.json()["password_hash"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        api.put("/api/users/notags", r#"{"password":"pw"}"#)
            .await
            .json(),
        json!({"error": "bad_request", "reason": "tags_not_present"})
    );
    // Unknown keys alone do not stand in for tags.
    assert_eq!(
        api.put("/api/users/flim", r#"{"flim":"flam"}"#)
            .await
            .json(),
        json!({"error": "bad_request", "reason": "tags_not_present"})
    );
    let both = json!({"password": "pw", "password_hash": hash, "tags": ""}).to_string();
    assert_eq!(
        api.put("/api/users/both", &both).await.json(),
        json!({"error": "bad_request", "reason": "both_password_and_password_hash_are_provided"})
    );
    expect_bad_request(
        &api.put(
            "/api/users/badhash",
            r#"{"password_hash":"!!! not base64 !!!","tags":"management"}"#,
        )
        .await,
        "a password_hash that is not base64",
    );

    for name in ["notags", "flim", "both", "badhash"] {
        expect_not_found(&api.get(&format!("/api/users/{name}")).await, name);
    }
    assert_eq!(
        field(&api.get("/api/users").await.json(), "name"),
        ["guest"]
    );
    assert_eq!(
        Http::new(b.http, "both", "pw")
            .get("/api/whoami")
            .await
            .json()["reason"],
        "Login failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_errors_are_rabbitmqs() {
    let b = start_broker().await;
    let api = guest(&b);
    expect(&api.put("/api/queues/%2F/only", "{}").await, 201, "queue");
    let _conn = connect(&b).await;
    let invalid = json!({"error": "bad_request", "reason": "Pagination parameters are invalid"});
    for list in [
        "/api/queues",
        "/api/exchanges",
        "/api/connections",
        "/api/channels",
    ] {
        for query in ["page=abc", "page=1&page_size=abc"] {
            let r = api.get(&format!("{list}?{query}")).await;
            expect(&r, 400, &format!("{list}?{query}"));
            assert_eq!(r.json(), invalid, "{list}?{query}");
        }
        for (query, page, size) in [
            ("page=1&page_size=501", 1, 501),
            ("page=0", 0, 100),
            ("page=-1", -1, 100),
            ("page=1&page_size=0", 1, 0),
        ] {
            let r = api.get(&format!("{list}?{query}")).await;
            expect(&r, 400, &format!("{list}?{query}"));
            assert_eq!(
                r.json(),
                json!({
                    "error": "invalid_pagination_parameters",
                    "reason": format!("Invalid pagination parameters: page number {page}, page size {size}"),
                }),
                "{list}?{query}"
            );
        }
    }
    // The largest page size is fine; a page past the end is not.
    let r = api.get("/api/queues?page=1&page_size=500").await;
    expect(&r, 200, "page_size=500");
    assert_eq!(r.json()["page_size"], 500);
    assert_eq!(
        api.get("/api/queues?page=2&page_size=1").await.json(),
        json!({"error": "page_out_of_range", "reason": "Page out of range, page: 2 page size: 1, len: 1"})
    );
}

/// Whether `status` is a refusal (4xx).
fn refused(status: u16) -> bool {
    (400..500).contains(&status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_changes_nothing() {
    let b = start_broker_with(|c| c.management.max_body_bytes = 1_000).await;
    let api = guest(&b);
    let pad = "a".repeat(2_000);
    let body = json!({"durable": true, "arguments": {"x-pad": pad}}).to_string();
    let r = api.put("/api/queues/%2F/big", &body).await;
    assert!(refused(r.status), "{}", show(&r));
    expect_not_found(&api.get("/api/queues/%2F/big").await, "oversized queue");
    let defs = json!({"vhosts": [{"name": "big"}], "users": [], "x": pad}).to_string();
    let r = api.post("/api/definitions", &defs).await;
    assert!(refused(r.status), "{}", show(&r));
    expect_not_found(&api.get("/api/vhosts/big").await, "oversized import");
    // A body under the limit still works.
    expect(
        &api.put("/api/queues/%2F/small", r#"{"durable":true}"#)
            .await,
        201,
        "a small body",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_rabbitmqs_400() {
    let b = start_broker_with(|c| c.management.max_body_bytes = 1_000).await;
    let api = guest(&b);
    let body = json!({"durable": true, "arguments": {"x-pad": "a".repeat(2_000)}}).to_string();
    let r = api.put("/api/queues/%2F/big", &body).await;
    expect(&r, 400, "oversized body");
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "Exceeded HTTP request body size limit"})
    );
}
