//! One channel: content assembly, the channel's methods, consumers,
//! unacknowledged deliveries, publisher confirms and transactions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren_codec::{
    BasicAck, BasicCancelOk, BasicConsumeOk, BasicDeliver, BasicGetEmpty, BasicGetOk, BasicNack,
    BasicPublish, BasicQosOk, BasicRecoverOk, BasicReturn, CLASS_BASIC, CLASS_CONFIRM,
    CLASS_EXCHANGE, CLASS_QUEUE, CLASS_TX, ConfirmSelectOk, ContentHeader, ExchangeBindOk,
    ExchangeDeclareOk, ExchangeDeleteOk, ExchangeUnbindOk, Frame, Method, QueueBindOk,
    QueueDeclareOk, QueueDeleteOk, QueuePurgeOk, QueueUnbindOk, ReplyCode, ShortStr, TxCommitOk,
    TxRollbackOk, TxSelectOk, encode_body, encode_content_header, encode_method,
};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::exchange::{Exchange, ExchangeKind};
use crate::fxhash::FxHashMap;
use crate::mailbox::{Event, Mailbox};
use crate::message::{Message, Properties, QueueRef};
use crate::permissions::{Access, Grant, Permissions, Resource};
use crate::persist::{Awaited, Barrier, BindingTarget, PersistOp};
use crate::queue::{ConnId, ConsumeRefused, Consumer, Credit, Queue, QueueType, QueuedMessage};
use crate::registry::ChannelEntry;
use crate::vhost::{
    Binding, ExchangeDeclare, QueueDeclare, ROUTING_HEADERS, VHost, has_sender_selected_keys,
    sender_selected_keys,
};
use crate::vhost::{REPLY_TO, REPLY_TO_PREFIX, ReplyTarget};

/// What a channel handler needs from its connection.
pub(crate) struct Ctx<'a> {
    pub(crate) broker: &'a Arc<Broker>,
    pub(crate) vhost: &'a Arc<VHost>,
    pub(crate) conn: ConnId,
    pub(crate) mailbox: &'a Arc<Mailbox>,
    pub(crate) out: &'a mut BytesMut,
    pub(crate) frame_max: u32,
    pub(crate) user: &'a str,
    pub(crate) exclusive_queues: &'a mut Vec<Arc<Queue>>,
    pub(crate) now: Instant,
    pub(crate) perms: &'a Permissions,
}

impl Ctx<'_> {
    /// The permission checker for this connection's user and vhost.
    pub(crate) fn grant(&self) -> Grant<'_> {
        Grant {
            user: self.user,
            vhost: &self.vhost.name,
            perms: self.perms,
        }
    }
}

/// Content being received after `basic.publish`.
#[derive(Debug, Default)]
enum Content {
    #[default]
    Idle,
    Header(BasicPublish),
    Body {
        publish: BasicPublish,
        header: ContentHeader,
        first: Option<Bytes>,
        rest: BytesMut,
        received: u64,
    },
}

/// How deliveries are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged: done.
    Ack,
    /// Back to the queue, redelivered.
    Requeue,
    /// Rejected without requeue: dead-lettered if the queue says so.
    Reject,
}

/// A delivery awaiting ack.
#[derive(Debug)]
struct Unacked {
    tag: u64,
    queue: Arc<Queue>,
    message: QueuedMessage,
    /// `None` for `basic.get`.
    consumer: Option<ShortStr>,
    /// When it went out, for the consumer timeout.
    delivered_at: Instant,
}

#[derive(Debug)]
struct ChanConsumer {
    queue: Arc<Queue>,
}

/// Publisher-confirm state.
#[derive(Debug)]
struct Confirms {
    next: u64,
    /// Unconfirmed publishes in order: (seq, None while the store is
    /// still writing, then Some(ack?)).
    pending: VecDeque<(u64, Option<bool>)>,
}

/// A message routed inside a transaction, waiting for commit.
#[derive(Debug)]
struct TxPublish {
    message: Arc<Message>,
    queues: Vec<Arc<Queue>>,
    mandatory: bool,
    /// Routing it stored a deduplication id: commit-ok waits for a flush.
    stored_id: bool,
}

#[derive(Debug)]
enum TxAck {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Reject {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

#[derive(Debug, Default)]
struct Tx {
    publishes: Vec<TxPublish>,
    acks: Vec<TxAck>,
}

/// One open channel.
#[derive(Debug)]
pub(crate) struct Channel {
    id: u16,
    /// What the management API sees of this channel.
    pub(crate) entry: Arc<ChannelEntry>,
    /// Messages published on it (mirrored in `entry`).
    published: u64,
    closing: bool,
    max_message_size: u64,
    content: Content,
    consumers: FxHashMap<ShortStr, ChanConsumer>,
    unacked: VecDeque<Unacked>,
    next_tag: u64,
    prefetch: u32,
    credit: Arc<Credit>,
    confirm: Option<Confirms>,
    tx: Option<Tx>,
    last_queue: Option<ShortStr>,
    /// Direct reply-to consumer: (consumer tag, the channel's
    /// `amq.rabbitmq.reply-to.…` address).
    reply_consumer: Option<(ShortStr, ShortStr)>,
    /// No-ack deliveries written since the last flush, per queue and consumer.
    written: Vec<(Arc<Queue>, ShortStr, u32)>,
    /// The exchange last published to (already checked: write permission,
    /// not internal) and, for its last routing key, the queues it routed
    /// to; both valid while the vhost's epoch stands.
    route: Option<Box<RouteCache>>,
}

/// The oldest unacknowledged delivery of a channel, for the consumer
/// timeout's log line.
#[derive(Debug)]
pub(crate) struct AckHead<'a> {
    pub(crate) consumer_tag: Option<&'a ShortStr>,
    pub(crate) delivery_tag: u64,
    pub(crate) queue: &'a ShortStr,
}

/// A channel's last route, so that a publisher sending to the same
/// exchange and key skips the lookups and the routing.
#[derive(Debug)]
struct RouteCache {
    /// [`VHost::epoch`] read before the lookups.
    epoch: u64,
    exchange: Arc<crate::exchange::Exchange>,
    /// The key `queues` were routed for; `None` when they depended on
    /// headers (or were never computed).
    key: Option<ShortStr>,
    queues: Vec<Arc<Queue>>,
}

impl Channel {
    pub(crate) fn new(id: u16, max_message_size: u64) -> Self {
        Channel {
            id,
            entry: Arc::new(ChannelEntry::new(id)),
            published: 0,
            closing: false,
            max_message_size,
            content: Content::Idle,
            consumers: FxHashMap::default(),
            unacked: VecDeque::new(),
            next_tag: 1,
            prefetch: 0,
            credit: Arc::new(Credit::default()),
            confirm: None,
            tx: None,
            last_queue: None,
            reply_consumer: None,
            written: Vec::new(),
            route: None,
        }
    }

    /// Refuses a consumer with a new tag (an empty one is always new) once
    /// the channel has `consumer_max_per_channel` of them: 530, closing the
    /// connection, before anything else about the consume is checked, as
    /// RabbitMQ's channel does. The direct reply-to consumer is not
    /// counted, as in RabbitMQ.
    fn check_consumer_limit(&self, ctx: &Ctx<'_>, tag: &ShortStr) -> Result<()> {
        match ctx.broker.config.limits.consumer_max_per_channel {
            Some(max) if self.consumers.len() >= max && !self.consumers.contains_key(tag) => {
                Err(Error::connection(
                    ReplyCode::NotAllowed,
                    format!("reached maximum ({max}) of consumers per channel"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Publishes the channel's settings and counts to its entry.
    pub(crate) fn sync_entry(&self) {
        let e = &self.entry;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        e.prefetch_count.store(self.prefetch, Ordering::Relaxed);
        e.global_prefetch_count
            .store(self.credit.limit(), Ordering::Relaxed);
        e.confirm.store(self.confirm.is_some(), Ordering::Relaxed);
        e.transactional.store(self.tx.is_some(), Ordering::Relaxed);
        e.consumer_count
            .store(count(self.consumers.len()), Ordering::Relaxed);
        e.messages_unacknowledged
            .store(count(self.unacked.len()), Ordering::Relaxed);
    }

    /// Forgets the cached route (permissions changed: the next publish
    /// checks them afresh).
    pub(crate) fn forget_route(&mut self) {
        self.route = None;
    }

    /// Whether deliveries await settlement on this channel.
    pub(crate) fn has_unacked(&self) -> bool {
        !self.unacked.is_empty() && !self.closing
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    pub(crate) fn start_closing(&mut self) {
        self.closing = true;
        self.content = Content::Idle;
    }

    /// Cancels consumers and requeues unacked messages (channel close,
    /// channel error, connection end).
    pub(crate) fn release(&mut self, conn: ConnId, vhost: &VHost) {
        if let Some((_, name)) = self.reply_consumer.take() {
            vhost.unregister_reply(&name);
        }
        for (tag, c) in self.consumers.drain() {
            let removed = c.queue.remove_consumer(conn, self.id, &tag);
            vhost.dead_letter(&c.queue, removed.dead);
            if removed.auto_delete_now {
                vhost.remove_queue(&c.queue);
            }
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        self.settle(conn, vhost, all, Outcome::Requeue);
        self.tx = None;
        self.confirm = None;
        self.content = Content::Idle;
    }

    /// The consumer timeout of the channel's oldest unacknowledged
    /// delivery, as RabbitMQ 3.12's channel checks it (only the oldest;
    /// its queue's `x-consumer-timeout` or `consumer-timeout` policy, else
    /// the broker's `default`): when it times out (the first instant more
    /// than the timeout after it went out), the timeout, and what to log
    /// (consumer tag, delivery tag, queue). `None` when nothing is
    /// outstanding, the channel is closing or no timeout applies.
    pub(crate) fn ack_deadline(
        &self,
        default: Option<Duration>,
    ) -> Option<(Instant, Duration, AckHead<'_>)> {
        if self.closing {
            return None;
        }
        let head = self.unacked.front()?;
        let timeout = head.queue.args().consumer_timeout.or(default)?;
        let at = head.delivered_at + timeout + Duration::from_millis(1);
        Some((
            at,
            timeout,
            AckHead {
                consumer_tag: head.consumer.as_ref(),
                delivery_tag: head.tag,
                queue: head.queue.name(),
            },
        ))
    }

    /// The queue went away: forget the consumer. Returns whether it existed.
    pub(crate) fn forget_consumer(&mut self, tag: &ShortStr) -> bool {
        self.consumers.remove(tag).is_some()
    }

    fn send(&self, ctx: &mut Ctx<'_>, method: impl Into<Method>) {
        encode_method(ctx.out, self.id, &method.into());
    }

    pub(crate) fn handle_frame(&mut self, ctx: &mut Ctx<'_>, frame: Frame) -> Result<()> {
        let content = !matches!(frame, Frame::Method { .. });
        let res = self.handle_frame_inner(ctx, frame);
        match res {
            // A soft error raised while completing a message belongs to the
            // basic.publish that started it, as in RabbitMQ.
            Err(e @ Error::Channel(_)) if content => {
                Err(e.in_method(CLASS_BASIC, BasicPublish::METHOD_ID))
            }
            other => other,
        }
    }

    /// Works on the content state in place: frames and the state are
    /// large, and moving both per frame showed up in profiles. Any error
    /// leaves the state idle.
    fn handle_frame_inner(&mut self, ctx: &mut Ctx<'_>, frame: Frame) -> Result<()> {
        match frame {
            Frame::Heartbeat { .. } => Ok(()),
            Frame::Method { method, .. } => match self.content {
                Content::Idle => self.handle_method(ctx, method),
                Content::Header(_) => {
                    self.content = Content::Idle;
                    Err(unexpected(
                        "expected content header for class 60, got non content header frame instead",
                    ))
                }
                Content::Body { .. } => {
                    self.content = Content::Idle;
                    Err(unexpected(
                        "expected content body, got non content body frame instead",
                    ))
                }
            },
            Frame::Header { header, .. } => {
                match self.content {
                    Content::Header(_) => {}
                    Content::Idle => {
                        return Err(unexpected(format!(
                            "unexpected content header for class {}",
                            header.class_id
                        )));
                    }
                    Content::Body { .. } => {
                        self.content = Content::Idle;
                        return Err(unexpected(
                            "expected content body, got non content body frame instead",
                        ));
                    }
                }
                let Content::Header(publish) = std::mem::take(&mut self.content) else {
                    return Ok(());
                };
                if header.class_id != CLASS_BASIC {
                    return Err(unexpected(format!(
                        "expected content header for class 60, got one for class {}",
                        header.class_id
                    )));
                }
                if header.body_size > self.max_message_size {
                    return Err(Error::precondition(format!(
                        "message size {} is larger than configured max size {}",
                        header.body_size, self.max_message_size
                    )));
                }
                if header.body_size == 0 {
                    return self.publish(ctx, publish, header.properties, Bytes::new());
                }
                self.content = Content::Body {
                    publish,
                    header,
                    first: None,
                    rest: BytesMut::new(),
                    received: 0,
                };
                Ok(())
            }
            Frame::Body { payload, .. } => {
                let Content::Body {
                    header,
                    first,
                    rest,
                    received,
                    ..
                } = &mut self.content
                else {
                    let text = match self.content {
                        Content::Header(_) => {
                            "expected content header for class 60, got non content header frame instead"
                        }
                        _ => "unexpected content body frame",
                    };
                    self.content = Content::Idle;
                    return Err(unexpected(text));
                };
                *received = received.saturating_add(payload.len() as u64);
                if *received > header.body_size {
                    let size = header.body_size;
                    self.content = Content::Idle;
                    return Err(Error::connection(
                        ReplyCode::FrameError,
                        format!("content body exceeds declared size {size}"),
                    ));
                }
                // One frame: keep the zero-copy slice. Several: one copy.
                match first {
                    None if rest.is_empty() => *first = Some(payload),
                    _ => {
                        if let Some(f) = first.take() {
                            rest.extend_from_slice(&f);
                        }
                        rest.extend_from_slice(&payload);
                    }
                }
                if *received < header.body_size {
                    return Ok(());
                }
                let Content::Body {
                    publish,
                    header,
                    first,
                    rest,
                    ..
                } = std::mem::take(&mut self.content)
                else {
                    return Ok(());
                };
                let body = first.unwrap_or_else(|| rest.freeze());
                self.publish(ctx, publish, header.properties, body)
            }
        }
    }

    fn queue_name(&self, name: ShortStr) -> Result<ShortStr> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.last_queue
            .clone()
            .ok_or_else(|| Error::not_found("no previously declared queue"))
    }

    /// Dispatches a method by its class; each class's handler turns the
    /// method into a typed request (`ExchangeDeclare`, `QueueDeclare`,
    /// `Binding`, ...) for the vhost, whose rules live there.
    fn handle_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method.class_id() {
            CLASS_EXCHANGE => self.exchange_method(ctx, method),
            CLASS_QUEUE => self.queue_method(ctx, method),
            CLASS_BASIC => self.basic_method(ctx, method),
            CLASS_CONFIRM | CLASS_TX => self.confirm_tx_method(ctx, method),
            _ => self.channel_method(ctx, method),
        }
    }

    /// channel.open/close are handled by the connection; anything else
    /// that reaches a channel is a server-to-client method or a connection
    /// method.
    fn not_for_a_channel(_method: Method) -> Result<()> {
        Err(Error::connection(
            ReplyCode::CommandInvalid,
            "unimplemented method",
        ))
    }

    /// `channel.flow` and `access.request`.
    fn channel_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method {
            Method::ChannelFlow(m) => {
                if !m.active {
                    return Err(Error::not_implemented("active=false"));
                }
                self.send(ctx, warren_codec::ChannelFlowOk { active: true });
            }
            Method::ChannelFlowOk(_) => {}
            Method::AccessRequest(_) => self.send(ctx, warren_codec::AccessRequestOk { ticket: 1 }),
            other => return Self::not_for_a_channel(other),
        }
        Ok(())
    }

    /// The `exchange` class.
    fn exchange_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method {
            Method::ExchangeDeclare(m) => {
                if !m.passive {
                    ctx.grant().check(
                        Access::Configure,
                        Resource::Exchange,
                        m.exchange.as_bytes(),
                    )?;
                }
                ctx.vhost.declare_exchange(&ExchangeDeclare {
                    name: m.exchange,
                    kind: m.kind,
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments,
                })?;
                if !m.nowait {
                    self.send(ctx, ExchangeDeclareOk);
                }
            }
            Method::ExchangeDelete(m) => {
                ctx.grant()
                    .check(Access::Configure, Resource::Exchange, m.exchange.as_bytes())?;
                ctx.vhost.delete_exchange(&m.exchange, m.if_unused)?;
                if !m.nowait {
                    self.send(ctx, ExchangeDeleteOk);
                }
            }
            Method::ExchangeBind(m) => {
                ctx.grant()
                    .check(Access::Write, Resource::Exchange, m.destination.as_bytes())?;
                ctx.grant()
                    .check(Access::Read, Resource::Exchange, m.source.as_bytes())?;
                check_topic_bind(ctx, &m.source, &m.routing_key)?;
                let b = Binding {
                    source: m.source,
                    destination: BindingTarget::Exchange(m.destination),
                    routing_key: m.routing_key,
                    arguments: m.arguments,
                };
                ctx.vhost.bind(ctx.conn, &b)?;
                if !m.nowait {
                    self.send(ctx, ExchangeBindOk);
                }
            }
            Method::ExchangeUnbind(m) => {
                ctx.grant()
                    .check(Access::Write, Resource::Exchange, m.destination.as_bytes())?;
                ctx.grant()
                    .check(Access::Read, Resource::Exchange, m.source.as_bytes())?;
                check_topic_bind(ctx, &m.source, &m.routing_key)?;
                let b = Binding {
                    source: m.source,
                    destination: BindingTarget::Exchange(m.destination),
                    routing_key: m.routing_key,
                    arguments: m.arguments,
                };
                ctx.vhost.unbind(ctx.conn, &b)?;
                if !m.nowait {
                    self.send(ctx, ExchangeUnbindOk);
                }
            }
            other => return Self::not_for_a_channel(other),
        }
        Ok(())
    }

    /// The `queue` class.
    fn queue_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method {
            Method::QueueDeclare(m) if m.passive && m.queue.as_bytes() == REPLY_TO => {
                if !m.nowait {
                    self.send(
                        ctx,
                        QueueDeclareOk {
                            queue: m.queue,
                            message_count: 0,
                            consumer_count: 0,
                        },
                    );
                }
            }
            Method::QueueDeclare(m) => {
                // Server-named queues get their name here so that the
                // configure permission is checked against it, as RabbitMQ does.
                let server_named = m.queue.is_empty() && !m.passive;
                let name = if server_named {
                    ctx.broker.generate_name("amq.gen-")
                } else {
                    m.queue
                };
                if !m.passive {
                    ctx.grant()
                        .check(Access::Configure, Resource::Queue, name.as_bytes())?;
                }
                let d = QueueDeclare {
                    name,
                    server_named,
                    passive: m.passive,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                };
                let (q, messages, consumers) = ctx.vhost.declare_queue(ctx.conn, &d, ctx.now)?;
                if q.spec.exclusive_owner == Some(ctx.conn)
                    && !ctx.exclusive_queues.iter().any(|e| Arc::ptr_eq(e, &q))
                {
                    ctx.exclusive_queues.push(Arc::clone(&q));
                }
                self.last_queue = Some(q.name().clone());
                if !m.nowait {
                    self.send(
                        ctx,
                        QueueDeclareOk {
                            queue: q.name().clone(),
                            message_count: messages,
                            consumer_count: consumers,
                        },
                    );
                }
            }
            Method::QueueBind(m) => {
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Write, Resource::Queue, name.as_bytes())?;
                ctx.grant()
                    .check(Access::Read, Resource::Exchange, m.exchange.as_bytes())?;
                check_topic_bind(ctx, &m.exchange, &m.routing_key)?;
                let b = Binding {
                    source: m.exchange,
                    destination: BindingTarget::Queue(name),
                    routing_key: m.routing_key,
                    arguments: m.arguments,
                };
                ctx.vhost.bind(ctx.conn, &b)?;
                if !m.nowait {
                    self.send(ctx, QueueBindOk);
                }
            }
            Method::QueueUnbind(m) => {
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Write, Resource::Queue, name.as_bytes())?;
                ctx.grant()
                    .check(Access::Read, Resource::Exchange, m.exchange.as_bytes())?;
                check_topic_bind(ctx, &m.exchange, &m.routing_key)?;
                let b = Binding {
                    source: m.exchange,
                    destination: BindingTarget::Queue(name),
                    routing_key: m.routing_key,
                    arguments: m.arguments,
                };
                ctx.vhost.unbind(ctx.conn, &b)?;
                self.send(ctx, QueueUnbindOk);
            }
            Method::QueuePurge(m) => {
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Read, Resource::Queue, name.as_bytes())?;
                let q = ctx.vhost.queue_for(ctx.conn, &name)?;
                let n = q.purge();
                if !m.nowait {
                    self.send(ctx, QueuePurgeOk { message_count: n });
                }
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Configure, Resource::Queue, name.as_bytes())?;
                let n = ctx
                    .vhost
                    .delete_queue(ctx.conn, &name, m.if_unused, m.if_empty)?;
                ctx.exclusive_queues.retain(|q| !q.is_deleted());
                if !m.nowait {
                    self.send(ctx, QueueDeleteOk { message_count: n });
                }
            }
            other => return Self::not_for_a_channel(other),
        }
        Ok(())
    }

    /// The `basic` class (content assembly is in `handle_frame`).
    fn basic_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method {
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(Error::not_implemented(format!(
                        "prefetch_size!=0 ({})",
                        m.prefetch_size
                    )));
                }
                if m.global {
                    self.credit.set_limit(u32::from(m.prefetch_count));
                    self.redispatch(ctx.vhost);
                } else {
                    self.prefetch = u32::from(m.prefetch_count);
                }
                self.send(ctx, BasicQosOk);
            }
            Method::BasicConsume(m) if m.queue.as_bytes() == REPLY_TO => {
                self.check_consumer_limit(ctx, &m.consumer_tag)?;
                if !m.no_ack {
                    return Err(Error::precondition("reply consumer cannot acknowledge"));
                }
                if self.reply_consumer.is_some() {
                    return Err(Error::precondition("reply consumer already set"));
                }
                let tag = if m.consumer_tag.is_empty() {
                    ctx.broker.generate_name("amq.ctag-")
                } else {
                    m.consumer_tag
                };
                let address = ctx.broker.generate_name("amq.rabbitmq.reply-to.");
                ctx.vhost.register_reply(
                    address.clone(),
                    ReplyTarget {
                        mailbox: Arc::clone(ctx.mailbox),
                        channel: self.id,
                        consumer_tag: tag.clone(),
                    },
                );
                self.reply_consumer = Some((tag.clone(), address));
                if !m.nowait {
                    self.send(ctx, BasicConsumeOk { consumer_tag: tag });
                }
            }
            Method::BasicConsume(m) => {
                self.check_consumer_limit(ctx, &m.consumer_tag)?;
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Read, Resource::Queue, name.as_bytes())?;
                let q = ctx.vhost.queue_for(ctx.conn, &name)?;
                if q.spec.kind == QueueType::Quorum && self.credit.is_limited() {
                    return Err(Error::not_implemented(format!(
                        "queue '{name}' in vhost '{}' does not support global qos",
                        ctx.vhost.name
                    )));
                }
                let tag = if m.consumer_tag.is_empty() {
                    ctx.broker.generate_name("amq.ctag-")
                } else if self.consumers.contains_key(&m.consumer_tag) {
                    return Err(Error::connection(
                        ReplyCode::NotAllowed,
                        format!("attempt to reuse consumer tag '{}'", m.consumer_tag),
                    ));
                } else {
                    m.consumer_tag
                };
                let priority = match m.arguments.get("x-priority") {
                    None => 0,
                    Some(v) => v.as_i64().ok_or_else(|| {
                        Error::precondition(format!(
                            "invalid arg 'x-priority' for consumer '{tag}': {{unacceptable_type,{}}}",
                            v.type_name()
                        ))
                    })?,
                };
                let consumer = Consumer::new(
                    tag.clone(),
                    ctx.conn,
                    self.id,
                    Arc::clone(ctx.mailbox),
                    !m.no_ack,
                    self.prefetch,
                    Arc::clone(&self.credit),
                    m.exclusive,
                    priority,
                );
                // Register first: consume-ok must not be sent for a refused
                // consumer. Deliveries wait in the mailbox until after it.
                match q.add_consumer(consumer) {
                    Ok(dead) => ctx.vhost.dead_letter(&q, dead),
                    Err(ConsumeRefused::ExclusiveInUse) => {
                        return Err(Error::access_refused(format!(
                            "queue '{name}' in vhost '{}' in exclusive use",
                            ctx.vhost.name
                        )));
                    }
                    Err(ConsumeRefused::Deleted) => {
                        return Err(Error::not_found(format!(
                            "no queue '{name}' in vhost '{}'",
                            ctx.vhost.name
                        )));
                    }
                }
                self.consumers
                    .insert(tag.clone(), ChanConsumer { queue: q });
                if !m.nowait {
                    self.send(ctx, BasicConsumeOk { consumer_tag: tag });
                }
            }
            Method::BasicCancel(m) => {
                if self
                    .reply_consumer
                    .as_ref()
                    .is_some_and(|(t, _)| *t == m.consumer_tag)
                    && let Some((_, name)) = self.reply_consumer.take()
                {
                    ctx.vhost.unregister_reply(&name);
                }
                if let Some(c) = self.consumers.remove(&m.consumer_tag) {
                    let removed = c.queue.remove_consumer(ctx.conn, self.id, &m.consumer_tag);
                    ctx.vhost.dead_letter(&c.queue, removed.dead);
                    if removed.auto_delete_now {
                        ctx.vhost.remove_queue(&c.queue);
                    }
                }
                if !m.nowait {
                    self.send(
                        ctx,
                        BasicCancelOk {
                            consumer_tag: m.consumer_tag,
                        },
                    );
                }
            }
            Method::BasicPublish(m) => {
                if m.immediate {
                    return Err(Error::not_implemented("immediate=true"));
                }
                self.content = Content::Header(m);
            }
            Method::BasicGet(m) => {
                let name = self.queue_name(m.queue)?;
                ctx.grant()
                    .check(Access::Read, Resource::Queue, name.as_bytes())?;
                let q = ctx.vhost.queue_for(ctx.conn, &name)?;
                let (got, dead) = q.get(ctx.now, (!m.no_ack).then_some((ctx.conn, self.id)));
                ctx.vhost.dead_letter(&q, dead);
                match got {
                    None => self.send(
                        ctx,
                        BasicGetEmpty {
                            cluster_id: ShortStr::empty(),
                        },
                    ),
                    Some((message, remaining)) => {
                        let tag = self.next_tag;
                        self.next_tag += 1;
                        let msg = &message.message;
                        let get_ok = BasicGetOk {
                            delivery_tag: tag,
                            redelivered: message.redelivered,
                            exchange: msg.exchange.clone(),
                            routing_key: msg.routing_key.clone(),
                            message_count: remaining,
                        };
                        let method = Method::from(get_ok);
                        if q.spec.kind == QueueType::Quorum {
                            write_counted(ctx.out, self.id, &method, &message, ctx.frame_max);
                        } else {
                            write_content(ctx.out, self.id, &method, msg, ctx.frame_max);
                        }
                        self.entry.deliver.fetch_add(1, Ordering::Relaxed);
                        if !m.no_ack {
                            self.unacked.push_back(Unacked {
                                tag,
                                queue: q,
                                message,
                                consumer: None,
                                delivered_at: ctx.now,
                            });
                        }
                    }
                }
            }
            Method::BasicAck(m) => {
                if let Some(tx) = &mut self.tx {
                    tx.acks.push(TxAck::Ack {
                        tag: m.delivery_tag,
                        multiple: m.multiple,
                    });
                } else {
                    self.ack(ctx.conn, ctx.vhost, m.delivery_tag, m.multiple, None)?;
                }
            }
            Method::BasicReject(m) => {
                if let Some(tx) = &mut self.tx {
                    tx.acks.push(TxAck::Reject {
                        tag: m.delivery_tag,
                        multiple: false,
                        requeue: m.requeue,
                    });
                } else {
                    self.ack(ctx.conn, ctx.vhost, m.delivery_tag, false, Some(m.requeue))?;
                }
            }
            Method::BasicNack(m) => {
                if let Some(tx) = &mut self.tx {
                    tx.acks.push(TxAck::Reject {
                        tag: m.delivery_tag,
                        multiple: m.multiple,
                        requeue: m.requeue,
                    });
                } else {
                    self.ack(
                        ctx.conn,
                        ctx.vhost,
                        m.delivery_tag,
                        m.multiple,
                        Some(m.requeue),
                    )?;
                }
            }
            Method::BasicRecover(m) => {
                if !m.requeue {
                    return Err(Error::not_implemented("requeue=false"));
                }
                let all: Vec<Unacked> = self.unacked.drain(..).collect();
                self.settle(ctx.conn, ctx.vhost, all, Outcome::Requeue);
                self.send(ctx, BasicRecoverOk);
            }
            Method::BasicRecoverAsync(m) => {
                if !m.requeue {
                    return Err(Error::not_implemented("requeue=false"));
                }
                let all: Vec<Unacked> = self.unacked.drain(..).collect();
                self.settle(ctx.conn, ctx.vhost, all, Outcome::Requeue);
            }
            other => return Self::not_for_a_channel(other),
        }
        Ok(())
    }

    /// The `confirm` and `tx` classes.
    fn confirm_tx_method(&mut self, ctx: &mut Ctx<'_>, method: Method) -> Result<()> {
        match method {
            Method::ConfirmSelect(m) => {
                if self.tx.is_some() {
                    return Err(Error::precondition("cannot switch from tx to confirm mode"));
                }
                if self.confirm.is_none() {
                    self.confirm = Some(Confirms {
                        next: 1,
                        pending: VecDeque::new(),
                    });
                }
                if !m.nowait {
                    self.send(ctx, ConfirmSelectOk);
                }
            }
            Method::TxSelect(_) => {
                if self.confirm.is_some() {
                    return Err(Error::precondition("cannot switch from confirm to tx mode"));
                }
                if self.tx.is_none() {
                    self.tx = Some(Tx::default());
                }
                self.send(ctx, TxSelectOk);
            }
            Method::TxCommit(_) => {
                let Some(tx) = self.tx.replace(Tx::default()) else {
                    return Err(Error::precondition("channel is not transactional"));
                };
                let mut stored = false;
                for p in tx.publishes {
                    stored |= p.stored_id || p.message.store_id.is_some();
                    let _ =
                        Self::enqueue(self.id, &self.entry, ctx, p.message, &p.queues, p.mandatory);
                }
                for a in tx.acks {
                    match a {
                        TxAck::Ack { tag, multiple } => {
                            self.ack(ctx.conn, ctx.vhost, tag, multiple, None)?
                        }
                        TxAck::Reject {
                            tag,
                            multiple,
                            requeue,
                        } => self.ack(ctx.conn, ctx.vhost, tag, multiple, Some(requeue))?,
                    }
                }
                match ctx.vhost.durability() {
                    // commit-ok waits until the store has flushed the commit.
                    Some(d) if stored => d.submit(PersistOp::Barrier(Barrier {
                        waiter: Arc::clone(ctx.mailbox) as _,
                        channel: self.id,
                        what: Awaited::TxCommit,
                    })),
                    _ => self.send(ctx, TxCommitOk),
                }
            }
            Method::TxRollback(_) => {
                if self.tx.replace(Tx::default()).is_none() {
                    return Err(Error::precondition("channel is not transactional"));
                }
                self.send(ctx, TxRollbackOk);
            }
            other => return Self::not_for_a_channel(other),
        }
        Ok(())
    }

    /// A complete message arrived: check it, route it, then enqueue it now
    /// or at commit.
    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        publish: BasicPublish,
        properties: Properties,
        body: Bytes,
    ) -> Result<()> {
        // Only this channel's task writes its counts: a plain store (no
        // locked read-modify-write) on the publish path.
        self.published += 1;
        self.entry.publish.store(self.published, Ordering::Relaxed);
        // Read the epoch before any lookup: a change after it invalidates
        // what the lookups find. The exchange's checks run when it is looked
        // up; a connection's permissions are fixed when it opens and an
        // exchange's `internal` never changes, so they hold while cached.
        let epoch = ctx.vhost.epoch();
        let cache = match &mut self.route {
            Some(c) if c.epoch == epoch && *c.exchange.name() == publish.exchange => c,
            slot => {
                ctx.grant().check(
                    Access::Write,
                    Resource::Exchange,
                    publish.exchange.as_bytes(),
                )?;
                let exchange = ctx.vhost.exchange_or_404(&publish.exchange)?;
                if exchange.spec.internal {
                    return Err(Error::access_refused(format!(
                        "cannot publish to internal exchange '{}' in vhost '{}'",
                        publish.exchange, ctx.vhost.name
                    )));
                }
                slot.insert(Box::new(RouteCache {
                    epoch,
                    exchange,
                    key: None,
                    queues: Vec::new(),
                }))
            }
        };
        if let Some(exp) = &properties.expiration {
            check_expiration(exp)?;
        }
        if let Some(uid) = &properties.user_id
            && uid.as_bytes() != ctx.user.as_bytes()
        {
            return Err(Error::precondition(format!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                ctx.user
            )));
        }
        let mut properties = properties;
        if properties
            .reply_to
            .as_ref()
            .is_some_and(|r| r.as_bytes() == REPLY_TO)
        {
            let Some((_, address)) = &self.reply_consumer else {
                return Err(Error::precondition("fast reply consumer does not exist"));
            };
            properties.make_mut().reply_to = Some(address.clone());
        }
        if publish.exchange.is_empty() && publish.routing_key.starts_with(REPLY_TO_PREFIX) {
            return self.publish_reply(ctx, publish, properties, body);
        }
        if !ctx.perms.topic.is_empty()
            && cache.exchange.spec.kind == ExchangeKind::Topic
            && cache.key.as_ref() != Some(&publish.routing_key)
        {
            // Checked when the key is first routed; the cache is dropped
            // whenever permissions change.
            ctx.grant().check_topic(
                Access::Write,
                publish.exchange.as_bytes(),
                publish.routing_key.as_bytes(),
            )?;
        }
        if cache.exchange.spec.kind == ExchangeKind::DelayedMessage
            && let Some(delay) = crate::delayed::delay_of(properties.headers.as_ref())
        {
            let exchange = Arc::clone(&cache.exchange);
            return self.publish_delayed(ctx, &exchange, publish, properties, body, delay);
        }
        if has_sender_selected_keys(properties.headers.as_ref()) {
            // Sender-selected distribution: routed afresh by every key,
            // never through (or into) the route cache.
            let headers = properties.headers.as_ref();
            let mut keys = vec![publish.routing_key.clone()];
            if let Some(h) = headers {
                keys.extend(sender_selected_keys(h, &ROUTING_HEADERS)?);
            }
            let mut queues = Vec::new();
            ctx.vhost
                .route(&cache.exchange, &keys, &*properties, &mut queues);
            if let Some(h) = properties.make_mut().headers.as_mut() {
                h.remove("BCC");
            }
            return self.publish_routed(ctx, publish, properties, body, &queues);
        }
        if cache.key.as_ref() != Some(&publish.routing_key) {
            cache.queues.clear();
            let by_key = ctx.vhost.route(
                &cache.exchange,
                std::slice::from_ref(&publish.routing_key),
                &*properties,
                &mut cache.queues,
            );
            cache.key = by_key.then(|| publish.routing_key.clone());
        }
        // Taken out for the call and put back: the cache stays allocated.
        let queues = std::mem::take(&mut cache.queues);
        let res = self.publish_routed(ctx, publish, properties, body, &queues);
        if let Some(c) = &mut self.route {
            c.queues = queues;
        }
        res
    }

    /// Puts a routed message on `queues` (or into the transaction), and
    /// books its confirm.
    fn publish_routed(
        &mut self,
        ctx: &mut Ctx<'_>,
        publish: BasicPublish,
        properties: Properties,
        body: Bytes,
        queues: &[Arc<Queue>],
    ) -> Result<()> {
        let message = ctx.vhost.prepare(
            Message::new(publish.exchange, publish.routing_key, properties, body),
            queues,
        );
        // A deduplication exchange with a disk cache stored the message's
        // id while routing it: the confirm waits for the flush of that too.
        let stored_id = self
            .route
            .as_ref()
            .is_some_and(|r| r.exchange.stores_dedup_ids());
        if let Some(tx) = &mut self.tx {
            tx.publishes.push(TxPublish {
                message,
                queues: queues.to_vec(),
                mandatory: publish.mandatory,
                stored_id,
            });
            return Ok(());
        }
        let stored = stored_id || message.store_id.is_some();
        let accepted = Self::enqueue(
            self.id,
            &self.entry,
            ctx,
            message,
            queues,
            publish.mandatory,
        );
        self.book_confirm(ctx, stored, accepted);
        Ok(())
    }

    /// Books the confirm of the publish just handled (in confirm mode): an
    /// ack or nack at once, or, for a stored message that was accepted,
    /// an ack once the store has flushed everything so far.
    fn book_confirm(&mut self, ctx: &Ctx<'_>, stored: bool, accepted: bool) {
        let Some(c) = &mut self.confirm else {
            return;
        };
        let seq = c.next;
        c.next += 1;
        if stored && accepted {
            c.pending.push_back((seq, None));
            if let Some(d) = ctx.vhost.durability() {
                d.submit(PersistOp::Barrier(Barrier {
                    waiter: Arc::clone(ctx.mailbox) as _,
                    channel: self.id,
                    what: Awaited::Confirm(seq),
                }));
            }
        } else {
            c.pending.push_back((seq, Some(accepted)));
        }
    }

    /// A publish to an `x-delayed-message` exchange asking for a delay:
    /// the exchange holds it, and it is routed when its time comes. As
    /// with the plugin, which routes it to no queue now, a mandatory
    /// publish is returned (`NO_ROUTE`) at once; the confirm is sent once
    /// the message is held, after the store's flush if it is stored.
    #[allow(clippy::too_many_arguments, reason = "a publish and its parts")]
    fn publish_delayed(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: &Exchange,
        publish: BasicPublish,
        properties: Properties,
        body: Bytes,
        delay: u32,
    ) -> Result<()> {
        let now_ms = ctx.broker.wall_ms(ctx.now);
        let (deadline, stored) = ctx.vhost.delay(
            exchange,
            (publish.routing_key.clone(), properties.clone(), &body),
            delay,
            now_ms,
        );
        ctx.broker.delayed_added(deadline);
        if publish.mandatory {
            let message = Arc::new(Message::new(
                publish.exchange,
                publish.routing_key,
                properties,
                body,
            ));
            Self::enqueue(self.id, &self.entry, ctx, message, &[], true);
        }
        // Held counts as accepted: the plugin confirms once it has it.
        self.book_confirm(ctx, stored, true);
        Ok(())
    }

    /// A reply to a direct reply-to address goes straight to the waiting
    /// channel, bypassing queues; to an address no longer listening it is
    /// unroutable.
    fn publish_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        publish: BasicPublish,
        properties: Properties,
        body: Bytes,
    ) -> Result<()> {
        let target = ctx.vhost.reply_target(&publish.routing_key);
        let message = ctx.vhost.prepare(
            Message::new(publish.exchange, publish.routing_key, properties, body),
            &[],
        );
        match target {
            Some(t) => t.mailbox.push(Event::DirectReply {
                channel: t.channel,
                consumer_tag: t.consumer_tag,
                message,
            }),
            None => {
                let _ = Self::enqueue(self.id, &self.entry, ctx, message, &[], publish.mandatory);
            }
        }
        if let Some(c) = &mut self.confirm {
            c.pending.push_back((c.next, Some(true)));
            c.next += 1;
        }
        Ok(())
    }

    /// Writes a direct reply-to delivery (no acknowledgement).
    pub(crate) fn deliver_reply(
        &mut self,
        out: &mut BytesMut,
        frame_max: u32,
        consumer_tag: ShortStr,
        message: Arc<Message>,
    ) {
        if self.closing
            || self
                .reply_consumer
                .as_ref()
                .is_none_or(|(t, _)| *t != consumer_tag)
        {
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let deliver = BasicDeliver {
            consumer_tag,
            delivery_tag: tag,
            redelivered: false,
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        };
        write_content(out, self.id, &Method::from(deliver), &message, frame_max);
    }

    /// Puts a routed message on its queues, or returns it if mandatory and
    /// unroutable. Returns whether every queue accepted it (a
    /// `reject-publish` limit may not).
    fn enqueue(
        channel: u16,
        entry: &ChannelEntry,
        ctx: &mut Ctx<'_>,
        message: Arc<Message>,
        queues: &[Arc<Queue>],
        mandatory: bool,
    ) -> bool {
        if queues.is_empty() {
            if mandatory {
                entry.returned.fetch_add(1, Ordering::Relaxed);
                let ret = BasicReturn {
                    reply_code: ReplyCode::NoRoute.code(),
                    reply_text: ShortStr::from_static("NO_ROUTE"),
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                };
                write_content(
                    ctx.out,
                    channel,
                    &Method::from(ret),
                    &message,
                    ctx.frame_max,
                );
            }
            return true;
        }
        ctx.vhost
            .enqueue(message, queues, ctx.now, Some(ctx.mailbox))
    }

    /// Writes deliveries for one of this channel's consumers, from the
    /// queue `from`; what can no longer be written (a cancelled consumer,
    /// a closing channel) goes back to the queue unread.
    #[allow(
        clippy::too_many_arguments,
        reason = "a delivery names its consumer, its queue and its time"
    )]
    pub(crate) fn deliver(
        &mut self,
        out: &mut BytesMut,
        frame_max: u32,
        (conn, vhost): (ConnId, &VHost),
        (consumer_tag, ack): (&ShortStr, bool),
        from: &QueueRef,
        messages: Vec<QueuedMessage>,
        now: Instant,
    ) {
        let queue = match self.consumers.get(consumer_tag) {
            Some(c) if !self.closing && c.queue.me.id == from.id => Arc::clone(&c.queue),
            _ => {
                // Dispatched just before a cancel or close.
                if ack {
                    let n = u32::try_from(messages.len()).unwrap_or(u32::MAX);
                    self.credit.release(n);
                    give_back(vhost, (conn, self.id), consumer_tag, from, messages);
                }
                return;
            }
        };
        self.entry
            .deliver
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // Room for the whole batch at once: growing into it by doubling
        // copies everything written so far each time (the buffer is split
        // off whole after every write, so it starts from nothing; a
        // reserve also takes back the last one once it has been sent).
        let room: usize = messages
            .iter()
            .map(|m| m.message.body.len() + DELIVERY_OVERHEAD)
            .sum();
        out.reserve(room.min(MAX_RESERVE));
        let quorum = queue.spec.kind == QueueType::Quorum;
        for message in messages {
            let tag = self.next_tag;
            self.next_tag += 1;
            let msg = &message.message;
            let deliver = BasicDeliver {
                consumer_tag: consumer_tag.clone(),
                delivery_tag: tag,
                redelivered: message.redelivered,
                exchange: msg.exchange.clone(),
                routing_key: msg.routing_key.clone(),
            };
            let method = Method::from(deliver);
            if quorum {
                write_counted(out, self.id, &method, &message, frame_max);
            } else {
                write_content(out, self.id, &method, msg, frame_max);
            }
            if ack {
                self.unacked.push_back(Unacked {
                    tag,
                    queue: Arc::clone(&queue),
                    message,
                    consumer: Some(consumer_tag.clone()),
                    delivered_at: now,
                });
            } else {
                // Written out: give the queue its no-ack window back, in one
                // settle per queue and consumer per batch of events.
                match self.written.last_mut() {
                    Some((q, t, n)) if Arc::ptr_eq(q, &queue) && t == consumer_tag => *n += 1,
                    _ => self
                        .written
                        .push((Arc::clone(&queue), consumer_tag.clone(), 1)),
                }
            }
        }
    }

    /// Returns the no-ack window of what [`Channel::deliver`] wrote.
    pub(crate) fn flush_written(&mut self, conn: ConnId, vhost: &VHost) {
        for (queue, tag, n) in self.written.drain(..) {
            let dead = queue.settle(conn, self.id, Some(&tag), n, []);
            vhost.dead_letter(&queue, dead);
        }
    }

    /// ack (`requeue` None) or reject/nack (`Some(requeue)`).
    fn ack(
        &mut self,
        conn: ConnId,
        vhost: &VHost,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<()> {
        let taken: Vec<Unacked> = if multiple && tag == 0 {
            self.unacked.drain(..).collect()
        } else {
            let Ok(pos) = self.unacked.binary_search_by_key(&tag, |u| u.tag) else {
                return Err(Error::precondition(format!("unknown delivery tag {tag}")));
            };
            if multiple {
                self.unacked.drain(..=pos).collect()
            } else {
                self.unacked.remove(pos).into_iter().collect()
            }
        };
        let outcome = match requeue {
            None => Outcome::Ack,
            Some(true) => Outcome::Requeue,
            Some(false) => Outcome::Reject,
        };
        self.settle(conn, vhost, taken, outcome);
        Ok(())
    }

    /// Settles deliveries with their queues, grouped by queue and consumer.
    fn settle(&mut self, conn: ConnId, vhost: &VHost, mut taken: Vec<Unacked>, outcome: Outcome) {
        if taken.is_empty() {
            return;
        }
        let consumer_deliveries = taken.iter().filter(|u| u.consumer.is_some()).count();
        self.credit
            .release(u32::try_from(consumer_deliveries).unwrap_or(u32::MAX));
        // Usually all from one queue and consumer: settle runs of equal keys.
        while !taken.is_empty() {
            let first = &taken[0];
            let (queue, consumer) = (Arc::clone(&first.queue), first.consumer.clone());
            let mut group = Vec::new();
            let mut i = 0;
            while i < taken.len() {
                if Arc::ptr_eq(&taken[i].queue, &queue) && taken[i].consumer == consumer {
                    group.push(taken.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            let settled = if consumer.is_some() {
                u32::try_from(group.len()).unwrap_or(u32::MAX)
            } else {
                0
            };
            let mut msgs: Vec<QueuedMessage> = group.into_iter().map(|u| u.message).collect();
            msgs.sort_by_key(|m| m.seq);
            let dead = match outcome {
                Outcome::Ack => {
                    self.entry
                        .ack
                        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                    queue.ack(conn, self.id, consumer.as_ref(), msgs)
                }
                Outcome::Requeue => {
                    for m in &mut msgs {
                        m.redelivered = true;
                        // Back from a client: one more delivery counted
                        // (quorum queues hold it to `x-delivery-limit`).
                        m.delivery_count = m.delivery_count.saturating_add(1);
                    }
                    queue.settle(conn, self.id, consumer.as_ref(), settled, msgs)
                }
                Outcome::Reject => {
                    queue.settle_with_dead(conn, self.id, consumer.as_ref(), settled, [], msgs)
                }
            };
            vhost.dead_letter(&queue, dead);
        }
        if self.credit.is_limited() {
            self.redispatch(vhost);
        }
    }

    /// With a channel-wide window, freed credit may unblock any queue this
    /// channel consumes from.
    fn redispatch(&self, vhost: &VHost) {
        let mut seen: Vec<&Arc<Queue>> = Vec::new();
        for c in self.consumers.values() {
            if !seen.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                seen.push(&c.queue);
                vhost.dead_letter(&c.queue, c.queue.dispatch());
            }
        }
    }

    /// The store has flushed (or failed to write) publish `seq`.
    pub(crate) fn confirmed(&mut self, seq: u64, ok: bool) {
        if let Some(c) = &mut self.confirm
            && let Ok(i) = c.pending.binary_search_by_key(&seq, |p| p.0)
        {
            c.pending[i].1 = Some(ok);
        }
    }

    /// Writes the confirms settled since the last call, coalescing runs of
    /// acks into one `multiple` ack. Only the settled prefix goes out, so a
    /// `multiple` ack never covers a publish still being written.
    pub(crate) fn flush_confirms(&mut self, out: &mut BytesMut, channel: u16) {
        let Some(c) = &mut self.confirm else { return };
        while let Some(&(seq, Some(ok))) = c.pending.front() {
            c.pending.pop_front();
            let mut last = seq;
            let mut multiple = false;
            if ok {
                let mut n = 1;
                while let Some(&(next, Some(true))) = c.pending.front() {
                    c.pending.pop_front();
                    last = next;
                    multiple = true;
                    n += 1;
                }
                self.entry.confirmed.fetch_add(n, Ordering::Relaxed);
            }
            let m = if ok {
                Method::from(BasicAck {
                    delivery_tag: last,
                    multiple,
                })
            } else {
                Method::from(BasicNack {
                    delivery_tag: last,
                    multiple: false,
                    requeue: false,
                })
            };
            encode_method(out, channel, &m);
        }
    }
}

fn unexpected(text: impl std::fmt::Display) -> Error {
    Error::connection(ReplyCode::UnexpectedFrame, text)
}

/// `expiration` must be a non-negative integer of milliseconds.
fn check_expiration(exp: &ShortStr) -> Result<()> {
    let text = exp.to_lossy();
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(Error::precondition(format!(
            "invalid expiration '{text}': {{value_negative,{n}}}"
        ))),
        Ok(_) => Ok(()),
        Err(_) => Err(Error::precondition(format!(
            "invalid expiration '{text}': no_integer"
        ))),
    }
}

/// Writes a method with content: method, header and body frames.
fn write_content(out: &mut BytesMut, channel: u16, method: &Method, msg: &Message, frame_max: u32) {
    write_frames(out, channel, method, &msg.properties, &msg.body, frame_max);
}

/// A method with content: the method frame, the content header with
/// `properties`, and `body` in frames of at most `frame_max`.
/// Bytes of framing a delivery takes besides its body (method, header
/// with common properties, frame ends), for reserving output room.
const DELIVERY_OVERHEAD: usize = 160;
/// The most output room reserved for one batch of deliveries.
const MAX_RESERVE: usize = 4 << 20;

fn write_frames(
    out: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &Properties,
    body: &[u8],
    frame_max: u32,
) {
    encode_method(out, channel, method);
    encode_content_header(out, channel, CLASS_BASIC, body.len() as u64, properties);
    let chunk = (frame_max as usize)
        .saturating_sub(warren_codec::FRAME_OVERHEAD)
        .max(1);
    for piece in body.chunks(chunk) {
        encode_body(out, channel, piece);
    }
}

/// [`write_content`] for a quorum queue's delivery: the message's headers
/// with `x-delivery-count` (a signed 32-bit `long`, as RabbitMQ 3.10 sets
/// it, 0 on the first delivery). The shared message is not touched; its
/// properties are copied for this one frame.
fn write_counted(
    out: &mut BytesMut,
    channel: u16,
    method: &Method,
    m: &QueuedMessage,
    frame_max: u32,
) {
    let msg = &m.message;
    let mut properties = msg.properties.clone();
    let headers = properties
        .make_mut()
        .headers
        .get_or_insert_with(warren_codec::FieldTable::new);
    headers.remove("x-delivery-count");
    headers.insert(
        "x-delivery-count",
        warren_codec::FieldValue::I32(i32::try_from(m.delivery_count).unwrap_or(i32::MAX)),
    );
    write_frames(out, channel, method, &properties, &msg.body, frame_max);
}

/// Deliveries that will not be written (their consumer, channel or
/// connection is gone) go back, unread, to the queue they came from, if it
/// still exists.
pub(crate) fn give_back(
    vhost: &VHost,
    (conn, channel): (ConnId, u16),
    consumer_tag: &ShortStr,
    from: &QueueRef,
    messages: Vec<QueuedMessage>,
) {
    let Some(queue) = vhost
        .queue(from.name.as_bytes())
        .filter(|q| q.me.id == from.id)
    else {
        // Deleted meanwhile: it dropped what it held.
        return;
    };
    let n = u32::try_from(messages.len()).unwrap_or(u32::MAX);
    let dead = queue.settle(conn, channel, Some(consumer_tag), n, messages);
    vhost.dead_letter(&queue, dead);
}

/// Topic permissions on binding: a topic exchange's binding key must match
/// the user's `read` topic pattern for it, as RabbitMQ checks.
fn check_topic_bind(ctx: &Ctx<'_>, source: &ShortStr, key: &ShortStr) -> Result<()> {
    if ctx.perms.topic.is_empty() {
        return Ok(());
    }
    let topic = ctx
        .vhost
        .exchange(source.as_bytes())
        .is_some_and(|e| e.spec.kind == ExchangeKind::Topic);
    if topic {
        ctx.grant()
            .check_topic(Access::Read, source.as_bytes(), key.as_bytes())?;
    }
    Ok(())
}
