//! What the broker can tell about its open connections and channels
//! without asking their tasks: each connection publishes a
//! [`ConnectionEntry`] (set at handshake milestones, counters kept with
//! relaxed atomics) and each channel a [`ChannelEntry`]. The management
//! API lists them; the broker uses them to close a user's or a vhost's
//! connections.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use warren_codec::FieldTable;

use crate::mailbox::Mailbox;
use crate::queue::ConnId;

/// Where a connection is in its life, as RabbitMQ's `state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// In the handshake.
    Starting,
    /// Open and in use.
    Running,
    /// Publishing is held back (alarm or flow).
    Blocked,
    /// Closing.
    Closing,
}

impl ConnState {
    /// The name RabbitMQ's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Starting => "starting",
            ConnState::Running => "running",
            ConnState::Blocked => "blocked",
            ConnState::Closing => "closing",
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    /// The user, once authenticated.
    pub user: String,
    /// The vhost, once open.
    pub vhost: String,
    /// The client's `client-properties`.
    pub client_properties: FieldTable,
    /// SASL mechanism used.
    pub auth_mechanism: String,
    /// Negotiated frame size.
    pub frame_max: u32,
    /// Negotiated channel limit.
    pub channel_max: u16,
    /// Negotiated heartbeat, seconds.
    pub heartbeat: u16,
}

/// One open connection, as the broker sees it from outside.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// Broker-wide id.
    pub id: ConnId,
    /// RabbitMQ's connection name: `"peer -> local"`.
    pub name: String,
    /// The peer's address.
    pub peer: String,
    /// The local address the client connected to.
    pub local: String,
    /// Wall-clock milliseconds since the epoch at accept.
    pub connected_at: u64,
    /// The connection's inbox (to close it, or tell it of alarms).
    pub mailbox: Arc<Mailbox>,
    negotiated: Mutex<Negotiated>,
    state: AtomicU8,
    /// Bytes received from the socket.
    pub recv_oct: AtomicU64,
    /// Bytes written to the socket.
    pub send_oct: AtomicU64,
    /// Reads from the socket.
    pub recv_cnt: AtomicU64,
    /// Writes to the socket.
    pub send_cnt: AtomicU64,
    channels: Mutex<Vec<Arc<ChannelEntry>>>,
    /// Counts of its channels that closed.
    retired: Retired,
    /// The TLS session, on a TLS listener.
    pub tls: Option<Arc<TlsInfo>>,
}

impl ConnectionEntry {
    /// An entry for a connection just accepted.
    pub fn new(
        id: ConnId,
        peer: &str,
        local: &str,
        connected_at: u64,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        ConnectionEntry {
            id,
            name: format!("{peer} -> {local}"),
            peer: peer.to_string(),
            local: local.to_string(),
            connected_at,
            mailbox,
            negotiated: Mutex::new(Negotiated::default()),
            state: AtomicU8::new(ConnState::Starting as u8),
            recv_oct: AtomicU64::new(0),
            send_oct: AtomicU64::new(0),
            recv_cnt: AtomicU64::new(0),
            send_cnt: AtomicU64::new(0),
            channels: Mutex::new(Vec::new()),
            retired: Retired::default(),
            tls: None,
        }
    }

    /// What the handshake settled so far.
    pub fn negotiated(&self) -> MutexGuard<'_, Negotiated> {
        self.negotiated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        match self.state.load(Ordering::Relaxed) {
            0 => ConnState::Starting,
            1 => ConnState::Running,
            2 => ConnState::Blocked,
            _ => ConnState::Closing,
        }
    }

    /// Sets the connection's state.
    pub fn set_state(&self, s: ConnState) {
        let v = match s {
            ConnState::Starting => 0,
            ConnState::Running => 1,
            ConnState::Blocked => 2,
            ConnState::Closing => 3,
        };
        self.state.store(v, Ordering::Relaxed);
    }

    /// The open channels.
    pub fn channels(&self) -> Vec<Arc<ChannelEntry>> {
        self.channel_list().clone()
    }

    fn channel_list(&self) -> MutexGuard<'_, Vec<Arc<ChannelEntry>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an opened channel.
    pub(crate) fn add_channel(&self, ch: Arc<ChannelEntry>) {
        self.channel_list().push(ch);
    }

    /// Removes a closed channel (its counts stay in the connection's).
    pub(crate) fn remove_channel(&self, number: u16) {
        let mut list = self.channel_list();
        if let Some(i) = list.iter().position(|c| c.number == number) {
            let gone = list.swap_remove(i);
            self.retired.add(&gone.totals());
        }
    }

    /// Its message counts: closed channels' and open ones'.
    pub fn totals(&self) -> MessageTotals {
        let mut t = self.retired.totals();
        for c in self.channel_list().iter() {
            t.add(&c.totals());
        }
        t
    }

    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channel_list().len()
    }
}

/// One open channel, as the broker sees it from outside.
#[derive(Debug, Default)]
pub struct ChannelEntry {
    /// Its number on the connection.
    pub number: u16,
    /// `basic.qos` prefetch per consumer.
    pub prefetch_count: AtomicU32,
    /// `basic.qos global=true` prefetch of the channel.
    pub global_prefetch_count: AtomicU32,
    /// In confirm mode.
    pub confirm: AtomicBool,
    /// In a transaction (`tx.select`).
    pub transactional: AtomicBool,
    /// Consumers on the channel.
    pub consumer_count: AtomicU32,
    /// Deliveries awaiting acknowledgement.
    pub messages_unacknowledged: AtomicU32,
    /// Messages published on it.
    pub publish: AtomicU64,
    /// Messages delivered on it (consumers and `basic.get`).
    pub deliver: AtomicU64,
    /// Messages acknowledged by the client.
    pub ack: AtomicU64,
    /// Publishes confirmed to the client (confirm mode).
    pub confirmed: AtomicU64,
    /// Mandatory publishes returned unroutable (`basic.return`).
    pub returned: AtomicU64,
}

/// Message counts since start, as RabbitMQ's `rabbitmq_global_messages_*`
/// counters report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageTotals {
    /// Messages received from publishers.
    pub received: u64,
    /// Messages delivered to consumers and `basic.get`.
    pub delivered: u64,
    /// Messages acknowledged by clients.
    pub acknowledged: u64,
    /// Publishes confirmed to publishers.
    pub confirmed: u64,
    /// Mandatory publishes returned unroutable.
    pub returned: u64,
}

impl MessageTotals {
    /// Adds another set.
    pub fn add(&mut self, o: &MessageTotals) {
        self.received += o.received;
        self.delivered += o.delivered;
        self.acknowledged += o.acknowledged;
        self.confirmed += o.confirmed;
        self.returned += o.returned;
    }
}

/// Counts kept in atomics, for totals that outlive their channel or
/// connection.
#[derive(Debug, Default)]
pub struct Retired {
    received: AtomicU64,
    delivered: AtomicU64,
    acknowledged: AtomicU64,
    confirmed: AtomicU64,
    returned: AtomicU64,
}

impl Retired {
    /// Adds counts.
    pub fn add(&self, t: &MessageTotals) {
        self.received.fetch_add(t.received, Ordering::Relaxed);
        self.delivered.fetch_add(t.delivered, Ordering::Relaxed);
        self.acknowledged
            .fetch_add(t.acknowledged, Ordering::Relaxed);
        self.confirmed.fetch_add(t.confirmed, Ordering::Relaxed);
        self.returned.fetch_add(t.returned, Ordering::Relaxed);
    }

    /// The counts.
    pub fn totals(&self) -> MessageTotals {
        MessageTotals {
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
        }
    }
}

impl ChannelEntry {
    /// Its message counts.
    pub fn totals(&self) -> MessageTotals {
        MessageTotals {
            received: self.publish.load(Ordering::Relaxed),
            delivered: self.deliver.load(Ordering::Relaxed),
            acknowledged: self.ack.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
        }
    }

    /// A new channel's entry.
    pub fn new(number: u16) -> Self {
        ChannelEntry {
            number,
            ..ChannelEntry::default()
        }
    }
}

/// What a TLS listener learnt of a connection's session and of the
/// client's certificate (when it presented one that verified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, as RabbitMQ prints it (`tlsv1.3`).
    pub protocol: String,
    /// The cipher suite's name.
    pub cipher: String,
    /// The client certificate's subject, as a distinguished name.
    pub peer_cert_subject: Option<String>,
    /// The client certificate's issuer, as a distinguished name.
    pub peer_cert_issuer: Option<String>,
    /// The client certificate's validity, `not_before - not_after`.
    pub peer_cert_validity: Option<String>,
    /// The user name the `EXTERNAL` mechanism logs in as: taken from the
    /// verified client certificate as the listener is configured (CN,
    /// distinguished name or a subject alternative name).
    pub login_name: Option<String>,
}
