//! Where each stored message's record is: message id -> (segment, offset,
//! length), in chunks of consecutive ids.
//!
//! Message ids come from one counter, so the ids alive at any moment are
//! dense runs with holes where messages died. A chunk covers
//! [`CHUNK`] consecutive ids in a flat array (12 bytes an id, no hashing,
//! no per-entry allocation) and is freed when its last id dies, so one
//! old message still held by a queue pins one chunk, not the range of ids
//! after it. A 10M-message backlog takes some 120 MB here.

use std::collections::HashMap;

/// Ids per chunk.
const CHUNK: u64 = 1024;

/// A record's place in the message log. `seg == 0` means absent
/// (segments are numbered from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    /// Segment number.
    pub(crate) seg: u32,
    /// Offset of the record's header in the segment.
    pub(crate) off: u32,
    /// Length of the whole record (header included).
    pub(crate) len: u32,
}

impl Loc {
    fn is_some(&self) -> bool {
        self.seg != 0
    }
}

struct Chunk {
    locs: Box<[Loc; CHUNK as usize]>,
    live: u32,
}

/// Message id -> [`Loc`].
#[derive(Default)]
pub(crate) struct LocMap {
    chunks: HashMap<u64, Chunk>,
    len: usize,
}

impl std::fmt::Debug for LocMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocMap")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl LocMap {
    /// Where `id` is, if stored.
    pub(crate) fn get(&self, id: u64) -> Option<Loc> {
        let c = self.chunks.get(&(id / CHUNK))?;
        let l = c.locs[(id % CHUNK) as usize];
        l.is_some().then_some(l)
    }

    /// Records (or moves) `id`; returns where it was before.
    pub(crate) fn insert(&mut self, id: u64, loc: Loc) -> Option<Loc> {
        debug_assert!(loc.is_some());
        let c = self.chunks.entry(id / CHUNK).or_insert_with(|| Chunk {
            locs: Box::new([Loc::default(); CHUNK as usize]),
            live: 0,
        });
        let slot = &mut c.locs[(id % CHUNK) as usize];
        let old = *slot;
        *slot = loc;
        if old.is_some() {
            Some(old)
        } else {
            c.live += 1;
            self.len += 1;
            None
        }
    }

    /// Forgets `id`; returns where it was.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Loc> {
        let key = id / CHUNK;
        let c = self.chunks.get_mut(&key)?;
        let slot = &mut c.locs[(id % CHUNK) as usize];
        let old = *slot;
        if !old.is_some() {
            return None;
        }
        *slot = Loc::default();
        c.live -= 1;
        self.len -= 1;
        if c.live == 0 {
            self.chunks.remove(&key);
        }
        Some(old)
    }

    /// Ids stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The largest id stored (0 when none).
    pub(crate) fn max_id(&self) -> u64 {
        let Some(&top) = self.chunks.keys().max() else {
            return 0;
        };
        let c = &self.chunks[&top];
        let i = c.locs.iter().rposition(Loc::is_some).unwrap_or(0) as u64;
        top * CHUNK + i
    }

    /// Every (id, loc), in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.chunks.iter().flat_map(|(k, c)| {
            c.locs
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_some())
                .map(move |(i, l)| (k * CHUNK + i as u64, *l))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seg: u32) -> Loc {
        Loc {
            seg,
            off: 7,
            len: 9,
        }
    }

    #[test]
    fn chunks_come_and_go_with_their_ids() {
        let mut m = LocMap::default();
        assert_eq!(m.insert(5, at(1)), None);
        assert_eq!(m.insert(5000, at(2)), None);
        assert_eq!(m.insert(5, at(3)), Some(at(1)));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(5), Some(at(3)));
        assert_eq!(m.get(6), None);
        assert_eq!(m.max_id(), 5000);
        assert_eq!(m.remove(5000), Some(at(2)));
        assert_eq!(m.remove(5000), None);
        assert_eq!(m.chunks.len(), 1);
        assert_eq!(m.max_id(), 5);
        assert_eq!(m.remove(5), Some(at(3)));
        assert!(m.chunks.is_empty());
        assert_eq!(m.len(), 0);
        assert_eq!(m.max_id(), 0);
    }
}
