//! An in-process AMQP "broker" that completes the handshake and then reads
//! and discards everything: the fastest possible peer, for measuring the
//! load generator itself. It runs on plain threads so it does not share the
//! generator's tokio worker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use warren_codec::{
    ChannelOpenOk, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart, ConnectionTune, Frame,
    FrameDecoder, LongStr, Method, encode_method,
};

/// frame_max the sink proposes: RabbitMQ's default.
const FRAME_MAX: u32 = 131_072;

/// A running sink.
pub struct Sink {
    /// Where it listens (loopback, an ephemeral port).
    pub addr: SocketAddr,
    /// Bytes read after the handshakes, over all connections.
    pub bytes: Arc<AtomicU64>,
}

/// Starts a sink on `127.0.0.1:0`; each connection gets a thread. The
/// threads end when their peer closes; the listener lives for the process.
pub fn spawn() -> std::io::Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    std::thread::Builder::new()
        .name("sink-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counted = counted.clone();
                let _ = std::thread::Builder::new()
                    .name("sink".into())
                    .spawn(move || serve(stream, &counted));
            }
        })?;
    Ok(Sink { addr, bytes })
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn send(s: &mut TcpStream, channel: u16, method: Method) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &method);
    s.write_all(&out)
}

fn serve(mut s: TcpStream, bytes: &AtomicU64) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut header = [0u8; 8];
    s.read_exact(&mut header)?;
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        mechanisms: LongStr::from("PLAIN"),
        locales: LongStr::from("en_US"),
        ..Default::default()
    };
    send(&mut s, 0, start.into())?;
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 1 << 20];
    // Answer the handshake until channel 1 is open.
    loop {
        let Some(frame) = decoder.decode(&mut buf).map_err(invalid)? else {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let Frame::Method { channel, method } = frame else {
            continue;
        };
        match method {
            Method::ConnectionStartOk(_) => send(
                &mut s,
                0,
                ConnectionTune {
                    channel_max: 2047,
                    frame_max: FRAME_MAX,
                    heartbeat: 0,
                }
                .into(),
            )?,
            Method::ConnectionOpen(_) => send(&mut s, 0, ConnectionOpenOk::default().into())?,
            Method::ChannelOpen(_) => {
                send(&mut s, channel, ChannelOpenOk::default().into())?;
                break;
            }
            Method::ConnectionClose(_) => return send(&mut s, 0, ConnectionCloseOk.into()),
            _ => {}
        }
    }
    // Then discard: count the bytes, parse nothing.
    bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
