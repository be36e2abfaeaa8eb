//! Leases (FORMAT §15.3, §15.4).
//!
//! An ingest holds one from before its first index read until its commit, so gc never sweeps
//! a chunk the ingest may have deduplicated against.
//!
//! A reader (`mount`, a `serve` download, `export`, `restore`, `cat`, `push`) holds one for as
//! long as it reads, and pins each snapshot it reads: gc walks pinned snapshots as if they
//! were never forgotten, so they stay whole until the reader is done, whatever `--grace` says,
//! while everything else is reclaimed as usual.
//!
//! Lease and pin rows matter only while their process lives, which a power failure ends too:
//! they are committed without waiting for the disk (`Db::immediate_unsynced`), which spares
//! an ingest one fsync of the WAL before its first read, and a reader one per pin.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::params;

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::process::Owner;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// What an ingest's lease says it is (the column's default).
pub(crate) const INGEST: &str = "ingest";

/// An ingest's lease row; deleted by its commit transaction (`commit_in`), or on drop if the
/// ingest failed. A killed process leaves its row, which gc deletes once the process is gone
/// (`Owner::alive`: not just its pid, which another process may have by then).
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
    holder: String,
    /// On a read-only store nothing can forget or collect anything: no row is needed. Set too
    /// once a row could not be written for want of space (`without_room`), and once the
    /// lease has ended (`end`).
    read_only: AtomicBool,
    /// The lease row, written with the first pin (so a reader that pins one snapshot commits
    /// once to begin and once to end). Held across each pin's or unpin's transaction, so they
    /// happen one at a time.
    row: Mutex<Option<i64>>,
    /// Pinned already: pinning again would be a write for nothing. Its own lock, so checking
    /// a snapshot pinned long ago never waits for another one's pin to commit.
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
    /// Forgotten snapshots it pins: what it keeps gc from taking.
    pub keeps_forgotten: u64,
    /// The process beyond its pid (`leases.process`; `None` in rows of older writers).
    process: Option<String>,
}

impl LeaseInfo {
    /// Whether the process that holds the lease still runs (`Owner::alive`).
    pub(crate) fn alive(&self) -> bool {
        Owner::of_lease(self.pid, self.process.as_deref()).alive()
    }
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
    /// [`ReadLease::resolve`] or [`ReadLease::pin`] before reading it (the first pin writes
    /// the lease's row: nothing is written before).
    pub fn read_lease(self: &Arc<Self>, holder: &str) -> ReadLease {
        ReadLease {
            store: self.clone(),
            holder: holder.to_string(),
            read_only: AtomicBool::new(self.db().read_only()),
            row: Mutex::new(None),
            pinned: Mutex::new(HashSet::new()),
        }
    }

    /// A new lease row: its id and the gc epoch it started in.
    fn insert_lease(&self, holder: &str) -> Result<(i64, i64)> {
        self.db()
            .immediate_unsynced(|tx| insert_lease_in(tx, holder))
    }

    /// Every lease in the index, oldest first.
    pub(crate) fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let db = self.db();
        let mut stmt = db.conn().prepare(
            "SELECT pid, holder, started,
                    (SELECT COUNT(*) FROM pins p
                     WHERE p.lease = l.id AND p.id NOT IN (SELECT id FROM snapshots)),
                    process
             FROM leases l ORDER BY started, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(LeaseInfo {
                pid: r.get(0)?,
                holder: r.get(1)?,
                started: r.get(2)?,
                keeps_forgotten: r.get::<_, i64>(3)? as u64,
                process: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl ReadLease {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Write the lease's row now rather than with the first pin, for a reader that reads
    /// through the index for as long as it lives (a mount of every snapshot, which may list
    /// them for hours without going into one): `repair-index`, which would move that index
    /// aside under it, then finds the reader and refuses.
    pub fn register(&self) -> Result<()> {
        if self.unleased() {
            return Ok(());
        }
        let mut row = self.row.lock().unwrap_or_else(|e| e.into_inner());
        if row.is_none() && !self.unleased() {
            match self
                .store
                .db()
                .immediate_unsynced(|tx| insert_lease_in(tx, &self.holder))
            {
                Ok((id, _)) => *row = Some(id),
                Err(e) => return self.without_room(e),
            }
        }
        Ok(())
    }

    fn unleased(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// A row that could not be written because the store's filesystem is full (a store whose
    /// `-shm` the writer that filled it left behind opens for writing, `db.rs`): the reader
    /// reads on without a lease, as it does on a store opened read-only for a full disk, since
    /// a full disk is where a restore is needed most. Nothing else can commit there either
    /// until space is freed (`rm`, `prune` and `gc` refuse a full disk), but a gc already
    /// running could take what the reader reads, which then fails, naming it, rather than
    /// reading wrong bytes. Any other error is the caller's.
    fn without_room(&self, e: Error) -> Result<()> {
        if e.is_out_of_space() && crate::db::on_full_fs(self.store.root()) {
            self.read_only.store(true, Ordering::Relaxed);
            Ok(())
        } else {
            Err(e)
        }
    }

    /// How many snapshots this lease pins.
    pub fn pinned(&self) -> usize {
        self.pinned_set().len()
    }

    /// Keep snapshot `id` whole for as long as this lease lives. Fails with `NotFound` if it
    /// has been forgotten already (a pin only holds what is still there).
    pub fn pin(&self, id: &SnapshotId) -> Result<()> {
        if self.unleased() || self.pinned_set().contains(id) {
            return Ok(());
        }
        let mut row = self.row.lock().unwrap_or_else(|e| e.into_inner());
        if self.unleased() || self.pinned_set().contains(id) {
            return Ok(()); // by another thread, or the lease ended, while this one waited
        }
        let written = self.store.db().immediate_unsynced(|tx| {
            let lease = match *row {
                Some(lease) => lease,
                None => insert_lease_in(tx, &self.holder)?.0,
            };
            Ok((lease, Store::pin_in(tx, lease, id)?))
        });
        let (lease, pinned) = match written {
            Ok(written) => written,
            Err(e) => return self.without_room(e),
        };
        *row = Some(lease);
        if !pinned {
            return Err(Error::NotFound(format!(
                "snapshot {} was forgotten",
                id.short()
            )));
        }
        self.pinned_set().insert(*id);
        Ok(())
    }

    /// Stop keeping snapshot `id` (the reader is done with it; reading it again needs a new
    /// pin, which fails if it has been forgotten meanwhile).
    pub fn unpin(&self, id: &SnapshotId) {
        let row = self.row.lock().unwrap_or_else(|e| e.into_inner());
        if !self.pinned_set().remove(id) {
            return;
        }
        if let Some(lease) = *row {
            // Left in place if this fails: the pin then keeps the snapshot a while longer,
            // until the lease ends (a new pin of it is a no-op).
            let _ = self.store.db().immediate_unsynced(|tx| {
                tx.execute(
                    "DELETE FROM pins WHERE lease = ?1 AND id = ?2",
                    params![lease, id.hex()],
                )?;
                Ok(())
            });
        }
    }

    fn pinned_set(&self) -> std::sync::MutexGuard<'_, HashSet<SnapshotId>> {
        self.pinned.lock().unwrap_or_else(|e| e.into_inner())
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

impl ReadLease {
    /// End the lease while it is still shared: for a reader about to exit with other threads
    /// holding it (a mount whose files are still open when a signal stops it), which `Drop`
    /// would never reach. Nothing is pinned after this; a later pin is a no-op, as on a store
    /// opened read-only.
    pub fn end(&self) {
        let mut row = self.row.lock().unwrap_or_else(|e| e.into_inner());
        self.read_only.store(true, Ordering::Relaxed);
        self.pinned_set().clear();
        if let Some(id) = row.take() {
            let _ = self.store.db().immediate_unsynced(|tx| {
                tx.execute("DELETE FROM pins WHERE lease = ?1", [id])?;
                tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
                Ok(())
            });
        }
    }
}

impl Drop for ReadLease {
    fn drop(&mut self) {
        self.end();
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
            let _ = self.store.db().immediate_unsynced(|tx| {
                tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
                Ok(())
            });
        }
    }
}

/// Insert a lease row in `tx`: its id and the gc epoch it started in.
fn insert_lease_in(tx: &rusqlite::Transaction, holder: &str) -> Result<(i64, i64)> {
    let epoch: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'gc_epoch'", [], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO leases (pid, started_epoch, started, holder, process)
         VALUES (?1, ?2, strftime('%s','now'), ?3, ?4)",
        params![Owner::me().pid, epoch, holder, Owner::me().lease_tag()],
    )?;
    Ok((tx.last_insert_rowid(), epoch))
}
