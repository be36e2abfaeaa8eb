//! The new pack a salvage writes: objects grouped into frames as an ingest groups them, and
//! the records that check out.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;

use super::frames::read_at_most;
use crate::error::{Error, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::pack::compress::{frame_compressor, FRAME_TARGET};
use crate::pack::format::Entry;
use crate::pack::{ChunkKind, Codec, PackWriter, RecordHeader, RecordKind};
use crate::snapshot::Snapshot;
use crate::store::Store;

/// Entries in one frame of the new pack, at most (as an ingest writes them).
const FRAME_ENTRIES: usize = 4096;

/// The new pack being written: objects grouped into frames as an ingest groups them (data
/// apart from metadata), records as they are.
pub(super) struct Salvager {
    pub(super) writer: PackWriter,
    z: zstd::bulk::Compressor<'static>,
    data: Pending,
    meta: Pending,
    seen: HashSet<ChunkId>,
    pub(super) objects: u64,
    pub(super) records: u64,
    pub(super) rewritten: Vec<SnapshotId>,
}

#[derive(Default)]
struct Pending {
    raw: Vec<u8>,
    entries: Vec<Entry>,
}

impl Salvager {
    pub(super) fn new(store: &Store) -> Result<Self> {
        Ok(Salvager {
            writer: PackWriter::create(store.root())?,
            z: frame_compressor().map_err(Error::Output)?,
            data: Pending::default(),
            meta: Pending::default(),
            seen: HashSet::new(),
            objects: 0,
            records: 0,
            rewritten: Vec::new(),
        })
    }

    pub(super) fn object(&mut self, id: ChunkId, kind: ChunkKind, bytes: &[u8]) -> Result<()> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        self.objects += 1;
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
        Ok(())
    }

    pub(super) fn flush(&mut self, data: bool) -> Result<()> {
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
        self.writer.append(&header, &payload)
    }

    /// A snapshot or forget record found in the damaged pack, copied if it checks out.
    pub(super) fn record(
        &mut self,
        file: &File,
        h: &RecordHeader,
        payload_offset: u64,
        unheld: &mut BTreeMap<SnapshotId, Snapshot>,
    ) -> Result<()> {
        match h.kind {
            RecordKind::Snapshot => {
                let [entry] = &h.entries[..] else {
                    return Ok(());
                };
                let mut payload = vec![0u8; h.stored_len as usize];
                let got = read_at_most(file, &mut payload, payload_offset);
                if h.codec != Codec::None
                    || got < payload.len()
                    || ChunkId::of(&payload) != entry.id
                {
                    return Ok(());
                }
                let sid = SnapshotId(entry.id.0);
                unheld.remove(&sid);
                self.snapshot(sid, &payload)
            }
            // The header's check covers the ids: the payload repeats them.
            RecordKind::Forget => {
                let ids: Vec<ChunkId> = h.entries.iter().map(|e| e.id).collect();
                let payload: Vec<u8> = ids.iter().flat_map(|i| i.0).collect();
                self.records += 1;
                self.writer.append(
                    &RecordHeader::snapshots(RecordKind::Forget, &ids, 32),
                    &payload,
                )
            }
            RecordKind::Chunks => Ok(()),
        }
    }

    pub(super) fn snapshot(&mut self, id: SnapshotId, record: &[u8]) -> Result<()> {
        self.records += 1;
        let header =
            RecordHeader::snapshots(RecordKind::Snapshot, &[ChunkId(id.0)], record.len() as u32);
        self.writer.append(&header, record)
    }
}
