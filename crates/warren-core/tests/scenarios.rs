//! Sans-IO scenario tests: scripted frames into a [`Connection`], frames
//! out, and a fake clock. No sockets, no runtime: each test reads as a
//! conversation with the broker.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren_codec::*;
use warren_core::{Broker, BrokerConfig, ConnInfo, Connection, Mailbox, NoWake};

/// One client connection driven by hand.
struct Client {
    conn: Connection,
    decoder: FrameDecoder,
    inbox: std::collections::VecDeque<Frame>,
    now: Instant,
    /// The broker answered with its protocol header (a header mismatch).
    got_protocol_header: bool,
}

fn broker() -> Arc<Broker> {
    Broker::new(BrokerConfig::default())
}

impl Client {
    fn connect(broker: &Arc<Broker>) -> Self {
        Self::connect_from(broker, true)
    }

    fn connect_from(broker: &Arc<Broker>, loopback: bool) -> Self {
        let mailbox = Mailbox::new(Box::new(NoWake));
        let now = Instant::now();
        let conn = Connection::new(
            Arc::clone(broker),
            ConnInfo {
                peer: "test".into(),
                local: "broker".into(),
                loopback,
                tls: None,
            },
            mailbox,
            now,
        );
        Client {
            conn,
            decoder: FrameDecoder::new(1 << 20),
            inbox: Default::default(),
            now,
            got_protocol_header: false,
        }
    }

    fn collect(&mut self) {
        self.conn.handle_events(self.now);
        let mut out = self.conn.take_output();
        // Only a header mismatch makes the broker write a protocol header,
        // and then nothing else: it must be exactly ours.
        if !self.got_protocol_header && out.starts_with(b"AMQP") {
            assert_eq!(&out[..], PROTOCOL_HEADER, "the broker's protocol header");
            self.got_protocol_header = true;
            let _ = out.split_to(8);
        }
        while let Some(f) = self.decoder.decode(&mut out).unwrap() {
            self.inbox.push_back(f);
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.conn.handle_input(&mut buf, self.now);
        self.collect();
    }

    fn send(&mut self, channel: u16, m: impl Into<Method>) {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &m.into());
        self.send_bytes(&buf);
    }

    fn publish_props(
        &mut self,
        channel: u16,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) {
        let mut buf = BytesMut::new();
        let m = Method::from(BasicPublish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            ..Default::default()
        });
        encode_content(&mut buf, channel, &m, &props, body, 131072);
        self.send_bytes(&buf);
    }

    fn publish(&mut self, channel: u16, exchange: &str, key: &str, body: &[u8]) {
        self.publish_props(
            channel,
            exchange,
            key,
            body,
            BasicProperties::default(),
            false,
        );
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
        self.collect();
    }

    fn next(&mut self) -> Frame {
        self.collect();
        self.inbox
            .pop_front()
            .expect("expected a frame from the broker, got none")
    }

    fn method(&mut self) -> (u16, Method) {
        loop {
            match self.next() {
                Frame::Method { channel, method } => return (channel, method),
                Frame::Heartbeat { .. } => continue,
                other => panic!("expected a method, got {other:?}"),
            }
        }
    }

    fn nothing(&mut self) {
        self.collect();
        assert!(
            self.inbox.is_empty(),
            "expected no frames, got {:?}",
            self.inbox
        );
    }

    /// A delivered or returned message: (method, properties, body).
    fn content(&mut self) -> (Method, BasicProperties, Bytes) {
        let (_, m) = self.method();
        let Frame::Header { header, .. } = self.next() else {
            panic!("expected a content header")
        };
        let mut body = BytesMut::new();
        while (body.len() as u64) < header.body_size {
            let Frame::Body { payload, .. } = self.next() else {
                panic!("expected a body frame")
            };
            body.extend_from_slice(&payload);
        }
        (m, header.properties.into_inner(), body.freeze())
    }

    fn handshake_caps(&mut self, caps: FieldTable) {
        self.send_bytes(PROTOCOL_HEADER);
        let (_, m) = self.method();
        assert!(matches!(m, Method::ConnectionStart(_)));
        self.send(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::new().with("capabilities", FieldValue::Table(caps)),
                mechanism: "PLAIN".into(),
                response: LongStr::from("\0guest\0guest"),
                locale: "en_US".into(),
            },
        );
        let (_, m) = self.method();
        let Method::ConnectionTune(t) = m else {
            panic!("expected tune, got {m:?}")
        };
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: 0,
            },
        );
        self.send(
            0,
            ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            },
        );
        let (_, m) = self.method();
        assert!(matches!(m, Method::ConnectionOpenOk(_)), "{m:?}");
    }

    /// Protocol header, PLAIN login with `response`, tune-ok and
    /// `connection.open` of `vhost`; the reply to the open is left unread.
    fn login_and_open(&mut self, response: &str, channel_max: u16, heartbeat: u16, vhost: &str) {
        self.send_bytes(PROTOCOL_HEADER);
        self.method();
        self.send(
            0,
            ConnectionStartOk {
                response: response.into(),
                ..Default::default()
            },
        );
        let (_, m) = self.method();
        assert!(matches!(m, Method::ConnectionTune(_)), "{m:?}");
        self.send(
            0,
            ConnectionTuneOk {
                channel_max,
                frame_max: 131072,
                heartbeat,
            },
        );
        self.send(
            0,
            ConnectionOpen {
                virtual_host: vhost.into(),
                ..Default::default()
            },
        );
    }

    fn handshake(&mut self) {
        let caps = FieldTable::new()
            .with("consumer_cancel_notify", FieldValue::Bool(true))
            .with("authentication_failure_close", FieldValue::Bool(true));
        self.handshake_caps(caps);
    }

    fn open(broker: &Arc<Broker>) -> Self {
        let mut c = Self::connect(broker);
        c.handshake();
        c.send(1, ChannelOpen::default());
        assert!(matches!(c.method().1, Method::ChannelOpenOk(_)));
        c
    }

    fn declare(&mut self, ch: u16, q: &str) {
        self.send(
            ch,
            QueueDeclare {
                queue: q.into(),
                ..Default::default()
            },
        );
        let (_, m) = self.method();
        assert!(matches!(m, Method::QueueDeclareOk(_)), "{m:?}");
    }

    /// Expects channel.close with `code`; answers close-ok. Returns the text.
    fn channel_closed(&mut self, ch: u16, code: u16) -> String {
        let (c, m) = self.method();
        let Method::ChannelClose(close) = m else {
            panic!("expected channel.close, got {m:?}")
        };
        assert_eq!((c, close.reply_code), (ch, code), "{}", close.reply_text);
        self.send(ch, ChannelCloseOk);
        close.reply_text.to_string()
    }

    /// Expects connection.close with `code`; returns (text, class, method).
    fn connection_closed(&mut self, code: u16) -> (String, u16, u16) {
        let (c, m) = self.method();
        let Method::ConnectionClose(close) = m else {
            panic!("expected connection.close, got {m:?}")
        };
        assert_eq!((c, close.reply_code), (0, code), "{}", close.reply_text);
        self.send(0, ConnectionCloseOk);
        assert!(self.conn.is_closed());
        (
            close.reply_text.to_string(),
            close.class_id,
            close.method_id,
        )
    }

    /// Sends the `basic.publish` (to queue `q` on channel 1) that content
    /// frames are then expected to follow.
    fn begin_publish(&mut self) {
        self.send(
            1,
            BasicPublish {
                routing_key: "q".into(),
                ..Default::default()
            },
        );
    }

    /// `basic.get` (with ack) from `queue` on channel 1, then
    /// `basic.reject` of what came, without requeue.
    fn reject_one(&mut self, queue: &str) {
        self.send(
            1,
            BasicGet {
                queue: queue.into(),
                ..Default::default()
            },
        );
        let t = self.delivery_tag();
        self.send(
            1,
            BasicReject {
                delivery_tag: t,
                requeue: false,
            },
        );
    }

    fn delivery_tag(&mut self) -> u64 {
        let (m, _, _) = self.content();
        match m {
            Method::BasicDeliver(d) => d.delivery_tag,
            Method::BasicGetOk(g) => g.delivery_tag,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
}

/// Appends a content header frame on channel 1 with no properties.
fn header(buf: &mut BytesMut, class_id: u16, body_size: u64) {
    encode_header(
        buf,
        1,
        &ContentHeader {
            class_id,
            body_size,
            properties: Default::default(),
        },
    );
}

// ---------------------------------------------------------------- handshake

#[test]
fn handshake_offers_rabbitmq_limits_and_capabilities() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    let Method::ConnectionStart(start) = c.method().1 else {
        panic!()
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(start.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
    assert_eq!(start.locales.as_bytes(), b"en_US");
    let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities") else {
        panic!()
    };
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "exchange_exchange_bindings",
    ] {
        assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
    }
    assert!(
        start.server_properties.get("host").is_none(),
        "RabbitMQ sends no host key"
    );
    c.send(
        0,
        ConnectionStartOk {
            response: "\0guest\0guest".into(),
            ..Default::default()
        },
    );
    let Method::ConnectionTune(t) = c.method().1 else {
        panic!()
    };
    assert_eq!(
        (t.channel_max, t.frame_max, t.heartbeat),
        (2047, 131072, 60)
    );
}

#[test]
fn wrong_protocol_header_gets_ours_and_a_close() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(b"AMQP\x00\x00\x0a\x00");
    assert!(c.got_protocol_header, "no protocol header in reply");
    assert!(c.conn.is_closed());
    c.nothing();
}

#[test]
fn bad_password_with_capability_is_403() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    c.method();
    let caps = FieldTable::new().with("authentication_failure_close", FieldValue::Bool(true));
    c.send(
        0,
        ConnectionStartOk {
            client_properties: FieldTable::new().with("capabilities", FieldValue::Table(caps)),
            response: "\0guest\0wrong".into(),
            ..Default::default()
        },
    );
    let (text, _, _) = c.connection_closed(403);
    assert!(
        text.starts_with("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
        "{text}"
    );
}

#[test]
fn bad_password_without_capability_just_closes() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    c.method();
    c.send(
        0,
        ConnectionStartOk {
            response: "\0guest\0wrong".into(),
            ..Default::default()
        },
    );
    c.nothing();
    assert!(c.conn.is_closed());
}

#[test]
fn guest_is_refused_from_a_remote_address() {
    let b = broker();
    let mut c = Client::connect_from(&b, false);
    c.send_bytes(PROTOCOL_HEADER);
    c.method();
    let caps = FieldTable::new().with("authentication_failure_close", FieldValue::Bool(true));
    c.send(
        0,
        ConnectionStartOk {
            client_properties: FieldTable::new().with("capabilities", FieldValue::Table(caps)),
            response: "\0guest\0guest".into(),
            ..Default::default()
        },
    );
    c.connection_closed(403);
}

#[test]
fn amqplain_login_works() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    c.method();
    let t = FieldTable::new()
        .with("LOGIN", FieldValue::LongStr("guest".into()))
        .with("PASSWORD", FieldValue::LongStr("guest".into()));
    let mut buf = BytesMut::new();
    warren_codec::types::put_table(&mut buf, &t);
    let resp = buf.freeze().slice(4..);
    c.send(
        0,
        ConnectionStartOk {
            mechanism: "AMQPLAIN".into(),
            response: LongStr(resp),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ConnectionTune(_)));
}

#[test]
fn tune_ok_out_of_range_closes_the_socket_silently() {
    for (channel_max, frame_max) in [
        (0, 131072),
        (4000, 131072),
        (10, 1000),
        (10, 200_000),
        (10, 0),
    ] {
        let b = broker();
        let mut c = Client::connect(&b);
        c.send_bytes(PROTOCOL_HEADER);
        c.method();
        c.send(
            0,
            ConnectionStartOk {
                response: "\0guest\0guest".into(),
                ..Default::default()
            },
        );
        c.method();
        c.send(
            0,
            ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            },
        );
        c.nothing();
        assert!(c.conn.is_closed(), "{channel_max} {frame_max}");
    }
}

#[test]
fn missing_vhost_is_530() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.login_and_open("\0guest\0guest", 10, 0, "nope");
    let (text, class, method) = c.connection_closed(530);
    assert_eq!(text, "NOT_ALLOWED - vhost nope not found");
    assert_eq!((class, method), (10, 40));
}

#[test]
fn handshake_times_out() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(b"AMQP\x00");
    assert!(c.conn.poll_timeout().is_some());
    c.advance(Duration::from_secs(11));
    assert!(c.conn.is_closed());
}

#[test]
fn heartbeats_are_sent_and_silence_closes() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.login_and_open("\0guest\0guest", 10, 2, "/");
    c.method();
    c.advance(Duration::from_millis(1100));
    assert!(matches!(c.next(), Frame::Heartbeat { channel: 0 }));
    // Client traffic keeps it alive.
    c.send_bytes(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    c.advance(Duration::from_millis(3000));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_millis(1100));
    assert!(
        c.conn.is_closed(),
        "no client traffic for two intervals closes the connection"
    );
}

#[test]
fn client_close_gets_close_ok() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        0,
        ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(c.method().1, Method::ConnectionCloseOk(_)));
    // The client closes the socket, not the broker (see the lingering
    // scenarios below).
    assert!(!c.conn.is_closed());
    c.nothing();
}

#[test]
fn forced_close_is_320() {
    let b = broker();
    let mut c = Client::open(&b);
    c.conn.force_close("shutdown", c.now);
    c.collect();
    let (text, _, _) = c.connection_closed(320);
    assert!(text.starts_with("CONNECTION_FORCED"), "{text}");
}

// ---------------------------------------------------------------- channel errors (hard)

#[test]
fn method_on_unopened_channel_is_504() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        5,
        QueueDeclare {
            queue: "q".into(),
            ..Default::default()
        },
    );
    let (text, class, method) = c.connection_closed(504);
    assert_eq!(text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((class, method), (50, 10));
}

#[test]
fn second_channel_open_is_504() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(1, ChannelOpen::default());
    let (text, _, _) = c.connection_closed(504);
    assert_eq!(text, "CHANNEL_ERROR - second 'channel.open' seen");
}

#[test]
fn channel_ids_above_max_are_fine_but_the_count_is_enforced() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.login_and_open("\0guest\0guest", 2, 0, "/");
    c.method();
    c.send(3000, ChannelOpen::default());
    assert!(matches!(c.method().1, Method::ChannelOpenOk(_)));
    c.send(9, ChannelOpen::default());
    assert!(matches!(c.method().1, Method::ChannelOpenOk(_)));
    c.send(10, ChannelOpen::default());
    let (text, _, _) = c.connection_closed(530);
    assert!(
        text.contains("reached the negotiated channel_max (2)"),
        "{text}"
    );
}

#[test]
fn connection_method_on_a_channel_is_503() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(1, ConnectionOpen::default());
    let (_, class, method) = c.connection_closed(503);
    assert_eq!((class, method), (10, 40));
}

#[test]
fn channel_method_on_channel_zero_is_504() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(0, QueueDeclare::default());
    c.connection_closed(504);
}

#[test]
fn heartbeat_on_a_channel_is_505() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send_bytes(&[8, 0, 1, 0, 0, 0, 0, 0xCE]);
    c.connection_closed(505);
}

#[test]
fn content_without_a_method_is_505() {
    let b = broker();
    let mut c = Client::open(&b);
    let mut buf = BytesMut::new();
    encode_body(&mut buf, 1, b"hello");
    c.send_bytes(&buf);
    c.connection_closed(505);
}

#[test]
fn header_class_mismatch_is_505() {
    let b = broker();
    let mut c = Client::open(&b);
    c.begin_publish();
    let mut buf = BytesMut::new();
    header(&mut buf, 50, 1);
    c.send_bytes(&buf);
    let (text, _, _) = c.connection_closed(505);
    assert_eq!(
        text,
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50"
    );
}

#[test]
fn method_instead_of_header_is_505() {
    let b = broker();
    let mut c = Client::open(&b);
    c.begin_publish();
    c.send(1, BasicQos::default());
    c.connection_closed(505);
}

#[test]
fn body_overrunning_its_size_is_501() {
    let b = broker();
    let mut c = Client::open(&b);
    c.begin_publish();
    let mut buf = BytesMut::new();
    header(&mut buf, 60, 3);
    encode_body(&mut buf, 1, b"toolong");
    c.send_bytes(&buf);
    c.connection_closed(501);
}

#[test]
fn oversized_message_is_406_and_its_body_is_ignored() {
    let b = Broker::new(BrokerConfig {
        limits: warren_core::Limits {
            max_message_size: 10,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"0123456789ABCDEF");
    let (_, m) = c.method();
    let Method::ChannelClose(close) = m else {
        panic!("{m:?}")
    };
    assert_eq!(close.reply_code, 406);
    assert_eq!(
        (close.class_id, close.method_id),
        (60, 40),
        "attributed to basic.publish"
    );
    assert_eq!(
        close.reply_text.to_string(),
        "PRECONDITION_FAILED - message size 16 is larger than configured max size 10"
    );
    c.send(1, ChannelCloseOk);
    assert!(!c.conn.is_closed());
}

#[test]
fn oversized_frame_is_501() {
    let b = broker();
    let mut c = Client::open(&b);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[1, 0, 1]);
    buf.extend_from_slice(&200_000u32.to_be_bytes());
    c.send_bytes(&buf);
    c.connection_closed(501);
}

#[test]
fn unknown_method_is_540() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send_bytes(&[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 99, 0xCE]);
    let (_, class, method) = c.connection_closed(540);
    assert_eq!((class, method), (99, 99));
}

#[test]
fn unsupported_features_are_540() {
    let cases: Vec<(Method, &str)> = vec![
        (
            BasicQos {
                prefetch_size: 1000,
                ..Default::default()
            }
            .into(),
            "NOT_IMPLEMENTED - prefetch_size!=0 (1000)",
        ),
        (
            ChannelFlow { active: false }.into(),
            "NOT_IMPLEMENTED - active=false",
        ),
        (
            BasicRecover { requeue: false }.into(),
            "NOT_IMPLEMENTED - requeue=false",
        ),
    ];
    for (m, expected) in cases {
        let b = broker();
        let mut c = Client::open(&b);
        c.send(1, m);
        let (text, _, _) = c.connection_closed(540);
        assert_eq!(text, expected);
    }
    let b = broker();
    let mut c = Client::open(&b);
    let mut buf = BytesMut::new();
    let m = Method::from(BasicPublish {
        routing_key: "q".into(),
        immediate: true,
        ..Default::default()
    });
    encode_content(&mut buf, 1, &m, &BasicProperties::default(), b"x", 131072);
    c.send_bytes(&buf);
    let (text, _, _) = c.connection_closed(540);
    assert_eq!(text, "NOT_IMPLEMENTED - immediate=true");
}

#[test]
fn reused_consumer_tag_is_530() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "dup".into(),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "dup".into(),
            ..Default::default()
        },
    );
    let (text, _, _) = c.connection_closed(530);
    assert_eq!(text, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'");
}

#[test]
fn unknown_exchange_type_is_503() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        ExchangeDeclare {
            exchange: "x".into(),
            kind: "x-bogus".into(),
            ..Default::default()
        },
    );
    let (text, class, method) = c.connection_closed(503);
    assert_eq!(text, "COMMAND_INVALID - unknown exchange type 'x-bogus'");
    assert_eq!((class, method), (40, 10));
}

// ---------------------------------------------------------------- channel errors (soft)

#[test]
fn passive_declare_of_missing_queue_is_404_and_the_connection_lives() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "missing".into(),
            passive: true,
            nowait: true,
            ..Default::default()
        },
    );
    let text = c.channel_closed(1, 404);
    assert_eq!(text, "NOT_FOUND - no queue 'missing' in vhost '/'");
    c.send(1, ChannelOpen::default());
    assert!(
        matches!(c.method().1, Method::ChannelOpenOk(_)),
        "channel ids are reusable after close-ok"
    );
}

#[test]
fn publish_to_missing_exchange_is_404() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(1, ConfirmSelect::default());
    c.method();
    c.publish(1, "nope", "k", b"x");
    let text = c.channel_closed(1, 404);
    assert_eq!(text, "NOT_FOUND - no exchange 'nope' in vhost '/'");
}

#[test]
fn inequivalent_redeclare_is_406_with_rabbitmq_text() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            durable: true,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            durable: false,
            ..Default::default()
        },
    );
    let text = c.channel_closed(1, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is 'true'"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    let args = |ttl: i64| FieldTable::new().with("x-message-ttl", FieldValue::I64(ttl));
    c.send(
        1,
        QueueDeclare {
            queue: "t".into(),
            arguments: args(1000),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        QueueDeclare {
            queue: "t".into(),
            arguments: args(2000),
            ..Default::default()
        },
    );
    let text = c.channel_closed(1, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 't' in vhost '/': received '2000' but current is '1000'"
    );
}

#[test]
fn exchange_type_mismatch_is_406() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        ExchangeDeclare {
            exchange: "x".into(),
            kind: "direct".into(),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        ExchangeDeclare {
            exchange: "x".into(),
            kind: "fanout".into(),
            ..Default::default()
        },
    );
    let text = c.channel_closed(1, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
    );
}

#[test]
fn reserved_names_are_403() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "amq.foo".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(
        1,
        ExchangeDeclare {
            exchange: "amq.foo".into(),
            kind: "direct".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    // Redeclaring amq.direct as it is is fine; deleting it is not.
    c.send(
        1,
        ExchangeDeclare {
            exchange: "amq.direct".into(),
            kind: "direct".into(),
            durable: true,
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ExchangeDeclareOk(_)));
    c.send(
        1,
        ExchangeDelete {
            exchange: "amq.direct".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
    );
}

#[test]
fn default_exchange_cannot_be_bound() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.send(
        1,
        QueueBind {
            queue: "q".into(),
            exchange: "".into(),
            routing_key: "q".into(),
            ..Default::default()
        },
    );
    c.channel_closed(1, 403);
}

#[test]
fn exclusive_queue_is_locked_for_other_connections() {
    let b = broker();
    let mut owner = Client::open(&b);
    owner.send(
        1,
        QueueDeclare {
            queue: "ex".into(),
            exclusive: true,
            ..Default::default()
        },
    );
    owner.method();
    let ops: Vec<Method> = vec![
        QueueDeclare {
            queue: "ex".into(),
            ..Default::default()
        }
        .into(),
        QueueDeclare {
            queue: "ex".into(),
            passive: true,
            ..Default::default()
        }
        .into(),
        BasicConsume {
            queue: "ex".into(),
            ..Default::default()
        }
        .into(),
        BasicGet {
            queue: "ex".into(),
            ..Default::default()
        }
        .into(),
        QueuePurge {
            queue: "ex".into(),
            ..Default::default()
        }
        .into(),
        QueueDelete {
            queue: "ex".into(),
            ..Default::default()
        }
        .into(),
        QueueBind {
            queue: "ex".into(),
            exchange: "amq.direct".into(),
            ..Default::default()
        }
        .into(),
    ];
    let mut other = Client::open(&b);
    for m in ops {
        let name = m.name();
        other.send(1, m);
        let text = other.channel_closed(1, 405);
        assert!(
            text.starts_with(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'ex'"
            ),
            "{name}"
        );
        other.send(1, ChannelOpen::default());
        other.method();
    }
    // Gone when the owner goes.
    owner.conn.on_disconnect();
    other.send(
        1,
        QueueDeclare {
            queue: "ex".into(),
            passive: true,
            ..Default::default()
        },
    );
    other.channel_closed(1, 404);
}

#[test]
fn unknown_delivery_tag_is_406_and_unacked_messages_are_requeued() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"m1");
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            ..Default::default()
        },
    );
    let tag = c.delivery_tag();
    c.send(
        1,
        BasicAck {
            delivery_tag: tag + 5,
            multiple: false,
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        format!("PRECONDITION_FAILED - unknown delivery tag {}", tag + 5)
    );
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, _, body) = c.content();
    let Method::BasicGetOk(g) = m else { panic!() };
    assert!(g.redelivered);
    assert_eq!(&body[..], b"m1");
}

#[test]
fn double_ack_is_406() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"m1");
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            ..Default::default()
        },
    );
    let tag = c.delivery_tag();
    c.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );
    c.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );
    c.channel_closed(1, 406);
}

#[test]
fn tx_and_confirm_do_not_mix() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(1, TxSelect);
    c.method();
    c.send(1, ConfirmSelect::default());
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(1, ConfirmSelect::default());
    c.method();
    c.send(1, TxSelect);
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(1, TxCommit);
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - channel is not transactional"
    );
}

#[test]
fn delete_if_empty_and_if_unused() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"x");
    c.send(
        1,
        QueueDelete {
            queue: "q".into(),
            if_empty: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    c.method();
    c.content();
    c.send(
        1,
        QueueDelete {
            queue: "q".into(),
            if_unused: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - queue 'q' in vhost '/' in use"
    );
    // Deleting what does not exist is fine.
    c.send(1, ChannelOpen::default());
    c.method();
    c.send(
        1,
        QueueDelete {
            queue: "never".into(),
            ..Default::default()
        },
    );
    let Method::QueueDeleteOk(ok) = c.method().1 else {
        panic!()
    };
    assert_eq!(ok.message_count, 0);
}

#[test]
fn quorum_queue_rules() {
    let b = broker();
    let mut c = Client::open(&b);
    let q = FieldTable::new().with("x-queue-type", FieldValue::LongStr("quorum".into()));
    c.send(
        1,
        QueueDeclare {
            queue: "qq".into(),
            durable: true,
            arguments: q.clone(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::QueueDeclareOk(_)));
    c.send(
        1,
        QueueDeclare {
            queue: "qq2".into(),
            durable: false,
            arguments: q.clone(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq2' in vhost '/'"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    let s = FieldTable::new().with("x-queue-type", FieldValue::LongStr("bogus".into()));
    c.send(
        1,
        QueueDeclare {
            queue: "b".into(),
            arguments: s,
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - unsupported queue type 'bogus'"
    );
}

#[test]
fn invalid_expiration_is_406() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    let props = BasicProperties {
        expiration: Some("abc".into()),
        ..Default::default()
    };
    c.publish_props(1, "", "q", b"x", props, false);
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
}

#[test]
fn internal_exchange_refuses_publishes() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        ExchangeDeclare {
            exchange: "int".into(),
            kind: "fanout".into(),
            internal: true,
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "int", "", b"x");
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - cannot publish to internal exchange 'int' in vhost '/'"
    );
}

// ---------------------------------------------------------------- messaging

#[test]
fn confirms_coalesce_and_returns_come_first() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.send(1, ConfirmSelect::default());
    c.method();
    // Three publishes in one read: one multiple ack.
    let mut buf = BytesMut::new();
    for _ in 0..3 {
        let m = Method::from(BasicPublish {
            routing_key: "q".into(),
            ..Default::default()
        });
        encode_content(&mut buf, 1, &m, &BasicProperties::default(), b"x", 131072);
    }
    c.send_bytes(&buf);
    let Method::BasicAck(ack) = c.method().1 else {
        panic!()
    };
    assert_eq!((ack.delivery_tag, ack.multiple), (3, true));
    // Unroutable mandatory: basic.return 312, then the ack.
    c.publish_props(1, "", "nowhere", b"lost", BasicProperties::default(), true);
    let (m, _, body) = c.content();
    let Method::BasicReturn(r) = m else {
        panic!("{m:?}")
    };
    assert_eq!(
        (r.reply_code, r.reply_text.to_string()),
        (312, "NO_ROUTE".to_string())
    );
    assert_eq!(&body[..], b"lost");
    let Method::BasicAck(ack) = c.method().1 else {
        panic!()
    };
    assert_eq!((ack.delivery_tag, ack.multiple), (4, false));
}

#[test]
fn prefetch_limits_unacked_deliveries() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    for i in 0..5 {
        c.publish(1, "", "q", format!("m{i}").as_bytes());
    }
    c.send(
        1,
        BasicQos {
            prefetch_count: 2,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicConsumeOk(_)));
    let t1 = c.delivery_tag();
    let _t2 = c.delivery_tag();
    c.nothing();
    c.send(
        1,
        BasicAck {
            delivery_tag: t1,
            multiple: false,
        },
    );
    c.delivery_tag();
    c.nothing();
}

#[test]
fn global_qos_limits_the_channel() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "a");
    c.declare(1, "b");
    for q in ["a", "b"] {
        for _ in 0..3 {
            c.publish(1, "", q, b"x");
        }
    }
    c.send(
        1,
        BasicQos {
            prefetch_count: 2,
            global: true,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "a".into(),
            consumer_tag: "ca".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicConsumeOk(_)));
    let t1 = c.delivery_tag();
    c.delivery_tag();
    // The channel's window is full: the second queue's consumer gets nothing.
    c.send(
        1,
        BasicConsume {
            queue: "b".into(),
            consumer_tag: "cb".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicConsumeOk(_)));
    c.nothing();
    c.send(
        1,
        BasicAck {
            delivery_tag: t1,
            multiple: false,
        },
    );
    c.delivery_tag();
    c.nothing();
}

#[test]
fn nack_requeue_keeps_the_place_and_sets_redelivered() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    for i in 0..3 {
        c.publish(1, "", "q", format!("m{i}").as_bytes());
    }
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            ..Default::default()
        },
    );
    let t = c.delivery_tag();
    c.send(
        1,
        BasicNack {
            delivery_tag: t,
            multiple: false,
            requeue: true,
        },
    );
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, _, body) = c.content();
    let Method::BasicGetOk(g) = m else { panic!() };
    assert!(g.redelivered);
    assert_eq!(&body[..], b"m0", "requeued message goes back to the head");
    assert_eq!(g.message_count, 2);
}

#[test]
fn round_robin_between_consumers() {
    let b = broker();
    let mut a = Client::open(&b);
    let mut z = Client::open(&b);
    a.declare(1, "q");
    for c in [&mut a, &mut z] {
        c.send(
            1,
            BasicConsume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                no_ack: true,
                ..Default::default()
            },
        );
        c.method();
    }
    for i in 0..4 {
        a.publish(1, "", "q", format!("m{i}").as_bytes());
    }
    let bodies = |c: &mut Client| (0..2).map(|_| c.content().2).collect::<Vec<_>>();
    assert_eq!(
        bodies(&mut a),
        vec![Bytes::from_static(b"m0"), Bytes::from_static(b"m2")]
    );
    assert_eq!(
        bodies(&mut z),
        vec![Bytes::from_static(b"m1"), Bytes::from_static(b"m3")]
    );
}

#[test]
fn queue_delete_cancels_consumers() {
    let b = broker();
    let mut c = Client::open(&b);
    let mut admin = Client::open(&b);
    c.declare(1, "q");
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    c.method();
    admin.send(
        1,
        QueueDelete {
            queue: "q".into(),
            ..Default::default()
        },
    );
    admin.method();
    let Method::BasicCancel(cancel) = c.method().1 else {
        panic!()
    };
    assert_eq!(cancel.consumer_tag.to_string(), "c");
}

#[test]
fn auto_delete_queue_goes_with_its_last_consumer() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "ad".into(),
            auto_delete: true,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "ad".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicCancel {
            consumer_tag: "c".into(),
            nowait: false,
        },
    );
    assert!(matches!(c.method().1, Method::BasicCancelOk(_)));
    c.send(
        1,
        QueueDeclare {
            queue: "ad".into(),
            passive: true,
            ..Default::default()
        },
    );
    c.channel_closed(1, 404);
}

#[test]
fn tx_commit_and_rollback() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.send(1, TxSelect);
    c.method();
    c.publish(1, "", "q", b"rolled back");
    c.send(1, TxRollback);
    assert!(matches!(c.method().1, Method::TxRollbackOk(_)));
    c.publish(1, "", "q", b"committed");
    c.publish_props(1, "", "nowhere", b"r", BasicProperties::default(), true);
    c.nothing();
    c.send(1, TxCommit);
    let (m, _, _) = c.content();
    assert!(
        matches!(m, Method::BasicReturn(_)),
        "return before commit-ok"
    );
    assert!(matches!(c.method().1, Method::TxCommitOk(_)));
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, _, body) = c.content();
    let Method::BasicGetOk(g) = m else { panic!() };
    assert_eq!((&body[..], g.message_count), (&b"committed"[..], 0));
}

#[test]
fn topic_and_headers_routing() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "t");
    c.send(
        1,
        QueueBind {
            queue: "t".into(),
            exchange: "amq.topic".into(),
            routing_key: "a.*.c.#".into(),
            ..Default::default()
        },
    );
    c.method();
    for (key, routed) in [
        ("a.b.c", true),
        ("a.b.c.d.e", true),
        ("a..c", true),
        ("a.c", false),
        ("a.b.b.c", false),
    ] {
        c.publish(1, "amq.topic", key, key.as_bytes());
        c.send(
            1,
            BasicGet {
                queue: "t".into(),
                no_ack: true,
                ..Default::default()
            },
        );
        let (_, m) = c.method();
        assert_eq!(matches!(m, Method::BasicGetOk(_)), routed, "{key}");
        if routed {
            c.next();
            c.next();
        }
    }
    c.declare(1, "h");
    let args = FieldTable::new()
        .with("x-match", FieldValue::LongStr("any".into()))
        .with("color", FieldValue::LongStr("red".into()))
        .with("size", FieldValue::I32(5));
    c.send(
        1,
        QueueBind {
            queue: "h".into(),
            exchange: "amq.headers".into(),
            arguments: args,
            ..Default::default()
        },
    );
    c.method();
    let hdr = |k: &str, v: FieldValue| BasicProperties {
        headers: Some(FieldTable::new().with(k, v)),
        ..Default::default()
    };
    c.publish_props(
        1,
        "amq.headers",
        "",
        b"1",
        hdr("color", FieldValue::LongStr("red".into())),
        false,
    );
    c.publish_props(
        1,
        "amq.headers",
        "",
        b"2",
        hdr("color", FieldValue::LongStr("blue".into())),
        false,
    );
    c.send(
        1,
        QueueDeclare {
            queue: "h".into(),
            passive: true,
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(ok) = c.method().1 else {
        panic!()
    };
    assert_eq!(ok.message_count, 1);
    let bad = FieldTable::new().with("x-match", FieldValue::LongStr("bogus".into()));
    c.send(
        1,
        QueueBind {
            queue: "h".into(),
            exchange: "amq.headers".into(),
            arguments: bad,
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 406),
        "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; expected all, any, all-with-x, or any-with-x"
    );
}

#[test]
fn exchange_to_exchange_and_fanout() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        ExchangeDeclare {
            exchange: "src".into(),
            kind: "fanout".into(),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        ExchangeBind {
            destination: "amq.fanout".into(),
            source: "src".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ExchangeBindOk(_)));
    for q in ["f1", "f2"] {
        c.declare(1, q);
        c.send(
            1,
            QueueBind {
                queue: q.into(),
                exchange: "amq.fanout".into(),
                ..Default::default()
            },
        );
        c.method();
    }
    c.publish(1, "src", "", b"x");
    for q in ["f1", "f2"] {
        c.send(
            1,
            QueueDeclare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            },
        );
        let Method::QueueDeclareOk(ok) = c.method().1 else {
            panic!()
        };
        assert_eq!(ok.message_count, 1, "{q}");
    }
    c.send(
        1,
        ExchangeUnbind {
            destination: "amq.fanout".into(),
            source: "src".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ExchangeUnbindOk(_)));
}

#[test]
fn server_named_queues_and_last_queue_shortcut() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(ok) = c.method().1 else {
        panic!()
    };
    let name = ok.queue.to_string();
    assert!(
        name.starts_with("amq.gen-") && name.len() == 8 + 22,
        "{name}"
    );
    c.send(
        1,
        QueueBind {
            queue: "".into(),
            exchange: "amq.direct".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::QueueBindOk(_)));
    c.send(2, ChannelOpen::default());
    c.method();
    c.send(
        2,
        QueueBind {
            queue: "".into(),
            exchange: "amq.direct".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(2, 404),
        "NOT_FOUND - no previously declared queue"
    );
}

#[test]
fn channel_close_requeues_unacked_in_order() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    for i in 0..3 {
        c.publish(1, "", "q", format!("m{i}").as_bytes());
    }
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    c.method();
    for _ in 0..3 {
        c.delivery_tag();
    }
    c.send(
        1,
        ChannelClose {
            reply_code: 200,
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ChannelCloseOk(_)));
    c.send(2, ChannelOpen::default());
    c.method();
    for i in 0..3 {
        c.send(
            2,
            BasicGet {
                queue: "q".into(),
                no_ack: true,
                ..Default::default()
            },
        );
        let (m, _, body) = c.content();
        let Method::BasicGetOk(g) = m else { panic!() };
        assert!(g.redelivered);
        assert_eq!(body, Bytes::from(format!("m{i}")));
    }
}

#[test]
fn large_bodies_are_split_by_frame_max_and_reassembled() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    c.publish(1, "", "q", &body);
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (_, _, got) = c.content();
    assert_eq!(&got[..], &body[..]);
}

#[test]
fn consumer_priorities() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    let prio = |p: i32| FieldTable::new().with("x-priority", FieldValue::I32(p));
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "low".into(),
            no_ack: true,
            arguments: prio(1),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "high".into(),
            no_ack: true,
            arguments: prio(10),
            ..Default::default()
        },
    );
    c.method();
    for _ in 0..3 {
        c.publish(1, "", "q", b"x");
        let (m, _, _) = c.content();
        let Method::BasicDeliver(d) = m else { panic!() };
        assert_eq!(d.consumer_tag.to_string(), "high");
    }
}

// ---------------------------------------------------------------- queue arguments

fn args(entries: &[(&str, FieldValue)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in entries {
        t.insert(*k, v.clone());
    }
    t
}

fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(v.into())
}

fn count(c: &mut Client, q: &str) -> u32 {
    c.send(
        1,
        QueueDeclare {
            queue: q.into(),
            passive: true,
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(ok) = c.method().1 else {
        panic!()
    };
    ok.message_count
}

#[test]
fn message_ttl_expires_into_the_dead_letter_exchange() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "dlq");
    c.send(
        1,
        QueueBind {
            queue: "dlq".into(),
            exchange: "amq.direct".into(),
            routing_key: "dead".into(),
            ..Default::default()
        },
    );
    c.method();
    let a = args(&[
        ("x-message-ttl", FieldValue::I32(1000)),
        ("x-dead-letter-exchange", s("amq.direct")),
        ("x-dead-letter-routing-key", s("dead")),
    ]);
    c.send(
        1,
        QueueDeclare {
            queue: "delay".into(),
            arguments: a,
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "", "delay", b"later");
    b.tick(c.now + Duration::from_millis(500), 1_700_000_000);
    assert_eq!(count(&mut c, "delay"), 1);
    b.tick(c.now + Duration::from_millis(1500), 1_700_000_000);
    assert_eq!(count(&mut c, "delay"), 0);
    c.send(
        1,
        BasicGet {
            queue: "dlq".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, props, body) = c.content();
    let Method::BasicGetOk(g) = m else { panic!() };
    assert_eq!(
        (&body[..], g.routing_key.to_string()),
        (&b"later"[..], "dead".to_string())
    );
    let h = props.headers.unwrap();
    assert_eq!(h.get("x-first-death-reason"), Some(&s("expired")));
    assert_eq!(h.get("x-first-death-queue"), Some(&s("delay")));
    let Some(FieldValue::Array(deaths)) = h.get("x-death") else {
        panic!()
    };
    let FieldValue::Table(d) = &deaths[0] else {
        panic!()
    };
    assert_eq!(d.get("count"), Some(&FieldValue::I64(1)));
    assert_eq!(d.get("reason"), Some(&s("expired")));
    assert_eq!(d.get("time"), Some(&FieldValue::Timestamp(1_700_000_000)));
}

#[test]
fn per_message_expiration_and_zero_ttl() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    let props = BasicProperties {
        expiration: Some("0".into()),
        ..Default::default()
    };
    c.publish_props(1, "", "q", b"x", props, false);
    b.tick(c.now + Duration::from_millis(1), 0);
    c.send(
        1,
        BasicGet {
            queue: "q".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicGetEmpty(_)));
}

#[test]
fn reject_without_requeue_dead_letters_with_x_death() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "dlq");
    c.send(
        1,
        QueueBind {
            queue: "dlq".into(),
            exchange: "amq.fanout".into(),
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        QueueDeclare {
            queue: "work".into(),
            arguments: args(&[("x-dead-letter-exchange", s("amq.fanout"))]),
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "", "work", b"bad");
    c.reject_one("work");
    c.send(
        1,
        BasicGet {
            queue: "dlq".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (_, props, _) = c.content();
    let h = props.headers.unwrap();
    assert_eq!(h.get("x-first-death-reason"), Some(&s("rejected")));
    // Acked messages are not dead-lettered.
    c.publish(1, "", "work", b"good");
    c.send(
        1,
        BasicGet {
            queue: "work".into(),
            ..Default::default()
        },
    );
    let t = c.delivery_tag();
    c.send(
        1,
        BasicAck {
            delivery_tag: t,
            multiple: false,
        },
    );
    assert_eq!(count(&mut c, "dlq"), 0);
}

#[test]
fn max_length_drops_the_head_or_rejects_publishes() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "cap".into(),
            arguments: args(&[("x-max-length", FieldValue::I32(2))]),
            ..Default::default()
        },
    );
    c.method();
    for i in 0..3 {
        c.publish(1, "", "cap", format!("m{i}").as_bytes());
    }
    assert_eq!(count(&mut c, "cap"), 2);
    c.send(
        1,
        BasicGet {
            queue: "cap".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    assert_eq!(&c.content().2[..], b"m1", "the oldest was dropped");

    let a = args(&[
        ("x-max-length", FieldValue::I32(1)),
        ("x-overflow", s("reject-publish")),
    ]);
    c.send(
        1,
        QueueDeclare {
            queue: "rp".into(),
            arguments: a,
            ..Default::default()
        },
    );
    c.method();
    c.send(1, ConfirmSelect::default());
    c.method();
    c.publish(1, "", "rp", b"1");
    let Method::BasicAck(ack) = c.method().1 else {
        panic!()
    };
    assert_eq!(ack.delivery_tag, 1);
    c.publish_props(1, "", "rp", b"2", BasicProperties::default(), true);
    let Method::BasicNack(nack) = c.method().1 else {
        panic!("a refused publish is nacked, not returned")
    };
    assert_eq!(nack.delivery_tag, 2);
    assert_eq!(count(&mut c, "rp"), 1);
}

#[test]
fn priority_queue_delivers_high_first() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "p".into(),
            arguments: args(&[("x-max-priority", FieldValue::I32(10))]),
            ..Default::default()
        },
    );
    c.method();
    for p in [1u8, 9, 5] {
        let props = BasicProperties {
            priority: Some(p),
            ..Default::default()
        };
        c.publish_props(1, "", "p", &[p], props, false);
    }
    for expected in [9u8, 5, 1] {
        c.send(
            1,
            BasicGet {
                queue: "p".into(),
                no_ack: true,
                ..Default::default()
            },
        );
        assert_eq!(c.content().2[0], expected);
    }
    c.send(
        1,
        QueueDeclare {
            queue: "bad".into(),
            arguments: args(&[("x-max-priority", FieldValue::I32(300))]),
            ..Default::default()
        },
    );
    c.channel_closed(1, 406);
}

#[test]
fn single_active_consumer_takes_everything_until_it_leaves() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "sac".into(),
            arguments: args(&[("x-single-active-consumer", FieldValue::Bool(true))]),
            ..Default::default()
        },
    );
    c.method();
    for tag in ["first", "second"] {
        c.send(
            1,
            BasicConsume {
                queue: "sac".into(),
                consumer_tag: tag.into(),
                no_ack: true,
                ..Default::default()
            },
        );
        c.method();
    }
    for _ in 0..2 {
        c.publish(1, "", "sac", b"x");
        let Method::BasicDeliver(d) = c.content().0 else {
            panic!()
        };
        assert_eq!(d.consumer_tag.to_string(), "first");
    }
    c.send(
        1,
        BasicCancel {
            consumer_tag: "first".into(),
            nowait: false,
        },
    );
    c.method();
    c.publish(1, "", "sac", b"x");
    let Method::BasicDeliver(d) = c.content().0 else {
        panic!()
    };
    assert_eq!(d.consumer_tag.to_string(), "second");
}

#[test]
fn unused_queue_expires() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "tmp".into(),
            arguments: args(&[("x-expires", FieldValue::I32(500))]),
            ..Default::default()
        },
    );
    c.method();
    b.tick(c.now + Duration::from_millis(600), 0);
    c.send(
        1,
        QueueDeclare {
            queue: "tmp".into(),
            passive: true,
            ..Default::default()
        },
    );
    c.channel_closed(1, 404);
}

#[test]
fn invalid_queue_arguments_are_406() {
    let cases = [
        (
            args(&[("x-message-ttl", s("abc"))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {unacceptable_type,longstr}",
        ),
        (
            args(&[("x-message-ttl", FieldValue::I32(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            args(&[("x-expires", FieldValue::I32(0))]),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}",
        ),
        (
            args(&[("x-dead-letter-routing-key", s("k"))]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined",
        ),
    ];
    for (a, expected) in cases {
        let b = broker();
        let mut c = Client::open(&b);
        c.send(
            1,
            QueueDeclare {
                queue: "q".into(),
                arguments: a,
                ..Default::default()
            },
        );
        assert_eq!(c.channel_closed(1, 406), expected);
    }
}

// ---------------------------------------------------------------- permissions

#[test]
fn permissions_follow_rabbitmq_rules() {
    let perms = warren_core::access::PermissionSpec {
        user: "probe".into(),
        vhost: "/".into(),
        configure: "^own.*".into(),
        write: "^amq\\.topic$|^own.*".into(),
        read: ".*".into(),
    };
    let mut config = BrokerConfig::default();
    config.users.push(warren_core::User {
        name: "probe".into(),
        password: warren_core::password::Password::Plain("pw".into()),
        tags: Vec::new(),
        permissions: vec![perms],
        loopback_only: false,
    });
    let b = Broker::new(config);
    let mut c = Client::connect(&b);
    c.login_and_open("\0probe\0pw", 10, 0, "/");
    c.method();
    let reopen = |c: &mut Client| {
        c.send(1, ChannelOpen::default());
        c.method();
    };
    reopen(&mut c);
    c.declare(1, "own.q");
    c.send(
        1,
        QueueDeclare {
            queue: "other".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to queue 'other' in vhost '/' refused for user 'probe'"
    );
    reopen(&mut c);
    c.send(
        1,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    );
    let text = c.channel_closed(1, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-"),
        "{text}"
    );
    reopen(&mut c);
    c.publish(1, "amq.direct", "k", b"x");
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user 'probe'"
    );
    reopen(&mut c);
    c.publish(1, "", "own.q", b"x");
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'probe'"
    );
    reopen(&mut c);
    c.send(
        1,
        QueueBind {
            queue: "own.q".into(),
            exchange: "amq.direct".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::QueueBindOk(_)));
    c.send(
        1,
        ExchangeDeclare {
            exchange: "amq.direct".into(),
            kind: "direct".into(),
            passive: true,
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ExchangeDeclareOk(_)));
    c.publish(1, "amq.topic", "x", b"allowed");
    c.nothing();
}

#[test]
fn quorum_queues_refuse_global_qos_consumers() {
    let b = broker();
    let mut c = Client::open(&b);
    let q = FieldTable::new().with("x-queue-type", FieldValue::LongStr("quorum".into()));
    c.send(
        1,
        QueueDeclare {
            queue: "qq".into(),
            durable: true,
            arguments: q,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicQos {
            prefetch_count: 10,
            global: true,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "qq".into(),
            ..Default::default()
        },
    );
    let (text, _, _) = c.connection_closed(540);
    assert_eq!(
        text,
        "NOT_IMPLEMENTED - queue 'qq' in vhost '/' does not support global qos"
    );
}

#[test]
fn memory_alarm_blocks_publishers_and_clears() {
    let b = Broker::new(BrokerConfig {
        limits: warren_core::Limits {
            memory_limit: 1000,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut publisher = Client::connect(&b);
    publisher.handshake_caps(FieldTable::new().with("connection.blocked", FieldValue::Bool(true)));
    publisher.send(1, ChannelOpen::default());
    publisher.method();
    let mut other = Client::open(&b);
    publisher.declare(1, "q");
    publisher.publish(1, "", "q", &[0u8; 2000]);
    assert!(publisher.conn.wants_input());
    b.tick(publisher.now, 0);
    assert!(b.is_blocked());
    let (_, m) = publisher.method();
    let Method::ConnectionBlocked(blocked) = m else {
        panic!("{m:?}")
    };
    assert_eq!(blocked.reason.to_string(), "low on memory");
    assert!(
        !publisher.conn.wants_input(),
        "a blocked publisher's socket is not read"
    );
    // A connection that never published is not blocked and gets no notice.
    assert!(other.conn.wants_input());
    other.nothing();
    other.send(
        1,
        QueuePurge {
            queue: "q".into(),
            ..Default::default()
        },
    );
    other.method();
    b.tick(publisher.now, 0);
    assert!(!b.is_blocked());
    assert!(matches!(
        publisher.method().1,
        Method::ConnectionUnblocked(_)
    ));
    assert!(publisher.conn.wants_input());
}

#[test]
fn alternate_exchange_takes_unroutable_messages_and_cycles_terminate() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "ae-q");
    c.send(
        1,
        QueueBind {
            queue: "ae-q".into(),
            exchange: "amq.fanout".into(),
            ..Default::default()
        },
    );
    c.method();
    let args = FieldTable::new().with(
        "alternate-exchange",
        FieldValue::LongStr("amq.fanout".into()),
    );
    c.send(
        1,
        ExchangeDeclare {
            exchange: "main".into(),
            kind: "direct".into(),
            arguments: args,
            ..Default::default()
        },
    );
    c.method();
    c.send(1, ConfirmSelect::default());
    c.method();
    // Mandatory but caught by the alternate exchange: no basic.return.
    c.publish_props(1, "main", "nowhere", b"x", BasicProperties::default(), true);
    assert!(matches!(c.method().1, Method::BasicAck(_)));
    assert_eq!(count(&mut c, "ae-q"), 1);
    // A cycle of exchange-to-exchange bindings delivers once and ends.
    for (d, s) in [("e1", "e2"), ("e2", "e1")] {
        for x in [d, s] {
            c.send(
                1,
                ExchangeDeclare {
                    exchange: x.into(),
                    kind: "fanout".into(),
                    ..Default::default()
                },
            );
            c.method();
        }
        c.send(
            1,
            ExchangeBind {
                destination: d.into(),
                source: s.into(),
                ..Default::default()
            },
        );
        c.method();
    }
    c.declare(1, "cyc");
    c.send(
        1,
        QueueBind {
            queue: "cyc".into(),
            exchange: "e2".into(),
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "e1", "", b"y");
    c.method();
    assert_eq!(count(&mut c, "cyc"), 1);
}

#[test]
fn direct_reply_to_round_trip() {
    let b = broker();
    let mut client = Client::open(&b);
    let mut server = Client::open(&b);
    server.declare(1, "rpc");
    // Ack-mode reply consumers and replies without a consumer are refused.
    client.send(
        1,
        BasicConsume {
            queue: "amq.rabbitmq.reply-to".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        client.channel_closed(1, 406),
        "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    );
    client.send(1, ChannelOpen::default());
    client.method();
    let props = BasicProperties {
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        ..Default::default()
    };
    client.publish_props(1, "", "rpc", b"req", props.clone(), false);
    assert_eq!(
        client.channel_closed(1, 406),
        "PRECONDITION_FAILED - fast reply consumer does not exist"
    );
    client.send(1, ChannelOpen::default());
    client.method();
    client.send(
        1,
        BasicConsume {
            queue: "amq.rabbitmq.reply-to".into(),
            consumer_tag: "r".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    assert!(matches!(client.method().1, Method::BasicConsumeOk(_)));
    client.publish_props(1, "", "rpc", b"req", props, false);
    server.send(
        1,
        BasicGet {
            queue: "rpc".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (_, p, _) = server.content();
    let reply_to = p.reply_to.unwrap().to_string();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
    server.publish(1, "", &reply_to, b"answer");
    let (m, _, body) = client.content();
    let Method::BasicDeliver(d) = m else { panic!() };
    assert_eq!(
        (d.consumer_tag.to_string(), &body[..]),
        ("r".to_string(), &b"answer"[..])
    );
    // After the client's channel closes the address is gone: unroutable.
    client.send(1, ChannelClose::default());
    client.method();
    server.publish_props(1, "", &reply_to, b"late", BasicProperties::default(), true);
    assert!(matches!(server.content().0, Method::BasicReturn(_)));
}

#[test]
fn no_ack_consumers_take_a_bounded_window_until_written() {
    let b = broker();
    let mut publisher = Client::open(&b);
    publisher.declare(1, "q");
    for _ in 0..1500 {
        publisher.publish(1, "", "q", b"x");
    }
    let queue = b.vhost("/").unwrap().queue(b"q").unwrap();
    let mut consumer = Client::open(&b);
    // Consume without letting the connection write anything out yet.
    let mut buf = BytesMut::new();
    let consume = BasicConsume {
        queue: "q".into(),
        consumer_tag: "c".into(),
        no_ack: true,
        ..Default::default()
    };
    encode_method(&mut buf, 1, &Method::from(consume));
    consumer.conn.handle_input(&mut buf, consumer.now);
    assert_eq!(
        queue.message_count(),
        500,
        "at most NO_ACK_WINDOW messages leave the queue unwritten"
    );
    consumer.collect();
    consumer.collect();
    assert_eq!(queue.message_count(), 0);
    let deliveries = consumer
        .inbox
        .iter()
        .filter(|f| {
            matches!(
                f,
                Frame::Method {
                    method: Method::BasicDeliver(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(deliveries, 1500);
}

#[test]
fn congested_queue_holds_its_publisher_back_until_it_drains() {
    let b = broker();
    let mut consumer = Client::open(&b);
    consumer.declare(1, "q");
    consumer.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let mut publisher = Client::open(&b);
    let mut input = BytesMut::new();
    for _ in 0..15_000 {
        let m = Method::from(BasicPublish {
            routing_key: "q".into(),
            ..Default::default()
        });
        encode_content(&mut input, 1, &m, &BasicProperties::default(), b"x", 131072);
    }
    publisher.conn.handle_input(&mut input, publisher.now);
    let queue = b.vhost("/").unwrap().queue(b"q").unwrap();
    assert!(!publisher.conn.wants_input(), "the publisher is held back");
    assert!(!input.is_empty(), "the rest of its input waits unread");
    assert_eq!(
        queue.message_count() as usize,
        warren_core::queue::FLOW_HIGH
    );
    // The consumer drains; below the low mark the publisher goes on.
    for _ in 0..20 {
        consumer.collect();
        consumer.inbox.clear();
        if publisher.conn.wants_input() {
            break;
        }
    }
    publisher.conn.handle_events(publisher.now);
    assert!(publisher.conn.wants_input());
    // A backlog with nobody taking from it holds nobody back.
    let mut lone = Client::open(&b);
    lone.declare(1, "backlog");
    let mut input = BytesMut::new();
    for _ in 0..12_000 {
        let m = Method::from(BasicPublish {
            routing_key: "backlog".into(),
            ..Default::default()
        });
        encode_content(&mut input, 1, &m, &BasicProperties::default(), b"x", 131072);
    }
    lone.conn.handle_input(&mut input, lone.now);
    assert!(lone.conn.wants_input() && input.is_empty());
}

// ------------------------------------------------------------ route reuse

impl Client {
    /// Sends a method and returns the reply, which must not be a close.
    fn call(&mut self, ch: u16, m: impl Into<Method>) -> Method {
        self.send(ch, m);
        let reply = self.method().1;
        assert!(
            !matches!(reply, Method::ChannelClose(_) | Method::ConnectionClose(_)),
            "{reply:?}"
        );
        reply
    }

    /// The queue's message count, by passive declare.
    fn count(&mut self, ch: u16, q: &str) -> u32 {
        self.send(
            ch,
            QueueDeclare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            },
        );
        match self.method().1 {
            Method::QueueDeclareOk(ok) => ok.message_count,
            m => panic!("expected declare-ok, got {m:?}"),
        }
    }

    /// Publishes mandatory; returns whether the broker returned it.
    fn publish_returned(&mut self, exchange: &str, key: &str, headers: Option<FieldTable>) -> bool {
        let props = BasicProperties {
            headers,
            ..Default::default()
        };
        self.publish_props(1, exchange, key, b"m", props, true);
        self.collect();
        match self.inbox.front() {
            None => false,
            Some(Frame::Method {
                method: Method::BasicReturn(_),
                ..
            }) => {
                self.content();
                true
            }
            Some(f) => panic!("expected a return or nothing, got {f:?}"),
        }
    }
}

/// A channel reuses its last route while nothing changed; every change
/// of queues, exchanges or bindings in between must be seen by the very
/// next publish.
#[test]
fn publishes_see_every_topology_change_at_once() {
    let b = broker();
    let mut c = Client::open(&b);
    // Default exchange: no queue yet, then the queue.
    assert!(c.publish_returned("", "late", None));
    c.declare(1, "late");
    assert!(!c.publish_returned("", "late", None));
    assert_eq!(c.count(1, "late"), 1);
    // A direct exchange: bound, unbound, bound again.
    c.call(
        1,
        ExchangeDeclare {
            exchange: "d".into(),
            kind: "direct".into(),
            ..Default::default()
        },
    );
    assert!(c.publish_returned("d", "k", None));
    let bind = QueueBind {
        queue: "late".into(),
        exchange: "d".into(),
        routing_key: "k".into(),
        ..Default::default()
    };
    c.call(1, bind.clone());
    assert!(!c.publish_returned("d", "k", None));
    assert_eq!(c.count(1, "late"), 2);
    c.call(
        1,
        QueueUnbind {
            queue: "late".into(),
            exchange: "d".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    );
    assert!(c.publish_returned("d", "k", None));
    // A binding made by another connection counts too.
    let mut other = Client::open(&b);
    other.call(1, bind);
    assert!(!c.publish_returned("d", "k", None));
    assert_eq!(c.count(1, "late"), 3);
    // The queue deleted and declared again under its name: the new one.
    other.call(
        1,
        QueueDelete {
            queue: "late".into(),
            ..Default::default()
        },
    );
    assert!(c.publish_returned("d", "k", None));
    other.declare(1, "late");
    assert!(!c.publish_returned("", "late", None));
    assert_eq!(c.count(1, "late"), 1);
    // The exchange deleted: 404 on the next publish.
    other.call(
        1,
        ExchangeDelete {
            exchange: "d".into(),
            ..Default::default()
        },
    );
    c.publish(1, "d", "k", b"m");
    c.channel_closed(1, 404);
}

/// Headers routing depends on each message's headers, never on the key
/// alone: the same key routes differently with different headers.
#[test]
fn headers_routes_are_not_reused_across_messages() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "h");
    let mut args = FieldTable::new();
    args.insert("x-match", FieldValue::LongStr("all".into()));
    args.insert("colour", FieldValue::LongStr("red".into()));
    c.call(
        1,
        QueueBind {
            queue: "h".into(),
            exchange: "amq.headers".into(),
            arguments: args,
            ..Default::default()
        },
    );
    let mut red = FieldTable::new();
    red.insert("colour", FieldValue::LongStr("red".into()));
    let mut blue = FieldTable::new();
    blue.insert("colour", FieldValue::LongStr("blue".into()));
    assert!(!c.publish_returned("amq.headers", "", Some(red.clone())));
    assert!(c.publish_returned("amq.headers", "", Some(blue)));
    assert!(!c.publish_returned("amq.headers", "", Some(red)));
    assert_eq!(c.count(1, "h"), 2);
}

/// A backlog past `COMPACT_FROM` keeps small bodies as copies of their
/// read buffer; what comes back out must be the same bytes, in order.
#[test]
fn a_long_backlog_of_small_messages_comes_back_intact() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    let n = warren_core::queue::COMPACT_FROM + 100;
    let mut buf = BytesMut::new();
    let m = Method::from(BasicPublish {
        routing_key: "q".into(),
        ..Default::default()
    });
    for i in 0..n {
        let body = format!("body-{i:08}");
        encode_content(
            &mut buf,
            1,
            &m,
            &BasicProperties::default(),
            body.as_bytes(),
            131072,
        );
    }
    c.send_bytes(&buf);
    assert_eq!(c.count(1, "q") as usize, n);
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicConsumeOk(_)));
    for i in 0..n {
        let (_, _, body) = c.content();
        assert_eq!(&body[..], format!("body-{i:08}").as_bytes());
    }
}

// ---------------------------------------------------------------- client fidelity (issue 11)

fn close(code: u16) -> ConnectionClose {
    ConnectionClose {
        reply_code: code,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    }
}

#[test]
fn after_close_ok_the_socket_stays_open_for_the_client_to_close() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "mine".into(),
            exclusive: true,
            ..Default::default()
        },
    );
    c.method();
    c.send(0, close(200));
    assert!(matches!(c.method().1, Method::ConnectionCloseOk(_)));
    assert!(!c.conn.is_closed(), "the broker closed the socket first");
    // Everything was released before close-ok, as RabbitMQ does: another
    // connection no longer finds the exclusive queue.
    let mut other = Client::open(&b);
    other.send(
        1,
        QueueDeclare {
            queue: "mine".into(),
            passive: true,
            ..Default::default()
        },
    );
    other.channel_closed(1, 404);
    // What the client still sends (publishes queued behind its close) is
    // read and dropped.
    c.publish(1, "", "mine", b"late");
    c.send(1, ChannelOpen::default());
    c.nothing();
    assert!(!c.conn.is_closed());
    // Bounded: without heartbeats, RabbitMQ's 30 s.
    assert_eq!(c.conn.poll_timeout(), Some(c.now + Duration::from_secs(30)));
    c.advance(Duration::from_secs(29));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_secs(1));
    assert!(c.conn.is_closed());
    c.nothing();
}

#[test]
fn lingering_is_bounded_by_the_heartbeat_when_shorter() {
    assert_eq!(
        warren_core::connection::linger_timeout(Duration::from_secs(5)),
        Duration::from_secs(5)
    );
    assert_eq!(
        warren_core::connection::linger_timeout(Duration::from_secs(60)),
        Duration::from_secs(30)
    );
    assert_eq!(
        warren_core::connection::linger_timeout(Duration::ZERO),
        Duration::from_secs(30)
    );
}

#[test]
fn close_during_the_handshake_also_lingers() {
    let b = broker();
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    assert!(matches!(c.method().1, Method::ConnectionStart(_)));
    c.send(0, close(200));
    assert!(matches!(c.method().1, Method::ConnectionCloseOk(_)));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_secs(30));
    assert!(c.conn.is_closed());
}

#[test]
fn unacked_messages_are_requeued_before_close_ok() {
    let b = broker();
    let mut admin = Client::open(&b);
    admin.declare(1, "q");
    admin.publish(1, "", "q", b"m");
    let mut c = Client::open(&b);
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    c.method();
    c.delivery_tag();
    c.send(0, close(200));
    assert!(matches!(c.method().1, Method::ConnectionCloseOk(_)));
    assert!(!c.conn.is_closed());
    // The socket is still open, yet the message is back and redelivered.
    admin.send(
        1,
        BasicGet {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, _, body) = admin.content();
    let Method::BasicGetOk(ok) = m else {
        panic!("expected get-ok, got {m:?}")
    };
    assert!(ok.redelivered);
    assert_eq!(&body[..], b"m");
}

#[test]
fn server_close_waits_for_close_ok_then_closes() {
    let b = broker();
    let mut c = Client::open(&b);
    c.conn.force_close("maintenance", c.now);
    c.collect();
    let (_, m) = c.method();
    assert!(matches!(m, Method::ConnectionClose(_)), "{m:?}");
    // Frames the client sent before it saw our close are dropped.
    c.publish(1, "", "q", b"x");
    c.nothing();
    assert!(!c.conn.is_closed());
    c.send(0, ConnectionCloseOk);
    assert!(c.conn.is_closed());
    c.nothing();
}

#[test]
fn server_close_without_close_ok_times_out() {
    let b = broker();
    let mut c = Client::open(&b);
    c.conn.force_close("maintenance", c.now);
    c.collect();
    c.method();
    c.advance(warren_core::connection::CLOSE_TIMEOUT - Duration::from_millis(1));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_millis(1));
    assert!(c.conn.is_closed());
}

#[test]
fn crossing_connection_closes_are_both_answered() {
    let b = broker();
    let mut c = Client::open(&b);
    c.conn.force_close("maintenance", c.now);
    // The client's close was on its way before ours arrived.
    c.send(0, close(200));
    let (_, m) = c.method();
    assert!(matches!(m, Method::ConnectionClose(_)), "{m:?}");
    let (_, m) = c.method();
    assert!(matches!(m, Method::ConnectionCloseOk(_)), "{m:?}");
    // We still wait for the close-ok to ours before closing.
    assert!(!c.conn.is_closed());
    c.send(0, ConnectionCloseOk);
    assert!(c.conn.is_closed());
}

/// Channel 1 publishes to a missing exchange and closes at once, so the
/// broker's channel.close (404) and the client's cross: the broker answers
/// the client's close, keeps the channel until the close-ok to its own, and
/// channel 2 never notices (amqp091-go's check of this sequence).
#[test]
fn crossing_channel_closes_leave_other_channels_alone() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(2, ChannelOpen::default());
    c.method();
    let mut buf = BytesMut::new();
    let publish = Method::from(BasicPublish {
        exchange: "missing".into(),
        routing_key: "k".into(),
        ..Default::default()
    });
    encode_content(
        &mut buf,
        1,
        &publish,
        &BasicProperties::default(),
        b"x",
        131072,
    );
    encode_method(&mut buf, 1, &Method::from(ChannelClose::default()));
    c.send_bytes(&buf);
    let (ch, m) = c.method();
    assert_eq!(ch, 1);
    assert!(
        matches!(m, Method::ChannelClose(ref x) if x.reply_code == 404),
        "{m:?}"
    );
    let (ch, m) = c.method();
    assert_eq!(ch, 1);
    assert!(matches!(m, Method::ChannelCloseOk(_)), "{m:?}");
    // The client answers our close; before the fix this close-ok, for a
    // channel the broker had already forgotten, closed the connection.
    c.send(1, ChannelCloseOk);
    c.nothing();
    assert!(c.conn.is_running());
    c.send(
        2,
        QueueDeclare {
            queue: "q2".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method(), (2, Method::QueueDeclareOk(_))));
    c.publish(2, "", "q2", b"still here");
    c.send(
        2,
        BasicGet {
            queue: "q2".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (m, _, body) = c.content();
    assert!(matches!(m, Method::BasicGetOk(_)), "{m:?}");
    assert_eq!(&body[..], b"still here");
    // And the channel number is free again.
    c.send(1, ChannelOpen::default());
    assert!(matches!(c.method(), (1, Method::ChannelOpenOk(_))));
}

#[test]
fn a_closing_channel_ignores_everything_but_close_and_close_ok() {
    let b = broker();
    let mut c = Client::open(&b);
    c.publish(1, "missing", "k", b"x");
    let (_, m) = c.method();
    assert!(matches!(m, Method::ChannelClose(_)), "{m:?}");
    c.declare_nowait_on_closing_channel();
    c.nothing();
    c.send(1, ChannelClose::default());
    assert!(matches!(c.method(), (1, Method::ChannelCloseOk(_))));
    c.send(1, ChannelClose::default());
    assert!(matches!(c.method(), (1, Method::ChannelCloseOk(_))));
    c.send(1, ChannelCloseOk);
    c.nothing();
    assert!(c.conn.is_running());
}

impl Client {
    fn declare_nowait_on_closing_channel(&mut self) {
        self.send(
            1,
            QueueDeclare {
                queue: "ignored".into(),
                ..Default::default()
            },
        );
        self.publish(1, "", "ignored", b"ignored");
    }
}

#[test]
fn consumers_hear_cancel_before_delete_ok() {
    // A consumer on another channel of the same connection, and one on
    // the deleting channel itself.
    for consumer_channel in [2, 1] {
        let b = broker();
        let mut c = Client::open(&b);
        c.send(2, ChannelOpen::default());
        c.method();
        c.declare(1, "q");
        c.send(
            consumer_channel,
            BasicConsume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                ..Default::default()
            },
        );
        c.method();
        c.send(
            1,
            QueueDelete {
                queue: "q".into(),
                ..Default::default()
            },
        );
        let (ch, m) = c.method();
        assert_eq!(ch, consumer_channel);
        let Method::BasicCancel(cancel) = m else {
            panic!("expected basic.cancel first, got {m:?}")
        };
        assert_eq!(cancel.consumer_tag, "c");
        let (ch, m) = c.method();
        assert_eq!(ch, 1);
        assert!(matches!(m, Method::QueueDeleteOk(_)), "{m:?}");
        c.nothing();
    }
}

#[test]
fn names_that_are_not_utf8_close_the_connection_with_501() {
    let b = broker();
    let mut c = Client::open(&b);
    let mut buf = BytesMut::new();
    encode_method(
        &mut buf,
        1,
        &Method::from(QueueDeclare {
            queue: ShortStr::new(Bytes::from_static(b"\xff\xfe")).unwrap(),
            ..Default::default()
        }),
    );
    c.send_bytes(&buf);
    let (text, class, method) = c.connection_closed(501);
    assert_eq!(text, "FRAME_ERROR - Malformed UTF-8 in shortstr");
    assert_eq!((class, method), (50, 10));
}

impl Client {
    /// basic.get with no-ack on channel 1: the message's properties and
    /// body, or `None` for get-empty.
    fn get(&mut self, q: &str) -> Option<(BasicProperties, Bytes)> {
        self.send(
            1,
            BasicGet {
                queue: q.into(),
                no_ack: true,
                ..Default::default()
            },
        );
        self.collect();
        if matches!(
            self.inbox.front(),
            Some(Frame::Method {
                method: Method::BasicGetEmpty(_),
                ..
            })
        ) {
            self.inbox.pop_front();
            return None;
        }
        let (m, props, body) = self.content();
        assert!(matches!(m, Method::BasicGetOk(_)), "{m:?}");
        Some((props, body))
    }

    fn bind(&mut self, q: &str, exchange: &str, key: &str) {
        self.send(
            1,
            QueueBind {
                queue: q.into(),
                exchange: exchange.into(),
                routing_key: key.into(),
                ..Default::default()
            },
        );
        assert!(matches!(self.method().1, Method::QueueBindOk(_)));
    }
}

fn keys(ks: &[&str]) -> FieldValue {
    FieldValue::Array(ks.iter().map(|k| s(k)).collect())
}

fn cc_bcc(cc: &[&str], bcc: &[&str]) -> BasicProperties {
    BasicProperties {
        headers: Some(args(&[("CC", keys(cc)), ("BCC", keys(bcc)), ("x", s("y"))])),
        ..Default::default()
    }
}

#[test]
fn cc_and_bcc_headers_add_routing_keys_and_bcc_is_removed() {
    let b = broker();
    let mut c = Client::open(&b);
    for q in ["a", "b", "c", "d"] {
        c.declare(1, q);
    }
    // The default exchange: each key names a queue; a repeated key and an
    // unknown one change nothing.
    c.publish_props(
        1,
        "",
        "a",
        b"m",
        cc_bcc(&["b", "a"], &["c", "nowhere"]),
        true,
    );
    for q in ["a", "b", "c"] {
        let (props, body) = c.get(q).unwrap_or_else(|| panic!("nothing in {q}"));
        assert_eq!(&body[..], b"m");
        let h = props.headers.unwrap();
        assert_eq!(h.get("CC"), Some(&keys(&["b", "a"])), "CC is kept");
        assert_eq!(h.get("BCC"), None, "BCC is removed");
        assert_eq!(h.get("x"), Some(&s("y")));
        assert!(c.get(q).is_none(), "{q} got two copies");
    }
    assert!(c.get("d").is_none());
    c.nothing();

    // A direct and a topic exchange route each key by their own rules.
    c.bind("a", "amq.direct", "ka");
    c.bind("b", "amq.direct", "kb");
    c.bind("d", "amq.topic", "*.d");
    c.publish_props(
        1,
        "amq.direct",
        "nomatch",
        b"direct",
        cc_bcc(&["ka"], &["kb"]),
        false,
    );
    assert_eq!(c.get("a").unwrap().1, &b"direct"[..]);
    assert_eq!(c.get("b").unwrap().1, &b"direct"[..]);
    c.publish_props(1, "amq.topic", "x", b"topic", cc_bcc(&[], &["to.d"]), false);
    assert_eq!(c.get("d").unwrap().1, &b"topic"[..]);
    assert!(c.get("a").is_none());
}

#[test]
fn a_cc_match_makes_a_mandatory_message_routable() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "b");
    c.send(1, ConfirmSelect::default());
    c.method();
    c.publish_props(1, "", "nowhere", b"m", cc_bcc(&["b"], &[]), true);
    // No basic.return: just the ack.
    assert!(matches!(c.method().1, Method::BasicAck(_)));
    assert!(c.get("b").is_some());
}

#[test]
fn routing_headers_of_the_wrong_type_are_406() {
    let b = broker();
    let mut c = Client::open(&b);
    let props = BasicProperties {
        headers: Some(args(&[("CC", s("b"))])),
        ..Default::default()
    };
    c.publish_props(1, "", "a", b"m", props, false);
    let text = c.channel_closed(1, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
    );
}

#[test]
fn dead_letters_keep_their_cc_keys_unless_a_dead_letter_key_is_set() {
    for dlrk in [None, Some("to-dl")] {
        let b = broker();
        let mut c = Client::open(&b);
        for q in ["side", "dl-w", "dl-cc", "to-dl"] {
            c.declare(1, q);
        }
        // Published to the default exchange by queue names; dead-lettered
        // through amq.direct, where the same keys lead elsewhere.
        c.bind("dl-w", "amq.direct", "work");
        c.bind("dl-cc", "amq.direct", "side");
        c.bind("to-dl", "amq.direct", "to-dl");
        let mut a = vec![("x-dead-letter-exchange", s("amq.direct"))];
        if let Some(k) = dlrk {
            a.push(("x-dead-letter-routing-key", s(k)));
        }
        c.send(
            1,
            QueueDeclare {
                queue: "work".into(),
                arguments: args(&a),
                ..Default::default()
            },
        );
        c.method();
        c.publish_props(1, "", "work", b"m", cc_bcc(&["side"], &[]), false);
        assert!(c.get("side").is_some());
        c.reject_one("work");
        match dlrk {
            None => {
                let (props, _) = c.get("dl-w").expect("dead-lettered by its key");
                assert!(c.get("dl-cc").is_some(), "and by its CC key");
                assert!(c.get("to-dl").is_none());
                let h = props.headers.unwrap();
                assert_eq!(h.get("CC"), Some(&keys(&["side"])));
                let Some(FieldValue::Array(deaths)) = h.get("x-death") else {
                    panic!("no x-death in {h:?}")
                };
                let FieldValue::Table(death) = &deaths[0] else {
                    panic!()
                };
                assert_eq!(death.get("routing-keys"), Some(&keys(&["work", "side"])));
            }
            Some(_) => {
                let (props, _) = c.get("to-dl").expect("dead-lettered by the queue's key");
                assert!(c.get("dl-w").is_none());
                assert!(c.get("dl-cc").is_none());
                assert_eq!(props.headers.unwrap().get("CC"), None, "CC is removed");
            }
        }
    }
}

#[test]
fn operators_can_set_the_server_properties() {
    let b = Broker::new(BrokerConfig {
        server_properties: vec![
            ("product".into(), s("RabbitMQ")),
            ("region".into(), s("eu-1")),
        ],
        ..BrokerConfig::default()
    });
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    let Method::ConnectionStart(start) = c.method().1 else {
        panic!("expected connection.start")
    };
    let p = &start.server_properties;
    assert_eq!(p.get("product"), Some(&s("RabbitMQ")));
    assert_eq!(p.get("region"), Some(&s("eu-1")));
    assert_eq!(p.get("platform"), Some(&s("Rust")));
    assert!(matches!(p.get("capabilities"), Some(FieldValue::Table(_))));
    // Replaced in place, not added twice.
    assert_eq!(p.iter().filter(|(k, _)| k == "product").count(), 1);
    // And by default the broker says what it is.
    let mut d = Client::connect(&broker());
    d.send_bytes(PROTOCOL_HEADER);
    let Method::ConnectionStart(start) = d.method().1 else {
        panic!("expected connection.start")
    };
    assert_eq!(start.server_properties.get("product"), Some(&s("Warren")));
}

#[test]
fn the_close_reason_says_who_closed_and_why() {
    use warren_core::{CloseReason, Initiator};
    let b = broker();
    let mut c = Client::open(&b);
    c.send(0, close(200));
    c.method();
    assert_eq!(
        c.conn.close_reason(),
        Some(&CloseReason {
            initiator: Initiator::Client,
            code: Some(200),
            text: "bye".into(),
        })
    );
    let mut c = Client::open(&b);
    c.send(7, ChannelClose::default());
    c.connection_closed(504);
    let r = c.conn.close_reason().unwrap();
    assert_eq!((r.initiator, r.code), (Initiator::Broker, Some(504)));
    assert_eq!(r.text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!(
        r.to_string(),
        "closed by broker (504): CHANNEL_ERROR - expected 'channel.open'"
    );
    let mut c = Client::connect(&b);
    c.send_bytes(PROTOCOL_HEADER);
    c.advance(Duration::from_secs(11));
    assert_eq!(
        c.conn.close_reason(),
        Some(&CloseReason::broker("handshake timeout"))
    );
}

// ---------------------------------------------------------------- runtime administration

#[test]
fn revoked_permissions_refuse_the_next_operation_on_open_channels() {
    let b = Broker::new(BrokerConfig::default());
    let mut c = Client::open(&b);
    c.declare(1, "q1");
    b.put_permissions(warren_core::access::PermissionSpec {
        configure: "^nothing$".into(),
        ..warren_core::access::PermissionSpec::all("guest", "/")
    })
    .unwrap();
    c.send(
        1,
        QueueDeclare {
            queue: "q2".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to queue 'q2' in vhost '/' refused for user 'guest'"
    );
    // No permissions at all: nothing is allowed any more.
    b.delete_permissions("guest", "/").unwrap();
    c.send(1, ChannelOpen::default());
    c.method();
    c.publish(1, "amq.direct", "k", b"x");
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user 'guest'"
    );
}

#[test]
fn deleting_a_user_or_a_vhost_closes_its_connections() {
    let b = Broker::new(BrokerConfig::default());
    b.put_vhost(warren_core::access::VhostMeta {
        name: "other".into(),
        ..Default::default()
    });
    b.put_permissions(warren_core::access::PermissionSpec::all("guest", "other"))
        .unwrap();
    let mut on_root = Client::open(&b);
    let mut on_other = Client::connect(&b);
    on_other.login_and_open("\0guest\0guest", 10, 0, "other");
    on_other.method();
    on_other.send(1, ChannelOpen::default());
    on_other.method();
    on_other.declare(1, "doomed");
    assert_eq!(b.connections().len(), 2);

    b.delete_vhost("other").unwrap();
    on_other.collect();
    let (text, _, _) = on_other.connection_closed(320);
    assert_eq!(text, "CONNECTION_FORCED - vhost 'other' is deleted");
    assert!(b.vhost("other").is_none());
    assert_eq!(
        b.delete_vhost("other"),
        Err(warren_core::admin::AdminError::NotFound(
            "vhost 'other'".into()
        ))
    );
    // The connection on "/" is untouched.
    on_root.declare(1, "still-fine");

    b.delete_user("guest").unwrap();
    on_root.collect();
    let (text, _, _) = on_root.connection_closed(320);
    assert_eq!(text, "CONNECTION_FORCED - user 'guest' is deleted");
    assert!(b.permissions("guest", "/").is_none());
    let mut again = Client::connect(&b);
    again.send_bytes(b"AMQP\x00\x00\x09\x01");
    assert!(matches!(again.method().1, Method::ConnectionStart(_)));
}

#[test]
fn channel_entries_show_prefetch_and_consumers() {
    let b = Broker::new(BrokerConfig::default());
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.send(
        1,
        BasicQos {
            prefetch_count: 7,
            ..Default::default()
        },
    );
    c.method();
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "t".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::BasicConsumeOk(_)));
    let conns = b.connections();
    let ch = &conns[0].channels()[0];
    assert_eq!(
        ch.prefetch_count.load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    assert_eq!(
        ch.consumer_count.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn topic_permissions_limit_routing_and_binding_keys_on_topic_exchanges() {
    let b = Broker::new(BrokerConfig::default());
    b.put_topic_permissions(warren_core::access::TopicPermissionSpec {
        user: "guest".into(),
        vhost: "/".into(),
        exchange: "amq.topic".into(),
        write: "^orders\\.{username}\\.".into(),
        read: "^orders\\.".into(),
    })
    .unwrap();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    // Binding keys are checked against `read`.
    c.send(
        1,
        QueueBind {
            queue: "q".into(),
            exchange: "amq.topic".into(),
            routing_key: "orders.#".into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::QueueBindOk(_)));
    c.send(
        1,
        QueueBind {
            queue: "q".into(),
            exchange: "amq.topic".into(),
            routing_key: "payments.#".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to topic 'payments.#' in exchange 'amq.topic' in vhost '/' refused for user 'guest'"
    );
    c.send(1, ChannelOpen::default());
    c.method();
    // Routing keys against `write`, with {username} expanded; another
    // exchange is not restricted.
    c.publish(1, "amq.topic", "orders.guest.new", b"ok");
    c.publish(1, "amq.direct", "anything", b"ok");
    c.nothing();
    c.publish(1, "amq.topic", "orders.bob.new", b"no");
    assert_eq!(
        c.channel_closed(1, 403),
        "ACCESS_REFUSED - access to topic 'orders.bob.new' in exchange 'amq.topic' in vhost '/' refused for user 'guest'"
    );
    // Lifted at runtime: the next publish on an open channel may use any key.
    c.send(1, ChannelOpen::default());
    c.method();
    b.delete_topic_permissions("guest", "/", None).unwrap();
    c.publish(1, "amq.topic", "orders.bob.new", b"ok now");
    c.nothing();
}

// Consumer timeouts (RabbitMQ's `consumer_timeout`, 3.12's
// `x-consumer-timeout` and `consumer-timeout` policy key) and quorum
// queues' delivery limit.

const ACK_TIMEOUT_TEXT: &str = "delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more";

impl Client {
    /// `basic.consume` with manual acks on channel 1.
    fn consume_acking(&mut self, q: &str, tag: &str) {
        self.send(
            1,
            BasicConsume {
                queue: q.into(),
                consumer_tag: tag.into(),
                ..Default::default()
            },
        );
        assert!(matches!(self.method().1, Method::BasicConsumeOk(_)));
    }

    /// Expects `channel.close` on channel 1 for a consumer timeout; answers
    /// close-ok and opens the channel again. Returns the text.
    fn timed_out(&mut self) -> String {
        let (ch, m) = self.method();
        let Method::ChannelClose(close) = m else {
            panic!("expected channel.close, got {m:?}")
        };
        assert_eq!((ch, close.reply_code), (1, 406), "{}", close.reply_text);
        // Raised by the channel's timer, not by a method.
        assert_eq!((close.class_id, close.method_id), (0, 0));
        self.send(1, ChannelCloseOk);
        self.send(1, ChannelOpen::default());
        assert!(matches!(self.method().1, Method::ChannelOpenOk(_)));
        close.reply_text.to_string()
    }

    /// `basic.get` with ack on channel 1: (redelivered, x-delivery-count).
    fn get_counted(&mut self, q: &str) -> (bool, Option<FieldValue>) {
        self.send(
            1,
            BasicGet {
                queue: q.into(),
                ..Default::default()
            },
        );
        let (m, props, _) = self.content();
        let Method::BasicGetOk(ok) = m else {
            panic!("expected get-ok, got {m:?}")
        };
        let count = props
            .headers
            .and_then(|h| h.get("x-delivery-count").cloned());
        (ok.redelivered, count)
    }
}

#[test]
fn an_unacknowledged_delivery_times_out_after_30_minutes_and_is_requeued() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"slow");
    c.consume_acking("q", "c");
    let (m, _, _) = c.content();
    assert!(matches!(m, Method::BasicDeliver(d) if !d.redelivered));
    // RabbitMQ's test is strict: more than the timeout must have passed.
    c.advance(Duration::from_millis(1_800_000));
    c.nothing();
    c.advance(Duration::from_millis(1));
    assert_eq!(
        c.timed_out(),
        format!("PRECONDITION_FAILED - {ACK_TIMEOUT_TEXT}")
    );
    // The connection lives on; the message came back, redelivered.
    let (redelivered, count) = c.get_counted("q");
    assert!(redelivered);
    assert_eq!(count, None, "classic queues carry no x-delivery-count");
}

#[test]
fn a_consumer_that_acks_in_time_keeps_its_channel() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.consume_acking("q", "c");
    for i in 0..3u8 {
        c.publish(1, "", "q", &[i]);
        let t = c.delivery_tag();
        c.advance(Duration::from_secs(29 * 60));
        c.send(
            1,
            BasicAck {
                delivery_tag: t,
                multiple: false,
            },
        );
    }
    c.advance(Duration::from_secs(3600));
    c.nothing();
    // No-ack consumers are never timed out.
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            consumer_tag: "auto".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "", "q", b"x");
    c.content();
    c.advance(Duration::from_secs(3600));
    c.nothing();
}

#[test]
fn basic_get_with_ack_times_out_too() {
    let b = broker();
    let mut c = Client::open(&b);
    c.declare(1, "q");
    c.publish(1, "", "q", b"m");
    let (redelivered, _) = c.get_counted("q");
    assert!(!redelivered);
    c.advance(Duration::from_millis(1_800_001));
    assert!(c.timed_out().ends_with(ACK_TIMEOUT_TEXT));
    assert!(c.get_counted("q").0);
}

#[test]
fn the_queue_argument_and_the_policy_override_the_broker_timeout() {
    // Disabled broker-wide: only the queue's own timeout applies.
    let b = Broker::new(BrokerConfig {
        limits: warren_core::Limits {
            consumer_timeout: None,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut c = Client::open(&b);
    c.declare(1, "plain");
    c.send(
        1,
        QueueDeclare {
            queue: "short".into(),
            arguments: args(&[("x-consumer-timeout", FieldValue::I32(1000))]),
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "", "plain", b"p");
    c.consume_acking("plain", "p");
    c.content();
    c.advance(Duration::from_secs(24 * 3600));
    c.nothing();
    // The channel's oldest delivery is the one checked, as in RabbitMQ:
    // settle it first.
    c.send(
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    c.publish(1, "", "short", b"s");
    c.consume_acking("short", "s");
    c.content();
    c.advance(Duration::from_millis(1000));
    c.nothing();
    c.advance(Duration::from_millis(1));
    assert_eq!(
        c.timed_out(),
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. This timeout value can be configured, see consumers doc guide to learn more"
    );
    // A `consumer-timeout` policy below the argument wins (the lower one).
    b.put_policy(
        "/",
        "ct",
        "^short$",
        "queues",
        0,
        args(&[("consumer-timeout", FieldValue::I64(200))]),
        false,
    )
    .unwrap();
    c.consume_acking("short", "s2");
    let (m, _, _) = c.content();
    assert!(matches!(m, Method::BasicDeliver(d) if d.redelivered));
    c.advance(Duration::from_millis(201));
    assert!(c.timed_out().contains("Timeout value used: 200 ms."));
}

/// A durable quorum queue `q` with `extra` arguments, dead-lettering to
/// `amq.fanout`, which feeds the queue `dlq`.
fn quorum_with_dlq(c: &mut Client, extra: &[(&str, FieldValue)]) {
    c.declare(1, "dlq");
    c.send(
        1,
        QueueBind {
            queue: "dlq".into(),
            exchange: "amq.fanout".into(),
            ..Default::default()
        },
    );
    c.method();
    let mut a = args(&[
        ("x-queue-type", s("quorum")),
        ("x-dead-letter-exchange", s("amq.fanout")),
    ]);
    for (k, v) in extra {
        a.insert(*k, v.clone());
    }
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            durable: true,
            arguments: a,
            ..Default::default()
        },
    );
    let (_, m) = c.method();
    assert!(matches!(m, Method::QueueDeclareOk(_)), "{m:?}");
}

#[test]
fn a_quorum_queue_dead_letters_a_message_past_its_delivery_limit() {
    let b = broker();
    let mut c = Client::open(&b);
    quorum_with_dlq(&mut c, &[("x-delivery-limit", FieldValue::I64(2))]);
    c.publish(1, "", "q", b"poison");
    c.consume_acking("q", "c");
    // Limit 2: three deliveries, counted 0, 1, 2 (RabbitMQ 3.10.8 puts the
    // header on the first delivery too), each nacked back.
    for i in 0..3 {
        let (m, props, body) = c.content();
        let Method::BasicDeliver(d) = m else {
            panic!("{m:?}")
        };
        assert_eq!(&body[..], b"poison");
        assert_eq!(d.redelivered, i > 0);
        assert_eq!(
            props.headers.unwrap().get("x-delivery-count"),
            Some(&FieldValue::I32(i))
        );
        c.send(
            1,
            BasicNack {
                delivery_tag: d.delivery_tag,
                multiple: false,
                requeue: true,
            },
        );
    }
    c.nothing();
    assert_eq!(count(&mut c, "q"), 0);
    c.send(
        1,
        BasicGet {
            queue: "dlq".into(),
            no_ack: true,
            ..Default::default()
        },
    );
    let (_, props, body) = c.content();
    assert_eq!(&body[..], b"poison");
    let h = props.headers.unwrap();
    assert_eq!(h.get("x-first-death-reason"), Some(&s("delivery_limit")));
    assert_eq!(h.get("x-first-death-queue"), Some(&s("q")));
    let Some(FieldValue::Array(deaths)) = h.get("x-death") else {
        panic!("{h:?}")
    };
    let Some(FieldValue::Table(death)) = deaths.first() else {
        panic!("{deaths:?}")
    };
    assert_eq!(death.get("reason"), Some(&s("delivery_limit")));
}

#[test]
fn returns_by_reject_recover_and_channel_close_all_count() {
    let b = broker();
    let mut c = Client::open(&b);
    quorum_with_dlq(&mut c, &[("x-delivery-limit", FieldValue::I64(3))]);
    c.publish(1, "", "q", b"m");
    assert_eq!(c.get_counted("q"), (false, Some(FieldValue::I32(0))));
    c.send(
        1,
        BasicReject {
            delivery_tag: 1,
            requeue: true,
        },
    );
    assert_eq!(c.get_counted("q"), (true, Some(FieldValue::I32(1))));
    c.send(1, BasicRecover { requeue: true });
    assert!(matches!(c.method().1, Method::BasicRecoverOk(_)));
    assert_eq!(c.get_counted("q"), (true, Some(FieldValue::I32(2))));
    c.send(1, ChannelClose::default());
    assert!(matches!(c.method().1, Method::ChannelCloseOk(_)));
    c.send(1, ChannelOpen::default());
    c.method();
    assert_eq!(c.get_counted("q"), (true, Some(FieldValue::I32(3))));
    // The fourth return is one too many.
    c.send(
        1,
        BasicNack {
            delivery_tag: 1,
            multiple: false,
            requeue: true,
        },
    );
    assert_eq!(count(&mut c, "q"), 0);
    assert_eq!(count(&mut c, "dlq"), 1);
}

#[test]
fn a_consumer_timeout_return_counts_and_no_dlx_drops() {
    let b = broker();
    let mut c = Client::open(&b);
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            durable: true,
            arguments: args(&[
                ("x-queue-type", s("quorum")),
                ("x-delivery-limit", FieldValue::I64(0)),
                ("x-consumer-timeout", FieldValue::I64(50)),
            ]),
            ..Default::default()
        },
    );
    c.method();
    c.publish(1, "", "q", b"m");
    assert_eq!(c.get_counted("q"), (false, Some(FieldValue::I32(0))));
    c.advance(Duration::from_millis(51));
    c.timed_out();
    // Limit 0 and no dead-letter exchange: the first return drops it.
    assert_eq!(count(&mut c, "q"), 0);
}

#[test]
fn the_policy_delivery_limit_applies_to_quorum_queues_only() {
    let b = broker();
    let mut c = Client::open(&b);
    b.put_policy(
        "/",
        "dl",
        ".*",
        "queues",
        0,
        args(&[("delivery-limit", FieldValue::I64(0))]),
        false,
    )
    .unwrap();
    c.declare(1, "classic");
    c.send(
        1,
        QueueDeclare {
            queue: "qq".into(),
            durable: true,
            arguments: args(&[("x-queue-type", s("quorum"))]),
            ..Default::default()
        },
    );
    c.method();
    for q in ["classic", "qq"] {
        c.publish(1, "", q, b"m");
        c.get_counted(q);
        c.send(
            1,
            BasicNack {
                delivery_tag: 0,
                multiple: true,
                requeue: true,
            },
        );
    }
    assert_eq!(count(&mut c, "classic"), 1);
    assert_eq!(count(&mut c, "qq"), 0);
}

#[test]
fn quorum_queue_arguments_are_checked_as_rabbitmq_does() {
    let b = broker();
    let mut c = Client::open(&b);
    let refused = |c: &mut Client, name: &str, durable: bool, a: FieldTable| {
        c.send(
            1,
            QueueDeclare {
                queue: name.into(),
                durable,
                arguments: a,
                ..Default::default()
            },
        );
        let text = c.channel_closed(1, 406);
        c.send(1, ChannelOpen::default());
        c.method();
        text
    };
    let quorum = |extra: (&str, FieldValue)| args(&[("x-queue-type", s("quorum")), extra]);
    assert_eq!(
        refused(&mut c, "a", true, quorum(("x-queue-mode", s("default")))),
        "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'a' in vhost '/' of queue type rabbit_quorum_queue"
    );
    assert_eq!(
        refused(
            &mut c,
            "b",
            true,
            quorum(("x-max-priority", FieldValue::I64(5)))
        ),
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'b' in vhost '/' of queue type rabbit_quorum_queue"
    );
    // The argument is checked before the queue's properties.
    assert!(
        refused(&mut c, "c", false, quorum(("x-queue-mode", s("lazy"))))
            .contains("of queue type rabbit_quorum_queue")
    );
    assert_eq!(
        refused(
            &mut c,
            "d",
            true,
            quorum(("x-delivery-limit", FieldValue::I64(-1)))
        ),
        "PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'd' in vhost '/': {value_negative,-1}"
    );
    assert_eq!(
        refused(&mut c, "e", true, quorum(("x-consumer-timeout", s("1000")))),
        "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue 'e' in vhost '/': {unacceptable_type,longstr}"
    );
    assert_eq!(
        refused(
            &mut c,
            "f",
            true,
            quorum(("x-dead-letter-strategy", s("sometimes")))
        ),
        "PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for queue 'f' in vhost '/': {invalid_value,<<\"sometimes\">>}"
    );
    // Accepted: both strategies (at-least-once without reject-publish
    // falls back to at-most-once, logged), message TTL (quorum queues have
    // it since 3.10) and reject-publish-dlx (logged, drop-head instead).
    for (name, extra) in [
        ("g", ("x-dead-letter-strategy", s("at-least-once"))),
        ("h", ("x-dead-letter-strategy", s("at-most-once"))),
        ("i", ("x-message-ttl", FieldValue::I64(1000))),
        ("j", ("x-overflow", s("reject-publish-dlx"))),
        ("k", ("x-consumer-timeout", FieldValue::I64(0))),
    ] {
        c.send(
            1,
            QueueDeclare {
                queue: name.into(),
                durable: true,
                arguments: quorum(extra),
                ..Default::default()
            },
        );
        let (_, m) = c.method();
        assert!(matches!(m, Method::QueueDeclareOk(_)), "{name}: {m:?}");
    }
    // A redeclare with another limit is inequivalent.
    c.send(
        1,
        QueueDeclare {
            queue: "g".into(),
            durable: true,
            arguments: quorum(("x-dead-letter-strategy", s("at-most-once"))),
            ..Default::default()
        },
    );
    assert!(
        c.channel_closed(1, 406)
            .contains("inequivalent arg 'x-dead-letter-strategy'")
    );
}

// ---------------------------------------------------------------- x-delayed-message

/// Wall-clock milliseconds the fake clock starts at in the delayed tests.
const T0: u64 = 1_700_000_000_000;

fn delayed_args(inner: FieldValue) -> FieldTable {
    FieldTable::new().with("x-delayed-type", inner)
}

fn delay_header(v: FieldValue) -> BasicProperties {
    BasicProperties {
        headers: Some(FieldTable::new().with("x-delay", v)),
        ..Default::default()
    }
}

/// Declares the delayed exchange `dx` routing as `inner` and queue `q`
/// bound to it with `key`.
fn delayed_setup(c: &mut Client, inner: &str, key: &str) {
    c.send(
        1,
        ExchangeDeclare {
            exchange: "dx".into(),
            kind: "x-delayed-message".into(),
            arguments: delayed_args(FieldValue::LongStr(inner.into())),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::ExchangeDeclareOk(_)));
    c.declare(1, "q");
    c.send(
        1,
        QueueBind {
            queue: "q".into(),
            exchange: "dx".into(),
            routing_key: key.into(),
            ..Default::default()
        },
    );
    assert!(matches!(c.method().1, Method::QueueBindOk(_)));
}

/// `basic.get` from `q`: the message's body and headers, if any.
fn get(c: &mut Client, q: &str) -> Option<(Bytes, Option<FieldTable>)> {
    c.send(
        1,
        BasicGet {
            queue: q.into(),
            no_ack: true,
            ..Default::default()
        },
    );
    if matches!(
        c.inbox.front(),
        Some(Frame::Method {
            method: Method::BasicGetEmpty(_),
            ..
        })
    ) {
        c.method();
        return None;
    }
    let (m, props, body) = c.content();
    assert!(matches!(m, Method::BasicGetOk(_)), "{m:?}");
    Some((body, props.headers))
}

#[test]
fn delayed_type_is_validated_as_the_plugin_does() {
    let b = broker();
    let mut c = Client::open(&b);
    let refused = |c: &mut Client, args: FieldTable| {
        c.send(
            1,
            ExchangeDeclare {
                exchange: "dx".into(),
                kind: "x-delayed-message".into(),
                arguments: args,
                ..Default::default()
            },
        );
        let text = c.channel_closed(1, 406);
        c.send(1, ChannelOpen::default());
        assert!(matches!(c.method().1, Method::ChannelOpenOk(_)));
        text
    };
    let must = "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type";
    assert_eq!(refused(&mut c, FieldTable::new()), must);
    assert_eq!(refused(&mut c, delayed_args(FieldValue::I32(1))), must);
    assert_eq!(
        refused(
            &mut c,
            delayed_args(FieldValue::LongStr("x-delayed-message".into()))
        ),
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
    );
    // The inner type's own checks apply.
    assert_eq!(
        refused(
            &mut c,
            delayed_args(FieldValue::LongStr("x-consistent-hash".into()))
                .with("hash-header", FieldValue::LongStr("h".into()))
                .with("hash-property", FieldValue::LongStr("message_id".into()))
        ),
        "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
    );
    // An unknown inner type is RabbitMQ's unknown-type error (503).
    c.send(
        1,
        ExchangeDeclare {
            exchange: "dx".into(),
            kind: "x-delayed-message".into(),
            arguments: delayed_args(FieldValue::LongStr("nope".into())),
            ..Default::default()
        },
    );
    let (text, _, _) = c.connection_closed(503);
    assert_eq!(text, "COMMAND_INVALID - unknown exchange type 'nope'");
    let mut c = Client::open(&b);
    for inner in ["direct", "fanout", "topic", "headers", "x-random"] {
        c.send(
            1,
            ExchangeDeclare {
                exchange: format!("d-{inner}").as_str().into(),
                kind: "x-delayed-message".into(),
                arguments: delayed_args(FieldValue::LongStr(inner.into())),
                ..Default::default()
            },
        );
        assert!(
            matches!(c.method().1, Method::ExchangeDeclareOk(_)),
            "{inner}"
        );
    }
}

#[test]
fn a_delayed_message_is_routed_at_its_time_to_the_bindings_of_then() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "direct", "k");
    c.send(1, ConfirmSelect::default());
    c.method();
    c.publish_props(
        1,
        "dx",
        "k",
        b"later",
        delay_header(FieldValue::I32(500)),
        false,
    );
    // Confirmed once held (nothing is stored without a durable store).
    let Method::BasicAck(ack) = c.method().1 else {
        panic!()
    };
    assert_eq!(ack.delivery_tag, 1);
    assert_eq!(get(&mut c, "q"), None, "held, not routed");
    assert_eq!(b.next_delayed_deadline(), Some(T0 + 500));
    let dx = b.vhost("/").unwrap().exchange(b"dx").unwrap();
    assert_eq!(dx.messages_delayed(), Some(1));
    // A queue bound while it waits gets it too.
    c.declare(1, "q2");
    c.send(
        1,
        QueueBind {
            queue: "q2".into(),
            exchange: "dx".into(),
            routing_key: "k".into(),
            ..Default::default()
        },
    );
    c.method();
    let start = c.now;
    let at = |ms: u64| start + Duration::from_millis(ms);
    assert_eq!(b.route_delayed(at(499), T0 + 499, 100), Some(T0 + 500));
    assert_eq!(get(&mut c, "q"), None, "never early");
    assert_eq!(b.route_delayed(at(500), T0 + 500, 100), None);
    let (body, headers) = get(&mut c, "q").expect("routed at its time");
    assert_eq!(&body[..], b"later");
    // The plugin negates x-delay, so that another delayed exchange does
    // not hold the message again.
    assert_eq!(
        headers.unwrap().get("x-delay"),
        Some(&FieldValue::I32(-500))
    );
    assert!(get(&mut c, "q2").is_some());
    assert_eq!(dx.messages_delayed(), Some(0));
    assert_eq!(b.next_delayed_deadline(), None);
}

#[test]
fn a_delayed_exchange_as_dead_letter_exchange_holds_what_asks_for_a_delay() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "direct", "k");
    c.send(
        1,
        QueueDeclare {
            queue: "work".into(),
            arguments: FieldTable::new()
                .with("x-dead-letter-exchange", FieldValue::LongStr("dx".into()))
                .with("x-dead-letter-routing-key", FieldValue::LongStr("k".into())),
            ..Default::default()
        },
    );
    c.method();
    // A retry that asks for 300 ms waits in the delayed exchange.
    c.publish_props(
        1,
        "",
        "work",
        b"retry",
        delay_header(FieldValue::I32(300)),
        false,
    );
    c.reject_one("work");
    let dx = b.vhost("/").unwrap().exchange(b"dx").unwrap();
    assert_eq!(dx.messages_delayed(), Some(1));
    assert_eq!(get(&mut c, "q"), None, "held, not routed");
    assert_eq!(b.next_delayed_deadline(), Some(T0 + 300));
    // One without x-delay goes through at once, by the inner type.
    c.publish(1, "", "work", b"now");
    c.reject_one("work");
    assert_eq!(get(&mut c, "q").unwrap().0, Bytes::from_static(b"now"));
    let start = c.now;
    assert_eq!(
        b.route_delayed(start + Duration::from_millis(300), T0 + 300, 100),
        None
    );
    let (body, headers) = get(&mut c, "q").expect("routed at its time");
    assert_eq!(&body[..], b"retry");
    let headers = headers.unwrap();
    assert_eq!(headers.get("x-delay"), Some(&FieldValue::I32(-300)));
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        panic!("no x-death: {headers:?}")
    };
    let Some(FieldValue::Table(death)) = deaths.first() else {
        panic!("{deaths:?}")
    };
    assert_eq!(
        death.get("reason"),
        Some(&FieldValue::LongStr("rejected".into()))
    );
    assert_eq!(dx.messages_delayed(), Some(0));
}

#[test]
fn no_positive_delay_routes_at_once_with_the_header_unchanged() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "direct", "k");
    c.publish(1, "dx", "k", b"plain");
    assert_eq!(get(&mut c, "q").unwrap().0, Bytes::from_static(b"plain"));
    for v in [
        FieldValue::I32(0),
        FieldValue::I64(-20),
        FieldValue::I64(4_294_967_296),
        FieldValue::LongStr("soon".into()),
        FieldValue::Bool(true),
    ] {
        c.publish_props(1, "dx", "k", b"now", delay_header(v.clone()), false);
        let (_, headers) = get(&mut c, "q").unwrap_or_else(|| panic!("{v:?} routes now"));
        assert_eq!(headers.unwrap().get("x-delay"), Some(&v));
    }
    // A string holding an integer, and a float, are delays.
    c.publish_props(
        1,
        "dx",
        "k",
        b"s",
        delay_header(FieldValue::LongStr("30".into())),
        false,
    );
    c.publish_props(
        1,
        "dx",
        "k",
        b"f",
        delay_header(FieldValue::F64(20.7)),
        false,
    );
    assert_eq!(get(&mut c, "q"), None);
    assert_eq!(b.next_delayed_deadline(), Some(T0 + 20));
    b.route_delayed(c.now + Duration::from_millis(30), T0 + 30, 100);
    assert_eq!(
        get(&mut c, "q").unwrap().0,
        Bytes::from_static(b"f"),
        "earliest first"
    );
    assert_eq!(get(&mut c, "q").unwrap().0, Bytes::from_static(b"s"));
}

#[test]
fn a_delay_already_past_routes_on_the_next_run() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "direct", "k");
    c.publish_props(1, "dx", "k", b"x", delay_header(FieldValue::I32(10)), false);
    // The timer runs late (a busy machine, or a restart): routed at once.
    b.route_delayed(c.now + Duration::from_secs(60), T0 + 60_000, 100);
    assert!(get(&mut c, "q").is_some());
}

#[test]
fn delayed_messages_route_by_the_inner_type() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "topic", "a.#");
    for key in ["a.b.c", "b.c", "a"] {
        c.publish_props(
            1,
            "dx",
            key,
            key.as_bytes(),
            delay_header(FieldValue::I32(5)),
            false,
        );
    }
    b.route_delayed(c.now + Duration::from_millis(5), T0 + 5, 100);
    assert_eq!(get(&mut c, "q").unwrap().0, Bytes::from_static(b"a.b.c"));
    assert_eq!(get(&mut c, "q").unwrap().0, Bytes::from_static(b"a"));
    assert_eq!(get(&mut c, "q"), None);
}

#[test]
fn mandatory_delayed_publishes_are_returned_at_once_as_the_plugin_does() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "direct", "k");
    c.publish_props(1, "dx", "k", b"m", delay_header(FieldValue::I32(100)), true);
    // The plugin routes the publish to no queue now: 312 NO_ROUTE...
    let (m, _, body) = c.content();
    let Method::BasicReturn(r) = m else {
        panic!("{m:?}")
    };
    assert_eq!(
        (r.reply_code, r.reply_text.as_bytes()),
        (312, &b"NO_ROUTE"[..])
    );
    assert_eq!(&body[..], b"m");
    // ... and still routes it at its time.
    b.route_delayed(c.now + Duration::from_millis(100), T0 + 100, 100);
    assert!(get(&mut c, "q").is_some());
    // Not delayed and routable: no return.
    c.publish_props(1, "dx", "k", b"n", BasicProperties::default(), true);
    assert!(get(&mut c, "q").is_some());
}

#[test]
fn deleting_a_delayed_exchange_drops_what_it_holds() {
    let b = broker();
    let mut c = Client::open(&b);
    b.sync_clock(c.now, T0);
    delayed_setup(&mut c, "fanout", "");
    c.publish_props(1, "dx", "", b"x", delay_header(FieldValue::I32(10)), false);
    c.send(
        1,
        ExchangeDelete {
            exchange: "dx".into(),
            ..Default::default()
        },
    );
    c.method();
    assert_eq!(b.next_delayed_deadline(), None);
    b.route_delayed(c.now + Duration::from_millis(10), T0 + 10, 100);
    assert_eq!(get(&mut c, "q"), None);
}
