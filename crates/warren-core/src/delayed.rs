//! The messages an `x-delayed-message` exchange holds until their time, as
//! the `rabbitmq_delayed_message_exchange` plugin has them.
//!
//! A publish whose `x-delay` header reads as an integer in
//! `1..=4_294_967_295` (milliseconds; the plugin's bound, Erlang's largest
//! timer) is held; anything else (no header, zero, a negative delay, a
//! larger one, a type the plugin does not read) is routed at once. When
//! its time comes the message is routed by the exchange's `x-delayed-type`
//! rules to the bindings of that moment, with `x-delay` set to the
//! negated delay (a signed 32-bit integer, as the plugin sets it) so that
//! a second delayed exchange does not hold it again.
//!
//! Deadlines are wall-clock milliseconds since the Unix epoch, passed in
//! by the caller (core reads no clock), so a stored message keeps its time
//! across a restart. Each exchange keeps its messages in a map ordered by
//! (deadline, sequence number): the earliest is its first entry, and
//! taking the due ones never looks at the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use warren_codec::{FieldTable, FieldValue};

use crate::message::{Message, Properties};

/// The header that asks for a delay.
pub const X_DELAY: &str = "x-delay";

/// The largest delay the plugin holds a message for (Erlang's longest
/// timer); larger delays are routed at once, as with the plugin.
pub const MAX_DELAY_MS: u64 = 4_294_967_295;

/// The delay a message asks for, read as the plugin 3.10 reads it: the
/// integer types as they are, floating-point values truncated, and long
/// strings holding a decimal integer. `None` means "route now": no header,
/// a delay outside `1..=MAX_DELAY_MS`, or a value of another type (the
/// plugin fails the publish for a string that is not an integer and for
/// a decimal; Warren routes those at once).
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u32> {
    let delay: i128 = match headers?.get(X_DELAY)? {
        FieldValue::I8(v) => (*v).into(),
        FieldValue::U8(v) => (*v).into(),
        FieldValue::I16(v) => (*v).into(),
        FieldValue::U16(v) => (*v).into(),
        FieldValue::I32(v) => (*v).into(),
        FieldValue::U32(v) => (*v).into(),
        FieldValue::I64(v) => (*v).into(),
        FieldValue::F32(v) => truncate(f64::from(*v))?,
        FieldValue::F64(v) => truncate(*v)?,
        FieldValue::LongStr(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .parse::<i128>()
            .ok()?,
        _ => return None,
    };
    if delay > 0 && delay <= i128::from(MAX_DELAY_MS) {
        u32::try_from(delay).ok()
    } else {
        None
    }
}

/// Erlang's `trunc` of a float, or `None` for a value no integer holds.
fn truncate(v: f64) -> Option<i128> {
    // Anything past the largest delay is routed at once anyway.
    v.is_finite().then(|| v.trunc().clamp(-1.0, 1e12) as i128)
}

/// The properties a held message is routed with: its own, with `x-delay`
/// replaced by the negated delay as a signed 32-bit integer.
pub fn routed_properties(properties: &Properties, delay: u32) -> Properties {
    let mut p = properties.clone();
    let negated = -i64::from(delay);
    // The plugin sets a `signedint`; a delay above 2^31 - 1 does not fit
    // one, so it goes as a 64-bit integer.
    let value = match i32::try_from(negated) {
        Ok(v) => FieldValue::I32(v),
        Err(_) => FieldValue::I64(negated),
    };
    let headers = p.make_mut().headers.get_or_insert_with(FieldTable::new);
    headers.remove(X_DELAY);
    headers.insert(X_DELAY, value);
    p
}

/// One held message.
#[derive(Debug, Clone)]
pub struct DelayedMessage {
    /// The message as published (its body a copy, so it pins no read
    /// buffer while it waits).
    pub message: Arc<Message>,
    /// The delay it asked for, in milliseconds.
    pub delay: u32,
    /// Whether the store holds it (a persistent message on a durable
    /// exchange): routing it must remove the record.
    pub stored: bool,
}

/// A held message's place: its deadline (wall-clock milliseconds) and a
/// sequence number unique within its exchange.
pub type DelayedKey = (u64, u64);

/// The messages one exchange holds, by time.
#[derive(Debug, Default)]
pub struct Delayed {
    by_time: BTreeMap<DelayedKey, DelayedMessage>,
    next_seq: u64,
}

impl Delayed {
    /// Holds `message` until `deadline`; returns its key.
    pub fn insert(&mut self, deadline: u64, message: DelayedMessage) -> DelayedKey {
        let key = (deadline, self.next_seq);
        self.next_seq += 1;
        self.by_time.insert(key, message);
        key
    }

    /// Puts back a message read from the store at start-up, with its key.
    pub fn restore(&mut self, key: DelayedKey, message: DelayedMessage) {
        self.next_seq = self.next_seq.max(key.1.saturating_add(1));
        self.by_time.insert(key, message);
    }

    /// The earliest deadline held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_time.first_key_value().map(|(k, _)| k.0)
    }

    /// Takes up to `max` messages whose deadline is `now_ms` or earlier,
    /// earliest first.
    pub fn take_due(&mut self, now_ms: u64, max: usize) -> Vec<(DelayedKey, DelayedMessage)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.by_time.first_entry() {
                Some(e) if e.key().0 <= now_ms => out.push(e.remove_entry()),
                _ => break,
            }
        }
        out
    }

    /// Takes every message (the exchange is being deleted).
    pub fn drain(&mut self) -> Vec<(DelayedKey, DelayedMessage)> {
        std::mem::take(&mut self.by_time).into_iter().collect()
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::LongStr;

    fn with(v: FieldValue) -> FieldTable {
        FieldTable::new().with(X_DELAY, v)
    }

    #[test]
    fn delays_read_as_the_plugin_reads_them() {
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::new())), None);
        assert_eq!(delay_of(Some(&with(FieldValue::I32(1500)))), Some(1500));
        assert_eq!(delay_of(Some(&with(FieldValue::I64(1)))), Some(1));
        assert_eq!(delay_of(Some(&with(FieldValue::U8(7)))), Some(7));
        assert_eq!(delay_of(Some(&with(FieldValue::I32(0)))), None);
        assert_eq!(delay_of(Some(&with(FieldValue::I32(-5)))), None);
        assert_eq!(
            delay_of(Some(&with(FieldValue::I64(4_294_967_295)))),
            Some(u32::MAX)
        );
        assert_eq!(delay_of(Some(&with(FieldValue::I64(4_294_967_296)))), None);
        assert_eq!(delay_of(Some(&with(FieldValue::F64(1500.9)))), Some(1500));
        assert_eq!(delay_of(Some(&with(FieldValue::F64(0.5)))), None);
        let s = |t: &str| FieldValue::LongStr(LongStr::from(t));
        assert_eq!(delay_of(Some(&with(s("2000")))), Some(2000));
        assert_eq!(delay_of(Some(&with(s("soon")))), None);
        assert_eq!(delay_of(Some(&with(FieldValue::Bool(true)))), None);
    }

    #[test]
    fn due_messages_come_out_in_time_order() {
        let m = |delay| DelayedMessage {
            message: Arc::new(Message::new(
                "x".into(),
                "k".into(),
                Properties::default(),
                bytes::Bytes::new(),
            )),
            delay,
            stored: false,
        };
        let mut d = Delayed::default();
        d.insert(30, m(3));
        d.insert(10, m(1));
        d.insert(10, m(2));
        assert_eq!(d.next_deadline(), Some(10));
        assert!(d.take_due(9, 10).is_empty());
        let due = d.take_due(20, 10);
        assert_eq!(
            due.iter().map(|(_, m)| m.delay).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(d.len(), 1);
        d.restore((5, 100), m(9));
        assert_eq!(d.insert(40, m(4)), (40, 101));
        assert_eq!(d.take_due(u64::MAX, 1)[0].1.delay, 9);
    }
}
