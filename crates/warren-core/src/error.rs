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

/// Queue or exchange, in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

impl Kind {
    /// The word RabbitMQ uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Exchange => "exchange",
        }
    }
}

/// The property or argument of a redeclare that differs from what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The property or argument.
    pub arg: String,
    /// What was asked for.
    pub received: String,
    /// What exists.
    pub current: String,
}

/// Why the broker's rules refused a request, with the names involved: typed, so
/// that each front end says it its own way. [`Refusal::reply_code`] and
/// [`Refusal::detail`] are RabbitMQ's AMQP reply code and text (the AMQP
/// edge turns a refusal into a channel or connection close through
/// `From<Refusal> for Error`); the management API maps the same variants
/// to HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such queue or exchange (404).
    NotFound {
        /// Which.
        kind: Kind,
        /// Its name.
        name: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// An exclusive queue of another connection (405).
    Locked {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// The default exchange cannot be declared, bound or unbound (403).
    DefaultExchange,
    /// Declaring a name with the reserved `amq.` prefix (403).
    ReservedName {
        /// Which.
        kind: Kind,
        /// The name.
        name: ShortStr,
    },
    /// Publishing to an internal exchange (403).
    InternalExchange {
        /// The exchange.
        name: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// Deleting the default or an `amq.*` exchange (403).
    SystemExchange {
        /// The exchange.
        name: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// An exchange type the broker does not know (503, a connection error
    /// as in RabbitMQ).
    UnknownExchangeType(ShortStr),
    /// A redeclare that differs from what exists (406).
    Inequivalent {
        /// Which.
        kind: Kind,
        /// Its name.
        name: ShortStr,
        /// The vhost.
        vhost: String,
        /// What differs.
        mismatch: Box<Mismatch>,
    },
    /// Delete with `if-unused` of something in use (406).
    InUse {
        /// Which.
        kind: Kind,
        /// Its name.
        name: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// The vhost's `max-queues` limit is reached (406).
    QueueLimit {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
        /// The limit.
        limit: i64,
    },
    /// Delete with `if-empty` of a queue with messages (406).
    NotEmpty {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// A queue argument with a wrong type or value (406).
    InvalidArg {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
        /// The argument.
        arg: String,
        /// RabbitMQ's words for what is wrong with it.
        why: String,
    },
    /// A queue property its type does not allow (quorum queues, 406).
    InvalidProperty {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
        /// The property (`exclusive`, `durable`, ...).
        property: &'static str,
    },
    /// A declare argument the queue's type does not take (quorum queues'
    /// `x-max-priority`, `x-queue-mode`; 406).
    ArgNotForType {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
        /// The argument.
        arg: &'static str,
        /// RabbitMQ's module name for the type (`rabbit_quorum_queue`).
        queue_type: &'static str,
    },
    /// `x-queue-type = stream` (406).
    StreamsUnsupported {
        /// The queue.
        queue: ShortStr,
        /// The vhost.
        vhost: String,
    },
    /// An `x-queue-type` the broker does not know (406).
    UnknownQueueType(String),
    /// Binding arguments a headers exchange cannot use (`x-match`), or a
    /// binding key an `x-consistent-hash` exchange cannot weigh, with
    /// RabbitMQ's words (406).
    BadBindingArgs(String),
    /// Declare arguments an exchange type refuses (`x-consistent-hash`'s
    /// `hash-header` and `hash-property`), with the plugin's words (406).
    BadExchangeArgs(String),
    /// A `CC`/`BCC` header that is not an array (406).
    RoutingHeaderType {
        /// The header.
        header: String,
        /// The type it had.
        type_name: &'static str,
    },
}

impl Refusal {
    /// RabbitMQ's AMQP reply code for it.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Refusal::NotFound { .. } => ReplyCode::NotFound,
            Refusal::Locked { .. } => ReplyCode::ResourceLocked,
            Refusal::DefaultExchange
            | Refusal::ReservedName { .. }
            | Refusal::SystemExchange { .. }
            | Refusal::InternalExchange { .. } => ReplyCode::AccessRefused,
            Refusal::UnknownExchangeType(_) => ReplyCode::CommandInvalid,
            Refusal::Inequivalent { .. }
            | Refusal::InUse { .. }
            | Refusal::QueueLimit { .. }
            | Refusal::NotEmpty { .. }
            | Refusal::InvalidArg { .. }
            | Refusal::InvalidProperty { .. }
            | Refusal::ArgNotForType { .. }
            | Refusal::StreamsUnsupported { .. }
            | Refusal::UnknownQueueType(_)
            | Refusal::BadBindingArgs(_)
            | Refusal::BadExchangeArgs(_)
            | Refusal::RoutingHeaderType { .. } => ReplyCode::PreconditionFailed,
        }
    }

    /// RabbitMQ's text for it, without the reply code's name.
    pub fn detail(&self) -> String {
        match self {
            Refusal::NotFound { kind, name, vhost } => {
                format!("no {} '{name}' in vhost '{vhost}'", kind.as_str())
            }
            Refusal::Locked { queue, vhost } => format!(
                "cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}'. It could be originally \
                 declared on another connection or the exclusive property value does not match that of the \
                 original declaration."
            ),
            Refusal::DefaultExchange => {
                "operation not permitted on the default exchange".to_string()
            }
            Refusal::ReservedName { kind, name } => format!(
                "{} name '{name}' contains reserved prefix 'amq.*'",
                kind.as_str()
            ),
            Refusal::SystemExchange { name, vhost } => {
                format!("deletion of system exchange '{name}' in vhost '{vhost}' not allowed")
            }
            Refusal::InternalExchange { name, vhost } => {
                format!("cannot publish to internal exchange '{name}' in vhost '{vhost}'")
            }
            Refusal::UnknownExchangeType(kind) => format!("unknown exchange type '{kind}'"),
            Refusal::Inequivalent {
                kind,
                name,
                vhost,
                mismatch,
            } => format!(
                "inequivalent arg '{}' for {} '{name}' in vhost '{vhost}': received '{}' but current is '{}'",
                mismatch.arg,
                kind.as_str(),
                mismatch.received,
                mismatch.current
            ),
            Refusal::InUse { kind, name, vhost } => {
                format!("{} '{name}' in vhost '{vhost}' in use", kind.as_str())
            }
            Refusal::QueueLimit {
                queue,
                vhost,
                limit,
            } => format!(
                "cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached"
            ),
            Refusal::NotEmpty { queue, vhost } => {
                format!("queue '{queue}' in vhost '{vhost}' not empty")
            }
            Refusal::InvalidArg {
                queue,
                vhost,
                arg,
                why,
            } => format!("invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}"),
            Refusal::InvalidProperty {
                queue,
                vhost,
                property,
            } => format!("invalid property '{property}' for queue '{queue}' in vhost '{vhost}'"),
            Refusal::ArgNotForType {
                queue,
                vhost,
                arg,
                queue_type,
            } => format!(
                "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type {queue_type}"
            ),
            Refusal::StreamsUnsupported { queue, vhost } => format!(
                "queue type 'stream' is not supported by this broker yet (queue '{queue}' in vhost '{vhost}')"
            ),
            Refusal::UnknownQueueType(t) => format!("unsupported queue type '{t}'"),
            Refusal::BadBindingArgs(why) | Refusal::BadExchangeArgs(why) => why.clone(),
            Refusal::RoutingHeaderType { header, type_name } => {
                format!("invalid message: {{unacceptable_type_in_header,\"{header}\",{type_name}}}")
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} - {}", self.reply_code().name(), self.detail())
    }
}

/// The AMQP edge: a refusal closes the channel, or the connection for a
/// hard reply code, with RabbitMQ's text.
impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        let code = r.reply_code();
        if code.is_hard() {
            Error::connection(code, r.detail())
        } else {
            Error::channel(code, r.detail())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_typed_and_speak_rabbitmq_at_the_amqp_edge() {
        let r = Refusal::Inequivalent {
            kind: Kind::Queue,
            name: "q".into(),
            vhost: "/".into(),
            mismatch: Box::new(Mismatch {
                arg: "durable".into(),
                received: "true".into(),
                current: "false".into(),
            }),
        };
        assert_eq!(r.reply_code(), ReplyCode::PreconditionFailed);
        assert_eq!(
            Error::from(r),
            Error::precondition(
                "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
            )
        );
        // A hard reply code closes the connection, as RabbitMQ does for
        // an unknown exchange type.
        let r = Refusal::UnknownExchangeType("x-nope".into());
        assert!(matches!(Error::from(r.clone()), Error::Connection(_)));
        assert_eq!(
            r.to_string(),
            "COMMAND_INVALID - unknown exchange type 'x-nope'"
        );
    }
}
