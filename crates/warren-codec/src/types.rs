//! AMQP primitive types: short and long strings, field tables and arrays,
//! and the [`Reader`] every generated decoder reads through.
//!
//! Decoding copies from the frame rather than sharing it: short strings
//! go inline, and the rare long ones are small copies. Only message bodies
//! are shared slices of the read buffer (see `frame`).
//!
//! Field values use RabbitMQ's type tags (the errata list, not the 0-9-1
//! PDF's): `t b B s u I i l f d D S x A T F V`. A decoded table keeps its
//! entries in wire order, duplicates included, so re-encoding it gives the
//! same bytes.

use bytes::{BufMut, Bytes, BytesMut};
use nom::Parser;
use nom::bytes::complete::take;
use nom::multi::length_data;
use nom::number::complete::{
    be_f32, be_f64, be_i8, be_i16, be_i32, be_i64, be_u8, be_u16, be_u32, be_u64,
};

use crate::error::{DecodeError, ErrorKind};

/// How deeply tables and arrays may nest inside one another. Each level costs
/// only five bytes on the wire, so without a bound a single frame could
/// overflow the decoder's stack.
pub const MAX_NESTING: usize = 64;

/// An AMQP `shortstr`: at most 255 bytes, not necessarily UTF-8.
///
/// Names up to [`ShortStr::INLINE`] bytes (nearly all exchange names,
/// routing keys and consumer tags) are stored inline: decoding, cloning and
/// dropping them touches no shared counter and allocates nothing. Longer
/// ones share a [`Bytes`] buffer, so cloning still never copies.
#[derive(Clone)]
pub struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        buf: [u8; ShortStr::INLINE],
    },
    Shared(Bytes),
}

impl Default for ShortStr {
    fn default() -> Self {
        ShortStr::empty()
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortStr {}

impl std::hash::Hash for ShortStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash as `[u8]` does, for `Borrow<[u8]>` map lookups.
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for ShortStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl ShortStr {
    /// The longest a short string can be.
    pub const MAX_LEN: usize = 255;

    /// Strings up to this many bytes are stored inline.
    pub const INLINE: usize = 30;

    /// An empty short string.
    pub const fn empty() -> Self {
        ShortStr(Repr::Inline {
            len: 0,
            buf: [0; Self::INLINE],
        })
    }

    /// A short string holding a copy of `bytes`, if they fit.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() <= Self::INLINE {
            let mut buf = [0; Self::INLINE];
            buf[..bytes.len()].copy_from_slice(bytes);
            // len <= 30 fits in a u8.
            Some(ShortStr(Repr::Inline {
                len: bytes.len() as u8,
                buf,
            }))
        } else if bytes.len() <= Self::MAX_LEN {
            Some(ShortStr(Repr::Shared(Bytes::copy_from_slice(bytes))))
        } else {
            None
        }
    }

    /// Wraps `bytes` if they fit in a short string.
    pub fn new(bytes: Bytes) -> Result<Self, Bytes> {
        if bytes.len() <= Self::INLINE {
            Ok(Self::from_slice(&bytes).unwrap_or_default())
        } else if bytes.len() <= Self::MAX_LEN {
            Ok(ShortStr(Repr::Shared(bytes)))
        } else {
            Err(bytes)
        }
    }

    /// A short string from a static text; texts longer than 255 bytes are cut
    /// at a character boundary.
    pub fn from_static(s: &'static str) -> Self {
        if s.len() <= Self::INLINE {
            Self::from_slice(s.as_bytes()).unwrap_or_default()
        } else if s.len() <= Self::MAX_LEN {
            ShortStr(Repr::Shared(Bytes::from_static(s.as_bytes())))
        } else {
            Self::truncating(s)
        }
    }

    /// A short string holding `s`, cut at the last character boundary that
    /// fits in 255 bytes. Used for server-made texts such as reply texts,
    /// which RabbitMQ also truncates.
    pub fn truncating(s: &str) -> Self {
        let mut end = s.len().min(Self::MAX_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Self::from_slice(&s.as_bytes()[..end]).unwrap_or_default()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Shared(b) => b,
        }
    }

    /// The bytes as a [`Bytes`] (a copy for inline strings).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Repr::Shared(b) => b.clone(),
        }
    }

    /// The text, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// The text with invalid UTF-8 replaced, for messages and logs.
    pub fn to_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Whether the string starts with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.as_bytes().starts_with(prefix)
    }
}

impl From<&str> for ShortStr {
    /// Copies `s`, cutting it at 255 bytes (see [`ShortStr::truncating`]).
    fn from(s: &str) -> Self {
        ShortStr::truncating(s)
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        if s.len() <= Self::INLINE || s.len() > Self::MAX_LEN {
            ShortStr::truncating(&s)
        } else {
            ShortStr(Repr::Shared(Bytes::from(s)))
        }
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::borrow::Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_lossy())
    }
}

impl std::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_lossy())
    }
}

/// An AMQP `longstr`: up to 4 GiB of bytes (bounded in practice by the frame).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongStr(pub Bytes);

impl LongStr {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text with invalid UTF-8 replaced, for messages and logs.
    pub fn to_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> Self {
        LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> Self {
        LongStr(Bytes::from(s))
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> Self {
        LongStr(b)
    }
}

impl std::fmt::Debug for LongStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_lossy())
    }
}

/// An AMQP decimal: `value / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value (signed, per RabbitMQ's errata).
    pub value: i32,
}

/// One value in a field table or array, tagged as RabbitMQ tags it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean.
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit (RabbitMQ's meaning, not the PDF's short string).
    I16(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal.
    Decimal(Decimal),
    /// `S`: long string.
    LongStr(LongStr),
    /// `x`: byte array.
    Bytes(Bytes),
    /// `A`: array of values.
    Array(Vec<FieldValue>),
    /// `T`: timestamp, seconds since the epoch.
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
}

impl FieldValue {
    /// The wire tag of this value.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Bytes(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// The value as a signed integer, if it is one of the integer types.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) => v,
            _ => return None,
        })
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as text bytes, if it is a long string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The name RabbitMQ uses for this value's type in error texts.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal(_) => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::Bytes(_) => "binary",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
        }
    }
}

impl std::fmt::Display for FieldValue {
    /// Shows the value the way RabbitMQ's equivalence errors print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::I8(v) => write!(f, "{v}"),
            FieldValue::U8(v) => write!(f, "{v}"),
            FieldValue::I16(v) => write!(f, "{v}"),
            FieldValue::U16(v) => write!(f, "{v}"),
            FieldValue::I32(v) => write!(f, "{v}"),
            FieldValue::U32(v) => write!(f, "{v}"),
            FieldValue::I64(v) => write!(f, "{v}"),
            FieldValue::F32(v) => write!(f, "{v}"),
            FieldValue::F64(v) => write!(f, "{v}"),
            FieldValue::Decimal(d) => write!(f, "{}e-{}", d.value, d.scale),
            FieldValue::LongStr(s) => f.write_str(&s.to_lossy()),
            FieldValue::Bytes(b) => write!(f, "{b:?}"),
            FieldValue::Array(a) => write!(f, "{a:?}"),
            FieldValue::Timestamp(t) => write!(f, "{t}"),
            FieldValue::Table(t) => write!(f, "{t:?}"),
            FieldValue::Void => f.write_str("undefined"),
        }
    }
}

/// An AMQP field table, entries in wire order.
///
/// A `Vec` rather than a map: tables are small, order and duplicates must
/// survive a round trip, and lookups are rare next to copies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub const fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Appends an entry (no de-duplication, as on the wire).
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: FieldValue) {
        self.0.push((key.into(), value));
    }

    /// Builder-style [`FieldTable::insert`].
    pub fn with(mut self, key: impl Into<ShortStr>, value: FieldValue) -> Self {
        self.insert(key, value);
        self
    }

    /// Removes every entry under `key`, returning the first removed value.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let mut found = None;
        self.0.retain_mut(|(k, v)| {
            if k.as_bytes() == key.as_bytes() {
                if found.is_none() {
                    found = Some(std::mem::replace(v, FieldValue::Void));
                }
                false
            } else {
                true
            }
        });
        found
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &(ShortStr, FieldValue)> {
        self.0.iter()
    }
}

type NomResult<'a, T> = nom::IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

/// A cursor over one frame payload that yields AMQP primitives.
///
/// Parsers are nom's *complete* parsers: the frame is already whole, so
/// running out of bytes means the frame is malformed, never "read more".
/// Strings come out as zero-copy slices of `src`.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Reader { rest: src }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn run<T>(&mut self, res: NomResult<'a, T>) -> Result<T, DecodeError> {
        match res {
            Ok((rest, v)) => {
                self.rest = rest;
                Ok(v)
            }
            Err(_) => Err(DecodeError::new(ErrorKind::Truncated)),
        }
    }

    /// Reads an octet.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let r = be_u8(self.rest);
        self.run(r)
    }

    /// Reads a big-endian `short`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let r = be_u16(self.rest);
        self.run(r)
    }

    /// Reads a big-endian `long`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let r = be_u32(self.rest);
        self.run(r)
    }

    /// Reads a big-endian `longlong` (also `timestamp`).
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let r = be_u64(self.rest);
        self.run(r)
    }

    /// Reads `n` raw bytes (copied: method and header frames are small,
    /// and copying beats sharing a reference-counted buffer there).
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let r = take(n).parse(self.rest);
        let s = self.run(r)?;
        Ok(Bytes::copy_from_slice(s))
    }

    /// Reads a `shortstr`.
    pub fn shortstr(&mut self) -> Result<ShortStr, DecodeError> {
        let r = length_data(be_u8).parse(self.rest);
        let s = self.run(r)?;
        // At most 255 bytes: length_data(be_u8) read it.
        Ok(ShortStr::from_slice(s).unwrap_or_default())
    }

    /// Reads a `shortstr` that must be UTF-8, as RabbitMQ requires of every
    /// short string argument of a method (names, routing keys, tags).
    pub fn shortstr_utf8(&mut self) -> Result<ShortStr, DecodeError> {
        let r = length_data(be_u8).parse(self.rest);
        let s = self.run(r)?;
        // Names and keys are nearly always ASCII, which is checked a word
        // at a time; only others take the full UTF-8 validation.
        if !s.is_ascii() && std::str::from_utf8(s).is_err() {
            return Err(DecodeError::new(ErrorKind::MalformedUtf8));
        }
        // At most 255 bytes: length_data(be_u8) read it.
        Ok(ShortStr::from_slice(s).unwrap_or_default())
    }

    /// Reads a `longstr`.
    pub fn longstr(&mut self) -> Result<LongStr, DecodeError> {
        let r = length_data(be_u32).parse(self.rest);
        let s = self.run(r)?;
        Ok(LongStr(Bytes::copy_from_slice(s)))
    }

    /// Reads a field table.
    pub fn table(&mut self) -> Result<FieldTable, DecodeError> {
        self.table_at(0)
    }

    fn table_at(&mut self, depth: usize) -> Result<FieldTable, DecodeError> {
        if depth >= MAX_NESTING {
            return Err(DecodeError::new(ErrorKind::TooDeep));
        }
        let r = length_data(be_u32).parse(self.rest);
        let body = self.run(r)?;
        let mut inner = Reader { rest: body };
        // Entries are pushed as they are parsed; nothing is reserved from the
        // declared length, so memory stays proportional to bytes received.
        let mut entries = Vec::new();
        while !inner.rest.is_empty() {
            let key = inner.shortstr()?;
            let value = inner.value(depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    fn array_at(&mut self, depth: usize) -> Result<Vec<FieldValue>, DecodeError> {
        if depth >= MAX_NESTING {
            return Err(DecodeError::new(ErrorKind::TooDeep));
        }
        let r = length_data(be_u32).parse(self.rest);
        let body = self.run(r)?;
        let mut inner = Reader { rest: body };
        let mut values = Vec::new();
        while !inner.rest.is_empty() {
            values.push(inner.value(depth)?);
        }
        Ok(values)
    }

    fn value(&mut self, depth: usize) -> Result<FieldValue, DecodeError> {
        let tag = self.u8()?;
        let rest = self.rest;
        Ok(match tag {
            b't' => FieldValue::Bool(self.u8()? != 0),
            b'b' => FieldValue::I8(self.run(be_i8(rest))?),
            b'B' => FieldValue::U8(self.u8()?),
            b's' => FieldValue::I16(self.run(be_i16(rest))?),
            b'u' => FieldValue::U16(self.u16()?),
            b'I' => FieldValue::I32(self.run(be_i32(rest))?),
            b'i' => FieldValue::U32(self.u32()?),
            b'l' => FieldValue::I64(self.run(be_i64(rest))?),
            b'f' => FieldValue::F32(self.run(be_f32(rest))?),
            b'd' => FieldValue::F64(self.run(be_f64(rest))?),
            b'D' => {
                let scale = self.u8()?;
                let rest = self.rest;
                let value = self.run(be_i32(rest))?;
                FieldValue::Decimal(Decimal { scale, value })
            }
            b'S' => FieldValue::LongStr(self.longstr()?),
            b'x' => {
                let LongStr(b) = self.longstr()?;
                FieldValue::Bytes(b)
            }
            b'A' => FieldValue::Array(self.array_at(depth + 1)?),
            b'T' => FieldValue::Timestamp(self.u64()?),
            b'F' => FieldValue::Table(self.table_at(depth + 1)?),
            b'V' => FieldValue::Void,
            other => return Err(DecodeError::new(ErrorKind::BadFieldType(other))),
        })
    }

    /// Succeeds only if every byte was read (nom's `all_consuming`).
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(ErrorKind::TrailingBytes))
        }
    }
}

/// Writes a `shortstr`.
pub fn put_shortstr(buf: &mut BytesMut, s: &ShortStr) {
    // ShortStr guarantees len <= 255.
    buf.put_u8(s.len() as u8);
    buf.put_slice(s.as_bytes());
}

/// Writes a `longstr`.
pub fn put_longstr(buf: &mut BytesMut, s: &LongStr) {
    put_u32_len(buf, s.0.len());
    buf.put_slice(&s.0);
}

fn put_u32_len(buf: &mut BytesMut, len: usize) {
    // Anything we encode came from a frame or from us; both are far below 4 GiB.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Writes a field table.
pub fn put_table(buf: &mut BytesMut, t: &FieldTable) {
    let len_at = buf.len();
    buf.put_u32(0);
    for (k, v) in &t.0 {
        put_shortstr(buf, k);
        put_value(buf, v);
    }
    patch_len(buf, len_at);
}

fn patch_len(buf: &mut BytesMut, len_at: usize) {
    let len = buf.len() - len_at - 4;
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    buf[len_at..len_at + 4].copy_from_slice(&len);
}

/// Writes one tagged field value.
pub fn put_value(buf: &mut BytesMut, v: &FieldValue) {
    buf.put_u8(v.tag());
    match v {
        FieldValue::Bool(b) => buf.put_u8(u8::from(*b)),
        FieldValue::I8(x) => buf.put_i8(*x),
        FieldValue::U8(x) => buf.put_u8(*x),
        FieldValue::I16(x) => buf.put_i16(*x),
        FieldValue::U16(x) => buf.put_u16(*x),
        FieldValue::I32(x) => buf.put_i32(*x),
        FieldValue::U32(x) => buf.put_u32(*x),
        FieldValue::I64(x) => buf.put_i64(*x),
        FieldValue::F32(x) => buf.put_f32(*x),
        FieldValue::F64(x) => buf.put_f64(*x),
        FieldValue::Decimal(d) => {
            buf.put_u8(d.scale);
            buf.put_i32(d.value);
        }
        FieldValue::LongStr(s) => put_longstr(buf, s),
        FieldValue::Bytes(b) => {
            put_u32_len(buf, b.len());
            buf.put_slice(b);
        }
        FieldValue::Array(values) => {
            let len_at = buf.len();
            buf.put_u32(0);
            for v in values {
                put_value(buf, v);
            }
            patch_len(buf, len_at);
        }
        FieldValue::Timestamp(t) => buf.put_u64(*t),
        FieldValue::Table(t) => put_table(buf, t),
        FieldValue::Void => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(t: &FieldTable) -> FieldTable {
        let mut buf = BytesMut::new();
        put_table(&mut buf, t);
        let bytes = buf.freeze();
        let mut r = Reader::new(&bytes);
        let out = r.table().unwrap();
        r.finish().unwrap();
        out
    }

    #[test]
    fn every_tag_round_trips() {
        let t = FieldTable::new()
            .with("t", FieldValue::Bool(true))
            .with("b", FieldValue::I8(-3))
            .with("B", FieldValue::U8(250))
            .with("s", FieldValue::I16(-300))
            .with("u", FieldValue::U16(60000))
            .with("I", FieldValue::I32(-70000))
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
            .with("S", FieldValue::LongStr("hello".into()))
            .with("x", FieldValue::Bytes(Bytes::from_static(b"\x00\x01")))
            .with(
                "A",
                FieldValue::Array(vec![FieldValue::I32(1), FieldValue::Void]),
            )
            .with("T", FieldValue::Timestamp(1_700_000_000))
            .with(
                "F",
                FieldValue::Table(FieldTable::new().with("k", FieldValue::Void)),
            )
            .with("V", FieldValue::Void)
            .with("t", FieldValue::Bool(false));
        assert_eq!(roundtrip(&t), t);
    }

    #[test]
    fn unknown_tag_is_a_syntax_error() {
        let bytes = Bytes::from_static(b"\x00\x00\x00\x03\x01kZ");
        let err = Reader::new(&bytes).table().unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadFieldType(b'Z'));
        assert_eq!(err.reply_code(), crate::ReplyCode::SyntaxError);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // 10,000 nested arrays: 'A' + len each.
        let depth = 10_000usize;
        let mut v = Vec::new();
        v.extend_from_slice(&((depth * 5) as u32).to_be_bytes());
        for i in 0..depth {
            v.push(b'A');
            let inner = ((depth - i - 1) * 5) as u32;
            v.extend_from_slice(&inner.to_be_bytes());
        }
        let bytes = Bytes::from(v);
        let err = Reader::new(&bytes).array_at(0).unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooDeep);
    }

    #[test]
    fn declared_length_beyond_input_is_truncated() {
        let bytes = Bytes::from_static(b"\xff\xff\xff\xff");
        let err = Reader::new(&bytes).table().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Truncated);
    }

    #[test]
    fn short_strings_are_cut_at_char_boundaries() {
        let s = "é".repeat(200); // 400 bytes
        let short = ShortStr::truncating(&s);
        assert_eq!(short.len(), 254);
        assert!(short.as_str().is_some());
    }
}
