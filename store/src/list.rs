//! Content-defined lists of chunk references, stored as a tree of `Node` objects.
//!
//! A long list (a large file's chunks, a snapshot's pieces) is cut into nodes where an entry's
//! id says so, not at fixed counts, so an insertion or change disturbs only the nodes around it
//! and an incremental snapshot stores only those. Each entry carries the byte length beneath
//! it, so a position is found by descending the tree: O(log n).

use crate::encoding::{put_varint, Decoder};
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::object::{ObjectSink, ObjectSource};
use crate::pack::ChunkKind;

const NODE_VERSION: u8 = 1;
/// One entry in this many ends a node (on average).
const FANOUT: u16 = 128;
const MAX_NODE: usize = 1024;
/// Lists up to this long are stored inline in their owner rather than as nodes.
pub const INLINE_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: ChunkId,
    /// Bytes of content beneath this entry.
    pub len: u64,
    /// Owner-defined (pieces: the anchor of the piece's first path); 0 when unused.
    pub aux: u64,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        put_varint(out, self.len);
        put_varint(out, self.aux);
    }

    fn decode(d: &mut Decoder) -> Result<Self> {
        Ok(Entry {
            id: d.chunk_id()?,
            len: d.varint()?,
            aux: d.varint()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListRef {
    Inline(Vec<Entry>),
    /// `root` names a node at `level` (1 = its entries are the list's own entries).
    Tree {
        level: u8,
        root: Entry,
    },
}

impl ListRef {
    pub fn total_len(&self) -> u64 {
        match self {
            ListRef::Inline(v) => v.iter().map(|e| e.len).sum(),
            ListRef::Tree { root, .. } => root.len,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ListRef::Inline(entries) => {
                out.push(0);
                put_varint(out, entries.len() as u64);
                for e in entries {
                    e.encode(out);
                }
            }
            ListRef::Tree { level, root } => {
                out.push(1);
                out.push(*level);
                root.encode(out);
            }
        }
    }

    pub fn decode(d: &mut Decoder) -> Result<Self> {
        match d.u8()? {
            0 => {
                let n = d.varint()? as usize;
                let mut v = Vec::with_capacity(n.min(INLINE_MAX));
                for _ in 0..n {
                    v.push(Entry::decode(d)?);
                }
                Ok(ListRef::Inline(v))
            }
            1 => Ok(ListRef::Tree {
                level: d.u8()?,
                root: Entry::decode(d)?,
            }),
            t => Err(Error::corrupt(format!("unknown list tag {t}"))),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(b, "list reference");
        let l = Self::decode(&mut d)?;
        d.finish()?;
        Ok(l)
    }

    /// Visit every entry in order, loading nodes as needed (memory: one node per level).
    pub fn for_each(
        &self,
        src: &dyn ObjectSource,
        f: &mut dyn FnMut(&Entry) -> Result<()>,
    ) -> Result<()> {
        match self {
            ListRef::Inline(entries) => entries.iter().try_for_each(&mut *f),
            ListRef::Tree { level, root } => visit(src, root, *level, f),
        }
    }
}

/// The entry covering byte `offset` of the list's content and where that entry starts.
fn find_in(entries: &[Entry], offset: u64) -> Option<(usize, u64)> {
    // Prefix sums, then binary search: the first entry ending after `offset`.
    let mut ends = Vec::with_capacity(entries.len());
    let mut sum: u64 = 0;
    for e in entries {
        // A damaged (or crafted) node's lengths can sum past u64: nothing lies beyond.
        sum = sum.checked_add(e.len)?;
        ends.push(sum);
    }
    let i = ends.partition_point(|&end| end <= offset);
    (i < entries.len()).then(|| (i, ends[i] - entries[i].len))
}

impl ListRef {
    /// The level-0 entry holding byte `offset` and the offset it starts at: O(log n) node
    /// loads, one per level.
    pub fn find(&self, src: &dyn ObjectSource, offset: u64) -> Result<Option<(Entry, u64)>> {
        match self {
            ListRef::Inline(entries) => {
                Ok(find_in(entries, offset).map(|(i, start)| (entries[i], start)))
            }
            ListRef::Tree { level, root } => {
                let (mut id, mut base) = (root.id, 0u64);
                for expect in (1..=*level).rev() {
                    let (node_level, entries) = decode_node(&src.object(&id)?)?;
                    if node_level != expect {
                        return Err(Error::corrupt("list node at the wrong level"));
                    }
                    let Some((i, start)) = find_in(&entries, offset - base) else {
                        return Ok(None);
                    };
                    if expect == 1 {
                        return Ok(Some((entries[i], base + start)));
                    }
                    id = entries[i].id;
                    base += start;
                }
                Ok(None)
            }
        }
    }
}

fn visit(
    src: &dyn ObjectSource,
    node: &Entry,
    level: u8,
    f: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    let (node_level, entries) = decode_node(&src.object(&node.id)?)?;
    if node_level != level {
        return Err(Error::corrupt(format!(
            "list node {} is at level {node_level}, expected {level}",
            node.id.short()
        )));
    }
    for e in &entries {
        if level == 1 {
            f(e)?;
        } else {
            visit(src, e, level - 1, f)?;
        }
    }
    Ok(())
}

fn encode_node(level: u8, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + entries.len() * 40);
    out.push(NODE_VERSION);
    out.push(level);
    put_varint(&mut out, entries.len() as u64);
    for e in entries {
        e.encode(&mut out);
    }
    out
}

fn decode_node(bytes: &[u8]) -> Result<(u8, Vec<Entry>)> {
    let mut d = Decoder::new(bytes, "list node");
    d.expect_version(NODE_VERSION)?;
    let level = d.u8()?;
    let n = d.varint()? as usize;
    let mut entries = Vec::with_capacity(n.min(MAX_NODE));
    for _ in 0..n {
        entries.push(Entry::decode(&mut d)?);
    }
    d.finish()?;
    Ok((level, entries))
}

fn ends_node(id: &ChunkId) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]).is_multiple_of(FANOUT)
}

/// Builds a list entry by entry, storing full nodes as it goes (memory: one node per level).
#[derive(Default)]
pub struct ListBuilder {
    /// Pending entries per level; level 0 holds the list's own entries.
    levels: Vec<Vec<Entry>>,
    stored_any: bool,
}

impl ListBuilder {
    pub fn push(&mut self, e: Entry, sink: &mut dyn ObjectSink) -> Result<()> {
        self.push_at(0, e, sink)
    }

    fn push_at(&mut self, level: usize, e: Entry, sink: &mut dyn ObjectSink) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(e);
        if ends_node(&e.id) || self.levels[level].len() >= MAX_NODE {
            self.store_level(level, sink)?;
        }
        Ok(())
    }

    fn store_level(&mut self, level: usize, sink: &mut dyn ObjectSink) -> Result<()> {
        let entries = std::mem::take(&mut self.levels[level]);
        let node = encode_node(level as u8 + 1, &entries);
        let id = sink.put(ChunkKind::Node, &node)?;
        self.stored_any = true;
        let parent = Entry {
            id,
            len: entries.iter().map(|e| e.len).sum(),
            aux: entries[0].aux,
        };
        self.push_at(level + 1, parent, sink)
    }

    pub fn finish(mut self, sink: &mut dyn ObjectSink) -> Result<ListRef> {
        if !self.stored_any && self.levels.first().is_none_or(|l| l.len() <= INLINE_MAX) {
            return Ok(ListRef::Inline(self.levels.pop().unwrap_or_default()));
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && level > 0 && self.levels[level].len() == 1 {
                return Ok(ListRef::Tree {
                    level: level as u8,
                    root: self.levels[level][0],
                });
            }
            if !self.levels[level].is_empty() {
                self.store_level(level, sink)?;
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MemoryObjects;
    use proptest::prelude::*;

    fn entries(n: usize, seed: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                id: ChunkId::of(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat()),
                len: (i % 7) as u64 + 1,
                aux: i as u64,
            })
            .collect()
    }

    fn build(objects: &mut MemoryObjects, list: &[Entry]) -> ListRef {
        let mut b = ListBuilder::default();
        for e in list {
            b.push(*e, objects).unwrap();
        }
        b.finish(objects).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn lists_round_trip(n in 0usize..20_000, seed: u64) {
            let mut objects = MemoryObjects::default();
            let list = entries(n, seed);
            let r = build(&mut objects, &list);
            prop_assert_eq!(r.total_len(), list.iter().map(|e| e.len).sum::<u64>());
            let r = ListRef::from_bytes(&r.to_bytes()).unwrap();
            let mut back = Vec::new();
            r.for_each(&objects, &mut |e| { back.push(*e); Ok(()) }).unwrap();
            prop_assert_eq!(back, list);
        }
    }

    #[test]
    fn find_locates_every_entry() {
        let mut objects = MemoryObjects::default();
        let list = entries(5_000, 3);
        let r = build(&mut objects, &list);
        assert!(matches!(r, ListRef::Tree { .. }));
        let mut start = 0;
        for e in &list {
            for off in [start, start + e.len - 1] {
                assert_eq!(r.find(&objects, off).unwrap(), Some((*e, start)));
            }
            start += e.len;
        }
        assert_eq!(r.find(&objects, start).unwrap(), None);
    }

    #[test]
    fn a_change_stores_few_new_nodes() {
        let mut objects = MemoryObjects::default();
        let mut list = entries(50_000, 1);
        build(&mut objects, &list);
        let before = objects.len();
        list[25_000].id = ChunkId::of(b"changed");
        build(&mut objects, &list);
        let added = objects.len() - before;
        assert!(added <= 4, "{added} new nodes for one changed entry");
    }
}
