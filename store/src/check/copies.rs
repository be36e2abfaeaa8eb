//! Which copy of an object a rebuilt index names, when the packs hold several: one that can
//! be decoded.
//!
//! `repair-index` indexes each object at its first copy in pack-name order. A copy stored as
//! a delta can be one no reader decodes: its base gone (gc deleted it with the snapshots that
//! needed both, in a pack it repacked, while the delta's own pack was kept for the rest it
//! holds; or `repair-packs` lost it), or its base a delta on it (an old delta, left behind
//! undecodable, of an object stored again later the other way round). Where another copy
//! decodes, the index is switched to it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::Result;
use crate::ids::{ChunkId, PackId};
use crate::pack::{Codec, RecordKind};

/// Point every indexed delta that cannot be decoded at a copy that can, if one exists (a whole
/// copy first, else a delta whose base decodes); how many were switched.
pub(super) fn prefer_decodable(tx: &Transaction, files: &[(PackId, PathBuf)]) -> Result<u64> {
    let mut switched = 0;
    loop {
        let bad = undecodable(tx)?;
        if bad.is_empty() {
            return Ok(switched);
        }
        let mut changed = false;
        for (id, copies) in copies_of(tx, files, &bad)? {
            let mut good = copies.iter().find(|c| c.base.is_none());
            if good.is_none() {
                // Else a delta whose base is indexed and decodes.
                for c in &copies {
                    let Some(base) = c.base.filter(|&b| b != id && !bad.contains(&b)) else {
                        continue;
                    };
                    let indexed: Option<i64> = tx
                        .query_row("SELECT 1 FROM chunks WHERE id = ?1", [&base.0[..]], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    if indexed.is_some() {
                        good = Some(c);
                        break;
                    }
                }
            }
            let Some(good) = good else { continue };
            tx.execute(
                // Depths are set afterwards, for the deltas; a whole copy's is 0.
                "UPDATE chunks SET frame = ?1, offset = ?2, depth = 0 WHERE id = ?3",
                params![good.frame, good.offset as i64, &id.0[..]],
            )?;
            switched += 1;
            changed = true;
        }
        if !changed {
            return Ok(switched);
        }
    }
}

/// The indexed objects whose delta chains do not end in a whole object: a base not indexed,
/// or a cycle.
fn undecodable(tx: &Transaction) -> Result<HashSet<ChunkId>> {
    let bases = delta_bases(tx)?;
    let mut indexed = tx.prepare("SELECT 1 FROM chunks WHERE id = ?1")?;
    let mut decodes: HashMap<ChunkId, bool> = HashMap::new();
    for &start in bases.keys() {
        let mut chain = vec![start];
        let verdict = loop {
            let cur = *chain.last().expect("not empty");
            if let Some(&known) = decodes.get(&cur) {
                break known;
            }
            match bases.get(&cur) {
                None => {
                    break indexed
                        .query_row([&cur.0[..]], |_| Ok(()))
                        .optional()?
                        .is_some()
                }
                Some(base) if chain.contains(base) => break false,
                Some(&base) => chain.push(base),
            }
        };
        for id in chain {
            decodes.entry(id).or_insert(verdict);
        }
    }
    Ok(decodes
        .into_iter()
        .filter(|&(id, ok)| !ok && bases.contains_key(&id))
        .map(|(id, _)| id)
        .collect())
}

/// The base of every indexed object stored as a delta.
pub(super) fn delta_bases(tx: &Transaction) -> Result<HashMap<ChunkId, ChunkId>> {
    let mut bases = HashMap::new();
    let mut stmt = tx.prepare(
        "SELECT c.id, f.base FROM chunks c JOIN frames f ON f.id = c.frame
         WHERE f.codec = 2 AND f.base IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id = ChunkId::from_slice(&r.get::<_, Vec<u8>>(0)?);
        let base = ChunkId::from_slice(&r.get::<_, Vec<u8>>(1)?);
        if let (Some(id), Some(base)) = (id, base) {
            bases.insert(id, base);
        }
    }
    Ok(bases)
}

/// A copy of an object in an indexed pack.
struct Copy {
    /// The `frames` row of its record, and its offset in the record's decoded bytes.
    frame: i64,
    offset: u64,
    /// Its base, for a delta.
    base: Option<ChunkId>,
}

/// Every copy of the objects in `wanted` in the packs the index names.
fn copies_of(
    tx: &Transaction,
    files: &[(PackId, PathBuf)],
    wanted: &HashSet<ChunkId>,
) -> Result<HashMap<ChunkId, Vec<Copy>>> {
    let mut out: HashMap<ChunkId, Vec<Copy>> = HashMap::new();
    let mut pack_row = tx.prepare("SELECT id FROM packs WHERE name = ?1")?;
    let mut frame_row = tx.prepare("SELECT id FROM frames WHERE pack = ?1 AND offset = ?2")?;
    for (id, path) in files {
        let Some(pack): Option<i64> = pack_row.query_row([&id.0[..]], |r| r.get(0)).optional()?
        else {
            continue;
        };
        let mut found = Vec::new();
        crate::pack::scan(path, |rec| {
            let h = &rec.header;
            if h.kind != RecordKind::Chunks {
                return Ok(());
            }
            let mut at = 0u64;
            for e in &h.entries {
                if wanted.contains(&e.id) {
                    let base = (h.codec == Codec::ZstdDelta).then_some(h.base).flatten();
                    found.push((e.id, rec.payload_offset, at, base));
                }
                at += e.len as u64;
            }
            Ok(())
        })?;
        for (cid, payload_offset, offset, base) in found {
            let frame: Option<i64> = frame_row
                .query_row(params![pack, payload_offset as i64], |r| r.get(0))
                .optional()?;
            if let Some(frame) = frame {
                out.entry(cid).or_default().push(Copy {
                    frame,
                    offset,
                    base,
                });
            }
        }
    }
    Ok(out)
}
