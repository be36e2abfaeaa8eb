//! Cut hints for an incremental ingest: the chunks a file had in the parent snapshot. The
//! chunker takes those cuts while the bytes still hash to them, with no scan for cut points
//! (see [`Chunker::chunk_hinted`](crate::chunker::Chunker::chunk_hinted)).

use crate::chunker::{MAX_CHUNK, MIN_CHUNK};
use crate::error::Error;
use crate::ids::ChunkId;
use crate::tar::Member;
use crate::tree::meta::{self, Sparse};
use crate::tree::Tree;

/// Hints for one payload at most: 64k chunks, about 1 GiB of payload, 2.3 MiB of memory.
const MAX_HINTS: usize = 1 << 16;
/// Payloads smaller than this are not worth a lookup: they are one chunk or two.
const HINT_MIN: u64 = 4 * MIN_CHUNK as u64;

/// The chunks the file at the member's path had in `parent`, when it is a plain file of the
/// same length. Anything else (no such file, a sparse one, a damaged record) gives no hints:
/// they only save work. An error reading the list gives the hints read before it.
pub(super) fn hints_for(m: &Member, parent: &Tree, out: &mut Vec<(u32, ChunkId)>) {
    let plain = matches!(m.typeflag, b'0' | b'\0' | b'7');
    if !plain || m.payload_len < HINT_MIN || !matches!(meta::sparse_layout(m), Sparse::None) {
        return;
    }
    let Ok(node) = parent.resolve(meta::member_path(m)) else {
        return;
    };
    let Some(content) = node
        .content
        .filter(|c| c.segments.is_none() && c.data_offset == 0)
    else {
        return;
    };
    if content.chunks.total_len() != m.payload_len {
        return;
    }
    // A prefix of the chunks is as good a hint as all of them, and bounds the memory.
    let mut damaged = false;
    let _ = content.chunks.for_each(parent.store(), &mut |e| {
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
