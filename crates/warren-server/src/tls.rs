//! TLS: the AMQPS listener's and the management API's certificates,
//! client-certificate verification, and what a session tells the broker
//! (protocol, cipher, the certificate's names for `EXTERNAL`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[tls]`: enabled by giving a certificate and its key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address of the AMQPS listener. Default `0.0.0.0:5671`.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first. Setting it (and `key`) turns TLS on.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates are verified against.
    pub ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it (RabbitMQ's
    /// `ssl_options.verify = verify_peer`). Needs `ca`.
    pub verify_peer: bool,
    /// Refuse clients without a certificate (RabbitMQ's
    /// `ssl_options.fail_if_no_peer_cert`). Needs `verify_peer`.
    pub fail_if_no_peer_cert: bool,
    /// Which name of a client certificate `EXTERNAL` logs in as:
    /// `common_name` (default), `distinguished_name` or
    /// `subject_alternative_name` (RabbitMQ's `ssl_cert_login_from`).
    pub login_from: LoginFrom,
    /// With `subject_alternative_name`: which kind, `dns`, `email` or `uri`
    /// (RabbitMQ's `ssl_cert_login_san_type`). Default `dns`.
    pub login_san_type: SanType,
    /// With `subject_alternative_name`: which of that kind, from 0
    /// (RabbitMQ's `ssl_cert_login_san_index`).
    pub login_san_index: usize,
    /// Keep the plaintext listener (`listen`) open beside AMQPS. Default
    /// true; false is RabbitMQ's `listeners.tcp = none`.
    pub plaintext: bool,
}

/// The certificate name `EXTERNAL` uses.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoginFrom {
    /// The subject's CN.
    #[default]
    CommonName,
    /// The whole subject, RFC 4514 style (`CN=app,O=Example`).
    DistinguishedName,
    /// A subject alternative name.
    SubjectAlternativeName,
}

/// A kind of subject alternative name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    /// dNSName.
    #[default]
    Dns,
    /// rfc822Name.
    Email,
    /// uniformResourceIdentifier.
    Uri,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5671)),
            cert: None,
            key: None,
            ca: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
            login_from: LoginFrom::default(),
            login_san_type: SanType::default(),
            login_san_index: 0,
            plaintext: true,
        }
    }
}

impl TlsConfig {
    /// Whether a certificate is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// Checks combinations serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError(
                "tls.cert and tls.key must be given together".to_string(),
            ));
        }
        if self.verify_peer && self.ca.is_none() {
            return Err(ConfigError(
                "tls.verify_peer needs tls.ca, the CAs to verify client certificates against"
                    .to_string(),
            ));
        }
        if self.fail_if_no_peer_cert && !self.verify_peer {
            return Err(ConfigError(
                "tls.fail_if_no_peer_cert needs tls.verify_peer".to_string(),
            ));
        }
        if !self.plaintext && !self.enabled() {
            return Err(ConfigError(
                "tls.plaintext = false needs tls.cert and tls.key: there would be no listener"
                    .to_string(),
            ));
        }
        Ok(())
    }
}
