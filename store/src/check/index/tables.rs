//! The index against itself and the pack files: the packs, frames and chunks tables.

use std::collections::{HashMap, HashSet};
use std::fs;

use super::{pack_name, PackRow};
use crate::check::{chunk_kind, Bad, Verifier};
use crate::error::Result;
use crate::ids::{ChunkId, PackId};
use crate::layout;
use crate::pack::format::PACK_HEADER_LEN;
use crate::pack::{ChunkKind, Codec};

/// Smallest header a record can have: the fixed part and the check.
const MIN_RECORD_HEADER: u64 = 28;

/// The packs, frames and chunks tables: every indexed pack file exists with its size, every
/// frame lies in an indexed pack, every chunk in an indexed frame, every delta's base is
/// indexed. Chunks that cannot be read because of what is wrong become bad.
pub(in crate::check) fn check_tables(v: &mut Verifier) -> Result<Vec<PackRow>> {
    let store = v.store;
    let root = store.root().to_path_buf();
    let rows: Vec<(i64, Vec<u8>, i64)> = {
        let db = store.db();
        let mut stmt = db
            .conn()
            .prepare("SELECT id, name, size FROM packs ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut packs = Vec::with_capacity(rows.len());
    for (row, name, size) in rows {
        let Some(id) = PackId::from_slice(&name) else {
            v.problem(format!(
                "packs row {row} has a malformed name ({} bytes, not 32)",
                name.len()
            ));
            continue;
        };
        let path = layout::pack_path(&root, &id);
        let on_disk = match fs::metadata(&path) {
            Ok(m) => {
                if m.len() != size as u64 {
                    v.problem_at(
                        format!(
                            "pack file {} is {} bytes; the index says {size}",
                            pack_name(&root, &id),
                            m.len()
                        ),
                        id,
                        None,
                    );
                }
                Some(m.len())
            }
            Err(e) => {
                v.problem_at(
                    format!(
                        "indexed pack file {} cannot be found: {e}",
                        pack_name(&root, &id)
                    ),
                    id,
                    None,
                );
                None
            }
        };
        packs.push(PackRow {
            row,
            id,
            size: size as u64,
            on_disk,
        });
    }
    let by_row: HashMap<i64, &PackRow> = packs.iter().map(|p| (p.row, p)).collect();

    // Frames: in an indexed pack, inside its file, with a sensible codec and base.
    let mut bad_frames: HashMap<i64, Bad> = HashMap::new();
    {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT id, pack, offset, stored_len, raw_len, codec, base FROM frames ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let fid: i64 = r.get(0)?;
            let pack: i64 = r.get(1)?;
            let offset: i64 = r.get(2)?;
            let stored: i64 = r.get(3)?;
            let raw: i64 = r.get(4)?;
            let codec: i64 = r.get(5)?;
            let base: Option<Vec<u8>> = r.get(6)?;
            let Some(p) = by_row.get(&pack) else {
                bad_frames.insert(
                    fid,
                    Bad::new(format!(
                        "its record (frame {fid}) names pack row {pack}, which is not in the index"
                    )),
                );
                continue;
            };
            let at = |what: String| Bad::new(what).at(p.id, offset.max(0) as u64, None);
            let Some(file_len) = p.on_disk else {
                bad_frames.insert(fid, at("its pack file is missing".into()));
                continue;
            };
            let limit = file_len.min(p.size);
            let why = if offset < 0 || stored < 0 || raw < 0 {
                Some("the index gives its record a negative offset or length".to_string())
            } else if (offset as u64) < PACK_HEADER_LEN + MIN_RECORD_HEADER
                || offset as u64 + stored as u64 > limit
            {
                Some(format!(
                    "its record ({stored} bytes at offset {offset}) lies outside the pack file \
                     ({limit} bytes)"
                ))
            } else {
                match u8::try_from(codec).ok().and_then(Codec::from_u8) {
                    None => Some(format!("its record has an unknown codec {codec}")),
                    Some(Codec::ZstdDelta) if base.as_ref().is_none_or(|b| b.len() != 32) => {
                        Some("its delta record has no valid base".into())
                    }
                    Some(Codec::None) if stored != raw => Some(format!(
                        "its uncompressed record is stored as {stored} bytes but decodes to {raw}"
                    )),
                    _ => None,
                }
            };
            if let Some(why) = why {
                bad_frames.insert(fid, at(why));
            }
        }
    }
    // Delta bases must be indexed, or the frame cannot be decoded.
    {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT f.id, f.base, f.pack, f.offset FROM frames f
             WHERE f.codec = 2 AND f.base IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = f.base)
               AND NOT EXISTS (SELECT 1 FROM condemned c WHERE c.id = f.base)
               -- a record no row uses may outlive its base (gc swept it): harmless
               AND (EXISTS (SELECT 1 FROM chunks c WHERE c.frame = f.id)
                    OR EXISTS (SELECT 1 FROM condemned c WHERE c.frame = f.id))",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let fid: i64 = r.get(0)?;
            let base: Vec<u8> = r.get(1)?;
            let pack: i64 = r.get(2)?;
            let offset: i64 = r.get(3)?;
            let base = hex::encode(&base);
            let mut bad = Bad::new(format!(
                "its delta base {} is not in the index",
                &base[..base.len().min(12)]
            ));
            if let Some(p) = by_row.get(&pack) {
                bad = bad.at(p.id, offset.max(0) as u64, None);
            }
            bad_frames.entry(fid).or_insert(bad);
        }
    }
    // The chunks of bad frames are bad; a bad frame no chunk uses is a problem of its own
    // (unless its pack is missing, which is reported already).
    if !bad_frames.is_empty() {
        let mut used: HashSet<i64> = HashSet::new();
        let found: Vec<(Vec<u8>, i64, i64)> = {
            let db = store.db();
            let mut stmt = db.conn().prepare("SELECT id, frame, kind FROM chunks")?;
            let mut rows = stmt.query([])?;
            let mut found = Vec::new();
            while let Some(r) = rows.next()? {
                let frame: i64 = r.get(1)?;
                if bad_frames.contains_key(&frame) {
                    found.push((r.get(0)?, frame, r.get(2)?));
                }
            }
            found
        };
        for (id, frame, kind) in found {
            used.insert(frame);
            if let Some(id) = ChunkId::from_slice(&id) {
                let mut bad = bad_frames[&frame].clone();
                bad.kind = chunk_kind(kind);
                v.bad_chunk(id, bad);
            }
        }
        let mut unused: Vec<(i64, Bad)> = bad_frames
            .into_iter()
            .filter(|(f, b)| {
                !used.contains(f)
                    && b.pack
                        .is_none_or(|p| packs.iter().any(|r| r.id == p && r.on_disk.is_some()))
            })
            .collect();
        unused.sort_by_key(|(f, _)| *f);
        for (frame, bad) in unused {
            let what = format!("record of frame {frame} (used by no chunk): {}", bad.what);
            match bad.pack {
                Some(p) => v.problem_at(what, p, bad.offset),
                None => v.problem(what),
            }
        }
    }
    // Chunk rows: a frame that exists, a range inside it, a known kind.
    /// id, frame, offset, len, kind; the frame's raw_len, pack and offset if it exists.
    type ChunkRow = (
        Vec<u8>,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<ChunkRow> = {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT c.id, c.frame, c.offset, c.len, c.kind, f.raw_len, f.pack, f.offset
             FROM chunks c LEFT JOIN frames f ON f.id = c.frame
             WHERE f.id IS NULL OR c.offset < 0 OR c.len < 0 OR c.offset + c.len > f.raw_len
                OR c.kind NOT IN (0, 1, 2, 4) OR length(c.id) != 32",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, frame, offset, len, kind, raw, pack, foffset) in rows {
        let Some(id) = ChunkId::from_slice(&id) else {
            v.problem(format!(
                "chunks row {} has a malformed id ({} bytes, not 32)",
                hex::encode(&id),
                id.len()
            ));
            continue;
        };
        let ckind = chunk_kind(kind);
        let mut bad = match raw {
            None => Bad::new(format!("its frame {frame} is not in the index")),
            Some(_) if ckind.is_none() || kind == ChunkKind::Snapshot as i64 => {
                Bad::new(format!("the index gives it an invalid kind {kind}"))
            }
            Some(raw) => Bad::new(format!(
                "the index places it at {offset}..{} of a record of {raw} bytes",
                offset + len
            )),
        };
        if let (Some(p), Some(o)) = (pack.and_then(|p| by_row.get(&p)), foffset) {
            bad = bad.at(p.id, o.max(0) as u64, ckind);
        }
        v.bad_chunk(id, bad);
    }
    // Records no chunk row (live or condemned) points into: harmless dead bytes.
    let (dead, dead_bytes): (i64, i64) = store.db().conn().query_row(
        "SELECT COUNT(*), COALESCE(SUM(stored_len), 0) FROM frames
         WHERE id NOT IN (SELECT frame FROM chunks)
           AND id NOT IN (SELECT frame FROM condemned)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if dead > 0 {
        v.notes.push(format!(
            "{dead} record(s) ({dead_bytes} bytes) in indexed packs hold no chunk the index \
             uses: data of forgotten snapshots that gc left in packs still at least half live \
             (it rewrites a pack once less than half of it is), or chunks written twice by \
             concurrent ingests. Harmless; the space comes back when their packs are rewritten"
        ));
    }
    Ok(packs)
}
