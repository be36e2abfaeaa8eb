//! The pack file format (version 1). A pack is a header followed by self-describing records;
//! every record names the chunks it holds, so the index can be rebuilt from packs alone.
//!
//! ```text
//! pack    = "CELLARPK" version:u32le reserved:u32le nonce:16 record*
//! record  = "CREC" kind:u8 codec:u8 reserved:u16le count:u32le raw_len:u32le stored_len:u32le
//!           [base:32 if codec = zstd-delta]
//!           count * (id:32 chunk_kind:u8 len:u32le)
//!           check:8 (first bytes of blake3 of everything above)
//!           payload:stored_len
//! ```
//! A record's chunks are the consecutive slices of its decoded payload, in order.

use crate::error::{Error, Result};
use crate::ids::ChunkId;

pub const PACK_MAGIC: &[u8; 8] = b"CELLARPK";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_LEN: u64 = 32;
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"CREC";
const FIXED_LEN: usize = 20;
const ENTRY_LEN: usize = 37;
const CHECK_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Chunks (data or metadata objects).
    Chunks = 0,
    /// A committed snapshot's record (one entry: its id and length).
    Snapshot = 1,
    /// A tombstone: the snapshots named by its entries (32-byte ids as payload) were forgotten.
    Forget = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Zstd = 1,
    /// zstd with the base object's bytes as raw content before the frame (a prefix, or a
    /// dictionary without zstd's header: the same to a decoder).
    ZstdDelta = 2,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Codec::None,
            1 => Codec::Zstd,
            2 => Codec::ZstdDelta,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// File (member payload) bytes.
    Data = 0,
    /// A run of stream items: raw header bytes plus chunk lists.
    Piece = 1,
    /// An interior node of a content-defined list.
    Node = 2,
    /// A snapshot record.
    Snapshot = 3,
    /// A directory record of a snapshot's tree.
    Dir = 4,
}

impl ChunkKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => ChunkKind::Data,
            1 => ChunkKind::Piece,
            2 => ChunkKind::Node,
            3 => ChunkKind::Snapshot,
            4 => ChunkKind::Dir,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: ChunkId,
    pub kind: ChunkKind,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub codec: Codec,
    pub raw_len: u32,
    pub stored_len: u32,
    pub base: Option<ChunkId>,
    pub entries: Vec<Entry>,
}

impl RecordHeader {
    /// An uncompressed record of snapshot ids (a snapshot record, or forget tombstones): one
    /// entry per id, each `len` bytes of the payload.
    pub fn snapshots(kind: RecordKind, ids: &[ChunkId], len: u32) -> Self {
        RecordHeader {
            kind,
            codec: Codec::None,
            raw_len: len * ids.len() as u32,
            stored_len: len * ids.len() as u32,
            base: None,
            entries: ids
                .iter()
                .map(|&id| Entry {
                    id,
                    kind: ChunkKind::Snapshot,
                    len,
                })
                .collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(RECORD_MAGIC);
        out.push(self.kind as u8);
        out.push(self.codec as u8);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        if let Some(base) = &self.base {
            out.extend_from_slice(&base.0);
        }
        for e in &self.entries {
            out.extend_from_slice(&e.id.0);
            out.push(e.kind as u8);
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        let check = blake3::hash(&out);
        out.extend_from_slice(&check.as_bytes()[..CHECK_LEN]);
        out
    }

    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + if self.base.is_some() { 32 } else { 0 }
            + self.entries.len() * ENTRY_LEN
            + CHECK_LEN
    }

    /// Decode a header from the start of `buf`. `Ok(None)` means more bytes are needed: the
    /// result of [`RecordHeader::needed`] says how many.
    pub fn decode(buf: &[u8]) -> Result<Option<(RecordHeader, usize)>> {
        let Some(need) = Self::needed(buf)? else {
            return Ok(None);
        };
        if buf.len() < need {
            return Ok(None);
        }
        let check = blake3::hash(&buf[..need - CHECK_LEN]);
        if check.as_bytes()[..CHECK_LEN] != buf[need - CHECK_LEN..need] {
            return Err(Error::corrupt("record header checksum mismatch"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let kind = match buf[4] {
            0 => RecordKind::Chunks,
            1 => RecordKind::Snapshot,
            2 => RecordKind::Forget,
            k => return Err(Error::corrupt(format!("unknown record kind {k}"))),
        };
        let codec = Codec::from_u8(buf[5])
            .ok_or_else(|| Error::corrupt(format!("unknown codec {}", buf[5])))?;
        let count = u32_at(8) as usize;
        let mut pos = FIXED_LEN;
        let base = if codec == Codec::ZstdDelta {
            pos += 32;
            ChunkId::from_slice(&buf[FIXED_LEN..pos])
        } else {
            None
        };
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ChunkId::from_slice(&buf[pos..pos + 32]).expect("32 bytes");
            let kind = ChunkKind::from_u8(buf[pos + 32])
                .ok_or_else(|| Error::corrupt(format!("unknown chunk kind {}", buf[pos + 32])))?;
            let len = u32_at(pos + 33);
            entries.push(Entry { id, kind, len });
            pos += ENTRY_LEN;
        }
        let header = RecordHeader {
            kind,
            codec,
            raw_len: u32_at(12),
            stored_len: u32_at(16),
            base,
            entries,
        };
        if header.entries.iter().map(|e| e.len as u64).sum::<u64>() != header.raw_len as u64 {
            return Err(Error::corrupt("record entries do not add up to its length"));
        }
        Ok(Some((header, need)))
    }

    /// The full header length, once the fixed part is in `buf`.
    pub fn needed(buf: &[u8]) -> Result<Option<usize>> {
        if buf.len() < FIXED_LEN {
            return Ok(None);
        }
        if &buf[..4] != RECORD_MAGIC {
            return Err(Error::corrupt("no record starts here"));
        }
        let count = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) as usize;
        if count > 1 << 20 {
            return Err(Error::corrupt(format!("record claims {count} chunks")));
        }
        let base = if buf[5] == Codec::ZstdDelta as u8 {
            32
        } else {
            0
        };
        Ok(Some(FIXED_LEN + base + count * ENTRY_LEN + CHECK_LEN))
    }
}

/// A pack header. The nonce makes every pack's id unique: two writers that happen to write
/// identical records (concurrent ingests of one stream) must never share a file name, or one
/// discarding its pack could delete the other's.
pub fn pack_header(nonce: [u8; 16]) -> [u8; PACK_HEADER_LEN as usize] {
    let mut h = [0u8; PACK_HEADER_LEN as usize];
    h[..8].copy_from_slice(PACK_MAGIC);
    h[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
    h[16..32].copy_from_slice(&nonce);
    h
}

pub fn check_pack_header(buf: &[u8]) -> Result<()> {
    if buf.len() < PACK_HEADER_LEN as usize || &buf[..8] != PACK_MAGIC {
        return Err(Error::corrupt("not a cellar pack"));
    }
    let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if version > PACK_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: PACK_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn record_headers_round_trip(
            lens in proptest::collection::vec(0u32..100_000, 0..50),
            delta: bool, stored in 0u32..1_000_000, seed: u8,
        ) {
            let entries: Vec<Entry> = lens.iter().enumerate().map(|(i, &len)| Entry {
                id: ChunkId::of(&[seed, i as u8]),
                kind: ChunkKind::Data,
                len,
            }).collect();
            let h = RecordHeader {
                kind: RecordKind::Chunks,
                codec: if delta { Codec::ZstdDelta } else { Codec::Zstd },
                raw_len: lens.iter().sum(),
                stored_len: stored,
                base: delta.then(|| ChunkId::of(b"base")),
                entries,
            };
            let bytes = h.encode();
            prop_assert_eq!(bytes.len(), h.encoded_len());
            let (back, used) = RecordHeader::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(&back, &h);
            // Any single flipped byte is caught, never misread.
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x01;
                prop_assert!(!matches!(RecordHeader::decode(&bad), Ok(Some((ref b, _))) if *b == h));
            }
        }
    }
}
