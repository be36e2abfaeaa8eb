//! Whether a stream can be its own image layer (FORMAT §16.1): image extractors (Go's
//! archive/tar, under umoci, containerd and docker) must read every member as cellar does,
//! and end where it ends. A stream that fails is still stored whole; its layer is written
//! anew from the tree.

use crate::tar::{self, Member};
use crate::tree::meta::{self, Sparse};

/// Whether layer extractors read the member as cellar does, so the stream can be its own
/// layer. Not all read old GNU sparse members (umoci refuses them) or apply global PAX records
/// (bsdtar and Go's archive/tar do not); Go's archive/tar, under most of them, takes a GNU long
/// name over a PAX path, and umoci refuses types other than POSIX's file types (GNU's dumpdirs
/// `D` and volume labels `V`, which GNU tar reads as a directory and as nothing, and
/// contiguous files `7`, which GNU tar reads as files). Such a stream's layer is written anew
/// from the tree. So is one whose PAX sparse records Go reads otherwise (or not at all), and,
/// at its end, one holding a global header, whatever its records ([`crate::tar::TarReader::saw_global_header`]).
pub(super) fn layer_reads_member(m: &Member) -> bool {
    matches!(m.typeflag, b'0'..=b'6' | 0)
        && m.global_records == 0
        && !m.names_twice
        && go_reads_sparse_as_cellar(m)
}

/// Whether Go's archive/tar reads a member's PAX sparse records (if any) as cellar does. Go
/// takes them on a regular file only (on any other type it fails the stream); of a version it
/// knows (1.0, with the map in the payload; 0.0 and 0.1, or none given, with a map in the
/// records, which must be `GNU.sparse.numblocks` pairs long); with its size from
/// `GNU.sparse.size` before `GNU.sparse.realsize` (cellar takes the other order, so the two
/// must agree); and with a `GNU.sparse.name` only if it is not empty. Anything else is left to
/// a layer written from the tree.
fn go_reads_sparse_as_cellar(m: &Member) -> bool {
    if !m.pax.iter().any(|r| r.key.starts_with(b"GNU.sparse.")) {
        return true;
    }
    let record = |key| tar::pax::lookup(&m.pax, key);
    let layout = match (record("GNU.sparse.major"), record("GNU.sparse.minor")) {
        (Some(b"1"), Some(b"0")) => true,
        (None, None) | (Some(b"0"), Some(b"0" | b"1")) => {
            let blocks = record("GNU.sparse.numblocks").and_then(tar::pax::parse_decimal);
            match (blocks, meta::sparse_layout(m)) {
                (Some(n), Sparse::Map(map)) => map.len() as u64 == n,
                _ => false,
            }
        }
        _ => false,
    };
    let sizes_agree = match (record("GNU.sparse.size"), record("GNU.sparse.realsize")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let named = record("GNU.sparse.name").is_none_or(|name| !name.is_empty());
    matches!(m.typeflag, b'0' | 0) && layout && sizes_agree && named
}

/// Whether Go's archive/tar ends where cellar does, given the first bytes after the first zero
/// block: a lone zero block followed by anything but a second one (or nothing) is an error
/// there, while GNU tar and cellar stop at it.
pub(super) fn layer_reads_end(after_zero_block: &[u8]) -> bool {
    after_zero_block.is_empty()
        || after_zero_block
            .get(..512)
            .is_some_and(|b| b.iter().all(|&x| x == 0))
}
