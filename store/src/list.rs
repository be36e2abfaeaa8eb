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
            // Checked when decoded (`decode`); one built in memory sums what it was given.
            ListRef::Inline(v) => sum_len(v).unwrap_or(u64::MAX),
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
                // `total_len` adds them up; a damaged list whose lengths pass u64 is refused
                // here, once, rather than overflowing in every reader.
                sum_len(&v).ok_or_else(|| Error::corrupt("inline list: its lengths pass 2^64"))?;
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

/// The bytes beneath `entries`, None past u64.
fn sum_len(entries: &[Entry]) -> Option<u64> {
    entries
        .iter()
        .try_fold(0u64, |sum, e| sum.checked_add(e.len))
}

/// A list node's entries, checked against the entry that names it: a node must hold the
/// bytes its parent says, or every offset below it would be found in the wrong place (and a
/// crafted list could claim any length it likes while holding little).
fn load_node(src: &dyn ObjectSource, parent: &Entry, level: u8) -> Result<Vec<Entry>> {
    let (node_level, entries) = decode_node(&src.object(&parent.id)?)?;
    if node_level != level {
        return Err(Error::corrupt(format!(
            "list node {} is at level {node_level}, expected {level}",
            parent.id.short()
        )));
    }
    if sum_len(&entries) != Some(parent.len) {
        return Err(Error::corrupt(format!(
            "list node {} holds {} bytes, but the entry naming it says {}",
            parent.id.short(),
            sum_len(&entries).map_or("over 2^64".to_string(), |n| n.to_string()),
            parent.len
        )));
    }
    Ok(entries)
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
                let (mut parent, mut base) = (*root, 0u64);
                for expect in (1..=*level).rev() {
                    let entries = load_node(src, &parent, expect)?;
                    let Some((i, start)) = find_in(&entries, offset - base) else {
                        return Ok(None);
                    };
                    if expect == 1 {
                        return Ok(Some((entries[i], base + start)));
                    }
                    parent = entries[i];
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
    let entries = load_node(src, node, level)?;
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

    /// A node holding other than what its parent entry says (a crafted list claiming a length
    /// it does not have, or one whose lengths pass u64) is damage, however it is read.
    #[test]
    fn a_node_that_disagrees_with_its_parent_is_damage() {
        let mut objects = MemoryObjects::default();
        let node = objects
            .put(ChunkKind::Node, &encode_node(1, &entries(3, 9)))
            .unwrap();
        let held = entries(3, 9).iter().map(|e| e.len).sum::<u64>();
        for claimed in [held - 1, held + 1, u64::MAX] {
            let list = ListRef::Tree {
                level: 1,
                root: Entry {
                    id: node,
                    len: claimed,
                    aux: 0,
                },
            };
            let err = list.for_each(&objects, &mut |_| Ok(())).unwrap_err();
            assert!(
                err.to_string().contains("the entry naming it says"),
                "{err}"
            );
            assert!(list.find(&objects, 0).is_err(), "{claimed}");
        }
        let mut huge = entries(2, 1);
        huge[0].len = u64::MAX;
        let inline = ListRef::Inline(huge).to_bytes();
        assert!(matches!(
            ListRef::from_bytes(&inline),
            Err(Error::Corrupt(_))
        ));
    }
}
