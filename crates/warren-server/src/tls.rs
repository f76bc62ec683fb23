//! TLS: the AMQPS listener's and the management API's certificates,
//! client-certificate verification, and what a session tells the broker
//! (protocol, cipher, the certificate's names for `EXTERNAL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, ProtocolVersion, RootCertStore, ServerConfig, ServerConnection,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use warren_core::TlsInfo;
use x509_parser::extensions::GeneralName;

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
    /// The protocol versions offered, by RabbitMQ's names
    /// (`ssl_options.versions`): `tlsv1.3`, `tlsv1.2`. Default both.
    pub versions: Vec<String>,
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
            versions: vec!["tlsv1.3".to_string(), "tlsv1.2".to_string()],
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
        if self.versions.is_empty() {
            return Err(ConfigError(
                "tls.versions must name at least one of tlsv1.3, tlsv1.2".to_string(),
            ));
        }
        for v in &self.versions {
            if protocol_version(v).is_none() {
                return Err(ConfigError(format!(
                    "tls.versions: '{v}' is not supported (tlsv1.3 or tlsv1.2; older versions are not offered)"
                )));
            }
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

/// A TLS setup that failed to load: which file and why.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The loaded certificates, shared by every TLS listener and swapped
/// whole on [`Tls::reload`]: a handshake uses the configuration current
/// when it starts, so reloading never touches an open connection.
#[derive(Debug, Clone)]
pub struct Tls {
    inner: Arc<TlsInner>,
}

#[derive(Debug)]
struct TlsInner {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate, key and CA bundle the configuration names.
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let server = build(config)?;
        Ok(Tls {
            inner: Arc::new(TlsInner {
                config: config.clone(),
                current: RwLock::new(Arc::new(server)),
            }),
        })
    }

    /// Reads the files again (after SIGHUP). On an error the configuration
    /// in use stays, and the error says what is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = build(&self.inner.config)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(server);
        Ok(())
    }

    /// The configuration a new handshake uses.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// An acceptor for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    /// The same certificates, offering HTTP/1.1 by ALPN (for the
    /// management API).
    pub fn for_http(&self) -> Result<Tls, TlsError> {
        let mut server = build(&self.inner.config)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            inner: Arc::new(TlsInner {
                config: self.inner.config.clone(),
                current: RwLock::new(Arc::new(server)),
            }),
        })
    }

    /// What the broker records of an established session.
    pub fn session_info(&self, session: &ServerConnection) -> TlsInfo {
        let protocol = match session.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "tlsv1.3",
            Some(ProtocolVersion::TLSv1_2) => "tlsv1.2",
            _ => "unknown",
        };
        let cipher = session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()).to_ascii_lowercase())
            .unwrap_or_default();
        let mut info = TlsInfo {
            protocol: protocol.to_string(),
            cipher,
            ..TlsInfo::default()
        };
        let leaf = session.peer_certificates().and_then(|c| c.first());
        if let Some(names) = leaf.and_then(|l| CertNames::parse(l.as_ref())) {
            let c = &self.inner.config;
            info.login_name = names.login_name(c.login_from, c.login_san_type, c.login_san_index);
            info.peer_cert_subject = Some(names.subject);
            info.peer_cert_issuer = Some(names.issuer);
            info.peer_cert_validity = Some(names.validity);
        }
        info
    }
}

/// The names in a certificate that logins and listings use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNames {
    /// Subject, RFC 4514 (`CN=app,O=Example`).
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// `not_before - not_after`.
    pub validity: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// DNS subject alternative names, in order.
    pub dns: Vec<String>,
    /// Email subject alternative names, in order.
    pub email: Vec<String>,
    /// URI subject alternative names, in order.
    pub uri: Vec<String>,
}

impl CertNames {
    /// Reads a DER certificate; `None` if it does not parse.
    pub fn parse(der: &[u8]) -> Option<CertNames> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = CertNames {
            subject: rfc4514(cert.subject()),
            issuer: rfc4514(cert.issuer()),
            validity: format!(
                "{} - {}",
                cert.validity().not_before,
                cert.validity().not_after
            ),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_string),
            dns: Vec::new(),
            email: Vec::new(),
            uri: Vec::new(),
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => names.dns.push((*n).to_string()),
                    GeneralName::RFC822Name(n) => names.email.push((*n).to_string()),
                    GeneralName::URI(n) => names.uri.push((*n).to_string()),
                    _ => {}
                }
            }
        }
        Some(names)
    }

    /// The user name `EXTERNAL` logs in as, chosen as configured.
    pub fn login_name(&self, from: LoginFrom, san: SanType, index: usize) -> Option<String> {
        match from {
            LoginFrom::CommonName => self.common_name.clone(),
            LoginFrom::DistinguishedName => Some(self.subject.clone()),
            LoginFrom::SubjectAlternativeName => match san {
                SanType::Dns => self.dns.get(index).cloned(),
                SanType::Email => self.email.get(index).cloned(),
                SanType::Uri => self.uri.get(index).cloned(),
            },
        }
    }
}

/// A distinguished name as RFC 4514 writes it: the last RDN first,
/// attributes by their short names.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map_or_else(|_| a.attr_type().to_id_string(), str::to_string);
                    let value = a.as_str().map_or_else(|_| "#".to_string(), escape_rdn);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rdn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || edge {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A protocol version by RabbitMQ's name for it.
fn protocol_version(name: &str) -> Option<&'static rustls::SupportedProtocolVersion> {
    match name {
        "tlsv1.3" => Some(&rustls::version::TLS13),
        "tlsv1.2" => Some(&rustls::version::TLS12),
        _ => None,
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{} ({what}): {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{} ({what}): no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn build(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Err(TlsError("tls.cert and tls.key are not set".to_string()));
    };
    let chain = certs(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("{} (key): {e}", key.display())))?;
    let versions: Vec<_> = config
        .versions
        .iter()
        .filter_map(|v| protocol_version(v))
        .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
    let builder = if config.verify_peer {
        let Some(ca) = &config.ca else {
            return Err(TlsError("tls.verify_peer needs tls.ca".to_string()));
        };
        let mut roots = RootCertStore::empty();
        for c in certs(ca, "CA bundle")? {
            roots
                .add(c)
                .map_err(|e| TlsError(format!("{} (CA bundle): {e}", ca.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if config.fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))
}
