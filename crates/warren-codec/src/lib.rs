//! AMQP 0-9-1 as RabbitMQ speaks it: bytes to frames and back. No IO.
//!
//! # Layout
//! - [`generated`]: every method of the spec (RabbitMQ's extensions
//!   included) as a struct, the [`Method`] enum, [`BasicProperties`], the
//!   spec constants and [`ReplyCode`]. Generated from
//!   `spec/amqp-rabbitmq-0.9.1.json` by `tests/codegen.rs`; a test fails
//!   when it is stale.
//! - [`types`]: short/long strings, field tables and arrays, and the nom
//!   based [`Reader`] the generated decoders use.
//! - [`frame`]: the protocol header, [`Frame`], [`FrameDecoder`] and the
//!   encoders.
//! - [`error`]: [`DecodeError`], which knows the reply code it maps to.
//!
//! Decoded strings and bodies are [`bytes::Bytes`] slices of the read
//! buffer: a body routed to ten queues is never copied.

pub mod error;
pub mod frame;
#[rustfmt::skip]
pub mod generated;
pub mod types;

pub use error::{DecodeError, ErrorKind};
pub use frame::{
    ContentHeader, FRAME_OVERHEAD, Frame, FrameDecoder, PROTOCOL_HEADER, Properties,
    ProtocolHeader, decode_protocol_header, encode_body, encode_content, encode_content_header,
    encode_header, encode_method,
};
pub use generated::*;
pub use types::{Decimal, FieldTable, FieldValue, LongStr, MAX_NESTING, Reader, ShortStr};
