//! The amqprs style (--client amqprs): producers and consumers through the
//! amqprs client library, the library issue 19's first figures were
//! measured with, written the way its documentation has an application use
//! it.
//!
//! - amqprs writes each publish (method, header and body together) with
//!   one write from its connection's writer task, and each ack with one.
//! - A producer awaits `basic_publish` per message. In confirm mode its
//!   channel callback counts `basic.ack`/`basic.nack` (single or multiple)
//!   against the delivery tags it has published, and gives a permit of
//!   the --confirm window back per message settled.
//! - A consumer sets basic.qos, starts `basic_consume_rx` on each of its
//!   queues and acks with `basic_ack`, per message or per --multi-ack N.
//!
//! The topology is declared as in the other styles, on warren-perf's own
//! setup connection; only exclusive queues are declared here, by their
//! consumer. Pacing, latency and ack decisions are the shared
//! [`producer::LibraryLoop`] and [`consumer::LibraryDeliveries`].

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::consumer::{self, Recorder};
use crate::options::Options;
use crate::producer;
use crate::shared::Counters;

/// How long a connection may take to open, and a close to be answered.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// An amqprs connection with one channel.
pub(crate) struct Session {
    conn: Connection,
    channel: Channel,
    /// The confirms' bookkeeping, in confirm mode.
    confirms: Option<Arc<Confirms>>,
}

/// Turns an amqprs error into the report's text.
fn failed(what: &str) -> impl Fn(amqprs::error::Error) -> String + '_ {
    move |e| format!("amqprs {what}: {e}")
}

impl Session {
    /// Connects (PLAIN, amqprs's own tuning), opens a channel and, given
    /// `confirms`' counters, enters confirm mode with the window of
    /// `opts.confirm`.
    pub(crate) async fn open(
        opts: &Options,
        confirms: Option<&Arc<Counters>>,
    ) -> Result<Session, String> {
        let mut args =
            OpenConnectionArguments::new(&opts.host, opts.port, &opts.user, &opts.password);
        args.virtual_host(&opts.vhost)
            .connection_name("warren-perf");
        let open = async {
            let conn = Connection::open(&args).await.map_err(failed("connect"))?;
            let channel = conn
                .open_channel(None)
                .await
                .map_err(failed("channel.open"))?;
            let mut tracked = None;
            if let Some(counters) = confirms {
                let c = Arc::new(Confirms::new(opts.confirm, counters));
                channel
                    .register_callback(ConfirmCallback(Arc::clone(&c)))
                    .await
                    .map_err(failed("channel callback"))?;
                channel
                    .confirm_select(ConfirmSelectArguments::default())
                    .await
                    .map_err(failed("confirm.select"))?;
                tracked = Some(c);
            }
            Ok(Session {
                conn,
                channel,
                confirms: tracked,
            })
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, open)
            .await
            .map_err(|_| "amqprs: connection handshake timed out".to_string())?
    }

    /// A consumer's setup: declares (and binds) its exclusive queues, sets
    /// the prefetch.
    pub(crate) async fn consumer_setup(
        &self,
        opts: &Options,
        plan: &consumer::Plan,
    ) -> Result<(), String> {
        if plan.declare {
            for &q in &plan.queues {
                let name = opts.queue_name(q);
                let mut declare = QueueDeclareArguments::new(&name);
                declare.durable(opts.durable).exclusive(opts.exclusive);
                self.channel
                    .queue_declare(declare)
                    .await
                    .map_err(failed("queue.declare"))?;
                if opts.fanout > 0 {
                    self.channel
                        .queue_bind(QueueBindArguments::new(&name, &opts.fanout_exchange(), ""))
                        .await
                        .map_err(failed("queue.bind"))?;
                }
            }
        }
        if opts.prefetch > 0 {
            self.channel
                .basic_qos(BasicQosArguments::new(0, opts.prefetch, false))
                .await
                .map_err(failed("basic.qos"))?;
        }
        Ok(())
    }

    /// Publishes until the plan is done: `--duration` from `start`, or the
    /// backlog's limit with every publish confirmed. Then waits (bounded)
    /// for the confirms still outstanding and closes.
    pub(crate) async fn publish(
        self,
        opts: &Options,
        plan: &producer::Plan,
        counters: &Arc<Counters>,
        start: Instant,
    ) -> Result<(), String> {
        let mut props = BasicProperties::default();
        if opts.persistent {
            props.with_persistence(true);
        }
        let mut tag = 0u64;
        let window = self.confirms.as_ref().map(|c| &c.window);
        let mut lp = producer::LibraryLoop::new(opts, plan, start);
        let result = async {
            while let Some((exchange, key, body)) = lp.next(window).await? {
                if let Some(c) = &self.confirms {
                    tag += 1;
                    c.published(tag);
                }
                self.channel
                    .basic_publish(
                        props.clone(),
                        body.to_vec(),
                        BasicPublishArguments::new(exchange, key),
                    )
                    .await
                    .map_err(failed("basic.publish"))?;
                lp.sent(counters);
            }
            Ok(())
        }
        .await;
        if let Some(c) = &self.confirms {
            c.finish(producer::confirms_until(plan, start)).await;
        }
        if plan.graceful_close {
            self.close().await;
        }
        result
    }

    /// Consumes from the plan's queues until `stop` turns true, then closes.
    pub(crate) async fn consume(
        self,
        opts: &Options,
        plan: &consumer::Plan,
        counters: &Counters,
        recorder: &mut Recorder,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        // Every queue's deliveries into one stream, as they come.
        let (tx, mut rx) = mpsc::unbounded_channel::<ConsumerMessage>();
        let mut forwarders = Vec::with_capacity(plan.queues.len());
        for &q in &plan.queues {
            let mut consume = BasicConsumeArguments::new(&opts.queue_name(q), &plan.tag(q));
            consume.manual_ack(!opts.autoack);
            let (_tag, mut deliveries) = self
                .channel
                .basic_consume_rx(consume)
                .await
                .map_err(failed("basic.consume"))?;
            let tx = tx.clone();
            forwarders.push(tokio::spawn(async move {
                while let Some(m) = deliveries.recv().await {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let mut deliveries = consumer::LibraryDeliveries::new(opts, counters, recorder);
        let result = loop {
            let Some(next) = consumer::unless_stopped(stop, rx.recv()).await else {
                break Ok(());
            };
            let Some(message) = next else {
                break Err("amqprs: the broker cancelled the consumer".to_string());
            };
            let (Some(deliver), Some(content)) = (message.deliver, message.content) else {
                break Err("amqprs: a delivery without its method or body".to_string());
            };
            if let Some((tag, multiple)) = deliveries.delivered(&content, deliver.delivery_tag())
                && let Err(e) = self
                    .channel
                    .basic_ack(BasicAckArguments::new(tag, multiple))
                    .await
            {
                break Err(failed("basic.ack")(e));
            }
        };
        for f in forwarders {
            f.abort();
        }
        self.close().await;
        result
    }

    /// Closes the connection, waiting briefly for close-ok.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.conn.close()).await;
    }
}

/// A producer's confirms: the outstanding window and the delivery tags
/// published and not yet confirmed.
struct Confirms {
    /// One permit per publish that may still be outstanding.
    window: Semaphore,
    outstanding: Mutex<BTreeSet<u64>>,
    /// Woken when a confirm settles something.
    progress: Notify,
    counters: Arc<Counters>,
}

impl Confirms {
    fn new(window: u64, counters: &Arc<Counters>) -> Confirms {
        let permits = usize::try_from(window)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        Confirms {
            window: Semaphore::new(permits),
            outstanding: Mutex::default(),
            progress: Notify::new(),
            counters: Arc::clone(counters),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publish `tag` is about to be sent.
    fn published(&self, tag: u64) {
        self.lock().insert(tag);
    }

    /// The broker settled `tag` (and every tag below it if `multiple`):
    /// counts them as confirmed or nacked and frees their permits.
    fn settled(&self, tag: u64, multiple: bool, acked: bool) {
        let n = {
            let mut out = self.lock();
            if multiple {
                let rest = out.split_off(&(tag + 1));
                let n = out.len();
                *out = rest;
                n
            } else {
                usize::from(out.remove(&tag))
            }
        };
        let counter = if acked {
            &self.counters.confirmed
        } else {
            &self.counters.nacked
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.window.add_permits(n);
        self.progress.notify_waiters();
    }

    /// Waits until no publish is outstanding, or `until`.
    async fn finish(&self, until: Instant) {
        loop {
            let progress = self.progress.notified();
            if self.lock().is_empty() {
                return;
            }
            if tokio::time::timeout_at(until.into(), progress)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The channel callback that feeds [`Confirms`].
struct ConfirmCallback(Arc<Confirms>);

#[async_trait::async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(
        &mut self,
        _channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        self.0.counters.error("amqprs channel", close);
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.0.settled(ack.delivery_tag(), ack.mutiple(), true);
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.0.settled(nack.delivery_tag(), nack.multiple(), false);
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _basic_properties: BasicProperties,
        _content: Vec<u8>,
    ) {
        self.0.counters.returned.fetch_add(1, Ordering::Relaxed);
    }
}
