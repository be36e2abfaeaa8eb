//! Reading a pack's record headers in order, skipping payloads: how a pack is indexed at
//! commit (no per-chunk state is kept in memory while ingesting) and how an index could be
//! rebuilt from packs alone.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::format::{check_pack_header, RecordHeader, PACK_HEADER_LEN};
use crate::error::{Error, IoContext, Result};

/// A record found in a pack.
pub struct Found {
    pub header: RecordHeader,
    /// Where its payload starts in the file.
    pub payload_offset: u64,
}

/// Call `f` for every record of the pack at `path`, in file order.
pub fn scan(path: &Path, f: impl FnMut(Found) -> Result<()>) -> Result<()> {
    scan_file(File::open(path).at(path)?, path, f)
}

/// `scan` of a pack already open (`path` names it in errors): a pack being renamed into place
/// meanwhile is read all the same.
pub fn scan_file(file: File, path: &Path, mut f: impl FnMut(Found) -> Result<()>) -> Result<()> {
    let len = file.metadata().at(path)?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut head = [0u8; PACK_HEADER_LEN as usize];
    if len < PACK_HEADER_LEN {
        return Err(Error::corrupt(format!(
            "{}: {len} bytes, shorter than a pack header",
            path.display()
        )));
    }
    r.read_exact(&mut head).at(path)?;
    check_pack_header(&head).map_err(|e| match e {
        Error::Corrupt(what) => Error::corrupt(format!("{}: {what}", path.display())),
        e => e,
    })?;
    let mut pos = PACK_HEADER_LEN;
    let mut buf = Vec::new();
    while pos < len {
        let damaged =
            |what: String| Error::corrupt(format!("{} at offset {pos}: {what}", path.display()));
        // A header's own fault is `Corrupt` too: its "store damaged" is said once.
        let bad_header = |e: Error| match e {
            Error::Corrupt(what) => damaged(what),
            e => e,
        };
        // Only what is read can be damage: a failed read is the disk's error, not the pack's.
        let cut_short = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                damaged("the pack ends inside a record header".into())
            }
            _ => Error::io(path, e),
        };
        buf.resize(20, 0);
        r.read_exact(&mut buf).map_err(cut_short)?;
        let need = RecordHeader::needed(&buf)
            .map_err(bad_header)?
            .expect("fixed part read");
        buf.resize(need, 0);
        r.read_exact(&mut buf[20..]).map_err(cut_short)?;
        let (header, used) = RecordHeader::decode(&buf)
            .map_err(bad_header)?
            .expect("whole header read");
        let payload_offset = pos + used as u64;
        let stored = header.stored_len as u64;
        if payload_offset + stored > len {
            return Err(damaged("record runs past the end of the pack".into()));
        }
        // Relative, so a small payload is skipped inside the buffer: a plain seek drops it, and
        // a pack of small records was read again 64 KiB at a time for each of them.
        r.seek_relative(stored as i64).at(path)?;
        pos = payload_offset + stored;
        f(Found {
            header,
            payload_offset,
        })?;
    }
    Ok(())
}
