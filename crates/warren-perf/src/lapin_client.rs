//! The lapin style (--client lapin): producers and consumers through the
//! lapin client library, written the way an application would use it, so
//! the broker sees a real client's frames and write pattern.
//!
//! - A producer awaits `basic_publish` per message. In confirm mode it
//!   hands each `PublisherConfirm` to a collector task that awaits them in
//!   order and counts them; a semaphore of --confirm permits is the
//!   outstanding window (a permit per publish, given back per confirm).
//! - A consumer sets basic.qos, starts `basic_consume` on each of its
//!   queues and acks with `basic_ack`, per message or per --multi-ack N.
//!
//! The topology is declared as in the other styles, on warren-perf's own
//! setup connection; only exclusive queues are declared here, by their
//! consumer. Pacing, latency and ack decisions are the shared
//! [`producer::LibraryLoop`] and [`consumer::LibraryDeliveries`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::consumer::{self, Recorder};
use crate::options::Options;
use crate::producer;
use crate::shared::Counters;

/// How long a connection may take to open, and a close to be answered.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A lapin connection with one channel.
pub(crate) struct Session {
    conn: Connection,
    channel: Channel,
}

/// Turns a lapin error into the report's text.
fn failed(what: &str) -> impl Fn(lapin::Error) -> String + '_ {
    move |e| format!("lapin {what}: {e}")
}

impl Session {
    /// Connects (PLAIN, lapin's own tuning), opens a channel and, if
    /// `confirm`, enters confirm mode.
    pub(crate) async fn open(opts: &Options, confirm: bool) -> Result<Session, String> {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: opts.user.clone(),
                    password: opts.password.clone(),
                },
                host: opts.host.clone(),
                port: opts.port,
            },
            vhost: opts.vhost.clone(),
            query: AMQPQueryString::default(),
        };
        let props = ConnectionProperties::default().with_connection_name("warren-perf".into());
        let open = async {
            let conn = Connection::connect_uri(uri, props)
                .await
                .map_err(failed("connect"))?;
            let channel = conn
                .create_channel()
                .await
                .map_err(failed("channel.open"))?;
            if confirm {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(failed("confirm.select"))?;
            }
            Ok(Session { conn, channel })
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, open)
            .await
            .map_err(|_| "lapin: connection handshake timed out".to_string())?
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
                let declare = QueueDeclareOptions {
                    durable: opts.durable,
                    exclusive: opts.exclusive,
                    ..Default::default()
                };
                self.channel
                    .queue_declare(name.as_str().into(), declare, FieldTable::default())
                    .await
                    .map_err(failed("queue.declare"))?;
                if opts.fanout > 0 {
                    self.channel
                        .queue_bind(
                            name.as_str().into(),
                            opts.fanout_exchange().as_str().into(),
                            "".into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .map_err(failed("queue.bind"))?;
                }
            }
        }
        if opts.prefetch > 0 {
            self.channel
                .basic_qos(opts.prefetch, BasicQosOptions::default())
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
            props = props.with_delivery_mode(2);
        }
        let confirms = (opts.confirm > 0).then(|| Confirms::start(opts.confirm, counters));
        let window = confirms.as_ref().map(|c| &*c.window);
        let mut lp = producer::LibraryLoop::new(opts, plan, start);
        let result = async {
            while let Some((exchange, key, body)) = lp.next(window).await? {
                let confirm = self
                    .channel
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        body,
                        props.clone(),
                    )
                    .await
                    .map_err(failed("basic.publish"))?;
                lp.sent(counters);
                match &confirms {
                    Some(c) => c.track(confirm)?,
                    // Resolves at once (NotRequested); awaiting it keeps
                    // lapin from keeping it for wait_for_confirms.
                    None => {
                        let _ = confirm.await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Some(c) = confirms {
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
        let mut consumers = Vec::with_capacity(plan.queues.len());
        for &q in &plan.queues {
            let consume = BasicConsumeOptions {
                no_ack: opts.autoack,
                ..Default::default()
            };
            let c = self
                .channel
                .basic_consume(
                    opts.queue_name(q).as_str().into(),
                    plan.tag(q).as_str().into(),
                    consume,
                    FieldTable::default(),
                )
                .await
                .map_err(failed("basic.consume"))?;
            consumers.push(c);
        }
        let mut deliveries = consumer::LibraryDeliveries::new(opts, counters, recorder);
        let mut first = 0;
        let result = loop {
            let next = next_delivery(&mut consumers, &mut first);
            let Some(next) = consumer::unless_stopped(stop, next).await else {
                break Ok(());
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => break Err(failed("consumer")(e)),
                None => break Err("lapin: the broker cancelled the consumer".to_string()),
            };
            if let Some((tag, multiple)) =
                deliveries.delivered(&delivery.data, delivery.delivery_tag)
                && let Err(e) = self
                    .channel
                    .basic_ack(tag, BasicAckOptions { multiple })
                    .await
            {
                break Err(failed("basic.ack")(e));
            }
        };
        self.close().await;
        result
    }

    /// Closes the connection, waiting briefly for close-ok.
    pub(crate) async fn close(self) {
        let close = self.conn.close(200, "goodbye".into());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
}

/// The next delivery from any of `consumers`, polled round-robin from
/// `first` so no queue starves; `None` once one is cancelled.
async fn next_delivery(
    consumers: &mut [Consumer],
    first: &mut usize,
) -> Option<lapin::Result<lapin::message::Delivery>> {
    std::future::poll_fn(|cx| {
        let n = consumers.len();
        for i in 0..n {
            let at = (*first + i) % n;
            if let Poll::Ready(item) = Pin::new(&mut consumers[at]).poll_next(cx) {
                *first = (at + 1) % n;
                return Poll::Ready(item);
            }
        }
        Poll::Pending
    })
    .await
}

/// A producer's confirms: the outstanding window and the task that awaits
/// lapin's `PublisherConfirm`s in publish order.
struct Confirms {
    /// One permit per publish that may still be outstanding.
    window: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<lapin::PublisherConfirm>,
    collector: tokio::task::JoinHandle<()>,
}

impl Confirms {
    fn start(window: u64, counters: &Arc<Counters>) -> Confirms {
        let permits = usize::try_from(window)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        let window = Arc::new(Semaphore::new(permits));
        let (tx, mut rx) = mpsc::unbounded_channel::<lapin::PublisherConfirm>();
        let (sem, counters) = (window.clone(), counters.clone());
        let collector = tokio::spawn(async move {
            while let Some(confirm) = rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(returned)) => {
                        counters.confirmed.fetch_add(1, Ordering::Relaxed);
                        if returned.is_some() {
                            counters.returned.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Confirmation::Nack(_)) => {
                        counters.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Confirmation::NotRequested) => {}
                    Err(e) => {
                        counters.error("lapin confirms", e);
                        return;
                    }
                }
                sem.add_permits(1);
            }
        });
        Confirms {
            window,
            tx,
            collector,
        }
    }

    /// Hands a publish's confirm to the collector.
    fn track(&self, confirm: lapin::PublisherConfirm) -> Result<(), String> {
        self.tx
            .send(confirm)
            .map_err(|_| "lapin: the confirm collector stopped".to_string())
    }

    /// Waits until every tracked confirm has come, or `until`.
    async fn finish(self, until: Instant) {
        drop(self.tx);
        let mut collector = self.collector;
        if tokio::time::timeout_at(until.into(), &mut collector)
            .await
            .is_err()
        {
            collector.abort();
        }
    }
}
