//! The architecture invariants of ARCHITECTURE.md that a compiler does not
//! check: which crate may depend on which, and that warren-core's modules
//! do not import each other in circles.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `[dependencies]` of a crate (build and normal; dev-dependencies may
/// differ: a benchmark may use criterion, a test a client).
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut deps = BTreeSet::new();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|v| v.as_table()) {
            deps.extend(t.keys().cloned());
        }
    }
    deps
}

/// Every workspace crate, with the Warren crates it may depend on and the
/// outside crates it must not (tokio and sockets belong to the server;
/// sled to the store).
fn rules() -> BTreeMap<&'static str, (&'static [&'static str], &'static [&'static str])> {
    const RUNTIME: &[&str] = &["tokio", "mio", "sled", "axum", "hyper", "tower"];
    BTreeMap::from([
        ("warren-codec", (&[][..], RUNTIME)),
        ("warren-core", (&["warren-codec"][..], RUNTIME)),
        (
            "warren-store",
            (&["warren-codec"][..], &["tokio", "axum", "hyper"][..]),
        ),
        (
            "warren-server",
            (
                &[
                    "warren-codec",
                    "warren-core",
                    "warren-store",
                    "warren-management",
                ][..],
                &[][..],
            ),
        ),
        // The HTTP API: over the broker model, never the store.
        (
            "warren-management",
            (&["warren-codec", "warren-core"][..], &["sled"][..]),
        ),
        // warrenctl speaks only the HTTP API.
        ("warren-cli", (&[][..], &["sled"][..])),
        // A client: it knows the wire, not the broker.
        ("warren-perf", (&["warren-codec"][..], &["sled"][..])),
        (
            "warren-tests",
            (
                &[
                    "warren-codec",
                    "warren-core",
                    "warren-server",
                    "warren-management",
                    "warren-cli",
                ][..],
                &[][..],
            ),
        ),
    ])
}

#[test]
fn crates_depend_only_in_the_allowed_direction() {
    let root = root();
    let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members = workspace["workspace"]["members"].as_array().unwrap();
    let rules = rules();
    let mut seen = BTreeSet::new();
    for m in members {
        let dir = root.join(m.as_str().unwrap());
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let name = manifest["package"]["name"].as_str().unwrap().to_string();
        let Some((allowed, forbidden)) = rules.get(name.as_str()) else {
            panic!("crate {name} has no rule here: say which Warren crates it may use");
        };
        for dep in dependencies(&dir.join("Cargo.toml")) {
            if dep.starts_with("warren-") {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "{name} depends on {dep}: the direction is codec <- core <- server -> store"
                );
            }
            assert!(
                !forbidden.contains(&dep.as_str()),
                "{name} depends on {dep}, which it must not"
            );
        }
        seen.insert(name);
    }
    assert_eq!(seen.len(), rules.len(), "a rule names a crate that is gone");
}

/// `crate::module` paths used (outside comments) by each top-level module
/// of warren-core; a module's files (`queue/state.rs` is `queue`) count as
/// one.
fn core_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("crates/warren-core/src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "found only {files:?}");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    assert!(graph.contains_key("queue") && graph.contains_key("channel"));
    graph
}

/// The edges that lie on a cycle.
fn cyclic_edges(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<(String, String)> {
    let reaches = |from: &str, to: &str| {
        let mut stack = vec![from.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut out = BTreeSet::new();
    for (a, uses) in graph {
        for b in uses {
            if reaches(b, a) {
                out.insert((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// warren-core's modules import each other in one direction only: a
/// queue knows no vhost, exchange or connection (it hands dead letters
/// back and names itself in deliveries by a `QueueRef`), a mailbox knows
/// no queue, persist knows no mailbox, a channel no connection.
#[test]
fn core_modules_import_no_cycles() {
    let found = cyclic_edges(&core_imports());
    assert!(
        found.is_empty(),
        "imports that close a cycle among warren-core's modules: {found:?}"
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        (
            "c".to_string(),
            BTreeSet::from(["a".to_string(), "d".to_string()]),
        ),
        ("d".to_string(), BTreeSet::new()),
    ]);
    let e = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        cyclic_edges(&g),
        BTreeSet::from([e("a", "b"), e("b", "c"), e("c", "a")])
    );
}
