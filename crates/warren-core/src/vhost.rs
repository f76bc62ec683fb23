//! Virtual hosts: the exchanges, queues and bindings of one namespace, and
//! the declare/delete/bind rules with RabbitMQ's reply codes and texts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use warren_codec::{FieldTable, FieldValue, ShortStr};

use crate::access::VhostMeta;
use crate::delayed::DelayedTimer;
use crate::error::{Kind, Mismatch, Refusal};

/// What the vhost's rules return: a [`Refusal`] when they refuse.
type Result<T, E = Refusal> = std::result::Result<T, E>;
use crate::exchange::{Destination, Exchange, ExchangeKind, ExchangeSpec, MessageView};
use crate::message::{Gauge, Message};
use crate::persist::{BindingTarget, DelayedRecordKey, Durability, PersistOp};
use crate::policy::{Policy, pick};
use crate::queue::{ConnId, DeadLetters, Queue, QueueSpec, QueueType};

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    /// The name, e.g. `/`.
    pub name: String,
    /// Description, tags, default queue type.
    meta: std::sync::Mutex<VhostMeta>,
    /// Wall-clock seconds, kept by the broker's tick (for `x-death` times).
    wall_clock: Arc<AtomicU64>,
    /// Wall-clock Unix milliseconds at the last tick (0 before one): a new
    /// deduplication exchange's clock.
    tick_ms: AtomicU64,
    /// The broker's clock and wake-up for delayed messages (dead letters
    /// sent to an `x-delayed-message` exchange are held there).
    delayed_timer: Arc<DelayedTimer>,
    durability: Option<Arc<Durability>>,
    gauge: &'static Gauge,
    // DashMaps: looked up on every publish from many connection tasks.
    // Callers clone the Arc out and drop the guard at once.
    exchanges: DashMap<ShortStr, Arc<Exchange>>,
    // DashMap: direct reply-to addresses, registered by consuming channels
    // and looked up by every reply.
    replies: DashMap<ShortStr, ReplyTarget>,
    queues: DashMap<ShortStr, Arc<Queue>>,
    /// Policies and operator policies (changed rarely, read when a queue
    /// or exchange is created or policies change).
    policies: std::sync::RwLock<Vec<Arc<Policy>>>,
    /// Bumped after every change to exchanges, queues or bindings, so that
    /// channels can reuse a route computed at the same epoch.
    epoch: AtomicU64,
}

/// The pseudo-queue clients consume from for direct reply-to.
pub const REPLY_TO: &[u8] = b"amq.rabbitmq.reply-to";
/// The prefix of the per-channel reply addresses.
pub const REPLY_TO_PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";

/// Where replies to one direct reply-to address go.
#[derive(Debug, Clone)]
pub struct ReplyTarget {
    /// The consuming connection.
    pub mailbox: Arc<crate::mailbox::Mailbox>,
    /// Its channel.
    pub channel: u16,
    /// The consumer tag.
    pub consumer_tag: ShortStr,
}

/// What `queue.declare` asked for.
#[derive(Debug, Clone)]
pub struct QueueDeclare {
    /// Name (already generated for a server-named queue).
    pub name: ShortStr,
    /// The broker chose the name (`amq.gen-…` is then allowed).
    pub server_named: bool,
    /// Only check existence.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Owned by the declaring connection.
    pub exclusive: bool,
    /// Deleted with its last consumer.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// What `exchange.declare` (or an HTTP `PUT` of an exchange) asks for.
#[derive(Debug, Clone)]
pub struct ExchangeDeclare {
    /// Name.
    pub name: ShortStr,
    /// Type name as given (`direct`, `topic`, ...); an unknown one is
    /// refused.
    pub kind: ShortStr,
    /// Only check existence.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Takes no publishes, only exchange-to-exchange bindings.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A binding to add or remove: from a source exchange to a queue or an
/// exchange, by key and arguments (`queue.bind`, `exchange.bind`, and
/// their unbinds).
#[derive(Debug, Clone)]
pub struct Binding {
    /// Source exchange.
    pub source: ShortStr,
    /// Destination queue or exchange, by name.
    pub destination: BindingTarget,
    /// Binding key.
    pub routing_key: ShortStr,
    /// Arguments (headers exchanges match on them).
    pub arguments: FieldTable,
}

/// The arguments RabbitMQ compares on redeclare and validates on declare.
const VALIDATED_QUEUE_ARGS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-queue-mode",
    "x-queue-type",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-consumer-timeout",
];

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl VHost {
    /// A virtual host with the default and `amq.*` exchanges.
    pub(crate) fn new(
        name: &str,
        wall_clock: Arc<AtomicU64>,
        delayed_timer: Arc<DelayedTimer>,
        durability: Option<Arc<Durability>>,
        gauge: &'static Gauge,
    ) -> Arc<Self> {
        Arc::new(Self::build(
            name,
            wall_clock,
            delayed_timer,
            durability,
            gauge,
        ))
    }

    fn build(
        name: &str,
        wall_clock: Arc<AtomicU64>,
        delayed_timer: Arc<DelayedTimer>,
        durability: Option<Arc<Durability>>,
        gauge: &'static Gauge,
    ) -> Self {
        let vh = VHost {
            name: name.to_string(),
            meta: std::sync::Mutex::new(VhostMeta {
                name: name.to_string(),
                ..VhostMeta::default()
            }),
            wall_clock,
            delayed_timer,
            tick_ms: AtomicU64::new(0),
            durability,
            gauge,
            exchanges: DashMap::new(),
            replies: DashMap::new(),
            queues: DashMap::new(),
            policies: std::sync::RwLock::new(Vec::new()),
            epoch: AtomicU64::new(0),
        };
        for (n, kind, internal) in [
            ("", ExchangeKind::Direct, false),
            ("amq.direct", ExchangeKind::Direct, false),
            ("amq.fanout", ExchangeKind::Fanout, false),
            ("amq.topic", ExchangeKind::Topic, false),
            ("amq.headers", ExchangeKind::Headers, false),
            ("amq.match", ExchangeKind::Headers, false),
            ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
        ] {
            let spec = ExchangeSpec {
                name: ShortStr::from_static(n),
                kind,
                durable: true,
                auto_delete: false,
                internal,
                arguments: FieldTable::new(),
            };
            vh.exchanges.insert(spec.name.clone(), Exchange::new(spec));
        }
        vh
    }

    /// A durable, non-exclusive declare without `x-queue-type` in a vhost
    /// with a default queue type gets that type, as RabbitMQ (3.11+) adds
    /// it to the arguments; `None` when nothing is added.
    fn with_default_type(&self, d: &QueueDeclare) -> Option<QueueDeclare> {
        if !d.durable || d.exclusive || d.arguments.get("x-queue-type").is_some() {
            return None;
        }
        let t = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .default_queue_type
            .clone();
        if t.is_empty() {
            return None;
        }
        let mut d = d.clone();
        d.arguments
            .insert("x-queue-type", FieldValue::LongStr(t.as_str().into()));
        Some(d)
    }

    /// The vhost's description, tags and default queue type.
    pub fn meta(&self) -> VhostMeta {
        self.meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The vhost's limits.
    pub fn limits(&self) -> crate::access::VhostLimits {
        self.meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .limits
    }

    /// Replaces the vhost's description, tags and default queue type (the
    /// name stays).
    pub fn set_meta(&self, mut meta: VhostMeta) {
        meta.name.clone_from(&self.name);
        let mut current = self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Limits are set apart (`set_limits`).
        meta.limits = current.limits;
        *current = meta;
    }

    /// Replaces the vhost's limits.
    pub fn set_limits(&self, limits: crate::access::VhostLimits) {
        self.meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .limits = limits;
    }

    /// Deletes every queue (with its messages) and every exchange: the
    /// vhost itself is being deleted.
    pub fn delete_everything(&self) {
        for q in self.queues() {
            self.remove_queue(&q);
        }
        for ex in self.exchanges() {
            self.remove_exchange(ex.name());
        }
    }

    /// Publishes one message from outside a channel (the management API's
    /// `publish`, the aliveness test): routed as `basic.publish` routes it,
    /// by the routing key and any `CC`/`BCC` keys. Returns whether a queue
    /// took it (RabbitMQ's `routed`). Refused: a missing exchange (404), an
    /// internal one (403).
    pub fn publish_one(
        &self,
        exchange: &ShortStr,
        routing_key: ShortStr,
        properties: warren_codec::BasicProperties,
        body: bytes::Bytes,
        now: Instant,
    ) -> Result<bool> {
        let ex = self.exchange_or_404(exchange)?;
        if ex.spec.internal {
            return Err(Refusal::InternalExchange {
                name: exchange.clone(),
                vhost: self.name.clone(),
            });
        }
        let mut keys = vec![routing_key.clone()];
        let mut properties = warren_codec::Properties::from(properties);
        if let Some(h) = properties.headers.as_ref()
            && has_sender_selected_keys(Some(h))
        {
            keys.extend(sender_selected_keys(h, &ROUTING_HEADERS)?);
            if let Some(h) = properties.make_mut().headers.as_mut() {
                h.remove("BCC");
            }
        }
        let mut queues = Vec::new();
        self.route(&ex, &keys, &*properties, &mut queues);
        if queues.is_empty() {
            return Ok(false);
        }
        let message = self.prepare(
            Message::new(exchange.clone(), routing_key, properties, body),
            &queues,
        );
        self.enqueue(message, &queues, now, None);
        Ok(true)
    }

    /// Registers a direct reply-to address.
    pub fn register_reply(&self, address: ShortStr, target: ReplyTarget) {
        self.replies.insert(address, target);
    }

    /// Forgets a direct reply-to address.
    pub fn unregister_reply(&self, address: &ShortStr) {
        self.replies.remove(address.as_bytes());
    }

    /// Where replies to `address` go, if anyone listens.
    pub fn reply_target(&self, address: &ShortStr) -> Option<ReplyTarget> {
        self.replies
            .get(address.as_bytes())
            .map(|t| t.value().clone())
    }

    /// The topology epoch: it changes after any exchange, queue or binding
    /// is added or removed. A route computed at epoch E (read before
    /// routing) is still right while the epoch is E.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The exchange called `name`.
    pub fn exchange(&self, name: &[u8]) -> Option<Arc<Exchange>> {
        self.exchanges.get(name).map(|e| Arc::clone(&e))
    }

    /// The queue called `name`.
    pub fn queue(&self, name: &[u8]) -> Option<Arc<Queue>> {
        self.queues.get(name).map(|q| Arc::clone(&q))
    }

    /// Every exchange.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.iter().map(|e| Arc::clone(e.value())).collect()
    }

    fn no_queue(&self, name: &ShortStr) -> Refusal {
        Refusal::NotFound {
            kind: Kind::Queue,
            name: name.clone(),
            vhost: self.name.clone(),
        }
    }

    fn no_exchange(&self, name: &ShortStr) -> Refusal {
        Refusal::NotFound {
            kind: Kind::Exchange,
            name: name.clone(),
            vhost: self.name.clone(),
        }
    }

    fn locked(&self, name: &ShortStr) -> Refusal {
        Refusal::Locked {
            queue: name.clone(),
            vhost: self.name.clone(),
        }
    }

    /// The queue `name` if it exists and `conn` may use it (404 / 405).
    pub fn queue_for(&self, conn: ConnId, name: &ShortStr) -> Result<Arc<Queue>> {
        let q = self
            .queue(name.as_bytes())
            .ok_or_else(|| self.no_queue(name))?;
        if !q.accessible_by(conn) {
            return Err(self.locked(name));
        }
        Ok(q)
    }

    /// The exchange `name` or 404.
    pub fn exchange_or_404(&self, name: &ShortStr) -> Result<Arc<Exchange>> {
        self.exchange(name.as_bytes())
            .ok_or_else(|| self.no_exchange(name))
    }

    /// What `declare_exchange` decides before it changes anything: an
    /// error, `None` (passive, or already there and equivalent), or the
    /// type of the exchange to create.
    fn vet_exchange(&self, d: &ExchangeDeclare) -> Result<Option<ExchangeKind>> {
        let ExchangeDeclare {
            name,
            kind,
            passive,
            durable,
            auto_delete,
            internal,
            arguments,
        } = d;
        let (passive, durable, auto_delete, internal) =
            (*passive, *durable, *auto_delete, *internal);
        if passive {
            return self.exchange_or_404(name).map(|_| None);
        }
        if name.is_empty() {
            return Err(Refusal::DefaultExchange);
        }
        let Some(kind_parsed) = ExchangeKind::parse(kind.as_bytes()) else {
            return Err(Refusal::UnknownExchangeType(kind.clone()));
        };
        if let Some(existing) = self.exchange(name.as_bytes()) {
            let s = &existing.spec;
            let mismatch = |arg: &str, received: &str, current: &str| {
                self.inequivalent(Kind::Exchange, name, arg, received, current)
            };
            if s.kind != kind_parsed {
                return Err(mismatch("type", kind_parsed.as_str(), s.kind.as_str()));
            }
            if s.durable != durable {
                return Err(mismatch(
                    "durable",
                    bool_text(durable),
                    bool_text(s.durable),
                ));
            }
            if s.auto_delete != auto_delete {
                return Err(mismatch(
                    "auto_delete",
                    bool_text(auto_delete),
                    bool_text(s.auto_delete),
                ));
            }
            if s.internal != internal {
                return Err(mismatch(
                    "internal",
                    bool_text(internal),
                    bool_text(s.internal),
                ));
            }
            if let Some((arg, new, old)) =
                first_difference(arguments, &s.arguments, &["alternate-exchange"])
            {
                return Err(mismatch(&arg, &new, &old));
            }
            return Ok(None);
        }
        if name.starts_with(b"amq.") {
            return Err(Refusal::ReservedName {
                kind: Kind::Exchange,
                name: name.clone(),
            });
        }
        kind_parsed.validate(arguments)?;
        Ok(Some(kind_parsed))
    }

    /// What `exchange.declare` would refuse, without declaring (an import
    /// checks a whole definitions file first).
    pub fn check_exchange_declare(&self, d: &ExchangeDeclare) -> Result<()> {
        self.vet_exchange(d).map(|_| ())
    }

    /// What `queue.declare` of `d` would refuse in a vhost called `vhost`
    /// that does not exist yet (an import creating both).
    pub fn check_queue_in_new_vhost(vhost: &str, d: &QueueDeclare) -> Result<()> {
        if d.name.starts_with(b"amq.") && !d.server_named {
            return Err(Refusal::ReservedName {
                kind: Kind::Queue,
                name: d.name.clone(),
            });
        }
        Self::validate_queue_args(vhost, &d.name, d).map(|_| ())
    }

    /// What `queue.declare` would refuse, without declaring.
    pub fn check_queue_declare(&self, d: &QueueDeclare) -> Result<()> {
        let with_default = self.with_default_type(d);
        let d = with_default.as_ref().unwrap_or(d);
        if let Some(q) = self.queue(d.name.as_bytes()) {
            if q.spec.exclusive_owner.is_some() != d.exclusive {
                return Err(self.locked(&d.name));
            }
            return self.check_equivalent(&q, d);
        }
        if d.name.starts_with(b"amq.") && !d.server_named {
            return Err(Refusal::ReservedName {
                kind: Kind::Queue,
                name: d.name.clone(),
            });
        }
        Self::validate_queue_args(&self.name, &d.name, d).map(|_| ())
    }

    /// `exchange.declare`.
    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> Result<()> {
        let Some(kind_parsed) = self.vet_exchange(d)? else {
            return Ok(());
        };
        let ExchangeDeclare {
            name,
            durable,
            auto_delete,
            internal,
            arguments,
            ..
        } = d;
        let (durable, auto_delete, internal) = (*durable, *auto_delete, *internal);
        let spec = ExchangeSpec {
            name: name.clone(),
            kind: kind_parsed,
            durable,
            auto_delete,
            internal,
            arguments: arguments.clone(),
        };
        if let Some(d) = &self.durability
            && durable
        {
            d.submit(PersistOp::DeclareExchange {
                vhost: self.name.clone(),
                name: name.clone(),
                kind: kind_parsed.as_str().to_string(),
                auto_delete,
                internal,
                arguments: arguments.clone(),
            });
        }
        let ex = Arc::clone(
            self.exchanges
                .entry(name.clone())
                .or_insert_with(|| self.new_exchange(spec))
                .value(),
        );
        self.apply_policies_to_exchange(&ex);
        self.changed();
        Ok(())
    }

    /// A new exchange of this vhost: a durable one learns where its
    /// deduplication ids are stored (if its type caches any), and a
    /// deduplication cache the time of the last tick, so its first ids
    /// get their expiry.
    fn new_exchange(&self, spec: ExchangeSpec) -> Arc<Exchange> {
        let durable = spec.durable;
        let ex = Exchange::new(spec);
        if let Some(d) = &self.durability
            && durable
        {
            ex.set_dedup_store(crate::exchange::DedupStore {
                durability: Arc::clone(d),
                vhost: self.name.clone(),
            });
        }
        let ms = self.tick_ms.load(Ordering::Relaxed);
        if ms != 0 {
            ex.tick(ms);
        }
        ex
    }

    /// Whether a binding's destination survives restarts.
    fn is_durable(&self, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => q.is_stored(),
            Destination::Exchange(e) => self.exchange(e.as_bytes()).is_some_and(|e| e.spec.durable),
        }
    }

    /// Adds a binding, storing it when both ends are durable.
    fn add_binding(
        &self,
        ex: &Exchange,
        dest: Destination,
        key: ShortStr,
        args: FieldTable,
    ) -> Result<()> {
        let stored = self.durability.is_some() && ex.spec.durable && self.is_durable(&dest);
        let op = stored.then(|| PersistOp::Bind {
            vhost: self.name.clone(),
            source: ex.name().clone(),
            destination: dest.target(),
            routing_key: key.clone(),
            arguments: args.clone(),
        });
        ex.bind(dest, key, args)?;
        self.changed();
        if let (Some(d), Some(op)) = (&self.durability, op) {
            d.submit(op);
        }
        Ok(())
    }

    /// Tells the store a binding is gone (if it was stored).
    fn forget_binding(&self, ex: &Exchange, dest: &Destination, key: &ShortStr, args: &FieldTable) {
        if let Some(d) = &self.durability
            && ex.spec.durable
        {
            d.submit(PersistOp::Unbind {
                vhost: self.name.clone(),
                source: ex.name().clone(),
                destination: dest.target(),
                routing_key: key.clone(),
                arguments: args.clone(),
            });
        }
    }

    /// Recreates a stored exchange at start-up.
    pub fn restore_exchange(&self, spec: ExchangeSpec) {
        let ex = Arc::clone(
            self.exchanges
                .entry(spec.name.clone())
                .or_insert_with(|| self.new_exchange(spec))
                .value(),
        );
        self.apply_policies_to_exchange(&ex);
        self.changed();
    }

    /// Recreates a stored queue at start-up (its messages come after).
    pub fn restore_queue(&self, spec: QueueSpec) -> Arc<Queue> {
        let store = self.durability.as_ref().map(|d| Arc::clone(d.store()));
        let q = Queue::new(spec, store);
        self.queues.insert(q.name().clone(), Arc::clone(&q));
        self.apply_policies_to_queue(&q);
        self.changed();
        q
    }

    /// The policies and operator policies, by name.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        let mut v = self
            .policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Adds or replaces a policy (by name and kind) and applies policies
    /// afresh to every queue and exchange. True if it is new.
    pub fn put_policy(&self, policy: Policy) -> bool {
        let new = {
            let mut all = self
                .policies
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = all.len();
            all.retain(|p| !(p.name == policy.name && p.operator == policy.operator));
            let new = all.len() == before;
            all.push(Arc::new(policy));
            new
        };
        self.reapply_policies();
        new
    }

    /// Removes a policy and applies policies afresh. False if none.
    pub fn delete_policy(&self, name: &str, operator: bool) -> bool {
        let found = {
            let mut all = self
                .policies
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = all.len();
            all.retain(|p| !(p.name == name && p.operator == operator));
            all.len() != before
        };
        if found {
            self.reapply_policies();
        }
        found
    }

    fn reapply_policies(&self) {
        for q in self.queues() {
            self.apply_policies_to_queue(&q);
        }
        for e in self.exchanges() {
            self.apply_policies_to_exchange(&e);
        }
    }

    /// Applies the matching policy and operator policy of highest priority
    /// to a queue.
    fn apply_policies_to_queue(&self, q: &Arc<Queue>) {
        let (user, op) = {
            let all = self
                .policies
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if all.is_empty() && q.applied_policies().definition.0.is_empty() {
                return;
            }
            let quorum = q.spec.kind == QueueType::Quorum;
            let name = q.name().as_bytes();
            (
                pick(all.iter().filter(|p| !p.operator), |p| {
                    p.matches_queue(name, quorum)
                }),
                pick(all.iter().filter(|p| p.operator), |p| {
                    p.matches_queue(name, quorum)
                }),
            )
        };
        let dead = q.apply_policies(user, op);
        self.dead_letter(q, dead);
    }

    fn apply_policies_to_exchange(&self, e: &Arc<Exchange>) {
        let user = {
            let all = self
                .policies
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pick(all.iter().filter(|p| !p.operator), |p| {
                p.matches_exchange(e.name().as_bytes())
            })
        };
        e.set_policy(user);
    }

    /// Recreates a stored binding at start-up; false if an end is missing.
    pub fn restore_binding(
        &self,
        source: &ShortStr,
        destination: &BindingTarget,
        key: ShortStr,
        args: FieldTable,
    ) -> bool {
        let Some(ex) = self.exchange(source.as_bytes()) else {
            return false;
        };
        let dest = match destination {
            BindingTarget::Queue(q) => match self.queue(q.as_bytes()) {
                Some(q) => Destination::Queue(q),
                None => return false,
            },
            BindingTarget::Exchange(e) => {
                if self.exchange(e.as_bytes()).is_none() {
                    return false;
                }
                Destination::Exchange(e.clone())
            }
        };
        let bound = ex.bind(dest, key, args).is_ok();
        self.changed();
        bound
    }

    /// `exchange.delete`. Missing exchanges are fine, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &ShortStr, if_unused: bool) -> Result<()> {
        if name.is_empty() || name.starts_with(b"amq.") {
            return Err(Refusal::SystemExchange {
                name: name.clone(),
                vhost: self.name.clone(),
            });
        }
        let Some(ex) = self.exchange(name.as_bytes()) else {
            return Ok(());
        };
        if if_unused && !ex.has_no_bindings() {
            return Err(Refusal::InUse {
                kind: Kind::Exchange,
                name: name.clone(),
                vhost: self.name.clone(),
            });
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&self, name: &ShortStr) {
        if let Some((_, ex)) = self.exchanges.remove(name.as_bytes()) {
            self.changed();
            // Its held messages go with it (the plugin would still route
            // them, through the bindings the deleted exchange no longer has).
            // A stored deduplication cache's records go with it.
            ex.forget_dedup_ids();
            let held = ex.delayed().map(|mut d| d.drain()).unwrap_or_default();
            if let Some(d) = &self.durability
                && ex.spec.durable
            {
                for (key, _) in held {
                    d.submit(PersistOp::DelayedRemove {
                        key: self.delayed_key(&ex, key),
                    });
                }
            }
            if let Some(d) = &self.durability
                && ex.spec.durable
            {
                for b in ex.bindings() {
                    self.forget_binding(&ex, &b.destination, &b.key, &b.arguments);
                }
                d.submit(PersistOp::DeleteExchange {
                    vhost: self.name.clone(),
                    name: name.clone(),
                });
            }
            let dest = Destination::Exchange(name.clone());
            self.unbind_everywhere(&dest);
        }
    }

    /// Removes every binding to `dest`, then deletes auto-delete exchanges
    /// that lost their last binding.
    fn unbind_everywhere(&self, dest: &Destination) {
        let mut emptied = Vec::new();
        for ex in self.exchanges() {
            let removed = ex.unbind_all_to(dest);
            if !removed.is_empty() {
                self.changed();
            }
            for b in &removed {
                self.forget_binding(&ex, &b.destination, &b.key, &b.arguments);
            }
            if !removed.is_empty() && ex.spec.auto_delete && ex.has_no_bindings() {
                emptied.push(ex.name().clone());
            }
        }
        for name in emptied {
            self.remove_exchange(&name);
        }
    }

    /// `queue.declare`. Returns the queue with its message and consumer counts.
    pub fn declare_queue(
        &self,
        conn: ConnId,
        d: &QueueDeclare,
        now: Instant,
    ) -> Result<(Arc<Queue>, u32, u32)> {
        if d.passive {
            let q = self.queue_for(conn, &d.name)?;
            q.touch(now);
            let (m, c) = q.counts();
            return Ok((q, m, c));
        }
        let with_default = self.with_default_type(d);
        let d = with_default.as_ref().unwrap_or(d);
        let name = d.name.clone();
        if let Some(q) = self.queue(name.as_bytes()) {
            // Exclusivity is checked before anything else (errata 7).
            if !q.accessible_by(conn) || q.spec.exclusive_owner.is_some() != d.exclusive {
                return Err(self.locked(&name));
            }
            self.check_equivalent(&q, d)?;
            q.touch(now);
            let (m, c) = q.counts();
            return Ok((q, m, c));
        }
        if name.starts_with(b"amq.") && !d.server_named {
            return Err(Refusal::ReservedName {
                kind: Kind::Queue,
                name: name.clone(),
            });
        }
        let kind = Self::validate_queue_args(&self.name, &name, d)?;
        if let Some(n) =
            crate::access::VhostLimits::reached(self.limits().max_queues, self.queues.len())
        {
            return Err(Refusal::QueueLimit {
                queue: name.clone(),
                vhost: self.name.clone(),
                limit: n,
            });
        }
        let spec = QueueSpec {
            name: name.clone(),
            // Durable + exclusive is an exclusive transient queue (errata 30).
            durable: d.durable && !d.exclusive,
            exclusive_owner: d.exclusive.then_some(conn),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            kind,
            store_id: None,
        };
        let q = Arc::clone(
            self.queues
                .entry(name)
                .or_insert_with(|| {
                    let mut spec = spec;
                    if spec.durable {
                        spec.store_id = self.durability.as_ref().map(|d| d.queue_id());
                    }
                    if let (Some(d), Some(id)) = (&self.durability, spec.store_id) {
                        d.submit(PersistOp::DeclareQueue {
                            vhost: self.name.clone(),
                            id,
                            name: spec.name.clone(),
                            auto_delete: spec.auto_delete,
                            arguments: spec.arguments.clone(),
                        });
                    }
                    let store = self.durability.as_ref().map(|d| Arc::clone(d.store()));
                    Queue::new(spec, store)
                })
                .value(),
        );
        self.apply_policies_to_queue(&q);
        self.changed();
        q.touch(now);
        let (m, c) = q.counts();
        Ok((q, m, c))
    }

    /// A redeclare of `name` asked for `received` where `current` exists.
    fn inequivalent(
        &self,
        kind: Kind,
        name: &ShortStr,
        arg: &str,
        received: &str,
        current: &str,
    ) -> Refusal {
        Refusal::Inequivalent {
            kind,
            name: name.clone(),
            vhost: self.name.clone(),
            mismatch: Box::new(Mismatch {
                arg: arg.to_string(),
                received: received.to_string(),
                current: current.to_string(),
            }),
        }
    }

    fn check_equivalent(&self, q: &Queue, d: &QueueDeclare) -> Result<()> {
        let name = q.name();
        let mismatch = |arg: &str, received: &str, current: &str| {
            self.inequivalent(Kind::Queue, name, arg, received, current)
        };
        let current_durable = q.spec.durable || q.spec.exclusive_owner.is_some() && d.durable;
        if current_durable != d.durable && q.spec.exclusive_owner.is_none() {
            return Err(mismatch(
                "durable",
                bool_text(d.durable),
                bool_text(q.spec.durable),
            ));
        }
        if q.spec.auto_delete != d.auto_delete {
            return Err(mismatch(
                "auto_delete",
                bool_text(d.auto_delete),
                bool_text(q.spec.auto_delete),
            ));
        }
        // x-queue-type defaults to classic on both sides.
        let new_type = queue_type_arg(&d.arguments);
        if let Some(t) = &new_type
            && t.as_bytes() != q.spec.kind.as_str().as_bytes()
        {
            return Err(mismatch(
                "x-queue-type",
                &t.to_lossy(),
                q.spec.kind.as_str(),
            ));
        }
        if let Some((arg, new, old)) =
            first_difference(&d.arguments, &q.spec.arguments, VALIDATED_QUEUE_ARGS)
        {
            if arg == "x-queue-type" {
                return Ok(());
            }
            return Err(mismatch(&arg, &new, &old));
        }
        Ok(())
    }

    fn validate_queue_args(vhost: &str, name: &ShortStr, d: &QueueDeclare) -> Result<QueueType> {
        let invalid = |arg: &str, why: String| Refusal::InvalidArg {
            queue: name.clone(),
            vhost: vhost.to_string(),
            arg: arg.to_string(),
            why,
        };
        let int_arg = |arg: &str, min: i64| -> Result<()> {
            match d.arguments.get(arg) {
                None => Ok(()),
                Some(v) => match v.as_i64() {
                    Some(n) if n < min && min == 1 && n == 0 => {
                        Err(invalid(arg, format!("{{value_zero,{n}}}")))
                    }
                    Some(n) if n < min => Err(invalid(arg, format!("{{value_negative,{n}}}"))),
                    Some(_) => Ok(()),
                    None => Err(invalid(
                        arg,
                        format!("{{unacceptable_type,{}}}", v.type_name()),
                    )),
                },
            }
        };
        int_arg("x-message-ttl", 0)?;
        int_arg("x-expires", 1)?;
        int_arg("x-max-length", 0)?;
        int_arg("x-max-length-bytes", 0)?;
        int_arg("x-max-priority", 0)?;
        int_arg("x-delivery-limit", 0)?;
        int_arg("x-consumer-timeout", 0)?;
        if let Some(n) = d
            .arguments
            .get("x-max-priority")
            .and_then(FieldValue::as_i64)
            && n > 255
        {
            return Err(invalid(
                "x-max-priority",
                format!("{{max_value_exceeded,{n}}}"),
            ));
        }
        let str_arg = |arg: &str, allowed: &[&str]| -> Result<()> {
            match d.arguments.get(arg) {
                None => Ok(()),
                Some(FieldValue::LongStr(s))
                    if allowed.is_empty() || allowed.contains(&&*s.to_lossy()) =>
                {
                    Ok(())
                }
                Some(FieldValue::LongStr(s)) => Err(invalid(
                    arg,
                    format!("{{invalid_value,<<\"{}\">>}}", s.to_lossy()),
                )),
                Some(v) => Err(invalid(
                    arg,
                    format!("{{unacceptable_type,{}}}", v.type_name()),
                )),
            }
        };
        str_arg(
            "x-overflow",
            &["drop-head", "reject-publish", "reject-publish-dlx"],
        )?;
        str_arg("x-dead-letter-exchange", &[])?;
        str_arg("x-dead-letter-routing-key", &[])?;
        str_arg("x-queue-mode", &["default", "lazy"])?;
        str_arg("x-dead-letter-strategy", &["at-most-once", "at-least-once"])?;
        if d.arguments.get("x-dead-letter-routing-key").is_some()
            && d.arguments.get("x-dead-letter-exchange").is_none()
        {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".to_string(),
            ));
        }
        if let Some(v) = d.arguments.get("x-single-active-consumer")
            && v.as_bool().is_none()
        {
            return Err(invalid(
                "x-single-active-consumer",
                format!("{{unacceptable_type,{}}}", v.type_name()),
            ));
        }
        let kind = match queue_type_arg(&d.arguments) {
            None => QueueType::Classic,
            Some(t) => match t.as_bytes() {
                b"classic" => QueueType::Classic,
                b"quorum" => QueueType::Quorum,
                b"stream" => {
                    return Err(Refusal::StreamsUnsupported {
                        queue: name.clone(),
                        vhost: vhost.to_string(),
                    });
                }
                _ => {
                    return Err(Refusal::UnknownQueueType(t.to_lossy().into_owned()));
                }
            },
        };
        if kind == QueueType::Quorum {
            // Arguments RabbitMQ 3.10's quorum queues do not take, checked
            // before the queue's properties, as its queue type does.
            for arg in ["x-max-priority", "x-queue-mode"] {
                if d.arguments.get(arg).is_some() {
                    return Err(Refusal::ArgNotForType {
                        queue: name.clone(),
                        vhost: vhost.to_string(),
                        arg,
                        queue_type: "rabbit_quorum_queue",
                    });
                }
            }
            let prop = |property: &'static str| Refusal::InvalidProperty {
                queue: name.clone(),
                vhost: vhost.to_string(),
                property,
            };
            if d.exclusive {
                return Err(prop("exclusive-owner"));
            }
            if !d.durable {
                return Err(prop("non-durable"));
            }
            if d.auto_delete {
                return Err(prop("auto-delete"));
            }
            let text = |arg: &str| match d.arguments.get(arg) {
                Some(FieldValue::LongStr(s)) => Some(s.to_lossy().into_owned()),
                _ => None,
            };
            let overflow = text("x-overflow");
            // Accepted and logged, as RabbitMQ 3.10 does: the queue drops
            // its head instead.
            if overflow.as_deref() == Some("reject-publish-dlx") {
                tracing::warn!(
                    queue = %name,
                    vhost,
                    "Invalid overflow strategy \"reject-publish-dlx\" for quorum queue: queue '{name}' in vhost '{vhost}'"
                );
            }
            // At-least-once dead-lettering needs reject-publish; with
            // drop-head RabbitMQ falls back to at-most-once (on this single
            // node both route a dead letter before the queue forgets it).
            if text("x-dead-letter-strategy").as_deref() == Some("at-least-once")
                && d.arguments.get("x-dead-letter-exchange").is_some()
                && overflow.as_deref() != Some("reject-publish")
            {
                tracing::warn!(
                    queue = %name,
                    vhost,
                    "Falling back to dead-letter-strategy at-most-once for queue '{name}' in vhost '{vhost}' because configured dead-letter-strategy at-least-once is incompatible with effective overflow strategy drop-head. To enable dead-letter-strategy at-least-once, set overflow strategy to reject-publish."
                );
            }
        }
        Ok(kind)
    }

    /// Deletes a queue: unbinds it everywhere and cancels its consumers.
    /// Returns the number of messages it held.
    pub fn remove_queue(&self, q: &Arc<Queue>) -> u32 {
        let removed = self
            .queues
            .remove_if(q.name().as_bytes(), |_, v| Arc::ptr_eq(v, q))
            .is_some();
        let n = q.delete(&self.name);
        self.changed();
        if removed {
            self.unbind_everywhere(&Destination::Queue(Arc::clone(q)));
        }
        n
    }

    /// `queue.delete`. A missing queue is fine (delete-ok with 0).
    pub fn delete_queue(
        &self,
        conn: ConnId,
        name: &ShortStr,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32> {
        let Some(q) = self.queue(name.as_bytes()) else {
            return Ok(0);
        };
        if !q.accessible_by(conn) {
            return Err(self.locked(name));
        }
        if if_unused && !q.is_unused() {
            return Err(Refusal::InUse {
                kind: Kind::Queue,
                name: name.clone(),
                vhost: self.name.clone(),
            });
        }
        if if_empty && q.message_count() > 0 {
            return Err(Refusal::NotEmpty {
                queue: name.clone(),
                vhost: self.name.clone(),
            });
        }
        Ok(self.remove_queue(&q))
    }

    /// Adds a binding (`queue.bind`, `exchange.bind`) for connection `conn`
    /// (which must be allowed to use an exclusive destination queue).
    pub fn bind(&self, conn: ConnId, b: &Binding) -> Result<()> {
        match &b.destination {
            BindingTarget::Queue(q) => self.bind_queue(
                conn,
                q,
                &b.source,
                b.routing_key.clone(),
                b.arguments.clone(),
            ),
            BindingTarget::Exchange(x) => {
                self.bind_exchange(x, &b.source, b.routing_key.clone(), b.arguments.clone())
            }
        }
    }

    /// Removes a binding (`queue.unbind`, `exchange.unbind`); removing one
    /// that does not exist is not an error, as in RabbitMQ.
    pub fn unbind(&self, conn: ConnId, b: &Binding) -> Result<()> {
        match &b.destination {
            BindingTarget::Queue(q) => {
                self.unbind_queue(conn, q, &b.source, &b.routing_key, &b.arguments)
            }
            BindingTarget::Exchange(x) => {
                self.unbind_exchange(x, &b.source, &b.routing_key, &b.arguments)
            }
        }
    }

    fn bind_queue(
        &self,
        conn: ConnId,
        queue: &ShortStr,
        exchange: &ShortStr,
        key: ShortStr,
        args: FieldTable,
    ) -> Result<()> {
        let q = self.queue_for(conn, queue)?;
        if exchange.is_empty() {
            return Err(self.default_exchange_refused());
        }
        let ex = self.exchange_or_404(exchange)?;
        self.add_binding(&ex, Destination::Queue(q), key, args)
    }

    fn default_exchange_refused(&self) -> Refusal {
        Refusal::DefaultExchange
    }

    fn unbind_queue(
        &self,
        conn: ConnId,
        queue: &ShortStr,
        exchange: &ShortStr,
        key: &ShortStr,
        args: &FieldTable,
    ) -> Result<()> {
        let Some(q) = self.queue(queue.as_bytes()) else {
            return Ok(());
        };
        if !q.accessible_by(conn) {
            return Err(self.locked(queue));
        }
        if exchange.is_empty() {
            return Err(self.default_exchange_refused());
        }
        let Some(ex) = self.exchange(exchange.as_bytes()) else {
            return Ok(());
        };
        let dest = Destination::Queue(q);
        if ex.unbind(&dest, key, args) {
            self.changed();
            self.forget_binding(&ex, &dest, key, args);
            if ex.spec.auto_delete && ex.has_no_bindings() {
                self.remove_exchange(exchange);
            }
        }
        Ok(())
    }

    fn bind_exchange(
        &self,
        destination: &ShortStr,
        source: &ShortStr,
        key: ShortStr,
        args: FieldTable,
    ) -> Result<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(self.default_exchange_refused());
        }
        self.exchange_or_404(destination)?;
        let src = self.exchange_or_404(source)?;
        self.add_binding(&src, Destination::Exchange(destination.clone()), key, args)
    }

    fn unbind_exchange(
        &self,
        destination: &ShortStr,
        source: &ShortStr,
        key: &ShortStr,
        args: &FieldTable,
    ) -> Result<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(self.default_exchange_refused());
        }
        let Some(src) = self.exchange(source.as_bytes()) else {
            return Ok(());
        };
        let dest = Destination::Exchange(destination.clone());
        if src.unbind(&dest, key, args) {
            self.changed();
            self.forget_binding(&src, &dest, key, args);
            if src.spec.auto_delete && src.has_no_bindings() {
                self.remove_exchange(source);
            }
        }
        Ok(())
    }

    /// The queues a message published to `exchange` with routing keys
    /// `keys` reaches, each once, following exchange-to-exchange bindings
    /// and alternate exchanges. `keys` is the publish's routing key, then
    /// those of its `CC` and `BCC` headers ([`sender_selected_keys`]): an
    /// exchange routes a message by any of them, and its alternate exchange
    /// takes the message only when none matched. Returns whether the
    /// result depends only on the exchange, the keys and the topology (no
    /// headers exchange was consulted), so that it may be reused for the
    /// same keys while [`VHost::epoch`] stands. `message` is the
    /// message's headers, or better all its properties (which an
    /// `x-consistent-hash` exchange with `hash-property` reads).
    pub fn route<'m>(
        &self,
        exchange: &Exchange,
        keys: &[ShortStr],
        message: impl Into<MessageView<'m>>,
        out: &mut Vec<Arc<Queue>>,
    ) -> bool {
        let message = message.into();
        if exchange.name().is_empty() {
            for key in keys {
                if let Some(q) = self.queue(key.as_bytes())
                    && !q.is_deleted()
                    && !out.iter().any(|o| Arc::ptr_eq(o, &q))
                {
                    out.push(q);
                }
            }
            return true;
        }
        // Allocates only if exchange-to-exchange bindings are followed.
        let mut visited: Vec<ShortStr> = Vec::new();
        let mut by_key = true;
        self.route_from(exchange, keys, message, out, &mut visited, 0, &mut by_key);
        by_key
    }

    #[allow(clippy::too_many_arguments, reason = "the recursion's state")]
    fn route_from(
        &self,
        exchange: &Exchange,
        keys: &[ShortStr],
        message: MessageView<'_>,
        out: &mut Vec<Arc<Queue>>,
        visited: &mut Vec<ShortStr>,
        depth: usize,
        by_key: &mut bool,
    ) {
        if !exchange.routes_by_key() {
            *by_key = false;
        }
        // The plugin types pick one destination per message, by the
        // publish's routing key alone.
        let own_keys = if exchange.routes_once() {
            &keys[..keys.len().min(1)]
        } else {
            keys
        };
        let before = out.len();
        let mut next: Vec<ShortStr> = Vec::new();
        for key in own_keys {
            exchange.route(key, message, &mut |d| match d {
                Destination::Queue(q) => {
                    if !q.is_deleted() && !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(Arc::clone(q));
                    }
                }
                Destination::Exchange(name) => {
                    if !next.contains(name) {
                        next.push(name.clone());
                    }
                }
            });
        }
        if out.len() == before && next.is_empty() {
            next.extend(exchange.alternate());
        }
        // Cycles of exchange-to-exchange bindings are legal: each exchange
        // is visited once, and the depth bound is a second guard.
        if next.is_empty() || depth >= 64 {
            return;
        }
        visited.push(exchange.name().clone());
        for name in next {
            if visited.contains(&name) {
                continue;
            }
            if let Some(ex) = self.exchange(name.as_bytes()) {
                self.route_from(&ex, keys, message, out, visited, depth + 1, by_key);
            }
        }
    }
}

impl VHost {
    /// Makes a routed message shareable, giving it a store id if it is
    /// persistent and one of `queues` is stored.
    pub fn prepare(&self, mut message: Message, queues: &[Arc<Queue>]) -> Arc<Message> {
        if let Some(d) = &self.durability
            && message.is_persistent()
            && queues.iter().any(|q| q.is_stored())
        {
            message.store_id = Some(d.message_id());
        }
        self.gauge.track(&mut message);
        Arc::new(message)
    }

    /// Puts a prepared message on `queues`, writing its
    /// record to the store first. Returns whether every queue accepted it.
    pub fn enqueue(
        &self,
        message: Arc<Message>,
        queues: &[Arc<Queue>],
        now: Instant,
        publisher: Option<&Arc<crate::mailbox::Mailbox>>,
    ) -> bool {
        let store_id = message.store_id;
        if let (Some(d), Some(id)) = (&self.durability, store_id) {
            d.submit(PersistOp::Message {
                id,
                message: Arc::clone(&message),
            });
        }
        let mut accepted = true;
        // The last queue takes the publisher's reference: a message routed
        // to one queue is then that queue's alone (see COMPACT_FROM).
        if let Some((last, rest)) = queues.split_last() {
            for q in rest {
                let (ok, dead) = q.publish(Arc::clone(&message), now, publisher);
                accepted &= ok;
                self.dead_letter(q, dead);
            }
            let (ok, dead) = last.publish(message, now, publisher);
            accepted &= ok;
            self.dead_letter(last, dead);
        }
        if let (Some(d), Some(id)) = (&self.durability, store_id) {
            d.submit(PersistOp::Routed { id });
        }
        accepted
    }

    /// Whether this vhost stores durable state.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.durability.as_ref()
    }

    /// Holds a message published to the `x-delayed-message` exchange `ex`
    /// for `delay` ms from `now_ms` (wall-clock Unix milliseconds). A
    /// persistent message on a durable exchange is stored first; returns
    /// the deadline and whether it was stored (its confirm then waits for
    /// the flush).
    pub fn delay(
        &self,
        ex: &Exchange,
        (routing_key, properties, body): (ShortStr, crate::message::Properties, &[u8]),
        delay: u32,
        now_ms: u64,
    ) -> (u64, bool) {
        let deadline = now_ms.saturating_add(u64::from(delay));
        // Every message a durable delayed exchange holds is stored, transient
        // ones too, as the plugin keeps all it holds on disk; routed, a
        // transient one is then as transient as any other.
        let stored = self.durability.is_some() && ex.spec.durable;
        let Some(mut held) = ex.delayed() else {
            return (deadline, false);
        };
        // Held packed in one allocation (a copy: the slice of the read
        // buffer would pin all 64 KiB of it while it waits), uncounted by
        // the memory gauge until it routes, as a packed queue entry is.
        let message = Message::new(
            ex.name().clone(),
            routing_key,
            properties,
            bytes::Bytes::copy_from_slice(body),
        );
        let (deadline, seq) = held.insert(deadline, crate::delayed::DelayedMessage::new(&message));
        // Submitted under the exchange's lock, so its removal (by the
        // timer, which takes the message out under the same lock) always
        // comes after it.
        if stored && let Some(d) = &self.durability {
            d.submit(PersistOp::DelayedAdd {
                key: self.delayed_key(ex, (deadline, seq)),
                message: Arc::new(message),
            });
        }
        (deadline, stored)
    }

    fn delayed_key(&self, ex: &Exchange, (deadline, seq): (u64, u64)) -> DelayedRecordKey {
        DelayedRecordKey {
            vhost: self.name.clone(),
            exchange: ex.name().clone(),
            deadline,
            seq,
        }
    }

    /// Puts back a stored delayed message at start-up; false if `exchange`
    /// is not an `x-delayed-message` exchange here (the record is stale).
    pub fn restore_delayed(&self, exchange: &ShortStr, key: (u64, u64), message: Message) -> bool {
        let Some(ex) = self.exchange(exchange.as_bytes()) else {
            return false;
        };
        let Some(mut held) = ex.delayed() else {
            return false;
        };
        held.restore(key, crate::delayed::DelayedMessage::new(&message));
        true
    }

    /// The earliest deadline of a message held by one of this vhost's
    /// delayed exchanges.
    pub fn next_delayed_deadline(&self) -> Option<u64> {
        self.exchanges
            .iter()
            .filter_map(|e| e.value().delayed().and_then(|d| d.next_deadline()))
            .min()
    }

    /// Routes up to `max` delayed messages due at `now_ms`; returns how
    /// many it routed. Each goes by its exchange's rules to the bindings
    /// of now (alternate exchange included), with `x-delay` negated; its
    /// queue copies are submitted to the store before its delayed record
    /// is removed.
    pub fn route_delayed(&self, now: Instant, now_ms: u64, max: usize) -> usize {
        let mut routed = 0;
        let delayed: Vec<Arc<Exchange>> = self
            .exchanges
            .iter()
            .filter(|e| e.value().spec.kind == ExchangeKind::DelayedMessage)
            .map(|e| Arc::clone(e.value()))
            .collect();
        let mut queues = Vec::new();
        for ex in delayed {
            if routed >= max {
                break;
            }
            let due = match ex.delayed() {
                Some(mut held) => held.take_due(now_ms, max - routed),
                None => continue,
            };
            routed += due.len();
            let stored = ex.spec.durable;
            for (key, held) in due {
                let mut m = held.into_message();
                let delay = crate::delayed::DelayedMessage::delay(&m);
                m.properties = crate::delayed::routed_properties(&m.properties, delay);
                queues.clear();
                self.route(
                    &ex,
                    std::slice::from_ref(&m.routing_key),
                    &*m.properties,
                    &mut queues,
                );
                let message = self.prepare(m, &queues);
                self.enqueue(message, &queues, now, None);
                if stored && let Some(d) = &self.durability {
                    d.submit(PersistOp::DelayedRemove {
                        key: self.delayed_key(&ex, key),
                    });
                }
            }
        }
        routed
    }

    /// Puts back the ids a durable `x-message-deduplication` exchange with
    /// a disk cache had stored, read at start-up at wall-clock time
    /// `now_ms`. False if there is no such exchange here (the records are
    /// stale: the caller removes them).
    pub fn restore_dedup(
        &self,
        exchange: &ShortStr,
        ids: Vec<crate::queue::dedup::StoredId>,
        now_ms: u64,
    ) -> bool {
        self.exchange(exchange.as_bytes())
            .is_some_and(|ex| ex.restore_dedup(ids, now_ms))
    }

    /// Expires messages and unused queues; called by the broker's tick
    /// with the monotonic time and the wall-clock Unix milliseconds.
    pub fn sweep(&self, now: Instant, now_ms: u64) {
        self.tick_ms.store(now_ms, Ordering::Relaxed);
        for q in self.queues() {
            let (unused, dead) = q.expire(now);
            self.dead_letter(&q, dead);
            if unused {
                tracing::debug!(vhost = %self.name, queue = %q.name(), "queue expired (x-expires)");
                self.remove_queue(&q);
            }
        }
        // `x-message-deduplication` exchanges run their ids' times to live
        // by this clock.
        for ex in self.exchanges() {
            ex.tick(now_ms);
        }
    }

    /// Republishes messages that died in `from` to its dead-letter
    /// exchange, with RabbitMQ's `x-death` and `x-first-death-*` headers.
    /// Without a dead-letter exchange (or if it does not exist) they are
    /// dropped, as in RabbitMQ.
    #[inline]
    pub fn dead_letter(&self, from: &Queue, dead: DeadLetters) {
        // Almost always empty: keep that check inline at every call site.
        if !dead.is_empty() {
            self.route_dead_letters(from, dead);
        }
    }

    fn route_dead_letters(&self, from: &Queue, dead: DeadLetters) {
        let Some(now) = dead.now else { return };
        let args = from.args();
        let Some(dlx_name) = &args.dead_letter_exchange else {
            return;
        };
        let Some(dlx) = self.exchange(dlx_name.as_bytes()) else {
            return;
        };
        let wall = self.wall_clock.load(Ordering::Relaxed);
        let mut targets = Vec::new();
        for (m, reason) in dead.messages {
            let old = &m.message;
            let mut props = (*old.properties).clone();
            let mut headers = props.headers.take().unwrap_or_default();
            let mut original_keys = vec![old.routing_key.clone()];
            if let Ok(cc) = sender_selected_keys(&headers, &["CC"]) {
                original_keys.extend(cc);
            }
            let mut deaths = match headers.remove("x-death") {
                Some(FieldValue::Array(a)) => a,
                _ => Vec::new(),
            };
            let same = |v: &FieldValue| match v {
                FieldValue::Table(t) => {
                    t.get("queue").and_then(FieldValue::as_bytes) == Some(from.name().as_bytes())
                        && t.get("reason").and_then(FieldValue::as_bytes)
                            == Some(reason.as_str().as_bytes())
                }
                _ => false,
            };
            let entry = match deaths.iter().position(same) {
                Some(i) => {
                    let mut e = deaths.remove(i);
                    if let FieldValue::Table(t) = &mut e {
                        let count = t.remove("count").and_then(|c| c.as_i64()).unwrap_or(0);
                        t.insert("count", FieldValue::I64(count.saturating_add(1)));
                        t.remove("time");
                        t.insert("time", FieldValue::Timestamp(wall));
                    }
                    e
                }
                None => {
                    let mut t = FieldTable::new()
                        .with("count", FieldValue::I64(1))
                        .with("reason", FieldValue::LongStr(reason.as_str().into()))
                        .with(
                            "queue",
                            FieldValue::LongStr(from.name().to_lossy().as_ref().into()),
                        )
                        .with("time", FieldValue::Timestamp(wall))
                        .with(
                            "exchange",
                            FieldValue::LongStr(old.exchange.to_lossy().as_ref().into()),
                        )
                        .with(
                            "routing-keys",
                            FieldValue::Array(
                                original_keys
                                    .iter()
                                    .map(|k| FieldValue::LongStr(k.to_lossy().as_ref().into()))
                                    .collect(),
                            ),
                        );
                    if let Some(exp) = &props.expiration {
                        t.insert(
                            "original-expiration",
                            FieldValue::LongStr(exp.to_lossy().as_ref().into()),
                        );
                    }
                    FieldValue::Table(t)
                }
            };
            deaths.insert(0, entry);
            let rejected_in_cycle = deaths.iter().any(|d| match d {
                FieldValue::Table(t) => {
                    t.get("reason").and_then(FieldValue::as_bytes) == Some(b"rejected")
                }
                _ => false,
            });
            let died_in = |q: &Queue| {
                deaths.iter().any(|d| match d {
                    FieldValue::Table(t) => {
                        t.get("queue").and_then(FieldValue::as_bytes) == Some(q.name().as_bytes())
                    }
                    _ => false,
                })
            };
            if headers.get("x-first-death-reason").is_none() {
                headers.insert(
                    "x-first-death-exchange",
                    FieldValue::LongStr(old.exchange.to_lossy().as_ref().into()),
                );
                headers.insert(
                    "x-first-death-queue",
                    FieldValue::LongStr(from.name().to_lossy().as_ref().into()),
                );
                headers.insert(
                    "x-first-death-reason",
                    FieldValue::LongStr(reason.as_str().into()),
                );
            }
            // With a dead-letter routing key the message goes by that key
            // alone and loses its CC header; without one it goes by the
            // keys it was published with, CC included, as in RabbitMQ
            // (its BCC keys were removed at publish and are not kept).
            let keys = match &args.dead_letter_routing_key {
                Some(k) => {
                    headers.remove("CC");
                    vec![k.clone()]
                }
                None => original_keys.clone(),
            };
            let routing_key = keys[0].clone();
            // A delayed exchange as the dead-letter exchange holds a
            // message that asks for a delay, as the plugin does (it is
            // called for every routing through its exchange); it is
            // routed at its time by the exchange's inner type.
            if dlx.spec.kind == ExchangeKind::DelayedMessage
                && let Some(delay) = crate::delayed::delay_of(Some(&headers))
            {
                headers.insert("x-death", FieldValue::Array(deaths));
                props.headers = Some(headers);
                props.expiration = None;
                let now_ms = self
                    .delayed_timer
                    .wall_ms(now, self.wall_clock.load(Ordering::Relaxed));
                let (deadline, _) =
                    self.delay(&dlx, (routing_key, props.into(), &old.body), delay, now_ms);
                self.delayed_timer.added(deadline);
                continue;
            }
            targets.clear();
            self.route(
                &dlx,
                &keys,
                MessageView::new(Some(&headers), &props),
                &mut targets,
            );
            // A message that would die in a cycle without ever being
            // rejected is dropped (RabbitMQ's rule), which also bounds the
            // recursion below.
            targets.retain(|q| rejected_in_cycle || !died_in(q));
            headers.insert("x-death", FieldValue::Array(deaths));
            props.headers = Some(headers);
            props.expiration = None;
            let msg = self.prepare(
                Message::new(
                    dlx_name.clone(),
                    routing_key,
                    props.into(),
                    old.body.clone(),
                ),
                &targets,
            );
            self.enqueue(msg, &targets, now, None);
        }
    }
}

/// The headers by which a publisher adds routing keys (sender-selected
/// distribution): `CC` is delivered with the message, `BCC` is removed.
pub const ROUTING_HEADERS: [&str; 2] = ["CC", "BCC"];

/// Whether a message's headers name extra routing keys.
pub fn has_sender_selected_keys(headers: Option<&FieldTable>) -> bool {
    headers.is_some_and(|h| ROUTING_HEADERS.iter().any(|k| h.get(k).is_some()))
}

/// The routing keys named by the headers `names` (of [`ROUTING_HEADERS`]),
/// in order: each must be an array, of which the long strings count and
/// anything else is ignored (RabbitMQ's `header_routes`). Any other type
/// is refused with RabbitMQ's text, as a 406 on the publish.
pub fn sender_selected_keys(headers: &FieldTable, names: &[&str]) -> Result<Vec<ShortStr>> {
    let mut keys = Vec::new();
    for name in names {
        match headers.get(name) {
            None => {}
            Some(FieldValue::Array(values)) => {
                keys.extend(values.iter().filter_map(|v| match v {
                    // A key longer than a short string can name no queue
                    // and match no binding: it routes nowhere.
                    FieldValue::LongStr(s) => ShortStr::from_slice(s.as_bytes()),
                    _ => None,
                }));
            }
            Some(other) => {
                return Err(Refusal::RoutingHeaderType {
                    header: (*name).to_string(),
                    type_name: other.type_name(),
                });
            }
        }
    }
    Ok(keys)
}

fn queue_type_arg(args: &FieldTable) -> Option<warren_codec::LongStr> {
    match args.get("x-queue-type") {
        Some(FieldValue::LongStr(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The first argument among `keys` whose value differs between `new` and
/// `old` (by value and type, as RabbitMQ compares), as (name, new, old).
fn first_difference(
    new: &FieldTable,
    old: &FieldTable,
    keys: &[&str],
) -> Option<(String, String, String)> {
    let show = |v: Option<&FieldValue>| {
        v.map(|v| v.to_string())
            .unwrap_or_else(|| "none".to_string())
    };
    for k in keys {
        let (a, b) = (new.get(k), old.get(k));
        if a != b {
            return Some((k.to_string(), show(a), show(b)));
        }
    }
    None
}
