//! The TOML configuration file. Every field has a default that works out of
//! the box; `Config::default()` is what `warren` runs with when given no file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warren_core::access::PermissionSpec;
use warren_core::password::Password;
use warren_core::permissions::{Pattern, Permissions};
use warren_core::{BrokerConfig, Limits, User};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to accept AMQP connections on. Default `0.0.0.0:5672`, the
    /// AMQP port on every interface, as RabbitMQ does; the default user
    /// `guest` can still only log in from loopback.
    pub listen: SocketAddr,
    /// Where durable state will be kept. Default `./warren-data`.
    pub data_dir: PathBuf,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax. Default `info`;
    /// the `RUST_LOG` environment variable overrides it.
    pub log: String,
    /// Log line format: `text` (default) or `json`, one object a line
    /// for log shippers.
    pub log_format: LogFormat,
    /// Most simultaneous client connections (RabbitMQ's `connection_max`):
    /// one more is refused at `connection.open` with 530 NOT_ALLOWED
    /// "connection refused: node connection limit (N) is reached", as
    /// RabbitMQ 3.11.x and later refuse it. Every accepted connection
    /// counts, handshakes included. Default 10,000.
    pub max_connections: usize,
    /// Most sockets between accept and a completed login (TLS handshake
    /// and AMQP handshake); more are closed at accept, so unauthenticated
    /// peers cannot hold the broker's connections. Default 1,000.
    pub max_unauthenticated_connections: usize,
    /// How long shutdown waits for clients to answer `connection.close`,
    /// in milliseconds. Default 5,000.
    pub shutdown_timeout_ms: u64,
    /// Protocol limits offered to clients.
    pub limits: LimitsConfig,
    /// Virtual hosts. Default `["/"]`.
    pub vhosts: Vec<String>,
    /// Users. Default: `guest`/`guest` on `/`, loopback only (RabbitMQ's rule).
    pub users: Vec<UserConfig>,
    /// Entries of the server properties sent in `connection.start`
    /// (RabbitMQ's `server_properties`): `product`, `version`, `platform`,
    /// ... replace Warren's, other keys are added. Default: none, so
    /// clients see `product = "Warren"`. `capabilities` cannot be set: it
    /// tells clients which features work.
    pub server_properties: std::collections::BTreeMap<String, ServerProperty>,
    /// The management HTTP API.
    pub management: ManagementConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// A definitions file in RabbitMQ's JSON format applied at every boot
    /// (RabbitMQ's `load_definitions`). Default: none.
    pub load_definitions: Option<PathBuf>,
    /// `[tls]`: the AMQPS listener and the certificate HTTPS uses.
    pub tls: crate::tls::TlsConfig,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// `[metrics]`: Prometheus text exposition, as RabbitMQ's
/// `rabbitmq_prometheus` plugin serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve it at all. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `0.0.0.0:15692`, the plugin's port.
    pub listen: SocketAddr,
    /// Serve HTTPS with the `[tls]` certificate (RabbitMQ's
    /// `prometheus.ssl`). Default false.
    pub tls: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 15692)),
            tls: false,
        }
    }
}

/// `[management]`: the HTTP API RabbitMQ's management plugin serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Serve it at all. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `0.0.0.0:15672`, RabbitMQ's port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (definitions files can be
    /// large). Default 20,000,000, as RabbitMQ's.
    pub max_body_bytes: usize,
    /// How often message and byte rates are sampled, in milliseconds
    /// (RabbitMQ's `collect_statistics_interval`). Default 5,000.
    pub stats_interval_ms: u64,
    /// Serve HTTPS with the `[tls]` certificate instead of HTTP. Default
    /// false.
    pub tls: bool,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 15672)),
            max_body_bytes: 20_000_000,
            stats_interval_ms: 5_000,
            tls: false,
        }
    }
}

/// A value in `[server_properties]`: text, a whole number or a boolean,
/// sent as an AMQP long string, signed 64-bit integer or boolean.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ServerProperty {
    /// Sent as a long string.
    Text(String),
    /// Sent as a signed 64-bit integer.
    Integer(i64),
    /// Sent as a boolean.
    Bool(bool),
}

impl ServerProperty {
    fn to_field(&self) -> warren_codec::FieldValue {
        use warren_codec::FieldValue;
        match self {
            ServerProperty::Text(s) => FieldValue::LongStr(s.as_str().into()),
            ServerProperty::Integer(i) => FieldValue::I64(*i),
            ServerProperty::Bool(b) => FieldValue::Bool(*b),
        }
    }
}

/// Protocol limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame, overhead included. Default 131,072 (RabbitMQ's);
    /// clients may negotiate down to 4,096.
    pub frame_max: u32,
    /// Channels per connection. Default 2,047 (RabbitMQ's).
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, in seconds; 0 disables.
    /// Default 60 (RabbitMQ's).
    pub heartbeat: u16,
    /// Largest message body accepted, in bytes. Default 128 MiB (RabbitMQ
    /// 3.x's); larger publishes get 406 PRECONDITION_FAILED.
    pub max_message_size: u64,
    /// Time from accept to `connection.open`, in milliseconds. Default
    /// 10,000 (RabbitMQ's `handshake_timeout`).
    pub handshake_timeout_ms: u64,
    /// Most consumers on one channel (RabbitMQ's
    /// `consumer_max_per_channel`); one more `basic.consume` closes the
    /// connection with 530 NOT_ALLOWED "reached maximum (N) of consumers
    /// per channel". Default: no limit, as RabbitMQ's `infinity`.
    pub consumer_max_per_channel: Option<usize>,
    /// How long a delivery may stay unacknowledged, in milliseconds, before
    /// its channel is closed with 406 PRECONDITION_FAILED "delivery
    /// acknowledgement on channel N timed out..." and its messages are
    /// requeued (RabbitMQ's `consumer_timeout`). Default 1,800,000 (30
    /// minutes, RabbitMQ's); 0 disables it. A queue's
    /// `x-consumer-timeout` argument or `consumer-timeout` policy
    /// overrides it for that queue's deliveries.
    pub consumer_timeout_ms: u64,
    /// The memory high watermark as a fraction of the memory available to
    /// the broker: the machine's (`MemTotal`) or, when smaller, its
    /// cgroup's limit (a container's). Above it the broker's resident
    /// memory raises a memory alarm: publishing connections get
    /// `connection.blocked "low on memory"` and are no longer read until
    /// use drops below 90% of the watermark. Default 0.4, RabbitMQ 3.x's
    /// `vm_memory_high_watermark.relative`; 0 blocks all publishing, as in
    /// RabbitMQ. Give this or `memory_high_watermark_absolute`.
    pub memory_high_watermark: Option<f64>,
    /// The memory high watermark in bytes (RabbitMQ's
    /// `vm_memory_high_watermark.absolute`): a number, or a string with
    /// RabbitMQ's units (`"1GiB"`, `"512MiB"`, `"2GB"`). Capped at the
    /// memory available, as RabbitMQ caps it. Default: none (the fraction
    /// applies).
    pub memory_high_watermark_absolute: Option<crate::resources::ByteSize>,
    /// Free space on the data directory's file system below which a disk
    /// alarm blocks publishers (`connection.blocked "low on disk space"`),
    /// checked every second with `statvfs` before any write can fail: a
    /// number of bytes or a string with units, as RabbitMQ's
    /// `disk_free_limit.absolute`. Default 50,000,000 (`"50MB"`,
    /// RabbitMQ's). Give this or `disk_free_limit_relative`.
    pub disk_free_limit: Option<crate::resources::ByteSize>,
    /// The free disk space limit as a multiple of the memory available
    /// (RabbitMQ's `disk_free_limit.relative`; 1.0 to 2.0 is its advice).
    /// Default: none (the absolute limit applies).
    pub disk_free_limit_relative: Option<f64>,
}

/// One user.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Password, in clear: keep the file readable only by the broker.
    /// Give this or `password_hash`.
    #[serde(default)]
    pub password: Option<String>,
    /// RabbitMQ's salted SHA-256 `password_hash` (as in a RabbitMQ
    /// definitions export, or from `warren hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Virtual hosts the user may open with full permissions (configure,
    /// write and read `.*`). Default `["/"]`.
    #[serde(default = "default_vhosts")]
    pub vhosts: Vec<String>,
    /// Narrower permissions per vhost, as RabbitMQ's regular expressions;
    /// a vhost listed here need not be in `vhosts`.
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, PermissionConfig>,
    /// Only from loopback addresses. Default false.
    #[serde(default)]
    pub loopback_only: bool,
    /// Tags, as RabbitMQ's: `administrator`, `monitoring`, `policymaker`,
    /// `management`, `impersonator`. Default none.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("password_hash", &"<redacted>")
            .field("vhosts", &self.vhosts)
            .field("loopback_only", &self.loopback_only)
            .field("tags", &self.tags)
            .finish()
    }
}

/// RabbitMQ-style permission patterns for one vhost: unanchored regular
/// expressions over resource names; `""` grants nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    /// Declare/delete queues and exchanges.
    pub configure: String,
    /// Publish to exchanges; be the destination of bindings.
    pub write: String,
    /// Consume from queues; be the source of bindings.
    pub read: String,
}

impl PermissionConfig {
    fn compile(&self) -> Result<Permissions, ConfigError> {
        let p = |s: &str| {
            Pattern::new(s)
                .map_err(|e| ConfigError(format!("invalid permission pattern '{s}': {e}")))
        };
        Ok(Permissions {
            configure: p(&self.configure)?,
            write: p(&self.write)?,
            read: p(&self.read)?,
            topic: Vec::new(),
        })
    }
}

impl UserConfig {
    /// The stored credential.
    pub fn credential(&self) -> Result<Password, ConfigError> {
        match (&self.password, &self.password_hash) {
            (Some(p), None) => Ok(Password::Plain(p.clone())),
            (None, Some(h)) => Password::from_rabbitmq_hash(h).ok_or_else(|| {
                ConfigError(format!(
                    "user '{}': password_hash is not a RabbitMQ SHA-256 hash",
                    self.name
                ))
            }),
            _ => Err(ConfigError(format!(
                "user '{}': give exactly one of password and password_hash",
                self.name
            ))),
        }
    }
}

fn default_vhosts() -> Vec<String> {
    vec!["/".to_string()]
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            frame_max: l.frame_max,
            channel_max: l.channel_max,
            heartbeat: l.heartbeat,
            max_message_size: l.max_message_size,
            handshake_timeout_ms: l.handshake_timeout_ms,
            consumer_max_per_channel: l.consumer_max_per_channel,
            consumer_timeout_ms: l
                .consumer_timeout
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            memory_high_watermark: None,
            memory_high_watermark_absolute: None,
            disk_free_limit: None,
            disk_free_limit_relative: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            data_dir: PathBuf::from("warren-data"),
            log: "info".to_string(),
            log_format: LogFormat::Text,
            max_connections: 10_000,
            max_unauthenticated_connections: 1_000,
            shutdown_timeout_ms: 5_000,
            limits: LimitsConfig::default(),
            vhosts: default_vhosts(),
            users: vec![UserConfig {
                name: "guest".to_string(),
                password: Some("guest".to_string()),
                password_hash: None,
                vhosts: default_vhosts(),
                permissions: Default::default(),
                loopback_only: true,
                tags: vec!["administrator".to_string()],
            }],
            server_properties: Default::default(),
            management: ManagementConfig::default(),
            metrics: MetricsConfig::default(),
            load_definitions: None,
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

/// A configuration problem, with the file it came from.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.frame_max < 4096 {
            return Err(ConfigError(format!(
                "limits.frame_max must be at least 4096, got {}",
                l.frame_max
            )));
        }
        if let Some(w) = l.memory_high_watermark
            && !(0.0..=1.0).contains(&w)
        {
            return Err(ConfigError(format!(
                "limits.memory_high_watermark must be between 0 and 1, got {w}"
            )));
        }
        if l.memory_high_watermark.is_some() && l.memory_high_watermark_absolute.is_some() {
            return Err(ConfigError(
                "give one of limits.memory_high_watermark and limits.memory_high_watermark_absolute"
                    .to_string(),
            ));
        }
        if let Some(r) = l.disk_free_limit_relative
            && !(r.is_finite() && r >= 0.0)
        {
            return Err(ConfigError(format!(
                "limits.disk_free_limit_relative must be a number of 0 or more, got {r}"
            )));
        }
        if l.disk_free_limit.is_some() && l.disk_free_limit_relative.is_some() {
            return Err(ConfigError(
                "give one of limits.disk_free_limit and limits.disk_free_limit_relative"
                    .to_string(),
            ));
        }
        for key in self.server_properties.keys() {
            if key == "capabilities" {
                return Err(ConfigError(
                    "server_properties.capabilities cannot be set: it tells clients which features work"
                        .to_string(),
                ));
            }
            if key.is_empty() || key.len() > 255 {
                return Err(ConfigError(format!(
                    "server_properties key '{key}' must be 1 to 255 bytes"
                )));
            }
        }
        if l.channel_max == 0 {
            return Err(ConfigError(
                "limits.channel_max must be at least 1".to_string(),
            ));
        }
        self.tls.validate()?;
        if self.management.tls && !self.tls.enabled() {
            return Err(ConfigError(
                "management.tls needs tls.cert and tls.key".to_string(),
            ));
        }
        if self.metrics.tls && !self.tls.enabled() {
            return Err(ConfigError(
                "metrics.tls needs tls.cert and tls.key".to_string(),
            ));
        }
        for u in &self.users {
            for p in u.permissions.values() {
                p.compile()?;
            }
            u.credential()?;
            for v in u.vhosts.iter().chain(u.permissions.keys()) {
                if !self.vhosts.contains(v) {
                    return Err(ConfigError(format!(
                        "user '{}' names unknown vhost '{v}'",
                        u.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The broker's part of the configuration.
    pub fn broker_config(&self) -> BrokerConfig {
        let (memory_limit, disk_free_limit) = crate::resources::configured_limits(&self.limits);
        BrokerConfig {
            vhosts: self.vhosts.clone(),
            users: self
                .users
                .iter()
                .map(|u| User {
                    name: u.name.clone(),
                    password: u
                        .credential()
                        .unwrap_or_else(|_| Password::Plain(String::new())),
                    tags: u.tags.clone(),
                    permissions: u
                        .vhosts
                        .iter()
                        .filter(|v| !u.permissions.contains_key(*v))
                        .map(|v| PermissionSpec::all(&u.name, v))
                        .chain(u.permissions.iter().map(|(v, p)| PermissionSpec {
                            user: u.name.clone(),
                            vhost: v.clone(),
                            configure: p.configure.clone(),
                            write: p.write.clone(),
                            read: p.read.clone(),
                        }))
                        .collect(),
                    loopback_only: u.loopback_only,
                })
                .collect(),
            limits: Limits {
                frame_max: self.limits.frame_max,
                channel_max: self.limits.channel_max,
                heartbeat: self.limits.heartbeat,
                max_message_size: self.limits.max_message_size,
                handshake_timeout_ms: self.limits.handshake_timeout_ms,
                connection_max: Some(self.max_connections),
                consumer_max_per_channel: self.limits.consumer_max_per_channel,
                consumer_timeout: (self.limits.consumer_timeout_ms > 0)
                    .then(|| std::time::Duration::from_millis(self.limits.consumer_timeout_ms)),
                memory_limit,
                disk_free_limit,
            },
            server_properties: self
                .server_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.to_field()))
                .collect(),
            ..BrokerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.port(), 5672);
        assert_eq!(c.users.len(), 1);
        assert!(c.users[0].loopback_only);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::from_toml("lisen = \"127.0.0.1:5672\"").unwrap_err();
        assert!(err.0.contains("unknown field"), "{err}");
    }

    #[test]
    fn passwords_are_not_printed() {
        let mut c = Config::default();
        c.users[0].password = Some("s3cr3t-value".to_string());
        assert!(!format!("{c:?}").contains("s3cr3t-value"), "{c:?}");
    }

    #[test]
    fn users_take_a_password_or_a_rabbitmq_hash() {
        let hash = Password::hash("pw", [9, 8, 7, 6])
            .to_rabbitmq_hash()
            .unwrap();
        let c = Config::from_toml(&format!(
            "[[users]]\nname = \"a\"\npassword_hash = \"{hash}\"\n"
        ))
        .unwrap();
        assert!(c.users[0].credential().unwrap().matches(b"pw"));
        let err = Config::from_toml("[[users]]\nname = \"a\"\n").unwrap_err();
        assert!(err.0.contains("exactly one"), "{err}");
        let err =
            Config::from_toml("[[users]]\nname = \"a\"\npassword_hash = \"zzz\"\n").unwrap_err();
        assert!(err.0.contains("not a RabbitMQ"), "{err}");
    }

    #[test]
    fn server_properties_replace_or_add_entries() {
        let c = Config::from_toml(
            "[server_properties]\nproduct = \"RabbitMQ\"\nversion = \"3.10.8\"\n\
             region = \"eu-1\"\nshard = 7\ncanary = true\n",
        )
        .unwrap();
        c.validate().unwrap();
        let b = c.broker_config();
        let get = |k: &str| {
            b.server_properties
                .iter()
                .find(|(n, _)| n == k)
                .map(|e| e.1.clone())
        };
        use warren_codec::FieldValue;
        assert_eq!(get("product"), Some(FieldValue::LongStr("RabbitMQ".into())));
        assert_eq!(get("shard"), Some(FieldValue::I64(7)));
        assert_eq!(get("canary"), Some(FieldValue::Bool(true)));
        let err = Config::from_toml("[server_properties]\ncapabilities = \"x\"\n").unwrap_err();
        assert!(err.0.contains("capabilities"), "{err}");
    }

    #[test]
    fn deploy_examples_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1, "no example config in deploy/");
    }
}
