//! Per-queue index files: which messages a durable queue holds, in order.
//!
//! A queue's index lives in its own directory, split into files of
//! [`SPAN`] consecutive sequence numbers (`<segno>.idx`, segno = seq /
//! SPAN). Each file is a header and then fixed-size, checksummed records:
//! enqueue (seq, message id, body size, priority, expiry), delivered (seq,
//! delivery count) and dequeue (seq). A queue consumed in order appends
//! enqueues to its newest file and dequeues to its oldest, and a file whose
//! entries are all dequeued is deleted: a drain reads and writes
//! sequentially, and space comes back a file at a time.
//!
//! These files are written as batches are applied but synced only at a
//! checkpoint; the message log holds the same records and is replayed from
//! the last checkpoint at recovery (see `msgstore`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Sequence numbers per index file.
pub(crate) const SPAN: u64 = 16_384;

/// Bytes of an enqueue record (type, payload, checksum): a file holds at
/// most its length over this many entries.
pub(crate) const ENQ_RECORD: u64 = 1 + 33 + 4;

const MAGIC: &[u8; 8] = b"WRNIDX\0\x01";

pub(crate) const ENQ: u8 = 1;
pub(crate) const DELIV: u8 = 2;
pub(crate) const DEQ: u8 = 3;

/// What a queue holds at one sequence number, as recovery returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedMessage {
    /// Position in the queue.
    pub seq: u64,
    /// Message store id.
    pub msg: u64,
    /// Body size in bytes.
    pub bytes: u32,
    /// Priority property (0 when none).
    pub priority: u8,
    /// Wall-clock expiry in milliseconds since the Unix epoch; 0 for none.
    pub expires_ms: u64,
    /// Deliveries so far (0: never delivered).
    pub delivery_count: u32,
}

/// One index record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdxRecord {
    Enq(IndexedMessage),
    Deliv { seq: u64, count: u32 },
    Deq { seq: u64 },
}

impl IdxRecord {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            IdxRecord::Enq(m) => m.seq,
            IdxRecord::Deliv { seq, .. } | IdxRecord::Deq { seq } => *seq,
        }
    }

    /// Appends the record with its checksum.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            IdxRecord::Enq(m) => {
                out.push(ENQ);
                out.extend_from_slice(&m.seq.to_le_bytes());
                out.extend_from_slice(&m.msg.to_le_bytes());
                out.extend_from_slice(&m.bytes.to_le_bytes());
                out.push(m.priority);
                out.extend_from_slice(&m.expires_ms.to_le_bytes());
                out.extend_from_slice(&m.delivery_count.to_le_bytes());
            }
            IdxRecord::Deliv { seq, count } => {
                out.push(DELIV);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            IdxRecord::Deq { seq } => {
                out.push(DEQ);
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Payload length after the type byte, by type.
    fn payload_len(kind: u8) -> Option<usize> {
        match kind {
            ENQ => Some(8 + 8 + 4 + 1 + 8 + 4),
            DELIV => Some(8 + 4),
            DEQ => Some(8),
            _ => None,
        }
    }

    /// Decodes one record at the front of `b`: the record and its length,
    /// or `None` if it is torn, corrupt or unknown.
    pub(crate) fn decode(b: &[u8]) -> Option<(IdxRecord, usize)> {
        let kind = *b.first()?;
        let n = Self::payload_len(kind)?;
        let total = 1 + n + 4;
        let rec = b.get(..total)?;
        let crc = u32::from_le_bytes(rec[1 + n..].try_into().ok()?);
        if crc32fast::hash(&rec[..1 + n]) != crc {
            return None;
        }
        let p = &rec[1..1 + n];
        let u64_at = |i: usize| {
            p.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let u32_at = |i: usize| {
            p.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let r = match kind {
            ENQ => IdxRecord::Enq(IndexedMessage {
                seq: u64_at(0)?,
                msg: u64_at(8)?,
                bytes: u32_at(16)?,
                priority: *p.get(20)?,
                expires_ms: u64_at(21)?,
                delivery_count: u32_at(29)?,
            }),
            DELIV => IdxRecord::Deliv {
                seq: u64_at(0)?,
                count: u32_at(8)?,
            },
            _ => IdxRecord::Deq { seq: u64_at(0)? },
        };
        Some((r, total))
    }
}

/// Applies a record to a queue's entries (later records win).
pub(crate) fn apply(entries: &mut BTreeMap<u64, IndexedMessage>, r: &IdxRecord) {
    match r {
        IdxRecord::Enq(m) => {
            entries.insert(m.seq, *m);
        }
        IdxRecord::Deliv { seq, count } => {
            if let Some(e) = entries.get_mut(seq) {
                e.delivery_count = (*count).max(1);
            }
        }
        IdxRecord::Deq { seq } => {
            entries.remove(seq);
        }
    }
}

/// A queue's directory.
pub(crate) fn queue_dir(root: &Path, queue: u64) -> PathBuf {
    root.join(format!("{queue:016x}"))
}

/// An index file's path.
pub(crate) fn file_path(root: &Path, queue: u64, segno: u64) -> PathBuf {
    queue_dir(root, queue).join(format!("{segno:010}.idx"))
}

/// Creates an index file with its header.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    f.write_all(MAGIC)?;
    Ok(f)
}

/// The header's length: where records start.
pub(crate) const HEADER: u64 = MAGIC.len() as u64;

/// Reads an index file's records. A torn or corrupt tail ends the read;
/// returns the records and the length of the good prefix (to truncate
/// to), or `None` if the header itself is not ours.
pub(crate) fn read(path: &Path) -> std::io::Result<Option<(Vec<IdxRecord>, u64)>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let mut at = MAGIC.len();
    let mut out = Vec::new();
    while let Some((r, n)) = IdxRecord::decode(&data[at..]) {
        out.push(r);
        at += n;
    }
    Ok(Some((out, at as u64)))
}

/// Writes `entries` (all in one file's span) as a fresh file, replacing
/// any old one atomically.
pub(crate) fn rewrite<'a>(
    path: &Path,
    entries: impl Iterator<Item = &'a IndexedMessage>,
) -> std::io::Result<u64> {
    let tmp = path.with_extension("tmp");
    let mut buf = MAGIC.to_vec();
    for e in entries {
        IdxRecord::Enq(*e).encode(&mut buf);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_one_is_not_read() {
        let m = IndexedMessage {
            seq: 70_000,
            msg: 12,
            bytes: 1024,
            priority: 3,
            expires_ms: 1_700_000_000_000,
            delivery_count: 2,
        };
        let recs = [
            IdxRecord::Enq(m),
            IdxRecord::Deliv {
                seq: 70_000,
                count: 3,
            },
            IdxRecord::Deq { seq: 70_000 },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            r.encode(&mut buf);
        }
        let mut at = 0;
        for r in &recs {
            let (got, n) = IdxRecord::decode(&buf[at..]).expect("decodes");
            assert_eq!(&got, r);
            at += n;
        }
        assert_eq!(at, buf.len());
        // Cut short, or one bit flipped: not a record.
        assert!(IdxRecord::decode(&buf[..10]).is_none());
        let mut bad = buf.clone();
        bad[5] ^= 1;
        assert!(IdxRecord::decode(&bad).is_none());
    }
}
