//! Rebuilding the index from the packs alone (FORMAT §14), after `cellar.db` was lost or
//! damaged.
//!
//! The new index is built in `tmp/` and only then swapped in: renamed to `cellar.db.new`
//! beside the old one, the old `cellar.db` (and its `-wal`, `-shm`) moved aside to
//! `cellar.db.broken-TIMESTAMP`, never deleted, and the new one renamed into place (a swap a
//! kill interrupts is finished by the next `Store::open`). Decisions the packs cannot make for
//! us:
//!
//! - **Order.** Commit order is not recorded in packs. Snapshots are inserted so that each
//!   comes after its parent (the parent is chosen under the commit lock, so within a name this
//!   is the commit order), and otherwise by `created` (the ingest's start), then id. Forgotten
//!   snapshots whose records gc has not deleted yet take part in the order, so a chain stays
//!   whole across them; past one gc deleted, `created` decides, which ingests that ran at
//!   once or a clock set back can make differ from the commit order.
//! - **Uncommitted snapshots.** A snapshot record in a pack whose ingest was killed after
//!   sealing it but before its index transaction committed (FORMAT §11) is restored like any
//!   other: all of that ingest's packs were sealed before its record, so it is complete.
//! - **Forgotten snapshots.** A forget record (tombstone) in any pack removes the snapshots it
//!   names, as `rm`/`prune` did.
//! - **Damaged packs.** A pack whose contents do not hash to its name is skipped with a warning,
//!   whole: its chunks and records are not indexed. Chunks stored in several packs are indexed
//!   at their first copy in pack-name order, unless that copy is a delta that cannot be
//!   decoded and another copy can (`copies.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rusqlite::params;

use super::copies::{delta_bases, prefer_decodable};
use super::rebuild_packs::{pack_files, read_pack};
use super::replaced::{
    listed_packs, listed_snapshots, missing_listed_packs, readable_index, refuse_if_busy,
    refuse_if_read,
};
use crate::commit_lock::lock_file;
use crate::db::Db;
use crate::error::{Error, IoContext, Result};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::ingest::index_pack;
use crate::layout;
use crate::pack::SealedPack;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// What `repair_index` did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Where the old index files went (none if there were none).
    pub moved: Vec<PathBuf>,
    /// Packs indexed, and packs skipped (damaged or unreadable; see `warnings`).
    pub packs: u64,
    pub skipped_packs: u64,
    pub frames: u64,
    pub chunks: u64,
    /// Record entries not indexed because an earlier pack holds the same chunk.
    pub duplicates: u64,
    pub snapshots: u64,
    /// Snapshot records left out because a forget record names them.
    pub forgotten: u64,
    pub warnings: Vec<String>,
}

/// Rebuild `root/cellar.db` from the pack files under `root/packs`. Runs under the store's
/// commit lock; refuses while another process is in the middle of an ingest, or reading
/// through the index it replaces.
///
/// When packs had to be skipped, the rebuilt index lacks what only they hold; it replaces a
/// readable index (one SQLite finds no damage in) only with `force`, since that index still
/// reaches everything the damage spares.
pub fn repair_index(root: &Path, force: bool, on_wait: &dyn Fn(&str)) -> Result<RepairReport> {
    if !root.join(layout::PACKS_DIR).is_dir() {
        return Err(Error::NoStore(root.to_path_buf()));
    }
    if crate::db::on_read_only_fs(root) {
        return Err(Error::ReadOnly(root.to_path_buf()));
    }
    fs::create_dir_all(root.join(layout::TMP_DIR)).at(root.join(layout::TMP_DIR))?;
    let _lock = lock_file(root, on_wait, None)?;
    refuse_if_busy(root, "repair-index")?;
    refuse_if_read(root, "repair-index")?;
    crate::failpoint::hit("repair:locked");
    let mut report = RepairReport::default();
    let mut files = pack_files(root, &mut report.warnings);
    // A pack `repair-packs` retired counts for nothing here: its records may be of snapshots
    // forgotten since, whose tombstones gc dropped (FORMAT §14.1). One the current index
    // names (a copy of the index from before the retirement, put back) is that index's.
    let named = listed_packs(root);
    files.retain(|(id, path)| {
        let retired = layout::is_retired(root, id) && !named.contains(id);
        if retired {
            report.warnings.push(format!(
                "skipped {}: repair-packs retired this pack (see {}/{}.retired); \
                 `cellar repair-packs` takes back the chunks it holds",
                path.strip_prefix(root).unwrap_or(path).display(),
                layout::DAMAGED_DIR,
                id.hex()
            ));
        }
        !retired
    });
    let tmp = layout::new_temp_path(root, "db");
    let built = build(&tmp, root, &files, &mut report);
    let sidecars = |p: &Path| {
        [
            p.to_path_buf(),
            crate::db::sibling(p, "-wal"),
            crate::db::sibling(p, "-shm"),
        ]
    };
    let discard = || {
        for f in sidecars(&tmp) {
            let _ = fs::remove_file(f);
        }
    };
    if let Err(e) = built {
        // Looked at before the discard frees what the build took.
        let e = out_of_room(root, e);
        discard();
        return Err(e);
    }
    let old_sound = readable_index(root);
    let keep_current = !force && old_sound;
    if report.skipped_packs > 0 && keep_current {
        discard();
        let why: Vec<&str> = report.warnings.iter().map(String::as_str).take(3).collect();
        return Err(Error::Refused(format!(
            "{} pack(s) could not be read ({}), so a rebuilt index would lose what only they \
             hold; the current index is readable and was left as it is. `cellar verify --data` \
             names what the damage hurts; `cellar repair-index --force` replaces the index \
             anyway",
            report.skipped_packs,
            why.join("; ")
        )));
    }
    // What the old index listed that the packs no longer hold: named, not only counted.
    let rebuilt = listed_snapshots(&tmp);
    let lost: Vec<String> = listed_snapshots(&root.join(layout::DB_FILE))
        .into_iter()
        .filter(|(id, _)| !rebuilt.iter().any(|(r, _)| r == id))
        .map(|(id, name)| {
            let short = id.get(..12).unwrap_or(&id).to_string();
            format!("{short} ({})", crate::error::printable(&name))
        })
        .collect();
    // A pack file gone from a readable index's store (a disk not mounted, an rsync not
    // finished, a file deleted) loses what only it holds as surely as a damaged one: the
    // current index stays, which knows it, until `--force` says the loss is meant.
    let missing = match keep_current {
        true => missing_listed_packs(root),
        false => Vec::new(),
    };
    // (A snapshot the rebuild leaves out may also be one a tombstone forgets, from a forget
    // killed before its commit: lost ones alone are only warned of.)
    if !missing.is_empty() {
        discard();
        let first: Vec<String> = missing
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        let snaps = match lost.len() {
            0 => String::new(),
            n => format!(
                " (with them {n} snapshot(s): {})",
                lost.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(Error::Refused(format!(
            "{} pack file(s) the current index lists are missing ({}): a rebuilt index would \
             lose what only they hold{snaps}, so the current index, which is readable, was \
             left as it is. Put the missing packs back if they can be (`cellar verify` names \
             what they hurt); `cellar repair-index --force` replaces the index anyway",
            missing.len(),
            first.join(", ")
        )));
    }
    for snap in &lost {
        report.warnings.push(format!(
            "snapshot {snap}, listed by the old index, is in no pack that could be read: it is \
             lost"
        ));
    }
    // An ingest that started meanwhile has the old index open and would commit into it once
    // the lock is free: check again, just before the swap.
    if let Err(e) =
        refuse_if_busy(root, "repair-index").and_then(|()| refuse_if_read(root, "repair-index"))
    {
        discard();
        return Err(e);
    }
    if old_sound {
        carry_image_caches(&tmp, &root.join(layout::DB_FILE));
    }
    // The new index is its file alone (its WAL was folded in); reading it just now left
    // a `-shm` (and an empty `-wal`) beside it, which would stay in tmp/ as leftovers.
    for f in &sidecars(&tmp)[1..] {
        let _ = fs::remove_file(f);
    }
    // Beside the old index first, so that from here on a kill leaves one of the two to open:
    // the old one, or (once the old is moved aside) the new one, which `Store::open` puts in
    // place where there is no index.
    let new = root.join(layout::DB_NEW);
    fs::rename(&tmp, &new).at(&new)?;
    layout::sync_dir(root)?;
    report.moved = move_aside(root)?;
    install_new_index(root)?;
    Ok(report)
}

/// The image caches (FORMAT §16.5) of an old index SQLite finds sound, into the rebuilt one:
/// a registry client given a manifest just before the repair still finds its blobs, and no
/// layer is made again to learn a digest the old index knew. Rows of snapshots the rebuild
/// lacks are gc's to drop, as ever. Caches only: where copying fails, they are left behind
/// and made again when asked for.
fn carry_image_caches(new: &Path, old: &Path) {
    use rusqlite::{types::Value, Connection, OpenFlags, Transaction};
    // Every row `select` gives, through `insert` (one parameter per column).
    let copy = |from: &Connection, to: &Transaction, select: &str, insert: &str| {
        let mut write = to.prepare(insert)?;
        let mut read = from.prepare(select)?;
        let columns = read.column_count();
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let row = (0..columns)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            write.execute(rusqlite::params_from_iter(row))?;
        }
        Ok::<_, rusqlite::Error>(())
    };
    let carry = || -> rusqlite::Result<()> {
        // Read-only, so closing it checkpoints nothing: the old index is moved aside as it is.
        let from = Connection::open_with_flags(old, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut to = Connection::open(new)?;
        let tx = to.transaction()?;
        copy(
            &from,
            &tx,
            "SELECT key, digest, size, diff_id FROM layer_digests",
            "INSERT OR IGNORE INTO layer_digests (key, digest, size, diff_id)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        copy(
            &from,
            &tx,
            "SELECT digest, media_type, bytes, snapshot FROM image_blobs",
            "INSERT OR IGNORE INTO image_blobs (digest, media_type, bytes, snapshot)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM snapshots WHERE id = ?4)",
        )?;
        tx.commit()?;
        // Into the file itself: only the file is moved into place.
        to.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    };
    let _ = carry();
}

/// Finish a `repair-index` that was killed while it swapped the indexes: where there is no
/// index but a rebuilt one waits beside it, move what is left of the old one (its `-wal` and
/// `-shm` would be read as the new one's) aside and put the new one in place. Under the
/// store's lock, so a repair still running is waited for.
pub(crate) fn finish_swap(root: &Path) -> Result<()> {
    let new = root.join(layout::DB_NEW);
    if !new.is_file() || crate::db::on_read_only_fs(root) {
        return Ok(());
    }
    let _lock = lock_file(root, &|_| {}, None)?;
    if !new.is_file() || root.join(layout::DB_FILE).symlink_metadata().is_ok() {
        return Ok(());
    }
    move_aside(root)?;
    install_new_index(root)
}

fn install_new_index(root: &Path) -> Result<()> {
    let (new, db) = (root.join(layout::DB_NEW), root.join(layout::DB_FILE));
    fs::rename(&new, &db).at(&db)?;
    layout::sync_dir(root)
}

/// A build that ran out of space says what repair-index needs, rather than what a store on a
/// full filesystem can still do.
fn out_of_room(root: &Path, e: Error) -> Error {
    let tmp = root.join(layout::TMP_DIR);
    // SQLite's "disk full" and ENOSPC say so themselves; its I/O error may be anything.
    let full = match &e {
        Error::Full(_) => true,
        Error::Io { err, .. } => err.raw_os_error() == Some(libc::ENOSPC),
        Error::Db(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DiskFull
                || (e.is_out_of_space() && crate::db::on_full_fs(&tmp))
        }
        _ => false,
    };
    if !full {
        return e;
    }
    let old = fs::metadata(root.join(layout::DB_FILE))
        .map(|m| {
            format!(
                ", about the size of the index it replaces ({} bytes)",
                m.len()
            )
        })
        .unwrap_or_default();
    Error::Refused(format!(
        "the filesystem holding the store at {} is full: repair-index builds the new index in \
         {} before it replaces the old one, and needs room for it{old}; nothing was changed: \
         free some space and run it again",
        root.display(),
        tmp.display()
    ))
}

/// Build the new index at `tmp`: every good pack's rows, delta depths, then the snapshots.
fn build(
    tmp: &Path,
    root: &Path,
    files: &[(PackId, PathBuf)],
    report: &mut RepairReport,
) -> Result<()> {
    let mut db = Db::open(tmp, true)?;
    db.immediate(|tx| {
        let mut snaps: Vec<Snapshot> = Vec::new();
        let mut forgotten: HashSet<SnapshotId> = HashSet::new();
        let mut entries = 0;
        for (id, path) in files {
            let shown = path
                .strip_prefix(root)
                .unwrap_or(path)
                .display()
                .to_string();
            let c = match read_pack(path, id) {
                Ok(c) => c,
                Err(why) => {
                    report.warnings.push(format!("skipped {shown}: {why}"));
                    report.skipped_packs += 1;
                    continue;
                }
            };
            index_pack(
                root,
                tx,
                &SealedPack {
                    id: *id,
                    size: c.size,
                },
                &HashMap::new(),
            )?;
            report.packs += 1;
            report.frames += c.frames;
            entries += c.entries;
            snaps.extend(c.snapshots);
            forgotten.extend(c.forgets);
            report.warnings.extend(c.warnings);
        }
        report.chunks =
            tx.query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))? as u64;
        report.duplicates = entries.saturating_sub(report.chunks);
        let switched = prefer_decodable(tx, files)?;
        if switched > 0 {
            report.warnings.push(format!(
                "{switched} object(s) indexed at another copy: the first copy found is a delta \
                 that cannot be decoded (its base is gone, or a delta on it)"
            ));
        }
        set_depths(tx)?;
        let mut seen = HashSet::new();
        snaps.retain(|s| seen.insert(s.id));
        // Ordered with the forgotten ones, whose records gc has not deleted yet: they link a
        // snapshot to its forgotten parent's own parent, which the order keeps ahead of it.
        for s in commit_order(snaps) {
            if forgotten.contains(&s.id) {
                report.forgotten += 1;
                continue;
            }
            Store::insert_snapshot(tx, &s)?;
            report.snapshots += 1;
        }
        Ok(())
    })?;
    // Fold the WAL into the file, so the file alone is the index, and make it durable.
    db.conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(db);
    File::open(tmp).and_then(|f| f.sync_all()).at(tmp)?;
    Ok(())
}

/// `chunks.depth`: a delta object's depth is its base's plus one (FORMAT §8.4).
fn set_depths(tx: &rusqlite::Transaction) -> Result<()> {
    let bases = delta_bases(tx)?;
    let mut depth: HashMap<ChunkId, u32> = HashMap::new();
    for &start in bases.keys() {
        let mut chain = Vec::new();
        let mut cur = start;
        let known = loop {
            if let Some(&d) = depth.get(&cur) {
                break d;
            }
            match bases.get(&cur) {
                // Not a delta (or not indexed; verify reports that).
                None => break 0,
                // A cycle cannot happen with hashes; stop rather than loop if it does.
                Some(_) if chain.len() > bases.len() => break 0,
                Some(&base) => {
                    chain.push(cur);
                    cur = base;
                }
            }
        };
        let mut d = known;
        for id in chain.into_iter().rev() {
            d += 1;
            depth.insert(id, d);
        }
    }
    let mut stmt = tx.prepare("UPDATE chunks SET depth = ?1 WHERE id = ?2")?;
    for (id, d) in depth {
        stmt.execute(params![d, &id.0[..]])?;
    }
    Ok(())
}

/// Parents before children; otherwise by `created`, then id. Unparseable times go last.
/// (`created` is when an ingest started, so two that ran at once, or a clock set back, can
/// disagree with the commit order; only the parent links are sure.)
fn commit_order(snaps: Vec<Snapshot>) -> Vec<Snapshot> {
    type Key = (bool, Option<time::OffsetDateTime>, SnapshotId);
    let key = |s: &Snapshot| -> Key {
        let t =
            time::OffsetDateTime::parse(&s.created, &time::format_description::well_known::Rfc3339)
                .ok();
        (t.is_none(), t, s.id)
    };
    let keys: Vec<Key> = snaps.iter().map(key).collect();
    let index: HashMap<SnapshotId, usize> =
        snaps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ready = BinaryHeap::new();
    for (i, s) in snaps.iter().enumerate() {
        match s.parent.and_then(|p| index.get(&p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => ready.push(Reverse((keys[i], i))),
        }
    }
    let mut order = Vec::with_capacity(snaps.len());
    let mut placed = vec![false; snaps.len()];
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &c in children.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            ready.push(Reverse((keys[c], c)));
        }
    }
    // Only a parent cycle (impossible with hashes) leaves some unplaced.
    let mut rest: Vec<usize> = (0..snaps.len()).filter(|&i| !placed[i]).collect();
    rest.sort_by_key(|&i| keys[i]);
    order.extend(rest);
    let mut slots: Vec<Option<Snapshot>> = snaps.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Move `cellar.db`, `cellar.db-wal` and `cellar.db-shm` aside to
/// `cellar.db.broken-TIMESTAMP[-N]{,-wal,-shm}` (names SQLite still pairs up).
fn move_aside(root: &Path) -> Result<Vec<PathBuf>> {
    const SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];
    let db = layout::DB_FILE;
    let present: Vec<&str> = SUFFIXES
        .into_iter()
        .filter(|s| root.join(format!("{db}{s}")).symlink_metadata().is_ok())
        .collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let t = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut n = 0;
    let base = loop {
        let base = match n {
            0 => format!("{db}.broken-{stamp}"),
            n => format!("{db}.broken-{stamp}-{n}"),
        };
        if SUFFIXES
            .iter()
            .all(|s| root.join(format!("{base}{s}")).symlink_metadata().is_err())
        {
            break base;
        }
        n += 1;
    };
    let mut moved = Vec::new();
    for s in present {
        let from = root.join(format!("{db}{s}"));
        let to = root.join(format!("{base}{s}"));
        fs::rename(&from, &to).at(&from)?;
        moved.push(to);
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: u8, parent: Option<u8>, created: &str) -> Snapshot {
        Snapshot {
            parent: parent.map(|p| SnapshotId([p; 32])),
            ..Snapshot::bare(n, "vm", created)
        }
    }

    fn order(snaps: Vec<Snapshot>) -> Vec<u8> {
        commit_order(snaps).iter().map(|s| s.id.0[0]).collect()
    }

    /// Cached layer digests and image blobs survive a rebuild of a sound index: a client
    /// given a manifest before it still finds the manifest's blobs.
    #[test]
    fn image_caches_survive_a_repair() {
        use crate::oci::{Codec, ImageOptions, LayerKey, LayerSpec};
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("f"), b"data\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        let snap = crate::fuzzing::snapshot_of_tar(root.path(), src.path(), &["f".to_string()]);
        let store = Store::open(root.path()).unwrap();
        let opts = ImageOptions {
            codec: Codec::Zstd,
            ..Default::default()
        };
        let image = store.image(&snap, &opts).unwrap();
        let key = LayerKey {
            spec: LayerSpec::Exact(snap.id),
            codec: Codec::Zstd,
        };
        let digest = store.cached_layer_digest(&key).unwrap().expect("cached");
        drop(store);

        repair_index(root.path(), false, &|_| {}).unwrap();
        let store = Store::open(root.path()).unwrap();
        assert_eq!(store.cached_layer_digest(&key).unwrap(), Some(digest));
        let all = |_: &SnapshotId| true;
        for blob in [&image.config_digest, &image.manifest_digest] {
            assert!(store.find_blob(blob, &all).unwrap().is_some(), "{blob}");
        }
    }

    #[test]
    fn parents_come_first_then_time_then_id() {
        // 3's ingest started before 2's but committed after it (its parent is 2).
        let snaps = vec![
            snap(3, Some(2), "2026-11-29T10:00:01Z"),
            snap(2, Some(1), "2026-11-29T10:00:02Z"),
            snap(1, None, "2026-11-29T10:00:00Z"),
            // Another lineage, ordered by time; "10:00:00.5Z" is after "10:00:00Z" although
            // it sorts before it as text.
            snap(9, None, "2026-11-29T10:00:00.5Z"),
            snap(8, None, "not a time"),
            // A parent that is not there (forgotten) does not hold a snapshot back.
            snap(7, Some(42), "2026-11-29T09:00:00Z"),
        ];
        assert_eq!(order(snaps), vec![7, 1, 9, 2, 3, 8]);
    }
}
