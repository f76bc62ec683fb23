//! The command line: global connection options and the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// warrenctl: manage Warren (or RabbitMQ) through the management HTTP API.
///
/// Connection settings come from, in this order: the options below, the
/// WARRENCTL_URL / WARRENCTL_USER / WARRENCTL_PASSWORD / WARRENCTL_VHOST
/// environment variables, the profile (--profile, default "default") of
/// ~/.config/warren/warrenctl.toml, and the defaults
/// (http://127.0.0.1:15672, guest/guest, vhost /).
#[derive(Debug, Parser)]
#[command(name = "warrenctl", version, about, long_about = None,
    after_help = "Examples:\n  \
    warrenctl --url http://127.0.0.1:15672 --user guest --password guest list queues\n  \
    warrenctl declare queue orders --durable --arg x-max-length=1000\n  \
    warrenctl publish --exchange events --routing-key orders.new --body hello\n  \
    warrenctl get --queue orders --count 1 --ack --format json\n  \
    warrenctl export definitions defs.json\n\n\
    Exit codes: 0 ok, 1 failure, 2 usage, 3 server unreachable, 4 authentication\n\
    or access refused, 5 not found, 6 precondition failed (the server refused).")]
pub struct Cli {
    /// Connection options.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format.
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the server.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnArgs {
    /// The management API's base URL, e.g. http://127.0.0.1:15672.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Host (with --port and --tls, instead of --url).
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Port (default 15672).
    #[arg(long, global = true)]
    pub port: Option<u16>,
    /// User.
    #[arg(long, short = 'u', global = true)]
    pub user: Option<String>,
    /// Password (prefer WARRENCTL_PASSWORD or a profile: a command line is
    /// visible to other users of the machine).
    #[arg(long, short = 'p', global = true)]
    pub password: Option<String>,
    /// Virtual host (default /; `list` shows every vhost unless one is
    /// given).
    #[arg(long, global = true)]
    pub vhost: Option<String>,
    /// Use HTTPS (with --host/--port).
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of CA certificates to trust.
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate (with --client-key).
    #[arg(long, global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Do not verify the server's certificate (testing only).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Profile of the config file to use.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Config file (default ~/.config/warren/warrenctl.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document, stable, for scripts.
    Json,
    /// Tab-separated values with a header line.
    Tsv,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Totals, versions and rates of the broker.
    Overview,
    /// Health check: reachable, version, alarms, listeners. Exits 0 only
    /// when healthy.
    Status,
    /// List objects.
    List {
        /// What to list.
        #[arg(value_enum)]
        kind: ListKind,
        /// Columns to show (comma-separated; dotted paths reach into
        /// objects, e.g. message_stats.publish).
        #[arg(long)]
        columns: Option<String>,
        /// Keep rows whose name matches this regular expression.
        #[arg(long)]
        filter: Option<String>,
        /// Sort by this column.
        #[arg(long)]
        sort: Option<String>,
        /// Reverse the order.
        #[arg(long)]
        reverse: bool,
    },
    /// Declare (create or update) an object.
    Declare {
        /// What.
        #[command(subcommand)]
        what: Declare,
    },
    /// Delete an object.
    Delete {
        /// What.
        #[command(subcommand)]
        what: Delete,
    },
    /// Purge a queue.
    Purge {
        /// What.
        #[command(subcommand)]
        what: Purge,
    },
    /// Publish one message through the API.
    ///
    /// The body comes from --body, --body-file, or standard input.
    #[command(
        after_help = "Example:\n  warrenctl publish --exchange events --routing-key orders.new --body hello --property content_type=text/plain --header x-id=7"
    )]
    Publish {
        /// Exchange ("" or amq.default: the default exchange).
        #[arg(long, default_value = "")]
        exchange: String,
        /// Routing key.
        #[arg(long, default_value = "")]
        routing_key: String,
        /// The body, as text.
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Read the body from this file ("-": standard input).
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// A property, NAME=VALUE (content_type, delivery_mode, priority,
        /// expiration, message_id, ...).
        #[arg(long = "property", value_name = "NAME=VALUE")]
        properties: Vec<String>,
        /// A header, NAME=VALUE (typed: numbers, true/false, JSON).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Persistent (delivery_mode 2).
        #[arg(long)]
        persistent: bool,
    },
    /// Get messages from a queue (requeued unless --ack).
    Get {
        /// The queue.
        #[arg(long)]
        queue: String,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Acknowledge them (remove them from the queue).
        #[arg(long, conflicts_with = "reject")]
        ack: bool,
        /// Reject them without requeue (dead-lettered if the queue says so).
        #[arg(long)]
        reject: bool,
        /// Show bodies as base64 always (default: text when it is UTF-8).
        #[arg(long)]
        base64: bool,
    },
    /// Close a connection (the client sees 320 CONNECTION_FORCED).
    Close {
        /// What.
        #[command(subcommand)]
        what: Close,
    },
    /// Export definitions (users, vhosts, permissions, policies, queues,
    /// exchanges, bindings) to a file, or "-" for standard output.
    Export {
        /// What.
        #[command(subcommand)]
        what: Export,
    },
    /// Import definitions from a file, or "-" for standard input.
    Import {
        /// What.
        #[command(subcommand)]
        what: Import,
    },
    /// Set a user's password (read from standard input when not given).
    SetPassword {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
        /// The new password.
        #[arg(long = "new-password")]
        new_password: Option<String>,
    },
    /// Set limits of a user, as rabbitmqctl's set_user_limits: a JSON
    /// object of max-connections and max-channels (a negative value is no
    /// limit, 0 refuses all). Limits it does not name stay.
    #[command(
        after_help = "Example:\n  warrenctl set-user-limits app '{\"max-connections\": 10, \"max-channels\": 50}'"
    )]
    SetUserLimits {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
        /// The limits, as JSON.
        #[arg(value_name = "JSON")]
        definition: String,
    },
    /// Clear a limit of a user (max-connections, max-channels, or all), as
    /// rabbitmqctl's clear_user_limits.
    ClearUserLimits {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
        /// The limit, or "all".
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List users' limits (every user with one, or one user's), as
    /// rabbitmqctl's list_user_limits.
    ListUserLimits {
        /// Only this user's.
        #[arg(long = "for-user")]
        for_user: Option<String>,
    },
    /// Print RabbitMQ's salted SHA-256 hash of a password (read from
    /// standard input when not given).
    HashPassword {
        /// The password.
        #[arg(value_name = "PASSWORD")]
        secret: Option<String>,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Copy the definitions of a running RabbitMQ (or Warren) here, then
    /// move the messages of chosen queues over AMQP without losing any.
    Migrate(crate::migrate::MigrateArgs),
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    /// Exchanges.
    Exchanges,
    /// Queues.
    Queues,
    /// Bindings.
    Bindings,
    /// Connections.
    Connections,
    /// Channels.
    Channels,
    /// Consumers.
    Consumers,
    /// Users.
    Users,
    /// Virtual hosts.
    Vhosts,
    /// Permissions.
    Permissions,
    /// Policies.
    Policies,
}

/// What `declare` declares.
#[derive(Debug, Subcommand)]
pub enum Declare {
    /// An exchange.
    Exchange {
        /// Name.
        name: String,
        /// Type: direct, fanout, topic, headers.
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        /// Survives restarts.
        #[arg(long)]
        durable: bool,
        /// Deleted with its last binding.
        #[arg(long)]
        auto_delete: bool,
        /// Takes no publishes, only exchange-to-exchange bindings.
        #[arg(long)]
        internal: bool,
        /// An argument, NAME=VALUE (typed: numbers, true/false, JSON).
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
    },
    /// A queue.
    Queue {
        /// Name.
        name: String,
        /// Survives restarts.
        #[arg(long)]
        durable: bool,
        /// Deleted with its last consumer.
        #[arg(long)]
        auto_delete: bool,
        /// Queue type (classic, quorum): sets x-queue-type.
        #[arg(long = "type")]
        kind: Option<String>,
        /// An argument, NAME=VALUE, e.g. x-max-length=1000 (typed: numbers,
        /// true/false, JSON).
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
    },
    /// A binding.
    Binding {
        /// Which binding.
        #[command(flatten)]
        which: BindingArgs,
        /// An argument, NAME=VALUE.
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
    },
    /// A user.
    User {
        /// Name.
        name: String,
        /// Password (read from standard input when neither this nor
        /// --password-hash is given).
        #[arg(long = "new-password", conflicts_with = "password_hash")]
        new_password: Option<String>,
        /// RabbitMQ password hash instead of a password.
        #[arg(long)]
        password_hash: Option<String>,
        /// Tags, comma-separated (administrator, monitoring, policymaker,
        /// management, impersonator).
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// A virtual host.
    Vhost {
        /// Name.
        name: String,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Tags, comma-separated.
        #[arg(long)]
        tags: Option<String>,
        /// Default queue type (classic, quorum).
        #[arg(long)]
        default_queue_type: Option<String>,
    },
    /// A user's permissions in the vhost.
    Permission {
        /// The user.
        #[arg(long = "for-user")]
        for_user: String,
        /// Configure regex.
        #[arg(long, default_value = ".*")]
        configure: String,
        /// Write regex.
        #[arg(long, default_value = ".*")]
        write: String,
        /// Read regex.
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// A user's topic permissions on a topic exchange in the vhost.
    TopicPermission {
        /// The user.
        #[arg(long = "for-user")]
        for_user: String,
        /// The exchange.
        #[arg(long)]
        exchange: String,
        /// Routing keys it may publish with.
        #[arg(long, default_value = ".*")]
        write: String,
        /// Binding keys it may bind with.
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// A policy (or, with --operator, an operator policy).
    Policy {
        /// Name.
        name: String,
        /// Pattern (regular expression over names).
        #[arg(long)]
        pattern: String,
        /// Definition, as JSON: '{"max-length":1000}'.
        #[arg(long)]
        definition: String,
        /// Priority.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// queues, exchanges, all, classic_queues, quorum_queues.
        #[arg(long, default_value = "all")]
        apply_to: String,
        /// An operator policy.
        #[arg(long)]
        operator: bool,
    },
}

/// A binding's ends and key.
#[derive(Debug, Clone, Args)]
pub struct BindingArgs {
    /// Source exchange.
    #[arg(long)]
    pub source: String,
    /// Destination queue or exchange.
    #[arg(long)]
    pub destination: String,
    /// queue or exchange.
    #[arg(long, default_value = "queue")]
    pub destination_type: String,
    /// Binding key.
    #[arg(long, default_value = "")]
    pub routing_key: String,
}

/// What `delete` deletes.
#[derive(Debug, Subcommand)]
pub enum Delete {
    /// An exchange.
    Exchange {
        /// Name.
        name: String,
        /// Only if it has no bindings.
        #[arg(long)]
        if_unused: bool,
    },
    /// A queue.
    Queue {
        /// Name.
        name: String,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
        /// Only if it has no messages.
        #[arg(long)]
        if_empty: bool,
    },
    /// A binding (by its source, destination and key).
    Binding {
        /// Which binding.
        #[command(flatten)]
        which: BindingArgs,
    },
    /// A user.
    User {
        /// Name.
        name: String,
    },
    /// A virtual host, with everything in it.
    Vhost {
        /// Name.
        name: String,
    },
    /// A user's permissions in the vhost.
    Permission {
        /// The user.
        #[arg(long = "for-user")]
        for_user: String,
    },
    /// A user's topic permissions in the vhost.
    TopicPermission {
        /// The user.
        #[arg(long = "for-user")]
        for_user: String,
        /// Only those on this exchange.
        #[arg(long)]
        exchange: Option<String>,
    },
    /// A policy.
    Policy {
        /// Name.
        name: String,
        /// An operator policy.
        #[arg(long)]
        operator: bool,
    },
}

/// What `purge` purges.
#[derive(Debug, Subcommand)]
pub enum Purge {
    /// A queue.
    Queue {
        /// Name.
        name: String,
    },
}

/// What `close` closes.
#[derive(Debug, Subcommand)]
pub enum Close {
    /// A connection, by name (see `list connections`).
    Connection {
        /// Name.
        name: String,
        /// Reason the client is told.
        #[arg(long, default_value = "Closed via warrenctl")]
        reason: String,
    },
}

/// What `export` exports.
#[derive(Debug, Subcommand)]
pub enum Export {
    /// Definitions (the whole broker, or one vhost with --vhost).
    Definitions {
        /// File, or "-" (default) for standard output.
        #[arg(default_value = "-")]
        file: String,
    },
}

/// What `import` imports.
#[derive(Debug, Subcommand)]
pub enum Import {
    /// Definitions (RabbitMQ's JSON).
    Definitions {
        /// File, or "-" for standard input.
        file: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
