//! Where connection settings come from: the command line, then
//! `WARRENCTL_*` environment variables, then a profile of the config file
//! (`~/.config/warren/warrenctl.toml`), then the defaults.
//!
//! ```toml
//! [default]
//! url = "http://127.0.0.1:15672"
//! user = "guest"
//! password = "guest"
//!
//! [prod]
//! url = "https://broker.example:15671"
//! user = "ops"
//! password = "..."
//! vhost = "shop"
//! ca_cert = "/etc/warren/ca.pem"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cli::ConnArgs;
use crate::client::Endpoint;
use crate::error::CliError;

/// The environment warrenctl runs in (variables and home directory), so
/// tests can give their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Environment variables.
    pub vars: BTreeMap<String, String>,
    /// The home directory.
    pub home: Option<PathBuf>,
}

impl Env {
    /// The process's own.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn var(&self, k: &str) -> Option<String> {
        self.vars.get(k).filter(|v| !v.is_empty()).cloned()
    }
}

/// One profile of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    vhost: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// Connection settings, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The API endpoint.
    pub endpoint: Endpoint,
    /// The vhost commands act in.
    pub vhost: String,
    /// Whether a vhost was chosen explicitly (lists then show only it).
    pub vhost_given: bool,
}

fn load_profile(args: &ConnArgs, env: &Env) -> Result<Profile, CliError> {
    let explicit = args
        .config
        .clone()
        .or_else(|| env.var("WARRENCTL_CONFIG").map(PathBuf::from));
    let path = explicit.clone().or_else(|| {
        env.home
            .as_ref()
            .map(|h| h.join(".config/warren/warrenctl.toml"))
    });
    let Some(path) = path else {
        return Ok(Profile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(Profile::default());
        }
        Err(e) => {
            return Err(CliError::usage(format!(
                "config file {}: {e}",
                path.display()
            )));
        }
    };
    let mut profiles: BTreeMap<String, Profile> = toml::from_str(&text)
        .map_err(|e| CliError::usage(format!("config file {}: {e}", path.display())))?;
    let name = args
        .profile
        .clone()
        .or_else(|| env.var("WARRENCTL_PROFILE"))
        .unwrap_or_else(|| "default".to_string());
    match profiles.remove(&name) {
        Some(p) => Ok(p),
        None if name == "default" => Ok(Profile::default()),
        None => Err(CliError::usage(format!(
            "config file {}: no profile [{name}]",
            path.display()
        ))),
    }
}

/// Resolves the connection settings by precedence.
pub fn resolve(args: &ConnArgs, env: &Env) -> Result<Resolved, CliError> {
    let profile = load_profile(args, env)?;
    let from_parts = args.host.as_ref().map(|h| {
        let scheme = if args.tls { "https" } else { "http" };
        format!("{scheme}://{h}:{}", args.port.unwrap_or(15672))
    });
    let url = args
        .url
        .clone()
        .or(from_parts)
        .or_else(|| env.var("WARRENCTL_URL"))
        .or(profile.url)
        .unwrap_or_else(|| "http://127.0.0.1:15672".to_string());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "--url must start with http:// or https://: {url}"
        )));
    }
    let user = args
        .user
        .clone()
        .or_else(|| env.var("WARRENCTL_USER"))
        .or(profile.user)
        .unwrap_or_else(|| "guest".to_string());
    let password = args
        .password
        .clone()
        .or_else(|| env.var("WARRENCTL_PASSWORD"))
        .or(profile.password)
        .unwrap_or_else(|| "guest".to_string());
    let vhost_arg = args
        .vhost
        .clone()
        .or_else(|| env.var("WARRENCTL_VHOST"))
        .or(profile.vhost);
    let client_cert = match (
        args.client_cert.clone().or(profile.client_cert),
        args.client_key.clone().or(profile.client_key),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(CliError::usage(
                "a client certificate needs its key, and a key its certificate",
            ));
        }
    };
    Ok(Resolved {
        endpoint: Endpoint {
            url: url.trim_end_matches('/').to_string(),
            user,
            password,
            ca_cert: args.ca_cert.clone().or(profile.ca_cert),
            client_cert,
            insecure: args.insecure,
        },
        vhost_given: vhost_arg.is_some(),
        vhost: vhost_arg.unwrap_or_else(|| "/".to_string()),
    })
}
