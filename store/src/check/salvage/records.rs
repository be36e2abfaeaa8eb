//! The snapshot and forget records a salvage must keep in the packs: `repair-index` rebuilds
//! the list of snapshots from them, so a listed snapshot must keep its record and a forgotten
//! one its tombstone, wherever the damage took them.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use rusqlite::OptionalExtension;

use super::frames::read_at_most;
use super::writer::Salvager;
use super::SalvageReport;
use crate::error::Result;
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::pack::{Codec, RecordHeader, RecordKind};
use crate::store::Store;

/// Where a damaged pack stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The index names it.
    Indexed,
    /// The index does not name it (an index rebuilt without it, or an orphan).
    Unindexed,
    /// The last pack of an ingest killed while committing.
    Abandoned,
    /// A pack an earlier salvage switched the index away from (`layout::retired_mark`), found
    /// in `packs/` again.
    Retired,
}

/// Which snapshots have records, and which tombstones, outside the damaged packs.
pub(super) struct Records {
    /// Snapshots whose records a sound indexed pack holds.
    held: HashSet<SnapshotId>,
    /// Snapshots a forget record in a sound indexed pack names.
    forgotten: HashSet<SnapshotId>,
    /// Snapshot records copied from damaged packs, and which of those packs were indexed.
    carried: HashSet<SnapshotId>,
    carried_from_indexed: HashSet<SnapshotId>,
}

impl Records {
    /// Read the records of every pack in `files` but those in `skip`. Only indexed packs
    /// count: an unindexed one is an orphan (a killed ingest's, repack's or salvage's) that
    /// gc may delete.
    pub(super) fn in_sound_packs(
        store: &Store,
        files: &[(PackId, PathBuf)],
        skip: &HashSet<PackId>,
    ) -> Result<Records> {
        let mut r = Records {
            held: HashSet::new(),
            forgotten: HashSet::new(),
            carried: HashSet::new(),
            carried_from_indexed: HashSet::new(),
        };
        let db = store.db();
        let mut indexed = db.conn().prepare("SELECT 1 FROM packs WHERE name = ?1")?;
        for (id, path) in files.iter().filter(|(id, _)| !skip.contains(id)) {
            if indexed
                .query_row([&id.0[..]], |_| Ok(()))
                .optional()?
                .is_none()
            {
                continue;
            }
            // A pack that does not scan cleanly keeps what comes before its damage; what lies
            // past it is written again (a second copy of a record is harmless).
            let _ = crate::pack::scan(path, |rec| {
                let ids = rec.header.entries.iter().map(|e| SnapshotId(e.id.0));
                match rec.header.kind {
                    RecordKind::Snapshot => r.held.extend(ids),
                    RecordKind::Forget => r.forgotten.extend(ids),
                    RecordKind::Chunks => {}
                }
                Ok(())
            });
        }
        Ok(r)
    }

    /// Copy the records found in a damaged pack that check out; how many were copied.
    ///
    /// From a pack the index does not name, only snapshot records are copied, and not from
    /// a retired pack (its snapshots may have been forgotten since, their tombstones dropped)
    /// nor from the last pack of an ingest killed while committing (a `committing` marker
    /// names it):
    /// such a pack is an orphan gc deletes, and what it holds must not become lasting. A
    /// tombstone in one is of an `rm` that did not commit; a snapshot record in one that no
    /// marker names is of a committed snapshot an index lost, which `repair-index` restores.
    pub(super) fn carry(
        &mut self,
        file: &File,
        records: &[(RecordHeader, u64)],
        source: Source,
        out: &mut Salvager,
    ) -> Result<u64> {
        let indexed = source == Source::Indexed;
        if matches!(source, Source::Abandoned | Source::Retired) {
            return Ok(0);
        }
        let mut copied = 0;
        for (h, payload_offset) in records {
            let ids: Vec<SnapshotId> = h.entries.iter().map(|e| SnapshotId(e.id.0)).collect();
            match (h.kind, &ids[..]) {
                (RecordKind::Snapshot, &[sid]) if h.codec == Codec::None => {
                    let mut payload = vec![0u8; h.stored_len as usize];
                    let got = read_at_most(file, &mut payload, *payload_offset);
                    if got < payload.len() || ChunkId::of(&payload).0 != sid.0 {
                        continue;
                    }
                    if indexed {
                        self.carried_from_indexed.insert(sid);
                    }
                    if self.held.contains(&sid) || !self.carried.insert(sid) {
                        continue;
                    }
                    out.snapshot(sid, &payload)?;
                    copied += 1;
                }
                // The header's check covers the ids; the payload only repeats them.
                (RecordKind::Forget, _) if indexed => {
                    let new: Vec<SnapshotId> = ids
                        .into_iter()
                        .filter(|s| self.forgotten.insert(*s))
                        .collect();
                    if !new.is_empty() {
                        out.forget(&new)?;
                        copied += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(copied)
    }

    /// Once every damaged pack is read: write the records of listed snapshots no pack holds
    /// any longer (from their rows, which must hash to their ids), and a tombstone for each
    /// forgotten snapshot whose record stays and whose tombstone is gone. A record in a pack
    /// the index names is of a committed snapshot, so one the index does not list was
    /// forgotten (an unindexed pack's record may be of an ingest killed before its commit,
    /// which `repair-index` restores: it gets no tombstone).
    pub(super) fn finish(
        &mut self,
        store: &Store,
        out: &mut Salvager,
        report: &mut SalvageReport,
    ) -> Result<()> {
        let listed: HashSet<SnapshotId> = store.list(None)?.iter().map(|s| s.id).collect();
        for snap in store.list(None)? {
            if self.held.contains(&snap.id) || self.carried.contains(&snap.id) {
                continue;
            }
            if let Some(record) = snap.record_for_id() {
                out.snapshot(snap.id, &record)?;
                report.rewritten.push(snap.id);
            }
        }
        let mut lost: Vec<SnapshotId> = self
            .held
            .iter()
            .chain(&self.carried_from_indexed)
            .filter(|s| !listed.contains(s) && !self.forgotten.contains(s))
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        lost.sort();
        out.forget(&lost)?;
        report.tombstones = lost;
        Ok(())
    }
}
