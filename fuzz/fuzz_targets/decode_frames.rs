//! Arbitrary bytes through `FrameDecoder`, as a socket would deliver them.
//!
//! The first input byte picks the frame limit (4096 or 131072, the two
//! sizes clients negotiate most); the rest is the read buffer. The decoder
//! must never panic; when it asks for more bytes the buffer's content must
//! be unchanged; and every frame it accepts must encode to bytes that
//! decode to the same frame and re-encode identically.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_codec::{Frame, FrameDecoder, decode_protocol_header};

fuzz_target!(|data: &[u8]| {
    // The protocol header is decoded on its own, before any frame.
    let _ = decode_protocol_header(data);

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(if pick & 1 == 0 { 4096 } else { 131_072 });
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.clone();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before.len(), "a frame consumed nothing");
                check_reencode(&frame);
            }
            Ok(None) => {
                assert_eq!(buf, before, "waiting for more bytes changed the buffer");
                return;
            }
            Err(_) => return,
        }
    }
});

/// Encodes `frame`, decodes the result, and checks the two agree.
fn check_reencode(frame: &Frame) {
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    let first = wire.clone();
    let limit = u32::try_from(wire.len()).expect("a decoded frame re-encodes below 4 GiB");
    let again = FrameDecoder::new(limit)
        .decode(&mut wire)
        .unwrap_or_else(|e| panic!("{frame:?} re-encoded to bytes that fail: {e}"))
        .expect("a re-encoded frame is whole");
    assert!(wire.is_empty(), "a re-encoded frame left bytes behind");

    let mut second = BytesMut::new();
    again.encode(&mut second);
    assert_eq!(first, second, "re-encoding is not stable");
    // Values must match too, except that a NaN inside a field table is
    // never equal to itself; the byte comparison above covers that case.
    if again != *frame {
        assert!(
            format!("{frame:?}").contains("NaN"),
            "{frame:?} != {again:?}"
        );
    }
}
