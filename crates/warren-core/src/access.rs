//! Users, their tags and their permissions, changed while the broker runs;
//! and what an operator says about a vhost ([`VhostMeta`]).
//!
//! [`AccessControl`] is the broker's registry: users (with RabbitMQ's password
//! hashes and tags), permissions per user and vhost, and topic permissions.
//! Every change bumps an epoch; an open connection compares it on each
//! frame and re-reads its permissions when it moved, so a revoked
//! permission refuses the next operation on channels already open, as in
//! RabbitMQ. Storing the changes durably is the caller's (the broker
//! submits them to its persistence).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::password::Password;
use crate::permissions::{Pattern, Permissions, TopicGrant};

/// A user as the registry keeps it.
#[derive(Debug, Clone)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Password (compared in constant time), or none: such a user cannot
    /// log in with a password (RabbitMQ's empty `password_hash`).
    pub password: Option<Password>,
    /// Tags (`administrator`, `monitoring`, `policymaker`, `management`,
    /// `impersonator`, or any other word), in the order given.
    pub tags: Vec<String>,
}

impl Account {
    /// Whether the user has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// A user's permissions in one vhost, with the patterns' texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionSpec {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// `configure` regex.
    pub configure: String,
    /// `write` regex.
    pub write: String,
    /// `read` regex.
    pub read: String,
}

impl PermissionSpec {
    /// `.*` three times for `user` in `vhost`: everything.
    pub fn all(user: &str, vhost: &str) -> Self {
        PermissionSpec {
            user: user.to_string(),
            vhost: vhost.to_string(),
            configure: ".*".to_string(),
            write: ".*".to_string(),
            read: ".*".to_string(),
        }
    }

    /// Compiles the three patterns; the text of the first that is not a
    /// valid regular expression otherwise.
    pub fn compile(&self) -> Result<Permissions, String> {
        let one = |p: &str| Pattern::new(p).map_err(|e| format!("invalid regex '{p}': {e}"));
        Ok(Permissions {
            configure: one(&self.configure)?,
            write: one(&self.write)?,
            read: one(&self.read)?,
            topic: Vec::new(),
        })
    }
}

/// A user's topic permissions for one topic exchange in one vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermissionSpec {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The exchange.
    pub exchange: String,
    /// `write` regex on routing keys.
    pub write: String,
    /// `read` regex on binding keys.
    pub read: String,
}

/// What an operator says about a vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostMeta {
    /// The name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The queue type a declare without `x-queue-type` gets (empty: classic).
    pub default_queue_type: String,
    /// Vhost limits (RabbitMQ's `max-connections`, `max-queues`): none
    /// when absent; a negative value is no limit, as in RabbitMQ.
    pub limits: VhostLimits,
}

/// A vhost's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    /// Most connections open to the vhost at once.
    pub max_connections: Option<i64>,
    /// Most queues in the vhost.
    pub max_queues: Option<i64>,
}

impl VhostLimits {
    /// Whether a limit of `n` is reached by `count` (a negative limit is
    /// none).
    pub fn reached(limit: Option<i64>, count: usize) -> Option<i64> {
        limit.filter(|&n| n >= 0 && count as i64 >= n)
    }
}

/// A user's limits (RabbitMQ's user limits, 3.8.10 and later): none when
/// absent; a negative value is no limit and 0 refuses everything, as in
/// RabbitMQ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Most connections the user may have open at once, across vhosts.
    pub max_connections: Option<i64>,
    /// Most channels the user may have open at once, across connections.
    pub max_channels: Option<i64>,
}

impl UserLimits {
    /// RabbitMQ's names of user limits, in the order it lists them.
    pub const NAMES: [&'static str; 2] = ["max-connections", "max-channels"];

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_channels.is_none()
    }

    /// The limit called `name` (RabbitMQ's name), if `name` is one.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Option<i64>> {
        match name {
            "max-connections" => Some(&mut self.max_connections),
            "max-channels" => Some(&mut self.max_channels),
            _ => None,
        }
    }

    /// The limits that are set, by RabbitMQ's names.
    pub fn entries(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        if let Some(n) = self.max_connections {
            out.push(("max-connections", n));
        }
        if let Some(n) = self.max_channels {
            out.push(("max-channels", n));
        }
        out
    }
}

/// Checks a topic permission pattern: a regular expression once its
/// `{username}` and `{vhost}` variables are filled in.
pub fn check_topic_pattern(p: &str) -> Result<(), String> {
    Pattern::new(&p.replace("{username}", "u").replace("{vhost}", "v"))
        .map(|_| ())
        .map_err(|e| format!("invalid regex '{p}': {e}"))
}

#[derive(Debug, Default)]
struct Registry {
    users: BTreeMap<String, Arc<Account>>,
    // BTreeMaps: listed in order by the API; changed rarely.
    permissions: BTreeMap<(String, String), (PermissionSpec, Arc<Permissions>)>,
    topic: BTreeMap<(String, String, String), TopicPermissionSpec>,
    /// Users' limits, only those with one set.
    limits: BTreeMap<String, UserLimits>,
}

/// The registry of users and permissions. See the module documentation.
#[derive(Debug, Default)]
pub struct AccessControl {
    // A std RwLock: read at login and when an epoch moved, written by
    // administration only; never held across anything but map work.
    inner: RwLock<Registry>,
    epoch: AtomicU64,
    /// Users who may log in only from loopback addresses (RabbitMQ's
    /// `loopback_users`), by name.
    loopback_users: RwLock<Vec<String>>,
}

impl AccessControl {
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.write_quietly()
    }

    /// Writes without moving the epoch: for what open connections do not
    /// cache (limits are read when a connection or channel opens).
    fn write_quietly(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves on every change to users or permissions.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Sets the names of the users who may log in only from loopback.
    pub fn set_loopback_users(&self, names: Vec<String>) {
        *self
            .loopback_users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
    }

    /// Whether `user` may log in only from loopback.
    pub fn is_loopback_only(&self, user: &str) -> bool {
        self.loopback_users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|u| u == user)
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<Arc<Account>> {
        self.read().users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<Account>> {
        self.read().users.values().cloned().collect()
    }

    /// Creates or replaces a user (its permissions stay). True if new.
    pub fn put_user(&self, account: Account) -> bool {
        self.write()
            .users
            .insert(account.name.clone(), Arc::new(account))
            .is_none()
    }

    /// Deletes a user with its permissions and limits. False if there was
    /// none.
    pub fn delete_user(&self, name: &str) -> bool {
        let mut r = self.write();
        let found = r.users.remove(name).is_some();
        r.permissions.retain(|(u, _), _| u != name);
        r.topic.retain(|(u, _, _), _| u != name);
        r.limits.remove(name);
        found
    }

    /// The limits of `user` (none set: all `None`); `None` if there is no
    /// such user.
    pub fn user_limits(&self, user: &str) -> Option<UserLimits> {
        let r = self.read();
        r.users
            .contains_key(user)
            .then(|| r.limits.get(user).copied().unwrap_or_default())
    }

    /// Every user with a limit set, by name.
    pub fn all_user_limits(&self) -> Vec<(String, UserLimits)> {
        self.read()
            .limits
            .iter()
            .map(|(u, l)| (u.clone(), *l))
            .collect()
    }

    /// Replaces the limits of `user`. False if there is no such user.
    pub fn set_user_limits(&self, user: &str, limits: UserLimits) -> bool {
        let mut r = self.write_quietly();
        if !r.users.contains_key(user) {
            return false;
        }
        if limits.is_empty() {
            r.limits.remove(user);
        } else {
            r.limits.insert(user.to_string(), limits);
        }
        true
    }

    /// The compiled permissions of `user` in `vhost`, with its topic
    /// permissions there (`{username}` and `{vhost}` in their patterns
    /// replaced, as RabbitMQ does).
    pub fn permissions(&self, user: &str, vhost: &str) -> Option<Arc<Permissions>> {
        let r = self.read();
        let base = r
            .permissions
            .get(&(user.to_string(), vhost.to_string()))
            .map(|(_, p)| Arc::clone(p))?;
        let topics: Vec<&TopicPermissionSpec> = r
            .topic
            .values()
            .filter(|t| t.user == user && t.vhost == vhost)
            .collect();
        if topics.is_empty() {
            return Some(base);
        }
        let expand = |p: &str| {
            // A pattern that no longer compiles once expanded denies.
            Pattern::new(&p.replace("{username}", user).replace("{vhost}", vhost))
                .unwrap_or_else(|_| Pattern::deny())
        };
        let mut perms = (*base).clone();
        perms.topic = topics
            .iter()
            .map(|t| TopicGrant {
                exchange: t.exchange.clone(),
                write: expand(&t.write),
                read: expand(&t.read),
            })
            .collect();
        Some(Arc::new(perms))
    }

    /// The permission entries, optionally of one user or one vhost.
    pub fn permission_specs(&self, user: Option<&str>, vhost: Option<&str>) -> Vec<PermissionSpec> {
        self.read()
            .permissions
            .values()
            .filter(|(s, _)| user.is_none_or(|u| s.user == u) && vhost.is_none_or(|v| s.vhost == v))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Sets a user's permissions in a vhost; the text of an invalid
    /// pattern otherwise.
    pub fn put_permissions(&self, spec: PermissionSpec) -> Result<(), String> {
        let compiled = Arc::new(spec.compile()?);
        self.write()
            .permissions
            .insert((spec.user.clone(), spec.vhost.clone()), (spec, compiled));
        Ok(())
    }

    /// Clears a user's permissions in a vhost. False if there were none.
    pub fn delete_permissions(&self, user: &str, vhost: &str) -> bool {
        self.write()
            .permissions
            .remove(&(user.to_string(), vhost.to_string()))
            .is_some()
    }

    /// The topic permission entries, optionally of one user or one vhost.
    pub fn topic_permission_specs(
        &self,
        user: Option<&str>,
        vhost: Option<&str>,
    ) -> Vec<TopicPermissionSpec> {
        self.read()
            .topic
            .values()
            .filter(|s| user.is_none_or(|u| s.user == u) && vhost.is_none_or(|v| s.vhost == v))
            .cloned()
            .collect()
    }

    /// Sets a user's topic permissions for an exchange; the text of an
    /// invalid pattern otherwise.
    pub fn put_topic_permissions(&self, spec: TopicPermissionSpec) -> Result<(), String> {
        for p in [&spec.write, &spec.read] {
            check_topic_pattern(p)?;
        }
        self.write().topic.insert(
            (spec.user.clone(), spec.vhost.clone(), spec.exchange.clone()),
            spec,
        );
        Ok(())
    }

    /// Clears a user's topic permissions in a vhost: for one exchange, or
    /// for all when `exchange` is `None`. How many were removed.
    pub fn delete_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> usize {
        let mut r = self.write();
        let before = r.topic.len();
        r.topic
            .retain(|(u, v, e), _| !(u == user && v == vhost && exchange.is_none_or(|x| x == e)));
        before - r.topic.len()
    }

    /// Forgets every permission in a vhost (it was deleted).
    pub fn forget_vhost(&self, vhost: &str) {
        let mut r = self.write();
        r.permissions.retain(|(_, v), _| v != vhost);
        r.topic.retain(|(_, v, _), _| v != vhost);
    }

    /// Users with no permission in any vhost.
    pub fn users_without_permissions(&self) -> Vec<Arc<Account>> {
        let r = self.read();
        let with: HashMap<&str, ()> = r
            .permissions
            .keys()
            .map(|(u, _)| (u.as_str(), ()))
            .collect();
        r.users
            .values()
            .filter(|u| !with.contains_key(u.name.as_str()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: &str, vhost: &str, c: &str) -> PermissionSpec {
        PermissionSpec {
            user: user.into(),
            vhost: vhost.into(),
            configure: c.into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }

    #[test]
    fn changes_move_the_epoch_and_deleting_a_user_drops_its_permissions() {
        let a = AccessControl::default();
        let e0 = a.epoch();
        assert!(a.put_user(Account {
            name: "u".into(),
            password: Some(Password::Plain("p".into())),
            tags: vec!["management".into()],
        }));
        a.put_permissions(spec("u", "/", "^q")).unwrap();
        assert!(a.epoch() > e0);
        assert!(a.permissions("u", "/").is_some());
        assert!(a.put_permissions(spec("u", "/", "(")).is_err());
        assert_eq!(a.users_without_permissions().len(), 0);
        let e1 = a.epoch();
        assert!(a.delete_user("u"));
        assert!(a.epoch() > e1);
        assert!(a.permissions("u", "/").is_none());
        assert!(!a.delete_user("u"));
    }

    #[test]
    fn user_limits_belong_to_a_user_and_go_with_it() {
        let a = AccessControl::default();
        let limits = UserLimits {
            max_connections: Some(2),
            max_channels: None,
        };
        assert!(!a.set_user_limits("u", limits), "no such user yet");
        a.put_user(Account {
            name: "u".into(),
            password: None,
            tags: Vec::new(),
        });
        assert_eq!(a.user_limits("u"), Some(UserLimits::default()));
        assert_eq!(a.user_limits("nobody"), None);
        let e0 = a.epoch();
        assert!(a.set_user_limits("u", limits));
        assert_eq!(a.epoch(), e0, "limits are not cached by connections");
        assert_eq!(a.user_limits("u"), Some(limits));
        assert_eq!(a.all_user_limits(), vec![("u".to_string(), limits)]);
        // Replacing the user keeps its limits; deleting it drops them.
        a.put_user(Account {
            name: "u".into(),
            password: None,
            tags: vec!["management".into()],
        });
        assert_eq!(a.user_limits("u"), Some(limits));
        assert!(a.delete_user("u"));
        assert!(a.all_user_limits().is_empty());
        a.put_user(Account {
            name: "u".into(),
            password: None,
            tags: Vec::new(),
        });
        assert_eq!(a.user_limits("u"), Some(UserLimits::default()));
        // Clearing every limit forgets the entry.
        assert!(a.set_user_limits("u", limits));
        assert!(a.set_user_limits("u", UserLimits::default()));
        assert!(a.all_user_limits().is_empty());
    }

    #[test]
    fn a_limit_is_reached_at_its_value_zero_refuses_all_and_negative_is_none() {
        assert_eq!(VhostLimits::reached(Some(2), 1), None);
        assert_eq!(VhostLimits::reached(Some(2), 2), Some(2));
        assert_eq!(VhostLimits::reached(Some(0), 0), Some(0));
        assert_eq!(VhostLimits::reached(Some(-1), 1_000), None);
        assert_eq!(VhostLimits::reached(None, 1_000), None);
    }

    #[test]
    fn topic_permissions_by_exchange() {
        let a = AccessControl::default();
        for e in ["t1", "t2"] {
            a.put_topic_permissions(TopicPermissionSpec {
                user: "u".into(),
                vhost: "/".into(),
                exchange: e.into(),
                write: "^a".into(),
                read: ".*".into(),
            })
            .unwrap();
        }
        assert_eq!(a.topic_permission_specs(Some("u"), None).len(), 2);
        assert_eq!(a.delete_topic_permissions("u", "/", Some("t1")), 1);
        assert_eq!(a.delete_topic_permissions("u", "/", None), 1);
    }
}
