//! The message store: persistent message bodies in append-only segment
//! files, per-queue indexes beside them, and space that comes back while
//! the broker runs.
//!
//! # Layout (`<data dir>/messages`)
//! - `NNNNNNNNNN.seg`: the log, in segments of about [`SEGMENT_BYTES`].
//!   Every record is `[len u32][crc32 u32][type u8][payload]` (the CRC
//!   covers type and payload): a message (id and its encoded value), and
//!   the queue index records (enqueue, delivered, dequeue, purge). One
//!   writer appends; a batch's records are one `write`, and one
//!   `fdatasync` covers every batch before it ([`MessageStore::flush`]).
//! - `queues/<queue id>/<segno>.idx`: each durable queue's index
//!   (`qindex`), written with each batch but synced only at checkpoints.
//! - `checkpoint`: the log position up to which the index files are synced.
//!
//! A message's record is live while some queue's index holds it: the
//! store keeps, per segment, how many bytes are live. A segment wholly
//! before the checkpoint with nothing live is deleted; when the files
//! hold more than twice the live bytes plus two segments, the emptiest
//! segment under half live is compacted (its live records copied to the
//! head, synced, then the segment deleted). So under a backlog that never
//! empties the files stay within twice the live bytes plus a few segments
//! (the head, those since the checkpoint, the slack).
//!
//! # Recovery
//! Every segment is scanned (a torn or corrupt record ends its segment,
//! which is cut there); the index files are read (torn tails cut) and the
//! index records logged since the checkpoint are replayed over them. An
//! entry whose message record is missing (a batch that never completed)
//! is dropped. The index files the replay touched are rewritten and a new
//! checkpoint taken before the store is used.
//!
//! # Failure
//! A failed write (a full disk) is undone: the log and index files are
//! cut back to their lengths before the batch and nothing in memory
//! changes, so the same batch can be applied again later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use warren_codec::{BasicProperties, ShortStr};

use crate::StoreError;
use crate::locmap::{Loc, LocMap};
use crate::qindex::{self, IdxRecord, IndexedMessage};
use crate::records::{self, StoredMessage};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// Sizes that shape the files; [`Tuning::default`] is what the broker
/// uses, tests make them small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// A checkpoint is taken after this much log.
    pub checkpoint_bytes: u64,
    /// Tests only: compaction stops with an error right after its copies
    /// are written and synced, before the moved messages point at them
    /// and the old segment is deleted (a crash in the middle of it).
    #[doc(hidden)]
    pub crash_after_compaction_copy: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            segment_bytes: SEGMENT_BYTES,
            checkpoint_bytes: SEGMENT_BYTES,
            crash_after_compaction_copy: false,
        }
    }
}
/// Reads of adjacent records are merged up to this size.
const READ_RUN: u64 = 1 << 20;

const SEG_MAGIC: &[u8; 8] = b"WRNLOG\0\x01";
const SEG_HEADER: u64 = SEG_MAGIC.len() as u64;
const REC_HEADER: usize = 9;

const MSG: u8 = 1;
const ENQ: u8 = 2;
const DELIV: u8 = 3;
const DEQ: u8 = 4;
const PURGE: u8 = 5;

/// One change to the message store.
#[derive(Debug, Clone, Copy)]
pub enum MessageOp<'a> {
    /// Store message `id` (once, however many queues hold it).
    Put {
        /// Store id.
        id: u64,
        /// Exchange published to.
        exchange: &'a ShortStr,
        /// Routing key.
        routing_key: &'a ShortStr,
        /// Properties.
        properties: &'a BasicProperties,
        /// Body.
        body: &'a [u8],
    },
    /// No queue holds message `id` any more.
    Forget(u64),
    /// `queue` holds `entry.msg` at `entry.seq`.
    Enqueue {
        /// Queue store id.
        queue: u64,
        /// The entry.
        entry: IndexedMessage,
    },
    /// The entry at `seq` was delivered, `count` times so far.
    Delivered {
        /// Queue store id.
        queue: u64,
        /// Position.
        seq: u64,
        /// Deliveries so far.
        count: u32,
    },
    /// `queue` no longer holds the entry at `seq`.
    Dequeue {
        /// Queue store id.
        queue: u64,
        /// Position.
        seq: u64,
    },
}

/// What the store held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Each queue's entries, in sequence order.
    pub queues: BTreeMap<u64, Vec<IndexedMessage>>,
    /// The largest message id seen (0 when none).
    pub max_message: u64,
    /// Entries dropped because their message record was missing.
    pub dropped: usize,
    /// Bytes cut from torn or corrupt tails.
    pub cut: u64,
}

/// Sizes, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Bytes of live message records in them.
    pub live_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes in index files.
    pub index_bytes: u64,
    /// Messages stored.
    pub messages: usize,
}

#[derive(Debug)]
struct Seg {
    file: Arc<File>,
    size: u64,
    live: u64,
}

#[derive(Debug, Default)]
struct Shared {
    locs: LocMap,
    segs: BTreeMap<u32, Seg>,
}

#[derive(Debug, Default)]
struct IdxFile {
    live: u32,
    size: u64,
    file: Option<File>,
}

#[derive(Debug, Default)]
struct QueueIdx {
    files: BTreeMap<u64, IdxFile>,
}

#[derive(Debug)]
struct Writer {
    head: u32,
    /// Segments written since the last flush (the head among them).
    unsynced: BTreeSet<u32>,
    /// The messages directory gained or lost files since its last sync.
    dir_dirty: bool,
    /// Where the messages of each segment not yet hinted are, as hint
    /// file entries (the head's among them); written out for sealed
    /// segments at the next checkpoint, once they are synced.
    hints: BTreeMap<u32, Vec<u8>>,
    /// A sync failed: the next write starts a new segment, so that
    /// nothing confirmed later sits behind pages the kernel may have
    /// dropped.
    roll_next: bool,
    checkpoint: (u32, u64),
    since_checkpoint: u64,
    queues: HashMap<u64, QueueIdx>,
    /// Index files written since the last checkpoint.
    idx_dirty: HashSet<(u64, u64)>,
    /// Queue directories that gained or lost files since the checkpoint.
    qdirs_dirty: HashSet<u64>,
    buf: BytesMut,
}

/// The message store (see the module docs).
#[derive(Debug)]
pub struct MessageStore {
    dir: PathBuf,
    tuning: Tuning,
    qdir: PathBuf,
    writer: Mutex<Writer>,
    shared: RwLock<Shared>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Io(format!("{what}: {e}"))
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Appends a record's header and type; the caller appends the payload,
/// then [`seal`] fills in length and CRC.
fn begin(b: &mut BytesMut, kind: u8) -> usize {
    let start = b.len();
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&[kind]);
    start
}

fn seal(b: &mut BytesMut, start: usize) -> u32 {
    let len = (b.len() - start - REC_HEADER) as u32;
    let crc = crc32fast::hash(&b[start + 8..]);
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
    b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (b.len() - start) as u32
}

/// A record read from a segment.
struct Rec<'a> {
    kind: u8,
    payload: &'a [u8],
    len: usize,
}

/// The record at the front of `b`, if whole and intact.
fn parse(b: &[u8]) -> Option<Rec<'_>> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let body = b.get(8..REC_HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some(Rec {
        kind: body[0],
        payload: &body[1..],
        len: REC_HEADER + len,
    })
}

fn u64_at(p: &[u8], i: usize) -> Option<u64> {
    p.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn u32_at(p: &[u8], i: usize) -> Option<u32> {
    p.get(i..i + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

/// An index record logged for `queue`, decoded from a log payload.
fn index_record(kind: u8, p: &[u8]) -> Option<(u64, IdxRecord)> {
    let queue = u64_at(p, 0)?;
    let r = match kind {
        ENQ => IdxRecord::Enq(IndexedMessage {
            seq: u64_at(p, 8)?,
            msg: u64_at(p, 16)?,
            bytes: u32_at(p, 24)?,
            priority: *p.get(28)?,
            expires_ms: u64_at(p, 29)?,
            delivery_count: u32_at(p, 37)?,
        }),
        DELIV => IdxRecord::Deliv {
            seq: u64_at(p, 8)?,
            count: u32_at(p, 16)?,
        },
        DEQ => IdxRecord::Deq { seq: u64_at(p, 8)? },
        _ => return None,
    };
    Some((queue, r))
}

fn log_index(b: &mut BytesMut, queue: u64, r: &IdxRecord) {
    let kind = match r {
        IdxRecord::Enq(_) => ENQ,
        IdxRecord::Deliv { .. } => DELIV,
        IdxRecord::Deq { .. } => DEQ,
    };
    let start = begin(b, kind);
    b.extend_from_slice(&queue.to_le_bytes());
    match r {
        IdxRecord::Enq(m) => {
            b.extend_from_slice(&m.seq.to_le_bytes());
            b.extend_from_slice(&m.msg.to_le_bytes());
            b.extend_from_slice(&m.bytes.to_le_bytes());
            b.extend_from_slice(&[m.priority]);
            b.extend_from_slice(&m.expires_ms.to_le_bytes());
            b.extend_from_slice(&m.delivery_count.to_le_bytes());
        }
        IdxRecord::Deliv { seq, count } => {
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
        }
        IdxRecord::Deq { seq } => b.extend_from_slice(&seq.to_le_bytes()),
    }
    seal(b, start);
}

/// Reads a whole segment file.
fn read_all(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(format!("reading {}", path.display())))?;
    Ok(data)
}

const HINT_MAGIC: &[u8; 8] = b"WRNHNT\0\x01";

/// A hint file entry: a message id, its record's offset and length.
type Hint = (u64, u32, u32);

fn hint_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.hint"))
}

fn push_hint(b: &mut Vec<u8>, id: u64, off: u32, len: u32) {
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

/// Writes segment `n`'s hint file: where its message records are, for a
/// segment of `size` bytes. Best effort: without one, recovery reads the
/// segment.
fn write_hints(dir: &Path, n: u32, size: u64, entries: &[u8]) {
    let mut b = Vec::with_capacity(entries.len() + 20);
    b.extend_from_slice(HINT_MAGIC);
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(entries);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{n:010}.hint.tmp"));
    let written = std::fs::write(&tmp, &b).and_then(|()| std::fs::rename(&tmp, hint_path(dir, n)));
    if let Err(e) = written {
        tracing::debug!(segment = n, error = %e, "no hint file written");
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Segment `n`'s hint file: the segment size it describes and its
/// (id, offset, length) entries; `None` if missing or damaged.
fn read_hints(dir: &Path, n: u32) -> Option<(u64, Vec<Hint>)> {
    let b = std::fs::read(hint_path(dir, n)).ok()?;
    let body = b.get(..b.len().checked_sub(4)?)?;
    let crc = u32_at(&b, body.len())?;
    if crc32fast::hash(body) != crc || body.get(..8)? != HINT_MAGIC {
        return None;
    }
    let size = u64_at(body, 8)?;
    let entries = body.get(16..)?;
    if entries.len() % 16 != 0 {
        return None;
    }
    let out = entries
        .chunks_exact(16)
        .filter_map(|c| Some((u64_at(c, 0)?, u32_at(c, 8)?, u32_at(c, 12)?)))
        .collect();
    Some((size, out))
}

/// Removes hint files whose segment is gone (and leftovers of writes).
fn remove_stale_hints(dir: &Path, segs: &BTreeMap<u32, Seg>) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for e in list.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = if name.ends_with(".hint.tmp") {
            true
        } else if let Some(n) = name.strip_suffix(".hint") {
            n.parse::<u32>().map_or(true, |n| !segs.contains_key(&n))
        } else {
            false
        };
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

const CHECKPOINT: &str = "checkpoint";

fn read_checkpoint(dir: &Path) -> Option<(u32, u64)> {
    let b = std::fs::read(dir.join(CHECKPOINT)).ok()?;
    let seg = u32_at(&b, 0)?;
    let off = u64_at(&b, 4)?;
    let crc = u32_at(&b, 12)?;
    (crc32fast::hash(b.get(..12)?) == crc).then_some((seg, off))
}

fn write_checkpoint(dir: &Path, at: (u32, u64)) -> Result<(), StoreError> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&at.0.to_le_bytes());
    b.extend_from_slice(&at.1.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    let write = || -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        f.write_all_at(&b, 0)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(CHECKPOINT))
    };
    write().map_err(io("writing the checkpoint"))?;
    sync_dir(dir)
}

fn create_segment(dir: &Path, n: u32) -> Result<File, StoreError> {
    let path = seg_path(dir, n);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    f.write_all_at(SEG_MAGIC, 0)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(f)
}

impl MessageStore {
    /// Opens (or creates) the store under `dir` and reads back what it
    /// holds.
    pub fn open(dir: &Path) -> Result<(MessageStore, Recovered), StoreError> {
        Self::open_tuned(dir, Tuning::default())
    }

    /// [`MessageStore::open`] with other sizes.
    pub fn open_tuned(dir: &Path, tuning: Tuning) -> Result<(MessageStore, Recovered), StoreError> {
        let qdir = dir.join("queues");
        std::fs::create_dir_all(&qdir).map_err(io(format!("creating {}", qdir.display())))?;
        let mut rec = Recovered::default();
        let checkpoint = read_checkpoint(dir);

        // The log: message locations, and the index records to replay.
        let mut numbers: Vec<u32> = std::fs::read_dir(dir)
            .map_err(io(format!("listing {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut shared = Shared::default();
        let mut replay: Vec<(u64, Option<IdxRecord>)> = Vec::new();
        let mut hinted = 0usize;
        let mut to_hint: Vec<(u32, Vec<u8>)> = Vec::new();
        for &n in &numbers {
            let path = seg_path(dir, n);
            // A segment wholly before the checkpoint holds nothing to
            // replay: its hint file (written once it was synced) says
            // where its messages are without reading it.
            if checkpoint.is_some_and(|c| n < c.0)
                && let Some((size, hints)) = read_hints(dir, n)
                && std::fs::metadata(&path).is_ok_and(|m| m.len() == size)
            {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("opening {}", path.display())))?;
                for (id, off, len) in hints {
                    shared.locs.insert(id, Loc { seg: n, off, len });
                }
                shared.segs.insert(
                    n,
                    Seg {
                        file: Arc::new(file),
                        size,
                        live: 0,
                    },
                );
                hinted += 1;
                continue;
            }
            let mut hints = Vec::new();
            let data = read_all(&path)?;
            if data.len() < SEG_HEADER as usize || &data[..SEG_HEADER as usize] != SEG_MAGIC {
                return Err(StoreError::Corrupt {
                    what: format!("{} is not a message log segment", path.display()),
                });
            }
            let mut at = SEG_HEADER as usize;
            while let Some(r) = parse(&data[at..]) {
                let pos = (n, at as u64);
                match r.kind {
                    MSG => {
                        if let Some(id) = u64_at(r.payload, 0) {
                            shared.locs.insert(
                                id,
                                Loc {
                                    seg: n,
                                    off: at as u32,
                                    len: r.len as u32,
                                },
                            );
                            push_hint(&mut hints, id, at as u32, r.len as u32);
                        }
                    }
                    PURGE if checkpoint.is_none_or(|c| pos >= c) => {
                        if let Some(q) = u64_at(r.payload, 0) {
                            replay.push((q, None));
                        }
                    }
                    kind if checkpoint.is_none_or(|c| pos >= c) => {
                        if let Some((q, ir)) = index_record(kind, r.payload) {
                            replay.push((q, Some(ir)));
                        }
                    }
                    _ => {}
                }
                at += r.len;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            if at < data.len() {
                let cut = (data.len() - at) as u64;
                tracing::warn!(segment = %path.display(), bytes = cut, "cutting a torn or corrupt tail off the message log");
                rec.cut += cut;
                file.set_len(at as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(io(format!("cutting {}", path.display())))?;
            }
            file.sync_data()
                .map_err(io(format!("syncing {}", path.display())))?;
            to_hint.push((n, hints));
            shared.segs.insert(
                n,
                Seg {
                    file: Arc::new(file),
                    size: at as u64,
                    live: 0,
                },
            );
        }
        // Hint files for the segments read whole (synced just above), and
        // none for segments that are gone.
        for (n, hints) in &to_hint {
            if let Some(s) = shared.segs.get(n) {
                write_hints(dir, *n, s.size, hints);
            }
        }
        remove_stale_hints(dir, &shared.segs);
        if hinted > 0 {
            tracing::debug!(segments = hinted, "message locations read from hint files");
        }

        // The index files, then the replay over them.
        // Each queue's entries in a vector sorted by seq: removals leave a
        // tombstone (message id 0; ids start at 1) until the end, so a
        // backlog of millions is read without a map node per entry.
        let mut entries: BTreeMap<u64, Vec<IndexedMessage>> = BTreeMap::new();
        let mut sizes: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for d in std::fs::read_dir(&qdir)
            .map_err(io(format!("listing {}", qdir.display())))?
            .filter_map(|e| e.ok())
        {
            let Some(queue) = d
                .file_name()
                .to_str()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            else {
                continue;
            };
            let map = entries.entry(queue).or_default();
            let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(d.path())
                .map_err(io(format!("listing {}", d.path().display())))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let segno = p
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".idx")?
                        .parse()
                        .ok()?;
                    Some((segno, p))
                })
                .collect();
            files.sort();
            // Room for every enqueue the files can hold, at once.
            let bytes: u64 = files
                .iter()
                .filter_map(|(_, p)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            map.reserve((bytes / qindex::ENQ_RECORD) as usize);
            for (segno, path) in files {
                let Some((records, good)) =
                    qindex::read(&path).map_err(io(format!("reading {}", path.display())))?
                else {
                    return Err(StoreError::Corrupt {
                        what: format!("{} is not a queue index file", path.display()),
                    });
                };
                let len = std::fs::metadata(&path)
                    .map_err(io(format!("reading {}", path.display())))?
                    .len();
                if good < len {
                    tracing::warn!(index = %path.display(), bytes = len - good, "cutting a torn tail off a queue index file");
                    rec.cut += len - good;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(good))
                        .map_err(io(format!("cutting {}", path.display())))?;
                }
                for r in &records {
                    apply_sorted(map, r);
                }
                sizes.insert((queue, segno), good);
            }
        }
        // What the replay changes is rewritten before the store is used.
        let mut touched: BTreeSet<(u64, u64)> = BTreeSet::new();
        let mut purged: BTreeSet<u64> = BTreeSet::new();
        for (queue, r) in replay {
            match r {
                None => {
                    entries.remove(&queue);
                    purged.insert(queue);
                    touched.retain(|(q, _)| *q != queue);
                }
                Some(r) => {
                    touched.insert((queue, r.seq() / qindex::SPAN));
                    apply_sorted(entries.entry(queue).or_default(), &r);
                }
            }
        }
        // Entries whose message never made it to the log go.
        for (queue, map) in entries.iter_mut() {
            for e in map.iter_mut() {
                if e.msg != 0 && shared.locs.get(e.msg).is_none() {
                    e.msg = 0;
                    touched.insert((*queue, e.seq / qindex::SPAN));
                    rec.dropped += 1;
                }
            }
            map.retain(|e| e.msg != 0);
            map.shrink_to_fit();
        }
        if rec.dropped > 0 {
            tracing::warn!(
                entries = rec.dropped,
                "queue entries whose message record is missing were dropped (their batches never completed)"
            );
        }

        // Live bytes: every message some queue holds; the rest is dead.
        let mut held: Vec<u64> = entries.values().flatten().map(|e| e.msg).collect();
        held.sort_unstable();
        held.dedup();
        let dead: Vec<u64> = shared
            .locs
            .iter()
            .filter(|(id, _)| held.binary_search(id).is_err())
            .map(|(id, _)| id)
            .collect();
        drop(held);
        rec.max_message = shared.locs.max_id();
        for id in dead {
            shared.locs.remove(id);
        }
        let live: Vec<Loc> = shared.locs.iter().map(|(_, l)| l).collect();
        for l in live {
            if let Some(s) = shared.segs.get_mut(&l.seg) {
                s.live += u64::from(l.len);
            }
        }

        // Rewrite what the replay touched; drop purged and empty queues.
        let mut queues: HashMap<u64, QueueIdx> = HashMap::new();
        for q in &purged {
            remove_queue_dir(&qdir, *q)?;
        }
        for (&(queue, segno), &size) in &sizes {
            if !touched.contains(&(queue, segno)) && !purged.contains(&queue) {
                let live = entries.get(&queue).map_or(0, |m| span(m, segno).len()) as u32;
                queues.entry(queue).or_default().files.insert(
                    segno,
                    IdxFile {
                        live,
                        size,
                        file: None,
                    },
                );
            }
        }
        for &(queue, segno) in &touched {
            let path = qindex::file_path(&qdir, queue, segno);
            let list = entries.get(&queue).map(|m| span(m, segno));
            match list {
                Some(list) if !list.is_empty() => {
                    std::fs::create_dir_all(qindex::queue_dir(&qdir, queue))
                        .map_err(io("creating a queue index directory"))?;
                    let size = qindex::rewrite(&path, list.iter())
                        .map_err(io(format!("rewriting {}", path.display())))?;
                    queues.entry(queue).or_default().files.insert(
                        segno,
                        IdxFile {
                            live: list.len() as u32,
                            size,
                            file: None,
                        },
                    );
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        for q in entries.keys() {
            let d = qindex::queue_dir(&qdir, *q);
            if d.exists() {
                sync_dir(&d)?;
            }
        }
        sync_dir(&qdir)?;

        // A fresh head segment, and a checkpoint at its start: everything
        // before is in the index files now.
        let head = numbers.last().map_or(1, |n| n + 1);
        let file = create_segment(dir, head)?;
        shared.segs.insert(
            head,
            Seg {
                file: Arc::new(file),
                size: SEG_HEADER,
                live: 0,
            },
        );
        if let Some(s) = shared.segs.get(&head) {
            s.file
                .sync_data()
                .map_err(io("syncing the new head segment"))?;
        }
        sync_dir(dir)?;
        write_checkpoint(dir, (head, SEG_HEADER))?;

        rec.queues = entries.into_iter().filter(|(_, m)| !m.is_empty()).collect();
        let store = MessageStore {
            dir: dir.to_path_buf(),
            tuning,
            qdir,
            writer: Mutex::new(Writer {
                head,
                unsynced: BTreeSet::new(),
                dir_dirty: false,
                roll_next: false,
                hints: BTreeMap::new(),
                checkpoint: (head, SEG_HEADER),
                since_checkpoint: 0,
                queues,
                idx_dirty: HashSet::new(),
                qdirs_dirty: HashSet::new(),
                buf: BytesMut::with_capacity(1 << 20),
            }),
            shared: RwLock::new(shared),
        };
        Ok((store, rec))
    }

    /// Segment `n`'s file and its length: where the next append goes.
    fn end_of(&self, n: u32) -> Result<(Arc<File>, u64), StoreError> {
        let sh = self.read_shared();
        let s = sh
            .segs
            .get(&n)
            .ok_or_else(|| StoreError::Io(format!("segment {n} is missing")))?;
        Ok((Arc::clone(&s.file), s.size))
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_shared(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shared(&self) -> std::sync::RwLockWriteGuard<'_, Shared> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `ops` in order. Visible to reads at once, durable after
    /// the next [`MessageStore::flush`]. On failure nothing changed (the
    /// files are cut back) and the same ops can be applied again.
    pub fn apply(&self, ops: &[MessageOp<'_>]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut w = self.writer();
        let w = &mut *w;
        let (mut head_file, mut base) = self.end_of(w.head)?;
        if w.roll_next || base >= self.tuning.segment_bytes {
            self.roll(w)?;
            w.roll_next = false;
            (head_file, base) = self.end_of(w.head)?;
        }
        let head = w.head;
        // Encode the log records and the index records by file.
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut puts: Vec<(u64, u32, u32)> = Vec::new();
        let mut idx: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
        for op in ops {
            match *op {
                MessageOp::Put {
                    id,
                    exchange,
                    routing_key,
                    properties,
                    body,
                } => {
                    let start = begin(&mut buf, MSG);
                    buf.extend_from_slice(&id.to_le_bytes());
                    records::encode_message_into(&mut buf, exchange, routing_key, properties, body);
                    let len = seal(&mut buf, start);
                    puts.push((id, (base + start as u64) as u32, len));
                }
                MessageOp::Forget(_) => {}
                MessageOp::Enqueue { queue, entry } => {
                    let r = IdxRecord::Enq(entry);
                    log_index(&mut buf, queue, &r);
                    r.encode(idx.entry((queue, entry.seq / qindex::SPAN)).or_default());
                }
                MessageOp::Delivered { queue, seq, count } => {
                    let r = IdxRecord::Deliv { seq, count };
                    log_index(&mut buf, queue, &r);
                    r.encode(idx.entry((queue, seq / qindex::SPAN)).or_default());
                }
                MessageOp::Dequeue { queue, seq } => {
                    let r = IdxRecord::Deq { seq };
                    log_index(&mut buf, queue, &r);
                    r.encode(idx.entry((queue, seq / qindex::SPAN)).or_default());
                }
            }
        }
        let written = buf.len() as u64;
        if base + written > u64::from(u32::MAX) {
            w.buf = buf;
            return Err(StoreError::Io(
                "one batch does not fit in a log segment".into(),
            ));
        }
        // The log first: an index record never refers to a message that
        // is not in the log before it.
        let result = head_file
            .write_all_at(&buf, base)
            .map_err(io("appending to the message log"))
            .and_then(|()| self.write_index(w, &idx));
        w.buf = buf;
        if let Err(e) = result {
            // Undo: nothing in memory changed yet.
            let _ = head_file.set_len(base);
            return Err(e);
        }
        w.unsynced.insert(head);
        w.since_checkpoint += written;

        // Now the in-memory state.
        let mut sh = self.write_shared();
        if let Some(s) = sh.segs.get_mut(&head) {
            s.size = base + written;
        }
        let hints = w.hints.entry(head).or_default();
        for &(id, off, len) in &puts {
            push_hint(hints, id, off, len);
        }
        for (id, off, len) in puts {
            let old = sh.locs.insert(
                id,
                Loc {
                    seg: head,
                    off,
                    len,
                },
            );
            if let Some(s) = sh.segs.get_mut(&head) {
                s.live += u64::from(len);
            }
            if let Some(o) = old
                && let Some(s) = sh.segs.get_mut(&o.seg)
            {
                s.live = s.live.saturating_sub(u64::from(o.len));
            }
        }
        for op in ops {
            if let MessageOp::Forget(id) = *op
                && let Some(o) = sh.locs.remove(id)
                && let Some(s) = sh.segs.get_mut(&o.seg)
            {
                s.live = s.live.saturating_sub(u64::from(o.len));
            }
        }
        drop(sh);
        self.count_entries(w, ops);
        Ok(())
    }

    /// Appends each file's records; on failure cuts back those written.
    fn write_index(
        &self,
        w: &mut Writer,
        idx: &BTreeMap<(u64, u64), Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut done: Vec<((u64, u64), u64)> = Vec::new();
        let mut result = Ok(());
        for (&(queue, segno), bytes) in idx {
            match self.append_index(w, queue, segno, bytes) {
                Ok(before) => done.push(((queue, segno), before)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                for ((queue, segno), _) in done {
                    if let Some(f) = w
                        .queues
                        .get_mut(&queue)
                        .and_then(|q| q.files.get_mut(&segno))
                    {
                        f.size += idx.get(&(queue, segno)).map_or(0, |b| b.len() as u64);
                    }
                    w.idx_dirty.insert((queue, segno));
                }
                Ok(())
            }
            Err(e) => {
                for ((queue, segno), before) in done {
                    if let Some(f) = w
                        .queues
                        .get_mut(&queue)
                        .and_then(|q| q.files.get_mut(&segno))
                        .and_then(|f| f.file.as_ref())
                    {
                        let _ = f.set_len(before);
                    }
                }
                Err(e)
            }
        }
    }

    /// Appends to one index file (creating it); returns its size before.
    fn append_index(
        &self,
        w: &mut Writer,
        queue: u64,
        segno: u64,
        bytes: &[u8],
    ) -> Result<u64, StoreError> {
        let q = w.queues.entry(queue).or_default();
        let f = q.files.entry(segno).or_default();
        if f.file.is_none() {
            let path = qindex::file_path(&self.qdir, queue, segno);
            if f.size == 0 {
                std::fs::create_dir_all(qindex::queue_dir(&self.qdir, queue))
                    .map_err(io("creating a queue index directory"))?;
                f.file = Some(
                    qindex::create(&path).map_err(io(format!("creating {}", path.display())))?,
                );
                f.size = qindex::HEADER;
                w.qdirs_dirty.insert(queue);
            } else {
                f.file = Some(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(io(format!("opening {}", path.display())))?,
                );
            }
        }
        let before = f.size;
        if let Some(file) = &f.file
            && let Err(e) = file.write_all_at(bytes, before)
        {
            let _ = file.set_len(before);
            return Err(io("appending to a queue index")(e));
        }
        Ok(before)
    }

    /// Counts entries per index file after a successful apply, and deletes
    /// files whose entries are all gone.
    fn count_entries(&self, w: &mut Writer, ops: &[MessageOp<'_>]) {
        let mut emptied: Vec<(u64, u64)> = Vec::new();
        for op in ops {
            let (queue, seq, delta) = match *op {
                MessageOp::Enqueue { queue, entry } => (queue, entry.seq, 1i32),
                MessageOp::Dequeue { queue, seq } => (queue, seq, -1),
                _ => continue,
            };
            let segno = seq / qindex::SPAN;
            if let Some(f) = w
                .queues
                .get_mut(&queue)
                .and_then(|q| q.files.get_mut(&segno))
            {
                if delta > 0 {
                    f.live += 1;
                } else {
                    f.live = f.live.saturating_sub(1);
                    if f.live == 0 {
                        emptied.push((queue, segno));
                    }
                }
            }
        }
        for (queue, segno) in emptied {
            let Some(q) = w.queues.get_mut(&queue) else {
                continue;
            };
            let newest = q.files.keys().next_back().copied();
            // The newest file takes the queue's next enqueues: it stays.
            if q.files.get(&segno).is_some_and(|f| f.live == 0) && newest != Some(segno) {
                q.files.remove(&segno);
                w.idx_dirty.remove(&(queue, segno));
                let _ = std::fs::remove_file(qindex::file_path(&self.qdir, queue, segno));
                w.qdirs_dirty.insert(queue);
            }
            // An older empty file left behind when a newer one started.
            let stale: Vec<u64> = q
                .files
                .iter()
                .filter(|(n, f)| f.live == 0 && Some(**n) != newest)
                .map(|(n, _)| *n)
                .collect();
            for n in stale {
                q.files.remove(&n);
                w.idx_dirty.remove(&(queue, n));
                let _ = std::fs::remove_file(qindex::file_path(&self.qdir, queue, n));
            }
        }
    }

    /// Closes the head segment and starts the next.
    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        let next = w.head + 1;
        let file = create_segment(&self.dir, next)?;
        self.write_shared().segs.insert(
            next,
            Seg {
                file: Arc::new(file),
                size: SEG_HEADER,
                live: 0,
            },
        );
        w.unsynced.insert(w.head);
        w.head = next;
        w.unsynced.insert(next);
        w.dir_dirty = true;
        Ok(())
    }

    /// Makes everything applied before durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut w = self.writer();
        self.flush_locked(&mut w)
    }

    fn flush_locked(&self, w: &mut Writer) -> Result<(), StoreError> {
        let files: Vec<Arc<File>> = {
            let sh = self.read_shared();
            w.unsynced
                .iter()
                .filter_map(|n| sh.segs.get(n).map(|s| Arc::clone(&s.file)))
                .collect()
        };
        for f in files {
            if let Err(e) = f.sync_data() {
                w.roll_next = true;
                return Err(io("syncing the message log")(e));
            }
        }
        w.unsynced.clear();
        if w.dir_dirty {
            sync_dir(&self.dir)?;
            w.dir_dirty = false;
        }
        Ok(())
    }

    /// Removes every entry of `queue` and its index; returns their message
    /// ids in sequence order. Logged, so a crash cannot bring them back.
    pub fn purge_queue(&self, queue: u64) -> Result<Vec<u64>, StoreError> {
        let mut w = self.writer();
        let w = &mut *w;
        let mut map: BTreeMap<u64, IndexedMessage> = BTreeMap::new();
        if let Some(q) = w.queues.get(&queue) {
            for segno in q.files.keys() {
                let path = qindex::file_path(&self.qdir, queue, *segno);
                if let Some((records, _)) =
                    qindex::read(&path).map_err(io(format!("reading {}", path.display())))?
                {
                    for r in &records {
                        qindex::apply(&mut map, r);
                    }
                }
            }
        }
        // The purge record goes to the log (and is synced) before the
        // files go.
        let head = w.head;
        let (file, base) = self.end_of(head)?;
        let mut b = BytesMut::new();
        let start = begin(&mut b, PURGE);
        b.extend_from_slice(&queue.to_le_bytes());
        seal(&mut b, start);
        if let Err(e) = file.write_all_at(&b, base) {
            let _ = file.set_len(base);
            return Err(io("logging a purge")(e));
        }
        if let Some(s) = self.write_shared().segs.get_mut(&head) {
            s.size = base + b.len() as u64;
        }
        w.unsynced.insert(head);
        self.flush_locked(w)?;
        w.queues.remove(&queue);
        w.idx_dirty.retain(|(q, _)| *q != queue);
        w.qdirs_dirty.remove(&queue);
        remove_queue_dir(&self.qdir, queue)?;
        Ok(map.into_values().map(|e| e.msg).collect())
    }

    /// Reads message `id`: `Ok(None)` when it is not stored.
    pub fn load(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        let (loc, file) = {
            let sh = self.read_shared();
            let Some(loc) = sh.locs.get(id) else {
                return Ok(None);
            };
            let Some(s) = sh.segs.get(&loc.seg) else {
                return Ok(None);
            };
            (loc, Arc::clone(&s.file))
        };
        let mut data = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut data, u64::from(loc.off))
            .map_err(io(format!("reading message {id}")))?;
        decode_at(&Bytes::from(data), 0, id).map(Some)
    }

    /// Reads several messages, merging reads of records that lie next to
    /// each other in the log (a queue's backlog mostly does).
    pub fn load_many(&self, ids: &[u64]) -> Vec<Result<Option<StoredMessage>, StoreError>> {
        let mut found: Vec<(usize, Loc, Arc<File>)> = Vec::with_capacity(ids.len());
        let mut out: Vec<Result<Option<StoredMessage>, StoreError>> =
            (0..ids.len()).map(|_| Ok(None)).collect();
        {
            let sh = self.read_shared();
            for (i, id) in ids.iter().enumerate() {
                if let Some(loc) = sh.locs.get(*id)
                    && let Some(s) = sh.segs.get(&loc.seg)
                {
                    found.push((i, loc, Arc::clone(&s.file)));
                }
            }
        }
        found.sort_by_key(|(_, l, _)| (l.seg, l.off));
        let mut k = 0;
        while k < found.len() {
            let (_, first, file) = &found[k];
            let mut end = k + 1;
            let mut stop = u64::from(first.off) + u64::from(first.len);
            while end < found.len() {
                let l = found[end].1;
                if l.seg != first.seg
                    || u64::from(l.off) != stop
                    || stop + u64::from(l.len) - u64::from(first.off) > READ_RUN
                {
                    break;
                }
                stop += u64::from(l.len);
                end += 1;
            }
            let mut data = vec![0u8; (stop - u64::from(first.off)) as usize];
            match file.read_exact_at(&mut data, u64::from(first.off)) {
                Ok(()) => {
                    let data = Bytes::from(data);
                    for (i, l, _) in &found[k..end] {
                        let at = (l.off - first.off) as usize;
                        out[*i] = decode_at(&data, at, ids[*i]).map(Some);
                    }
                }
                Err(e) => {
                    for (i, _, _) in &found[k..end] {
                        out[*i] = Err(StoreError::Io(format!("reading message {}: {e}", ids[*i])));
                    }
                }
            }
            k = end;
        }
        out
    }

    /// Housekeeping between batches: a checkpoint when enough log was
    /// written, deletion of dead segments and one step of compaction.
    /// Returns whether it did anything.
    pub fn maintain(&self) -> Result<bool, StoreError> {
        let mut w = self.writer();
        let w = &mut *w;
        let mut did = false;
        if w.since_checkpoint >= self.tuning.checkpoint_bytes {
            self.checkpoint(w)?;
            did = true;
        }
        let cp = w.checkpoint.0;
        let head = w.head;
        // Whole segments before the checkpoint: dead ones go; and when
        // the files hold more than twice the live bytes plus two segments,
        // the emptiest one under half live is compacted. (Compacting every
        // segment under half live would copy, during an ordinary drain,
        // the half of each segment that its consumer is about to ack.)
        let (dead, candidate) = {
            let sh = self.read_shared();
            let total: u64 = sh.segs.values().map(|s| s.size).sum();
            let live: u64 = sh.segs.values().map(|s| s.live).sum();
            let crowded = total > 2 * live + 2 * self.tuning.segment_bytes;
            let mut dead = Vec::new();
            let mut candidate: Option<(u32, u64, u64)> = None;
            for (&n, s) in sh.segs.range(..cp) {
                if n == head {
                    continue;
                }
                if s.live == 0 {
                    dead.push(n);
                } else if crowded
                    && s.live * 2 < s.size
                    && candidate.is_none_or(|(_, live, size)| s.live * size < live * s.size)
                {
                    candidate = Some((n, s.live, s.size));
                }
            }
            (dead, candidate)
        };
        if !dead.is_empty() {
            let mut sh = self.write_shared();
            for n in &dead {
                sh.segs.remove(n);
            }
            drop(sh);
            for n in &dead {
                w.hints.remove(n);
                let _ = std::fs::remove_file(seg_path(&self.dir, *n));
                let _ = std::fs::remove_file(hint_path(&self.dir, *n));
            }
            w.dir_dirty = true;
            did = true;
        }
        if let Some((n, live, _)) = candidate
            && live <= self.tuning.segment_bytes
        {
            self.compact_segment(w, n)?;
            did = true;
        }
        Ok(did)
    }

    /// Copies segment `n`'s live records to the head, syncs them, points
    /// the messages at the copies and deletes the segment.
    fn compact_segment(&self, w: &mut Writer, n: u32) -> Result<(), StoreError> {
        let data = read_all(&seg_path(&self.dir, n))?;
        let mut copies: Vec<(u64, usize, usize)> = Vec::new();
        {
            let sh = self.read_shared();
            let mut at = SEG_HEADER as usize;
            while let Some(r) = parse(&data[at..]) {
                if r.kind == MSG
                    && let Some(id) = u64_at(r.payload, 0)
                    && sh
                        .locs
                        .get(id)
                        .is_some_and(|l| l.seg == n && l.off as usize == at)
                {
                    copies.push((id, at, r.len));
                }
                at += r.len;
            }
        }
        let (mut file, mut base) = self.end_of(w.head)?;
        if base >= self.tuning.segment_bytes {
            self.roll(w)?;
            (file, base) = self.end_of(w.head)?;
        }
        let head = w.head;
        let mut buf = Vec::with_capacity(copies.iter().map(|c| c.2).sum());
        let mut moved = Vec::with_capacity(copies.len());
        for (id, at, len) in &copies {
            moved.push((*id, (base + buf.len() as u64) as u32, *len as u32));
            buf.extend_from_slice(&data[*at..*at + *len]);
        }
        if let Err(e) = file.write_all_at(&buf, base) {
            let _ = file.set_len(base);
            return Err(io("copying live records")(e));
        }
        if let Err(e) = file.sync_data() {
            let _ = file.set_len(base);
            return Err(io("syncing copied records")(e));
        }
        if self.tuning.crash_after_compaction_copy {
            return Err(StoreError::Io(
                "crash injected after a compaction copy".into(),
            ));
        }
        let mut sh = self.write_shared();
        if let Some(s) = sh.segs.get_mut(&head) {
            s.size = base + buf.len() as u64;
        }
        let hints = w.hints.entry(head).or_default();
        for (id, off, len) in moved {
            push_hint(hints, id, off, len);
            sh.locs.insert(
                id,
                Loc {
                    seg: head,
                    off,
                    len,
                },
            );
            if let Some(s) = sh.segs.get_mut(&head) {
                s.live += u64::from(len);
            }
        }
        sh.segs.remove(&n);
        drop(sh);
        w.since_checkpoint += buf.len() as u64;
        w.hints.remove(&n);
        let _ = std::fs::remove_file(seg_path(&self.dir, n));
        let _ = std::fs::remove_file(hint_path(&self.dir, n));
        w.dir_dirty = true;
        tracing::debug!(
            segment = n,
            copied = buf.len(),
            "compacted a message log segment"
        );
        Ok(())
    }

    /// Syncs the index files and records that the log before the head is
    /// no longer needed to rebuild them.
    fn checkpoint(&self, w: &mut Writer) -> Result<(), StoreError> {
        self.flush_locked(w)?;
        let dirty: Vec<(u64, u64)> = w.idx_dirty.drain().collect();
        for (queue, segno) in dirty {
            let Some(q) = w.queues.get_mut(&queue) else {
                continue;
            };
            let newest = q.files.keys().next_back().copied();
            let oldest = q.files.keys().next().copied();
            let Some(f) = q.files.get_mut(&segno) else {
                continue;
            };
            match &f.file {
                Some(file) => file.sync_data().map_err(io("syncing a queue index"))?,
                None => {
                    let path = qindex::file_path(&self.qdir, queue, segno);
                    File::open(&path)
                        .and_then(|f| f.sync_data())
                        .map_err(io(format!("syncing {}", path.display())))?;
                }
            }
            // Keep open only the files a queue in order writes to.
            if Some(segno) != newest && Some(segno) != oldest {
                f.file = None;
            }
        }
        for queue in std::mem::take(&mut w.qdirs_dirty) {
            let d = qindex::queue_dir(&self.qdir, queue);
            if d.exists() {
                sync_dir(&d)?;
            }
        }
        sync_dir(&self.qdir)?;
        let at = {
            let sh = self.read_shared();
            (w.head, sh.segs.get(&w.head).map_or(SEG_HEADER, |s| s.size))
        };
        write_checkpoint(&self.dir, at)?;
        w.checkpoint = at;
        w.since_checkpoint = 0;
        // Every segment before the head is synced now: its hint file may
        // be trusted from here on.
        let sealed: Vec<u32> = w.hints.range(..w.head).map(|(n, _)| *n).collect();
        for n in sealed {
            if let Some(h) = w.hints.remove(&n)
                && let Some(size) = self.read_shared().segs.get(&n).map(|s| s.size)
            {
                write_hints(&self.dir, n, size, &h);
            }
        }
        Ok(())
    }

    /// Whether the disk takes a write and a sync again.
    pub fn probe(&self) -> Result<(), StoreError> {
        let path = self.dir.join("probe");
        let r = (|| -> std::io::Result<()> {
            let f = File::create(&path)?;
            f.write_all_at(&[0u8; 4096], 0)?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        r.map_err(io("probing the disk"))
    }

    /// Sizes.
    pub fn stats(&self) -> StoreStats {
        let w = self.writer();
        let index_bytes = w
            .queues
            .values()
            .flat_map(|q| q.files.values())
            .map(|f| f.size)
            .sum();
        drop(w);
        let sh = self.read_shared();
        StoreStats {
            segment_bytes: sh.segs.values().map(|s| s.size).sum(),
            live_bytes: sh.segs.values().map(|s| s.live).sum(),
            segments: sh.segs.len(),
            index_bytes,
            messages: sh.locs.len(),
        }
    }
}

/// Applies an index record to a queue's entries sorted by seq, where a
/// removed entry is a tombstone (message id 0) until they are swept.
fn apply_sorted(v: &mut Vec<IndexedMessage>, r: &IdxRecord) {
    let find = |v: &Vec<IndexedMessage>, seq: u64| v.binary_search_by_key(&seq, |e| e.seq);
    match r {
        IdxRecord::Enq(m) => match v.last() {
            Some(last) if last.seq >= m.seq => match find(v, m.seq) {
                Ok(i) => v[i] = *m,
                Err(i) => v.insert(i, *m),
            },
            _ => v.push(*m),
        },
        IdxRecord::Deliv { seq, count } => {
            if let Ok(i) = find(v, *seq)
                && v[i].msg != 0
            {
                v[i].delivery_count = (*count).max(1);
            }
        }
        IdxRecord::Deq { seq } => {
            if let Ok(i) = find(v, *seq) {
                v[i].msg = 0;
            }
        }
    }
}

/// The entries (swept of tombstones) in index file `segno`'s span.
fn span(v: &[IndexedMessage], segno: u64) -> &[IndexedMessage] {
    let lo = v.partition_point(|e| e.seq < segno * qindex::SPAN);
    let hi = v.partition_point(|e| e.seq < (segno + 1) * qindex::SPAN);
    &v[lo..hi]
}

fn remove_queue_dir(qdir: &Path, queue: u64) -> Result<(), StoreError> {
    let d = qindex::queue_dir(qdir, queue);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => sync_dir(qdir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", d.display()))(e)),
    }
}

/// Decodes the message record at `at` in `data`, checking it is `id`'s.
fn decode_at(data: &Bytes, at: usize, id: u64) -> Result<StoredMessage, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        what: format!("message {id}: {why}"),
    };
    let rec = parse(&data[at..]).ok_or_else(|| corrupt("checksum mismatch or torn record"))?;
    if rec.kind != MSG || u64_at(rec.payload, 0) != Some(id) {
        return Err(corrupt("the record there is not this message"));
    }
    let start = at + REC_HEADER + 8;
    let value = data.slice(start..at + rec.len);
    records::decode_message(&value).map_err(|f| corrupt(&format!("{f:?}")))
}
