//! The socket under a connection: plain TCP, or TLS driven by hand over the
//! same non-blocking calls, so the hot loops keep their readiness IO.
//!
//! The loops in `producer` and `consumer` never await a read or a write:
//! they call [`Stream::try_write`] and [`Stream::try_read_buf`] until both
//! would block, then await [`Stream::ready`]. On plain TCP each of these
//! is one match arm away from tokio's own call: no box, no copy.
//!
//! Over TLS a rustls `ClientConnection` sits between the loop and the
//! socket, and the three calls keep TCP's meaning:
//! - `try_write` first sends the records already encrypted. If the socket
//!   will not take them all it reports `WouldBlock` and accepts no
//!   plaintext (the backpressure a full TCP buffer gives); otherwise it
//!   encrypts what rustls's 64 KiB buffer accepts and sends what the socket
//!   takes. Records it could not send stay with rustls.
//! - `try_read_buf` also sends pending records first, then reads the
//!   socket into a 64 KiB ciphertext buffer (one syscall, where rustls's
//!   `read_tls` on the socket would read 4 KiB at a time), decrypts all of
//!   it and appends the plaintext to the caller's buffer.
//! - `ready` adds WRITABLE to the interest while records wait to be sent,
//!   so a loop that waits only to read (its own buffer is empty) still
//!   wakes to send them: its next `try_read_buf` does.
//!
//! Invariant: when `try_read_buf` returns, every byte read from the socket
//! has been handed to rustls and every decrypted byte to the caller; rustls
//! holds at most part of a record, which needs more bytes from the socket.
//! So `ready` never has to report "readable" on its own account. (The
//! handshake, done by `tokio_rustls`, leaves no plaintext behind: the AMQP
//! client speaks first.)

use std::io::{self, BufRead, IoSlice, Write};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConnection;

use crate::tls::{self, TlsClient};

/// Ciphertext read from the socket per call.
const CIPHERTEXT_READ: usize = 64 * 1024;

/// Socket reads one `try_read_buf` makes while they decrypt to nothing
/// (session tickets, key updates) before it lets the caller wait.
const READS_WITHOUT_PLAINTEXT: usize = 8;

/// A connection's socket.
pub(crate) enum Stream {
    /// AMQP over TCP.
    Plain(TcpStream),
    /// AMQPS. Boxed: a rustls connection is large, and the plain variant
    /// should not carry its size.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Connects to `addr`; with `tls`, completes a handshake with the
    /// broker named `host`.
    pub(crate) async fn connect(
        addr: &str,
        host: &str,
        tls: Option<&TlsClient>,
    ) -> io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = TlsClient::server_name(host)?;
        let (tcp, conn) = tls.connector.connect(name, tcp).await?.into_inner();
        Ok(Stream::Tls(Box::new(TlsStream::new(tcp, conn))))
    }

    /// Writes what the socket takes now, as `TcpStream::try_write`.
    #[inline]
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_write(buf),
            Stream::Tls(s) => s.try_write(buf),
        }
    }

    /// Appends what can be read now, as `TcpStream::try_read_buf`: `Ok(0)`
    /// is the end of the stream, `WouldBlock` that nothing is there yet.
    #[inline]
    pub(crate) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read_buf(buf),
            Stream::Tls(s) => s.try_read_buf(buf),
        }
    }

    /// Waits until `try_write` or `try_read_buf` (as `interest` says) may
    /// make progress; over TLS also until pending records may be sent.
    pub(crate) async fn ready(&mut self, interest: Interest) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.ready(interest).await.map(drop),
            Stream::Tls(s) => s.ready(interest).await,
        }
    }

    /// Writes all of `buf` (and, over TLS, every record it made).
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
        }
    }

    /// Reads at least one byte into `buf`, waiting as needed; 0 at the end.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }

    /// The negotiated protocol and cipher suite, over TLS.
    pub(crate) fn tls_session(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(tls::describe(&s.tls)),
        }
    }

    /// Over TLS, says (best effort, without waiting) that nothing more will
    /// be sent, so the broker sees a clean TLS close.
    pub(crate) fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            s.tls.send_close_notify();
            let _ = s.send_records();
        }
    }
}

/// A TLS session over a non-blocking socket.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    tls: ClientConnection,
    /// Read from the socket, not yet handed to rustls; empty between calls.
    ciphertext: BytesMut,
    /// The socket ended or the broker sent close_notify.
    eof: bool,
}

impl TlsStream {
    fn new(tcp: TcpStream, tls: ClientConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            ciphertext: BytesMut::with_capacity(CIPHERTEXT_READ),
            eof: false,
        }
    }

    /// Sends pending records until none are left (`true`) or the socket
    /// would block (`false`).
    fn send_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SocketWriter(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.send_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        // What the socket does not take now goes on the next call, or when
        // `ready` reports it writable.
        self.send_records()?;
        if n == 0 && !buf.is_empty() {
            // Cannot happen with rustls's buffer just emptied; a writer
            // must never report 0 for a non-empty buffer.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn try_read_buf(&mut self, out: &mut BytesMut) -> io::Result<usize> {
        self.send_records()?;
        let start = out.len();
        for _ in 0..READS_WITHOUT_PLAINTEXT {
            if self.eof {
                return Ok(0);
            }
            self.ciphertext.reserve(CIPHERTEXT_READ);
            if self.tcp.try_read_buf(&mut self.ciphertext)? == 0 {
                self.eof = true;
            }
            self.decrypt(out)?;
            if out.len() > start {
                return Ok(out.len() - start);
            }
        }
        // Only records without data so far, and the socket may hold more:
        // the caller's `ready` returns at once and it calls again.
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Hands all buffered ciphertext to rustls and appends what it decrypts
    /// to `out`. Bounded: every turn consumes ciphertext or ends the loop.
    fn decrypt(&mut self, out: &mut BytesMut) -> io::Result<()> {
        loop {
            if !self.ciphertext.is_empty() {
                let mut unread: &[u8] = &self.ciphertext;
                let n = self.tls.read_tls(&mut unread)?;
                if n == 0 {
                    // rustls takes nothing after close_notify.
                    self.ciphertext.clear();
                } else {
                    self.ciphertext.advance(n);
                }
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued an alert saying why; let the broker see it.
                    let _ = self.send_records();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let mut left = state.plaintext_bytes_to_read();
            let peer_closed = state.peer_has_closed();
            let mut reader = self.tls.reader();
            while left > 0 {
                let chunk = reader.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                out.extend_from_slice(chunk);
                reader.consume(n);
                left = left.saturating_sub(n);
            }
            if peer_closed {
                self.eof = true;
            }
            if self.ciphertext.is_empty() {
                return Ok(());
            }
        }
    }

    async fn ready(&mut self, interest: Interest) -> io::Result<()> {
        debug_assert!(self.ciphertext.is_empty(), "ciphertext left between calls");
        if self.eof && interest.is_readable() {
            // The next try_read_buf reports the end.
            return Ok(());
        }
        let interest = if self.tls.wants_write() {
            interest | Interest::WRITABLE
        } else {
            interest
        };
        self.tcp.ready(interest).await?;
        Ok(())
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tcp.ready(Interest::WRITABLE).await?;
                }
                Err(e) => return Err(e),
            }
        }
        while !self.send_records()? {
            self.tcp.ready(Interest::WRITABLE).await?;
        }
        Ok(())
    }

    async fn read_buf(&mut self, out: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.try_read_buf(out) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready(Interest::READABLE).await?;
                }
                other => return other,
            }
        }
    }
}

/// rustls's `write_tls` target: the socket's non-blocking writes, vectored
/// so one syscall sends every pending record.
struct SocketWriter<'a>(&'a TcpStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The TLS stream against an in-process tokio-rustls server with rcgen
    //! certificates: every test is bounded by [`LIMIT`] and loopback only.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// Bound on each test's network work.
    const LIMIT: Duration = Duration::from_secs(20);

    /// A CA and a server certificate for `localhost` and 127.0.0.1 that it
    /// signed: (CA PEM, server acceptor).
    fn ca_and_server() -> (String, TlsAcceptor) {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "warren-perf test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server certificate");
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
    }

    /// Accepts one TLS connection and echoes it until the client ends it.
    async fn echo_server(acceptor: TlsAcceptor) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let (mut r, mut w) = tokio::io::split(tls);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        addr
    }

    /// Test data that shows misordered or lost bytes.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Sends `data` and reads its echo the way the producer and consumer
    /// loops do: try_write and try_read_buf until both would block, then
    /// ready() with READABLE alone once the caller has nothing to write.
    async fn echo_through_hot_loop(stream: &mut Stream, data: &[u8]) -> Vec<u8> {
        let mut unsent = data;
        let mut got = BytesMut::new();
        while got.len() < data.len() {
            let mut write_blocked = false;
            if !unsent.is_empty() {
                // Small pieces, so the loop often has nothing left to write
                // while rustls still holds records.
                let piece = &unsent[..unsent.len().min(3000)];
                match stream.try_write(piece) {
                    Ok(n) => unsent = &unsent[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => write_blocked = true,
                    Err(e) => panic!("write: {e}"),
                }
            }
            got.reserve(16 * 1024);
            let read_some = match stream.try_read_buf(&mut got) {
                Ok(0) => panic!("echo ended after {} bytes", got.len()),
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) => panic!("read: {e}"),
            };
            if read_some || (!unsent.is_empty() && !write_blocked) {
                tokio::task::yield_now().await;
                continue;
            }
            let interest = if unsent.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            stream.ready(interest).await.expect("ready");
        }
        got.to_vec()
    }

    #[tokio::test]
    async fn tls_stream_echoes_megabytes_through_the_hot_loop_calls() {
        let (ca, acceptor) = ca_and_server();
        let addr = echo_server(acceptor).await;
        let client = TlsClient::with_ca_pem(ca.as_bytes()).expect("client");
        let data = pattern(4 << 20);
        let echoed = tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "127.0.0.1", Some(&client))
                .await
                .expect("TLS connect");
            assert!(
                s.tls_session().is_some_and(|t| t.starts_with("TLSv1_3")),
                "{:?}",
                s.tls_session()
            );
            echo_through_hot_loop(&mut s, &data).await
        })
        .await
        .expect("echo within the limit");
        assert!(echoed == data, "echo differs from what was sent");
    }

    #[tokio::test]
    async fn a_small_write_is_sent_while_the_caller_only_waits_to_read() {
        let (ca, acceptor) = ca_and_server();
        let addr = echo_server(acceptor).await;
        let client = TlsClient::with_ca_pem(ca.as_bytes()).expect("client");
        tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "localhost", Some(&client))
                .await
                .expect("TLS connect");
            for round in 0..50u8 {
                let msg = [round; 7];
                s.write_all(&msg).await.expect("write");
                let mut got = BytesMut::new();
                while got.len() < msg.len() {
                    assert_ne!(s.read_buf(&mut got).await.expect("read"), 0, "eof");
                }
                assert_eq!(&got[..], &msg[..]);
            }
        })
        .await
        .expect("round trips within the limit");
    }

    #[tokio::test]
    async fn records_left_behind_by_a_full_socket_go_out_while_the_caller_waits_to_read() {
        let (ca, acceptor) = ca_and_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<usize>();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            // Read nothing until the client's socket is full, then exactly
            // what it says it wrote, then answer.
            let Ok(total) = start_rx.await else { return };
            let mut buf = vec![0u8; 64 * 1024];
            let mut read = 0;
            while read < total {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
            tls.write_all(b"ok").await.expect("answer");
        });
        let client = TlsClient::with_ca_pem(ca.as_bytes()).expect("client");
        tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "127.0.0.1", Some(&client))
                .await
                .expect("TLS connect");
            let chunk = pattern(64 * 1024);
            let mut total = 0;
            // Bounded: loopback socket buffers fill within some megabytes.
            for _ in 0..100_000 {
                match s.try_write(&chunk) {
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            let Stream::Tls(t) = &s else {
                panic!("not TLS")
            };
            assert!(
                t.tls.wants_write(),
                "no records left behind by the full socket"
            );
            start_tx.send(total).expect("server waiting");
            // The caller has nothing of its own to write: it waits to read.
            let mut got = BytesMut::new();
            while got.len() < 2 {
                match s.try_read_buf(&mut got) {
                    Ok(0) => panic!("eof"),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        s.ready(Interest::READABLE).await.expect("ready");
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
            assert_eq!(&got[..], b"ok");
        })
        .await
        .expect("the pending records went out within the limit");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_refused_unless_insecure() {
        let (_, acceptor) = ca_and_server();
        let (other_ca, _) = ca_and_server();
        let addr = echo_server(acceptor.clone()).await;
        let client = TlsClient::with_ca_pem(other_ca.as_bytes()).expect("client");
        let refused = tokio::time::timeout(
            LIMIT,
            Stream::connect(&addr.to_string(), "127.0.0.1", Some(&client)),
        )
        .await
        .expect("handshake within the limit");
        assert!(
            refused.is_err(),
            "a certificate from another CA was accepted"
        );

        let addr = echo_server(acceptor).await;
        let client = TlsClient::insecure().expect("insecure client");
        let echoed = tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "127.0.0.1", Some(&client))
                .await
                .expect("TLS connect, unverified");
            echo_through_hot_loop(&mut s, &pattern(100_000)).await
        })
        .await
        .expect("echo within the limit");
        assert_eq!(echoed, pattern(100_000));
    }

    #[tokio::test]
    async fn the_brokers_close_reads_as_the_end_after_its_last_bytes() {
        let (ca, acceptor) = ca_and_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let mut hello = [0u8; 5];
            tls.read_exact(&mut hello).await.expect("read hello");
            tls.write_all(b"bye").await.expect("write bye");
            // close_notify, then the socket closes when `tls` drops.
            tls.shutdown().await.expect("shutdown");
        });
        let client = TlsClient::with_ca_pem(ca.as_bytes()).expect("client");
        tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "127.0.0.1", Some(&client))
                .await
                .expect("TLS connect");
            s.write_all(b"hello").await.expect("write");
            let mut got = BytesMut::new();
            for _ in 0..10 {
                if s.read_buf(&mut got).await.expect("read") == 0 {
                    break;
                }
            }
            assert_eq!(&got[..], b"bye");
            assert_eq!(s.read_buf(&mut got).await.expect("read at the end"), 0);
        })
        .await
        .expect("close within the limit");
    }

    #[tokio::test]
    async fn plain_tcp_passes_straight_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let (mut r, mut w) = tcp.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let data = pattern(1 << 20);
        let echoed = tokio::time::timeout(LIMIT, async {
            let mut s = Stream::connect(&addr.to_string(), "127.0.0.1", None)
                .await
                .expect("connect");
            assert!(s.tls_session().is_none());
            echo_through_hot_loop(&mut s, &data).await
        })
        .await
        .expect("echo within the limit");
        assert!(echoed == data, "echo differs from what was sent");
    }
}
