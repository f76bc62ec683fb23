//! The broker: virtual hosts, users and limits, shared by every connection.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use warren_codec::ShortStr;

use crate::access::{AccessControl, Account, PermissionSpec};
use crate::mailbox::Event;
use crate::message::Gauge;
use crate::password::Password;
use crate::permissions::Permissions;
use crate::persist::Durability;
use crate::queue::ConnId;
use crate::registry::ConnectionEntry;
use crate::vhost::VHost;

/// A user the configuration seeds the broker with.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password (compared in constant time).
    pub password: Password,
    /// Tags (`administrator`, `monitoring`, ...).
    pub tags: Vec<String>,
    /// Permissions per virtual host; a vhost not listed cannot be opened.
    pub permissions: Vec<PermissionSpec>,
    /// May connect only from a loopback address (RabbitMQ's rule for guest).
    pub loopback_only: bool,
}

/// Limits a connection negotiates within.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame we accept and propose, overhead included.
    pub frame_max: u32,
    /// Channels per connection we propose.
    pub channel_max: u16,
    /// Heartbeat interval we propose, in seconds (0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted, in bytes.
    pub max_message_size: u64,
    /// Time allowed from TCP accept to `connection.open`, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Message bytes in memory above which publishers are blocked
    /// (0: no limit).
    pub memory_limit: u64,
    /// Most connections the broker holds at once (RabbitMQ's
    /// `connection_max`; `None`: no limit). Counted over every accepted
    /// connection, handshakes included; one more is refused at
    /// `connection.open` with 530, as RabbitMQ 3.11.x and later do.
    pub connection_max: Option<usize>,
    /// Most consumers on one channel (RabbitMQ's
    /// `consumer_max_per_channel`, 3.12 and later; `None`: no limit). One
    /// more `basic.consume` closes the connection with 530.
    pub consumer_max_per_channel: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
            memory_limit: 0,
            connection_max: None,
            consumer_max_per_channel: None,
        }
    }
}

/// Everything a broker is built from.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Virtual hosts to create.
    pub vhosts: Vec<String>,
    /// Users.
    pub users: Vec<User>,
    /// Connection limits.
    pub limits: Limits,
    /// `product` in server-properties.
    pub product: String,
    /// `version` in server-properties.
    pub version: String,
    /// Entries of `connection.start`'s server-properties set by the
    /// operator (RabbitMQ's `server_properties`): each replaces the
    /// built-in entry of that name, or is added after them.
    pub server_properties: Vec<(String, warren_codec::FieldValue)>,
}

impl Default for BrokerConfig {
    /// One vhost `/` and the user `guest`/`guest`, loopback only.
    fn default() -> Self {
        BrokerConfig {
            vhosts: vec!["/".to_string()],
            users: vec![User {
                name: "guest".to_string(),
                password: Password::Plain("guest".to_string()),
                tags: vec!["administrator".to_string()],
                permissions: vec![PermissionSpec::all("guest", "/")],
                loopback_only: true,
            }],
            limits: Limits::default(),
            product: "Warren".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            server_properties: Vec::new(),
        }
    }
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown user or wrong password.
    BadCredentials,
    /// A loopback-only user connected from elsewhere.
    NotFromLoopback,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    /// Configuration it was built with.
    pub config: BrokerConfig,
    // DashMap: read on every connection.open, written only by admin actions.
    vhosts: DashMap<String, Arc<VHost>>,
    /// Users and permissions.
    pub access: AccessControl,
    next_conn: AtomicU64,
    names: std::collections::hash_map::RandomState,
    name_counter: AtomicU64,
    wall_clock: Arc<AtomicU64>,
    durability: Option<Arc<Durability>>,
    gauge: &'static Gauge,
    /// Raised resource alarms (bits of [`Alarm`]).
    alarms: AtomicU8,
    // DashMap: connections register at accept and leave at close, from
    // their own tasks; alarms walk it rarely.
    connections: DashMap<ConnId, Arc<ConnectionEntry>>,
    /// Message counts of connections that closed.
    retired: crate::registry::Retired,
}

/// A resource alarm that blocks publishers, as RabbitMQ's memory and disk
/// alarms do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Message bodies in memory passed the configured limit.
    Memory = 1,
    /// The store failed to write (full disk, IO error).
    Disk = 2,
}

impl Alarm {
    /// The reason sent in `connection.blocked`, as RabbitMQ words it.
    pub fn reason(self) -> &'static str {
        match self {
            Alarm::Memory => "low on memory",
            Alarm::Disk => "low on disk space",
        }
    }
}

impl Broker {
    /// A broker with the configured vhosts and users, in memory only.
    pub fn new(config: BrokerConfig) -> Arc<Self> {
        Self::with_durability(config, None)
    }

    /// A broker that stores durable state through `durability`.
    pub fn with_durability(config: BrokerConfig, durability: Option<Arc<Durability>>) -> Arc<Self> {
        let vhosts = DashMap::new();
        let wall_clock = Arc::new(AtomicU64::new(0));
        let gauge = Gauge::leak();
        for v in &config.vhosts {
            vhosts.insert(
                v.clone(),
                VHost::new(v, Arc::clone(&wall_clock), durability.clone(), gauge),
            );
        }
        let access = AccessControl::default();
        access.set_loopback_users(
            config
                .users
                .iter()
                .filter(|u| u.loopback_only)
                .map(|u| u.name.clone())
                .collect(),
        );
        for u in &config.users {
            // Kept hashed, as the API shows and exports it.
            access.put_user(Account {
                name: u.name.clone(),
                password: Some(u.password.clone().hashed()),
                tags: u.tags.clone(),
            });
            for p in &u.permissions {
                if let Err(e) = access.put_permissions(p.clone()) {
                    tracing::error!(user = %u.name, vhost = %p.vhost, "{e}");
                }
            }
        }
        Arc::new(Broker {
            config,
            vhosts,
            access,
            next_conn: AtomicU64::new(1),
            names: std::collections::hash_map::RandomState::new(),
            name_counter: AtomicU64::new(0),
            wall_clock,
            durability,
            gauge,
            alarms: AtomicU8::new(0),
            connections: DashMap::new(),
            retired: crate::registry::Retired::default(),
        })
    }

    /// Bytes of message bodies currently held in memory.
    pub fn memory_in_use(&self) -> u64 {
        self.gauge.bytes()
    }

    /// Whether `alarm` is raised.
    pub fn alarm_raised(&self, alarm: Alarm) -> bool {
        self.alarms.load(Ordering::Relaxed) & (alarm as u8) != 0
    }

    /// Whether any alarm is raised (publishers are blocked).
    pub fn is_blocked(&self) -> bool {
        self.alarms.load(Ordering::Relaxed) != 0
    }

    /// The reason of the first raised alarm.
    pub fn block_reason(&self) -> Option<&'static str> {
        let a = self.alarms.load(Ordering::Relaxed);
        [Alarm::Memory, Alarm::Disk]
            .into_iter()
            .find(|x| a & (*x as u8) != 0)
            .map(Alarm::reason)
    }

    /// Raises or clears an alarm and tells every connection when the
    /// blocked state changes.
    pub fn set_alarm(&self, alarm: Alarm, on: bool) {
        let bit = alarm as u8;
        let before = if on {
            self.alarms.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.alarms.fetch_and(!bit, Ordering::AcqRel)
        };
        let after = if on { before | bit } else { before & !bit };
        if (before == 0) != (after == 0) {
            if on {
                tracing::warn!(
                    alarm = alarm.reason(),
                    "resource alarm raised: blocking publishers"
                );
            } else {
                tracing::info!(
                    alarm = alarm.reason(),
                    "resource alarm cleared: unblocking publishers"
                );
            }
            for c in self.connections.iter() {
                c.value().mailbox.push(Event::Alarm);
            }
        }
    }

    /// Registers an accepted connection.
    pub fn register(&self, entry: Arc<ConnectionEntry>) {
        self.connections.insert(entry.id, entry);
    }

    /// Forgets a connection (its message counts stay in the broker's).
    pub fn unregister(&self, id: ConnId) {
        if let Some((_, c)) = self.connections.remove(&id) {
            self.retired.add(&c.totals());
        }
    }

    /// Messages received, delivered, acknowledged and confirmed since the
    /// broker started.
    pub fn message_totals(&self) -> crate::registry::MessageTotals {
        let mut t = self.retired.totals();
        for c in self.connections.iter() {
            t.add(&c.value().totals());
        }
        t
    }

    /// Every open connection, in no particular order.
    pub fn connections(&self) -> Vec<Arc<ConnectionEntry>> {
        self.connections
            .iter()
            .map(|c| Arc::clone(c.value()))
            .collect()
    }

    /// The open connection called `name` (RabbitMQ's `"peer -> local"`).
    pub fn connection_named(&self, name: &str) -> Option<Arc<ConnectionEntry>> {
        self.connections
            .iter()
            .find(|c| c.value().name == name)
            .map(|c| Arc::clone(c.value()))
    }

    /// Closes the connections `which` selects with 320 CONNECTION_FORCED
    /// and `text`. How many.
    pub fn close_connections(&self, which: impl Fn(&ConnectionEntry) -> bool, text: &str) -> usize {
        let mut n = 0;
        for c in self.connections.iter() {
            if which(c.value()) {
                c.value().mailbox.push(Event::ForceClose {
                    text: text.to_string(),
                });
                n += 1;
            }
        }
        n
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Wall-clock seconds since the epoch, as of the last tick.
    pub fn wall_clock_secs(&self) -> u64 {
        self.wall_clock.load(Ordering::Relaxed)
    }

    /// Periodic work: expires messages and unused queues. The server calls
    /// this a few times a second with the monotonic time and the wall-clock
    /// seconds (used in `x-death` headers).
    pub fn tick(&self, now: Instant, unix_secs: u64) {
        self.wall_clock.store(unix_secs, Ordering::Relaxed);
        for vh in self.vhosts() {
            vh.sweep(now);
        }
        let limit = self.config.limits.memory_limit;
        if limit > 0 {
            let used = self.gauge.bytes();
            // Hysteresis: clear only well below the limit, so publishers
            // are not flapped on and off around it.
            if used > limit {
                self.set_alarm(Alarm::Memory, true);
            } else if used < limit / 10 * 9 {
                self.set_alarm(Alarm::Memory, false);
            }
        }
    }

    /// The virtual host called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).map(|v| Arc::clone(&v))
    }

    /// The virtual host called `name`, created if missing (used when
    /// restoring stored definitions).
    pub fn vhost_or_create(&self, name: &str) -> Arc<VHost> {
        let vh = self.vhosts.entry(name.to_string()).or_insert_with(|| {
            VHost::new(
                name,
                Arc::clone(&self.wall_clock),
                self.durability.clone(),
                self.gauge,
            )
        });
        Arc::clone(vh.value())
    }

    /// Removes the virtual host called `name` from the broker (its
    /// contents are the caller's to delete).
    pub(crate) fn remove_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.remove(name).map(|(_, v)| v)
    }

    /// Where durable state goes, if anywhere.
    pub(crate) fn durability(&self) -> Option<&Arc<Durability>> {
        self.durability.as_ref()
    }

    /// Every virtual host.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.iter().map(|v| Arc::clone(v.value())).collect()
    }

    /// The permissions `user` has in `vhost`, if any.
    pub fn permissions(&self, user: &str, vhost: &str) -> Option<Arc<Permissions>> {
        self.access.permissions(user, vhost)
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a login.
    pub fn authenticate(
        &self,
        user: &str,
        password: &[u8],
        from_loopback: bool,
    ) -> Result<Arc<Account>, LoginRefused> {
        let u = self.access.user(user).ok_or(LoginRefused::BadCredentials)?;
        if !u.password.as_ref().is_some_and(|p| p.matches(password)) {
            return Err(LoginRefused::BadCredentials);
        }
        if !from_loopback && self.access.is_loopback_only(user) {
            return Err(LoginRefused::NotFromLoopback);
        }
        Ok(u)
    }

    /// Logs in a user named by a verified client certificate (the
    /// `EXTERNAL` mechanism): the user must exist; its password is not
    /// asked for.
    pub fn authenticate_external(
        &self,
        user: &str,
        from_loopback: bool,
    ) -> Result<Arc<Account>, LoginRefused> {
        let u = self.access.user(user).ok_or(LoginRefused::BadCredentials)?;
        if !from_loopback && self.access.is_loopback_only(user) {
            return Err(LoginRefused::NotFromLoopback);
        }
        Ok(u)
    }

    /// A random name with a prefix, as RabbitMQ's `amq.gen-…` and
    /// `amq.ctag-…`: the prefix and 22 URL-safe base64 characters.
    pub fn generate_name(&self, prefix: &str) -> ShortStr {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::with_capacity(prefix.len() + 22);
        s.push_str(prefix);
        let n = self.name_counter.fetch_add(1, Ordering::Relaxed);
        let mut bits = 0u128;
        for i in 0..2u64 {
            let mut h = self.names.build_hasher();
            h.write_u64(n);
            h.write_u64(i);
            bits = (bits << 64) | u128::from(h.finish());
        }
        for _ in 0..22 {
            s.push(char::from(ALPHABET[(bits & 63) as usize]));
            bits >>= 6;
        }
        ShortStr::from(s)
    }
}
