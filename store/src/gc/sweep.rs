//! Sweep (FORMAT §15.3 step 4, §15.2): condemned rows no lease can still need go, then packs
//! nothing points into are deleted, mostly-dead packs repacked (repack.rs), and files no row
//! names removed. The commit lock is held one step at a time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::params;

use super::repack::{self, PackPlan, Survivors};
use super::{mark, now_secs, GcOptions, GcReport};
use crate::error::{IoContext, Result};
use crate::ids::{PackId, SnapshotId};
use crate::layout;
use crate::pack::RecordKind;
use crate::process::Owner;
use crate::store::Store;

/// The leases of processes that are gone (killed: nothing else ends a lease).
pub(super) fn stale_leases(store: &Store) -> Result<Vec<i64>> {
    let db = store.db();
    let mut stmt = db.conn().prepare("SELECT id, pid, process FROM leases")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Owner::of_lease(r.get(1)?, r.get::<_, Option<String>>(2)?.as_deref()),
        ))
    })?;
    let leases: Vec<(i64, Owner)> = rows.collect::<rusqlite::Result<_>>()?;
    Ok(leases
        .into_iter()
        .filter(|(_, owner)| !owner.alive())
        .map(|(id, _)| id)
        .collect())
}

/// Delete `leases` and their pins.
pub(super) fn drop_leases(store: &Store, leases: &[i64]) -> Result<()> {
    if leases.is_empty() {
        return Ok(());
    }
    store.db().immediate(|tx| {
        for id in leases {
            tx.execute("DELETE FROM pins WHERE lease = ?1", [id])?;
            tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
        }
        Ok(())
    })
}

/// The oldest epoch a running ingest's lease started in (`skip`: leases about to be dropped).
/// Readers' leases hold their pinned snapshots instead (mark.rs), not whole epochs.
fn oldest_ingest_epoch(conn: &rusqlite::Connection, skip: &[i64]) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached("SELECT id, started_epoch FROM leases WHERE holder = ?1")?;
    let rows = stmt.query_map([super::lease::INGEST], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut oldest = None;
    for row in rows {
        let (id, epoch): (i64, i64) = row?;
        if !skip.contains(&id) {
            oldest = Some(oldest.map_or(epoch, |o: i64| o.min(epoch)));
        }
    }
    Ok(oldest)
}

/// The newest condemned epoch whose rows may go: condemned before `cutoff` (the grace
/// period), and before every running ingest began.
fn last_deletable_epoch(
    conn: &rusqlite::Connection,
    cutoff: i64,
    oldest_ingest: Option<i64>,
) -> Result<Option<i64>> {
    Ok(conn.query_row(
        "SELECT MAX(CAST(substr(key, 14) AS INTEGER)) FROM meta
         WHERE key LIKE 'condemned_at:%' AND value <= ?1
           AND CAST(substr(key, 14) AS INTEGER) <= ?2",
        params![cutoff, oldest_ingest.unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?)
}

/// Delete condemned rows whose epoch no live ingest's lease predates and whose grace has passed.
fn delete_condemned(store: &Store, opts: &GcOptions, report: &mut GcReport) -> Result<()> {
    let cutoff = now_secs().saturating_sub_unsigned(opts.grace_secs);
    store.db().immediate(|tx| {
        let oldest = oldest_ingest_epoch(tx, &[])?;
        if let Some(e) = last_deletable_epoch(tx, cutoff, oldest)? {
            report.chunks_deleted =
                tx.execute("DELETE FROM condemned WHERE epoch <= ?1", [e])? as u64;
            tx.execute(
                "DELETE FROM meta WHERE key LIKE 'condemned_at:%'
                   AND CAST(substr(key, 14) AS INTEGER) <= ?1",
                [e],
            )?;
        }
        report.chunks_waiting =
            tx.query_row("SELECT COUNT(*) FROM condemned", [], |r| r.get::<_, i64>(0))? as u64;
        Ok(())
    })
}

/// Steps after condemn: condemned rows and orphans, then each pack under the lock on its own.
pub(super) fn sweep(
    store: &Store,
    opts: &GcOptions,
    on_wait: &dyn Fn(&str),
    report: &mut GcReport,
) -> Result<()> {
    {
        let _lock = store.commit_lock(on_wait)?;
        delete_condemned(store, opts, report)?;
        // Orphans first: a snapshot record in one keeps tombstones alive.
        orphans(store, &[], opts, report)?;
    }
    let packs = indexed_packs(store)?;
    // Which snapshot records are in packs decides which tombstones stay; it is computed when
    // the first tombstone is met. If packs change after that, their dropped snapshot records
    // may free tombstones already kept: a second pass over the packs drops those too.
    let mut records: Option<HashSet<[u8; 32]>> = None;
    let stale = sweep_packs(store, on_wait, report, &packs, &mut records)?;
    if stale {
        records = None;
        sweep_packs(store, on_wait, report, &packs, &mut records)?;
    }
    Ok(())
}

/// The first pack the index lists whose file is gone, if any: gc then deletes nothing, as
/// what it would keep or repack cannot be read, and the index no longer says what is stored.
pub(crate) fn missing_pack(store: &Store) -> Result<Option<PathBuf>> {
    let missing: Vec<(Vec<u8>, PathBuf)> = indexed_packs(store)?
        .into_iter()
        .filter_map(|(_, name)| {
            let path = layout::pack_path(store.root(), &PackId::from_slice(&name)?);
            matches!(path.try_exists(), Ok(false)).then_some((name, path))
        })
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    // Another gc deletes a pack's row before its file: one whose row is gone by now was
    // deleted, not lost. A row still there names a file that was gone while it stood.
    let indexed: HashSet<Vec<u8>> = indexed_packs(store)?.into_iter().map(|(_, n)| n).collect();
    Ok(missing
        .into_iter()
        .find(|(name, _)| indexed.contains(name))
        .map(|(_, path)| path))
}

/// The packs the index lists (row id and name), in the order they were indexed.
fn indexed_packs(store: &Store) -> Result<Vec<(i64, Vec<u8>)>> {
    let db = store.db();
    let mut stmt = db
        .conn()
        .prepare("SELECT id, name FROM packs ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One pass over `packs`; true if a pack changed after `records` was computed.
fn sweep_packs(
    store: &Store,
    on_wait: &dyn Fn(&str),
    report: &mut GcReport,
    packs: &[(i64, Vec<u8>)],
    records: &mut Option<HashSet<[u8; 32]>>,
) -> Result<bool> {
    let mut stale = false;
    for (row, name) in packs {
        let (row, name) = (*row, name.clone());
        let Some(id) = PackId::from_slice(&name) else {
            continue;
        };
        let _lock = store.commit_lock(on_wait)?;
        let still: bool = store
            .db()
            .conn()
            .prepare_cached("SELECT 1 FROM packs WHERE id = ?1 AND name = ?2")?
            .exists(params![row, &name])?;
        if !still {
            continue;
        }
        let plan = repack::plan(store, row, &id, Survivors::INDEX, records)?.plan;
        stale |= repack::apply(store, row, &id, plan, report)? && records.is_some();
    }
    Ok(stale)
}

/// The time `grace_secs` ago (the epoch for a grace period longer than that).
fn before_grace(grace_secs: u64) -> SystemTime {
    SystemTime::now()
        .checked_sub(Duration::from_secs(grace_secs))
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .max(SystemTime::UNIX_EPOCH)
}

fn older_than(path: &Path, limit: SystemTime) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t < limit)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What gc goes by for pack files no index row names.
struct Unindexed {
    /// The pack names the index holds.
    indexed: HashSet<Vec<u8>>,
    /// Before this an unindexed pack is a leftover: the grace period, and the oldest live
    /// ingest (its packs are sealed long before its commit indexes them).
    limit: SystemTime,
    /// Before this an unindexed pack is no live ingest's: the oldest live ingest's start
    /// (now, without one). A last pack is sealed after its ingest's lease began.
    live: SystemTime,
    /// Whether an ingest's lease is in `stale`: its process is gone, and it may have died
    /// committing, after `live`.
    dead_ingest: bool,
}

/// `Unindexed` now. Leases in `stale` (their processes are gone) hold nothing.
fn unindexed(store: &Store, grace_secs: u64, stale: &[i64]) -> Result<Unindexed> {
    let db = store.db();
    let mut stmt = db.conn().prepare("SELECT name FROM packs")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    let indexed = rows.collect::<rusqlite::Result<_>>()?;
    let mut stmt = db
        .conn()
        .prepare("SELECT id, started FROM leases WHERE holder = ?1")?;
    let mut oldest: Option<i64> = None;
    let mut dead_ingest = false;
    for row in stmt.query_map([super::lease::INGEST], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (id, started): (i64, i64) = row?;
        if stale.contains(&id) {
            dead_ingest = true;
        } else {
            oldest = Some(oldest.map_or(started, |o| o.min(started)));
        }
    }
    // Lease times are whole seconds: one more keeps a pack sealed that second.
    let live = oldest.map_or_else(SystemTime::now, |s| {
        SystemTime::UNIX_EPOCH + Duration::from_secs((s.max(1) - 1) as u64)
    });
    Ok(Unindexed {
        indexed,
        limit: before_grace(grace_secs).min(live),
        live,
        dead_ingest,
    })
}

/// Pack files under `packs/` that no index row names and that are older than `limit` (any
/// age without one), but retired ones (`layout::retired_mark`), which count for nothing.
fn unindexed_packs(
    root: &Path,
    indexed: &HashSet<Vec<u8>>,
    limit: Option<SystemTime>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in files(&root.join(layout::PACKS_DIR)) {
        for f in files(&dir) {
            // A retired pack is no leftover: `repair-packs` takes its chunks back.
            if pack_id(&f)
                .is_some_and(|id| !indexed.contains(&id.0[..]) && !layout::is_retired(root, &id))
                && limit.is_none_or(|limit| older_than(&f, limit))
            {
                out.push(f);
            }
        }
    }
    out
}

/// Snapshot records in packs no index row names, of snapshots the index does not list and no
/// forget record names, that no live ingest is committing. Such a pack is left by an ingest
/// killed between sealing its last pack and committing, or by an index that lost its last
/// commits (a lost `-wal`, a restored copy of `cellar.db`): `repair-index` restores those
/// snapshots (FORMAT §14), so gc must delete nothing they reach. Whatever its age: an
/// ingest's earlier packs are older than its last, which holds the record, so a record in a
/// pack too young to go may need packs old enough to go, and indexed chunks gc would condemn.
pub(super) fn unlisted_snapshots(
    store: &Store,
    stale: &[i64],
) -> Result<Vec<(PathBuf, SnapshotId)>> {
    let u = unindexed(store, 0, stale)?;
    let mut found = unlisted_records(store, &u, &abandoned_packs(store.root()))?;
    found.retain(|(pack, _)| u.dead_ingest || older_than(pack, u.live));
    Ok(found)
}

/// `unlisted_in` every unindexed pack but the `abandoned` last packs of killed ingests (their
/// markers say no commit of theirs began).
fn unlisted_records(
    store: &Store,
    u: &Unindexed,
    abandoned: &HashMap<PathBuf, PackId>,
) -> Result<Vec<(PathBuf, SnapshotId)>> {
    let mut packs = unindexed_packs(store.root(), &u.indexed, None);
    packs.retain(|p| pack_id(p).is_none_or(|id| !abandoned.values().any(|a| *a == id)));
    unlisted_in(store, &packs)
}

/// The last packs of ingests killed while committing: what the `committing_marker` of each
/// process that is gone names, by marker. The marker goes before the COMMIT, so such a pack
/// holds the record of a snapshot never committed (and the index has it only if something
/// else indexed the same bytes, which `orphans` checks).
pub(crate) fn abandoned_packs(root: &Path) -> HashMap<PathBuf, PackId> {
    files(&root.join(layout::TMP_DIR))
        .into_iter()
        .filter_map(|f| {
            let name = f.file_name()?.to_str()?;
            let (owner, pack) = layout::parse_committing_marker(name)?;
            (!owner.is_me() && !owner.alive()).then_some((f, pack))
        })
        .collect()
}

/// The pack a file's name says it is.
fn pack_id(path: &Path) -> Option<PackId> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pack"))
        .and_then(PackId::from_hex)
}

/// The records in `packs` (files no index row names) of snapshots that the index does not
/// list and no forget record names: snapshots `repair-index` would restore.
pub(crate) fn unlisted_in(store: &Store, packs: &[PathBuf]) -> Result<Vec<(PathBuf, SnapshotId)>> {
    let mut found = Vec::new();
    for pack in packs {
        // A pack that does not scan cleanly is left to verify; the records read before the
        // damage count.
        let _ = crate::pack::scan(pack, |rec| {
            if rec.header.kind == RecordKind::Snapshot {
                for e in &rec.header.entries {
                    found.push((pack.clone(), SnapshotId(e.id.0)));
                }
            }
            Ok(())
        });
    }
    if found.is_empty() {
        return Ok(found);
    }
    let listed: HashSet<String> = {
        let db = store.db();
        let mut stmt = db.conn().prepare("SELECT id FROM snapshots NOT INDEXED")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let forgotten = repack::ids_in_records(store, RecordKind::Forget)?;
    found.retain(|(_, id)| !listed.contains(&id.hex()) && !forgotten.contains(&id.0));
    Ok(found)
}

/// Pack files no row names and dead processes' temp files, once old enough. Runs under the
/// commit lock: forget and commit seal their last pack under it, and an ingest's earlier
/// packs are younger than its lease. A dry run counts them and deletes nothing.
/// `stale`: leases of gone processes that a dry run has not dropped.
pub(super) fn orphans(
    store: &Store,
    stale: &[i64],
    opts: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let root = store.root();
    let u = unindexed(store, opts.grace_secs, stale)?;
    let (indexed, limit) = (&u.indexed, u.limit);
    let grace = before_grace(opts.grace_secs);
    // An ingest's packs go together. While an unindexed pack holds the record of a snapshot
    // the index does not list (a commit under way, or one that came about since gc checked)
    // or a killed ingest's last pack is too young to go, no unindexed pack goes: those old
    // enough may hold that snapshot's chunks, and `repair-index` would restore it without.
    let abandoned = abandoned_packs(root);
    let young_abandoned = abandoned.values().any(|id| {
        let pack = layout::pack_path(root, id);
        pack.exists() && !older_than(&pack, limit)
    });
    // Nor while a snapshot the mark kept needs a chunk the index lacks (an index rebuilt
    // without a pack it could not read): an unindexed pack may be the one that holds it.
    let keep_unindexed = young_abandoned
        || !unlisted_records(store, &u, &abandoned)?.is_empty()
        || super::mark::live_chunks_unindexed(store)?;
    let mut remove = |path: &Path| -> Result<()> {
        let size = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        if !opts.dry_run {
            fs::remove_file(path).at(path)?;
        }
        report.orphans_deleted += 1;
        report.bytes_freed += size;
        Ok(())
    };
    if !keep_unindexed {
        for f in unindexed_packs(root, indexed, Some(limit)) {
            remove(&f)?;
        }
    }
    // A killed ingest's marker stays as long as its pack: the pack goes as any leftover does
    // (above, once older than the grace), and while both are there the marker keeps gc's
    // refusal off it.
    for (marker, id) in abandoned {
        let pack = layout::pack_path(root, &id);
        let gone = !keep_unindexed && older_than(&pack, limit);
        if indexed.contains(&id.0[..]) || !pack.exists() || gone {
            remove(&marker)?;
        }
    }
    for f in files(&root.join(layout::TMP_DIR)) {
        let name = f.file_name().and_then(|n| n.to_str());
        if name.is_some_and(|n| layout::parse_committing_marker(n).is_some()) {
            continue; // above
        }
        if let Some(owner) = name.and_then(Owner::of_file_name) {
            if !owner.is_me() && !owner.alive() && older_than(&f, grace) {
                remove(&f)?;
            }
        }
    }
    Ok(())
}

/// The index is rewritten (VACUUM) when at least this share of its file is free pages or
/// unused bytes inside pages. A b-tree filled by random inserts (chunk ids are hashes) runs
/// about 30% empty on its own, so a lower bar would rewrite healthy indexes; deleting most
/// rows (a prune and a gc) leaves pages only a third full, which this catches.
const VACUUM_WASTE_PERCENT: u64 = 50;

/// The end: give the index's free space back to the filesystem, then fold the WAL back into
/// the database file.
///
/// Freed pages go first: with `auto_vacuum = INCREMENTAL` (every store created since schema
/// 3's gc), `PRAGMA incremental_vacuum` moves them to the end of the file, which the
/// checkpoint truncates. Pages that rows were deleted from but that still hold a few rows
/// are not free, though; only a rewrite packs them. So when the file is mostly waste, gc
/// runs VACUUM, which also turns `auto_vacuum = INCREMENTAL` on for stores created before
/// it. VACUUM holds the index's write lock while it copies the live rows (readers go on, in
/// WAL mode; commits wait), so it runs under the commit lock and only when it pays.
pub(super) fn finish(store: &Store, on_wait: &dyn Fn(&str)) -> Result<()> {
    // Fan-out directories left empty by deleted packs (a pruned store would keep up to 256
    // of them). `remove_dir` only takes an empty one; a pack sealed into it meanwhile makes
    // it again (`PackWriter::seal`).
    for dir in files(&store.root().join(layout::PACKS_DIR)) {
        let _ = fs::remove_dir(dir);
    }
    {
        let _lock = store.commit_lock(on_wait)?;
        let db = store.db();
        let conn = db.conn();
        let auto: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
        if auto == 2 {
            // One page per row: a single step (execute_batch) would free one page only.
            let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        if mostly_waste(conn)? {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
        }
    }
    checkpoint(store)
}

/// Is at least `VACUUM_WASTE_PERCENT` of the index file free pages or unused page bytes?
/// Small files are never worth a rewrite.
fn mostly_waste(conn: &rusqlite::Connection) -> Result<bool> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let total = (pages * page_size) as u64;
    if total < 256 << 10 {
        return Ok(false);
    }
    // `dbstat` (compiled into the bundled SQLite) reads every page once, without locks.
    let unused: Option<i64> = conn.query_row(
        "SELECT SUM(unused) FROM dbstat WHERE aggregate = TRUE",
        [],
        |r| r.get(0),
    )?;
    let waste = (free * page_size + unused.unwrap_or(0)) as u64;
    Ok(waste * 100 >= total * VACUUM_WASTE_PERCENT)
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: the WAL folded into the database file, which shrinks to
/// its page count, and the WAL emptied.
fn checkpoint(store: &Store) -> Result<()> {
    let db = store.db();
    // TRUNCATE waits for readers to move on (an ingest's dedup transaction can last long):
    // try it without waiting; if a reader is in the way the WAL is checkpointed as far as it
    // can be and truncated by a later checkpoint.
    db.conn().busy_timeout(Duration::ZERO)?;
    let done = db
        .conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    db.conn().busy_timeout(Duration::from_secs(600))?;
    match done {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// A dry run: what gc with these options would do now, without doing it. Condemning would
/// move the unreferenced chunks to a new epoch; the condemned rows the grace period and
/// running ingests (not `stale`, the leases gc would drop) let go would be deleted, the new
/// epoch's too with `--grace 0` and no ingest running. Each pack is then planned as the
/// sweep plans it, counting the rows that would be left: deleted when nothing in it stays,
/// repacked when less than half does (the bytes a repack frees are estimated from the
/// frames' compressed sizes). A tombstone stays while its snapshot's record is in some pack,
/// so the packs are planned a second time without the records the first plans drop, as the
/// sweep's second pass does. (Orphan files are counted apart, by `orphans`.)
pub(super) fn estimate(
    store: &Store,
    stale: &[i64],
    opts: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    report.chunks_condemned = mark::unreferenced(store)?;
    // The leases gc would leave, as a real run reports them.
    report.leases = store.leases()?.into_iter().filter(|l| l.alive()).collect();
    let survivors = {
        let db = store.db();
        let conn = db.conn();
        let now = now_secs();
        let cutoff = now.saturating_sub_unsigned(opts.grace_secs);
        let oldest = oldest_ingest_epoch(conn, stale)?;
        let epoch: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'gc_epoch'", [], |r| {
                r.get(0)
            })?;
        // As delete_condemned will decide once condemn has added epoch + 1, at `now`.
        let new_goes = now <= cutoff && oldest.is_none_or(|o| epoch < o);
        let last_gone = if new_goes {
            Some(epoch + 1)
        } else {
            last_deletable_epoch(conn, cutoff, oldest)?
        };
        let old_gone: i64 = conn.query_row(
            "SELECT COUNT(*) FROM condemned WHERE epoch <= ?1",
            [last_gone.unwrap_or(i64::MIN)],
            |r| r.get(0),
        )?;
        let condemned: i64 = conn.query_row("SELECT COUNT(*) FROM condemned", [], |r| r.get(0))?;
        report.chunks_deleted =
            old_gone as u64 + if new_goes { report.chunks_condemned } else { 0 };
        report.chunks_waiting = condemned as u64 + report.chunks_condemned - report.chunks_deleted;
        Survivors {
            unreferenced: !new_goes,
            condemned_after: last_gone.unwrap_or(i64::MIN),
        }
    };
    let packs: Vec<(i64, PackId)> = indexed_packs(store)?
        .into_iter()
        .filter_map(|(row, name)| Some((row, PackId::from_slice(&name)?)))
        .collect();
    let mut records = Some(repack::ids_in_records(store, RecordKind::Snapshot)?);
    let (mut dropped, mut kept) = (HashSet::new(), HashSet::new());
    for (row, id) in &packs {
        let p = repack::plan(store, *row, id, survivors, &mut records)?;
        match p.plan {
            PackPlan::Keep | PackPlan::Damaged(_) => kept.extend(p.dead_snapshots),
            _ => dropped.extend(p.dead_snapshots),
        }
    }
    if let Some(set) = records.as_mut() {
        set.retain(|id| !dropped.contains(id) || kept.contains(id));
    }
    for (row, id) in &packs {
        let p = repack::plan(store, *row, id, survivors, &mut records)?;
        match p.plan {
            PackPlan::Dead { size } => {
                report.packs_deleted += 1;
                report.bytes_freed += size;
            }
            PackPlan::Repack(_) => {
                report.packs_repacked += 1;
                report.bytes_freed += (p.size as f64 - p.live_bytes).max(0.0) as u64;
            }
            PackPlan::Keep => {}
            PackPlan::Damaged(why) => report.damaged_packs.push(why),
        }
    }
    Ok(())
}
