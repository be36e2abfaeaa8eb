//! The nodes a tree is built from, by (parent path, name), as the tree builder collects them.
//!
//! They are kept in memory while they fit a budget, and in the scratch table `m` once they do
//! not, so a stream of millions of members still builds in bounded memory. The table was the
//! only home before: an insert into it per member was about a sixth of an incremental
//! ingest's parsing thread, for trees that almost always fit in a few MiB. Both homes order
//! names the same way (bytewise, shorter first), so a directory lists the same either way.
//!
//! Each path also keeps its place in the stream (`seq`, counted as paths first appear; a
//! member that replaces one keeps the place): the order a directory's record lists it in.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use rusqlite::{params, OptionalExtension};

use super::node::Node;
use crate::dispose::dispose;
use crate::error::Result;
use crate::ingest::Scratch;

/// Bytes of members kept in memory (names, encoded nodes and the map's own overhead).
pub(super) const BUDGET: usize = 32 << 20;
/// What one entry costs beyond its bytes: three `Vec`s, their allocations' headers and
/// rounding, and its share of a B-tree node (measured: a million small members peak at about
/// the budget plus the rest of an ingest).
const ENTRY_OVERHEAD: usize = 160;

/// Members past which the map is freed on another thread (`dispose`): a smaller one is freed
/// sooner than a thread starts.
const DISPOSE_AT: usize = 1024;

struct Stored {
    node: Vec<u8>,
    ino: u64,
    seq: u64,
}

/// A directory's member, as [`Members::dir`] gives it.
pub(super) struct Member<'m> {
    /// The node as it was encoded.
    pub encoded: Cow<'m, [u8]>,
    /// 0 unless the node is in a hard-link group.
    pub ino: u64,
    /// Where the path first appeared in the stream, among all paths.
    pub seq: u64,
}

/// What an entry counts against the budget.
fn entry_cost(key: &(Vec<u8>, Vec<u8>), s: &Stored) -> usize {
    key.0.len() + key.1.len() + s.node.len() + ENTRY_OVERHEAD
}

pub(super) struct Members<'a> {
    scratch: &'a Scratch,
    /// Every member while `spilled` is false; none after.
    mem: BTreeMap<(Vec<u8>, Vec<u8>), Stored>,
    bytes: usize,
    budget: usize,
    spilled: bool,
    /// The `seq` of the next new path.
    next_seq: u64,
}

impl<'a> Members<'a> {
    /// Members in memory up to `budget` bytes, then in `scratch`'s table `m`.
    pub(super) fn new(scratch: &'a Scratch, budget: usize) -> Self {
        Members {
            scratch,
            mem: BTreeMap::new(),
            bytes: 0,
            budget,
            spilled: false,
            next_seq: 0,
        }
    }

    pub(super) fn get(&self, dir: &[u8], name: &[u8]) -> Result<Option<Node>> {
        if !self.spilled {
            let key = (dir.to_vec(), name.to_vec());
            return self
                .mem
                .get(&key)
                .map(|s| Node::from_bytes(&s.node))
                .transpose();
        }
        let mut stmt = self
            .scratch
            .conn()?
            .prepare_cached("SELECT node FROM m WHERE dir = ?1 AND name = ?2")?;
        let bytes: Option<Vec<u8>> = stmt
            .query_row(params![dir, name], |r| r.get(0))
            .optional()?;
        bytes.map(|b| Node::from_bytes(&b)).transpose()
    }

    /// Insert `node` at (dir, its name) unless something stands there already; false if so.
    pub(super) fn put_new(&mut self, dir: &[u8], node: &Node) -> Result<bool> {
        if !self.spilled {
            let key = (dir.to_vec(), node.name.clone());
            let std::collections::btree_map::Entry::Vacant(slot) = self.mem.entry(key) else {
                return Ok(false);
            };
            let stored = Stored {
                node: node.to_bytes(),
                ino: node.ino,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            self.bytes += entry_cost(slot.key(), &stored);
            slot.insert(stored);
            if self.bytes > self.budget {
                self.spill()?;
            }
            return Ok(true);
        }
        let mut stmt = self.scratch.conn()?.prepare_cached(
            "INSERT INTO m (dir, name, node, ino, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (dir, name) DO NOTHING",
        )?;
        let seq = self.next_seq as i64;
        let new = stmt.execute(params![
            dir,
            node.name,
            node.to_bytes(),
            node.ino as i64,
            seq
        ])? == 1;
        self.next_seq += u64::from(new);
        Ok(new)
    }

    /// Put `node` at (dir, its name), replacing what stands there (in its place).
    pub(super) fn put(&mut self, dir: &[u8], node: &Node) -> Result<()> {
        if !self.spilled {
            return self.insert((dir.to_vec(), node.name.clone()), node);
        }
        let mut stmt = self.scratch.conn()?.prepare_cached(
            "INSERT INTO m (dir, name, node, ino, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (dir, name) DO UPDATE SET node = excluded.node, ino = excluded.ino",
        )?;
        let seq = self.next_seq as i64;
        stmt.execute(params![
            dir,
            node.name,
            node.to_bytes(),
            node.ino as i64,
            seq
        ])?;
        // Whether the path was new or not, the next one gets a later place.
        self.next_seq += 1;
        Ok(())
    }

    fn insert(&mut self, key: (Vec<u8>, Vec<u8>), node: &Node) -> Result<()> {
        let seq = match self.mem.get(&key) {
            Some(old) => old.seq,
            None => self.next_seq,
        };
        self.next_seq += 1;
        let stored = Stored {
            node: node.to_bytes(),
            ino: node.ino,
            seq,
        };
        self.bytes += entry_cost(&key, &stored);
        let key_len = key.0.len() + key.1.len();
        if let Some(old) = self.mem.insert(key, stored) {
            self.bytes -= key_len + old.node.len() + ENTRY_OVERHEAD;
        }
        if self.bytes > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Move every member to the table, in key order (appends, not scattered inserts).
    fn spill(&mut self) -> Result<()> {
        let mut stmt = self
            .scratch
            .conn()?
            .prepare("INSERT INTO m (dir, name, node, ino, seq) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for ((dir, name), s) in std::mem::take(&mut self.mem) {
            stmt.execute(params![dir, name, s.node, s.ino as i64, s.seq as i64])?;
        }
        self.bytes = 0;
        self.spilled = true;
        Ok(())
    }

    /// Whether anything stands in the directory at `path` (joined components).
    pub(super) fn has_children(&self, path: &[u8]) -> Result<bool> {
        if !self.spilled {
            let from = (path.to_vec(), Vec::new());
            return Ok(self
                .mem
                .range((Bound::Included(from), Bound::Unbounded))
                .next()
                .is_some_and(|((dir, _), _)| dir == path));
        }
        let mut stmt = self
            .scratch
            .conn()?
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM m WHERE dir = ?1)")?;
        Ok(stmt.query_row([path], |r| r.get(0))?)
    }

    /// How many members share each inode number (hard-link groups).
    pub(super) fn link_counts(&self) -> Result<HashMap<u64, u64>> {
        let mut links = HashMap::new();
        if !self.spilled {
            for s in self.mem.values().filter(|s| s.ino != 0) {
                *links.entry(s.ino).or_insert(0) += 1;
            }
            return Ok(links);
        }
        let mut stmt = self
            .scratch
            .conn()?
            .prepare("SELECT ino, COUNT(*) FROM m WHERE ino != 0 GROUP BY ino")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (ino, count) = row?;
            links.insert(ino as u64, count as u64);
        }
        Ok(links)
    }

    /// The members of the directory at `path`, by name.
    pub(super) fn dir(&self, path: &[u8]) -> Result<Vec<Member<'_>>> {
        if !self.spilled {
            let from = (path.to_vec(), Vec::new());
            return Ok(self
                .mem
                .range((Bound::Included(from), Bound::Unbounded))
                .take_while(|((dir, _), _)| dir == path)
                .map(|(_, s)| Member {
                    encoded: Cow::Borrowed(&s.node[..]),
                    ino: s.ino,
                    seq: s.seq,
                })
                .collect());
        }
        let mut stmt = self
            .scratch
            .conn()?
            .prepare_cached("SELECT node, ino, seq FROM m WHERE dir = ?1 ORDER BY name")?;
        let rows = stmt.query_map([path], |r| {
            Ok(Member {
                encoded: Cow::Owned(r.get::<_, Vec<u8>>(0)?),
                ino: r.get::<_, i64>(1)? as u64,
                seq: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Drop for Members<'_> {
    fn drop(&mut self) {
        if self.mem.len() >= DISPOSE_AT {
            dispose(std::mem::take(&mut self.mem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Kind;
    use proptest::prelude::*;

    fn node(name: &[u8], ino: u64, size: u64) -> Node {
        let mut n = Node::new(Kind::File);
        n.name = name.to_vec();
        n.ino = ino;
        n.size = size;
        n
    }

    /// Everything the builder can ask, as (dir listings with their places in the stream, link
    /// counts, children flags, gets).
    fn answers(m: &Members, dirs: &[&[u8]], names: &[&[u8]]) -> String {
        let mut out = String::new();
        for &d in dirs {
            let listing: Vec<(Vec<u8>, u64, u64, u64)> = m
                .dir(d)
                .unwrap()
                .into_iter()
                .map(|m| {
                    let n = Node::from_bytes(&m.encoded).unwrap();
                    (n.name, n.size, m.ino, m.seq)
                })
                .collect();
            out += &format!("{d:?}: {listing:?} {}\n", m.has_children(d).unwrap());
            for &n in names {
                let got = m.get(d, n).unwrap().map(|n| (n.ino, n.size));
                out += &format!("  {n:?}: {got:?}\n");
            }
        }
        let mut links: Vec<_> = m.link_counts().unwrap().into_iter().collect();
        links.sort();
        out + &format!("links {links:?}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Members kept in memory, moved to the table part way, or in the table from the
        /// first, answer every question alike. Directory names include prefixes of each other
        /// and bytes that sort around '/', where a range over the map could overrun.
        #[test]
        fn memory_and_table_answer_alike(
            ops in proptest::collection::vec((0usize..5, 0usize..4, any::<bool>(), 0u64..3), 0..60),
            spill_at in 0usize..4000,
        ) {
            let dirs: [&[u8]; 5] = [b"", b"a", b"a/b", b"a.b", b"ab"];
            let names: [&[u8]; 4] = [b"x", b"y", b"x0", b"\xff"];
            let tmp = tempfile::tempdir().unwrap();
            let (db1, db2, db3) = (Scratch::new(tmp.path()), Scratch::new(tmp.path()), Scratch::new(tmp.path()));
            let mut all_memory = Members::new(&db1, usize::MAX);
            let mut part_way = Members::new(&db2, spill_at);
            let mut table = Members::new(&db3, 0);
            for (i, &(d, n, replace, ino)) in ops.iter().enumerate() {
                let node = node(names[n], ino, i as u64);
                let mut results = Vec::new();
                for m in [&mut all_memory, &mut part_way, &mut table] {
                    results.push(if replace {
                        m.put(dirs[d], &node).map(|()| true).unwrap()
                    } else {
                        m.put_new(dirs[d], &node).unwrap()
                    });
                }
                prop_assert!(results.iter().all(|&r| r == results[0]));
            }
            let want = answers(&all_memory, &dirs, &names);
            prop_assert_eq!(&answers(&part_way, &dirs, &names), &want);
            prop_assert_eq!(&answers(&table, &dirs, &names), &want);
            prop_assert!((ops.is_empty() || table.spilled) && !all_memory.spilled);
        }
    }
}
