//! Warren's broker model and AMQP state machines. No sockets, no clock, no
//! tokio, no storage: the server crate feeds bytes, events and time in and
//! writes out what comes back.
//!
//! # Layout
//! - [`broker`]: the [`Broker`] (vhosts, users, limits, name generation).
//! - [`vhost`]: a [`VHost`]'s exchanges and queues, and the declare, delete
//!   and bind rules with RabbitMQ's reply codes and texts.
//! - [`exchange`]: exchange types, bindings and routing.
//! - [`delayed`]: what an `x-delayed-message` exchange holds until its time.
//! - [`queue`]: a [`Queue`]'s messages, consumers, credit and dispatch.
//! - [`message`]: a routed [`Message`].
//! - [`mailbox`]: how queues hand deliveries to connection tasks.
//! - [`connection`]: the connection state machine; `channel` (private) holds
//!   the per-channel methods.
//! - [`error`]: [`ChannelError`] and [`ConnectionError`].

pub mod access;
pub mod admin;
pub mod broker;
mod channel;
pub mod connection;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod fxhash;
pub mod mailbox;
pub mod message;
pub mod password;
pub mod permissions;
pub mod persist;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod vhost;

pub use broker::{Broker, BrokerConfig, Limits, User};
pub use connection::{ConnInfo, Connection};
pub use error::{
    AmqpError, ChannelError, CloseReason, ConnectionError, Error, Initiator, Kind, Refusal,
};
pub use mailbox::{Mailbox, NoWake, Wake};
pub use message::Message;
pub use queue::Queue;
pub use registry::TlsInfo;
pub use vhost::VHost;
