//! Per-vhost permissions: configure, write and read regular expressions,
//! matched (unanchored, as RabbitMQ does) against resource names.

use regex::Regex;

use crate::error::Error;

/// One permission: a pattern a resource name must match. The empty pattern
/// grants nothing, as in RabbitMQ.
#[derive(Debug, Clone)]
pub struct Pattern(Option<Regex>);

impl Pattern {
    /// Compiles a pattern; `""` denies everything.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        if pattern.is_empty() {
            Ok(Pattern(None))
        } else {
            Regex::new(pattern).map(|r| Pattern(Some(r)))
        }
    }

    /// Nothing.
    pub fn deny() -> Self {
        Pattern(None)
    }

    /// `.*`: everything.
    pub fn all() -> Self {
        Pattern(Regex::new(".*").ok())
    }

    fn allows(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// What a user may do in one vhost.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// Declare and delete queues and exchanges.
    pub configure: Pattern,
    /// Publish to exchanges, bind queues (as destination).
    pub write: Pattern,
    /// Consume and get from queues, bind from exchanges (as source).
    pub read: Pattern,
    /// Topic permissions: routing keys a user may publish with (`write`)
    /// and bind with (`read`) on one topic exchange each. A topic exchange
    /// not listed is not restricted, as in RabbitMQ.
    pub topic: Vec<TopicGrant>,
}

/// A user's topic permissions on one topic exchange.
#[derive(Debug, Clone)]
pub struct TopicGrant {
    /// The exchange.
    pub exchange: String,
    /// Routing keys it may publish with.
    pub write: Pattern,
    /// Binding keys it may bind with.
    pub read: Pattern,
}

impl Permissions {
    /// Nothing at all (a user with no permissions in the vhost).
    pub fn none() -> Self {
        Permissions {
            configure: Pattern(None),
            write: Pattern(None),
            read: Pattern(None),
            topic: Vec::new(),
        }
    }

    /// Everything (`.*` three times), RabbitMQ's default for guest on `/`.
    pub fn all() -> Self {
        Permissions {
            configure: Pattern::all(),
            write: Pattern::all(),
            read: Pattern::all(),
            topic: Vec::new(),
        }
    }
}

/// The kind of resource being checked, for the error text.
#[derive(Debug, Clone, Copy)]
pub enum Resource {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

/// Which permission an operation needs.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// `configure`.
    Configure,
    /// `write`.
    Write,
    /// `read`.
    Read,
}

/// The checker a channel uses: the user's permissions in the open vhost.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// The user's name.
    pub user: &'a str,
    /// The vhost's name.
    pub vhost: &'a str,
    /// The permissions.
    pub perms: &'a Permissions,
}

impl Grant<'_> {
    /// Checks `access` to a resource; 403 ACCESS_REFUSED otherwise.
    pub fn check(&self, access: Access, kind: Resource, name: &[u8]) -> Result<(), Error> {
        let text = String::from_utf8_lossy(name);
        // RabbitMQ checks the default exchange under the name amq.default.
        let text = if matches!(kind, Resource::Exchange) && text.is_empty() {
            "amq.default".into()
        } else {
            text
        };
        let p = match access {
            Access::Configure => &self.perms.configure,
            Access::Write => &self.perms.write,
            Access::Read => &self.perms.read,
        };
        if p.allows(&text) {
            return Ok(());
        }
        let kind = match kind {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        };
        Err(Error::access_refused(format!(
            "access to {kind} '{text}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// Checks a routing key (`Write`: publishing) or binding key (`Read`:
    /// binding) against the user's topic permissions on the topic exchange
    /// `exchange`; 403 ACCESS_REFUSED as RabbitMQ words it otherwise. The
    /// caller checks that the exchange is a topic exchange.
    pub fn check_topic(&self, access: Access, exchange: &[u8], key: &[u8]) -> Result<(), Error> {
        let Some(t) = self
            .perms
            .topic
            .iter()
            .find(|t| t.exchange.as_bytes() == exchange)
        else {
            return Ok(());
        };
        let key = String::from_utf8_lossy(key);
        let p = match access {
            Access::Read => &t.read,
            _ => &t.write,
        };
        if p.allows(&key) {
            return Ok(());
        }
        Err(Error::access_refused(format!(
            "access to topic '{key}' in exchange '{}' in vhost '{}' refused for user '{}'",
            t.exchange, self.vhost, self.user
        )))
    }
}
