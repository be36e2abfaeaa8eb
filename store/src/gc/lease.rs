//! Ingest leases (FORMAT §15.3): an ingest holds one from before its first index read until
//! its commit, so gc never sweeps a chunk the ingest may have deduplicated against.

use rusqlite::params;

use crate::error::Result;
use crate::store::Store;

/// A lease row; deleted by the commit transaction (`commit_in`), or on drop if the ingest
/// failed. A killed ingest leaves its row, which gc deletes once the pid is dead.
pub(crate) struct Lease<'s> {
    store: &'s Store,
    id: i64,
    started_epoch: i64,
    released: bool,
}

impl Store {
    /// Take a lease in a short immediate transaction. Call before any index read.
    pub(crate) fn take_lease(&self) -> Result<Lease<'_>> {
        let (id, started_epoch) = self.db().immediate(|tx| {
            let epoch: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'gc_epoch'", [], |r| {
                    r.get(0)
                })?;
            tx.execute(
                "INSERT INTO leases (pid, started_epoch, started)
                 VALUES (?1, ?2, strftime('%s','now'))",
                params![std::process::id(), epoch],
            )?;
            Ok((tx.last_insert_rowid(), epoch))
        })?;
        Ok(Lease {
            store: self,
            id,
            started_epoch,
            released: false,
        })
    }
}

impl Lease<'_> {
    /// In the commit transaction, before indexing: move back into `chunks` every chunk gc
    /// condemned after this lease began (the ingest may reference it), then end the lease.
    pub(crate) fn commit_in(&self, tx: &rusqlite::Transaction) -> Result<()> {
        tx.execute(
            "INSERT OR IGNORE INTO chunks (id, frame, offset, len, kind, depth)
             SELECT id, frame, offset, len, kind, depth FROM condemned WHERE epoch > ?1",
            [self.started_epoch],
        )?;
        tx.execute(
            "DELETE FROM condemned WHERE epoch > ?1",
            [self.started_epoch],
        )?;
        tx.execute("DELETE FROM leases WHERE id = ?1", [self.id])?;
        Ok(())
    }

    /// The commit transaction that ran `commit_in` has committed.
    pub(crate) fn committed(mut self) {
        self.released = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.released {
            let id = self.id;
            let _ = self.store.db().immediate(|tx| {
                tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
                Ok(())
            });
        }
    }
}
