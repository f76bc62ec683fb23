//! Decode errors, each mapped to the AMQP reply code a broker answers with.

use crate::ReplyCode;

/// What was wrong with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The frame declared a payload larger than the negotiated maximum.
    FrameTooLarge {
        /// Declared payload size.
        size: u32,
        /// Largest payload allowed.
        max: u32,
    },
    /// The frame did not end with `0xCE`.
    BadFrameEnd(u8),
    /// A frame type other than method, header, body or heartbeat.
    UnknownFrameType(u8),
    /// A class/method pair not in the spec.
    UnknownMethod,
    /// The payload ended before the arguments did.
    Truncated,
    /// Bytes were left over after the last argument.
    TrailingBytes,
    /// A field-table value with a type tag RabbitMQ does not define.
    BadFieldType(u8),
    /// Tables or arrays nested deeper than [`crate::MAX_NESTING`].
    TooDeep,
    /// Property flags with bits for properties the class does not have.
    BadPropertyFlags(u16),
    /// A short string method argument that is not UTF-8.
    MalformedUtf8,
}

/// A decode failure, with the class and method it happened in (0/0 for
/// frame-level problems) so the close frame can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DecodeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Class id of the method being decoded, or 0.
    pub class_id: u16,
    /// Method id of the method being decoded, or 0.
    pub method_id: u16,
}

impl DecodeError {
    /// An error outside any method.
    pub const fn new(kind: ErrorKind) -> Self {
        DecodeError {
            kind,
            class_id: 0,
            method_id: 0,
        }
    }

    /// The same error, attributed to a method.
    pub const fn in_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply code a broker closes the connection with. Every decode
    /// error is a hard error: the byte stream can no longer be trusted.
    pub const fn reply_code(&self) -> ReplyCode {
        match self.kind {
            ErrorKind::FrameTooLarge { .. }
            | ErrorKind::BadFrameEnd(_)
            | ErrorKind::UnknownFrameType(_)
            | ErrorKind::Truncated
            | ErrorKind::TrailingBytes
            | ErrorKind::MalformedUtf8 => ReplyCode::FrameError,
            ErrorKind::BadFieldType(_) | ErrorKind::TooDeep | ErrorKind::BadPropertyFlags(_) => {
                ReplyCode::SyntaxError
            }
            ErrorKind::UnknownMethod => ReplyCode::NotImplemented,
        }
    }

    fn describe(&self) -> String {
        let (c, m) = (self.class_id, self.method_id);
        match self.kind {
            ErrorKind::FrameTooLarge { size, max } => {
                format!("frame too large: {size} bytes, the limit is {max}")
            }
            ErrorKind::BadFrameEnd(b) => format!("invalid frame end marker {b:#04x}"),
            ErrorKind::UnknownFrameType(t) => format!("unknown frame type {t}"),
            ErrorKind::UnknownMethod => format!("unknown method {{{c},{m}}}"),
            ErrorKind::Truncated => format!("cannot decode method {{{c},{m}}}: truncated"),
            ErrorKind::TrailingBytes => {
                format!("cannot decode method {{{c},{m}}}: unexpected trailing bytes")
            }
            ErrorKind::BadFieldType(t) => format!("invalid field table type tag {t:#04x}"),
            ErrorKind::TooDeep => "field tables nested too deeply".to_string(),
            ErrorKind::BadPropertyFlags(f) => format!("invalid property flags {f:#06x}"),
            // RabbitMQ's words, which clients and their users recognise.
            ErrorKind::MalformedUtf8 => "Malformed UTF-8 in shortstr".to_string(),
        }
    }
}
