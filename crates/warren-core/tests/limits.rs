//! The broker's limits without sockets: the node's connection limit, a
//! user's connection and channel limits and the consumers a channel may
//! have, each refused with RabbitMQ's code and text while the other
//! connections carry on. Scripted frames in, frames out, a fake clock.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use warren_codec::*;
use warren_core::password::Password;
use warren_core::{Broker, BrokerConfig, ConnInfo, Connection, Limits, Mailbox, NoWake};

/// One client connection driven by hand.
struct Client {
    conn: Connection,
    decoder: FrameDecoder,
    now: Instant,
}

impl Client {
    fn connect(broker: &Arc<Broker>) -> Self {
        let now = Instant::now();
        let conn = Connection::new(
            Arc::clone(broker),
            ConnInfo {
                peer: "test".into(),
                local: "broker".into(),
                loopback: true,
                tls: None,
            },
            Mailbox::new(Box::new(NoWake)),
            now,
        );
        Client {
            conn,
            decoder: FrameDecoder::new(1 << 20),
            now,
        }
    }

    fn send(&mut self, channel: u16, m: impl Into<Method>) {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &m.into());
        self.conn.handle_input(&mut buf, self.now);
    }

    /// Every method the broker has written since the last call.
    fn methods(&mut self) -> Vec<(u16, Method)> {
        self.conn.handle_events(self.now);
        let mut out = self.conn.take_output();
        let mut methods = Vec::new();
        while let Some(f) = self.decoder.decode(&mut out).unwrap() {
            if let Frame::Method { channel, method } = f {
                methods.push((channel, method));
            }
        }
        methods
    }

    fn one(&mut self) -> (u16, Method) {
        let mut ms = self.methods();
        assert_eq!(ms.len(), 1, "expected one method, got {ms:?}");
        ms.remove(0)
    }

    /// Logs in as `user`/`password` and sends `connection.open` of `/`;
    /// the answer to the open is left unread.
    fn login(broker: &Arc<Broker>, user: &str, password: &str) -> Self {
        let mut c = Self::connect(broker);
        let mut buf = BytesMut::from(&PROTOCOL_HEADER[..]);
        c.conn.handle_input(&mut buf, c.now);
        assert!(matches!(c.one().1, Method::ConnectionStart(_)));
        c.send(
            0,
            ConnectionStartOk {
                response: LongStr::from(format!("\0{user}\0{password}")),
                ..Default::default()
            },
        );
        let (_, m) = c.one();
        let Method::ConnectionTune(t) = m else {
            panic!("expected tune, got {m:?}")
        };
        c.send(
            0,
            ConnectionTuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: 0,
            },
        );
        c.send(
            0,
            ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            },
        );
        c
    }

    /// A connection that opened.
    fn open(broker: &Arc<Broker>, user: &str, password: &str) -> Self {
        let mut c = Self::login(broker, user, password);
        assert!(matches!(c.one().1, Method::ConnectionOpenOk(_)));
        c
    }

    fn channel(&mut self, ch: u16) {
        self.send(ch, ChannelOpen::default());
        let (c, m) = self.one();
        assert!(matches!(m, Method::ChannelOpenOk(_)) && c == ch, "{m:?}");
    }

    /// Expects `connection.close`; returns (code, text, class, method).
    fn closed(&mut self) -> (u16, String, u16, u16) {
        let (c, m) = self.one();
        let Method::ConnectionClose(close) = m else {
            panic!("expected connection.close, got {m:?}")
        };
        assert_eq!(c, 0);
        (
            close.reply_code,
            close.reply_text.to_lossy().into_owned(),
            close.class_id,
            close.method_id,
        )
    }

    /// Declares `q`, publishes to it and gets the message back: this
    /// connection still works.
    fn works(&mut self, ch: u16, q: &str) {
        self.send(
            ch,
            QueueDeclare {
                queue: q.into(),
                ..Default::default()
            },
        );
        assert!(matches!(self.one().1, Method::QueueDeclareOk(_)));
        let mut buf = BytesMut::new();
        let publish = Method::from(BasicPublish {
            routing_key: q.into(),
            ..Default::default()
        });
        encode_content(
            &mut buf,
            ch,
            &publish,
            &BasicProperties::default(),
            b"still here",
            131_072,
        );
        self.conn.handle_input(&mut buf, self.now);
        self.send(
            ch,
            BasicGet {
                queue: q.into(),
                no_ack: true,
                ..Default::default()
            },
        );
        let got = self.methods();
        assert!(
            got.iter().any(|(_, m)| matches!(m, Method::BasicGetOk(_))),
            "{got:?}"
        );
    }
}

fn broker_with(limits: Limits) -> Arc<Broker> {
    let b = Broker::new(BrokerConfig {
        limits,
        ..Default::default()
    });
    b.put_user("app", Some(Password::Plain("pw".into())), Vec::new());
    b.put_permissions(warren_core::access::PermissionSpec::all("app", "/"))
        .unwrap();
    b
}

#[test]
fn the_node_connection_limit_counts_every_accepted_connection() {
    let b = broker_with(Limits {
        connection_max: Some(2),
        ..Default::default()
    });
    let mut first = Client::open(&b, "guest", "guest");
    // Accepted, still in its handshake: it counts, as ranch counts it.
    let _pending = Client::connect(&b);
    let mut third = Client::login(&b, "app", "pw");
    assert_eq!(
        third.closed(),
        (
            530,
            "NOT_ALLOWED - connection refused: node connection limit (2) is reached".into(),
            10,
            40
        )
    );
    first.channel(1);
    first.works(1, "q");
}

#[test]
fn a_node_limit_of_zero_refuses_every_connection() {
    let b = broker_with(Limits {
        connection_max: Some(0),
        ..Default::default()
    });
    let mut c = Client::login(&b, "guest", "guest");
    assert_eq!(c.closed().0, 530);
}

#[test]
fn a_user_connection_limit_refuses_that_user_only() {
    let b = broker_with(Limits::default());
    b.set_user_limit("app", "max-connections", Some(1)).unwrap();
    let mut first = Client::open(&b, "app", "pw");
    let mut second = Client::login(&b, "app", "pw");
    assert_eq!(
        second.closed(),
        (
            530,
            "NOT_ALLOWED - Connection refused for user 'app': user connection limit (1) is reached"
                .into(),
            10,
            40
        )
    );
    // Another user is not counted against it.
    let mut guest = Client::open(&b, "guest", "guest");
    guest.channel(1);
    guest.works(1, "g");
    first.channel(1);
    first.works(1, "a");
    // Raised, the next one is let in; 0 refuses all; -1 is no limit.
    b.set_user_limit("app", "max-connections", Some(2)).unwrap();
    Client::open(&b, "app", "pw");
    b.set_user_limit("app", "max-connections", Some(0)).unwrap();
    assert_eq!(Client::login(&b, "app", "pw").closed().0, 530);
    b.set_user_limit("app", "max-connections", Some(-1))
        .unwrap();
    Client::open(&b, "app", "pw");
}

#[test]
fn a_user_channel_limit_counts_channels_on_every_connection() {
    let b = broker_with(Limits::default());
    b.set_user_limit("app", "max-channels", Some(2)).unwrap();
    let mut one = Client::open(&b, "app", "pw");
    let mut two = Client::open(&b, "app", "pw");
    one.channel(1);
    two.channel(1);
    two.send(2, ChannelOpen::default());
    assert_eq!(
        two.closed(),
        (
            530,
            "NOT_ALLOWED - number of channels opened for user 'app' has reached the maximum allowed user limit of (2)"
                .into(),
            0,
            0
        )
    );
    // The other connection's channel carries on, and the closed
    // connection's channel no longer counts.
    one.works(1, "q");
    two.send(0, ConnectionCloseOk);
    two.conn.on_disconnect();
    one.channel(2);
    one.works(2, "q2");
}

#[test]
fn consumers_per_channel_are_limited_and_other_channels_carry_on() {
    let b = broker_with(Limits {
        consumer_max_per_channel: Some(2),
        ..Default::default()
    });
    let mut c = Client::open(&b, "guest", "guest");
    c.channel(1);
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            ..Default::default()
        },
    );
    c.methods();
    for tag in ["a", "b"] {
        c.send(
            1,
            BasicConsume {
                queue: "q".into(),
                consumer_tag: tag.into(),
                ..Default::default()
            },
        );
        assert!(matches!(c.one().1, Method::BasicConsumeOk(_)));
    }
    // Reusing a tag is the reuse error, not the limit.
    let mut other = Client::open(&b, "guest", "guest");
    other.channel(1);
    c.send(
        1,
        BasicConsume {
            queue: "q".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        c.closed(),
        (
            530,
            "NOT_ALLOWED - reached maximum (2) of consumers per channel".into(),
            60,
            20
        )
    );
    other.works(1, "other");
}

#[test]
fn a_reused_tag_at_the_consumer_limit_is_a_reuse() {
    let b = broker_with(Limits {
        consumer_max_per_channel: Some(1),
        ..Default::default()
    });
    let mut c = Client::open(&b, "guest", "guest");
    c.channel(1);
    c.send(
        1,
        QueueDeclare {
            queue: "q".into(),
            ..Default::default()
        },
    );
    c.methods();
    let consume = BasicConsume {
        queue: "q".into(),
        consumer_tag: "t".into(),
        ..Default::default()
    };
    c.send(1, consume.clone());
    assert!(matches!(c.one().1, Method::BasicConsumeOk(_)));
    c.send(1, consume);
    let (code, text, _, _) = c.closed();
    assert_eq!(code, 530);
    assert_eq!(text, "NOT_ALLOWED - attempt to reuse consumer tag 't'");
}
