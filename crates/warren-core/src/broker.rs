//! The broker: virtual hosts, users and limits, shared by every connection.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use warren_codec::ShortStr;

use crate::access::{AccessControl, Account, PermissionSpec};
use crate::delayed::DelayedTimer;
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
    /// Memory use in bytes above which a memory alarm blocks publishers
    /// (RabbitMQ's memory high watermark; `u64::MAX`: never, 0: at once).
    /// The server's resource monitor feeds the use; the limit can be
    /// changed at runtime ([`Broker::set_memory_limit`]).
    pub memory_limit: u64,
    /// Free disk space in bytes below which a disk alarm blocks publishers
    /// (RabbitMQ's `disk_free_limit`; 0: never).
    pub disk_free_limit: u64,
    /// Most connections the broker holds at once (RabbitMQ's
    /// `connection_max`; `None`: no limit). Counted over every accepted
    /// connection, handshakes included; one more is refused at
    /// `connection.open` with 530, as RabbitMQ 3.11.x and later do.
    pub connection_max: Option<usize>,
    /// Most consumers on one channel (RabbitMQ's
    /// `consumer_max_per_channel`, 3.12 and later; `None`: no limit). One
    /// more `basic.consume` closes the connection with 530.
    pub consumer_max_per_channel: Option<usize>,
    /// How long a delivery may stay unacknowledged before its channel is
    /// closed with 406 (RabbitMQ's `consumer_timeout`, 30 minutes by
    /// default; `None`: never). A queue's `x-consumer-timeout` argument or
    /// `consumer-timeout` policy overrides it.
    pub consumer_timeout: Option<std::time::Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
            memory_limit: u64::MAX,
            disk_free_limit: 0,
            connection_max: None,
            consumer_max_per_channel: None,
            consumer_timeout: Some(std::time::Duration::from_millis(1_800_000)),
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
    /// Causes of the raised resource alarms (bits of [`AlarmCause`]).
    alarms: AtomicU8,
    /// What the resource monitor last measured, and the limits.
    resources: Resources,
    // DashMap: connections register at accept and leave at close, from
    // their own tasks; alarms walk it rarely.
    connections: DashMap<ConnId, Arc<ConnectionEntry>>,
    /// Message counts of connections that closed.
    retired: crate::registry::Retired,
    /// Delayed messages: the clock and the timer's wake-up (shared with
    /// the vhosts, which hold dead letters sent to a delayed exchange).
    delayed: Arc<DelayedTimer>,
}

/// A resource alarm that blocks publishers, as RabbitMQ's memory and disk
/// alarms do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Memory use passed the high watermark.
    Memory,
    /// Free disk space fell below its limit, or the store failed to write.
    Disk,
}

impl Alarm {
    /// The reason sent in `connection.blocked`, as RabbitMQ words it.
    pub fn reason(self) -> &'static str {
        match self {
            Alarm::Memory => "low on memory",
            Alarm::Disk => "low on disk space",
        }
    }

    /// The bits of the causes that raise it.
    fn causes(self) -> u8 {
        match self {
            Alarm::Memory => AlarmCause::MemoryHigh as u8,
            Alarm::Disk => AlarmCause::DiskFreeLow as u8 | AlarmCause::StoreWriteFailed as u8,
        }
    }
}

/// Why an alarm is raised. Each cause is set and cleared by its own
/// source, and an alarm stays raised while any of its causes holds: the
/// store taking writes again does not clear a disk alarm that low free
/// space raised, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmCause {
    /// Memory use passed the high watermark (the broker's own check, in
    /// [`Broker::tick`]).
    MemoryHigh = 1,
    /// Free space on the data directory's file system fell below
    /// `disk_free_limit` (the broker's own check of what the server's
    /// monitor measures).
    DiskFreeLow = 2,
    /// The store failed to write (full disk, IO error); set and cleared by
    /// the server's persistence thread.
    StoreWriteFailed = 4,
}

impl AlarmCause {
    /// The alarm this cause raises.
    pub fn alarm(self) -> Alarm {
        match self {
            AlarmCause::MemoryHigh => Alarm::Memory,
            AlarmCause::DiskFreeLow | AlarmCause::StoreWriteFailed => Alarm::Disk,
        }
    }
}

/// What the server's resource monitor measures and what it is compared
/// with. Atomics: written by the monitor and by whoever changes a limit,
/// read by every scrape and API call; no two need to agree at an instant.
#[derive(Debug)]
struct Resources {
    /// Resident memory of the process as last sampled, in bytes (0 before
    /// the first sample).
    memory_sampled: AtomicU64,
    /// See [`Limits::memory_limit`].
    memory_limit: AtomicU64,
    /// Free disk space as last sampled, in bytes; `u64::MAX` before the
    /// first sample.
    disk_free: AtomicU64,
    /// See [`Limits::disk_free_limit`].
    disk_free_limit: AtomicU64,
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
        let delayed = DelayedTimer::new();
        let gauge = Gauge::leak();
        for v in &config.vhosts {
            vhosts.insert(
                v.clone(),
                VHost::new(
                    v,
                    Arc::clone(&wall_clock),
                    Arc::clone(&delayed),
                    durability.clone(),
                    gauge,
                ),
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
        let resources = Resources {
            memory_sampled: AtomicU64::new(0),
            memory_limit: AtomicU64::new(config.limits.memory_limit),
            disk_free: AtomicU64::new(u64::MAX),
            disk_free_limit: AtomicU64::new(config.limits.disk_free_limit),
        };
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
            resources,
            connections: DashMap::new(),
            retired: crate::registry::Retired::default(),
            delayed,
        })
    }

    /// Bytes of message bodies currently held in memory.
    pub fn memory_in_use(&self) -> u64 {
        self.gauge.bytes()
    }

    /// Memory the broker uses, in bytes, as the memory alarm counts it: the
    /// process's resident memory as the server's monitor last sampled it,
    /// or the message bodies held in memory if they are more (they are
    /// counted as they arrive, samples lag behind a burst).
    pub fn memory_used(&self) -> u64 {
        self.resources
            .memory_sampled
            .load(Ordering::Relaxed)
            .max(self.gauge.bytes())
    }

    /// Records a sample of the process's resident memory; the next
    /// [`Broker::tick`] compares it with the high watermark.
    pub fn set_memory_used(&self, bytes: u64) {
        self.resources
            .memory_sampled
            .store(bytes, Ordering::Relaxed);
    }

    /// The memory high watermark in bytes (`u64::MAX`: none).
    pub fn memory_limit(&self) -> u64 {
        self.resources.memory_limit.load(Ordering::Relaxed)
    }

    /// Changes the memory high watermark (as `rabbitmqctl
    /// set_vm_memory_high_watermark absolute` does) and checks memory
    /// against it at once.
    pub fn set_memory_limit(&self, bytes: u64) {
        self.resources.memory_limit.store(bytes, Ordering::Relaxed);
        self.check_memory();
    }

    /// Free space on the data directory's file system as last sampled, in
    /// bytes; `None` before the first sample.
    pub fn disk_free(&self) -> Option<u64> {
        match self.resources.disk_free.load(Ordering::Relaxed) {
            u64::MAX => None,
            free => Some(free),
        }
    }

    /// Records a sample of the free disk space and raises or clears the
    /// disk alarm's [`AlarmCause::DiskFreeLow`] by it.
    pub fn set_disk_free(&self, bytes: u64) {
        // u64::MAX means "not sampled"; a real file system never has it.
        let bytes = bytes.min(u64::MAX - 1);
        self.resources.disk_free.store(bytes, Ordering::Relaxed);
        self.check_disk();
    }

    /// The free disk space limit in bytes (0: none).
    pub fn disk_free_limit(&self) -> u64 {
        self.resources.disk_free_limit.load(Ordering::Relaxed)
    }

    /// Changes the free disk space limit (as `rabbitmqctl
    /// set_disk_free_limit` does) and checks the last sample against it
    /// at once.
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.resources
            .disk_free_limit
            .store(bytes, Ordering::Relaxed);
        self.check_disk();
    }

    /// Raises the memory alarm when use passed the watermark, as RabbitMQ
    /// does; clears it only below 90% of the watermark (RabbitMQ clears at
    /// the watermark), so publishers are not flapped on and off by use
    /// that hovers around it.
    fn check_memory(&self) {
        let (used, limit) = (self.memory_used(), self.memory_limit());
        if used > limit {
            self.set_alarm_cause(AlarmCause::MemoryHigh, true);
        } else if used < limit / 10 * 9 {
            self.set_alarm_cause(AlarmCause::MemoryHigh, false);
        }
    }

    /// Raises the disk alarm's free-space cause while the last sample is
    /// below the limit, and clears it otherwise, as RabbitMQ's disk
    /// monitor does.
    fn check_disk(&self) {
        if let Some(free) = self.disk_free() {
            self.set_alarm_cause(AlarmCause::DiskFreeLow, free < self.disk_free_limit());
        }
    }

    /// Whether `alarm` is raised (by any of its causes).
    pub fn alarm_raised(&self, alarm: Alarm) -> bool {
        self.alarms.load(Ordering::Relaxed) & alarm.causes() != 0
    }

    /// Whether `cause` holds.
    pub fn cause_raised(&self, cause: AlarmCause) -> bool {
        self.alarms.load(Ordering::Relaxed) & (cause as u8) != 0
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
            .find(|x| a & x.causes() != 0)
            .map(Alarm::reason)
    }

    /// Sets or clears one cause of an alarm and tells every connection
    /// when the blocked state changes.
    pub fn set_alarm_cause(&self, cause: AlarmCause, on: bool) {
        let bit = cause as u8;
        let before = if on {
            self.alarms.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.alarms.fetch_and(!bit, Ordering::AcqRel)
        };
        let after = if on { before | bit } else { before & !bit };
        let alarm = cause.alarm();
        let (was, is) = (before & alarm.causes() != 0, after & alarm.causes() != 0);
        if was != is {
            if is {
                tracing::warn!(
                    alarm = alarm.reason(),
                    cause = ?cause,
                    memory_used = self.memory_used(),
                    memory_limit = self.memory_limit(),
                    disk_free = ?self.disk_free(),
                    disk_free_limit = self.disk_free_limit(),
                    "resource alarm raised: blocking publishers"
                );
            } else {
                tracing::info!(alarm = alarm.reason(), "resource alarm cleared");
            }
        }
        if (before == 0) != (after == 0) {
            if after == 0 {
                tracing::info!("no resource alarm left: unblocking publishers");
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

    /// Periodic work: expires messages and unused queues, and compares
    /// memory use with the high watermark. The server calls this a few
    /// times a second with the monotonic time and the wall-clock seconds
    /// (used in `x-death` headers).
    pub fn tick(&self, now: Instant, unix_secs: u64) {
        self.wall_clock.store(unix_secs, Ordering::Relaxed);
        let now_ms = self.wall_ms(now);
        for vh in self.vhosts() {
            vh.sweep(now, now_ms);
        }
        self.check_memory();
    }

    /// Tells the broker the wall-clock time (Unix milliseconds) at the
    /// monotonic instant `now`; the server calls this before routing
    /// delayed messages, so deadlines follow the wall clock.
    pub fn sync_clock(&self, now: Instant, unix_ms: u64) {
        self.delayed.sync(now, unix_ms);
    }

    /// The wall-clock Unix milliseconds at the monotonic instant `now`, by
    /// the last [`Broker::sync_clock`] (or the tick's seconds before one).
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.delayed.wall_ms(now, self.wall_clock_secs())
    }

    /// Sets how the server's delayed-message timer is woken when a message
    /// is held until earlier than the timer's deadline (once; later calls
    /// are ignored).
    pub fn set_delayed_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        self.delayed.set_waker(wake);
    }

    /// A message is now held until `deadline`: wakes the timer if it
    /// sleeps toward a later one.
    pub(crate) fn delayed_added(&self, deadline: u64) {
        self.delayed.added(deadline);
    }

    /// The earliest deadline of any held delayed message, in wall-clock
    /// Unix milliseconds.
    pub fn next_delayed_deadline(&self) -> Option<u64> {
        self.vhosts()
            .iter()
            .filter_map(|vh| vh.next_delayed_deadline())
            .min()
    }

    /// Routes the delayed messages due at `unix_ms` (at most `max`), each
    /// by its exchange's rules to the bindings of now. Returns the next
    /// deadline, which the server's timer then sleeps toward (it may be
    /// `unix_ms` or earlier when more were due than `max`).
    pub fn route_delayed(&self, now: Instant, unix_ms: u64, max: usize) -> Option<u64> {
        let mut budget = max;
        for vh in self.vhosts() {
            budget -= vh.route_delayed(now, unix_ms, budget);
            if budget == 0 {
                break;
            }
        }
        let next = self.next_delayed_deadline();
        // Published after the scan above: their `delayed_added` saw this
        // or a later value, and wakes the timer again.
        self.delayed.sleeps_toward(next);
        // A publish between the scan and the store may hold an earlier
        // message than `next`: scan once more so it is not missed.
        self.next_delayed_deadline()
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
                Arc::clone(&self.delayed),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(memory_limit: u64, disk_free_limit: u64) -> Arc<Broker> {
        Broker::new(BrokerConfig {
            limits: Limits {
                memory_limit,
                disk_free_limit,
                ..Limits::default()
            },
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn disk_alarm_causes_are_separate() {
        let b = broker(u64::MAX, 1000);
        b.set_disk_free(999);
        assert!(b.alarm_raised(Alarm::Disk) && b.cause_raised(AlarmCause::DiskFreeLow));
        b.set_alarm_cause(AlarmCause::StoreWriteFailed, true);
        // The store taking writes again leaves the free-space cause.
        b.set_alarm_cause(AlarmCause::StoreWriteFailed, false);
        assert!(b.alarm_raised(Alarm::Disk));
        assert_eq!(b.block_reason(), Some("low on disk space"));
        b.set_alarm_cause(AlarmCause::StoreWriteFailed, true);
        // Free space coming back leaves the write failure.
        b.set_disk_free(1000);
        assert!(!b.cause_raised(AlarmCause::DiskFreeLow));
        assert!(b.alarm_raised(Alarm::Disk) && b.is_blocked());
        b.set_alarm_cause(AlarmCause::StoreWriteFailed, false);
        assert!(!b.is_blocked() && !b.alarm_raised(Alarm::Memory));
    }

    #[test]
    fn disk_limit_changes_apply_to_the_last_sample() {
        let b = broker(u64::MAX, 50);
        assert_eq!(b.disk_free(), None);
        // No sample, no alarm, whatever the limit.
        b.set_disk_free_limit(u64::MAX - 1);
        assert!(!b.is_blocked());
        b.set_disk_free(100);
        assert_eq!(b.disk_free(), Some(100));
        assert!(b.alarm_raised(Alarm::Disk));
        b.set_disk_free_limit(100);
        assert!(!b.alarm_raised(Alarm::Disk), "free == limit is not low");
        assert_eq!(b.disk_free_limit(), 100);
    }

    #[test]
    fn memory_alarm_follows_samples_with_hysteresis() {
        let b = broker(1000, 0);
        let now = Instant::now();
        b.set_memory_used(1001);
        assert!(!b.is_blocked(), "checked on the tick");
        b.tick(now, 0);
        assert_eq!(b.block_reason(), Some("low on memory"));
        assert_eq!(b.memory_used(), 1001);
        b.set_memory_used(950);
        b.tick(now, 0);
        assert!(b.alarm_raised(Alarm::Memory), "cleared only below 90%");
        b.set_memory_used(899);
        b.tick(now, 0);
        assert!(!b.is_blocked());
        // Raising the watermark at runtime clears at once; a watermark of
        // 0 blocks as soon as anything is used, as RabbitMQ's does.
        b.set_memory_limit(0);
        assert!(b.alarm_raised(Alarm::Memory));
        b.set_memory_limit(1 << 30);
        assert!(!b.alarm_raised(Alarm::Memory));
    }
}
