//! Frames: the protocol header, and method, content-header, body and
//! heartbeat frames in both directions.
//!
//! Decoding is "check, then parse", length first: the 7-byte header is read
//! with nom's *streaming* parsers (too few bytes means "read more"), a size
//! above the limit is refused before anything is buffered, and only once
//! `size + 8` bytes are present is the payload handed to the complete
//! parsers, where running short means the frame is malformed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::Parser;
use nom::number::streaming::{be_u8, be_u16, be_u32};

use crate::error::{DecodeError, ErrorKind};
use crate::generated::{
    BasicProperties, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method,
};
use crate::types::Reader;

/// The protocol header a 0-9-1 client opens with, and the one we answer a
/// mismatch with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Bytes of frame overhead: 7 of header and the end octet.
pub const FRAME_OVERHEAD: usize = 8;

/// Outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Not enough bytes yet to decide.
    Incomplete,
    /// `AMQP 0-9-1`; the 8 bytes may be consumed.
    Amqp091,
    /// Anything else: answer with [`PROTOCOL_HEADER`] and close.
    Mismatch,
}

/// Checks the start of a connection for the 0-9-1 protocol header. Decides
/// as soon as a byte differs, so an HTTP request is refused at once.
pub fn decode_protocol_header(buf: &[u8]) -> ProtocolHeader {
    let n = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..n] != PROTOCOL_HEADER[..n] {
        ProtocolHeader::Mismatch
    } else if n < PROTOCOL_HEADER.len() {
        ProtocolHeader::Incomplete
    } else {
        ProtocolHeader::Amqp091
    }
}

/// Content properties as headers and messages carry them: a null pointer
/// when none is set, a box otherwise. [`BasicProperties`] is some 450
/// bytes; most messages set no property, and building, comparing and
/// dropping an empty struct per message was a tenth of the publish path.
/// Reads go through `Deref`; equality compares the properties.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<BasicProperties>>);

static NO_PROPERTIES: std::sync::LazyLock<BasicProperties> =
    std::sync::LazyLock::new(BasicProperties::default);

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Mutable access, allocating the struct if none was set.
    pub fn make_mut(&mut self) -> &mut BasicProperties {
        self.0.get_or_insert_with(Box::default)
    }

    /// The properties as a plain struct.
    pub fn into_inner(self) -> BasicProperties {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

impl From<BasicProperties> for Properties {
    fn from(p: BasicProperties) -> Self {
        if p == *NO_PROPERTIES {
            Properties(None)
        } else {
            Properties(Some(Box::new(p)))
        }
    }
}

impl std::ops::Deref for Properties {
    type Target = BasicProperties;

    fn deref(&self) -> &BasicProperties {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl PartialEq<BasicProperties> for Properties {
    fn eq(&self, other: &BasicProperties) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A content header frame's payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentHeader {
    /// Class of the content; must match the method that announced it.
    pub class_id: u16,
    /// Total body size in bytes.
    pub body_size: u64,
    /// The properties. Only class `basic` has any; for other classes this
    /// stays empty and the receiver reports the class mismatch.
    pub properties: Properties,
}

impl ContentHeader {
    /// Decodes a header frame payload. No property flag set (the common
    /// case) allocates nothing; otherwise the properties are decoded
    /// straight into their box.
    pub fn decode(payload: &[u8]) -> Result<ContentHeader, DecodeError> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let _weight = r.u16()?;
        let body_size = r.u64()?;
        let mut properties = Properties::default();
        if class_id == crate::generated::CLASS_BASIC {
            if payload.get(12..14) == Some(&[0, 0][..]) {
                // Flags 0: no property and no continuation word.
                r.u16()?;
            } else {
                let mut boxed = Box::<BasicProperties>::default();
                boxed
                    .decode_into(&mut r)
                    .map_err(|e| e.in_method(class_id, 0))?;
                // Flags with only empty continuation words: still none.
                if *boxed != *NO_PROPERTIES {
                    properties = Properties(Some(boxed));
                }
            }
            r.finish().map_err(|e| e.in_method(class_id, 0))?;
        }
        Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        })
    }

    /// Writes the payload (weight 0).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class_id);
        buf.put_u16(0);
        buf.put_u64(self.body_size);
        self.properties.encode(buf);
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number.
        channel: u16,
        /// The method.
        method: Method,
    },
    /// A content header frame.
    Header {
        /// Channel number.
        channel: u16,
        /// The header.
        header: ContentHeader,
    },
    /// A content body frame: a zero-copy slice of the read buffer.
    Body {
        /// Channel number.
        channel: u16,
        /// The body bytes.
        payload: Bytes,
    },
    /// A heartbeat. Valid only on channel 0; the receiver checks.
    Heartbeat {
        /// Channel number.
        channel: u16,
    },
}

impl Frame {
    /// The channel the frame is on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }

    /// Appends the encoded frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(buf, *channel, method),
            Frame::Header { channel, header } => encode_header(buf, *channel, header),
            Frame::Body { channel, payload } => encode_body(buf, *channel, payload),
            Frame::Heartbeat { channel } => {
                buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
                let at = buf.len() - 7;
                buf[at..at + 2].copy_from_slice(&channel.to_be_bytes());
            }
        }
    }
}

fn begin(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    buf.put_u8(kind);
    buf.put_u16(channel);
    let at = buf.len();
    buf.put_u32(0);
    at
}

fn end(buf: &mut BytesMut, size_at: usize) {
    let size = buf.len() - size_at - 4;
    let size = u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes();
    buf[size_at..size_at + 4].copy_from_slice(&size);
    buf.put_u8(FRAME_END);
}

/// Appends a method frame.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &Method) {
    let at = begin(buf, FRAME_METHOD, channel);
    method.encode(buf);
    end(buf, at);
}

/// Appends a content header frame.
pub fn encode_header(buf: &mut BytesMut, channel: u16, header: &ContentHeader) {
    encode_content_header(
        buf,
        channel,
        header.class_id,
        header.body_size,
        &header.properties,
    );
}

/// Appends a content header frame from its parts, so a sender holding the
/// properties of a stored message need not clone them into a
/// [`ContentHeader`].
pub fn encode_content_header(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: &BasicProperties,
) {
    let at = begin(buf, FRAME_HEADER, channel);
    buf.put_u16(class_id);
    buf.put_u16(0);
    buf.put_u64(body_size);
    properties.encode(buf);
    end(buf, at);
}

/// Appends one body frame holding all of `payload` (the caller splits).
pub fn encode_body(buf: &mut BytesMut, channel: u16, payload: &[u8]) {
    buf.reserve(payload.len() + FRAME_OVERHEAD);
    let at = begin(buf, FRAME_BODY, channel);
    buf.put_slice(payload);
    end(buf, at);
}

/// Appends a method with content: the method frame, the header frame and the
/// body split into frames of at most `frame_max` bytes each.
pub fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: usize,
) {
    encode_method(buf, channel, method);
    encode_content_header(
        buf,
        channel,
        method.class_id(),
        body.len() as u64,
        properties,
    );
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in body.chunks(chunk) {
        encode_body(buf, channel, piece);
    }
}

/// Type, channel and payload size: the streaming part of frame decoding.
fn frame_header(input: &[u8]) -> nom::IResult<&[u8], (u8, u16, u32)> {
    (be_u8, be_u16, be_u32).parse(input)
}

/// Splits whole frames off a read buffer.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Largest frame accepted, overhead included (the negotiated `frame_max`).
    pub max_frame: u32,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame` bytes (overhead included).
    pub fn new(max_frame: u32) -> Self {
        FrameDecoder { max_frame }
    }

    /// Takes one frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; the buffer has been reserved
    /// for the rest of the frame. Any error is fatal for the connection: the
    /// stream can no longer be framed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let (kind, channel, size) = match frame_header(&buf[..]) {
            Ok((_, h)) => h,
            Err(nom::Err::Incomplete(_)) => return Ok(None),
            Err(_) => return Err(DecodeError::new(ErrorKind::Truncated)),
        };
        let max_payload = self.max_frame.saturating_sub(FRAME_OVERHEAD as u32);
        if size > max_payload {
            return Err(DecodeError::new(ErrorKind::FrameTooLarge {
                size,
                max: max_payload,
            }));
        }
        // size <= max_frame, which is a u32 well below usize::MAX on every
        // target we build for.
        let total = size as usize + FRAME_OVERHEAD;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let end_octet = buf[total - 1];
        if end_octet != FRAME_END {
            return Err(DecodeError::new(ErrorKind::BadFrameEnd(end_octet)));
        }
        let payload = 7..7 + size as usize;
        let frame = match kind {
            // Bodies are kept as zero-copy slices of the read buffer.
            FRAME_BODY => {
                let mut frame = buf.split_to(total).freeze();
                frame.advance(7);
                frame.truncate(size as usize);
                return Ok(Some(Frame::Body {
                    channel,
                    payload: frame,
                }));
            }
            // Methods and headers are parsed in place and copied out.
            FRAME_METHOD => Frame::Method {
                channel,
                method: Method::decode(&buf[payload])?,
            },
            FRAME_HEADER => Frame::Header {
                channel,
                header: ContentHeader::decode(&buf[payload])?,
            },
            FRAME_HEARTBEAT => Frame::Heartbeat { channel },
            other => return Err(DecodeError::new(ErrorKind::UnknownFrameType(other))),
        };
        buf.advance(total);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::*;
    use crate::types::ShortStr;

    #[test]
    fn headers_without_properties_carry_none() {
        // class 60, weight 0, body size 5, then the property flags.
        let head = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        let none = ContentHeader::decode(&[&head[..], &[0, 0]].concat()).unwrap();
        assert!(none.properties.is_empty());
        assert_eq!(none.body_size, 5);
        // Only an empty continuation word: still none.
        let cont = ContentHeader::decode(&[&head[..], &[0, 1, 0, 0]].concat()).unwrap();
        assert!(cont.properties.is_empty());
        assert_eq!(cont, none);
        // delivery-mode 2.
        let some = ContentHeader::decode(&[&head[..], &[0x10, 0, 2]].concat()).unwrap();
        assert!(!some.properties.is_empty());
        assert_eq!(some.properties.delivery_mode, Some(2));
        // Flags 0 followed by stray bytes is malformed.
        assert!(ContentHeader::decode(&[&head[..], &[0, 0, 9]].concat()).is_err());
    }

    #[test]
    fn protocol_header_decides_early() {
        assert_eq!(decode_protocol_header(b"AM"), ProtocolHeader::Incomplete);
        assert_eq!(decode_protocol_header(b"GET /"), ProtocolHeader::Mismatch);
        assert_eq!(
            decode_protocol_header(b"AMQP\x00\x00\x09\x01"),
            ProtocolHeader::Amqp091
        );
        assert_eq!(
            decode_protocol_header(b"AMQP\x01\x01\x00\x09"),
            ProtocolHeader::Mismatch
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 2, 0, 0][..]);
        let err = FrameDecoder::new(4096).decode(&mut buf).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::FrameTooLarge {
                size: 131072,
                max: 4088
            }
        );
        assert_eq!(err.reply_code(), ReplyCode::FrameError);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut whole = BytesMut::new();
        encode_method(
            &mut whole,
            1,
            &Method::from(BasicQos {
                prefetch_count: 10,
                ..Default::default()
            }),
        );
        let whole = whole.freeze();
        let dec = FrameDecoder::new(131072);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frame_end_is_a_frame_error() {
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadFrameEnd(0));
    }

    #[test]
    fn content_is_split_by_frame_max() {
        let mut buf = BytesMut::new();
        let publish = Method::from(BasicPublish {
            routing_key: ShortStr::from("q"),
            ..Default::default()
        });
        let body = vec![7u8; 10_000];
        encode_content(
            &mut buf,
            1,
            &publish,
            &BasicProperties::default(),
            &body,
            4096,
        );
        let dec = FrameDecoder::new(4096);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 2 + 3);
        let total: usize = frames
            .iter()
            .map(|f| match f {
                Frame::Body { payload, .. } => payload.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10_000);
    }

    #[test]
    fn truncated_arguments_name_the_method() {
        // queue.declare with nothing after the ids.
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 50, 0, 10, FRAME_END][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).unwrap_err();
        assert_eq!((err.class_id, err.method_id), (50, 10));
        assert_eq!(err.reply_code(), ReplyCode::FrameError);
    }

    #[test]
    fn unknown_method_is_not_implemented() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 99, FRAME_END][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownMethod);
        assert_eq!(err.reply_code(), ReplyCode::NotImplemented);
    }
}
