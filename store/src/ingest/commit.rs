//! The commit: an ingest's packs and snapshot made visible in one transaction, under the
//! commit lock (FORMAT §11 steps 3 to 6).

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::AtomicBool;

use super::hints;
use super::workers::Written;
use super::{index_pack, index_pack_file};
use crate::error::{IoContext, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::layout;
use crate::pack::{PackWriter, RecordHeader, RecordKind};
use crate::snapshot::Snapshot;
use crate::store::Store;

impl Store {
    /// Make the ingest visible: under the commit lock, in one immediate transaction, append
    /// the snapshot record to the last pack, seal that pack while every pack is indexed, and
    /// commit once it is sealed.
    pub(super) fn commit(
        &self,
        mut snap: Snapshot,
        mut written: Written,
        depths: &HashMap<ChunkId, u32>,
        on_wait: &dyn Fn(&str),
        cancel: &AtomicBool,
        lease: &crate::gc::Lease,
    ) -> Result<Snapshot> {
        crate::failpoint::hit("commit:before-lock");
        let _lock = match self.commit_lock_unless(on_wait, cancel) {
            Ok(l) => l,
            Err(e) => {
                written.discard(self.root());
                return Err(e);
            }
        };
        let mut marker = None;
        let result = self.db().immediate(|tx| {
            snap.parent = Store::latest_id_in(tx, &snap.name)?;
            let record = snap.to_record();
            snap.id = SnapshotId(*blake3::hash(&record).as_bytes());
            let mut last = match written.open.take() {
                Some(w) => w,
                None => PackWriter::create(self.root())?,
            };
            let header = RecordHeader::snapshots(
                RecordKind::Snapshot,
                &[ChunkId(snap.id.0)],
                record.len() as u32,
            );
            // On an error the pack stays with `written`, for the caller to discard.
            let appended = last.append(&header, &record).and_then(|()| last.pending());
            let (pending, file) = match appended {
                Ok(p) => p,
                Err(e) => {
                    written.open = Some(last);
                    return Err(e);
                }
            };
            // Killed from here until just before the commit, the ingest leaves this marker,
            // which says the pack is its leftover, not a snapshot an index lost (FORMAT §15.3).
            let path = layout::committing_marker(self.root(), &pending.id);
            if let Err(e) = File::create(&path).at(&path) {
                written.open = Some(last);
                return Err(e);
            }
            marker = Some((path, pending.id));
            crate::failpoint::hit("commit:named");
            let tmp = last.temp_path().to_path_buf();
            // The last pack is synced and renamed to its name (most of the commit's wait on
            // the disk) while every pack's rows go in; the transaction commits only after.
            let (sealed, indexed) = std::thread::scope(|s| {
                let sealing = std::thread::Builder::new()
                    .name("cellar-seal".into())
                    .spawn_scoped(s, move || last.seal())
                    .expect("spawn pack sealer");
                let indexed = (|| {
                    lease.commit_in(tx)?;
                    for pack in &written.sealed {
                        index_pack(self.root(), tx, pack, depths)?;
                    }
                    index_pack_file(tx, file, &tmp, &pending, depths)
                })();
                (sealing.join().expect("pack sealer panicked"), indexed)
            });
            let sealed = sealed?;
            debug_assert_eq!(sealed.id, pending.id, "a pack is named by its bytes");
            written.sealed.push(sealed);
            indexed?;
            crate::failpoint::hit("commit:after-seal");
            hints::mark_trusted_after(tx)?;
            Store::insert_snapshot(tx, &snap)?;
            crate::failpoint::hit("commit:in-transaction");
            // The transaction's pages go to the WAL, uncommitted, and to the disk before the
            // marker goes: a kill from its removal to the commit leaves a snapshot no row
            // names (gc refuses until `repair-index`), so that window is kept to the removal,
            // an fsync of `tmp/`, and the commit's one frame and fsync.
            tx.cache_flush()?;
            sync_wal(self.root())?;
            // Gone for good before the commit: a marker found is of a commit that never began,
            // whatever becomes of the index (a marker outliving its commit would call the pack
            // of a committed snapshot a leftover once a copy of the index from before it were
            // put back).
            if let Some((path, _)) = marker.take() {
                std::fs::remove_file(&path).at(&path)?;
                layout::sync_dir(&self.root().join(layout::TMP_DIR))?;
            }
            Ok(())
        });
        if result.is_err() {
            written.discard(self.root());
            // A seal that failed after its rename left the pack under its name: the marker
            // stays while it does, so gc takes both.
            if let Some((path, id)) = marker {
                let sealed = layout::pack_path(self.root(), &id);
                let _ = std::fs::remove_file(&sealed);
                if !sealed.exists() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        result.map(|()| snap)
    }
}

/// fsync the index's WAL (an fsync through any descriptor of the file writes its data out).
fn sync_wal(root: &std::path::Path) -> Result<()> {
    let wal = crate::db::sibling(&root.join(layout::DB_FILE), "-wal");
    File::open(&wal).and_then(|f| f.sync_data()).at(&wal)
}
