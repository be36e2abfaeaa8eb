//! Cut hints for an incremental ingest: the chunks a file had in the parent snapshot. The
//! chunker takes those cuts while the bytes still hash to them, with no scan for cut points
//! (see [`Chunker::chunk_hinted`](crate::chunker::Chunker::chunk_hinted)).

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::chunker::MAX_CHUNK;
use crate::error::{Error, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::tar::Member;
use crate::tree::meta::{self, Sparse};
use crate::tree::{normalize_path_into, Dir, Node, Tree};

/// Hints for one payload at most: 64k chunks, about 1 GiB of payload, 2.3 MiB of memory.
const MAX_HINTS: usize = 1 << 16;

/// The parent snapshot's files, found by path for hints. A tar stream lists a directory's
/// files one after another, so the directory of the last lookup is kept: most files are one
/// binary search away, with no walk from the root and no node copied. That makes a hint
/// cheaper than the index lookup it saves even for a file of one small chunk.
pub(super) struct ParentFiles<'s> {
    tree: Tree<'s>,
    /// The path of the kept directory (components joined by `/`, no leading one) ...
    dir_path: Vec<u8>,
    /// ... and its nodes, or None when the parent has no directory there.
    dir: Option<Arc<Dir>>,
    /// The member's path, normalized: reused from one call to the next.
    path: Vec<u8>,
}

impl<'s> ParentFiles<'s> {
    pub(super) fn new(tree: Tree<'s>) -> Self {
        let dir = tree.readdir(tree.root()).ok();
        ParentFiles {
            tree,
            dir_path: Vec::new(),
            dir,
            path: Vec::new(),
        }
    }

    /// The parent's node at `path`, if it has one (a path with `..` has none).
    fn node(&mut self, path: &[u8]) -> Option<&Node> {
        normalize_path_into(path, &mut self.path);
        if self.path.split(|&b| b == b'/').any(|c| c == b"..") {
            return None;
        }
        let (dir, name) = match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.path[..i], &self.path[i + 1..]),
            None => (&[][..], &self.path[..]),
        };
        if name.is_empty() {
            return None; // the root
        }
        if dir != self.dir_path.as_slice() {
            self.dir = self
                .tree
                .resolve(dir)
                .and_then(|n| self.tree.readdir(&n))
                .ok();
            self.dir_path.clear();
            self.dir_path.extend_from_slice(dir);
        }
        let nodes = self.dir.as_ref()?;
        let i = nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()?;
        Some(&nodes[i])
    }

    /// The chunks the file at the member's path had in the parent, when it is a plain file of
    /// the same length. Anything else (no such file, a sparse one, a damaged record) gives no
    /// hints: they only save work. An error reading the list gives the hints read before it.
    pub(super) fn hints_for(&mut self, m: &Member, out: &mut Vec<(u32, ChunkId)>) {
        let plain = matches!(m.typeflag, b'0' | b'\0' | b'7');
        if !plain || m.payload_len == 0 || !matches!(meta::sparse_layout(m), Sparse::None) {
            return;
        }
        let store = self.tree.store();
        let Some(content) = self.node(m.real_path()).and_then(|n| n.content.as_ref()) else {
            return;
        };
        if content.segments.is_some()
            || content.data_offset != 0
            || content.chunks.total_len() != m.payload_len
        {
            return;
        }
        // A prefix of the chunks is as good a hint as all of them, and bounds the memory.
        let mut damaged = false;
        let _ = content.chunks.for_each(store, &mut |e| {
            if e.len == 0 || e.len > MAX_CHUNK as u64 {
                damaged = true;
            }
            if damaged || out.len() == MAX_HINTS {
                return Err(Error::corrupt("enough hints")); // stops the walk
            }
            out.push((e.len as u32, e.id));
            Ok(())
        });
        if damaged {
            out.clear();
        }
    }
}

/// `meta` key: the `seq` of the last snapshot committed before the index could be trusted to
/// hold every chunk of the snapshots after it (see [`trusted`]). The first commit that finds
/// it missing sets it, to the snapshot before its own: in a new store, in one an older cellar
/// wrote, and in every index `repair-index` builds (which starts without it).
const TRUSTED_AFTER: &str = "hints_trusted_after_seq";

/// Whether a chunk that hashes to one of `parent`'s hints can be taken as stored, with no
/// lookup in the index (for chunks already stored, the lookup is most of what is left of an
/// ingest's work besides hashing).
///
/// It can when the parent was committed after [`TRUSTED_AFTER`]: a commit leaves every chunk
/// its snapshot names in the index (those gc condemned meanwhile are moved back by the
/// lease), and from then on only gc removes chunks, never those of a snapshot still listed.
/// `repair-index` can lose chunks (those of packs it could not read), and its index has no
/// mark: the next snapshot of each lineage looks every chunk up, and stores again what the
/// repair lost.
pub(super) fn trusted(index: &Connection, parent: &SnapshotId) -> Result<bool> {
    let after: Option<bool> = index
        .query_row(
            "SELECT s.seq > CAST(m.value AS INTEGER) FROM snapshots s
             JOIN meta m ON m.key = ?2 WHERE s.id = ?1",
            params![parent.hex(), TRUSTED_AFTER],
            |r| r.get(0),
        )
        .optional()?;
    Ok(after.unwrap_or(false))
}

/// After chunks were taken out of the index (`repair-packs`: those it could not salvage):
/// no snapshot listed so far can vouch for its chunks any longer, so the next snapshot of each
/// lineage looks every chunk up, and stores again what was lost.
pub(crate) fn distrust_all(tx: &Connection) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE key = ?1", [TRUSTED_AFTER])?;
    Ok(())
}

/// In a commit, before the snapshot's row: set the [`TRUSTED_AFTER`] mark at the last snapshot
/// listed, if it is missing.
pub(super) fn mark_trusted_after(tx: &Connection) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) FROM snapshots))",
        [TRUSTED_AFTER],
    )?;
    Ok(())
}
