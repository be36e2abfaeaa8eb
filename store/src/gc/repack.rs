//! One pack at a time, under the commit lock: delete it when nothing points into it, or copy
//! what is live into a new pack (sealed first) and switch the index over in one transaction;
//! the old file goes last.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::params;

use crate::error::{Error, IoContext, Result};
use crate::ids::{ChunkId, PackId};
use crate::layout;
use crate::pack::compress::frame_compressor;
use crate::pack::format::{Entry, PACK_HEADER_LEN};
use crate::pack::{Codec, PackWriter, RecordHeader, RecordKind};
use crate::store::Store;

use super::GcReport;

/// A chunk row (in `chunks` or `condemned`) pointing into a frame: its id and offset.
type Row = (ChunkId, u64);

/// A live row moved by a repack: its id, its offset in the old record and in the new one.
type Move = (ChunkId, u64, u64);

/// A record of the old pack to carry into the new one.
pub(super) struct Carry {
    header: RecordHeader,
    payload_offset: u64,
    /// Chunk records: the frame row and its live rows (empty for snapshot and forget records).
    frame: Option<i64>,
    live: Vec<Row>,
}

pub(super) enum PackPlan {
    Keep,
    Dead {
        size: u64,
    },
    Repack(Vec<Carry>),
    /// Its records cannot all be parsed, or a live one fails its check as it is copied: left
    /// as it is, for `verify --data` to name what the damage hurts (the message says where).
    Damaged(String),
}

/// A pack's plan, with what a dry run needs to add it up.
pub(super) struct Planned {
    pub plan: PackPlan,
    /// The pack file's size, and the bytes of it the plan counts as live.
    pub size: u64,
    pub live_bytes: f64,
    /// Snapshot records the pack holds of snapshots no longer listed: a delete or a repack
    /// drops them, and with them the tombstones they keep.
    pub dead_snapshots: Vec<[u8; 32]>,
}

/// The chunk rows a plan counts as live. The sweep, after condemn, counts every row the
/// index holds; a dry run, before condemn, counts those a run would leave: the referenced
/// chunks (all of them while the newly condemned wait out the grace period) and the
/// condemned rows of epochs after `condemned_after`.
#[derive(Clone, Copy)]
pub(super) struct Survivors {
    pub unreferenced: bool,
    pub condemned_after: i64,
}

impl Survivors {
    pub const INDEX: Survivors = Survivors {
        unreferenced: true,
        condemned_after: i64::MIN,
    };
}

/// The snapshot ids named by the records of `kind` in every pack file: snapshot records (so
/// their tombstones must stay), or forget records (the snapshots they forget).
pub(super) fn ids_in_records(store: &Store, kind: RecordKind) -> Result<HashSet<[u8; 32]>> {
    let mut out = HashSet::new();
    let packs = store.root().join(layout::PACKS_DIR);
    for dir in fs::read_dir(&packs).at(&packs)?.flatten() {
        let files = match fs::read_dir(dir.path()) {
            Ok(files) => files,
            // Emptied and removed by a gc meanwhile (which holds no lock for that), or a
            // stray file: no packs there. Any other failure could hide a record that counts.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => return Err(crate::error::Error::io(dir.path(), e)),
        };
        for f in files.flatten() {
            // A pack that does not scan cleanly is left to verify; its records count.
            let _ = crate::pack::scan(&f.path(), |rec| {
                if rec.header.kind == kind {
                    out.extend(rec.header.entries.iter().map(|e| e.id.0));
                }
                Ok(())
            });
        }
    }
    Ok(out)
}

/// Decide what to do with one indexed pack (call under the commit lock). `records`: the
/// snapshot ids whose records are in some pack, computed when first needed.
pub(super) fn plan(
    store: &Store,
    row: i64,
    id: &PackId,
    survivors: Survivors,
    records: &mut Option<HashSet<[u8; 32]>>,
) -> Result<Planned> {
    let mut live: HashMap<i64, Vec<Row>> = HashMap::new();
    let mut frames: HashMap<u64, i64> = HashMap::new();
    {
        let db = store.db();
        let mut stmt = db.conn().prepare_cached(
            "SELECT c.id, c.frame, c.offset FROM chunks c JOIN frames f ON f.id = c.frame
             WHERE f.pack = ?1 AND (?2 OR c.id IN (SELECT id FROM temp.gc_live))
             UNION ALL
             SELECT c.id, c.frame, c.offset FROM condemned c JOIN frames f ON f.id = c.frame
             WHERE f.pack = ?1 AND c.epoch > ?3",
        )?;
        let mut rows = stmt.query(params![
            row,
            survivors.unreferenced,
            survivors.condemned_after
        ])?;
        while let Some(r) = rows.next()? {
            let cid: Vec<u8> = r.get(0)?;
            let cid = ChunkId::from_slice(&cid).ok_or_else(|| Error::corrupt("bad chunk id"))?;
            live.entry(r.get(1)?)
                .or_default()
                .push((cid, r.get::<_, i64>(2)? as u64));
        }
        let mut stmt = db
            .conn()
            .prepare_cached("SELECT id, offset FROM frames WHERE pack = ?1")?;
        let mut rows = stmt.query([row])?;
        while let Some(r) = rows.next()? {
            frames.insert(r.get::<_, i64>(1)? as u64, r.get(0)?);
        }
    }
    let path = layout::pack_path(store.root(), id);
    let size = fs::metadata(&path).at(&path)?.len();
    let mut carry = Vec::new();
    let mut live_bytes = PACK_HEADER_LEN as f64;
    let mut needs_records = false;
    let mut tombstones = Vec::new();
    let mut dead_snapshots = Vec::new();
    let scanned = crate::pack::scan(&path, |rec| {
        let h = rec.header;
        let whole = (h.encoded_len() + h.stored_len as usize) as f64;
        match h.kind {
            RecordKind::Chunks => {
                let frame = frames.get(&rec.payload_offset).copied();
                let rows = frame.and_then(|f| live.remove(&f)).unwrap_or_default();
                if !rows.is_empty() {
                    let bytes: u64 = h
                        .entries
                        .iter()
                        .scan(0u64, |o, e| {
                            let at = *o;
                            *o += e.len as u64;
                            Some((at, e))
                        })
                        .filter(|(at, e)| rows.contains(&(e.id, *at)))
                        .map(|(_, e)| e.len as u64)
                        .sum();
                    live_bytes += whole * bytes as f64 / (h.raw_len.max(1) as f64);
                    carry.push(Carry {
                        header: h,
                        payload_offset: rec.payload_offset,
                        frame,
                        live: rows,
                    });
                }
            }
            RecordKind::Snapshot => {
                let hex = hex::encode(h.entries[0].id.0);
                let db = store.db();
                let mut stmt = db
                    .conn()
                    .prepare_cached("SELECT 1 FROM snapshots WHERE id = ?1")?;
                if stmt.exists([hex])? {
                    live_bytes += whole;
                    carry.push(Carry {
                        header: h,
                        payload_offset: rec.payload_offset,
                        frame: None,
                        live: Vec::new(),
                    });
                } else {
                    dead_snapshots.push(h.entries[0].id.0);
                }
            }
            RecordKind::Forget => {
                needs_records = true;
                tombstones.push((h, rec.payload_offset, whole));
            }
        }
        Ok(())
    });
    if let Err(Error::Corrupt(why)) = scanned {
        // What lies past the damage cannot be told (a listed snapshot's record, a tombstone
        // that keeps one forgotten, chunks), and damage such as bytes appended is undone by
        // hand: the pack stays, named, and gc goes on with the others rather than stop here.
        return Ok(Planned {
            plan: PackPlan::Damaged(why),
            size,
            live_bytes: 0.0,
            dead_snapshots: Vec::new(),
        });
    }
    scanned?;
    if !live.is_empty() {
        return Err(Error::corrupt(format!(
            "pack {}: chunk rows point at records the pack does not have",
            id.short()
        )));
    }
    if needs_records && records.is_none() {
        *records = Some(ids_in_records(store, RecordKind::Snapshot)?);
    }
    for (h, payload_offset, whole) in tombstones {
        // A tombstone stays while its snapshot's record is in some pack (repair-index needs it).
        let set = records.as_ref().expect("computed above");
        if h.entries.iter().any(|e| set.contains(&e.id.0)) {
            live_bytes += whole;
            carry.push(Carry {
                header: h,
                payload_offset,
                frame: None,
                live: Vec::new(),
            });
        }
    }
    let plan = if carry.is_empty() {
        PackPlan::Dead { size }
    } else if live_bytes * 2.0 < size as f64 {
        PackPlan::Repack(carry)
    } else {
        PackPlan::Keep
    };
    Ok(Planned {
        plan,
        size,
        live_bytes,
        dead_snapshots,
    })
}

/// Carry out a pack's plan and count it in `report`; true if the pack changed (deleted or
/// repacked). A damaged pack is named in the report and left as it is.
pub(super) fn apply(
    store: &Store,
    row: i64,
    id: &PackId,
    plan: PackPlan,
    report: &mut GcReport,
) -> Result<bool> {
    let damaged = |report: &mut GcReport, why: String| {
        if !report.damaged_packs.contains(&why) {
            report.damaged_packs.push(why);
        }
        Ok(false)
    };
    match plan {
        PackPlan::Dead { size } => {
            delete_pack(store, row, id)?;
            report.packs_deleted += 1;
            report.bytes_freed += size;
            Ok(true)
        }
        PackPlan::Repack(carry) => match repack(store, row, id, carry)? {
            Repacked::Done { old, new } => {
                report.packs_repacked += 1;
                report.bytes_freed += old.saturating_sub(new);
                Ok(true)
            }
            Repacked::Damaged(why) => damaged(report, why),
        },
        PackPlan::Keep => Ok(false),
        PackPlan::Damaged(why) => damaged(report, why),
    }
}

/// Unindex a pack nothing points into, then delete its file.
pub(super) fn delete_pack(store: &Store, row: i64, id: &PackId) -> Result<()> {
    store.db().immediate(|tx| {
        check_unreferenced(tx, row, id)?;
        tx.execute("DELETE FROM frames WHERE pack = ?1", [row])?;
        tx.execute("DELETE FROM packs WHERE id = ?1", [row])?;
        Ok(())
    })?;
    crate::failpoint::hit("gc:after-switch");
    let path = layout::pack_path(store.root(), id);
    fs::remove_file(&path).at(&path)
}

fn check_unreferenced(tx: &rusqlite::Transaction, row: i64, id: &PackId) -> Result<()> {
    let n: i64 = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM chunks c JOIN frames f ON f.id = c.frame WHERE f.pack = ?1)
              + (SELECT COUNT(*) FROM condemned c JOIN frames f ON f.id = c.frame WHERE f.pack = ?1)",
        [row],
        |r| r.get(0),
    )?;
    if n > 0 {
        return Err(Error::corrupt(format!(
            "gc: pack {} still has {n} chunk row(s) pointing into it",
            id.short()
        )));
    }
    Ok(())
}

/// One carried chunk record as it goes into the new pack: the whole record when all of it is
/// live (or it is a delta), else the live objects recompressed.
fn rewrite(file: &fs::File, path: &Path, c: &Carry) -> Result<(RecordHeader, Vec<u8>, Vec<Move>)> {
    let h = &c.header;
    let damaged = |what: String| {
        let at = c.payload_offset;
        Error::corrupt(format!("{} at offset {at}: {what}", path.display()))
    };
    let mut stored = vec![0u8; h.stored_len as usize];
    // A failed read is the disk's error, not damage: it stops gc (scan's rule too).
    file.read_exact_at(&mut stored, c.payload_offset).at(path)?;
    let mut at = 0u64;
    let mut keep = Vec::new();
    for e in &h.entries {
        if c.live.contains(&(e.id, at)) {
            keep.push((e.clone(), at));
        }
        at += e.len as u64;
    }
    if keep.len() == h.entries.len() || h.codec == Codec::ZstdDelta {
        let moves = keep.iter().map(|(e, o)| (e.id, *o, *o)).collect();
        return Ok((h.clone(), stored, moves));
    }
    let raw = match h.codec {
        Codec::None => stored,
        _ => zstd::bulk::decompress(&stored, h.raw_len as usize)
            .map_err(|e| damaged(format!("the record does not decompress: {e}")))?,
    };
    let mut out = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut moves = Vec::new();
    for (e, o) in keep {
        let bytes = raw
            .get(o as usize..(o + e.len as u64) as usize)
            .ok_or_else(|| damaged("a chunk lies outside its record".into()))?;
        if ChunkId::of(bytes) != e.id {
            return Err(damaged(format!(
                "chunk {} fails its checksum",
                e.id.short()
            )));
        }
        moves.push((e.id, o, out.len() as u64));
        out.extend_from_slice(bytes);
        entries.push(e);
    }
    let z = frame_compressor()
        .and_then(|mut z| z.compress(&out))
        .map_err(Error::Output)?;
    let (codec, payload) = if z.len() < out.len() {
        (Codec::Zstd, z)
    } else {
        (Codec::None, out)
    };
    let header = RecordHeader {
        kind: RecordKind::Chunks,
        codec,
        raw_len: entries.iter().map(|e| e.len).sum(),
        stored_len: payload.len() as u32,
        base: None,
        entries,
    };
    Ok((header, payload, moves))
}

/// What a repack did.
pub(super) enum Repacked {
    /// The pack's sizes before and after.
    Done { old: u64, new: u64 },
    /// A record to carry is damaged: nothing changed (the message says where).
    Damaged(String),
}

/// Copy the live records into a new pack, seal it, switch the index in one transaction, then
/// delete the old file.
fn repack(store: &Store, row: i64, id: &PackId, carry: Vec<Carry>) -> Result<Repacked> {
    let path = layout::pack_path(store.root(), id);
    let file = fs::File::open(&path).at(&path)?;
    let old_size = file.metadata().at(&path)?.len();
    let mut writer = PackWriter::create(store.root())?;
    // Per record written: the old frame and (id, old offset, new offset) of its live rows.
    let mut written: Vec<Option<(i64, Vec<Move>)>> = Vec::new();
    let result = (|| {
        for c in &carry {
            let (header, payload, moves) = match c.frame {
                Some(_) => rewrite(&file, &path, c)?,
                None => {
                    let mut p = vec![0u8; c.header.stored_len as usize];
                    file.read_exact_at(&mut p, c.payload_offset).at(&path)?;
                    (c.header.clone(), p, Vec::new())
                }
            };
            writer.append(&header, &payload)?;
            written.push(c.frame.map(|f| (f, moves)));
        }
        Ok(())
    })();
    if let Err(e) = result {
        writer.discard();
        return match e {
            Error::Corrupt(why) => Ok(Repacked::Damaged(why)),
            e => Err(e),
        };
    }
    let sealed = writer.seal()?;
    crate::failpoint::hit("gc:after-seal");
    let new_path = layout::pack_path(store.root(), &sealed.id);
    let switched = store.db().immediate(|tx| {
        tx.execute(
            "INSERT INTO packs (name, size, created) VALUES (?1, ?2, strftime('%s','now'))",
            params![&sealed.id.0[..], sealed.size as i64],
        )?;
        let new_row = tx.last_insert_rowid();
        let mut i = 0;
        crate::pack::scan(&new_path, |rec| {
            let slot = written.get(i).cloned().flatten();
            i += 1;
            let (Some((old_frame, moves)), RecordKind::Chunks) = (slot, rec.header.kind) else {
                return Ok(());
            };
            let h = &rec.header;
            tx.execute(
                "INSERT INTO frames (pack, offset, stored_len, raw_len, codec, base)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    new_row,
                    rec.payload_offset as i64,
                    h.stored_len,
                    h.raw_len,
                    h.codec as u8,
                    h.base.map(|b| b.0.to_vec())
                ],
            )?;
            let frame = tx.last_insert_rowid();
            for table in ["chunks", "condemned"] {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE {table} SET frame = ?1, offset = ?2
                     WHERE id = ?3 AND frame = ?4 AND offset = ?5"
                ))?;
                for (cid, old, new) in &moves {
                    stmt.execute(params![
                        frame,
                        *new as i64,
                        &cid.0[..],
                        old_frame,
                        *old as i64
                    ])?;
                }
            }
            Ok(())
        })?;
        check_unreferenced(tx, row, id)?;
        tx.execute("DELETE FROM frames WHERE pack = ?1", [row])?;
        tx.execute("DELETE FROM packs WHERE id = ?1", [row])?;
        Ok(())
    });
    if let Err(e) = switched {
        let _ = fs::remove_file(&new_path);
        return Err(e);
    }
    crate::failpoint::hit("gc:after-switch");
    fs::remove_file(&path).at(&path)?;
    Ok(Repacked::Done {
        old: old_size,
        new: sealed.size,
    })
}
