//! `repair-packs`: what can still be read from damaged pack files, copied into new packs,
//! and the damaged files set aside (FORMAT §14.1).
//!
//! A damaged pack (its bytes no longer hash to its name: a flipped bit, a cut-off end, junk
//! appended) mostly still holds good objects: a flipped byte spoils the one frame it is in.
//! Every object is checked against its id, so whatever decodes and hashes right is the object,
//! wherever it is found. Under the commit lock:
//!
//! 1. Find each damaged pack's frames: where the index places them (which holds even when a
//!    record header is what was damaged), and every record whose header checks out
//!    (`intact_records`, which also finds what the index does not name: copies it left
//!    unindexed, a pack `repair-index` skipped). Decode each as far as it goes (a zstd frame
//!    up to the damaged block) and keep every object that hashes to its id.
//! 2. Write them into new packs, sealed, with the snapshot and forget records that check out,
//!    the record of every listed snapshot no indexed pack holds any longer (written again from
//!    its row, which hashes to its id), and a tombstone for every forgotten snapshot whose
//!    tombstone was lost (`records.rs`).
//! 3. Hard-link the damaged files into `damaged/`, outside `packs/`, where no command looks.
//! 4. In one transaction (`switch.rs`): drop the damaged packs' rows, index the new packs, and
//!    take back the snapshots' trust in their chunks, so the next snapshot of each lineage
//!    stores again what was lost.
//! 5. Leave `damaged/ID.retired` for each (`retire`), then remove the damaged files from
//!    `packs/`. A retired pack's file found in `packs/` again is salvaged for its objects
//!    alone: its records may be of snapshots forgotten since (`Source::Retired`).
//!
//! A kill anywhere leaves a store `verify` reads: before 4 the old index stands (the new packs
//! are orphans gc removes); after it the damaged files in `packs/` are orphans whose copies are
//! in `damaged/`. Chunks that could not be read are no longer indexed: `verify` names what
//! they hurt, and a new snapshot of the same data stores them again, which makes the older
//! snapshots that use them whole.

mod bases;
mod frames;
mod records;
mod switch;
mod writer;

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;

use self::bases::RunBases;
use self::frames::{contents, decode_with};
use self::records::{Records, Source};
use self::switch::switch_index;
use self::writer::Salvager;
use super::rebuild_packs::pack_files;
use super::replaced::{refuse_if_busy, refuse_if_read};
use crate::error::{Error, IoContext, Result};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::layout;
use crate::pack::{ChunkKind, Skipped};
use crate::store::Store;

const COMMAND: &str = "repair-packs";

/// What `repair_packs` did.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// Pack files read to find the damaged ones.
    pub checked: u64,
    pub packs: Vec<SalvagedPack>,
    /// The packs what was salvaged went into.
    pub new_packs: Vec<PackId>,
    /// Listed snapshots whose records were written again from the index.
    pub rewritten: Vec<SnapshotId>,
    /// Forgotten snapshots whose tombstones were written again (a damaged pack held them).
    pub tombstones: Vec<SnapshotId>,
    /// Chunks the index named that it no longer can: in no damaged pack's readable part, or
    /// deltas whose base is such a chunk. (Condemned chunks lost with them are not listed:
    /// no snapshot needed them.)
    pub lost: Vec<(ChunkId, ChunkKind)>,
    /// Packs the index names whose files are missing, not named (so not given up).
    pub missing: Vec<PackId>,
    /// Damaged packs an earlier run, killed after switching the index, had set aside: only
    /// their names in `packs/` were left to remove.
    pub finished: Vec<PackId>,
}

/// One damaged pack, and what came of it.
#[derive(Debug, Clone)]
pub struct SalvagedPack {
    pub pack: PackId,
    /// What is wrong with it.
    pub damage: String,
    /// Where the file is now (none for a pack whose file was missing).
    pub moved_to: Option<PathBuf>,
    /// Objects copied from it (not counting those another damaged pack gave first).
    pub objects: u64,
    /// Snapshot and forget records copied from it.
    pub records: u64,
    /// Bytes in no record whose header checks out.
    pub skipped: Skipped,
}

/// Salvage the damaged packs of `store`: those named by `wanted` (id prefixes; salvaged even
/// if they hash to their names, for a pack `verify --data` finds a bad chunk in, and given up
/// if the index names them but their files are missing), or every pack file whose contents do
/// not hash to its name.
pub fn repair_packs(
    store: &Store,
    wanted: &[String],
    on_wait: &dyn Fn(&str),
) -> Result<SalvageReport> {
    let root = store.root();
    store.not_full()?;
    let _lock = store.commit_lock(on_wait)?;
    refuse_if_busy(root, COMMAND)?;
    refuse_if_read(root, COMMAND)?;
    let mut report = SalvageReport::default();
    // A run killed after its switch may not have left its marks; a pack given up then has no
    // file left to remove, and its mark in the index goes.
    let switched = switch::all_switched(store)?;
    retire(root, &switched)?;
    let fileless: Vec<PackId> = switched
        .into_iter()
        .filter(|id| !layout::pack_path(root, id).exists())
        .collect();
    switch::forget_switched(store, &fileless)?;
    let mut ignored = Vec::new();
    let files = pack_files(root, &mut ignored);
    let mut damaged = choose(store, &files, wanted, &mut report)?;
    // A run killed after its switch left the damaged file in `packs/` beside its copy in
    // `damaged/`, and the switch's mark in the index: only the removal was left to do.
    let mut finished = Vec::new();
    for (id, path, _) in &damaged {
        let Some(path) = path else { continue };
        if switch::switched(store, id)? && set_aside_already(root, id, path) {
            fs::remove_file(path).at(path)?;
            finished.push(*id);
        }
    }
    damaged.retain(|(id, _, _)| !finished.contains(id));
    switch::forget_switched(store, &finished)?;
    report.finished = finished;
    if damaged.is_empty() {
        return Ok(report);
    }
    let skip: HashSet<PackId> = damaged.iter().map(|(id, _, _)| *id).collect();
    // The packs outside the run known sound: with no pack named, every file in `packs/` was
    // hashed against its name (`choose`); else none is known.
    let sound: Option<HashSet<PackId>> = wanted.is_empty().then(|| {
        files
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !skip.contains(id))
            .collect()
    });
    let mut records = Records::in_sound_packs(store, &files, &skip)?;
    let mut out = Salvager::new(store)?;
    let written = (|| {
        let bases = RunBases::new(store, &damaged)?;
        for (id, path, damage) in &damaged {
            report.packs.push(salvage(
                store,
                id,
                path.as_deref(),
                damage,
                (&bases, sound.as_ref()),
                &mut out,
                &mut records,
            )?);
        }
        records.finish(store, &mut out, &mut report)
    })();
    let added = out.take_added();
    let sealed = match written {
        Ok(()) => out.finish()?,
        Err(e) => {
            out.discard();
            return Err(e);
        }
    };
    crate::failpoint::hit("salvage:after-seal");
    report.new_packs = sealed.iter().map(|s| s.id).collect();
    // Names this run gave the damaged files in `damaged/`: taken back if it stops before the
    // switch, or a rerun would take them for the mark of one that switched.
    let mut linked = Vec::new();
    let drop_new = |linked: &[PathBuf]| {
        for s in &sealed {
            let _ = fs::remove_file(layout::pack_path(root, &s.id));
        }
        for l in linked {
            let _ = fs::remove_file(l);
        }
    };
    for ((id, path, _), salvaged) in damaged.iter().zip(&mut report.packs) {
        let Some(path) = path else { continue };
        match set_aside(root, id, path) {
            Ok((to, made)) => {
                if made {
                    linked.push(to.clone());
                }
                salvaged.moved_to = Some(to);
            }
            Err(e) => {
                drop_new(&linked);
                return Err(e);
            }
        }
    }
    crate::failpoint::hit("salvage:after-link");
    let ids: Vec<PackId> = damaged.iter().map(|(id, _, _)| *id).collect();
    report.lost = match switch_index(store, &ids, &sealed, (&report.missing, &added)) {
        Ok(lost) => lost,
        Err(e) => {
            drop_new(&linked);
            return Err(e);
        }
    };
    crate::failpoint::hit("salvage:after-switch");
    retire(root, &ids)?;
    for (_, path, _) in &damaged {
        let Some(path) = path else { continue };
        fs::remove_file(path).at(path)?;
        layout::sync_dir(path.parent().expect("pack dir"))?;
    }
    switch::forget_switched(store, &ids)?;
    Ok(report)
}

/// A pack to salvage: its id, its file (none for a missing one, given up), and what is wrong
/// with it.
pub(super) type Chosen = (PackId, Option<PathBuf>, String);

/// The packs to salvage.
fn choose(
    store: &Store,
    files: &[(PackId, PathBuf)],
    wanted: &[String],
    report: &mut SalvageReport,
) -> Result<Vec<Chosen>> {
    // Indexed packs whose files are gone are given up only when named: the file may come
    // back (a disk not mounted, a copy not finished).
    let gone = missing_files(store)?;
    let named: Vec<&(PackId, PathBuf)> = if wanted.is_empty() {
        report.missing = gone.iter().map(|(id, _)| *id).collect();
        files.iter().collect()
    } else {
        let mut named = Vec::new();
        for prefix in wanted {
            let p = prefix.to_ascii_lowercase();
            let hits: Vec<_> = files
                .iter()
                .chain(&gone)
                .filter(|(id, _)| id.hex().starts_with(&p))
                .collect();
            match hits[..] {
                // The same pack named twice is salvaged once.
                [one] if named.contains(&one) => {}
                [one] => named.push(one),
                [] => {
                    return Err(Error::NotFound(format!(
                        "no pack file's name starts with {prefix}"
                    )))
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{prefix} names {} pack files: give more of the id",
                        hits.len()
                    )))
                }
            }
        }
        named
    };
    let mut out = Vec::new();
    for (id, path) in named {
        if gone.iter().any(|(g, _)| g == id) {
            out.push((*id, None, "its file is missing: given up".to_string()));
            continue;
        }
        report.checked += 1;
        let mut hasher = blake3::Hasher::new();
        let file = File::open(path).at(path)?;
        hasher.update_reader(&file).at(path)?;
        let damage = if PackId(*hasher.finalize().as_bytes()) != *id {
            "its contents do not hash to its name".to_string()
        } else if retired(store, id)? {
            "retired by an earlier repair-packs: its chunks are taken back, its records are not"
                .to_string()
        } else if wanted.is_empty() {
            continue;
        } else {
            "named on the command line (its contents hash to its name)".to_string()
        };
        out.push((*id, Some(path.clone()), damage));
    }
    Ok(out)
}

/// Read what one damaged pack still holds into `out`.
fn salvage(
    store: &Store,
    id: &PackId,
    path: Option<&Path>,
    damage: &str,
    (bases, sound): (&RunBases, Option<&HashSet<PackId>>),
    out: &mut Salvager,
    records: &mut Records,
) -> Result<SalvagedPack> {
    let Some(path) = path else {
        return Ok(SalvagedPack {
            pack: *id,
            damage: damage.to_string(),
            moved_to: None,
            objects: 0,
            records: 0,
            skipped: Skipped::default(),
        });
    };
    let file = File::open(path).at(path)?;
    let found = contents(store, id, &file, path)?;
    let mut objects = 0;
    for (&offset, frame) in &found.frames {
        let raw = decode_with(&file, offset, frame, &|b| bases.base(store, b));
        for &(cid, kind, at, len) in &frame.objects {
            let bytes = raw.get(at as usize..(at + len as u64) as usize);
            // An object a sound pack holds is not copied again (a retired pack that came
            // back holds much the store has stored again since).
            if held_elsewhere(store, &cid, sound)? {
                continue;
            }
            if let Some(bytes) = bytes.filter(|b| ChunkId::of(b) == cid) {
                objects += u64::from(out.object(cid, kind, bytes)?);
            }
        }
    }
    let source = if indexed(store, id)? {
        Source::Indexed
    } else if retired(store, id)? {
        Source::Retired
    } else if crate::gc::abandoned_packs(store.root())
        .values()
        .any(|p| p == id)
    {
        Source::Abandoned
    } else {
        Source::Unindexed
    };
    let copied = records.carry(&file, &found.records, source, out)?;
    Ok(SalvagedPack {
        pack: *id,
        damage: damage.to_string(),
        moved_to: None,
        objects,
        records: copied,
        skipped: found.skipped,
    })
}

/// The packs the index names whose files are not there.
fn missing_files(store: &Store) -> Result<Vec<(PackId, PathBuf)>> {
    let names: Vec<Vec<u8>> = {
        let db = store.db();
        let mut stmt = db.conn().prepare("SELECT name FROM packs")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::new();
    for id in names.iter().filter_map(|n| PackId::from_slice(n)) {
        let path = layout::pack_path(store.root(), &id);
        if !path.try_exists().at(&path)? {
            out.push((id, path));
        }
    }
    Ok(out)
}

/// Whether pack `id` was retired by an earlier salvage (and an old copy of the index put back
/// since does not name it again).
fn retired(store: &Store, id: &PackId) -> Result<bool> {
    Ok(layout::is_retired(store.root(), id) && !indexed(store, id)?)
}

/// Leave `damaged/ID.retired` for each of `ids`, packs the index no longer names, synced.
fn retire(root: &Path, ids: &[PackId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let dir = root.join(layout::DAMAGED_DIR);
    fs::create_dir_all(&dir).at(&dir)?;
    for id in ids {
        let mark = layout::retired_mark(root, id);
        let text = format!(
            "repair-packs switched the index away from pack {}: a file of that name in \
             packs/ counts only for its chunks\n",
            id.hex()
        );
        fs::write(&mark, text)
            .and_then(|()| File::open(&mark)?.sync_all())
            .at(&mark)?;
    }
    layout::sync_dir(&dir)
}

/// Whether the index has object `id` whole in a pack known `sound` (outside the run, its file
/// hashed against its name; none is known when packs were named). A delta is not enough: its
/// base may be what this run loses, and the switch then drops it too. Nor is a pack not known
/// sound: a missing one may be given up next, a damaged one lose it.
fn held_elsewhere(store: &Store, id: &ChunkId, sound: Option<&HashSet<PackId>>) -> Result<bool> {
    let Some(sound) = sound else {
        return Ok(false);
    };
    let db = store.db();
    let mut stmt = db.conn().prepare_cached(
        "SELECT p.name FROM chunks c JOIN frames f ON f.id = c.frame
         JOIN packs p ON p.id = f.pack WHERE c.id = ?1 AND f.base IS NULL",
    )?;
    let pack: Option<Vec<u8>> = stmt.query_row([&id.0[..]], |r| r.get(0)).optional()?;
    Ok(pack
        .and_then(|p: Vec<u8>| PackId::from_slice(&p))
        .is_some_and(|p| sound.contains(&p)))
}

/// Whether the index names pack `id`.
fn indexed(store: &Store, id: &PackId) -> Result<bool> {
    Ok(store.db().conn().query_row(
        "SELECT EXISTS (SELECT 1 FROM packs WHERE name = ?1)",
        [&id.0[..]],
        |r| r.get(0),
    )?)
}

/// A regular file's device and inode (not those of what a symlink leads to).
fn file_ino(p: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| (m.dev(), m.ino()))
}

/// Whether `damaged/` holds the file at `path` (the same inode) under its name.
fn set_aside_already(root: &Path, id: &PackId, path: &Path) -> bool {
    let ino = file_ino;
    let here = ino(path);
    here.is_some()
        && fs::read_dir(root.join(layout::DAMAGED_DIR))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&id.hex()))
            .any(|e| ino(&e.path()) == here)
}

/// Give the damaged file a name in `damaged/` (a hard link, so both names hold it until the
/// index no longer names the pack): where it is now, and whether this call made that name.
fn set_aside(root: &Path, id: &PackId, path: &Path) -> Result<(PathBuf, bool)> {
    let dir = root.join(layout::DAMAGED_DIR);
    fs::create_dir_all(&dir).at(&dir)?;
    let ino = file_ino;
    let here = ino(path);
    for n in 0u32.. {
        let name = match n {
            0 => format!("{}.pack", id.hex()),
            n => format!("{}.{n}.pack", id.hex()),
        };
        let to = dir.join(name);
        // A salvage killed after the link and run again finds it already there.
        if here.is_some() && ino(&to) == here {
            return Ok((to, false));
        }
        match fs::hard_link(path, &to) {
            Ok(()) => {
                layout::sync_dir(&dir)?;
                return Ok((to, true));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&to, e)),
        }
    }
    unreachable!("some name is free")
}
