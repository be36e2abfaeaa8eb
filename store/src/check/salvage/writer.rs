//! The new packs a salvage writes: objects grouped into frames as an ingest groups them (data
//! apart from metadata), and snapshot and forget records.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::layout;
use crate::pack::compress::{frame_compressor, FRAME_TARGET};
use crate::pack::format::Entry;
use crate::pack::{ChunkKind, Codec, PackWriter, RecordHeader, RecordKind, SealedPack};
use crate::store::Store;

/// Entries in one frame of a new pack, at most (as an ingest writes them).
const FRAME_ENTRIES: usize = 4096;

/// A new pack is sealed once it is this long, as an ingest seals its packs.
const PACK_TARGET: u64 = 32 << 20;

pub(super) struct Salvager<'s> {
    store: &'s Store,
    writer: Option<PackWriter>,
    sealed: Vec<SealedPack>,
    z: zstd::bulk::Compressor<'static>,
    data: Pending,
    meta: Pending,
    seen: HashSet<ChunkId>,
}

#[derive(Default)]
struct Pending {
    raw: Vec<u8>,
    entries: Vec<Entry>,
}

impl<'s> Salvager<'s> {
    pub(super) fn new(store: &'s Store) -> Result<Self> {
        Ok(Salvager {
            store,
            writer: None,
            sealed: Vec::new(),
            z: frame_compressor().map_err(Error::Output)?,
            data: Pending::default(),
            meta: Pending::default(),
            seen: HashSet::new(),
        })
    }

    /// Add an object (checked against its id by the caller); false if one with its id was
    /// added already.
    pub(super) fn object(&mut self, id: ChunkId, kind: ChunkKind, bytes: &[u8]) -> Result<bool> {
        if !self.seen.insert(id) {
            return Ok(false);
        }
        let data = kind == ChunkKind::Data;
        let p = if data { &mut self.data } else { &mut self.meta };
        p.raw.extend_from_slice(bytes);
        p.entries.push(Entry {
            id,
            kind,
            len: bytes.len() as u32,
        });
        if p.raw.len() >= FRAME_TARGET || p.entries.len() >= FRAME_ENTRIES {
            self.flush(data)?;
        }
        Ok(true)
    }

    fn flush(&mut self, data: bool) -> Result<()> {
        let p = std::mem::take(if data { &mut self.data } else { &mut self.meta });
        if p.entries.is_empty() {
            return Ok(());
        }
        let z = self.z.compress(&p.raw).map_err(Error::Output)?;
        let (codec, payload) = if z.len() < p.raw.len() {
            (Codec::Zstd, z)
        } else {
            (Codec::None, p.raw)
        };
        let header = RecordHeader {
            kind: RecordKind::Chunks,
            codec,
            raw_len: p.entries.iter().map(|e| e.len).sum(),
            stored_len: payload.len() as u32,
            base: None,
            entries: p.entries,
        };
        self.append(&header, &payload)
    }

    /// A snapshot record: its payload hashes to `id`.
    pub(super) fn snapshot(&mut self, id: SnapshotId, record: &[u8]) -> Result<()> {
        let header =
            RecordHeader::snapshots(RecordKind::Snapshot, &[ChunkId(id.0)], record.len() as u32);
        self.append(&header, record)
    }

    /// A forget record (tombstone) of `ids`.
    pub(super) fn forget(&mut self, ids: &[SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = ids.iter().map(|s| ChunkId(s.0)).collect();
        let payload: Vec<u8> = ids.iter().flat_map(|i| i.0).collect();
        self.append(
            &RecordHeader::snapshots(RecordKind::Forget, &ids, 32),
            &payload,
        )
    }

    fn append(&mut self, header: &RecordHeader, payload: &[u8]) -> Result<()> {
        let writer = match &mut self.writer {
            Some(w) => w,
            none => none.insert(PackWriter::create(self.store.root())?),
        };
        writer.append(header, payload)?;
        if writer.len() >= PACK_TARGET {
            let full = self.writer.take().expect("written to");
            self.sealed.push(full.seal()?);
        }
        Ok(())
    }

    /// The ids of every object added, taken (for the switch, once all are added).
    pub(super) fn take_added(&mut self) -> HashSet<ChunkId> {
        std::mem::take(&mut self.seen)
    }

    /// Write what is pending and seal the last pack: every pack written, all sealed.
    pub(super) fn finish(mut self) -> Result<Vec<SealedPack>> {
        let done = self.flush(true).and_then(|()| self.flush(false));
        if let Err(e) = done {
            self.discard();
            return Err(e);
        }
        if let Some(w) = self.writer.take() {
            match w.seal() {
                Ok(sealed) => self.sealed.push(sealed),
                Err(e) => {
                    self.discard();
                    return Err(e);
                }
            }
        }
        Ok(std::mem::take(&mut self.sealed))
    }

    /// Throw away what was written: the pack being written, and the packs sealed (no index
    /// row names them yet).
    pub(super) fn discard(&mut self) {
        if let Some(w) = self.writer.take() {
            w.discard();
        }
        for s in self.sealed.drain(..) {
            let _ = std::fs::remove_file(layout::pack_path(self.store.root(), &s.id));
        }
    }
}
