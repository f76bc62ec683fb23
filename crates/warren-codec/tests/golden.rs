//! Golden byte vectors: a client handshake, a publish and a deliver, and a
//! few vectors aimed at ordering and tags (bit packing, every field-table
//! tag, all 14 basic properties).
//!
//! # Layout
//! - The vectors, one `const` per frame or stream, one field per line.
//! - The values they must decode to.
//! - Tests: each vector decodes (whole and one byte at a time) to its value,
//!   and its value encodes to exactly the vector.
//!
//! The bytes were written by hand from the AMQP 0-9-1 spec (section 4.2,
//! framing; 4.2.5, field types, with RabbitMQ's tag errata) and computed by
//! a small Python script, independent of this crate, using
//! `struct.pack('>...')` for every field; its output was pasted here once.
//! They are not a capture from a real client or broker. The round-trip
//! property tests cannot catch a mistake made the same way in the encoder
//! and the decoder (two properties swapped, a wrong tag letter, bits in the
//! wrong order); these vectors do.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; unwrap names the failing step"
)]

use bytes::{Bytes, BytesMut};
use warren_codec::types::put_table;
use warren_codec::*;

// ---------------------------------------------------------------------------
// The vectors.
// ---------------------------------------------------------------------------

/// What a client sends first.
const PROTOCOL_HEADER_BYTES: &[u8] = &[0x41, 0x4d, 0x51, 0x50, 0x00, 0x00, 0x09, 0x01];

// Server to client, channel 0: `connection.start` with server properties holding a
// `capabilities` sub-table, shaped like RabbitMQ 3.13's (fewer keys). 306 bytes.
#[rustfmt::skip]
const CONNECTION_START: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2a, // method frame: type 1, channel 0, size 298
    0x00, 0x0a, 0x00, 0x0a, // class 10, method 10
    0x00, // version-major
    0x09, // version-minor
    0x00, 0x00, 0x01, 0x05, // server-properties: table, 261 bytes
        0x0c, 0x63, 0x61, 0x70, 0x61, 0x62, 0x69, 0x6c, 0x69, 0x74, 0x69, 0x65, // 'capabilities': F
        0x73, 0x46,
            0x00, 0x00, 0x00, 0x8c, // nested table: table, 140 bytes
                0x12, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x73, 0x68, 0x65, 0x72, 0x5f, 0x63, // 'publisher_confirms': t true
                0x6f, 0x6e, 0x66, 0x69, 0x72, 0x6d, 0x73, 0x74, 0x01,
                0x1a, 0x65, 0x78, 0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0x5f, 0x65, 0x78, // 'exchange_exchange_bindings': t true
                0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0x5f, 0x62, 0x69, 0x6e, 0x64, 0x69,
                0x6e, 0x67, 0x73, 0x74, 0x01,
                0x0a, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2e, 0x6e, 0x61, 0x63, 0x6b, 0x74, // 'basic.nack': t true
                0x01,
                0x16, 0x63, 0x6f, 0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x5f, 0x63, 0x61, // 'consumer_cancel_notify': t true
                0x6e, 0x63, 0x65, 0x6c, 0x5f, 0x6e, 0x6f, 0x74, 0x69, 0x66, 0x79, 0x74,
                0x01,
                0x12, 0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x2e, // 'connection.blocked': t true
                0x62, 0x6c, 0x6f, 0x63, 0x6b, 0x65, 0x64, 0x74, 0x01,
                0x1c, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, // 'authentication_failure_close': t true
                0x69, 0x6f, 0x6e, 0x5f, 0x66, 0x61, 0x69, 0x6c, 0x75, 0x72, 0x65, 0x5f,
                0x63, 0x6c, 0x6f, 0x73, 0x65, 0x74, 0x01,
        0x0c, 0x63, 0x6c, 0x75, 0x73, 0x74, 0x65, 0x72, 0x5f, 0x6e, 0x61, 0x6d, // 'cluster_name': S 'rabbit@localhost'
        0x65, 0x53, 0x00, 0x00, 0x00, 0x10, 0x72, 0x61, 0x62, 0x62, 0x69, 0x74,
        0x40, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0x68, 0x6f, 0x73, 0x74,
        0x08, 0x70, 0x6c, 0x61, 0x74, 0x66, 0x6f, 0x72, 0x6d, 0x53, 0x00, 0x00, // 'platform': S 'Erlang/OTP 26.2'
        0x00, 0x0f, 0x45, 0x72, 0x6c, 0x61, 0x6e, 0x67, 0x2f, 0x4f, 0x54, 0x50,
        0x20, 0x32, 0x36, 0x2e, 0x32,
        0x07, 0x70, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x74, 0x53, 0x00, 0x00, 0x00, // 'product': S 'RabbitMQ'
        0x08, 0x52, 0x61, 0x62, 0x62, 0x69, 0x74, 0x4d, 0x51,
        0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x53, 0x00, 0x00, 0x00, // 'version': S '3.13.0'
        0x06, 0x33, 0x2e, 0x31, 0x33, 0x2e, 0x30,
    0x00, 0x00, 0x00, 0x0e, 0x41, 0x4d, 0x51, 0x50, 0x4c, 0x41, 0x49, 0x4e, // mechanisms: longstr 'AMQPLAIN PLAIN'
    0x20, 0x50, 0x4c, 0x41, 0x49, 0x4e,
    0x00, 0x00, 0x00, 0x05, 0x65, 0x6e, 0x5f, 0x55, 0x53, // locales: longstr 'en_US'
    0xce, // frame end
];

// Client to server: `connection.start-ok`, PLAIN with response "\0guest\0guest". 147 bytes.
#[rustfmt::skip]
const CONNECTION_START_OK: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8b, // method frame: type 1, channel 0, size 139
    0x00, 0x0a, 0x00, 0x0b, // class 10, method 11
    0x00, 0x00, 0x00, 0x67, // client-properties: table, 103 bytes
        0x07, 0x70, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x74, 0x53, 0x00, 0x00, 0x00, // 'product': S 'warren-golden'
        0x0d, 0x77, 0x61, 0x72, 0x72, 0x65, 0x6e, 0x2d, 0x67, 0x6f, 0x6c, 0x64,
        0x65, 0x6e,
        0x0c, 0x63, 0x61, 0x70, 0x61, 0x62, 0x69, 0x6c, 0x69, 0x74, 0x69, 0x65, // 'capabilities': F
        0x73, 0x46,
            0x00, 0x00, 0x00, 0x3b, // nested table: table, 59 bytes
                0x12, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x73, 0x68, 0x65, 0x72, 0x5f, 0x63, // 'publisher_confirms': t true
                0x6f, 0x6e, 0x66, 0x69, 0x72, 0x6d, 0x73, 0x74, 0x01,
                0x0a, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2e, 0x6e, 0x61, 0x63, 0x6b, 0x74, // 'basic.nack': t true
                0x01,
                0x16, 0x63, 0x6f, 0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x5f, 0x63, 0x61, // 'consumer_cancel_notify': t true
                0x6e, 0x63, 0x65, 0x6c, 0x5f, 0x6e, 0x6f, 0x74, 0x69, 0x66, 0x79, 0x74,
                0x01,
    0x05, 0x50, 0x4c, 0x41, 0x49, 0x4e, // mechanism: shortstr 'PLAIN'
    0x00, 0x00, 0x00, 0x0c, 0x00, 0x67, 0x75, 0x65, 0x73, 0x74, 0x00, 0x67, // response: longstr '\x00guest\x00guest'
    0x75, 0x65, 0x73, 0x74,
    0x05, 0x65, 0x6e, 0x5f, 0x55, 0x53, // locale: shortstr 'en_US'
    0xce, // frame end
];

// Server to client: `connection.tune`, channel-max 2047, frame-max 131072, heartbeat 60. 20 bytes.
#[rustfmt::skip]
const CONNECTION_TUNE: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // method frame: type 1, channel 0, size 12
    0x00, 0x0a, 0x00, 0x1e, // class 10, method 30
    0x07, 0xff, // channel-max
    0x00, 0x02, 0x00, 0x00, // frame-max
    0x00, 0x3c, // heartbeat
    0xce, // frame end
];

// Client to server: `connection.tune-ok` accepting the same. 20 bytes.
#[rustfmt::skip]
const CONNECTION_TUNE_OK: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // method frame: type 1, channel 0, size 12
    0x00, 0x0a, 0x00, 0x1f, // class 10, method 31
    0x07, 0xff, // channel-max
    0x00, 0x02, 0x00, 0x00, // frame-max
    0x00, 0x3c, // heartbeat
    0xce, // frame end
];

// Client to server: `connection.open` of vhost "/". 16 bytes.
#[rustfmt::skip]
const CONNECTION_OPEN: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, // method frame: type 1, channel 0, size 8
    0x00, 0x0a, 0x00, 0x28, // class 10, method 40
    0x01, 0x2f, // virtual-host: shortstr '/'
    0x00, // capabilities: shortstr ''
    0x00, // bits: insist=0
    0xce, // frame end
];

// Server to client: `connection.open-ok`. 13 bytes.
#[rustfmt::skip]
const CONNECTION_OPEN_OK: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // method frame: type 1, channel 0, size 5
    0x00, 0x0a, 0x00, 0x29, // class 10, method 41
    0x00, // known-hosts: shortstr ''
    0xce, // frame end
];

// Client to server, channel 1: `basic.publish` to the default exchange with routing
// key "hello", a header with content-type and delivery-mode 2, and the body. 76 bytes.
#[rustfmt::skip]
const PUBLISH_TRIPLE: &[u8] = &[
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, // method frame: type 1, channel 1, size 14
    0x00, 0x3c, 0x00, 0x28, // class 60, method 40
    0x00, 0x00, // ticket
    0x00, // exchange: shortstr ''
    0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f, // routing-key: shortstr 'hello'
    0x00, // bits: mandatory=0 immediate=0
    0xce, // frame end
    0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1a, // header frame: type 2, channel 1, size 26
    0x00, 0x3c, // class basic
    0x00, 0x00, // weight
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // body size
    0x90, 0x00, // property flags: content-type (bit 15), delivery-mode (bit 12)
    0x0a, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, // content-type: shortstr 'text/plain'
    0x02, // delivery-mode
    0xce, // frame end
    0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0c, // body frame: type 3, channel 1, size 12
    0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x57, 0x6f, 0x72, 0x6c, 0x64, 0x21, // 'Hello World!'
    0xce, // frame end
];

// Server to client, channel 1: the same message delivered to consumer
// "amq.ctag-golden" with delivery tag 1. 98 bytes.
#[rustfmt::skip]
const DELIVER_TRIPLE: &[u8] = &[
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x24, // method frame: type 1, channel 1, size 36
    0x00, 0x3c, 0x00, 0x3c, // class 60, method 60
    0x0f, 0x61, 0x6d, 0x71, 0x2e, 0x63, 0x74, 0x61, 0x67, 0x2d, 0x67, 0x6f, // consumer-tag: shortstr 'amq.ctag-golden'
    0x6c, 0x64, 0x65, 0x6e,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // delivery-tag
    0x00, // bits: redelivered=0
    0x00, // exchange: shortstr ''
    0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f, // routing-key: shortstr 'hello'
    0xce, // frame end
    0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1a, // header frame: type 2, channel 1, size 26
    0x00, 0x3c, // class basic
    0x00, 0x00, // weight
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // body size
    0x90, 0x00, // property flags: content-type (bit 15), delivery-mode (bit 12)
    0x0a, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, // content-type: shortstr 'text/plain'
    0x02, // delivery-mode
    0xce, // frame end
    0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0c, // body frame: type 3, channel 1, size 12
    0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x57, 0x6f, 0x72, 0x6c, 0x64, 0x21, // 'Hello World!'
    0xce, // frame end
];

// `queue.declare` of a durable quorum queue: bit packing and a table argument. 69 bytes.
#[rustfmt::skip]
const QUEUE_DECLARE: &[u8] = &[
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3d, // method frame: type 1, channel 1, size 61
    0x00, 0x32, 0x00, 0x0a, // class 50, method 10
    0x00, 0x00, // ticket
    0x06, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x73, // queue: shortstr 'orders'
    0x02, // bits: passive=0 durable=1 exclusive=0 auto-delete=0 no-wait=0
    0x00, 0x00, 0x00, 0x2b, // arguments: table, 43 bytes
        0x0c, 0x78, 0x2d, 0x71, 0x75, 0x65, 0x75, 0x65, 0x2d, 0x74, 0x79, 0x70, // 'x-queue-type': S 'quorum'
        0x65, 0x53, 0x00, 0x00, 0x00, 0x06, 0x71, 0x75, 0x6f, 0x72, 0x75, 0x6d,
        0x0d, 0x78, 0x2d, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x2d, 0x74, // 'x-message-ttl': I 60000
        0x74, 0x6c, 0x49, 0x00, 0x00, 0xea, 0x60,
    0xce, // frame end
];

// A field table with one value of each of RabbitMQ's 17 tags, in tag order. 141 bytes.
#[rustfmt::skip]
const EVERY_TAG_TABLE: &[u8] = &[
    0x00, 0x00, 0x00, 0x89, // length: table, 137 bytes
        0x01, 0x74, 0x74, 0x01, // 't': t true
        0x01, 0x62, 0x62, 0xfe, // 'b': b -2
        0x01, 0x42, 0x42, 0xfe, // 'B': B 254
        0x01, 0x73, 0x73, 0xfe, 0xd4, // 's': s -300
        0x01, 0x75, 0x75, 0xfd, 0xe8, // 'u': u 65000
        0x01, 0x49, 0x49, 0xff, 0xfe, 0xee, 0x90, // 'I': I -70000
        0x01, 0x69, 0x69, 0xee, 0x6b, 0x28, 0x00, // 'i': i 4000000000
        0x01, 0x6c, 0x6c, 0xff, 0xff, 0xff, 0xfe, 0xd5, 0xfa, 0x0e, 0x00, // 'l': l -5000000000
        0x01, 0x66, 0x66, 0x3f, 0xc0, 0x00, 0x00, // 'f': f 1.5
        0x01, 0x64, 0x64, 0xc0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 'd': d -2.25
        0x01, 0x44, 0x44, 0x02, 0xff, 0xff, 0xfb, 0x2e, // 'D': D scale 2, value -1234
        0x01, 0x53, 0x53, 0x00, 0x00, 0x00, 0x04, 0x74, 0x65, 0x78, 0x74, // 'S': S 'text'
        0x01, 0x78, 0x78, 0x00, 0x00, 0x00, 0x02, 0x00, 0xff, // 'x': x b'\x00\xff'
        0x01, 0x41, 0x41, 0x00, 0x00, 0x00, 0x0c, // 'A': A, 12 bytes
            0x49, 0x00, 0x00, 0x00, 0x01, // I 1
            0x53, 0x00, 0x00, 0x00, 0x01, 0x61, // S 'a'
            0x56, // V void
        0x01, 0x54, 0x54, 0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00, // 'T': T 1700000000
        0x01, 0x46, 0x46, // 'F': F
            0x00, 0x00, 0x00, 0x04, // nested table: table, 4 bytes
                0x01, 0x6b, 0x74, 0x00, // 'k': t false
        0x01, 0x56, 0x56, // 'V': V void
];

// A content header with all 14 basic properties set, in flag-bit order. 138 bytes.
#[rustfmt::skip]
const ALL_PROPERTIES_HEADER: &[u8] = &[
    0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x82, // header frame: type 2, channel 1, size 130
    0x00, 0x3c, // class basic
    0x00, 0x00, // weight
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // body size
    0xff, 0xfc, // property flags: all 14 (bits 15 to 2)
    0x10, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, // content-type: shortstr 'application/json'
    0x2f, 0x6a, 0x73, 0x6f, 0x6e,
    0x05, 0x75, 0x74, 0x66, 0x2d, 0x38, // content-encoding: shortstr 'utf-8'
    0x00, 0x00, 0x00, 0x0d, // headers: table, 13 bytes
        0x07, 0x78, 0x2d, 0x72, 0x65, 0x74, 0x72, 0x79, 0x49, 0x00, 0x00, 0x00, // 'x-retry': I 3
        0x03,
    0x02, // delivery-mode
    0x09, // priority
    0x03, 0x63, 0x2d, 0x31, // correlation-id: shortstr 'c-1'
    0x15, 0x61, 0x6d, 0x71, 0x2e, 0x72, 0x61, 0x62, 0x62, 0x69, 0x74, 0x6d, // reply-to: shortstr 'amq.rabbitmq.reply-to'
    0x71, 0x2e, 0x72, 0x65, 0x70, 0x6c, 0x79, 0x2d, 0x74, 0x6f,
    0x05, 0x36, 0x30, 0x30, 0x30, 0x30, // expiration: shortstr '60000'
    0x03, 0x6d, 0x2d, 0x31, // message-id: shortstr 'm-1'
    0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00, // timestamp
    0x0d, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x2e, 0x63, 0x72, 0x65, 0x61, 0x74, // type: shortstr 'order.created'
    0x65, 0x64,
    0x05, 0x67, 0x75, 0x65, 0x73, 0x74, // user-id: shortstr 'guest'
    0x06, 0x77, 0x61, 0x72, 0x72, 0x65, 0x6e, // app-id: shortstr 'warren'
    0x02, 0x63, 0x31, // cluster-id: shortstr 'c1'
    0xce, // frame end
];

// ---------------------------------------------------------------------------
// The values.
// ---------------------------------------------------------------------------

fn t(b: bool) -> FieldValue {
    FieldValue::Bool(b)
}

fn s(text: &str) -> FieldValue {
    FieldValue::LongStr(text.into())
}

fn method(channel: u16, m: impl Into<Method>) -> Frame {
    Frame::Method {
        channel,
        method: m.into(),
    }
}

fn connection_start() -> Frame {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", t(true))
        .with("exchange_exchange_bindings", t(true))
        .with("basic.nack", t(true))
        .with("consumer_cancel_notify", t(true))
        .with("connection.blocked", t(true))
        .with("authentication_failure_close", t(true));
    let server_properties = FieldTable::new()
        .with("capabilities", FieldValue::Table(capabilities))
        .with("cluster_name", s("rabbit@localhost"))
        .with("platform", s("Erlang/OTP 26.2"))
        .with("product", s("RabbitMQ"))
        .with("version", s("3.13.0"));
    method(
        0,
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties,
            mechanisms: "AMQPLAIN PLAIN".into(),
            locales: "en_US".into(),
        },
    )
}

fn connection_start_ok() -> Frame {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", t(true))
        .with("basic.nack", t(true))
        .with("consumer_cancel_notify", t(true));
    let client_properties = FieldTable::new()
        .with("product", s("warren-golden"))
        .with("capabilities", FieldValue::Table(capabilities));
    method(
        0,
        ConnectionStartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: LongStr(Bytes::from_static(b"\0guest\0guest")),
            locale: "en_US".into(),
        },
    )
}

fn connection_tune() -> Frame {
    method(
        0,
        ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
    )
}

fn connection_tune_ok() -> Frame {
    method(
        0,
        ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
    )
}

fn connection_open() -> Frame {
    method(
        0,
        ConnectionOpen {
            virtual_host: "/".into(),
            capabilities: ShortStr::empty(),
            insist: false,
        },
    )
}

fn connection_open_ok() -> Frame {
    method(
        0,
        ConnectionOpenOk {
            known_hosts: ShortStr::empty(),
        },
    )
}

const BODY: &[u8] = b"Hello World!";

fn text_plain_persistent() -> BasicProperties {
    BasicProperties {
        content_type: Some("text/plain".into()),
        delivery_mode: Some(2),
        ..Default::default()
    }
}

/// The header and body frames that follow a publish or a deliver.
fn content_frames() -> [Frame; 2] {
    [
        Frame::Header {
            channel: 1,
            header: ContentHeader {
                class_id: CLASS_BASIC,
                body_size: 12,
                properties: text_plain_persistent().into(),
            },
        },
        Frame::Body {
            channel: 1,
            payload: Bytes::from_static(BODY),
        },
    ]
}

fn publish() -> Method {
    BasicPublish {
        ticket: 0,
        exchange: ShortStr::empty(),
        routing_key: "hello".into(),
        mandatory: false,
        immediate: false,
    }
    .into()
}

fn deliver() -> Method {
    BasicDeliver {
        consumer_tag: "amq.ctag-golden".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: ShortStr::empty(),
        routing_key: "hello".into(),
    }
    .into()
}

fn queue_declare() -> Frame {
    method(
        1,
        QueueDeclare {
            ticket: 0,
            queue: "orders".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::new()
                .with("x-queue-type", s("quorum"))
                .with("x-message-ttl", FieldValue::I32(60_000)),
        },
    )
}

fn every_tag_table() -> FieldTable {
    FieldTable::new()
        .with("t", t(true))
        .with("b", FieldValue::I8(-2))
        .with("B", FieldValue::U8(254))
        .with("s", FieldValue::I16(-300))
        .with("u", FieldValue::U16(65_000))
        .with("I", FieldValue::I32(-70_000))
        .with("i", FieldValue::U32(4_000_000_000))
        .with("l", FieldValue::I64(-5_000_000_000))
        .with("f", FieldValue::F32(1.5))
        .with("d", FieldValue::F64(-2.25))
        .with(
            "D",
            FieldValue::Decimal(Decimal {
                scale: 2,
                value: -1234,
            }),
        )
        .with("S", s("text"))
        .with("x", FieldValue::Bytes(Bytes::from_static(b"\x00\xff")))
        .with(
            "A",
            FieldValue::Array(vec![FieldValue::I32(1), s("a"), FieldValue::Void]),
        )
        .with("T", FieldValue::Timestamp(1_700_000_000))
        .with(
            "F",
            FieldValue::Table(FieldTable::new().with("k", t(false))),
        )
        .with("V", FieldValue::Void)
}

fn all_properties_header() -> Frame {
    Frame::Header {
        channel: 1,
        header: ContentHeader {
            class_id: CLASS_BASIC,
            body_size: 5,
            properties: BasicProperties {
                content_type: Some("application/json".into()),
                content_encoding: Some("utf-8".into()),
                headers: Some(FieldTable::new().with("x-retry", FieldValue::I32(3))),
                delivery_mode: Some(2),
                priority: Some(9),
                correlation_id: Some("c-1".into()),
                reply_to: Some("amq.rabbitmq.reply-to".into()),
                expiration: Some("60000".into()),
                message_id: Some("m-1".into()),
                timestamp: Some(1_700_000_000),
                kind: Some("order.created".into()),
                user_id: Some("guest".into()),
                app_id: Some("warren".into()),
                cluster_id: Some("c1".into()),
            }
            .into(),
        },
    }
}

// ---------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------

const FRAME_MAX: u32 = 131_072;

/// Decodes every frame in `bytes`, which must hold whole frames only.
fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

/// Decodes `bytes` as if they arrived one byte per read.
fn decode_trickled(bytes: &[u8]) -> Vec<Frame> {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for b in bytes {
        buf.extend_from_slice(&[*b]);
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf.to_vec()
}

/// `bytes` decode to `frames`, whole or trickled, and `frames` encode to
/// exactly `bytes`.
fn check(bytes: &[u8], frames: &[Frame]) {
    assert_eq!(decode_all(bytes), frames);
    assert_eq!(decode_trickled(bytes), frames);
    assert_eq!(encode_all(frames), bytes);
}

#[test]
fn protocol_header() {
    assert_eq!(PROTOCOL_HEADER, PROTOCOL_HEADER_BYTES);
    assert_eq!(
        decode_protocol_header(PROTOCOL_HEADER_BYTES),
        ProtocolHeader::Amqp091
    );
}

#[test]
fn connection_start_frame() {
    check(CONNECTION_START, &[connection_start()]);
}

#[test]
fn connection_start_ok_frame() {
    check(CONNECTION_START_OK, &[connection_start_ok()]);
}

#[test]
fn connection_tune_frames() {
    check(CONNECTION_TUNE, &[connection_tune()]);
    check(CONNECTION_TUNE_OK, &[connection_tune_ok()]);
}

#[test]
fn connection_open_frames() {
    check(CONNECTION_OPEN, &[connection_open()]);
    check(CONNECTION_OPEN_OK, &[connection_open_ok()]);
}

/// Both directions of the handshake as continuous streams: the client's
/// starts with the protocol header, which is its own decode step.
#[test]
fn handshake_streams() {
    let client = [
        PROTOCOL_HEADER_BYTES,
        CONNECTION_START_OK,
        CONNECTION_TUNE_OK,
        CONNECTION_OPEN,
    ]
    .concat();
    assert_eq!(decode_protocol_header(&client), ProtocolHeader::Amqp091);
    let rest = &client[PROTOCOL_HEADER.len()..];
    check(
        rest,
        &[
            connection_start_ok(),
            connection_tune_ok(),
            connection_open(),
        ],
    );

    let server = [CONNECTION_START, CONNECTION_TUNE, CONNECTION_OPEN_OK].concat();
    check(
        &server,
        &[connection_start(), connection_tune(), connection_open_ok()],
    );
}

#[test]
fn publish_triple() {
    let [header, body] = content_frames();
    check(PUBLISH_TRIPLE, &[method(1, publish()), header, body]);

    // The broker-side writer gives the same bytes.
    let mut buf = BytesMut::new();
    let props = text_plain_persistent();
    encode_content(&mut buf, 1, &publish(), &props, BODY, FRAME_MAX as usize);
    assert_eq!(&buf[..], PUBLISH_TRIPLE);
}

#[test]
fn deliver_triple() {
    let [header, body] = content_frames();
    check(DELIVER_TRIPLE, &[method(1, deliver()), header, body]);

    let mut buf = BytesMut::new();
    let props = text_plain_persistent();
    encode_content(&mut buf, 1, &deliver(), &props, BODY, FRAME_MAX as usize);
    assert_eq!(&buf[..], DELIVER_TRIPLE);
}

#[test]
fn queue_declare_bits_and_arguments() {
    check(QUEUE_DECLARE, &[queue_declare()]);
}

#[test]
fn every_field_table_tag() {
    let bytes = Bytes::from_static(EVERY_TAG_TABLE);
    let mut r = Reader::new(&bytes);
    assert_eq!(r.table().unwrap(), every_tag_table());
    r.finish().unwrap();

    let mut buf = BytesMut::new();
    put_table(&mut buf, &every_tag_table());
    assert_eq!(&buf[..], EVERY_TAG_TABLE);
}

#[test]
fn all_fourteen_basic_properties() {
    check(ALL_PROPERTIES_HEADER, &[all_properties_header()]);
}
