//! Property tests: every value the codec can encode decodes to itself, and
//! no input bytes make the decoder panic.
//!
//! # Layout
//! - Value strategies: short and long strings, field values of every tag
//!   (`t b B s u I i l f d D S x A T F V`, arrays and tables nested a few
//!   levels deep), and one strategy per method of each class, 66 in all.
//! - Method and content-header frames: encode, decode with
//!   [`FrameDecoder`], compare.
//! - Field tables, including a wire-level encoder written here, apart from
//!   the codec's, so byte-for-byte checks do not just mirror `put_table`.
//! - Arbitrary bytes: as a whole read buffer, and as the payload behind a
//!   valid frame header.
//!
//! Floats make `==` useless for values holding a NaN, so every check
//! compares the re-encoded bytes, and compares values only when there is no
//! NaN inside.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; unwrap names the failing step"
)]

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use warren_codec::types::put_table;
use warren_codec::*;

// ---------------------------------------------------------------------------
// Strategies for primitive values.
// ---------------------------------------------------------------------------

/// Mostly short names, sometimes anything up to the 255-byte limit.
fn short_str() -> impl Strategy<Value = ShortStr> + Clone {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..16),
        1 => prop::collection::vec(any::<u8>(), 0..=ShortStr::MAX_LEN),
    ]
    .prop_map(|v| ShortStr::new(Bytes::from(v)).unwrap())
}

/// A short string a method argument may carry: any UTF-8 up to the
/// 255-byte limit (method arguments must be text; see
/// `method_arguments_must_be_utf8`).
fn text_str() -> impl Strategy<Value = ShortStr> + Clone {
    prop_oneof![
        4 => "\\PC{0,12}",
        1 => "\\PC{0,60}",
    ]
    .prop_map(|s: String| ShortStr::truncating(&s))
}

fn long_str() -> impl Strategy<Value = LongStr> + Clone {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..32),
        1 => prop::collection::vec(any::<u8>(), 0..1024),
    ]
    .prop_map(|v| LongStr(Bytes::from(v)))
}

/// Scalars of every tag; floats from raw bits so every NaN payload, infinity
/// and subnormal can turn up.
fn scalar_value() -> impl Strategy<Value = FieldValue> + Clone {
    prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<u32>().prop_map(|b| FieldValue::F32(f32::from_bits(b))),
        any::<u64>().prop_map(|b| FieldValue::F64(f64::from_bits(b))),
        (any::<u8>(), any::<i32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_str().prop_map(FieldValue::LongStr),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|v| FieldValue::Bytes(Bytes::from(v))),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
    ]
}

/// Any field value: scalars, and arrays and tables of them nested up to
/// three levels.
fn field_value() -> BoxedStrategy<FieldValue> {
    scalar_value()
        .prop_recursive(3, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                prop::collection::vec((short_str(), inner), 0..6)
                    .prop_map(|entries| FieldValue::Table(FieldTable(entries))),
            ]
        })
        .boxed()
}

fn field_table() -> BoxedStrategy<FieldTable> {
    prop::collection::vec((short_str(), field_value()), 0..8)
        .prop_map(FieldTable)
        .boxed()
}

fn value_has_nan(v: &FieldValue) -> bool {
    match v {
        FieldValue::F32(x) => x.is_nan(),
        FieldValue::F64(x) => x.is_nan(),
        FieldValue::Array(values) => values.iter().any(value_has_nan),
        FieldValue::Table(t) => table_has_nan(t),
        _ => false,
    }
}

fn table_has_nan(t: &FieldTable) -> bool {
    t.iter().any(|(_, v)| value_has_nan(v))
}

// ---------------------------------------------------------------------------
// One strategy per method, grouped by class, in the order of ALL_METHOD_IDS.
// ---------------------------------------------------------------------------

type MethodStrategy = BoxedStrategy<Method>;

/// `method!(Name { field: strategy, .. })` is a strategy for the method
/// `Name` drawing each field from its strategy; `method!(Name)` is the one
/// value of an argument-less method.
macro_rules! method {
    ($name:ident { $($field:ident: $strategy:expr),+ $(,)? }) => {
        ($($strategy,)+)
            .prop_map(|($($field,)+)| Method::from($name { $($field),+ }))
            .boxed()
    };
    ($name:ident) => {
        Just(Method::from($name)).boxed()
    };
}

fn bit() -> impl Strategy<Value = bool> {
    any::<bool>()
}

fn basic_methods() -> Vec<MethodStrategy> {
    vec![
        method!(BasicQos {
            prefetch_size: any::<u32>(),
            prefetch_count: any::<u16>(),
            global: bit()
        }),
        method!(BasicQosOk),
        method!(BasicConsume {
            ticket: any::<u16>(),
            queue: text_str(),
            consumer_tag: text_str(),
            no_local: bit(),
            no_ack: bit(),
            exclusive: bit(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(BasicConsumeOk {
            consumer_tag: text_str()
        }),
        method!(BasicCancel {
            consumer_tag: text_str(),
            nowait: bit()
        }),
        method!(BasicCancelOk {
            consumer_tag: text_str()
        }),
        method!(BasicPublish {
            ticket: any::<u16>(),
            exchange: text_str(),
            routing_key: text_str(),
            mandatory: bit(),
            immediate: bit(),
        }),
        method!(BasicReturn {
            reply_code: any::<u16>(),
            reply_text: text_str(),
            exchange: text_str(),
            routing_key: text_str(),
        }),
        method!(BasicDeliver {
            consumer_tag: text_str(),
            delivery_tag: any::<u64>(),
            redelivered: bit(),
            exchange: text_str(),
            routing_key: text_str(),
        }),
        method!(BasicGet {
            ticket: any::<u16>(),
            queue: text_str(),
            no_ack: bit()
        }),
        method!(BasicGetOk {
            delivery_tag: any::<u64>(),
            redelivered: bit(),
            exchange: text_str(),
            routing_key: text_str(),
            message_count: any::<u32>(),
        }),
        method!(BasicGetEmpty {
            cluster_id: text_str()
        }),
        method!(BasicAck {
            delivery_tag: any::<u64>(),
            multiple: bit()
        }),
        method!(BasicReject {
            delivery_tag: any::<u64>(),
            requeue: bit()
        }),
        method!(BasicRecoverAsync { requeue: bit() }),
        method!(BasicRecover { requeue: bit() }),
        method!(BasicRecoverOk),
        method!(BasicNack {
            delivery_tag: any::<u64>(),
            multiple: bit(),
            requeue: bit()
        }),
    ]
}

fn connection_methods() -> Vec<MethodStrategy> {
    vec![
        method!(ConnectionStart {
            version_major: any::<u8>(),
            version_minor: any::<u8>(),
            server_properties: field_table(),
            mechanisms: long_str(),
            locales: long_str(),
        }),
        method!(ConnectionStartOk {
            client_properties: field_table(),
            mechanism: text_str(),
            response: long_str(),
            locale: text_str(),
        }),
        method!(ConnectionSecure {
            challenge: long_str()
        }),
        method!(ConnectionSecureOk {
            response: long_str()
        }),
        method!(ConnectionTune {
            channel_max: any::<u16>(),
            frame_max: any::<u32>(),
            heartbeat: any::<u16>()
        }),
        method!(ConnectionTuneOk {
            channel_max: any::<u16>(),
            frame_max: any::<u32>(),
            heartbeat: any::<u16>()
        }),
        method!(ConnectionOpen {
            virtual_host: text_str(),
            capabilities: text_str(),
            insist: bit()
        }),
        method!(ConnectionOpenOk {
            known_hosts: text_str()
        }),
        method!(ConnectionClose {
            reply_code: any::<u16>(),
            reply_text: text_str(),
            class_id: any::<u16>(),
            method_id: any::<u16>(),
        }),
        method!(ConnectionCloseOk),
        method!(ConnectionBlocked { reason: text_str() }),
        method!(ConnectionUnblocked),
        method!(ConnectionUpdateSecret {
            new_secret: long_str(),
            reason: text_str()
        }),
        method!(ConnectionUpdateSecretOk),
    ]
}

fn channel_methods() -> Vec<MethodStrategy> {
    vec![
        method!(ChannelOpen {
            out_of_band: text_str()
        }),
        method!(ChannelOpenOk {
            channel_id: long_str()
        }),
        method!(ChannelFlow { active: bit() }),
        method!(ChannelFlowOk { active: bit() }),
        method!(ChannelClose {
            reply_code: any::<u16>(),
            reply_text: text_str(),
            class_id: any::<u16>(),
            method_id: any::<u16>(),
        }),
        method!(ChannelCloseOk),
    ]
}

fn access_methods() -> Vec<MethodStrategy> {
    vec![
        method!(AccessRequest {
            realm: text_str(),
            exclusive: bit(),
            passive: bit(),
            active: bit(),
            write: bit(),
            read: bit(),
        }),
        method!(AccessRequestOk {
            ticket: any::<u16>()
        }),
    ]
}

fn exchange_methods() -> Vec<MethodStrategy> {
    vec![
        method!(ExchangeDeclare {
            ticket: any::<u16>(),
            exchange: text_str(),
            kind: text_str(),
            passive: bit(),
            durable: bit(),
            auto_delete: bit(),
            internal: bit(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(ExchangeDeclareOk),
        method!(ExchangeDelete {
            ticket: any::<u16>(),
            exchange: text_str(),
            if_unused: bit(),
            nowait: bit()
        }),
        method!(ExchangeDeleteOk),
        method!(ExchangeBind {
            ticket: any::<u16>(),
            destination: text_str(),
            source: text_str(),
            routing_key: text_str(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(ExchangeBindOk),
        method!(ExchangeUnbind {
            ticket: any::<u16>(),
            destination: text_str(),
            source: text_str(),
            routing_key: text_str(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(ExchangeUnbindOk),
    ]
}

fn queue_methods() -> Vec<MethodStrategy> {
    vec![
        method!(QueueDeclare {
            ticket: any::<u16>(),
            queue: text_str(),
            passive: bit(),
            durable: bit(),
            exclusive: bit(),
            auto_delete: bit(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(QueueDeclareOk {
            queue: text_str(),
            message_count: any::<u32>(),
            consumer_count: any::<u32>()
        }),
        method!(QueueBind {
            ticket: any::<u16>(),
            queue: text_str(),
            exchange: text_str(),
            routing_key: text_str(),
            nowait: bit(),
            arguments: field_table(),
        }),
        method!(QueueBindOk),
        method!(QueuePurge {
            ticket: any::<u16>(),
            queue: text_str(),
            nowait: bit()
        }),
        method!(QueuePurgeOk {
            message_count: any::<u32>()
        }),
        method!(QueueDelete {
            ticket: any::<u16>(),
            queue: text_str(),
            if_unused: bit(),
            if_empty: bit(),
            nowait: bit(),
        }),
        method!(QueueDeleteOk {
            message_count: any::<u32>()
        }),
        method!(QueueUnbind {
            ticket: any::<u16>(),
            queue: text_str(),
            exchange: text_str(),
            routing_key: text_str(),
            arguments: field_table(),
        }),
        method!(QueueUnbindOk),
    ]
}

fn tx_methods() -> Vec<MethodStrategy> {
    vec![
        method!(TxSelect),
        method!(TxSelectOk),
        method!(TxCommit),
        method!(TxCommitOk),
        method!(TxRollback),
        method!(TxRollbackOk),
    ]
}

fn confirm_methods() -> Vec<MethodStrategy> {
    vec![
        method!(ConfirmSelect { nowait: bit() }),
        method!(ConfirmSelectOk),
    ]
}

/// One strategy per method of the spec, in the order of [`ALL_METHOD_IDS`].
fn method_strategies() -> Vec<MethodStrategy> {
    [
        basic_methods(),
        connection_methods(),
        channel_methods(),
        access_methods(),
        exchange_methods(),
        queue_methods(),
        tx_methods(),
        confirm_methods(),
    ]
    .concat()
}

fn any_method() -> impl Strategy<Value = Method> {
    Union::new(method_strategies())
}

/// The spec's default instance of every method, in the order of
/// [`ALL_METHOD_IDS`]: a deterministic floor under the random cases.
fn default_methods() -> Vec<Method> {
    vec![
        BasicQos::default().into(),
        BasicQosOk.into(),
        BasicConsume::default().into(),
        BasicConsumeOk::default().into(),
        BasicCancel::default().into(),
        BasicCancelOk::default().into(),
        BasicPublish::default().into(),
        BasicReturn::default().into(),
        BasicDeliver::default().into(),
        BasicGet::default().into(),
        BasicGetOk::default().into(),
        BasicGetEmpty::default().into(),
        BasicAck::default().into(),
        BasicReject::default().into(),
        BasicRecoverAsync::default().into(),
        BasicRecover::default().into(),
        BasicRecoverOk.into(),
        BasicNack::default().into(),
        ConnectionStart::default().into(),
        ConnectionStartOk::default().into(),
        ConnectionSecure::default().into(),
        ConnectionSecureOk::default().into(),
        ConnectionTune::default().into(),
        ConnectionTuneOk::default().into(),
        ConnectionOpen::default().into(),
        ConnectionOpenOk::default().into(),
        ConnectionClose::default().into(),
        ConnectionCloseOk.into(),
        ConnectionBlocked::default().into(),
        ConnectionUnblocked.into(),
        ConnectionUpdateSecret::default().into(),
        ConnectionUpdateSecretOk.into(),
        ChannelOpen::default().into(),
        ChannelOpenOk::default().into(),
        ChannelFlow::default().into(),
        ChannelFlowOk::default().into(),
        ChannelClose::default().into(),
        ChannelCloseOk.into(),
        AccessRequest::default().into(),
        AccessRequestOk::default().into(),
        ExchangeDeclare::default().into(),
        ExchangeDeclareOk.into(),
        ExchangeDelete::default().into(),
        ExchangeDeleteOk.into(),
        ExchangeBind::default().into(),
        ExchangeBindOk.into(),
        ExchangeUnbind::default().into(),
        ExchangeUnbindOk.into(),
        QueueDeclare::default().into(),
        QueueDeclareOk::default().into(),
        QueueBind::default().into(),
        QueueBindOk.into(),
        QueuePurge::default().into(),
        QueuePurgeOk::default().into(),
        QueueDelete::default().into(),
        QueueDeleteOk::default().into(),
        QueueUnbind::default().into(),
        QueueUnbindOk.into(),
        TxSelect.into(),
        TxSelectOk.into(),
        TxCommit.into(),
        TxCommitOk.into(),
        TxRollback.into(),
        TxRollbackOk.into(),
        ConfirmSelect::default().into(),
        ConfirmSelectOk.into(),
    ]
}

/// The field tables a method carries, to look for NaNs in.
fn method_tables(m: &Method) -> Vec<&FieldTable> {
    match m {
        Method::BasicConsume(m) => vec![&m.arguments],
        Method::ConnectionStart(m) => vec![&m.server_properties],
        Method::ConnectionStartOk(m) => vec![&m.client_properties],
        Method::ExchangeDeclare(m) => vec![&m.arguments],
        Method::ExchangeBind(m) => vec![&m.arguments],
        Method::ExchangeUnbind(m) => vec![&m.arguments],
        Method::QueueDeclare(m) => vec![&m.arguments],
        Method::QueueBind(m) => vec![&m.arguments],
        Method::QueueUnbind(m) => vec![&m.arguments],
        // A table-bearing method missing here can only make the value
        // comparison below fail on a NaN, never hide a difference.
        _ => Vec::new(),
    }
}

fn method_has_nan(m: &Method) -> bool {
    method_tables(m).into_iter().any(table_has_nan)
}

fn ids(m: &Method) -> (u16, u16) {
    (m.class_id(), m.method_id())
}

// ---------------------------------------------------------------------------
// Shared checks.
// ---------------------------------------------------------------------------

/// Encodes `method` as a frame, decodes it with a decoder whose limit is
/// exactly the frame's size, and checks value and bytes.
fn check_method_frame(channel: u16, method: &Method) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode_method(&mut buf, channel, method);
    let wire = buf.clone().freeze();

    // A frame of exactly max_frame bytes is accepted; one byte less refuses it.
    let exact = u32::try_from(wire.len()).unwrap();
    let refused = FrameDecoder::new(exact - 1).decode(&mut buf.clone());
    let refused_ok = matches!(
        refused,
        Err(DecodeError {
            kind: ErrorKind::FrameTooLarge { .. },
            ..
        })
    );
    prop_assert!(refused_ok, "{refused:?}");

    let frame = FrameDecoder::new(exact).decode(&mut buf)?;
    prop_assert!(buf.is_empty(), "the decoder left {} bytes", buf.len());
    let Some(Frame::Method {
        channel: got_channel,
        method: decoded,
    }) = frame
    else {
        return Err(TestCaseError::fail(format!(
            "not a method frame: {frame:?}"
        )));
    };
    prop_assert_eq!(got_channel, channel);
    prop_assert_eq!(ids(&decoded), ids(method));

    let mut again = BytesMut::new();
    encode_method(&mut again, channel, &decoded);
    prop_assert_eq!(&again[..], &wire[..]);
    if !method_has_nan(method) {
        prop_assert_eq!(&decoded, method);
    }
    Ok(())
}

/// Takes frames off `buf` until it needs more bytes or fails, checking
/// that a failed or waiting decode never panics and that waiting leaves
/// the buffer's content alone. Every frame it gets must survive
/// encode-then-decode.
fn drain(decoder: &FrameDecoder, buf: &mut BytesMut) -> Result<(), TestCaseError> {
    loop {
        let before = buf.clone();
        match decoder.decode(buf) {
            Ok(Some(frame)) => {
                prop_assert!(buf.len() < before.len(), "a frame consumed no bytes");
                let mut wire = BytesMut::new();
                frame.encode(&mut wire);
                let len = wire.len();
                let again = FrameDecoder::new(u32::try_from(len).unwrap())
                    .decode(&mut wire)
                    .map_err(|e| TestCaseError::fail(format!("re-encoded {frame:?}: {e}")))?;
                prop_assert!(wire.is_empty());
                let again = again.unwrap();
                let mut wire2 = BytesMut::new();
                again.encode(&mut wire2);
                prop_assert_eq!(len, wire2.len());
                if !frame_has_nan(&frame) {
                    prop_assert_eq!(again, frame);
                }
            }
            Ok(None) => {
                prop_assert_eq!(&buf[..], &before[..]);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

fn frame_has_nan(f: &Frame) -> bool {
    match f {
        Frame::Method { method, .. } => method_has_nan(method),
        Frame::Header { header, .. } => header
            .properties
            .headers
            .as_ref()
            .is_some_and(table_has_nan),
        Frame::Body { .. } | Frame::Heartbeat { .. } => false,
    }
}

fn table_bytes(t: &FieldTable) -> Bytes {
    let mut buf = BytesMut::new();
    put_table(&mut buf, t);
    buf.freeze()
}

fn decode_table(bytes: &Bytes) -> Result<FieldTable, DecodeError> {
    let mut r = Reader::new(bytes);
    let t = r.table()?;
    r.finish()?;
    Ok(t)
}

// ---------------------------------------------------------------------------
// (a) Methods.
// ---------------------------------------------------------------------------

#[test]
fn strategies_cover_every_method_id() {
    let mut runner = TestRunner::deterministic();
    let mut seen = Vec::new();
    for (i, strategy) in method_strategies().iter().enumerate() {
        let first = ids(&strategy.new_tree(&mut runner).unwrap().current());
        // Each strategy builds one method only: sample it a few more times.
        for _ in 0..8 {
            let again = ids(&strategy.new_tree(&mut runner).unwrap().current());
            assert_eq!(again, first, "strategy {i} builds two different methods");
        }
        seen.push(first);
    }
    assert_eq!(seen, ALL_METHOD_IDS, "strategies out of step with the spec");
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 66);
}

#[test]
fn default_instances_cover_every_method_and_round_trip() {
    let methods = default_methods();
    let got: Vec<_> = methods.iter().map(ids).collect();
    assert_eq!(got, ALL_METHOD_IDS);
    for (channel, m) in methods.iter().enumerate() {
        check_method_frame(u16::try_from(channel).unwrap(), m).unwrap();
    }
}

/// 64 random cases for each of the 66 methods, so none is left to chance.
#[test]
fn every_method_round_trips_through_a_frame() {
    for (strategy, (class_id, method_id)) in method_strategies().into_iter().zip(ALL_METHOD_IDS) {
        let mut runner = TestRunner::new(Config::with_cases(64));
        runner
            .run(&(any::<u16>(), strategy), |(channel, method)| {
                check_method_frame(channel, &method)
            })
            .unwrap_or_else(|e| panic!("method {{{class_id},{method_id}}}: {e}"));
    }
}

proptest! {
    /// Many frames back to back in one buffer, arriving in two reads split
    /// at an arbitrary point: frame boundaries are found and nothing is
    /// consumed before a frame is whole.
    #[test]
    fn frame_streams_split_anywhere_decode_in_order(
        frames in prop::collection::vec((any::<u16>(), any_method()), 1..8),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for (channel, m) in &frames {
            encode_method(&mut wire, *channel, m);
        }
        let at = split.index(wire.len() + 1);
        let decoder = FrameDecoder::new(u32::MAX);
        let mut buf = BytesMut::from(&wire[..at]);
        let mut got = Vec::new();
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf)? {
                Some(frame) => got.push(frame),
                None => {
                    prop_assert_eq!(&buf[..], &before[..]);
                    break;
                }
            }
        }
        buf.extend_from_slice(&wire[at..]);
        while let Some(frame) = decoder.decode(&mut buf)? {
            got.push(frame);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), frames.len());
        for (frame, (channel, m)) in got.iter().zip(&frames) {
            let Frame::Method { channel: c, method } = frame else {
                return Err(TestCaseError::fail(format!("{frame:?}")));
            };
            prop_assert_eq!(c, channel);
            if !method_has_nan(m) {
                prop_assert_eq!(method, m);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (b) Content headers and whole contents.
// ---------------------------------------------------------------------------

fn basic_properties() -> impl Strategy<Value = BasicProperties> {
    let s = || prop::option::of(short_str());
    (
        (
            s(),
            s(),
            prop::option::of(field_table()),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
            s(),
            s(),
        ),
        (s(), s(), any::<Option<u64>>(), s(), s(), s(), s()),
    )
        .prop_map(
            |(
                (
                    content_type,
                    content_encoding,
                    headers,
                    delivery_mode,
                    priority,
                    correlation_id,
                    reply_to,
                ),
                (expiration, message_id, timestamp, kind, user_id, app_id, cluster_id),
            )| BasicProperties {
                content_type,
                content_encoding,
                headers,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
                expiration,
                message_id,
                timestamp,
                kind,
                user_id,
                app_id,
                cluster_id,
            },
        )
}

proptest! {
    #[test]
    fn content_headers_round_trip(
        channel in any::<u16>(),
        body_size in any::<u64>(),
        properties in basic_properties(),
    ) {
        let header = ContentHeader { class_id: CLASS_BASIC, body_size, properties: properties.into() };
        let mut buf = BytesMut::new();
        encode_header(&mut buf, channel, &header);
        let wire = buf.clone().freeze();
        let frame = FrameDecoder::new(u32::MAX).decode(&mut buf)?;
        prop_assert!(buf.is_empty());
        let Some(Frame::Header { channel: c, header: decoded }) = frame else {
            return Err(TestCaseError::fail(format!("not a header frame: {frame:?}")));
        };
        prop_assert_eq!(c, channel);
        let mut again = BytesMut::new();
        encode_header(&mut again, channel, &decoded);
        prop_assert_eq!(&again[..], &wire[..]);
        // The payload-level pair agrees with the frame-level one.
        let mut payload = BytesMut::new();
        header.encode(&mut payload);
        prop_assert_eq!(&payload[..], &wire[7..wire.len() - 1]);
        let direct = ContentHeader::decode(&payload.freeze())?;
        let mut direct_wire = BytesMut::new();
        encode_header(&mut direct_wire, channel, &direct);
        prop_assert_eq!(&direct_wire[..], &wire[..]);
        if !header.properties.headers.as_ref().is_some_and(table_has_nan) {
            prop_assert_eq!(decoded, header);
        }
    }

    /// A publish as `encode_content` writes it: the method, the header and
    /// the body cut to `frame_max`, decoded with the same limit.
    #[test]
    fn contents_split_by_frame_max_reassemble(
        frame_max in 4096u32..=16384,
        body in prop::collection::vec(any::<u8>(), 0..40_000),
        routing_key in text_str(),
    ) {
        let method = Method::from(BasicPublish { routing_key, ..Default::default() });
        let properties = BasicProperties { delivery_mode: Some(2), ..Default::default() };
        let mut buf = BytesMut::new();
        encode_content(&mut buf, 7, &method, &properties, &body, frame_max as usize);
        let decoder = FrameDecoder::new(frame_max);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
        prop_assert!(buf.is_empty());
        prop_assert!(frames.iter().all(|f| f.channel() == 7));
        let Frame::Method { method: got, .. } = &frames[0] else {
            return Err(TestCaseError::fail("no method frame first"));
        };
        prop_assert_eq!(got, &method);
        let Frame::Header { header, .. } = &frames[1] else {
            return Err(TestCaseError::fail("no header frame second"));
        };
        prop_assert_eq!(header.body_size, body.len() as u64);
        prop_assert_eq!(&header.properties, &properties);
        let chunk = frame_max as usize - FRAME_OVERHEAD;
        prop_assert_eq!(frames.len() - 2, body.len().div_ceil(chunk));
        let mut joined = Vec::new();
        for f in &frames[2..] {
            let Frame::Body { payload, .. } = f else {
                return Err(TestCaseError::fail(format!("not a body frame: {f:?}")));
            };
            prop_assert!(!payload.is_empty() && payload.len() <= chunk);
            joined.extend_from_slice(payload);
        }
        prop_assert_eq!(joined, body);
    }
}

// ---------------------------------------------------------------------------
// (c) Field tables.
// ---------------------------------------------------------------------------

/// Bytes as sent, and the canonical bytes the codec re-encodes them to.
type Wire = (Vec<u8>, Vec<u8>);

/// A field value encoded by hand from the spec's tag list, apart from the
/// codec's encoder: `(wire, canonical)`. They differ only where a `t`
/// carries an octet other than 0 or 1, which decodes as `true` (as RabbitMQ
/// reads it) and so re-encodes as 1.
fn raw_value() -> BoxedStrategy<Wire> {
    fn fixed(tag: u8, n: usize) -> BoxedStrategy<Wire> {
        prop::collection::vec(any::<u8>(), n)
            .prop_map(move |payload| {
                let mut v = vec![tag];
                v.extend(payload);
                (v.clone(), v)
            })
            .boxed()
    }
    fn long(tag: u8) -> BoxedStrategy<Wire> {
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(move |payload| {
                let mut v = vec![tag];
                v.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
                v.extend(payload);
                (v.clone(), v)
            })
            .boxed()
    }
    let leaf = prop_oneof![
        any::<u8>().prop_map(|b| (vec![b't', b], vec![b't', u8::from(b != 0)])),
        fixed(b'b', 1),
        fixed(b'B', 1),
        fixed(b's', 2),
        fixed(b'u', 2),
        fixed(b'I', 4),
        fixed(b'i', 4),
        fixed(b'l', 8),
        fixed(b'f', 4),
        fixed(b'd', 8),
        fixed(b'D', 5),
        long(b'S'),
        long(b'x'),
        fixed(b'T', 8),
        fixed(b'V', 0),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|values| {
                let (raw, canon): (Vec<_>, Vec<_>) = values.into_iter().unzip();
                (
                    with_len(b'A', &raw.concat()),
                    with_len(b'A', &canon.concat()),
                )
            }),
            prop::collection::vec((raw_key(), inner), 0..6).prop_map(|entries| {
                let (raw, canon) = raw_entries(entries);
                (with_len(b'F', &raw), with_len(b'F', &canon))
            }),
        ]
    })
    .boxed()
}

fn raw_key() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(|k| {
        let mut v = vec![u8::try_from(k.len()).unwrap()];
        v.extend(k);
        v
    })
}

fn raw_entries(entries: Vec<(Vec<u8>, Wire)>) -> Wire {
    let (mut raw, mut canon) = (Vec::new(), Vec::new());
    for (key, (r, c)) in entries {
        raw.extend(&key);
        raw.extend(r);
        canon.extend(key);
        canon.extend(c);
    }
    (raw, canon)
}

/// `tag` (if not 0) then a 32-bit length then `body`.
fn with_len(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    if tag != 0 {
        v.push(tag);
    }
    v.extend(u32::try_from(body.len()).unwrap().to_be_bytes());
    v.extend(body);
    v
}

fn raw_table() -> impl Strategy<Value = Wire> {
    prop::collection::vec((raw_key(), raw_value()), 0..8).prop_map(|entries| {
        let (raw, canon) = raw_entries(entries);
        (with_len(0, &raw), with_len(0, &canon))
    })
}

proptest! {
    #[test]
    fn tables_round_trip_by_value_and_by_bytes(table in field_table()) {
        let wire = table_bytes(&table);
        let decoded = decode_table(&wire)?;
        prop_assert_eq!(&table_bytes(&decoded)[..], &wire[..]);
        if !table_has_nan(&table) {
            prop_assert_eq!(decoded, table);
        }
    }

    /// Bytes from an encoder written apart from the codec's decode, and
    /// re-encode to the same bytes (after bool octets become 0 or 1).
    #[test]
    fn hand_encoded_tables_re_encode_byte_for_byte((raw, canonical) in raw_table()) {
        let raw = Bytes::from(raw);
        let decoded = decode_table(&raw)?;
        prop_assert_eq!(&table_bytes(&decoded)[..], &canonical[..]);
        // And decoding the canonical form gives the same table.
        let again = decode_table(&Bytes::from(canonical))?;
        prop_assert_eq!(table_bytes(&again), table_bytes(&decoded));
    }

    /// Arbitrary bytes behind a table's length prefix: decoding never
    /// panics, and what it accepts re-encodes to as many bytes.
    #[test]
    fn arbitrary_table_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let wire = Bytes::from(with_len(0, &body));
        if let Ok(table) = decode_table(&wire) {
            let again = table_bytes(&table);
            prop_assert_eq!(again.len(), wire.len());
            prop_assert_eq!(table_bytes(&decode_table(&again)?), again);
        }
    }
}

#[test]
fn non_canonical_bool_octets_decode_as_true() {
    let wire = Bytes::from(with_len(0, b"\x01kt\x02"));
    let table = decode_table(&wire).unwrap();
    assert_eq!(table.get("k"), Some(&FieldValue::Bool(true)));
    assert_eq!(&table_bytes(&table)[..], &with_len(0, b"\x01kt\x01")[..]);
}

#[test]
fn nesting_up_to_the_limit_round_trips_and_one_more_is_refused() {
    fn nested(levels: usize) -> FieldTable {
        let mut t = FieldTable::new().with("leaf", FieldValue::Void);
        for _ in 0..levels {
            t = FieldTable::new().with("t", FieldValue::Table(t));
        }
        t
    }
    // The outermost table is level 0; MAX_NESTING - 1 tables fit inside it.
    let deepest = nested(MAX_NESTING - 1);
    assert_eq!(decode_table(&table_bytes(&deepest)).unwrap(), deepest);
    let err = decode_table(&table_bytes(&nested(MAX_NESTING))).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooDeep);
}

// ---------------------------------------------------------------------------
// (d) Arbitrary bytes.
// ---------------------------------------------------------------------------

/// A frame with a valid header and end octet around an arbitrary payload.
/// Method payloads mostly start with a real class and method id so the
/// argument decoders see the garbage.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    let ids = prop::sample::select(ALL_METHOD_IDS);
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (ids, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|((c, m), args)| {
            let mut v = Vec::new();
            v.extend(c.to_be_bytes());
            v.extend(m.to_be_bytes());
            v.extend(args);
            v
        }),
    ];
    let kind = prop_oneof![
        4 => Just(FRAME_METHOD),
        2 => Just(FRAME_HEADER),
        1 => Just(FRAME_BODY),
        1 => Just(FRAME_HEARTBEAT),
        1 => any::<u8>(),
    ];
    (kind, any::<u16>(), payload).prop_map(|(kind, channel, payload)| {
        let mut v = vec![kind];
        v.extend(channel.to_be_bytes());
        v.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend(payload);
        v.push(FRAME_END);
        v
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        small in any::<bool>(),
    ) {
        let decoder = FrameDecoder::new(if small { 4096 } else { 131_072 });
        drain(&decoder, &mut BytesMut::from(&bytes[..]))?;
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(
        frames in prop::collection::vec(framed_garbage(), 1..4),
        small in any::<bool>(),
    ) {
        let decoder = FrameDecoder::new(if small { 4096 } else { 131_072 });
        drain(&decoder, &mut BytesMut::from(&frames.concat()[..]))?;
    }

    /// Arbitrary bytes straight into `Method::decode` and
    /// `ContentHeader::decode`, with a real id in front half the time.
    #[test]
    fn arbitrary_method_and_header_payloads_never_panic(
        (class_id, method_id) in prop::sample::select(ALL_METHOD_IDS),
        real in any::<bool>(),
        args in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut payload = Vec::new();
        if real {
            payload.extend(class_id.to_be_bytes());
            payload.extend(method_id.to_be_bytes());
        }
        payload.extend(&args);
        let payload = Bytes::from(payload);
        if let Ok(m) = Method::decode(&payload) {
            prop_assert!(payload.len() >= 4);
            let mut again = BytesMut::new();
            m.encode(&mut again);
            prop_assert_eq!(again.len(), payload.len());
        }
        let mut header = Vec::from(CLASS_BASIC.to_be_bytes());
        header.extend(&args);
        let _ = ContentHeader::decode(&Bytes::from(header));
        let _ = ContentHeader::decode(&Bytes::from(args));
    }

    /// Real frames (a method, or a content header) with one payload byte
    /// replaced and the payload cut short: the damage lands inside
    /// strings, tables and property lists, deeper than random bytes reach.
    #[test]
    fn damaged_frames_never_panic(
        method in any_method(),
        properties in basic_properties(),
        header in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        if header {
            let h = ContentHeader { class_id: CLASS_BASIC, body_size: 0, properties: properties.into() };
            encode_header(&mut wire, 3, &h);
        } else {
            encode_method(&mut wire, 3, &method);
        }
        let mut payload = wire[7..wire.len() - 1].to_vec();
        let i = at.index(payload.len());
        payload[i] = byte;
        payload.truncate(payload.len() - cut.index(payload.len() / 4 + 1));
        let mut frame = vec![if header { FRAME_HEADER } else { FRAME_METHOD }, 0, 3];
        frame.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
        frame.extend(payload);
        frame.push(FRAME_END);
        drain(&FrameDecoder::new(u32::MAX), &mut BytesMut::from(&frame[..]))?;
    }
}

#[test]
fn method_arguments_must_be_utf8() {
    // queue.declare of a queue named ff fe: RabbitMQ closes the connection
    // with 501 FRAME_ERROR "Malformed UTF-8 in shortstr".
    let name = ShortStr::new(Bytes::from_static(b"\xff\xfe")).unwrap();
    let mut buf = BytesMut::new();
    encode_method(
        &mut buf,
        1,
        &Method::from(QueueDeclare {
            queue: name.clone(),
            ..Default::default()
        }),
    );
    let err = FrameDecoder::new(131072).decode(&mut buf).unwrap_err();
    assert_eq!(err.kind, ErrorKind::MalformedUtf8);
    assert_eq!(err.reply_code(), ReplyCode::FrameError);
    assert_eq!((err.class_id, err.method_id), (50, 10));
    assert_eq!(err.to_string(), "Malformed UTF-8 in shortstr");

    // Content properties and table keys are not checked, as in RabbitMQ.
    let props = BasicProperties {
        content_type: Some(name.clone()),
        headers: Some(FieldTable(vec![(name, FieldValue::Bool(true))])),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    let publish = Method::from(BasicPublish {
        routing_key: "é".into(),
        ..Default::default()
    });
    encode_content(&mut buf, 1, &publish, &props, b"x", 131072);
    let decoder = FrameDecoder::new(131072);
    let mut frames = 0;
    while decoder.decode(&mut buf).unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 3);
}
