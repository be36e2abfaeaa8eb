//! A pack file read at any offset and hashed whole on the way, and its record headers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::check::reason;
use crate::ids::PackId;
use crate::pack::RecordHeader;

/// Size of the steps in which bytes no record covers are hashed.
const HASH_STEP: u64 = 1 << 20;

/// A pack file read at any offset, hashed (blake3) as a whole along the way: every byte is
/// hashed once, in order, whatever the reads skip.
pub(super) struct PackFile {
    file: File,
    pub len: u64,
    hasher: blake3::Hasher,
    hashed: u64,
}

impl PackFile {
    pub fn open(path: &Path) -> io::Result<PackFile> {
        File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok(PackFile {
                file: f,
                len,
                hasher: blake3::Hasher::new(),
                hashed: 0,
            })
        })
    }

    pub fn read_at(&mut self, offset: u64, n: u64) -> io::Result<Vec<u8>> {
        self.hash_to(offset)?;
        let mut buf = vec![0u8; n as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        let end = offset + n;
        if offset <= self.hashed && end > self.hashed {
            self.hasher.update(&buf[(self.hashed - offset) as usize..]);
            self.hashed = end;
        }
        Ok(buf)
    }

    /// Hash the bytes from where hashing stopped up to `to`.
    fn hash_to(&mut self, to: u64) -> io::Result<()> {
        let to = to.min(self.len);
        let mut buf = Vec::new();
        while self.hashed < to {
            let n = (to - self.hashed).min(HASH_STEP);
            buf.resize(n as usize, 0);
            self.file.read_exact_at(&mut buf, self.hashed)?;
            self.hasher.update(&buf);
            self.hashed += n;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<PackId> {
        self.hash_to(self.len)?;
        Ok(PackId(*self.hasher.finalize().as_bytes()))
    }

    /// The record header at `start` and where its payload starts, or what is wrong with it.
    pub fn header(&mut self, start: u64) -> std::result::Result<(RecordHeader, u64), String> {
        let left = self.len - start;
        if left < 20 {
            return Err(format!("{left} bytes left, too few for a record"));
        }
        let mut buf = self.read_at(start, 20).map_err(|e| e.to_string())?;
        let need = RecordHeader::needed(&buf)
            .map_err(|e| reason(&e))?
            .expect("the fixed part is read");
        if need as u64 > left {
            return Err("the record header runs past the end of the pack".into());
        }
        buf.extend(
            self.read_at(start + 20, need as u64 - 20)
                .map_err(|e| e.to_string())?,
        );
        let (h, used) = RecordHeader::decode(&buf)
            .map_err(|e| reason(&e))?
            .expect("the whole header is read");
        let payload = start + used as u64;
        if payload + h.stored_len as u64 > self.len {
            return Err("the record runs past the end of the pack".into());
        }
        Ok((h, payload))
    }
}
