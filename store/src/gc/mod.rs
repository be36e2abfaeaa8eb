//! `gc`: reclaim what no snapshot references (FORMAT §15).
//!
//! 0. Refuse when the index cannot be trusted to name everything gc must keep: SQLite's
//!    `integrity_check` finds damage, or an unindexed pack old enough to go holds a snapshot
//!    the index does not list (`repair-index` would restore it).
//! 1. `mark` (no lock, one read transaction): the live set of chunk ids, from every snapshot's
//!    recipe and tree plus the delta bases behind them, in a temp SQLite table.
//! 2. `condemn` (commit lock, one transaction): add what snapshots committed since the mark
//!    reach, then move every other `chunks` row into `condemned` under a new epoch.
//! 3. `sweep` (commit lock per step): delete condemned rows no lease can still need, then per
//!    pack delete it (nothing points into it) or repack it (under half live), then orphans.
//!
//! Every step writes new → fsync → index → delete old, so a kill anywhere leaves a store
//! `verify` passes, and the next gc finishes the work.

mod lease;
mod mark;
mod repack;
mod sweep;

pub(crate) use lease::{Lease, INGEST as INGEST_HOLDER};
pub use lease::{LeaseInfo, ReadLease};
pub(crate) use sweep::{abandoned_packs, missing_pack, unlisted_in};

use crate::error::{Error, Result};
use crate::store::Store;

/// The default `--grace`: condemned chunks stay readable this long, and unindexed files this
/// young are left alone.
pub const DEFAULT_GRACE_SECS: u64 = 600;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    pub grace_secs: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace_secs: DEFAULT_GRACE_SECS,
        }
    }
}

/// What gc did (or, with `dry_run`, would do now).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Chunks no snapshot references, moved to `condemned` (dry run: that would be).
    pub chunks_condemned: u64,
    /// Condemned chunk rows deleted for good.
    pub chunks_deleted: u64,
    /// Condemned rows left for a later gc (within the grace period, or a lease needs them).
    pub chunks_waiting: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// Pack and temp files no row named, deleted (dry run: that would be).
    pub orphans_deleted: u64,
    /// Bytes of pack and temp files deleted, minus the bytes of new packs written.
    pub bytes_freed: u64,
    /// Leases whose process is gone, removed (dry run: that would be; their pins are not
    /// counted as keeping anything).
    pub stale_leases: u64,
    /// The leases of live ingests and readers when gc finished: what an ingest's lease holds
    /// waits (`chunks_waiting`), and what a reader pins was not condemned.
    pub leases: Vec<LeaseInfo>,
    /// Damaged packs (records that do not parse, or a live chunk failing its check in a
    /// repack): left as they are, each named with where and how. gc reclaimed the rest.
    pub damaged_packs: Vec<String>,
}

impl Store {
    /// Collect garbage. Never blocks snapshots for more than one short step.
    pub fn gc(&self, opts: &GcOptions, on_wait: &dyn Fn(&str)) -> Result<GcReport> {
        if !opts.dry_run {
            // Said now, not by the first index write or repack that fails for it.
            self.not_full()?;
        }
        // gc deletes what the index does not name: a damaged index (an index entry that
        // disagrees with its row hides a pack from the orphan sweep, or a frame from its
        // pack's plan) would have it delete live data. Checked before anything is read.
        let damage = self.db().integrity_problems(10)?;
        if let Some(first) = damage.first() {
            return Err(Error::corrupt(format!(
                "the index (cellar.db) is damaged, so gc will not delete anything; \
                 `cellar repair-index` rebuilds it from the packs (SQLite: {first}{})",
                if damage.len() > 1 { ", ..." } else { "" }
            )));
        }
        if let Some(path) = sweep::missing_pack(self)? {
            return Err(Error::corrupt(format!(
                "indexed pack file {} is missing, so gc will not delete anything; `cellar \
                 verify` names what it hurts; bring the file back, or give up what it held \
                 with `cellar repair-packs {}` (if the index is what is wrong, `cellar \
                 repair-index` rebuilds it from the packs)",
                path.display(),
                pack_prefix(&path)
            )));
        }
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        // Before the mark: a dead reader's pins keep nothing. A dry run writes nothing, so it
        // has the mark pass over them instead of dropping them.
        let stale = sweep::stale_leases(self)?;
        report.stale_leases = stale.len() as u64;
        let unlisted = sweep::unlisted_snapshots(self, &stale)?;
        if let Some((pack, id)) = unlisted.first() {
            return Err(Error::Refused(format!(
                "{} holds snapshot {}{}, which the index does not list: an ingest \
                 killed while committing, or an index that lost its last commits. gc deletes \
                 nothing while such a snapshot would go with it: `cellar repair-index` restores \
                 it (then `cellar rm` it if it is not wanted)",
                pack.display(),
                id.short(),
                match unlisted.len() - 1 {
                    0 => String::new(),
                    more => format!(" (and {more} more snapshots are in such packs)"),
                }
            )));
        }
        if opts.dry_run {
            mark::mark(self, &stale)?;
            sweep::estimate(self, &stale, opts, &mut report)?;
            sweep::orphans(self, &stale, opts, &mut report)?;
            return Ok(report);
        }
        sweep::drop_leases(self, &stale)?;
        let mark = mark::mark(self, &[])?;
        crate::failpoint::hit("gc:after-mark");
        mark::condemn(self, &mark, on_wait, &mut report)?;
        crate::failpoint::hit("gc:after-condemn");
        sweep::sweep(self, opts, on_wait, &mut report)?;
        self.prune_image_cache()?;
        sweep::finish(self, on_wait)?;
        report.leases = self.leases()?;
        Ok(report)
    }
}

/// A transaction begun by hand on the store's own connection, so that reads through
/// `Store::object` (which lock the same connection briefly) see it. Rolled back on drop unless
/// committed.
pub(crate) struct ManualTx<'s> {
    store: &'s Store,
    open: bool,
}

impl<'s> ManualTx<'s> {
    pub fn begin(store: &'s Store, immediate: bool) -> Result<Self> {
        let db = store.db();
        db.conn().execute_batch(if immediate {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        })?;
        Ok(ManualTx { store, open: true })
    }

    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.store.db().conn().execute_batch("COMMIT")?;
        Ok(())
    }
}

impl Drop for ManualTx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.store.db().conn().execute_batch("ROLLBACK");
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The first 16 characters of a pack file's name: enough to name it to `repair-packs`.
pub(crate) fn pack_prefix(path: &std::path::Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    name.unwrap_or_default().chars().take(16).collect()
}
