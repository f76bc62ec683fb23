//! Channel-level (soft) errors over the raw client: the reply code, the
//! exact RabbitMQ reply text clients match on, the failing class/method,
//! and that the connection survives (section 10 of
//! `shared/reference/rabbitmq-behaviour.md`, texts from RabbitMQ's
//! `rabbit_channel.erl`).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use warren_codec::{FieldTable, Method};
use warren_tests::{CloseInfo, RawClient, TestBroker, start_broker};

async fn open_client(broker: &TestBroker) -> RawClient {
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake().await;
    c.open_channel(1).await;
    c
}

/// Sends `method` on channel 1, expects a channel.close, checks it, then
/// reopens channel 1 to show the connection survived.
async fn soft_error(
    c: &mut RawClient,
    method: impl Into<Method>,
    code: u16,
    text: &str,
    class_method: (u16, u16),
) {
    c.send_method(1, method).await;
    let close: CloseInfo = c.expect_channel_close(1).await;
    assert_eq!(
        (
            close.code,
            close.text.as_str(),
            close.class_id,
            close.method_id
        ),
        (code, text, class_method.0, class_method.1),
    );
    c.open_channel(1).await;
}

async fn ok(c: &mut RawClient, method: impl Into<Method>) -> Method {
    c.send_method(1, method).await;
    let (ch, m) = c.read_method().await;
    assert_eq!(ch, 1, "{m:?}");
    m
}

async fn declare_queue(c: &mut RawClient, name: &str) {
    let m = ok(
        c,
        warren_codec::QueueDeclare {
            queue: name.into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(m, Method::QueueDeclareOk(_)), "{m:?}");
}

#[tokio::test]
async fn queue_delete_if_empty_on_non_empty_queue_is_406() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    declare_queue(&mut c, "full").await;
    c.publish(1, &"full".into(), b"x").await;
    soft_error(
        &mut c,
        warren_codec::QueueDelete {
            queue: "full".into(),
            if_empty: true,
            ..Default::default()
        },
        406,
        "PRECONDITION_FAILED - queue 'full' in vhost '/' not empty",
        (50, 40),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn queue_delete_if_unused_with_consumer_is_406() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.open_channel(2).await;
    declare_queue(&mut c, "used").await;
    c.send_method(
        2,
        warren_codec::BasicConsume {
            queue: "used".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (2, Method::BasicConsumeOk(_))
    ));
    soft_error(
        &mut c,
        warren_codec::QueueDelete {
            queue: "used".into(),
            if_unused: true,
            ..Default::default()
        },
        406,
        "PRECONDITION_FAILED - queue 'used' in vhost '/' in use",
        (50, 40),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn exchange_delete_if_unused_with_binding_is_406() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let m = ok(
        &mut c,
        warren_codec::ExchangeDeclare {
            exchange: "bound-x".into(),
            kind: "direct".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(m, Method::ExchangeDeclareOk(_)), "{m:?}");
    declare_queue(&mut c, "bq").await;
    let m = ok(
        &mut c,
        warren_codec::QueueBind {
            queue: "bq".into(),
            exchange: "bound-x".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(m, Method::QueueBindOk(_)), "{m:?}");
    soft_error(
        &mut c,
        warren_codec::ExchangeDelete {
            exchange: "bound-x".into(),
            if_unused: true,
            ..Default::default()
        },
        406,
        "PRECONDITION_FAILED - exchange 'bound-x' in vhost '/' in use",
        (40, 20),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn deleting_a_system_exchange_is_403() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    soft_error(
        &mut c,
        warren_codec::ExchangeDelete {
            exchange: "amq.direct".into(),
            ..Default::default()
        },
        403,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
        (40, 20),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn binding_to_the_default_exchange_is_403() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    declare_queue(&mut c, "dq").await;
    soft_error(
        &mut c,
        warren_codec::QueueBind {
            queue: "dq".into(),
            exchange: "".into(),
            routing_key: "dq".into(),
            ..Default::default()
        },
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
        (50, 20),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn bind_with_empty_queue_name_and_no_prior_declare_is_404() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    soft_error(
        &mut c,
        warren_codec::QueueBind {
            queue: "".into(),
            exchange: "amq.direct".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
        404,
        "NOT_FOUND - no previously declared queue",
        (50, 20),
    )
    .await;
    // After a declare on the channel the empty name means that queue.
    declare_queue(&mut c, "last").await;
    let m = ok(
        &mut c,
        warren_codec::QueueBind {
            queue: "".into(),
            exchange: "amq.direct".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(m, Method::QueueBindOk(_)), "{m:?}");
    c.close().await;
}

#[tokio::test]
async fn bind_to_missing_exchange_is_404() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    declare_queue(&mut c, "bq").await;
    soft_error(
        &mut c,
        warren_codec::QueueBind {
            queue: "bq".into(),
            exchange: "no-such-x".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
        404,
        "NOT_FOUND - no exchange 'no-such-x' in vhost '/'",
        (50, 20),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn exclusive_consumer_conflict_is_403() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.open_channel(2).await;
    declare_queue(&mut c, "xq").await;
    c.send_method(
        2,
        warren_codec::BasicConsume {
            queue: "xq".into(),
            consumer_tag: "first".into(),
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (2, Method::BasicConsumeOk(_))
    ));
    soft_error(
        &mut c,
        warren_codec::BasicConsume {
            queue: "xq".into(),
            consumer_tag: "second".into(),
            ..Default::default()
        },
        403,
        "ACCESS_REFUSED - queue 'xq' in vhost '/' in exclusive use",
        (60, 20),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn declaring_an_amq_prefixed_queue_is_403() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    soft_error(
        &mut c,
        warren_codec::QueueDeclare {
            queue: "amq.mine".into(),
            ..Default::default()
        },
        403,
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'",
        (50, 10),
    )
    .await;
    c.close().await;
}

#[tokio::test]
async fn unknown_exchange_type_is_a_503_connection_error() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(
        1,
        warren_codec::ExchangeDeclare {
            exchange: "bogus".into(),
            kind: "x-bogus".into(),
            ..Default::default()
        },
    )
    .await;
    let close = c.expect_close().await;
    assert_eq!(
        (
            close.code,
            close.text.as_str(),
            close.class_id,
            close.method_id
        ),
        (
            503,
            "COMMAND_INVALID - unknown exchange type 'x-bogus'",
            40,
            10
        )
    );
}

#[tokio::test]
async fn invalid_x_arg_value_is_406() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(
        1,
        warren_codec::QueueDeclare {
            queue: "bad-args".into(),
            arguments: FieldTable::new().with(
                "x-max-length",
                warren_codec::FieldValue::LongStr("ten".into()),
            ),
            ..Default::default()
        },
    )
    .await;
    let close = c.expect_channel_close(1).await;
    assert_eq!((close.code, close.class_id, close.method_id), (406, 50, 10));
    assert!(
        close
            .text
            .starts_with("PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'bad-args'"),
        "{close:?}"
    );
    c.open_channel(1).await;
    c.close().await;
}

#[tokio::test]
async fn recover_requeues_and_recover_without_requeue_is_540() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"again").await;
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: q.clone(),
            no_ack: false,
            ..Default::default()
        },
    )
    .await;
    match c.read_method().await {
        (1, Method::BasicGetOk(g)) => assert!(!g.redelivered),
        other => panic!("expected get-ok, got {other:?}"),
    }
    let _header = c.read_frame().await;
    let _body = c.read_frame().await;
    let m = ok(&mut c, warren_codec::BasicRecover { requeue: true }).await;
    assert!(matches!(m, Method::BasicRecoverOk(_)), "{m:?}");
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: q.clone(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    match c.read_method().await {
        (1, Method::BasicGetOk(g)) => assert!(g.redelivered, "recovered message is redelivered"),
        other => panic!("expected get-ok, got {other:?}"),
    }
    let _header = c.read_frame().await;
    let _body = c.read_frame().await;
    c.send_method(1, warren_codec::BasicRecover { requeue: false })
        .await;
    let close = c.expect_close().await;
    assert_eq!(
        (
            close.code,
            close.text.as_str(),
            close.class_id,
            close.method_id
        ),
        (540, "NOT_IMPLEMENTED - requeue=false", 60, 110)
    );
}

#[tokio::test]
async fn channel_error_requeues_unacked_messages() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    declare_queue(&mut c, "held").await;
    c.publish(1, &"held".into(), b"held").await;
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: "held".into(),
            no_ack: false,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(c.read_method().await, (1, Method::BasicGetOk(_))));
    let _header = c.read_frame().await;
    let _body = c.read_frame().await;
    // An unknown tag closes the channel, and the held message goes back.
    c.send_method(
        1,
        warren_codec::BasicAck {
            delivery_tag: 42,
            multiple: false,
        },
    )
    .await;
    let close = c.expect_channel_close(1).await;
    assert_eq!(close.code, 406);
    c.open_channel(1).await;
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: "held".into(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    match c.read_method().await {
        (1, Method::BasicGetOk(g)) => assert!(g.redelivered),
        other => panic!("expected the requeued message, got {other:?}"),
    }
    let _header = c.read_frame().await;
    let _body = c.read_frame().await;
    c.close().await;
}

#[tokio::test]
async fn purge_returns_the_count_and_keeps_unacked() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    declare_queue(&mut c, "p").await;
    for _ in 0..3 {
        c.publish(1, &"p".into(), b"x").await;
    }
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: "p".into(),
            no_ack: false,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(c.read_method().await, (1, Method::BasicGetOk(_))));
    let _header = c.read_frame().await;
    let _body = c.read_frame().await;
    let m = ok(
        &mut c,
        warren_codec::QueuePurge {
            queue: "p".into(),
            ..Default::default()
        },
    )
    .await;
    match m {
        Method::QueuePurgeOk(p) => assert_eq!(p.message_count, 2),
        other => panic!("expected purge-ok, got {other:?}"),
    }
    // The unacked one is not purged: closing the channel requeues it.
    c.send_method(
        1,
        warren_codec::ChannelClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::ChannelCloseOk(_))
    ));
    c.open_channel(1).await;
    assert_eq!(c.get(1, &"p".into()).await.as_deref(), Some(&b"x"[..]));
    assert_eq!(c.get(1, &"p".into()).await, None);
    c.close().await;
}
