//! The little of an AMQP client the tool needs before its hot loops: the
//! handshake, synchronous methods on channel 1, and a polite close.
//!
//! The hot loops (see `producer` and `consumer`) drive the socket
//! themselves with `try_read`/`try_write`; this module is only for setup
//! and teardown, where clarity beats speed. Plain TCP or TLS is the
//! [`Stream`]'s business.

use std::time::Duration;

use bytes::BytesMut;
use warren_codec::{
    ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionStartOk,
    ConnectionTuneOk, DecodeError, ExchangeDeclare, FieldTable, FieldValue, Frame, FrameDecoder,
    LongStr, Method, PROTOCOL_HEADER, QueueBind, QueueDeclare, QueuePurge, ShortStr, encode_method,
};

use crate::options::Options;
use crate::stream::Stream;

/// The one channel every connection uses.
pub(crate) const CHANNEL: u16 = 1;

/// The frame_max we ask for when the broker proposes "no limit" (0).
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// How long a connection may take to open, and a close to be answered.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame from the broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("broker closed the connection: {code} {text} ({class_id}/{method_id})")]
    ConnectionClosed {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error("broker closed the channel: {code} {text} ({class_id}/{method_id})")]
    ChannelClosed {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error("broker closed the socket{0}")]
    Eof(&'static str),
    #[error("unexpected {0} from the broker")]
    Unexpected(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("--tls without a TLS client: Options::normalize was not called")]
    TlsNotConfigured,
}

/// Result of client operations.
pub(crate) type Result<T> = std::result::Result<T, ClientError>;

/// Turns a close method from the broker into the error it reports.
pub(crate) fn close_error(method: &Method) -> Option<ClientError> {
    match method {
        Method::ConnectionClose(c) => Some(ClientError::ConnectionClosed {
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }),
        Method::ChannelClose(c) => Some(ClientError::ChannelClosed {
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }),
        _ => None,
    }
}

/// An open connection with channel 1 open.
pub(crate) struct Conn {
    /// The socket; the hot loops take it over.
    pub(crate) stream: Stream,
    /// Bytes read and not yet decoded.
    pub(crate) rbuf: BytesMut,
    /// Decoder sized by the negotiated frame_max.
    pub(crate) decoder: FrameDecoder,
    /// Negotiated frame_max, overhead included.
    pub(crate) frame_max: u32,
}

impl Conn {
    /// Connects, authenticates with PLAIN, tunes (heartbeat 0, the broker's
    /// frame_max), opens the vhost and channel 1.
    pub(crate) async fn open(opts: &Options) -> Result<Conn> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::open_inner(opts))
            .await
            .map_err(|_| ClientError::Timeout("connection handshake"))?
    }

    async fn open_inner(opts: &Options) -> Result<Conn> {
        let tls = match (opts.tls, &opts.tls_client) {
            (false, _) => None,
            (true, Some(client)) => Some(client),
            (true, None) => return Err(ClientError::TlsNotConfigured),
        };
        let stream = Stream::connect(&opts.addr(), &opts.host, tls).await?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(DEFAULT_FRAME_MAX),
            frame_max: DEFAULT_FRAME_MAX,
        };
        conn.stream.write_all(PROTOCOL_HEADER).await?;
        match conn.next_method(0).await? {
            Method::ConnectionStart(start) => {
                let mechs = start.mechanisms.to_lossy();
                if !mechs.split(' ').any(|m| m == "PLAIN") {
                    return Err(ClientError::Unexpected(format!(
                        "mechanism list without PLAIN: {mechs}"
                    )));
                }
            }
            other => return Err(ClientError::Unexpected(other.name().to_string())),
        }
        let capabilities = FieldTable::default()
            .with("publisher_confirms", FieldValue::Bool(true))
            .with("basic.nack", FieldValue::Bool(true))
            .with("consumer_cancel_notify", FieldValue::Bool(true));
        let props = FieldTable::default()
            .with("product", FieldValue::LongStr(LongStr::from("warren-perf")))
            .with(
                "version",
                FieldValue::LongStr(LongStr::from(env!("CARGO_PKG_VERSION"))),
            )
            .with("capabilities", FieldValue::Table(capabilities));
        let response = format!("\0{}\0{}", opts.user, opts.password);
        conn.send(
            0,
            ConnectionStartOk {
                client_properties: props,
                response: LongStr::from(response),
                ..Default::default()
            }
            .into(),
        )
        .await?;
        let tune = match conn.next_method(0).await {
            Ok(Method::ConnectionTune(t)) => t,
            Ok(other) => return Err(ClientError::Unexpected(other.name().to_string())),
            // RabbitMQ drops the socket on a refused login.
            Err(ClientError::Eof(_)) => return Err(ClientError::Eof(" (authentication refused?)")),
            Err(e) => return Err(e),
        };
        conn.frame_max = if tune.frame_max == 0 {
            DEFAULT_FRAME_MAX
        } else {
            tune.frame_max
        };
        conn.decoder = FrameDecoder::new(conn.frame_max);
        let mut out = BytesMut::new();
        encode_method(
            &mut out,
            0,
            &ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: conn.frame_max,
                heartbeat: 0,
            }
            .into(),
        );
        encode_method(
            &mut out,
            0,
            &ConnectionOpen {
                virtual_host: ShortStr::from(opts.vhost.as_str()),
                ..Default::default()
            }
            .into(),
        );
        conn.stream.write_all(&out).await?;
        match conn.next_method(0).await? {
            Method::ConnectionOpenOk(_) => {}
            other => return Err(ClientError::Unexpected(other.name().to_string())),
        }
        match conn.rpc(ChannelOpen::default().into()).await? {
            Method::ChannelOpenOk(_) => Ok(conn),
            other => Err(ClientError::Unexpected(other.name().to_string())),
        }
    }

    /// Reads one frame, waiting for bytes as needed.
    pub(crate) async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(frame);
            }
            self.rbuf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ClientError::Eof(""));
            }
        }
    }

    /// The next method on `channel` (or a close on channel 0), skipping
    /// heartbeats and content. A close from the broker becomes an error.
    async fn next_method(&mut self, channel: u16) -> Result<Method> {
        loop {
            match self.read_frame().await? {
                Frame::Method {
                    channel: ch,
                    method,
                } => {
                    if let Some(err) = close_error(&method) {
                        if matches!(method, Method::ConnectionClose(_)) {
                            let _ = self.send(0, ConnectionCloseOk.into()).await;
                        }
                        return Err(err);
                    }
                    if ch == channel {
                        return Ok(method);
                    }
                }
                _ => continue,
            }
        }
    }

    /// Writes one method frame.
    pub(crate) async fn send(&mut self, channel: u16, method: Method) -> Result<()> {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Sends a synchronous method on channel 1 and returns the reply.
    pub(crate) async fn rpc(&mut self, method: Method) -> Result<Method> {
        self.send(CHANNEL, method).await?;
        self.next_method(CHANNEL).await
    }

    /// Declares queue `name` as the options say; returns its message count.
    pub(crate) async fn declare_queue(
        &mut self,
        opts: &Options,
        name: &str,
        passive: bool,
    ) -> Result<u32> {
        let declare = QueueDeclare {
            queue: ShortStr::from(name),
            passive,
            durable: opts.durable,
            exclusive: opts.exclusive,
            ..Default::default()
        };
        match self.rpc(declare.into()).await? {
            Method::QueueDeclareOk(ok) => Ok(ok.message_count),
            other => Err(ClientError::Unexpected(other.name().to_string())),
        }
    }

    /// Declares the fanout exchange.
    pub(crate) async fn declare_fanout(&mut self, opts: &Options) -> Result<()> {
        let declare = ExchangeDeclare {
            exchange: ShortStr::from(opts.fanout_exchange()),
            kind: ShortStr::from_static("fanout"),
            durable: opts.durable,
            ..Default::default()
        };
        match self.rpc(declare.into()).await? {
            Method::ExchangeDeclareOk(_) => Ok(()),
            other => Err(ClientError::Unexpected(other.name().to_string())),
        }
    }

    /// Binds queue `name` to the fanout exchange.
    pub(crate) async fn bind_fanout(&mut self, opts: &Options, name: &str) -> Result<()> {
        let bind = QueueBind {
            queue: ShortStr::from(name),
            exchange: ShortStr::from(opts.fanout_exchange()),
            ..Default::default()
        };
        match self.rpc(bind.into()).await? {
            Method::QueueBindOk(_) => Ok(()),
            other => Err(ClientError::Unexpected(other.name().to_string())),
        }
    }

    /// Purges queue `name`; returns how many messages it dropped.
    pub(crate) async fn purge(&mut self, name: &str) -> Result<u32> {
        let purge = QueuePurge {
            queue: ShortStr::from(name),
            ..Default::default()
        };
        match self.rpc(purge.into()).await? {
            Method::QueuePurgeOk(ok) => Ok(ok.message_count),
            other => Err(ClientError::Unexpected(other.name().to_string())),
        }
    }

    /// The negotiated TLS protocol and cipher suite, over TLS.
    pub(crate) fn tls_session(&self) -> Option<String> {
        self.stream.tls_session()
    }

    /// Sends connection.close and waits (briefly) for close-ok, so the broker
    /// logs a clean close (over TLS, ends with close_notify). Errors are of
    /// no interest at this point.
    pub(crate) async fn close(mut self) {
        let close = ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("goodbye"),
            ..Default::default()
        };
        if self.send(0, close.into()).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            loop {
                match self.read_frame().await {
                    Ok(Frame::Method {
                        method: Method::ConnectionCloseOk(_),
                        ..
                    })
                    | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        self.stream.close_notify();
    }
}
