//! Protocol errors by scope: a [`ChannelError`] closes one channel, a
//! [`ConnectionError`] closes the connection. [`AmqpError::channel_close`]
//! and [`AmqpError::connection_close`] are the only places they become
//! frames, and the connection's one error path (`Connection::fail`) the
//! only caller. How a connection ended is kept as a [`CloseReason`].

use warren_codec::{ChannelClose, ConnectionClose, ReplyCode, ShortStr};

/// A reply code, RabbitMQ-shaped text (`NOT_FOUND - no queue 'q' in vhost '/'`)
/// and the class/method that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Full reply text, starting with the code's name.
    pub text: String,
    /// Class id of the failing method (0 if none).
    pub class_id: u16,
    /// Method id of the failing method (0 if none).
    pub method_id: u16,
}

impl AmqpError {
    /// An error whose text is `NAME - detail`.
    pub fn new(code: ReplyCode, detail: impl std::fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {detail}", code.name()),
            class_id: 0,
            method_id: 0,
        }
    }

    /// The same error, naming the method that caused it (use the
    /// generated `CLASS_ID`/`METHOD_ID` constants).
    pub fn in_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The `channel.close` that reports it.
    pub fn channel_close(&self) -> ChannelClose {
        ChannelClose {
            reply_code: self.code.code(),
            reply_text: ShortStr::truncating(&self.text),
            class_id: self.class_id,
            method_id: self.method_id,
        }
    }

    /// The `connection.close` that reports it.
    pub fn connection_close(&self) -> ConnectionClose {
        ConnectionClose {
            reply_code: self.code.code(),
            reply_text: ShortStr::truncating(&self.text),
            class_id: self.class_id,
            method_id: self.method_id,
        }
    }
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The client: its `connection.close`, or its socket went away.
    Client,
    /// The broker: an error, a timeout, shutdown or an operator.
    Broker,
}

/// How a connection ended, for logs and (later) the management API and
/// metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Who ended it.
    pub initiator: Initiator,
    /// The reply code of the `connection.close` that ended it, if one was
    /// sent (by either side).
    pub code: Option<u16>,
    /// What happened, as RabbitMQ's texts put it where there is one.
    pub text: String,
}

impl CloseReason {
    /// Ended by the broker without a close frame (a handshake error, missed
    /// heartbeats, a timeout).
    pub fn broker(text: impl Into<String>) -> Self {
        CloseReason {
            initiator: Initiator::Broker,
            code: None,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.initiator {
            Initiator::Client => "client",
            Initiator::Broker => "broker",
        };
        match self.code {
            Some(code) => write!(f, "closed by {who} ({code}): {}", self.text),
            None => write!(f, "closed by {who}: {}", self.text),
        }
    }
}

/// An error that closes the channel it happened on (a soft error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelError(pub AmqpError);

/// An error that closes the whole connection (a hard error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError(pub AmqpError);

/// Either scope; what method handlers return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Close the channel.
    Channel(ChannelError),
    /// Close the connection.
    Connection(ConnectionError),
}

impl Error {
    /// A channel-scoped error.
    pub fn channel(code: ReplyCode, detail: impl std::fmt::Display) -> Self {
        Error::Channel(ChannelError(AmqpError::new(code, detail)))
    }

    /// A connection-scoped error.
    pub fn connection(code: ReplyCode, detail: impl std::fmt::Display) -> Self {
        Error::Connection(ConnectionError(AmqpError::new(code, detail)))
    }

    /// `404 NOT_FOUND`, channel scope.
    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        Self::channel(ReplyCode::NotFound, detail)
    }

    /// `406 PRECONDITION_FAILED`, channel scope.
    pub fn precondition(detail: impl std::fmt::Display) -> Self {
        Self::channel(ReplyCode::PreconditionFailed, detail)
    }

    /// `403 ACCESS_REFUSED`, channel scope.
    pub fn access_refused(detail: impl std::fmt::Display) -> Self {
        Self::channel(ReplyCode::AccessRefused, detail)
    }

    /// `405 RESOURCE_LOCKED`, channel scope.
    pub fn locked(detail: impl std::fmt::Display) -> Self {
        Self::channel(ReplyCode::ResourceLocked, detail)
    }

    /// `540 NOT_IMPLEMENTED`, connection scope.
    pub fn not_implemented(detail: impl std::fmt::Display) -> Self {
        Self::connection(ReplyCode::NotImplemented, detail)
    }

    /// The underlying error.
    pub fn inner_mut(&mut self) -> &mut AmqpError {
        match self {
            Error::Channel(ChannelError(e)) | Error::Connection(ConnectionError(e)) => e,
        }
    }

    /// Fills in the failing method unless already set.
    pub fn in_method(mut self, class_id: u16, method_id: u16) -> Self {
        let e = self.inner_mut();
        if e.class_id == 0 && e.method_id == 0 {
            e.class_id = class_id;
            e.method_id = method_id;
        }
        self
    }
}

/// Result of a method handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;
