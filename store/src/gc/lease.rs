//! Leases (FORMAT §15.3, §15.4).
//!
//! An ingest holds one from before its first index read until its commit, so gc never sweeps
//! a chunk the ingest may have deduplicated against.
//!
//! A reader (`mount`, a `serve` download, `export`, `restore`, `cat`, `push`) holds one for as
//! long as it reads, and pins each snapshot it reads: gc walks pinned snapshots as if they
//! were never forgotten, so they stay whole until the reader is done, whatever `--grace` says,
//! while everything else is reclaimed as usual.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rusqlite::params;

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// What an ingest's lease says it is (the column's default).
pub(crate) const INGEST: &str = "ingest";

/// The id of a reader's lease on a read-only store, which has no row.
const NO_ROW: i64 = 0;

/// An ingest's lease row; deleted by its commit transaction (`commit_in`), or on drop if the
/// ingest failed. A killed process leaves its row, which gc deletes once the pid is dead.
pub(crate) struct Lease<'s> {
    store: &'s Store,
    id: i64,
    started_epoch: i64,
    released: bool,
}

/// A reader's lease and the snapshots it pins; both go when it is dropped (or, for a killed
/// reader, when gc finds its pid dead).
pub struct ReadLease {
    store: Arc<Store>,
    id: i64,
    /// Pinned already: pinning again would be a write for nothing.
    pinned: Mutex<HashSet<SnapshotId>>,
}

/// A lease as gc found it, for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub pid: i64,
    /// `ingest`, or the reader's command (`mount`, `serve`, `export`, ...).
    pub holder: String,
    /// Unix seconds.
    pub started: i64,
}

impl Store {
    /// An ingest's lease, taken in a short immediate transaction. Call before any index read.
    pub(crate) fn take_lease(&self) -> Result<Lease<'_>> {
        let (id, started_epoch) = self.insert_lease(INGEST)?;
        Ok(Lease {
            store: self,
            id,
            started_epoch,
            released: false,
        })
    }

    /// A reader's lease; `holder` names the reader in gc's report. Pin what it reads with
    /// [`ReadLease::resolve`] or [`ReadLease::pin`] before reading it.
    pub fn read_lease(self: &Arc<Self>, holder: &str) -> Result<ReadLease> {
        // Nothing can forget or collect anything in a read-only store: no row is needed.
        let id = if self.db().read_only() {
            NO_ROW
        } else {
            self.insert_lease(holder)?.0
        };
        Ok(ReadLease {
            store: self.clone(),
            id,
            pinned: Mutex::new(HashSet::new()),
        })
    }

    /// A new lease row: its id and the gc epoch it started in.
    fn insert_lease(&self, holder: &str) -> Result<(i64, i64)> {
        self.db().immediate(|tx| {
            let epoch: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'gc_epoch'", [], |r| {
                    r.get(0)
                })?;
            tx.execute(
                "INSERT INTO leases (pid, started_epoch, started, holder)
                 VALUES (?1, ?2, strftime('%s','now'), ?3)",
                params![std::process::id(), epoch, holder],
            )?;
            Ok((tx.last_insert_rowid(), epoch))
        })
    }

    /// Every lease in the index, oldest first.
    pub(crate) fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let db = self.db();
        let mut stmt = db
            .conn()
            .prepare("SELECT pid, holder, started FROM leases ORDER BY started, id")?;
        let rows = stmt.query_map([], |r| {
            Ok(LeaseInfo {
                pid: r.get(0)?,
                holder: r.get(1)?,
                started: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl ReadLease {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Keep snapshot `id` whole for as long as this lease lives. Fails with `NotFound` if it
    /// has been forgotten already (a pin only holds what is still there).
    pub fn pin(&self, id: &SnapshotId) -> Result<()> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if self.id == NO_ROW || pinned.contains(id) {
            return Ok(());
        }
        if !self.store.pin_snapshot(self.id, id)? {
            return Err(Error::NotFound(format!(
                "snapshot {} was forgotten",
                id.short()
            )));
        }
        pinned.insert(*id);
        Ok(())
    }

    /// `Store::resolve`, then pin what it names. A snapshot forgotten in between is resolved
    /// again (`NAME` may name another one by then).
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        let mut tries = 0;
        loop {
            let snap = self.store.resolve(spec)?;
            match self.pin(&snap.id) {
                Err(Error::NotFound(_)) if tries < 3 => tries += 1,
                other => return other.map(|()| snap),
            }
        }
    }
}

impl Drop for ReadLease {
    fn drop(&mut self) {
        let id = self.id;
        if id == NO_ROW {
            return;
        }
        let _ = self.store.db().immediate(|tx| {
            tx.execute("DELETE FROM pins WHERE lease = ?1", [id])?;
            tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
            Ok(())
        });
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
