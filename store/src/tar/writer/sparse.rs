//! Sparse files: finding their holes, and the GNU sparse 1.0 form they are archived in.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;

use super::header::{Entry, NAME_LEN};
use crate::tar::header::BLOCK;

/// GNU tar's test for files worth scanning for holes: fewer blocks allocated than the size
/// needs.
pub(super) fn looks_sparse(md: &Metadata) -> bool {
    md.blocks().saturating_mul(512) < md.size()
}

/// The data segments `(offset, length)` of a file with holes, found with SEEK_DATA/SEEK_HOLE
/// exactly as GNU tar 1.34 does (including the final `(size, 0)` segment it always adds).
/// None when the file turns out to have no hole, or the file system cannot tell, or the file
/// changes under the scan: it is then archived as an ordinary file.
pub(super) fn data_segments(file: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    let mut offset = 0;
    loop {
        let data = match seek(file, offset, libc::SEEK_DATA) {
            Ok(data) if data < size => data,
            Ok(_) => size,
            // No data from `offset` to the end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
            Err(_) => return None,
        };
        if data == size {
            segments.push((size, 0));
            return Some(segments);
        }
        let hole = seek(file, data, libc::SEEK_HOLE).ok()?.min(size);
        if hole <= data {
            return None;
        }
        if offset == 0 && data == 0 && hole == size {
            return None;
        }
        segments.push((data, hole - data));
        offset = hole;
    }
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a file descriptor we own; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// The GNU sparse 1.0 map that starts the payload: decimal text, NUL-padded to a block.
pub(super) fn sparse_map(segments: &[(u64, u64)]) -> Vec<u8> {
    let mut map = format!("{}\n", segments.len()).into_bytes();
    for (offset, len) in segments {
        map.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
    }
    map.resize(map.len().next_multiple_of(BLOCK), 0);
    map
}

/// `<dir>/GNUSparseFile.0/<basename>`: GNU tar's `%d/GNUSparseFile.%p/%f` with the process id
/// fixed at 0, cut to the name field like GNU tar cuts it.
pub(super) fn sparse_ustar_name(name: &[u8]) -> Vec<u8> {
    let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b"."[..], name),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"/GNUSparseFile.0/");
    out.extend_from_slice(base);
    out.truncate(NAME_LEN);
    out
}

impl Entry {
    /// Turn a regular file's entry into a GNU sparse 1.0 one.
    pub(super) fn make_sparse(&mut self, map: &[u8], segments: &[(u64, u64)], real_size: u64) {
        let data: u64 = segments.iter().map(|&(_, len)| len).sum();
        self.size = map.len() as u64 + data;
        self.sparse_name = Some(sparse_ustar_name(&self.name));
        let records: [(&str, Vec<u8>); 4] = [
            ("GNU.sparse.major", b"1".to_vec()),
            ("GNU.sparse.minor", b"0".to_vec()),
            ("GNU.sparse.name", self.name.clone()),
            ("GNU.sparse.realsize", real_size.to_string().into_bytes()),
        ];
        for (key, value) in records {
            self.pax.insert(key.as_bytes().to_vec(), value);
        }
    }
}
