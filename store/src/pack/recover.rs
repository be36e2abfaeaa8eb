//! Finding the records of a damaged pack, for `repair-packs`: where `scan` stops at the first
//! record that does not parse, this walk goes on past it to the next place a record header
//! that checks out starts, so one flipped byte costs only the record it is in.
//!
//! A record header ends in 8 bytes of its blake3, so payload bytes that happen to read `CREC`
//! are taken for a header with odds of 2^-64. Real headers inside a payload are another
//! matter (a pack file stored in this store as data holds them, whole in a frame stored
//! uncompressed): what uses this walk checks every object against its id, and takes snapshot
//! and forget records only where the pack's own are (see `check::salvage::frames`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{RecordHeader, PACK_HEADER_LEN, RECORD_MAGIC};
use super::scan::Found;
use crate::error::{IoContext, Result};

/// How much of the file the search for the next record header reads at a time.
const WINDOW: usize = 1 << 20;

/// What the walk passed over: bytes in no record that checks out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub bytes: u64,
    /// Where the first of them is.
    pub first: Option<u64>,
}

/// Call `f` for every record of `file` whose header checks out and whose payload lies inside
/// the file, in file order. The pack header is not required to be intact.
pub fn intact_records(
    file: &File,
    path: &Path,
    mut f: impl FnMut(Found) -> Result<()>,
) -> Result<Skipped> {
    let len = file.metadata().at(path)?.len();
    let mut skipped = Skipped::default();
    let mut pos = PACK_HEADER_LEN;
    while pos < len {
        match header_at(file, path, pos, len, skipped.first.is_some())? {
            Some((header, used)) => {
                let payload_offset = pos + used as u64;
                pos = payload_offset + header.stored_len as u64;
                f(Found {
                    header,
                    payload_offset,
                })?;
            }
            None => {
                let next = next_magic(file, path, pos + 1, len)?;
                skipped.first.get_or_insert(pos);
                skipped.bytes += next - pos;
                pos = next;
            }
        }
    }
    Ok(skipped)
}

/// The record header at `pos`, if one that checks out starts there and its payload fits.
fn header_at(
    file: &File,
    path: &Path,
    pos: u64,
    len: u64,
    resynced: bool,
) -> Result<Option<(RecordHeader, usize)>> {
    let room = len - pos;
    let mut buf = vec![0u8; 20.min(room as usize)];
    file.read_exact_at(&mut buf, pos).at(path)?;
    if !plausible(&buf, resynced) {
        return Ok(None);
    }
    let need = match RecordHeader::needed(&buf) {
        Ok(Some(need)) if need as u64 <= room => need,
        _ => return Ok(None),
    };
    buf.resize(need, 0);
    file.read_exact_at(&mut buf[20..], pos + 20).at(path)?;
    Ok(match RecordHeader::decode(&buf) {
        Ok(Some((h, used))) if used as u64 + h.stored_len as u64 <= room => Some((h, used)),
        _ => None,
    })
}

/// Entries a record found past damage may have, at most: cellar writes chunk records of up to
/// 4096 (and forget records of as many snapshots as one `prune` forgets), so a larger count
/// is bytes that read `CREC` by chance, whose header would cost up to 38 MiB to read.
const RESYNCED_ENTRIES: u32 = 1 << 16;

/// Whether the fixed part of a header (20 bytes) is one cellar writes: the reserved field 0,
/// at least one entry, a known kind and codec that go together, and sizes that agree. Cheap,
/// so that bytes reading `CREC` by chance cost no hashing.
fn plausible(fixed: &[u8], resynced: bool) -> bool {
    if fixed.len() < 20 {
        return false;
    }
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let (kind, codec, count) = (fixed[4], fixed[5], u32_at(8));
    let (raw, stored) = (u32_at(12), u32_at(16));
    let sizes = match (kind, codec) {
        (0, 0) => raw == stored,
        (0, 1) => true,
        (0, 2) => count == 1,
        (1, 0) => count == 1 && raw == stored,
        (2, 0) => raw == stored && stored as u64 == 32 * count as u64,
        _ => false,
    };
    fixed[6..8] == [0, 0] && count >= 1 && sizes && (!resynced || count <= RESYNCED_ENTRIES)
}

/// The offset of the next `CREC` at or after `from`, or `len` if there is none.
fn next_magic(file: &File, path: &Path, from: u64, len: u64) -> Result<u64> {
    let overlap = RECORD_MAGIC.len() as u64 - 1;
    let mut buf = vec![0u8; WINDOW];
    let mut at = from;
    while at < len {
        let n = (len - at).min(WINDOW as u64) as usize;
        file.read_exact_at(&mut buf[..n], at).at(path)?;
        if let Some(i) = buf[..n]
            .windows(RECORD_MAGIC.len())
            .position(|w| w == RECORD_MAGIC)
        {
            return Ok(at + i as u64);
        }
        if at + (n as u64) >= len {
            break;
        }
        at += n as u64 - overlap;
    }
    Ok(len)
}
