//! `warrenctl` against a real broker on loopback, every command, in table
//! and JSON output, and its errors with their exit codes. The CLI runs
//! in-process (`warren_cli::run`) on a blocking thread; it talks to the
//! broker's management API over HTTP like the binary does.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use warren_cli::config::Env;
use warren_tests::http::Http;
use warren_tests::lapin_util::{channel, connect, within};
use warren_tests::{TestBroker, start_broker};

/// What one run printed, and how it ended.
#[derive(Debug)]
struct Ran {
    code: i32,
    out: String,
    err: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} / stderr {:?}", self.out, self.err))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout {:?} stderr {:?}", self.out, self.err);
        self
    }
}

/// Runs warrenctl with `args`, `env` and `stdin`.
async fn run_with(args: Vec<String>, env: Env, stdin: Vec<u8>) -> Ran {
    within(
        "warrenctl",
        tokio::task::spawn_blocking(move || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut input: &[u8] = &stdin;
            let code = warren_cli::run(
                args,
                &env,
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

fn base(b: &TestBroker) -> Vec<String> {
    [
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
    .collect()
}

/// The status of `GET /api/whoami` as `user`.
async fn whoami(b: &TestBroker, user: &str, password: &str) -> u16 {
    Http::new(b.http, user, password)
        .get("/api/whoami")
        .await
        .status
}

async fn ctl(b: &TestBroker, args: &[&str]) -> Ran {
    let mut all = base(b);
    all.extend(args.iter().map(|s| s.to_string()));
    run_with(all, Env::default(), Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forms_scripts_rely_on() {
    let b = start_broker().await;
    ctl(
        &b,
        &[
            "declare",
            "exchange",
            "events",
            "--type",
            "topic",
            "--durable",
        ],
    )
    .await
    .ok();
    ctl(
        &b,
        &[
            "declare",
            "queue",
            "orders",
            "--durable",
            "--arg",
            "x-max-length=1000",
        ],
    )
    .await
    .ok();
    ctl(
        &b,
        &[
            "declare",
            "binding",
            "--source",
            "events",
            "--destination",
            "orders",
            "--routing-key",
            "orders.#",
        ],
    )
    .await
    .ok();
    let r = ctl(
        &b,
        &[
            "publish",
            "--exchange",
            "events",
            "--routing-key",
            "orders.new",
            "--body",
            "hello",
        ],
    )
    .await
    .ok();
    assert!(r.out.contains("published"), "{r:?}");
    let queues = ctl(&b, &["list", "queues", "--format", "json"])
        .await
        .ok()
        .json();
    let orders = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "orders")
        .unwrap();
    assert_eq!(orders["vhost"], "/");
    assert_eq!(orders["messages"], 1);
    assert_eq!(orders["consumers"], 0);
    assert_eq!(orders["arguments"], json!({"x-max-length": 1000}));
    let got = ctl(
        &b,
        &[
            "get", "--queue", "orders", "--count", "1", "--ack", "--format", "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["routing_key"], "orders.new");
    assert_eq!(got[0]["exchange"], "events");
    let q = Http::new(b.http, "guest", "guest")
        .get("/api/queues/%2F/orders")
        .await
        .json();
    assert_eq!(q["messages"], 0, "--ack removes the message");
    ctl(
        &b,
        &[
            "publish",
            "--exchange",
            "events",
            "--routing-key",
            "orders.x",
            "--body",
            "again",
        ],
    )
    .await
    .ok();
    ctl(&b, &["purge", "queue", "orders"]).await.ok();
    let q = Http::new(b.http, "guest", "guest")
        .get("/api/queues/%2F/orders")
        .await
        .json();
    assert_eq!(q["messages"], 0);
    ctl(&b, &["delete", "queue", "orders"]).await.ok();
    let r = ctl(&b, &["delete", "queue", "orders"]).await;
    assert_eq!(r.code, 5, "{r:?}");
    assert!(
        r.err
            .starts_with("warrenctl: DELETE /api/queues/%2F/orders on http://"),
        "{}",
        r.err
    );
    assert!(r.err.contains(": 404: Not Found"), "{}", r.err);

    // Definitions out of one broker and into another.
    let dir = std::env::temp_dir().join(format!("warrenctl-defs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("defs.json");
    let file_s = file.to_string_lossy().to_string();
    ctl(&b, &["declare", "queue", "keep", "--durable"])
        .await
        .ok();
    ctl(&b, &["export", "definitions", &file_s]).await.ok();
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        exported["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "keep")
    );
    let other = start_broker().await;
    ctl(&other, &["import", "definitions", &file_s]).await.ok();
    let list = ctl(
        &other,
        &[
            "list",
            "exchanges",
            "--format",
            "json",
            "--columns",
            "name,type",
        ],
    )
    .await
    .ok()
    .json();
    assert!(
        list.as_array()
            .unwrap()
            .contains(&json!({"name": "events", "type": "topic"})),
        "{list}"
    );
    let stdout_export = ctl(&other, &["export", "definitions", "-"])
        .await
        .ok()
        .json();
    assert!(
        stdout_export["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "keep")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_failed_and_exit_with_their_code() {
    let b = start_broker().await;
    // Unreachable: a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let r = run_with(
        vec![
            "warrenctl".into(),
            "--url".into(),
            format!("http://127.0.0.1:{port}"),
            "overview".into(),
        ],
        Env::default(),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.err
            .starts_with(&format!("warrenctl: cannot reach http://127.0.0.1:{port}")),
        "{}",
        r.err
    );
    // Wrong password.
    let mut args = base(&b);
    args[6] = "wrong".into();
    args.push("overview".into());
    let r = run_with(args, Env::default(), Vec::new()).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.err.contains("401: Login failed"), "{}", r.err);
    assert!(
        !r.err.contains("wrong"),
        "the password was echoed: {}",
        r.err
    );
    // Missing queue.
    let r = ctl(&b, &["purge", "queue", "nope"]).await;
    assert_eq!(r.code, 5, "{r:?}");
    // A bad argument: the broker's reason.
    let r = ctl(&b, &["declare", "queue", "q", "--arg", "x-max-length=-1"]).await;
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.err
            .contains("400: invalid arg 'x-max-length' for queue 'q' in vhost '/'"),
        "{}",
        r.err
    );
    // Usage errors.
    let r = ctl(&b, &["declare", "queue"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    let r = ctl(&b, &["declare", "queue", "q", "--arg", "novalue"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.err.trim(), "warrenctl: --arg must be NAME=VALUE: novalue");
    let r = ctl(
        &b,
        &[
            "declare",
            "policy",
            "p",
            "--pattern",
            ".*",
            "--definition",
            "{nope",
        ],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    let r = run_with(
        vec![
            "warrenctl".into(),
            "--url".into(),
            "ftp://x".into(),
            "overview".into(),
        ],
        Env::default(),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    // Help is not an error.
    let r = run_with(
        vec!["warrenctl".into(), "--help".into()],
        Env::default(),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 0);
    assert!(r.out.contains("Exit codes"), "{}", r.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_in_every_format_and_status() {
    let b = start_broker().await;
    let conn = connect(&b).await;
    let ch = channel(&conn).await;
    within(
        "declare",
        ch.queue_declare(
            "work".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "work".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for kind in [
        "exchanges",
        "queues",
        "bindings",
        "connections",
        "channels",
        "consumers",
        "users",
        "vhosts",
        "permissions",
        "policies",
    ] {
        let t = ctl(&b, &["list", kind]).await.ok();
        assert!(!t.out.is_empty(), "{kind}");
        let j = ctl(&b, &["list", kind, "--format", "json"])
            .await
            .ok()
            .json();
        assert!(j.is_array(), "{kind}: {j}");
        let tsv = ctl(&b, &["list", kind, "--format", "tsv"]).await.ok();
        let header = tsv.out.lines().next().unwrap().to_string();
        assert!(header.contains('\t'), "{kind}: {header}");
    }
    let t = ctl(&b, &["list", "queues", "--columns", "name,consumers"])
        .await
        .ok();
    assert!(
        t.out.contains("name") && t.out.contains("work"),
        "{}",
        t.out
    );
    let tsv = ctl(
        &b,
        &[
            "list",
            "queues",
            "--columns",
            "name,consumers",
            "--format",
            "tsv",
        ],
    )
    .await
    .ok();
    assert_eq!(tsv.out, "name\tconsumers\nwork\t1\n");
    let c = ctl(&b, &["list", "consumers", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(c[0]["consumer_tag"], "c1");
    ctl(&b, &["declare", "queue", "zz"]).await.ok();
    let j = ctl(
        &b,
        &["list", "queues", "--filter", "^z", "--format", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(j.as_array().unwrap().len(), 1);
    let j = ctl(
        &b,
        &[
            "list",
            "queues",
            "--sort",
            "name",
            "--reverse",
            "--format",
            "json",
            "--columns",
            "name",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(j, json!([{"name": "zz"}, {"name": "work"}]));
    let s = ctl(&b, &["status", "--format", "json"]).await.ok().json();
    assert_eq!(s["healthy"], true);
    assert!(
        s["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("amqp "))
    );
    let o = ctl(&b, &["overview"]).await.ok();
    assert!(o.out.contains("Warren"), "{}", o.out);
    let o = ctl(&b, &["overview", "--format", "json"]).await.ok().json();
    assert_eq!(o["object_totals"]["queues"], 2);
    let o = ctl(&b, &["overview", "--format", "tsv"]).await.ok();
    assert!(o.out.contains("queues\t2"), "{}", o.out);

    // Close the connection by name.
    let conns = ctl(&b, &["list", "connections", "--format", "json"])
        .await
        .ok()
        .json();
    let name = conns[0]["name"].as_str().unwrap().to_string();
    ctl(
        &b,
        &["close", "connection", &name, "--reason", "maintenance"],
    )
    .await
    .ok();
    within("closed", async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_policies_and_passwords() {
    let b = start_broker().await;
    ctl(
        &b,
        &[
            "declare",
            "vhost",
            "shop",
            "--description",
            "the shop",
            "--tags",
            "a,b",
        ],
    )
    .await
    .ok();
    let r = run_with(
        [
            base(&b),
            vec![
                "declare".into(),
                "user".into(),
                "ann".into(),
                "--tags".into(),
                "management".into(),
            ],
        ]
        .concat(),
        Env::default(),
        b"first-pw\n".to_vec(),
    )
    .await
    .ok();
    assert!(!r.out.contains("first-pw"));
    ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "declare",
            "permission",
            "--for-user",
            "ann",
            "--configure",
            "^ann",
        ],
    )
    .await
    .ok();
    ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "declare",
            "topic-permission",
            "--for-user",
            "ann",
            "--exchange",
            "amq.topic",
            "--write",
            "^a",
        ],
    )
    .await
    .ok();
    assert_eq!(whoami(&b, "ann", "first-pw").await, 200);
    let perms = ctl(
        &b,
        &["--vhost", "shop", "list", "permissions", "--format", "json"],
    )
    .await
    .ok()
    .json();
    assert!(
        perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == "ann" && p["configure"] == "^ann")
    );
    run_with(
        [base(&b), vec!["set-password".into(), "ann".into()]].concat(),
        Env::default(),
        b"second-pw\n".to_vec(),
    )
    .await
    .ok();
    assert_eq!(whoami(&b, "ann", "first-pw").await, 401);
    assert_eq!(whoami(&b, "ann", "second-pw").await, 200);
    let user = Http::new(b.http, "guest", "guest")
        .get("/api/users/ann")
        .await
        .json();
    assert_eq!(
        user["tags"],
        json!(["management"]),
        "set-password keeps the tags"
    );
    ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "declare",
            "policy",
            "cap",
            "--pattern",
            "^q",
            "--definition",
            r#"{"max-length":5}"#,
            "--apply-to",
            "queues",
        ],
    )
    .await
    .ok();
    let pol = ctl(&b, &["list", "policies", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(pol[0]["definition"], json!({"max-length": 5}));
    let r = ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "declare",
            "policy",
            "bad",
            "--pattern",
            ".*",
            "--definition",
            r#"{"max-priority":1}"#,
        ],
    )
    .await;
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.err.contains("are not recognised policy settings"),
        "{}",
        r.err
    );
    ctl(&b, &["--vhost", "shop", "delete", "policy", "cap"])
        .await
        .ok();
    ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "delete",
            "topic-permission",
            "--for-user",
            "ann",
        ],
    )
    .await
    .ok();
    ctl(
        &b,
        &[
            "--vhost",
            "shop",
            "delete",
            "permission",
            "--for-user",
            "ann",
        ],
    )
    .await
    .ok();
    ctl(&b, &["delete", "user", "ann"]).await.ok();
    ctl(&b, &["delete", "vhost", "shop"]).await.ok();
    assert_eq!(ctl(&b, &["delete", "vhost", "shop"]).await.code, 5);

    // hash-password: RabbitMQ's format (4-byte salt + SHA-256, base64),
    // which the broker accepts as a password_hash.
    let h = run_with(
        vec!["warrenctl".into(), "hash-password".into()],
        Env::default(),
        b"s3cret\n".to_vec(),
    )
    .await
    .ok();
    let hash = h.out.trim().to_string();
    assert_eq!(hash.len(), 48, "{hash}");
    ctl(
        &b,
        &[
            "declare",
            "user",
            "bo",
            "--password-hash",
            &hash,
            "--tags",
            "monitoring",
        ],
    )
    .await
    .ok();
    assert_eq!(whoami(&b, "bo", "s3cret").await, 200);
    // A binding deleted by its key.
    ctl(&b, &["declare", "queue", "bq"]).await.ok();
    ctl(
        &b,
        &[
            "declare",
            "binding",
            "--source",
            "amq.topic",
            "--destination",
            "bq",
            "--routing-key",
            "a.*",
        ],
    )
    .await
    .ok();
    ctl(
        &b,
        &[
            "delete",
            "binding",
            "--source",
            "amq.topic",
            "--destination",
            "bq",
            "--routing-key",
            "a.*",
        ],
    )
    .await
    .ok();
    assert_eq!(
        ctl(
            &b,
            &[
                "delete",
                "binding",
                "--source",
                "amq.topic",
                "--destination",
                "bq",
                "--routing-key",
                "a.*"
            ]
        )
        .await
        .code,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_environment_then_profile() {
    let b = start_broker().await;
    let home = std::env::temp_dir().join(format!("warrenctl-home-{}", std::process::id()));
    std::fs::create_dir_all(home.join(".config/warren")).unwrap();
    std::fs::write(
        home.join(".config/warren/warrenctl.toml"),
        format!("[default]\nurl = \"http://{}\"\nuser = \"guest\"\npassword = \"wrong\"\n\n[ok]\nurl = \"http://{}\"\nuser = \"guest\"\npassword = \"guest\"\n", b.http, b.http),
    )
    .unwrap();
    let env = |vars: &[(&str, String)]| Env {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        home: Some(home.clone()),
    };
    let args = |extra: &[&str]| -> Vec<String> {
        std::iter::once("warrenctl")
            .chain(extra.iter().copied())
            .map(str::to_string)
            .collect()
    };
    // The default profile's wrong password.
    assert_eq!(
        run_with(args(&["overview"]), env(&[]), Vec::new())
            .await
            .code,
        4
    );
    // A named profile.
    run_with(args(&["--profile", "ok", "overview"]), env(&[]), Vec::new())
        .await
        .ok();
    // The environment overrides the profile.
    run_with(
        args(&["overview"]),
        env(&[("WARRENCTL_PASSWORD", "guest".into())]),
        Vec::new(),
    )
    .await
    .ok();
    // Flags override the environment.
    let r = run_with(
        args(&["--password", "nope", "overview"]),
        env(&[("WARRENCTL_PASSWORD", "guest".into())]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 4);
    // WARRENCTL_URL alone, with no file at all.
    let r = run_with(
        args(&["list", "vhosts", "--format", "json"]),
        Env {
            vars: [("WARRENCTL_URL".to_string(), format!("http://{}", b.http))]
                .into_iter()
                .collect(),
            home: None,
        },
        Vec::new(),
    )
    .await
    .ok();
    assert_eq!(r.json()[0]["name"], "/");
    let c = run_with(args(&["completions", "bash"]), env(&[]), Vec::new())
        .await
        .ok();
    assert!(c.out.contains("warrenctl"), "completions");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_ca_the_server_certificate_chains_to() {
    use warren_tests::tls::{TestCa, write_server_files};
    let ca = TestCa::new("warren test CA");
    let dir = std::env::temp_dir().join(format!("warrenctl-tls-{}", std::process::id()));
    let (cert, key, ca_path) = write_server_files(&dir, &ca, &ca.server("warren-broker"));
    let b = warren_tests::start_broker_with(move |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.management.tls = true;
    })
    .await;
    let ca_arg = ca_path.display().to_string();
    let run = |url: String, extra: Vec<&str>| {
        let mut args: Vec<String> = ["warrenctl", "--url", &url, "--user", "guest"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--password", "guest"].iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(
            ["overview", "--format", "json"]
                .iter()
                .map(|s| s.to_string()),
        );
        run_with(args, Env::default(), Vec::new())
    };
    let https = format!("https://127.0.0.1:{}", b.http.port());
    let trusted = run(https.clone(), vec!["--ca-cert", &ca_arg]).await.ok();
    assert_eq!(trusted.json()["product_name"], "Warren");
    // --tls with --host and --port is the same.
    let port = b.http.port().to_string();
    let mut args: Vec<String> = base(&b)[..1].to_vec();
    args.extend(
        [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--tls",
            "--ca-cert",
            &ca_arg,
            "--user",
            "guest",
            "--password",
            "guest",
            "overview",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    run_with(args, Env::default(), Vec::new()).await.ok();
    // A certificate it has no reason to trust: refused, not ignored.
    let untrusted = run(https.clone(), vec![]).await;
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
    assert!(
        untrusted.err.to_lowercase().contains("certificate"),
        "{untrusted:?}"
    );
    // --insecure accepts it (for tests and first set-ups).
    run(https, vec!["--insecure"]).await.ok();
    // Plain HTTP to the HTTPS port gets no answer it could take for one.
    let plain = run(format!("http://{}", b.http), vec![]).await;
    assert_ne!(plain.code, 0, "{plain:?}");
    let _ = std::fs::remove_dir_all(dir);
}
