//! The management HTTP API as warrenctl speaks it: one agent, Basic auth,
//! JSON in and out, and every failure turned into a [`CliError`] that
//! names the server, the HTTP status and the broker's reason.

use std::time::Duration;

use serde_json::Value;

use crate::error::{CliError, Exit};

/// How to reach one management API.
#[derive(Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:15672` (no trailing slash).
    pub url: String,
    /// User.
    pub user: String,
    /// Password (never printed).
    pub password: String,
    /// PEM file of CA certificates to trust for HTTPS.
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate chain and key, for servers that ask.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Skip certificate verification (testing only).
    pub insecure: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A connected client.
pub struct Api {
    endpoint: Endpoint,
    agent: ureq::Agent,
    auth: String,
}

/// Percent-encodes one path segment (a vhost `/` becomes `%2F`).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::new(Exit::Usage, format!("cannot read {}: {e}", path.display())))
}

impl Api {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Result<Self, CliError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &endpoint.ca_cert {
            let pem = read_pem(ca)?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(CliError::new(
                    Exit::Usage,
                    format!("no certificate in {}", ca.display()),
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let Some((cert, key)) = &endpoint.client_cert {
            let chain: Vec<ureq::tls::Certificate<'static>> =
                ureq::tls::parse_pem(&read_pem(cert)?)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                        _ => None,
                    })
                    .collect();
            let key = ureq::tls::parse_pem(&read_pem(key)?)
                .find_map(|i| match i {
                    Ok(ureq::tls::PemItem::PrivateKey(k)) => Some(k.to_owned()),
                    _ => None,
                })
                .ok_or_else(|| {
                    CliError::new(Exit::Usage, format!("no private key in {}", key.display()))
                })?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        if endpoint.insecure {
            tls = tls.disable_verification(true);
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls.build())
            .build();
        let auth = format!(
            "Basic {}",
            base64(format!("{}:{}", endpoint.user, endpoint.password).as_bytes())
        );
        Ok(Api {
            agent: ureq::Agent::new_with_config(config),
            endpoint,
            auth,
        })
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        &self.endpoint.url
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{path}", self.endpoint.url.trim_end_matches('/'))
    }

    fn finish(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<Value>, CliError> {
        let mut resp = result.map_err(|e| {
            CliError::new(
                Exit::Unreachable,
                format!("cannot reach {}: {e}", self.server()),
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text).map(Some).map_err(|e| {
                CliError::new(
                    Exit::Failure,
                    format!(
                        "{method} {path} on {}: the answer is not JSON: {e}",
                        self.server()
                    ),
                )
            });
        }
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match v.get("reason") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
                None => None,
            })
            .unwrap_or_else(|| text.trim().to_string());
        let exit = match status {
            401 | 403 => Exit::Auth,
            404 => Exit::NotFound,
            400 | 405 | 409 | 412 | 413 => Exit::Precondition,
            _ => Exit::Failure,
        };
        let reason = if reason.is_empty() {
            "no reason given".to_string()
        } else {
            reason
        };
        Err(CliError::new(
            exit,
            format!(
                "{method} /api/{path} on {}: {status}: {reason}",
                self.server()
            ),
        ))
    }

    /// `GET`, the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        let r = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.auth)
            .call();
        Ok(self.finish("GET", path, r)?.unwrap_or(Value::Null))
    }

    /// `PUT` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<(), CliError> {
        let r = self
            .agent
            .put(self.url(path))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .send(body.to_string());
        self.finish("PUT", path, r).map(|_| ())
    }

    /// `POST` with a JSON body; the JSON answer, if any.
    pub fn post(&self, path: &str, body: &Value) -> Result<Option<Value>, CliError> {
        let r = self
            .agent
            .post(self.url(path))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .send(body.to_string());
        self.finish("POST", path, r)
    }

    /// `DELETE`, with extra headers (`X-Reason`).
    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Result<(), CliError> {
        let mut req = self
            .agent
            .delete(self.url(path))
            .header("Authorization", &self.auth);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.call();
        self.finish("DELETE", path, r).map(|_| ())
    }
}

/// Standard base64 with padding.
pub fn base64(raw: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Standard base64 decoding (padding optional); `None` if it is not.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}
