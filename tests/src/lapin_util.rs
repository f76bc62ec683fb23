//! Helpers for tests that drive the broker with the lapin client: bounded
//! connects, bounded waits for deliveries, and reading the reply code out of
//! a lapin error.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use crate::{READ_TIMEOUT, TestBroker};

/// Awaits `fut`, failing the test if it takes longer than [`READ_TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(READ_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {READ_TIMEOUT:?}"),
    }
}

/// Connects to the broker's default vhost as `guest`.
pub async fn connect(broker: &TestBroker) -> Connection {
    connect_url(&broker.url()).await
}

/// Connects to `url` (may carry `?heartbeat=N` and the like).
pub async fn connect_url(url: &str) -> Connection {
    within(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Opens a channel.
pub async fn channel(conn: &Connection) -> Channel {
    within("create_channel", conn.create_channel())
        .await
        .unwrap_or_else(|e| panic!("create_channel: {e}"))
}

/// Declares a transient, non-exclusive queue with default options.
pub async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"))
}

/// Starts a consumer with a given tag and options.
pub async fn consume(ch: &Channel, queue: &str, tag: &str, opts: BasicConsumeOptions) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(queue.into(), tag.into(), opts, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

/// The next item of a consumer: `Some(Ok(delivery))`, `Some(Err(..))`, or
/// `None` once the consumer has been cancelled. `Err(())` on timeout.
pub async fn next_within(
    consumer: &mut Consumer,
    limit: Duration,
) -> Result<Option<lapin::Result<Delivery>>, ()> {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx));
    tokio::time::timeout(limit, next).await.map_err(|_| ())
}

/// The next delivery; panics on timeout, cancellation or error.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match next_within(consumer, READ_TIMEOUT).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) => panic!("consumer was cancelled while a delivery was expected"),
        Err(()) => panic!("no delivery within {READ_TIMEOUT:?}"),
    }
}

/// The AMQP reply code and text in a lapin error, if it carries one.
pub fn amqp_error(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `result` failed with reply code `code` and returns the text.
pub fn expect_amqp_error<T: std::fmt::Debug>(result: lapin::Result<T>, code: u16) -> String {
    match result {
        Ok(v) => panic!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => match amqp_error(&e) {
            Some((got, text)) => {
                assert_eq!(got, code, "reply code (text: {text})");
                text
            }
            None => panic!("expected AMQP error {code}, got {e}"),
        },
    }
}

/// A channel in confirm mode.
pub async fn confirming_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// Declares queue `name` (durable or not) with `arguments`.
pub async fn declare_queue_with(ch: &Channel, name: &str, durable: bool, arguments: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await
    .expect("queue.declare");
}

/// Binds `queue` to `exchange` with `key`.
pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    within(
        "queue.bind",
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Takes up to `max` messages out of `queue` with no-ack `basic.get`:
/// their bodies, as text.
pub async fn drain_bodies(ch: &Channel, queue: &str, max: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..max {
        let got = within(
            "basic.get",
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .expect("basic.get");
        match got {
            Some(m) => bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => break,
        }
    }
    bodies
}
