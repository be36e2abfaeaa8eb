//! Forgetting snapshots (`rm`, and `prune` once `policy.rs` has chosen).
//!
//! Forgetting writes a tombstone record to a pack before deleting the index rows, so an index
//! rebuilt from the packs forgets the same snapshots. The data stays until `gc` reclaims it.
//!
//! The forget commits with its index transaction: every id goes in one transaction, so a kill
//! leaves either all of them forgotten or none. A kill between the seal and that commit leaves
//! a sealed tombstone no index row names (FORMAT §15.5): the snapshots stay listed, and the
//! unindexed pack is an orphan gc deletes after its grace period. Until then `repair-index`
//! would honour the tombstone (it cannot tell it was never committed); forgetting again is
//! idempotent, so rerunning the killed `rm`/`prune` makes the index and the packs agree.

use rusqlite::params;

use crate::error::Result;
use crate::ids::{ChunkId, SnapshotId};
use crate::ingest::index_pack;
use crate::pack::{PackWriter, RecordHeader, RecordKind};
use crate::store::Store;

impl Store {
    /// Forget `ids` (committed snapshots). Takes the commit lock for one short step.
    pub fn forget(&self, ids: &[SnapshotId], on_wait: &dyn Fn(&str)) -> Result<()> {
        // Refused on a read-only store even with nothing to forget: a prune that would drop
        // nothing today is still a writer, and should fail as it will on the day it would.
        self.db().writable()?;
        self.db().not_full()?;
        if ids.is_empty() {
            return Ok(());
        }
        let _lock = self.commit_lock(on_wait)?;
        let payload: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        let mut pack = PackWriter::create(self.root())?;
        let ids_as_chunks: Vec<ChunkId> = ids.iter().map(|id| ChunkId(id.0)).collect();
        pack.append(
            &RecordHeader::snapshots(RecordKind::Forget, &ids_as_chunks, 32),
            &payload,
        )?;
        crate::failpoint::hit("forget:before-seal");
        let sealed = pack.seal()?;
        crate::failpoint::hit("forget:after-tombstone");
        let mut db = self.db();
        db.immediate(|tx| {
            index_pack(self.root(), tx, &sealed, &Default::default())?;
            // An id already gone (forgotten by a concurrent or an earlier, killed run) is no
            // error: forgetting is idempotent.
            let mut stmt = tx.prepare_cached("DELETE FROM snapshots NOT INDEXED WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id.hex()])?;
            }
            crate::failpoint::hit("forget:in-transaction");
            Ok(())
        })
    }
}
