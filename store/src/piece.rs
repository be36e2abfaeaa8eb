//! Pieces: runs of consecutive stream items, the unit of a snapshot's recipe.
//!
//! A stream is a sequence of items, each the raw bytes before a payload (padding, header
//! blocks) plus the payload as a list of chunks; the trailer is a last item whose payload is
//! everything after the end-of-archive block. Items are grouped into pieces at cut points chosen
//! by member paths, so an unchanged run of a tree makes the same piece in every snapshot and is
//! stored once. A changed piece is stored as a zstd delta against the parent snapshot's piece
//! with the same first path (its anchor): fresh PAX atimes cost bytes, not copies.

use crate::encoding::{put_bytes, put_varint, Decoder};
use crate::error::Result;
use crate::list::ListRef;

const PIECE_VERSION: u8 = 1;
/// One path in this many ends a piece (on average).
const PIECE_SPAN: u64 = 32;
/// Bounds on a piece so memory stays small whatever the stream holds.
const MAX_PIECE_BYTES: usize = 256 << 10;
const MAX_PIECE_ITEMS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub head: Vec<u8>,
    pub payload_len: u64,
    pub chunks: ListRef,
}

impl Item {
    /// Stream bytes this item stands for.
    pub fn stream_len(&self) -> u64 {
        self.head.len() as u64 + self.payload_len
    }
}

pub fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(PIECE_VERSION);
    put_varint(&mut out, items.len() as u64);
    for item in items {
        put_bytes(&mut out, &item.head);
        put_varint(&mut out, item.payload_len);
        item.chunks.encode(&mut out);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Item>> {
    let mut d = Decoder::new(bytes, "piece");
    d.expect_version(PIECE_VERSION)?;
    let n = d.varint()? as usize;
    let mut items = Vec::with_capacity(n.min(MAX_PIECE_ITEMS));
    for _ in 0..n {
        items.push(Item {
            head: d.bytes()?.to_vec(),
            payload_len: d.varint()?,
            chunks: ListRef::decode(&mut d)?,
        });
    }
    d.finish()?;
    Ok(items)
}

/// A path's anchor: a stable 64-bit name for "the piece that starts here".
pub fn anchor(path: &[u8]) -> u64 {
    u64::from_le_bytes(
        blake3::hash(path).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// Accumulates items until a cut point.
#[derive(Default)]
pub struct PieceBuffer {
    items: Vec<Item>,
    anchor: u64,
    bytes: usize,
}

/// A full piece, ready to store.
pub struct Cut {
    pub encoded: Vec<u8>,
    pub anchor: u64,
    pub stream_len: u64,
}

impl PieceBuffer {
    /// Add an item; returns a piece when this item ends one.
    pub fn push(&mut self, item: Item, path: &[u8]) -> Option<Cut> {
        let a = anchor(path);
        if self.items.is_empty() {
            self.anchor = a;
        }
        self.bytes += item.head.len() + 64;
        self.items.push(item);
        let cut = a.is_multiple_of(PIECE_SPAN)
            || self.bytes >= MAX_PIECE_BYTES
            || self.items.len() >= MAX_PIECE_ITEMS;
        cut.then(|| self.take())
    }

    /// The last, partial piece, if any.
    pub fn finish(mut self) -> Option<Cut> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Cut {
        let items = std::mem::take(&mut self.items);
        self.bytes = 0;
        Cut {
            encoded: encode(&items),
            anchor: self.anchor,
            stream_len: items.iter().map(Item::stream_len).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use crate::list::Entry;

    #[test]
    fn pieces_round_trip() {
        let items = vec![
            Item {
                head: vec![1; 1024],
                payload_len: 5,
                chunks: ListRef::Inline(vec![Entry {
                    id: ChunkId::of(b"x"),
                    len: 5,
                    aux: 0,
                }]),
            },
            Item {
                head: vec![],
                payload_len: 0,
                chunks: ListRef::Inline(vec![]),
            },
        ];
        assert_eq!(decode(&encode(&items)).unwrap(), items);
        let mut bad = encode(&items);
        bad.truncate(bad.len() - 1);
        assert!(decode(&bad).is_err());
    }
}
