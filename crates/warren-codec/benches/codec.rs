//! Hot-path codec costs: decoding a publish triple and encoding a deliver
//! triple, as a broker does for every message.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "criterion macros generate undocumented items; a bench may panic"
)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use warren_codec::{
    BasicDeliver, BasicProperties, BasicPublish, ContentHeader, FieldTable, FieldValue, Frame,
    FrameDecoder, Method, ShortStr, encode_body, encode_header, encode_method,
};

fn properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from("application/json")),
        delivery_mode: Some(2),
        correlation_id: Some(ShortStr::from("c-123")),
        headers: Some(FieldTable::new().with("x-trace", FieldValue::LongStr("abc".into()))),
        ..Default::default()
    }
}

fn publish_triple(properties: BasicProperties) -> Bytes {
    let mut buf = BytesMut::new();
    let publish = Method::from(BasicPublish {
        exchange: ShortStr::from("amq.direct"),
        routing_key: ShortStr::from("orders.created"),
        ..Default::default()
    });
    encode_method(&mut buf, 1, &publish);
    let header = ContentHeader {
        class_id: 60,
        body_size: 16,
        properties: properties.into(),
    };
    encode_header(&mut buf, 1, &header);
    encode_body(&mut buf, 1, &[0x42; 16]);
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    let decoder = FrameDecoder::new(131072);
    // A read buffer holding many triples, as after one large socket read;
    // refilled outside the timed section.
    for (name, wire) in [
        ("decode publish triple", publish_triple(properties())),
        (
            "decode publish triple, no properties",
            publish_triple(BasicProperties::default()),
        ),
    ] {
        c.bench_function(name, |b| {
            let mut buf = BytesMut::new();
            b.iter(|| {
                if buf.is_empty() {
                    for _ in 0..1024 {
                        buf.extend_from_slice(&wire);
                    }
                }
                for _ in 0..3 {
                    let frame = decoder.decode(&mut buf).unwrap();
                    black_box(&frame);
                }
            })
        });
    }

    let header = ContentHeader {
        class_id: 60,
        body_size: 16,
        properties: properties().into(),
    };
    let body = Bytes::from_static(&[0x42; 16]);
    let deliver = Method::from(BasicDeliver {
        consumer_tag: ShortStr::from("amq.ctag-0123456789abcdef"),
        delivery_tag: 12345,
        redelivered: false,
        exchange: ShortStr::from("amq.direct"),
        routing_key: ShortStr::from("orders.created"),
    });
    c.bench_function("encode deliver triple", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            if out.len() > (1 << 20) - 512 {
                out.clear();
            }
            encode_method(&mut out, 1, black_box(&deliver));
            encode_header(&mut out, 1, black_box(&header));
            encode_body(&mut out, 1, black_box(&body));
        })
    });
    let _ = Frame::Heartbeat { channel: 0 };
}

criterion_group!(benches, bench);
criterion_main!(benches);
