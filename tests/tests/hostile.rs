//! Malformed and out-of-order input over a raw socket.
//!
//! Each test connects to an in-process broker, sends something a
//! well-behaved client never would, and checks three things: what the broker
//! answers (the reply code, and the class/method ids where they mean
//! something), that it then closes the socket, and that a fresh client can
//! still connect and work. Expected codes follow RabbitMQ
//! (`shared/reference/rabbitmq-behaviour.md` sections 1, 2 and 10).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use warren_codec::{
    ConnectionTuneOk, FieldTable, FieldValue, Frame, Method, PROTOCOL_HEADER, encode_method,
};
use warren_tests::{
    CloseInfo, RawClient, Read, TestBroker, assert_broker_works, start_broker, start_broker_with,
};

/// A frame from its parts, with a correct end octet.
fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// The payload of a method frame: class, method and arguments.
fn method_payload(method: impl Into<Method>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 0, &method.into());
    buf[7..buf.len() - 1].to_vec()
}

/// A content header frame payload for `class_id` with no properties.
fn header_payload(class_id: u16, body_size: u64) -> Vec<u8> {
    let mut p = class_id.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p
}

fn publish(routing_key: &str) -> Method {
    warren_codec::BasicPublish {
        routing_key: routing_key.into(),
        ..Default::default()
    }
    .into()
}

/// A client past the handshake with channel 1 open.
async fn open_client(broker: &TestBroker) -> RawClient {
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake().await;
    c.open_channel(1).await;
    c
}

/// Sends `bytes` on an open connection and returns the connection.close the
/// broker answers with (after checking the socket is closed afterwards).
async fn close_after(bytes: &[u8]) -> (TestBroker, CloseInfo) {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_raw(bytes).await.unwrap();
    let close = c.expect_close().await;
    (broker, close)
}

/// Checks the code, that the text starts with the code's RabbitMQ name, and
/// the class/method ids.
fn assert_close(close: &CloseInfo, code: u16, name: &str, class_method: (u16, u16)) {
    assert_eq!(close.code, code, "{close:?}");
    assert!(
        close.text.starts_with(&format!("{name} - ")),
        "reply text should start with '{name} - ': {close:?}"
    );
    assert_eq!(
        (close.class_id, close.method_id),
        class_method,
        "class/method ids: {close:?}"
    );
}

// ---------------------------------------------------------------------------
// Before the handshake
// ---------------------------------------------------------------------------

async fn assert_header_refused(sent: &[u8]) {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_raw(sent).await.unwrap();
    match c.read().await {
        Read::Bytes(b) => assert_eq!(&b[..], &PROTOCOL_HEADER[..], "reply to {sent:?}"),
        other => panic!("expected the 0-9-1 protocol header, got {other:?}"),
    }
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn amqp_1_0_header_gets_0_9_1_header_and_close() {
    assert_header_refused(b"AMQP\x00\x01\x00\x00").await;
}

#[tokio::test]
async fn amqp_0_10_header_gets_0_9_1_header_and_close() {
    assert_header_refused(b"AMQP\x00\x00\x0a\x00").await;
}

#[tokio::test]
async fn http_request_gets_0_9_1_header_and_close() {
    assert_header_refused(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
}

#[tokio::test]
async fn frame_instead_of_protocol_header_gets_header_and_close() {
    let open = frame(
        1,
        0,
        &method_payload(warren_codec::ConnectionOpen::default()),
    );
    assert_header_refused(&open).await;
}

#[tokio::test]
async fn half_a_protocol_header_is_closed_after_the_handshake_timeout() {
    let broker = start_broker_with(|c| c.limits.handshake_timeout_ms = 500).await;
    let mut c = RawClient::connect(broker.addr).await;
    let started = Instant::now();
    c.send_raw(b"AMQP").await.unwrap();
    c.expect_silent_close().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}, before the 500 ms handshake timeout"
    );
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn handshake_that_stops_after_start_ok_is_closed_after_the_timeout() {
    let broker = start_broker_with(|c| c.limits.handshake_timeout_ms = 500).await;
    let mut c = RawClient::connect(broker.addr).await;
    let started = Instant::now();
    c.start_handshake().await;
    // No tune-ok, no open: the timeout runs from accept to connection.open.
    c.expect_silent_close().await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn silent_client_is_closed_after_the_handshake_timeout() {
    let broker = start_broker_with(|c| c.limits.handshake_timeout_ms = 500).await;
    let mut c = RawClient::connect(broker.addr).await;
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn method_before_start_ok_closes_silently() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_raw(PROTOCOL_HEADER).await.unwrap();
    let (_, m) = c.read_method().await;
    assert!(matches!(m, Method::ConnectionStart(_)), "{m:?}");
    c.send_raw(&frame(
        1,
        0,
        &method_payload(warren_codec::QueueDeclare::default()),
    ))
    .await
    .unwrap();
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn channel_open_before_tune_ok_closes_silently() {
    // RabbitMQ closes the socket without a close frame for any error
    // before connection.open-ok.
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.start_handshake().await;
    c.send_raw(&frame(
        1,
        1,
        &method_payload(warren_codec::ChannelOpen::default()),
    ))
    .await
    .unwrap();
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn open_before_tune_ok_closes_silently() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.start_handshake().await;
    c.send_raw(&frame(
        1,
        0,
        &method_payload(warren_codec::ConnectionOpen::default()),
    ))
    .await
    .unwrap();
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn tune_ok_frame_max_below_minimum_closes_silently() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    let tune = c.start_handshake().await;
    c.send_method(
        0,
        ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: 1000,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn tune_ok_frame_max_above_offer_closes_silently() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    let tune = c.start_handshake().await;
    c.send_method(
        0,
        ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max + 1,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn tune_ok_channel_max_above_offer_closes_silently() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    let tune = c.start_handshake().await;
    c.send_method(
        0,
        ConnectionTuneOk {
            channel_max: 65535,
            frame_max: tune.frame_max,
            heartbeat: 0,
        },
    )
    .await;
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn oversized_frame_before_tune_closes_silently() {
    // Before tune-ok the limit is RabbitMQ 4.1's initial frame_max, 8192.
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_raw(PROTOCOL_HEADER).await.unwrap();
    let (_, m) = c.read_method().await;
    assert!(matches!(m, Method::ConnectionStart(_)), "{m:?}");
    c.send_raw(&[1, 0, 0, 0, 1, 0, 0]).await.unwrap(); // size 65536
    c.expect_silent_close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn bad_password_with_auth_failure_close_gets_403() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_raw(PROTOCOL_HEADER).await.unwrap();
    let (_, m) = c.read_method().await;
    assert!(matches!(m, Method::ConnectionStart(_)), "{m:?}");
    let caps = FieldTable::new().with("authentication_failure_close", FieldValue::Bool(true));
    c.send_method(
        0,
        warren_codec::ConnectionStartOk {
            client_properties: FieldTable::new().with("capabilities", FieldValue::Table(caps)),
            mechanism: "PLAIN".into(),
            response: "\0guest\0wrong".into(),
            locale: "en_US".into(),
        },
    )
    .await;
    let close = c.expect_close().await;
    assert_close(&close, 403, "ACCESS_REFUSED", (0, 0));
    assert!(close.text.contains("PLAIN"), "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn missing_vhost_gets_530() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    let tune = c.start_handshake().await;
    c.send_method(
        0,
        ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        },
    )
    .await;
    c.send_method(
        0,
        warren_codec::ConnectionOpen {
            virtual_host: "nope".into(),
            ..Default::default()
        },
    )
    .await;
    let close = c.expect_close().await;
    assert_close(&close, 530, "NOT_ALLOWED", (10, 40));
    assert_eq!(close.text, "NOT_ALLOWED - vhost nope not found");
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Framing errors on an open connection: 501 FRAME_ERROR
// ---------------------------------------------------------------------------

#[tokio::test]
async fn frame_larger_than_frame_max_is_501() {
    // Only the 7-byte header is sent: the broker must refuse on the declared
    // size, before it buffers anything.
    let (broker, close) = close_after(&[1, 0, 1, 0, 2, 0x49, 0xF0]).await; // 150000
    assert_close(&close, 501, "FRAME_ERROR", (0, 0));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn frame_larger_than_negotiated_frame_max_is_501() {
    // The client negotiates 4096; a 5000-byte frame is then too large even
    // though the broker's own limit is 128 KiB.
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake_with(|t| ConnectionTuneOk {
        channel_max: t.channel_max,
        frame_max: 4096,
        heartbeat: 0,
    })
    .await;
    c.open_channel(1).await;
    c.send_raw(&[3, 0, 1, 0, 0, 0x13, 0x88]).await.unwrap(); // body frame, 5000
    let close = c.expect_close().await;
    assert_close(&close, 501, "FRAME_ERROR", (0, 0));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn bad_frame_end_octet_is_501() {
    let mut f = frame(1, 1, &method_payload(warren_codec::BasicQos::default()));
    let last = f.len() - 1;
    f[last] = 0x00;
    let (broker, close) = close_after(&f).await;
    assert_close(&close, 501, "FRAME_ERROR", (0, 0));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn unknown_frame_type_is_501() {
    let (broker, close) = close_after(&frame(7, 1, &[])).await;
    assert_close(&close, 501, "FRAME_ERROR", (0, 0));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn truncated_method_arguments_are_501() {
    // queue.declare with nothing after the class and method ids.
    let (broker, close) = close_after(&frame(1, 1, &[0, 50, 0, 10])).await;
    assert_close(&close, 501, "FRAME_ERROR", (50, 10));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn method_frame_too_short_for_ids_is_501() {
    let (broker, close) = close_after(&frame(1, 1, &[0, 50])).await;
    assert_eq!(close.code, 501, "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn trailing_bytes_after_method_arguments_are_501() {
    let mut p = method_payload(warren_codec::BasicQos::default());
    p.extend_from_slice(b"junk");
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert_close(&close, 501, "FRAME_ERROR", (60, 10));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn body_overrunning_the_declared_size_is_501() {
    let mut bytes = frame(1, 1, &method_payload(publish("q")));
    bytes.extend(frame(2, 1, &header_payload(60, 5)));
    bytes.extend(frame(3, 1, b"0123456789"));
    let (broker, close) = close_after(&bytes).await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Field syntax: 502 SYNTAX_ERROR (RabbitMQ drops the socket; a close with a
// reason is the better answer, see section 10)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_field_table_tag_is_502() {
    let declare = warren_codec::QueueDeclare {
        queue: "q".into(),
        arguments: FieldTable::new().with("x-foo", FieldValue::LongStr("a".into())),
        ..Default::default()
    };
    let mut p = method_payload(declare);
    // The value's tag follows the key "x-foo"; 'Z' is no type at all.
    let at = p.windows(6).position(|w| w == b"x-fooS").unwrap() + 5;
    p[at] = b'Z';
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert_close(&close, 502, "SYNTAX_ERROR", (50, 10));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn field_table_length_past_the_frame_is_501_or_502() {
    let declare = warren_codec::QueueDeclare {
        queue: "q".into(),
        arguments: FieldTable::new().with("x-foo", FieldValue::LongStr("a".into())),
        ..Default::default()
    };
    let mut p = method_payload(declare);
    // The table's length is the 4 bytes before the key's length octet.
    let key_at = p.windows(6).position(|w| w == b"x-fooS").unwrap() - 1;
    p[key_at - 4..key_at].copy_from_slice(&1000u32.to_be_bytes());
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert!(matches!(close.code, 501 | 502), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (50, 10), "{close:?}");
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Class and method errors: 503 COMMAND_INVALID, 540 NOT_IMPLEMENTED
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_class_and_method_is_540() {
    // RabbitMQ 3.10 drops the socket here; section 10 asks for a proper
    // close, and Warren's codec maps an unknown method to 540.
    let (broker, close) = close_after(&frame(1, 1, &[0, 99, 0, 99])).await;
    assert_close(&close, 540, "NOT_IMPLEMENTED", (99, 99));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn unknown_method_of_known_class_is_540() {
    let (broker, close) = close_after(&frame(1, 1, &[0, 50, 0, 99])).await;
    assert_close(&close, 540, "NOT_IMPLEMENTED", (50, 99));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn connection_method_on_channel_1_is_503() {
    let open = method_payload(warren_codec::ConnectionOpen::default());
    let (broker, close) = close_after(&frame(1, 1, &open)).await;
    assert_close(&close, 503, "COMMAND_INVALID", (10, 40));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn immediate_publish_is_540() {
    let p = method_payload(warren_codec::BasicPublish {
        routing_key: "q".into(),
        immediate: true,
        ..Default::default()
    });
    let mut bytes = frame(1, 1, &p);
    bytes.extend(frame(2, 1, &header_payload(60, 0)));
    let (broker, close) = close_after(&bytes).await;
    assert_close(&close, 540, "NOT_IMPLEMENTED", (60, 40));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn qos_prefetch_size_is_540() {
    let p = method_payload(warren_codec::BasicQos {
        prefetch_size: 1000,
        ..Default::default()
    });
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert_close(&close, 540, "NOT_IMPLEMENTED", (60, 10));
    assert_eq!(close.text, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn channel_flow_inactive_is_540() {
    let p = method_payload(warren_codec::ChannelFlow { active: false });
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert_close(&close, 540, "NOT_IMPLEMENTED", (20, 20));
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Channel errors: 504 CHANNEL_ERROR, 530 NOT_ALLOWED
// ---------------------------------------------------------------------------

#[tokio::test]
async fn method_on_unopened_channel_is_504() {
    let p = method_payload(warren_codec::QueueDeclare {
        queue: "q".into(),
        ..Default::default()
    });
    let (broker, close) = close_after(&frame(1, 5, &p)).await;
    assert_close(&close, 504, "CHANNEL_ERROR", (50, 10));
    assert_eq!(close.text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn second_channel_open_is_504() {
    let p = method_payload(warren_codec::ChannelOpen::default());
    let (broker, close) = close_after(&frame(1, 1, &p)).await;
    assert_close(&close, 504, "CHANNEL_ERROR", (20, 10));
    assert_eq!(close.text, "CHANNEL_ERROR - second 'channel.open' seen");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn queue_method_on_channel_0_is_504() {
    let p = method_payload(warren_codec::QueueDeclare {
        queue: "q".into(),
        ..Default::default()
    });
    let (broker, close) = close_after(&frame(1, 0, &p)).await;
    assert_close(&close, 504, "CHANNEL_ERROR", (50, 10));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn content_header_on_channel_0_is_504() {
    let (broker, close) = close_after(&frame(2, 0, &header_payload(60, 1))).await;
    assert_eq!(close.code, 504, "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn opening_more_than_channel_max_channels_is_530() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake_with(|t| ConnectionTuneOk {
        channel_max: 2,
        frame_max: t.frame_max,
        heartbeat: 0,
    })
    .await;
    c.open_channel(1).await;
    // Ids are not limited, the count is (RabbitMQ): id 3000 is fine.
    c.open_channel(3000).await;
    c.send_method(7, warren_codec::ChannelOpen::default()).await;
    let close = c.expect_close().await;
    assert_close(&close, 530, "NOT_ALLOWED", (20, 10));
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn reused_consumer_tag_is_530() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    let consume = warren_codec::BasicConsume {
        queue: q,
        consumer_tag: "dup".into(),
        ..Default::default()
    };
    c.send_method(1, consume.clone()).await;
    let (_, m) = c.read_method().await;
    assert!(matches!(m, Method::BasicConsumeOk(_)), "{m:?}");
    c.send_method(1, consume).await;
    let close = c.expect_close().await;
    assert_close(&close, 530, "NOT_ALLOWED", (60, 20));
    assert_eq!(
        close.text,
        "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    );
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Content out of order: 505 UNEXPECTED_FRAME
// ---------------------------------------------------------------------------

#[tokio::test]
async fn body_without_header_is_505() {
    let (broker, close) = close_after(&frame(3, 1, b"hello")).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME - "), "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn header_without_method_is_505() {
    let (broker, close) = close_after(&frame(2, 1, &header_payload(60, 5))).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME - "), "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn body_after_publish_without_header_is_505() {
    let mut bytes = frame(1, 1, &method_payload(publish("q")));
    bytes.extend(frame(3, 1, b"hello"));
    let (broker, close) = close_after(&bytes).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn method_while_body_expected_is_505() {
    let mut bytes = frame(1, 1, &method_payload(publish("q")));
    bytes.extend(frame(2, 1, &header_payload(60, 5)));
    bytes.extend(frame(
        1,
        1,
        &method_payload(warren_codec::BasicQos::default()),
    ));
    let (broker, close) = close_after(&bytes).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn content_header_class_mismatch_is_505() {
    // The spec says 501; RabbitMQ sends 505 (section 10), and so do we.
    let mut bytes = frame(1, 1, &method_payload(publish("q")));
    bytes.extend(frame(2, 1, &header_payload(50, 5)));
    let (broker, close) = close_after(&bytes).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert_eq!(
        close.text,
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50"
    );
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn heartbeat_on_channel_1_is_505() {
    let (broker, close) = close_after(&frame(8, 1, &[])).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME - "), "{close:?}");
    assert_broker_works(broker.addr).await;
}

// ---------------------------------------------------------------------------
// Soft errors the connection survives
// ---------------------------------------------------------------------------

#[tokio::test]
async fn body_above_max_message_size_is_406_on_the_channel() {
    let broker = start_broker_with(|c| c.limits.max_message_size = 1024).await;
    let mut c = open_client(&broker).await;
    let q = c.declare_temp_queue(1).await;
    // Only the method and the header: the broker refuses on the declared size.
    let mut bytes = frame(1, 1, &method_payload(publish(&q.to_lossy())));
    bytes.extend(frame(2, 1, &header_payload(60, 2048)));
    c.send_raw(&bytes).await.unwrap();
    let close = c.expect_channel_close(1).await;
    assert_close(&close, 406, "PRECONDITION_FAILED", (60, 40));
    assert!(close.text.contains("2048"), "{close:?}");
    // The connection survives: the channel id is reusable and works.
    c.open_channel(1).await;
    c.publish(1, &q, b"small").await;
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"small"[..]));
    c.close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn publish_to_missing_exchange_is_404_naming_basic_publish() {
    // RabbitMQ assembles method, header and body before acting, so errors
    // found when the content completes still name basic.publish (60/40).
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let p = method_payload(warren_codec::BasicPublish {
        exchange: "nope".into(),
        routing_key: "q".into(),
        ..Default::default()
    });
    let mut bytes = frame(1, 1, &p);
    bytes.extend(frame(2, 1, &header_payload(60, 2)));
    bytes.extend(frame(3, 1, b"hi"));
    c.send_raw(&bytes).await.unwrap();
    let close = c.expect_channel_close(1).await;
    assert_close(&close, 404, "NOT_FOUND", (60, 40));
    assert_eq!(close.text, "NOT_FOUND - no exchange 'nope' in vhost '/'");
    c.open_channel(1).await;
    c.close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn ack_of_unknown_delivery_tag_is_406_on_the_channel() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(
        1,
        warren_codec::BasicAck {
            delivery_tag: 99,
            multiple: false,
        },
    )
    .await;
    let close = c.expect_channel_close(1).await;
    assert_close(&close, 406, "PRECONDITION_FAILED", (60, 80));
    assert_eq!(close.text, "PRECONDITION_FAILED - unknown delivery tag 99");
    c.open_channel(1).await;
    c.close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn methods_after_channel_close_are_ignored_until_close_ok() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    c.send_method(
        1,
        warren_codec::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    )
    .await;
    // Sent before the client has seen channel.close: must be dropped.
    c.send_method(1, warren_codec::BasicQos::default()).await;
    let close = c.expect_channel_close(1).await;
    assert_eq!(close.code, 406, "{close:?}");
    // If basic.qos-ok had been sent it would arrive before open-ok.
    c.open_channel(1).await;
    c.close().await;
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[tokio::test]
async fn silent_peer_gets_heartbeats_then_is_disconnected() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake_with(|t| ConnectionTuneOk {
        channel_max: t.channel_max,
        frame_max: t.frame_max,
        heartbeat: 1,
    })
    .await;
    let started = Instant::now();
    let mut heartbeats = 0;
    for _ in 0..20 {
        match c.read().await {
            Read::Frame(Frame::Heartbeat { channel: 0 }) => heartbeats += 1,
            Read::Eof => break,
            other => panic!("expected heartbeats then EOF, got {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert!(heartbeats >= 1, "no heartbeat before the close");
    // RabbitMQ closes after about 2-3 missed intervals.
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn peer_sending_heartbeats_stays_connected() {
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake_with(|t| ConnectionTuneOk {
        channel_max: t.channel_max,
        frame_max: t.frame_max,
        heartbeat: 1,
    })
    .await;
    // Answer each broker heartbeat with one of ours for about 3 s: twice
    // the broker's patience with a silent peer.
    let started = Instant::now();
    let mut heartbeats = 0;
    while started.elapsed() < Duration::from_secs(3) {
        assert!(heartbeats < 20, "too many heartbeats: {heartbeats}");
        match c.read().await {
            Read::Frame(Frame::Heartbeat { channel: 0 }) => {
                heartbeats += 1;
                c.send_raw(&frame(8, 0, &[])).await.unwrap();
            }
            other => panic!("expected heartbeats only, got {other:?}"),
        }
    }
    assert!(heartbeats >= 2, "{heartbeats} heartbeats in 3 s");
    c.open_channel(1).await;
    let q = c.declare_temp_queue(1).await;
    c.publish(1, &q, b"alive").await;
    assert_eq!(c.get(1, &q).await.as_deref(), Some(&b"alive"[..]));
    c.close().await;
}

// ---------------------------------------------------------------------------
// Many bad clients at once
// ---------------------------------------------------------------------------

#[tokio::test]
async fn many_hostile_clients_do_not_hurt_a_good_one() {
    let broker = start_broker().await;
    let mut good = open_client(&broker).await;
    let q = good.declare_temp_queue(1).await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.0\r\n\r\n",
        &[1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF],
        &[0xCE; 64],
        b"AMQP\x00\x00\x09\x01\x01\x00\x00\xFF\xFF\xFF\xFF",
    ];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = broker.addr;
        let bytes = garbage[i % garbage.len()].to_vec();
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await;
            let _ = c.send_raw(&bytes).await;
            c.expect_eof().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    good.publish(1, &q, b"fine").await;
    assert_eq!(good.get(1, &q).await.as_deref(), Some(&b"fine"[..]));
    good.close().await;
    assert_broker_works(broker.addr).await;
}

#[tokio::test]
async fn broker_shutdown_sends_320_to_clients() {
    let broker = start_broker().await;
    let mut c = open_client(&broker).await;
    let stop = tokio::spawn(broker.stop());
    let close = c.expect_close().await;
    assert_close(&close, 320, "CONNECTION_FORCED", (0, 0));
    stop.await.unwrap();
}

#[tokio::test]
async fn pipelined_handshake_and_publish_in_one_write() {
    // Clients may write everything at once; the broker must frame it all.
    let broker = start_broker().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.handshake().await;
    let mut bytes = frame(1, 1, &method_payload(warren_codec::ChannelOpen::default()));
    bytes.extend(frame(
        1,
        1,
        &method_payload(warren_codec::QueueDeclare {
            queue: "pipelined".into(),
            exclusive: true,
            ..Default::default()
        }),
    ));
    bytes.extend(frame(1, 1, &method_payload(publish("pipelined"))));
    bytes.extend(frame(2, 1, &header_payload(60, 3)));
    bytes.extend(frame(3, 1, b"abc"));
    c.send_raw(&bytes).await.unwrap();
    assert!(matches!(
        c.read_method().await,
        (1, Method::ChannelOpenOk(_))
    ));
    assert!(matches!(
        c.read_method().await,
        (1, Method::QueueDeclareOk(_))
    ));
    assert_eq!(
        c.get(1, &"pipelined".into()).await.as_deref(),
        Some(&b"abc"[..])
    );
    c.close().await;
}

#[tokio::test]
async fn consumer_that_never_reads_does_not_stall_the_broker() {
    // 16 MiB of deliveries to a no-ack consumer that never reads: more than
    // the broker's write buffer and the socket buffers together.
    let broker = start_broker().await;
    let mut publisher = open_client(&broker).await;
    publisher
        .send_method(
            1,
            warren_codec::QueueDeclare {
                queue: "flood".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(
        publisher.read_method().await,
        (1, Method::QueueDeclareOk(_))
    ));
    let mut sleeper = open_client(&broker).await;
    sleeper
        .send_method(
            1,
            warren_codec::BasicConsume {
                queue: "flood".into(),
                consumer_tag: "sleeper".into(),
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(
        sleeper.read_method().await,
        (1, Method::BasicConsumeOk(_))
    ));
    let body = vec![b'x'; 16 * 1024];
    for _ in 0..1024 {
        publisher.publish(1, &"flood".into(), &body).await;
    }
    // The publisher's own connection still answers...
    let q = publisher.declare_temp_queue(1).await;
    publisher.publish(1, &q, b"ping").await;
    assert_eq!(publisher.get(1, &q).await.as_deref(), Some(&b"ping"[..]));
    publisher.close().await;
    // ...and so does a new one.
    assert_broker_works(broker.addr).await;
    drop(sleeper);
    assert_broker_works(broker.addr).await;
}
