//! Protocol errors by scope: a [`ChannelError`] closes one channel, a
//! [`ConnectionError`] closes the connection. One place
//! ([`crate::connection`]) turns them into `channel.close` /
//! `connection.close` frames.

use warren_codec::ReplyCode;

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
