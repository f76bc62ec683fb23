//! A minimal HTTP/1.1 client for the management API tests: one request
//! per connection (`Connection: close`), read to the end, bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn base64(raw: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A client for `b`'s API as the default user, guest.
pub fn guest(b: &crate::TestBroker) -> Http {
    Http::new(b.http, "guest", "guest")
}

/// A client for one broker's API, as one user.
#[derive(Debug, Clone)]
pub struct Http {
    /// The API's address.
    pub addr: SocketAddr,
    /// `user:password`, or none.
    pub auth: Option<(String, String)>,
    /// HTTPS with this client configuration.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Http {
    /// As `user`/`password`.
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> Self {
        Http {
            addr,
            auth: Some((user.to_string(), password.to_string())),
            tls: None,
        }
    }

    /// The same, over HTTPS.
    pub fn with_tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Without credentials.
    pub fn anonymous(addr: SocketAddr) -> Self {
        Http {
            addr,
            auth: None,
            tls: None,
        }
    }

    /// Sends one request; `extra` headers as `Name: value` lines.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[&str],
    ) -> Reply {
        let fut = async {
            let mut s: Box<dyn crate::Stream> = match &self.tls {
                Some(config) => Box::new(
                    crate::tls::connect(self.addr, std::sync::Arc::clone(config))
                        .await
                        .expect("connect to the API over TLS"),
                ),
                None => Box::new(
                    TcpStream::connect(self.addr)
                        .await
                        .expect("connect to the API"),
                ),
            };
            let mut req =
                format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
            if let Some((u, p)) = &self.auth {
                req.push_str(&format!(
                    "Authorization: Basic {}\r\n",
                    base64(format!("{u}:{p}").as_bytes())
                ));
            }
            for h in extra {
                req.push_str(h);
                req.push_str("\r\n");
            }
            let body = body.unwrap_or("");
            if !body.is_empty() || matches!(method, "PUT" | "POST") {
                req.push_str("Content-Type: application/json\r\n");
                req.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            req.push_str("\r\n");
            req.push_str(body);
            s.write_all(req.as_bytes()).await.expect("write request");
            let mut raw = Vec::new();
            match s.read_to_end(&mut raw).await {
                Ok(_) => {}
                // A TLS peer that closed without close_notify: what came
                // before is the whole reply (Connection: close).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => panic!("read response: {e}"),
            }
            parse(&raw)
        };
        tokio::time::timeout(Duration::from_secs(20), fut)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 20 s"))
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[]).await
    }

    /// `PUT` with a JSON body.
    pub async fn put(&self, path: &str, body: &str) -> Reply {
        self.request("PUT", path, Some(body), &[]).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, Some(body), &[]).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, &[]).await
    }
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded by the input: each round consumes at least a size line.
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let stop = (start + size).min(b.len());
        out.extend_from_slice(&b[start..stop]);
        b = &b[(stop + 2).min(b.len())..];
    }
    out
}
