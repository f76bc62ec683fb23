//! Frame-order details a client library hides, checked with the raw client:
//! how confirms cover publishes, that a basic.return precedes its confirm
//! and tx.commit-ok, and what a server-sent basic.cancel looks like.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use bytes::BytesMut;
use warren_codec::{BasicProperties, Frame, Method, ShortStr, encode_content};
use warren_tests::{RawClient, TestBroker, start_broker};

async fn open_client(broker: &TestBroker) -> RawClient {
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake().await;
    c.open_channel(1).await;
    c
}

fn publish(routing_key: &ShortStr, mandatory: bool) -> Method {
    warren_codec::BasicPublish {
        routing_key: routing_key.clone(),
        mandatory,
        ..Default::default()
    }
    .into()
}

/// Expects basic.return 312 NO_ROUTE with its header and body on `channel`.
async fn expect_return(c: &mut RawClient, channel: u16, key: &str, body: &[u8]) {
    match c.read_method().await {
        (ch, Method::BasicReturn(r)) if ch == channel => {
            assert_eq!(r.reply_code, 312);
            assert_eq!(r.reply_text, "NO_ROUTE");
            assert_eq!(r.exchange, "");
            assert_eq!(r.routing_key, key);
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    match c.read_frame().await {
        Frame::Header { header, .. } => assert_eq!(header.body_size, body.len() as u64),
        other => panic!("expected the returned message's header, got {other:?}"),
    }
    match c.read_frame().await {
        Frame::Body { payload, .. } => assert_eq!(&payload[..], body),
        other => panic!("expected the returned message's body, got {other:?}"),
    }
}

#[tokio::test]
async fn confirms_cover_each_publish_exactly_once_in_order() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    c.send_method(1, warren_codec::ConfirmSelect { nowait: false })
        .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::ConfirmSelectOk(_))
    ));
    // Fifty publishes in one write, so the broker may coalesce the acks
    // with multiple=true; either way each tag is confirmed exactly once.
    let mut bytes = BytesMut::new();
    for i in 0..50 {
        encode_content(
            &mut bytes,
            1,
            &publish(&q, false),
            &BasicProperties::default(),
            format!("m{i}").as_bytes(),
            c.frame_max as usize,
        );
    }
    c.send_raw(&bytes).await.unwrap();
    let mut confirmed = 0u64;
    let mut acks = 0;
    while confirmed < 50 {
        acks += 1;
        assert!(acks <= 50, "more ack frames than publishes");
        match c.read_method().await {
            (1, Method::BasicAck(a)) => {
                assert!(
                    a.delivery_tag > confirmed,
                    "tag {} confirmed twice or out of order",
                    a.delivery_tag
                );
                if !a.multiple {
                    assert_eq!(a.delivery_tag, confirmed + 1, "a single ack skipped tags");
                }
                confirmed = a.delivery_tag;
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
    assert_eq!(confirmed, 50);
    c.close().await;
}

#[tokio::test]
async fn mandatory_return_precedes_its_confirm() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(1, warren_codec::ConfirmSelect { nowait: false })
        .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::ConfirmSelectOk(_))
    ));
    c.send_content(
        1,
        publish(&"nowhere".into(), true),
        &BasicProperties::default(),
        b"lost",
    )
    .await;
    expect_return(&mut c, 1, "nowhere", b"lost").await;
    match c.read_method().await {
        (1, Method::BasicAck(a)) => assert_eq!((a.delivery_tag, a.multiple), (1, false)),
        other => panic!("expected basic.ack for tag 1, got {other:?}"),
    }
    c.close().await;
}

#[tokio::test]
async fn mandatory_return_in_a_transaction_precedes_commit_ok() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(1, warren_codec::TxSelect).await;
    assert!(matches!(c.read_method().await, (1, Method::TxSelectOk(_))));
    c.send_content(
        1,
        publish(&"nowhere".into(), true),
        &BasicProperties::default(),
        b"tx lost",
    )
    .await;
    c.send_method(1, warren_codec::TxCommit).await;
    expect_return(&mut c, 1, "nowhere", b"tx lost").await;
    assert!(matches!(c.read_method().await, (1, Method::TxCommitOk(_))));
    c.close().await;
}

#[tokio::test]
async fn deleting_a_queue_sends_basic_cancel_to_its_consumer() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.open_channel(2).await;
    let q = c.declare_temp_queue(1).await;
    c.send_method(
        1,
        warren_codec::BasicConsume {
            queue: q.clone(),
            consumer_tag: "watcher".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::BasicConsumeOk(_))
    ));
    c.send_method(
        2,
        warren_codec::QueueDelete {
            queue: q,
            ..Default::default()
        },
    )
    .await;
    // Both frames arrive, in either order.
    let mut cancelled = false;
    let mut deleted = false;
    for _ in 0..2 {
        match c.read_method().await {
            (1, Method::BasicCancel(cancel)) => {
                assert_eq!(cancel.consumer_tag, "watcher");
                assert!(
                    cancel.nowait,
                    "RabbitMQ sends basic.cancel with nowait=true"
                );
                cancelled = true;
            }
            (2, Method::QueueDeleteOk(ok)) => {
                assert_eq!(ok.message_count, 0);
                deleted = true;
            }
            other => panic!("expected basic.cancel and queue.delete-ok, got {other:?}"),
        }
    }
    assert!(cancelled && deleted);
    // The tag is free again on channel 1 and the channel still works.
    let q2 = c.declare_temp_queue(1).await;
    c.send_method(
        1,
        warren_codec::BasicConsume {
            queue: q2,
            consumer_tag: "watcher".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::BasicConsumeOk(_))
    ));
    c.close().await;
}

#[tokio::test]
async fn deliveries_before_cancel_ok_and_none_after() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    for i in 0..3 {
        c.publish(1, &q, format!("m{i}").as_bytes()).await;
    }
    c.send_method(
        1,
        warren_codec::BasicConsume {
            queue: q.clone(),
            consumer_tag: "c".into(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    c.send_method(
        1,
        warren_codec::BasicCancel {
            consumer_tag: "c".into(),
            nowait: false,
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        (1, Method::BasicConsumeOk(_))
    ));
    let mut delivered = 0;
    for _ in 0..20 {
        match c.read_frame().await {
            Frame::Method {
                method: Method::BasicDeliver(_),
                ..
            } => delivered += 1,
            Frame::Header { .. } | Frame::Body { .. } => {}
            Frame::Method {
                method: Method::BasicCancelOk(ok),
                ..
            } => {
                assert_eq!(ok.consumer_tag, "c");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Whatever was not delivered before cancel-ok is still in the queue.
    let mut left = 0;
    for _ in 0..3 {
        if c.get(1, &q).await.is_some() {
            left += 1;
        }
    }
    assert_eq!(delivered + left, 3, "{delivered} delivered, {left} left");
    c.close().await;
}

#[tokio::test]
async fn declare_ok_counts_messages_and_consumers() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"a").await;
    c.publish(1, &q, b"b").await;
    c.send_method(
        1,
        warren_codec::QueueDeclare {
            queue: q.clone(),
            passive: true,
            ..Default::default()
        },
    )
    .await;
    match c.read_method().await {
        (1, Method::QueueDeclareOk(ok)) => {
            assert_eq!((ok.message_count, ok.consumer_count), (2, 0));
        }
        other => panic!("expected declare-ok, got {other:?}"),
    }
    c.close().await;
}

#[tokio::test]
async fn deliveries_respect_the_negotiated_frame_max() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake_with(|t| warren_codec::ConnectionTuneOk {
        channel_max: t.channel_max,
        frame_max: 4096,
        heartbeat: 0,
    })
    .await;
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    c.publish(1, &q, &body).await;
    c.send_method(
        1,
        warren_codec::BasicGet {
            queue: q,
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(c.read_method().await, (1, Method::BasicGetOk(_))));
    match c.read_frame().await {
        Frame::Header { header, .. } => assert_eq!(header.body_size, 10_000),
        other => panic!("expected a header, got {other:?}"),
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        match c.read_frame().await {
            Frame::Body { payload, .. } => {
                assert!(
                    payload.len() <= 4096 - 8,
                    "body frame of {} bytes with frame_max 4096",
                    payload.len()
                );
                got.extend_from_slice(&payload);
            }
            other => panic!("expected a body frame, got {other:?}"),
        }
        if got.len() >= body.len() {
            break;
        }
    }
    assert!(got == body, "body differs");
    c.close().await;
}

#[tokio::test]
async fn empty_body_is_delivered_without_body_frames() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"").await;
    c.publish(1, &q, b"next").await;
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b""[..]));
    // If a stray empty body frame had been sent, this get would trip on it.
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"next"[..]));
    c.close().await;
}

#[tokio::test]
async fn body_split_over_frames_including_empty_ones_is_reassembled() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    let mut bytes = BytesMut::new();
    warren_codec::encode_method(&mut bytes, 1, &publish(&q, false));
    warren_codec::encode_content_header(&mut bytes, 1, 60, 6, &BasicProperties::default());
    for piece in [&b"ab"[..], b"", b"cd", b"ef"] {
        warren_codec::encode_body(&mut bytes, 1, piece);
    }
    c.send_raw(&bytes).await.unwrap();
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"abcdef"[..]));
    c.close().await;
}

/// After the client's connection.close the broker answers close-ok and
/// leaves the socket to the client (as RabbitMQ does): what the client
/// still writes is read and dropped, and the broker closes its side once
/// the client has closed its own. Closing first made lapin report
/// `ConnectionAborted` and amqplib `EPIPE` (issue 11).
#[tokio::test]
async fn after_close_ok_the_client_closes_the_socket() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    c.close_ok().await;
    // Still open: nothing, not even EOF, within a generous window.
    let seen = c.read_within(std::time::Duration::from_millis(300)).await;
    assert!(
        seen.is_none(),
        "the broker closed or wrote after close-ok: {seen:?}"
    );
    // Publishes queued behind the close are accepted and ignored.
    for _ in 0..100 {
        c.send_content(1, publish(&q, false), &BasicProperties::default(), b"late")
            .await;
    }
    c.shutdown_write().await;
    let seen = c.expect_eof().await;
    assert!(seen.is_empty(), "frames after close-ok: {seen:?}");
    // The connection's exclusive queue went with the close, and nothing
    // published after close-ok reached anything.
    warren_tests::assert_broker_works(broker.addr).await;
}
