//! The management web UI's serving side: the page at `/`, its embedded
//! files with their content types, caching and Content-Security-Policy
//! headers, the API's paths and 404s unchanged beside it, the quiet 401
//! for the UI's own calls, and the queue-to-queue move the UI offers.
//! (The UI itself is driven in a real browser by `tests/web-ui/run.sh`.)

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use serde_json::{Value, json};
use warren_tests::http::{Http, Reply, guest};
use warren_tests::start_broker;

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The headers every file of the UI carries.
fn assert_ui_headers(r: &Reply, path: &str) {
    assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("http"), "{path} allows another origin: {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert!(
        r.header("etag").is_some_and(|e| e.starts_with('"')),
        "{path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_at_the_root_without_credentials() {
    let b = start_broker().await;
    let anon = Http::anonymous(b.http);
    for path in ["/", "/index.html"] {
        let r = anon.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_ui_headers(&r, path);
        let page = text(&r);
        assert!(page.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
        assert!(page.contains(r#"href="/ui/style.css""#));
        // Nothing inline for the CSP to refuse, nothing from elsewhere.
        assert!(!page.contains("<script>") && !page.contains("style="));
        assert!(!page.contains("https://") && !page.contains("http://"));
    }
}

/// Every module the page loads, and every module those import, is
/// served with a JavaScript content type: a file added to the UI but not
/// to the binary fails here, not in a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_the_page_imports_is_served() {
    let b = start_broker().await;
    let anon = Http::anonymous(b.http);
    let mut todo = vec!["/ui/app.js".to_string()];
    let mut seen = Vec::new();
    // Bounded: each module is fetched once, and there are a handful.
    while let Some(path) = todo.pop() {
        if seen.contains(&path) || seen.len() > 50 {
            continue;
        }
        let r = anon.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{path}"
        );
        assert_ui_headers(&r, &path);
        let source = text(&r);
        for (i, _) in source.match_indices(" from './") {
            let rest = &source[i + " from './".len()..];
            let name = rest.split('\'').next().unwrap();
            todo.push(format!("/ui/{name}"));
        }
        seen.push(path);
    }
    for module in [
        "app.js", "api.js", "dom.js", "chart.js", "pages.js", "admin.js",
    ] {
        assert!(
            seen.contains(&format!("/ui/{module}")),
            "{module}: {seen:?}"
        );
    }

    let css = anon.get("/ui/style.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(text(&css).contains("prefers-color-scheme: dark"));
    let icon = anon.get("/ui/favicon.svg").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_file_is_revalidated_with_its_etag() {
    let b = start_broker().await;
    let anon = Http::anonymous(b.http);
    let first = anon.get("/ui/app.js").await;
    let etag = first.header("etag").unwrap().to_string();
    let again = anon
        .request(
            "GET",
            "/ui/app.js",
            None,
            &[&format!("If-None-Match: {etag}")],
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = anon
        .request("GET", "/ui/app.js", None, &["If-None-Match: \"stale\""])
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body, first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_unchanged_beside_the_ui() {
    let b = start_broker().await;
    let g = guest(&b);
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    for path in [
        "/api/no-such-thing",
        "/api/queues/%2F/q/nope",
        "/ui/no-such-file.js",
        "/ui/",
        "/nothing",
    ] {
        let r = g.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json(), not_found, "{path}");
        assert!(r.header("content-security-policy").is_none(), "{path}");
    }
    // Trailing slashes still name the API's resources.
    assert_eq!(g.get("/api/overview/").await.status, 200);
    assert_eq!(g.get("/api/users/").await.json()[0]["name"], "guest");
    // And the API still asks other clients for credentials.
    let r = Http::anonymous(b.http).get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
}

/// The UI marks its calls: a refused login is then shown in the page,
/// not in the browser's password dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uis_own_calls_get_no_password_dialog() {
    let b = start_broker().await;
    let wrong = Http::new(b.http, "guest", "wrong");
    let r = wrong
        .request("GET", "/api/whoami", None, &["x-warren-ui: 1"])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_none());
    assert_eq!(r.json()["reason"], "Login failed");
    let r = wrong.get("/api/whoami").await;
    assert!(r.header("www-authenticate").is_some());
}

/// The overview's confirm rate, for whoever sees every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_reports_confirms_to_monitors() {
    let b = start_broker().await;
    let g = guest(&b);
    let stats = g.get("/api/overview").await.json()["message_stats"].clone();
    assert_eq!(stats["confirm"], json!(0));
    assert!(stats["confirm_details"]["rate"].is_number());
    assert_eq!(
        g.put("/api/users/m", r#"{"password":"pw","tags":"management"}"#)
            .await
            .status,
        201
    );
    let m = Http::new(b.http, "m", "pw");
    let stats = m.get("/api/overview").await.json()["message_stats"].clone();
    assert!(stats.get("confirm").is_none(), "{stats}");
}

/// Mandatory publishes returned unroutable are counted, as RabbitMQ's
/// `return_unroutable`, for the web UI's return rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_returned_messages() {
    let b = start_broker().await;
    let conn = warren_tests::lapin_util::connect(&b).await;
    let ch = warren_tests::lapin_util::channel(&conn).await;
    let mut returns = Vec::new();
    for _ in 0..3 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "nowhere".into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"lost",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        returns.push(confirm);
    }
    // Routed, so not returned.
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        lapin::options::BasicPublishOptions::default(),
        b"dropped",
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap();
    // A round trip: the publishes before it have been handled.
    ch.queue_declare(
        "sync".into(),
        lapin::options::QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let stats = guest(&b).get("/api/overview").await.json()["message_stats"].clone();
    assert_eq!(stats["return_unroutable"], json!(3), "{stats}");
    assert!(stats["return_unroutable_details"]["rate"].is_number());
    let _ = conn.close(200, "bye".into()).await;
}

fn publish(payload: &str) -> String {
    json!({"properties": {"delivery_mode": 2, "headers": {"n": payload}}, "routing_key": "from",
        "payload": payload, "payload_encoding": "string"})
    .to_string()
}

async fn depth(g: &Http, queue: &str) -> Value {
    g.get(&format!("/api/queues/%2F/{queue}")).await.json()["messages"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_move_between_queues_in_order() {
    let b = start_broker().await;
    let g = guest(&b);
    for q in ["from", "to"] {
        assert_eq!(
            g.put(&format!("/api/queues/%2F/{q}"), "{}").await.status,
            201
        );
    }
    for p in ["one", "two", "three"] {
        let r = g
            .post("/api/exchanges/%2F/amq.default/publish", &publish(p))
            .await;
        assert_eq!(r.json(), json!({"routed": true}));
    }
    let r = g
        .post(
            "/api/queues/%2F/from/move",
            r#"{"destination":"to","count":2}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"moved": 2}));
    assert_eq!(depth(&g, "from").await, json!(1));
    assert_eq!(depth(&g, "to").await, json!(2));
    let got = g
        .post(
            "/api/queues/%2F/to/get",
            r#"{"count":5,"ackmode":"ack_requeue_false","encoding":"auto"}"#,
        )
        .await
        .json();
    let payloads: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two"]);
    // Properties travel with the message; it arrives as a publish to the
    // destination through the default exchange.
    assert_eq!(got[0]["properties"]["headers"]["n"], "one");
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(got[0]["routing_key"], "to");
    assert_eq!(got[0]["redelivered"], false);

    // Without a count: everything that is ready.
    let r = g
        .post("/api/queues/%2F/from/move", r#"{"destination":"to"}"#)
        .await;
    assert_eq!(r.json(), json!({"moved": 1}));
    assert_eq!(depth(&g, "from").await, json!(0));
    let r = g
        .post("/api/queues/%2F/from/move", r#"{"destination":"to"}"#)
        .await;
    assert_eq!(r.json(), json!({"moved": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_is_refused_as_the_api_refuses() {
    let b = start_broker().await;
    let g = guest(&b);
    assert_eq!(g.put("/api/queues/%2F/from", "{}").await.status, 201);
    g.post("/api/exchanges/%2F/amq.default/publish", &publish("kept"))
        .await;
    let r = g
        .post("/api/queues/%2F/from/move", r#"{"destination":"missing"}"#)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["reason"],
        "no destination queue 'missing' in vhost '/'"
    );
    let r = g
        .post("/api/queues/%2F/from/move", r#"{"destination":"from"}"#)
        .await;
    assert_eq!(r.status, 400);
    let r = g.post("/api/queues/%2F/from/move", "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "[{key_missing,destination}]");
    let r = g
        .post(
            "/api/queues/%2F/from/move",
            r#"{"destination":"x","count":0}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = g
        .post("/api/queues/%2F/nope/move", r#"{"destination":"from"}"#)
        .await;
    assert_eq!(r.status, 404);

    // A user without read permission on the source may not move from it.
    assert_eq!(g.put("/api/queues/%2F/to", "{}").await.status, 201);
    g.put("/api/users/w", r#"{"password":"pw","tags":"management"}"#)
        .await;
    g.put(
        "/api/permissions/%2F/w",
        r#"{"configure":".*","write":".*","read":"^to$"}"#,
    )
    .await;
    let r = Http::new(b.http, "w", "pw")
        .post("/api/queues/%2F/from/move", r#"{"destination":"to"}"#)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Access refused.");
    // Nothing was taken by the refused requests.
    assert_eq!(depth(&g, "from").await, json!(1));
}
