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
//! taking the due ones never looks at the rest. A held message is one
//! packed allocation beside its map entry (about 100 bytes beyond its
//! body for a small message), unpacked only when it is routed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use warren_codec::{FieldTable, FieldValue};

use crate::message::{Message, Packed, Properties};

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

/// One held message, in one allocation: exchange, routing key, encoded
/// properties and body packed together ([`Packed`]), unpacked only when it
/// is routed. A message whose properties do not pack (an encoded header
/// over 64 KiB) is held whole.
///
/// Neither the delay nor whether the store holds it is kept: the delay is
/// its `x-delay` header, read again when it routes, and every message of
/// a durable delayed exchange (in a broker that stores durable state) is
/// stored.
#[derive(Debug)]
pub struct DelayedMessage(Held);

#[derive(Debug)]
enum Held {
    Packed(Packed),
    Whole(Box<Message>),
}

impl DelayedMessage {
    /// Holds a copy of `message` (not counted by a memory gauge: a held
    /// message is counted again when it is routed).
    pub fn new(message: &Message) -> Self {
        match Packed::pack(message) {
            Some(p) => DelayedMessage(Held::Packed(p)),
            None => DelayedMessage(Held::Whole(Box::new(Message::new(
                message.exchange.clone(),
                message.routing_key.clone(),
                message.properties.clone(),
                message.body.clone(),
            )))),
        }
    }

    /// The message again, to route it (its body a slice of the held
    /// allocation, not a copy).
    pub fn into_message(self) -> Message {
        match self.0 {
            Held::Packed(p) => p.unpack(),
            Held::Whole(m) => *m,
        }
    }

    /// The delay it asked for, in milliseconds (its `x-delay` header; 0
    /// if it no longer reads as one, which only a damaged record gives).
    pub fn delay(message: &Message) -> u32 {
        delay_of(message.properties.headers.as_ref()).unwrap_or(0)
    }
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

/// What the broker knows of time for delayed messages, and how it wakes
/// the server's timer.
#[derive(Default)]
pub(crate) struct DelayedTimer {
    // A Mutex: set by the server's timer, read once per delayed publish;
    // never held across anything else.
    /// An instant and the wall-clock Unix milliseconds at it, so that a
    /// handler's monotonic `now` gives a wall-clock deadline.
    clock: std::sync::Mutex<Option<(Instant, u64)>>,
    /// Wakes the server's timer (set once, by the server).
    waker: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The deadline the timer sleeps toward (`u64::MAX`: none).
    next: AtomicU64,
}

impl DelayedTimer {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(DelayedTimer {
            next: AtomicU64::new(u64::MAX),
            ..DelayedTimer::default()
        })
    }

    /// The wall-clock Unix milliseconds at the monotonic instant `now`, by
    /// the last clock sync (or `fallback_secs` before one).
    pub(crate) fn wall_ms(&self, now: Instant, fallback_secs: u64) -> u64 {
        let anchor = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
        match anchor {
            Some((at, ms)) if now >= at => ms.saturating_add(
                u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX),
            ),
            Some((at, ms)) => ms.saturating_sub(
                u64::try_from(at.duration_since(now).as_millis()).unwrap_or(u64::MAX),
            ),
            None => fallback_secs.saturating_mul(1000),
        }
    }

    /// Sets the wall-clock Unix milliseconds at the instant `now`.
    pub(crate) fn sync(&self, now: Instant, unix_ms: u64) {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, unix_ms));
    }

    /// Sets how the server's timer is woken (once; later calls are
    /// ignored).
    pub(crate) fn set_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(wake);
    }

    /// The timer now sleeps toward `next` (`None`: nothing is held).
    pub(crate) fn sleeps_toward(&self, next: Option<u64>) {
        self.next.store(next.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// A message is now held until `deadline`: wakes the timer if it
    /// sleeps toward a later one.
    pub(crate) fn added(&self, deadline: u64) {
        if self.next.fetch_min(deadline, Ordering::AcqRel) > deadline
            && let Some(wake) = self.waker.get()
        {
            wake();
        }
    }
}

impl std::fmt::Debug for DelayedTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedTimer")
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
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
        let m = |delay: i32| {
            DelayedMessage::new(&Message::new(
                "x".into(),
                "k".into(),
                Properties::from(warren_codec::BasicProperties {
                    headers: Some(with(FieldValue::I32(delay))),
                    ..Default::default()
                }),
                bytes::Bytes::from_static(b"body"),
            ))
        };
        let delays = |v: Vec<(DelayedKey, DelayedMessage)>| {
            v.into_iter()
                .map(|(_, m)| DelayedMessage::delay(&m.into_message()))
                .collect::<Vec<_>>()
        };
        let mut d = Delayed::default();
        d.insert(30, m(3));
        d.insert(10, m(1));
        d.insert(10, m(2));
        assert_eq!(d.next_deadline(), Some(10));
        assert!(d.take_due(9, 10).is_empty());
        assert_eq!(delays(d.take_due(20, 10)), vec![1, 2]);
        assert_eq!(d.len(), 1);
        d.restore((5, 100), m(9));
        assert_eq!(d.insert(40, m(4)), (40, 101));
        assert_eq!(delays(d.take_due(u64::MAX, 1)), vec![9]);
    }

    #[test]
    fn a_held_message_comes_back_as_published() {
        let props = warren_codec::BasicProperties {
            headers: Some(with(FieldValue::I32(1500)).with("k", FieldValue::LongStr("v".into()))),
            delivery_mode: Some(2),
            priority: Some(3),
            ..Default::default()
        };
        let body = bytes::Bytes::from_static(b"0123456789abcdef");
        let held = DelayedMessage::new(&Message::new(
            "dx".into(),
            "rk".into(),
            Properties::from(props.clone()),
            body.clone(),
        ));
        let m = held.into_message();
        assert_eq!(m.exchange.as_bytes(), b"dx");
        assert_eq!(m.routing_key.as_bytes(), b"rk");
        assert_eq!(*m.properties, props);
        assert_eq!(m.body, body);
        assert_eq!(DelayedMessage::delay(&m), 1500);
        // Properties too large to pack are held whole.
        let big = warren_codec::BasicProperties {
            headers: Some(with(FieldValue::LongStr(
                "x".repeat(70_000).as_str().into(),
            ))),
            ..Default::default()
        };
        let m = DelayedMessage::new(&Message::new(
            "dx".into(),
            "".into(),
            Properties::from(big.clone()),
            body,
        ))
        .into_message();
        assert_eq!(*m.properties, big);
    }
}
