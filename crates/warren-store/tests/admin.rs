//! The administration records (vhost metadata, users, permissions, topic
//! permissions, policies, settings) through the public API: written with
//! [`Store::apply`], read back after the store is closed and reopened from
//! its directory.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use support::TempDir;

use std::path::Path;

use warren_store::{
    Batch, Definitions, PermissionRecord, PolicyRecord, Store, TopicPermissionRecord, UserRecord,
    VhostRecord,
};

/// Applies the operations `ops` adds to a batch, flushes, closes the store
/// and opens it again from disk.
fn apply_and_reopen(store: Store, dir: &Path, ops: impl FnOnce(&mut Batch)) -> Store {
    let mut b = Batch::default();
    ops(&mut b);
    store.apply(b).unwrap();
    store.flush().unwrap();
    drop(store);
    Store::open(dir).unwrap()
}

/// `v` sorted by its `Debug` text, to compare sets of records whatever
/// the store's key order.
fn sorted<T: std::fmt::Debug + Clone>(v: &[T]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    out.sort();
    out
}

fn user(name: &str, hash: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: hash.to_owned(),
        hashing_algorithm: "rabbit_password_hashing_sha256".to_owned(),
        tags: vec!["administrator".to_owned()],
    }
}

fn permission(user: &str, vhost: &str, configure: &str) -> PermissionRecord {
    PermissionRecord {
        user: user.to_owned(),
        vhost: vhost.to_owned(),
        configure: configure.to_owned(),
        write: ".*".to_owned(),
        read: "^$".to_owned(),
    }
}

fn topic_permission(user: &str, vhost: &str, exchange: &str) -> TopicPermissionRecord {
    TopicPermissionRecord {
        user: user.to_owned(),
        vhost: vhost.to_owned(),
        exchange: exchange.to_owned(),
        write: "^a\\.".to_owned(),
        read: ".*".to_owned(),
    }
}

fn policy(vhost: &str, name: &str, operator: bool, priority: i64) -> PolicyRecord {
    PolicyRecord {
        vhost: vhost.to_owned(),
        name: name.to_owned(),
        pattern: "^orders$".to_owned(),
        apply_to: "queues".to_owned(),
        priority,
        definition: format!(r#"{{"max-length":{priority}}}"#),
        operator,
    }
}

fn assert_admin(defs: &Definitions, expected: &Definitions) {
    assert_eq!(sorted(&defs.vhosts), sorted(&expected.vhosts));
    assert_eq!(sorted(&defs.users), sorted(&expected.users));
    assert_eq!(sorted(&defs.permissions), sorted(&expected.permissions));
    assert_eq!(
        sorted(&defs.topic_permissions),
        sorted(&expected.topic_permissions)
    );
    assert_eq!(sorted(&defs.policies), sorted(&expected.policies));
    // The user's Debug hides the hash; compare the hashes themselves too.
    let mut hashes: Vec<_> = defs.users.iter().map(|u| &u.password_hash).collect();
    let mut want: Vec<_> = expected.users.iter().map(|u| &u.password_hash).collect();
    hashes.sort();
    want.sort();
    assert_eq!(hashes, want);
}

#[test]
fn every_kind_survives_a_reopen_and_so_do_its_deletes() {
    let dir = TempDir::new("kinds");
    let expected = Definitions {
        vhosts: vec![
            VhostRecord::new("/"),
            VhostRecord {
                name: "prod".to_owned(),
                description: "Production, ünïcode and a long text ".repeat(20),
                tags: vec!["eu".to_owned(), "critical".to_owned()],
                default_queue_type: "quorum".to_owned(),
            },
        ],
        users: vec![user("guest", "c2FsdGhhc2g="), user("nopass", "")],
        permissions: vec![
            permission("guest", "/", ".*"),
            permission("guest", "prod", ""),
        ],
        topic_permissions: vec![topic_permission("guest", "prod", "amq.topic")],
        policies: vec![policy("prod", "limits", false, 10)],
        ..Definitions::default()
    };
    let store = Store::open(&dir.0).unwrap();
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.put_vhost("/");
        b.put_vhost_record(&expected.vhosts[1]);
        for u in &expected.users {
            b.put_user(u);
        }
        for p in &expected.permissions {
            b.put_permission(p);
        }
        b.put_topic_permission(&expected.topic_permissions[0]);
        b.put_policy(&expected.policies[0]);
        b.put_setting("users-seeded", b"1");
    });
    let defs = store.definitions().unwrap();
    assert_admin(&defs, &expected);
    assert!(defs.exchanges.is_empty() && defs.queues.is_empty() && defs.bindings.is_empty());
    assert_eq!(
        store.setting("users-seeded").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(store.setting("other").unwrap(), None);
    // Settings are not definitions, and admin records are not queues.
    assert_eq!(store.max_ids().unwrap(), (0, 0));

    let store = apply_and_reopen(store, &dir.0, |b| {
        b.delete_vhost("prod");
        b.delete_user("nopass");
        b.delete_permission("guest", "prod");
        b.delete_topic_permission("guest", "prod", "amq.topic");
        b.delete_policy("prod", "limits", false);
        b.delete_setting("users-seeded");
        // Deleting what is not there is no error.
        b.delete_user("never");
        b.delete_setting("never");
    });
    let left = Definitions {
        vhosts: vec![VhostRecord::new("/")],
        users: vec![user("guest", "c2FsdGhhc2g=")],
        permissions: vec![permission("guest", "/", ".*")],
        ..Definitions::default()
    };
    assert_admin(&store.definitions().unwrap(), &left);
    assert_eq!(store.setting("users-seeded").unwrap(), None);
}

#[test]
fn odd_names_are_kept_apart() {
    let dir = TempDir::new("odd");
    // Pairs that would share a key if components were only concatenated
    // or joined by a separator, plus empty, unicode and NUL names.
    let vhosts = ["", "/", "a", "a/b", "ab", "é/ü", "a\0b"];
    let users = ["", "a", "b/c", "a/b", "ab", "c", "ünï", "x\0"];
    let store = Store::open(&dir.0).unwrap();
    let mut expected = Definitions::default();
    let store = apply_and_reopen(store, &dir.0, |b| {
        for v in vhosts {
            let r = VhostRecord {
                description: format!("vhost {v:?}"),
                ..VhostRecord::new(v)
            };
            b.put_vhost_record(&r);
            expected.vhosts.push(r);
            for u in users {
                let p = permission(u, v, &format!("{u}@{v}"));
                b.put_permission(&p);
                expected.permissions.push(p);
                for x in ["", "amq.topic", "b/c", "c"] {
                    let t = topic_permission(u, v, x);
                    b.put_topic_permission(&t);
                    expected.topic_permissions.push(t);
                }
            }
            for name in users {
                for operator in [false, true] {
                    let p = policy(v, name, operator, name.len() as i64);
                    b.put_policy(&p);
                    expected.policies.push(p);
                }
            }
        }
        for u in users {
            let r = user(u, &format!("hash of {u:?}"));
            b.put_user(&r);
            expected.users.push(r);
            b.put_setting(u, u.as_bytes());
        }
    });
    let defs = store.definitions().unwrap();
    assert_eq!(defs.vhosts.len(), vhosts.len());
    assert_eq!(defs.users.len(), users.len());
    assert_eq!(defs.permissions.len(), vhosts.len() * users.len());
    assert_eq!(defs.topic_permissions.len(), vhosts.len() * users.len() * 4);
    assert_eq!(defs.policies.len(), vhosts.len() * users.len() * 2);
    assert_admin(&defs, &expected);
    for u in users {
        assert_eq!(store.setting(u).unwrap().as_deref(), Some(u.as_bytes()));
    }

    // Deleting one of each touches nothing else.
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.delete_vhost("a/b");
        b.delete_user("b/c");
        b.delete_permission("a/b", "");
        b.delete_topic_permission("a", "b/c", "");
        b.delete_policy("a", "b/c", true);
        b.delete_setting("a/b");
    });
    expected.vhosts.retain(|v| v.name != "a/b");
    expected.users.retain(|u| u.name != "b/c");
    expected
        .permissions
        .retain(|p| (p.user.as_str(), p.vhost.as_str()) != ("a/b", ""));
    expected
        .topic_permissions
        .retain(|t| (t.user.as_str(), t.vhost.as_str(), t.exchange.as_str()) != ("a", "b/c", ""));
    expected
        .policies
        .retain(|p| (p.vhost.as_str(), p.name.as_str(), p.operator) != ("a", "b/c", true));
    assert_admin(&store.definitions().unwrap(), &expected);
    assert_eq!(store.setting("a/b").unwrap(), None);
    assert_eq!(store.setting("a").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(store.setting("ab").unwrap().as_deref(), Some(&b"ab"[..]));
}

#[test]
fn a_put_replaces_the_record_with_the_same_key() {
    let dir = TempDir::new("overwrite");
    let store = Store::open(&dir.0).unwrap();
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.put_vhost_record(&VhostRecord {
            description: "old".to_owned(),
            tags: vec!["t".to_owned()],
            ..VhostRecord::new("v")
        });
        b.put_user(&user("u", "first"));
        b.put_permission(&permission("u", "v", "first"));
        b.put_topic_permission(&topic_permission("u", "v", "x"));
        b.put_policy(&policy("v", "p", false, 1));
        b.put_setting("s", b"first");
    });
    let mut topic = topic_permission("u", "v", "x");
    topic.write = "changed".to_owned();
    let store = apply_and_reopen(store, &dir.0, |b| {
        // A name-only put clears the metadata.
        b.put_vhost("v");
        b.put_user(&UserRecord {
            tags: Vec::new(),
            ..user("u", "second")
        });
        b.put_permission(&permission("u", "v", "second"));
        b.put_topic_permission(&topic);
        b.put_policy(&policy("v", "p", false, 2));
        b.put_setting("s", b"");
    });
    let expected = Definitions {
        vhosts: vec![VhostRecord::new("v")],
        users: vec![UserRecord {
            tags: Vec::new(),
            ..user("u", "second")
        }],
        permissions: vec![permission("u", "v", "second")],
        topic_permissions: vec![topic],
        policies: vec![policy("v", "p", false, 2)],
        ..Definitions::default()
    };
    assert_admin(&store.definitions().unwrap(), &expected);
    // An empty value is a stored setting, not an absent one.
    assert_eq!(store.setting("s").unwrap(), Some(Vec::new()));

    // Within one batch the last write to a key wins.
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.put_setting("s", b"a");
        b.delete_setting("s");
        b.delete_user("u");
        b.put_user(&user("u", "third"));
    });
    assert_eq!(store.setting("s").unwrap(), None);
    assert_eq!(store.definitions().unwrap().users, [user("u", "third")]);
}

#[test]
fn operator_and_user_policies_with_the_same_name_are_kept_apart() {
    let dir = TempDir::new("policies");
    let store = Store::open(&dir.0).unwrap();
    let user_policy = policy("/", "limits", false, 1);
    let operator_policy = policy("/", "limits", true, 2);
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.put_policy(&user_policy);
        b.put_policy(&operator_policy);
    });
    let policies = store.definitions().unwrap().policies;
    assert_eq!(policies.len(), 2);
    assert!(policies.contains(&user_policy) && policies.contains(&operator_policy));

    // Deleting the user policy leaves the operator policy, and back.
    let store = apply_and_reopen(store, &dir.0, |b| b.delete_policy("/", "limits", false));
    assert_eq!(
        store.definitions().unwrap().policies,
        std::slice::from_ref(&operator_policy)
    );
    let store = apply_and_reopen(store, &dir.0, |b| {
        b.put_policy(&user_policy);
        b.delete_policy("/", "limits", true);
    });
    assert_eq!(store.definitions().unwrap().policies, [user_policy]);
}

#[test]
fn vhost_keys_to_delete_takes_that_vhost_only() {
    let dir = TempDir::new("vhostdelete");
    let store = Store::open(&dir.0).unwrap();
    let vhosts = ["a", "ab", "", "a/b"];
    let store = apply_and_reopen(store, &dir.0, |b| {
        for v in vhosts {
            b.put_vhost(v);
            b.put_permission(&permission("u", v, ".*"));
            b.put_topic_permission(&topic_permission("u", v, "x"));
            b.put_policy(&policy(v, "p", false, 0));
            b.put_policy(&policy(v, "p", true, 0));
        }
        b.put_user(&user("u", ""));
        b.put_setting("a", b"kept");
    });
    let batch = store.vhost_keys_to_delete("a").unwrap();
    // The vhost, one permission, one topic permission, two policies.
    assert_eq!(batch.len(), 5);
    let store = apply_and_reopen(store, &dir.0, |_| {});
    let mut batch = store.vhost_keys_to_delete("a").unwrap();
    // The caller may add its own deletions to the same atomic batch.
    batch.delete_user("u");
    store.apply(batch).unwrap();
    let store = apply_and_reopen(store, &dir.0, |_| {});
    let defs = store.definitions().unwrap();
    let names = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    let rest = names(
        vhosts
            .iter()
            .filter(|v| **v != "a")
            .map(|v| v.to_string())
            .collect(),
    );
    assert_eq!(
        names(defs.vhosts.iter().map(|v| v.name.clone()).collect()),
        rest
    );
    assert_eq!(
        names(defs.permissions.iter().map(|p| p.vhost.clone()).collect()),
        rest
    );
    assert_eq!(
        names(
            defs.topic_permissions
                .iter()
                .map(|p| p.vhost.clone())
                .collect()
        ),
        rest
    );
    assert_eq!(defs.policies.len(), 2 * rest.len());
    assert!(defs.policies.iter().all(|p| p.vhost != "a"));
    assert!(defs.users.is_empty());
    assert_eq!(store.setting("a").unwrap().as_deref(), Some(&b"kept"[..]));
    // A vhost with nothing stored yields just its own deletion.
    assert_eq!(store.vhost_keys_to_delete("none").unwrap().len(), 1);
}
