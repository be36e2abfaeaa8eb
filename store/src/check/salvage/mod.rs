//! `repair-packs`: what can still be read from damaged pack files, copied into a new pack,
//! and the damaged files set aside (FORMAT §14.1).
//!
//! A damaged pack (its bytes no longer hash to its name: a flipped bit, a cut-off end, junk
//! appended) mostly still holds good objects: a flipped byte spoils the one frame it is in.
//! Every object is checked against its id, so whatever decodes and hashes right is the object,
//! wherever it is found. For each damaged pack, under the commit lock:
//!
//! 1. Find its frames: where the index places them (which holds even when a record header
//!    is what was damaged), and every record whose header checks out (`intact_records`, which
//!    also finds what the index does not name: copies it left unindexed, a pack `repair-index`
//!    skipped). Decode each as far as it goes (a zstd frame up to the damaged block) and keep
//!    every object that hashes to its id.
//! 2. Write them, the snapshot and forget records that check out, and the record of every
//!    listed snapshot no other pack holds (written again from its index row, which hashes to
//!    its id), into a new pack, sealed.
//! 3. Hard-link the damaged file into `damaged/`, outside `packs/`, where no command looks.
//! 4. In one transaction: drop the old pack's rows, index the new pack (first copy wins, as
//!    at a commit), and take the snapshots' trust in their chunks back (`distrust_all`), so
//!    the next snapshot of each lineage stores again what was lost. Refused if a live process
//!    holds a lease: it may have looked up a chunk this takes out.
//! 5. Remove the damaged file from `packs/`.
//!
//! A kill anywhere leaves a store `verify` reads: before 4 the old index stands (the new pack
//! is an orphan gc removes); after it the damaged file in `packs/` is an orphan whose copy is
//! in `damaged/`. Chunks that could not be read are no longer indexed: `verify` names what
//! they hurt, and a new snapshot of the same data stores them again, which makes the older
//! snapshots that use them whole.

mod frames;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;

use self::frames::{decode, indexed_frames, Frame};
use self::writer::Salvager;
use super::rebuild_packs::pack_files;
use super::replaced::{live_lease, refuse_if_busy, refuse_if_read, refuse_reader};
use crate::error::{Error, IoContext, Result};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::ingest::index_pack;
use crate::layout;
use crate::pack::{intact_records, ChunkKind, RecordKind, SealedPack, Skipped};
use crate::snapshot::Snapshot;
use crate::store::Store;

const COMMAND: &str = "repair-packs";

/// What `repair_packs` did.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// Pack files read to find the damaged ones.
    pub checked: u64,
    pub packs: Vec<SalvagedPack>,
    /// Chunks the index had in the damaged packs that none of them could give back: no
    /// longer indexed.
    pub lost: Vec<(ChunkId, ChunkKind)>,
}

/// One damaged pack, and what came of it.
#[derive(Debug, Clone)]
pub struct SalvagedPack {
    pub pack: PackId,
    /// What is wrong with it.
    pub damage: String,
    /// Where the file is now.
    pub moved_to: PathBuf,
    /// The pack what was salvaged went into (none when there was nothing to keep).
    pub new_pack: Option<PackId>,
    /// Objects copied into the new pack.
    pub objects: u64,
    /// Snapshot and forget records copied.
    pub records: u64,
    /// Listed snapshots whose records were written again from the index.
    pub rewritten: Vec<SnapshotId>,
    /// Bytes in no record whose header checks out.
    pub skipped: Skipped,
}

/// Salvage the damaged packs of the store at `root`: those named by `wanted` (id prefixes;
/// salvaged even if they hash to their names, for a pack `verify --data` finds a bad chunk in),
/// or every pack file whose contents do not hash to its name.
pub fn repair_packs(
    store: &Store,
    wanted: &[String],
    on_wait: &dyn Fn(&str),
) -> Result<SalvageReport> {
    let root = store.root();
    let _lock = store.commit_lock(on_wait)?;
    refuse_if_busy(root, COMMAND)?;
    refuse_if_read(root, COMMAND)?;
    let mut report = SalvageReport::default();
    let mut ignored = Vec::new();
    let files = pack_files(root, &mut ignored);
    let damaged = choose(&files, wanted, &mut report)?;
    if damaged.is_empty() {
        return Ok(report);
    }
    let skip: HashSet<PackId> = damaged.iter().map(|(id, _, _)| *id).collect();
    let mut unheld = unheld_records(store, &files, &skip)?;
    let mut before = Vec::new();
    for (id, path, damage) in damaged {
        let salvaged = salvage(store, &id, &path, damage, &mut unheld, &mut before)?;
        report.packs.push(salvaged);
    }
    let db = store.db();
    let mut present = db.conn().prepare(
        "SELECT EXISTS (SELECT 1 FROM chunks WHERE id = ?1)
             OR EXISTS (SELECT 1 FROM condemned WHERE id = ?1)",
    )?;
    let mut seen = HashSet::new();
    for (id, kind) in before {
        if seen.insert(id) && !present.query_row([&id.0[..]], |r| r.get::<_, bool>(0))? {
            report.lost.push((id, kind));
        }
    }
    Ok(report)
}

/// The packs to salvage: (id, file, what is wrong with it).
fn choose(
    files: &[(PackId, PathBuf)],
    wanted: &[String],
    report: &mut SalvageReport,
) -> Result<Vec<(PackId, PathBuf, String)>> {
    let named: Vec<&(PackId, PathBuf)> = if wanted.is_empty() {
        files.iter().collect()
    } else {
        let mut named = Vec::new();
        for prefix in wanted {
            let p = prefix.to_ascii_lowercase();
            let hits: Vec<_> = files
                .iter()
                .filter(|(id, _)| id.hex().starts_with(&p))
                .collect();
            match hits[..] {
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
        report.checked += 1;
        let mut hasher = blake3::Hasher::new();
        let file = File::open(path).at(path)?;
        hasher.update_reader(&file).at(path)?;
        let damage = if PackId(*hasher.finalize().as_bytes()) != *id {
            "its contents do not hash to its name".to_string()
        } else if wanted.is_empty() {
            continue;
        } else {
            "named on the command line (its contents hash to its name)".to_string()
        };
        out.push((*id, path.clone(), damage));
    }
    Ok(out)
}

/// The listed snapshots whose records no pack outside `skip` holds (those a salvage must
/// write): the damaged packs held them, or nothing does.
fn unheld_records(
    store: &Store,
    files: &[(PackId, PathBuf)],
    skip: &HashSet<PackId>,
) -> Result<BTreeMap<SnapshotId, Snapshot>> {
    let mut held = HashSet::new();
    for (_, path) in files.iter().filter(|(id, _)| !skip.contains(id)) {
        // A pack that does not scan cleanly keeps what comes before its damage; what lies
        // past it is written again (a second copy of a record is harmless).
        let _ = crate::pack::scan(path, |rec| {
            if rec.header.kind == RecordKind::Snapshot {
                held.extend(rec.header.entries.iter().map(|e| SnapshotId(e.id.0)));
            }
            Ok(())
        });
    }
    Ok(store
        .list(None)?
        .into_iter()
        .filter(|s| !held.contains(&s.id))
        .map(|s| (s.id, s))
        .collect())
}
/// Salvage one pack: write what it still holds into a new pack, set the file aside, switch
/// the index over. `before` gathers the chunks the index had in it.
fn salvage(
    store: &Store,
    id: &PackId,
    path: &Path,
    damage: String,
    unheld: &mut BTreeMap<SnapshotId, Snapshot>,
    before: &mut Vec<(ChunkId, ChunkKind)>,
) -> Result<SalvagedPack> {
    let file = File::open(path).at(path)?;
    let mut frames = indexed_frames(store, id)?;
    let mut records = Vec::new();
    let skipped = intact_records(&file, path, |rec| {
        let h = rec.header;
        match h.kind {
            RecordKind::Chunks => {
                let f = frames.entry(rec.payload_offset).or_insert_with(|| Frame {
                    stored_len: h.stored_len as u64,
                    raw_len: h.raw_len as u64,
                    codec: Some(h.codec),
                    base: h.base,
                    objects: Vec::new(),
                });
                // The index's rows for this frame, and the header's entries it has no row for.
                let known: HashSet<(ChunkId, u64)> =
                    f.objects.iter().map(|&(i, _, at, _)| (i, at)).collect();
                let mut at = 0u64;
                for e in &h.entries {
                    if !known.contains(&(e.id, at)) {
                        f.objects.push((e.id, e.kind, at, e.len));
                    }
                    at += e.len as u64;
                }
            }
            RecordKind::Snapshot | RecordKind::Forget => records.push((h, rec.payload_offset)),
        }
        Ok(())
    })?;
    let mut out = Salvager::new(store)?;
    let written = (|| {
        for (&offset, frame) in &frames {
            let raw = decode(store, &file, offset, frame);
            for &(cid, kind, at, len) in &frame.objects {
                let bytes = raw.get(at as usize..(at + len as u64) as usize);
                if let Some(bytes) = bytes.filter(|b| ChunkId::of(b) == cid) {
                    out.object(cid, kind, bytes)?;
                }
            }
        }
        for (h, payload_offset) in &records {
            out.record(&file, h, *payload_offset, unheld)?;
        }
        // Listed snapshots no pack holds a record of any longer: written again, once.
        for (sid, snap) in std::mem::take(unheld) {
            if let Some(record) = snap.record_for_id() {
                out.snapshot(sid, &record)?;
                out.rewritten.push(sid);
            }
        }
        out.flush(true)?;
        out.flush(false)
    })();
    if let Err(e) = written {
        out.writer.discard();
        return Err(e);
    }
    let Salvager {
        writer,
        objects,
        records,
        rewritten,
        ..
    } = out;
    let mut result = SalvagedPack {
        pack: *id,
        damage,
        moved_to: PathBuf::new(),
        new_pack: None,
        objects,
        records,
        rewritten,
        skipped,
    };
    let sealed = if writer.is_empty() {
        writer.discard();
        None
    } else {
        Some(writer.seal()?)
    };
    crate::failpoint::hit("salvage:after-seal");
    let new_path = sealed
        .as_ref()
        .map(|s| layout::pack_path(store.root(), &s.id));
    let drop_new = || {
        if let Some(p) = &new_path {
            let _ = fs::remove_file(p);
        }
    };
    result.moved_to = match set_aside(store.root(), id, path) {
        Ok(to) => to,
        Err(e) => {
            drop_new();
            return Err(e);
        }
    };
    let switched = switch_index(store, id, sealed.as_ref(), before);
    if let Err(e) = switched {
        drop_new();
        return Err(e);
    }
    crate::failpoint::hit("salvage:after-switch");
    fs::remove_file(path).at(path)?;
    layout::sync_dir(path.parent().expect("pack dir"))?;
    result.new_pack = sealed.map(|s| s.id);
    Ok(result)
}
/// Step 4: in one transaction, drop the damaged pack's rows (gathering into `before` the chunks
/// they held), index the new pack, and take back the snapshots' trust in their chunks.
fn switch_index(
    store: &Store,
    id: &PackId,
    sealed: Option<&SealedPack>,
    before: &mut Vec<(ChunkId, ChunkKind)>,
) -> Result<()> {
    store.db().immediate(|tx| {
        refuse_reader(
            &store.root().join(layout::DB_FILE),
            live_lease(tx)?,
            COMMAND,
        )?;
        let row: Option<i64> = tx
            .query_row("SELECT id FROM packs WHERE name = ?1", [&id.0[..]], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(row) = row {
            for table in ["chunks", "condemned"] {
                let mut stmt = tx.prepare(&format!(
                    "SELECT c.id, c.kind FROM {table} c JOIN frames f ON f.id = c.frame
                     WHERE f.pack = ?1"
                ))?;
                let mut rows = stmt.query([row])?;
                while let Some(r) = rows.next()? {
                    let cid: Vec<u8> = r.get(0)?;
                    let kind = ChunkKind::from_u8(r.get(1)?).unwrap_or(ChunkKind::Data);
                    if let Some(cid) = ChunkId::from_slice(&cid) {
                        before.push((cid, kind));
                    }
                }
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE frame IN (SELECT id FROM frames WHERE pack = ?1)"
                    ),
                    [row],
                )?;
            }
            tx.execute("DELETE FROM frames WHERE pack = ?1", [row])?;
            tx.execute("DELETE FROM packs WHERE id = ?1", [row])?;
        }
        if let Some(sealed) = sealed {
            index_pack(store.root(), tx, sealed, &HashMap::new())?;
        }
        crate::ingest::distrust_all(tx)?;
        Ok(())
    })
}

/// Move the damaged file's name into `damaged/` (a hard link, so both names hold it until
/// the index no longer names the pack): where it is now.
fn set_aside(root: &Path, id: &PackId, path: &Path) -> Result<PathBuf> {
    let dir = root.join(layout::DAMAGED_DIR);
    fs::create_dir_all(&dir).at(&dir)?;
    let ino = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let here = ino(path);
    for n in 0u32.. {
        let name = match n {
            0 => format!("{}.pack", id.hex()),
            n => format!("{}.{n}.pack", id.hex()),
        };
        let to = dir.join(name);
        // A salvage killed after the link and run again finds it already there.
        if here.is_some() && ino(&to) == here {
            return Ok(to);
        }
        match fs::hard_link(path, &to) {
            Ok(()) => {
                layout::sync_dir(&dir)?;
                return Ok(to);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&to, e)),
        }
    }
    unreachable!("some name is free")
}
