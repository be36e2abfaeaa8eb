//! Little binary encoding helpers for the versioned metadata objects (varints, byte strings).

use crate::error::{Error, Result};
use crate::ids::ChunkId;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads what the `put_*` functions wrote; any inconsistency is store damage.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Decoder { buf, pos: 0, what }
    }

    fn damaged(&self, why: &str) -> Error {
        Error::corrupt(format!("{} at byte {}: {why}", self.what, self.pos))
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.damaged("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.damaged("varint too long"))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.damaged("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| self.damaged("length too large"))?)
    }

    pub fn chunk_id(&mut self) -> Result<ChunkId> {
        Ok(ChunkId::from_slice(self.take(32)?).expect("32 bytes"))
    }

    /// The version byte, refused if it is 0 or newer than `supported`.
    pub fn expect_version(&mut self, supported: u8) -> Result<u8> {
        let v = self.u8()?;
        if v == 0 || v > supported {
            return Err(Error::UnsupportedVersion {
                found: v as u32,
                supported: supported as u32,
            });
        }
        Ok(v)
    }

    pub fn finish(self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.damaged("trailing bytes"))
        }
    }
}
