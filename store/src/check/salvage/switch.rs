//! The index switched from the damaged packs to the new ones, in one transaction.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, Transaction};

use super::super::replaced::{live_lease, refuse_reader};
use super::COMMAND;
use crate::error::Result;
use crate::ids::{ChunkId, PackId};
use crate::ingest::{distrust_all, index_pack};
use crate::layout;
use crate::pack::{ChunkKind, SealedPack};
use crate::store::Store;

/// Drop the damaged packs' rows, index the new packs, and take back the snapshots' trust in
/// their chunks; the chunks the index named (not condemned ones) that it no longer can.
///
/// A delta whose base is lost cannot be decoded either, wherever it is stored: its row goes
/// too (and so on down the chains), so the next ingest stores it again rather than finding
/// it. The new packs are indexed after every damaged pack's rows and those deltas' are gone,
/// so an object salvaged from any damaged pack takes the place of a copy lost in another or
/// of an undecodable delta. A chunk condemned before goes back to `condemned` with its epoch,
/// so gc reclaims it as it would have.
///
/// `absent` are packs the index names whose files are missing (not given up): a row of one
/// for an object this run `added` to the new packs gives way to the new copy, since the pack
/// may be given up next, and the copy would then not be indexed.
pub(super) fn switch_index(
    store: &Store,
    damaged: &[PackId],
    sealed: &[SealedPack],
    (absent, added): (&[PackId], &HashSet<ChunkId>),
) -> Result<Vec<(ChunkId, ChunkKind)>> {
    store.db().immediate(|tx| {
        // The early check's answer may be stale: an ingest that looked a chunk up before
        // this transaction would commit a snapshot naming it.
        refuse_reader(
            &store.root().join(layout::DB_FILE),
            live_lease(tx)?,
            COMMAND,
        )?;
        let mut named = Vec::new();
        let mut condemned = HashMap::new();
        let mut rows = Vec::new();
        // Every damaged pack's rows are read before any is deleted: whether an id is live
        // must be asked of the index as it was.
        for id in damaged {
            let Some(row) = pack_row(tx, id)? else {
                continue;
            };
            rows.push(row);
            named.extend(rows_into(tx, "chunks", row)?);
            for (cid, _) in rows_into(tx, "condemned", row)? {
                // An id with a `chunks` row too, in any pack (stored again by an ingest after
                // gc condemned it), is live: it stays in `chunks`.
                let live: Option<i64> = tx
                    .query_row("SELECT 1 FROM chunks WHERE id = ?1", [&cid.0[..]], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if live.is_some() {
                    continue;
                }
                let epoch: i64 = tx.query_row(
                    "SELECT epoch FROM condemned WHERE id = ?1",
                    [&cid.0[..]],
                    |r| r.get(0),
                )?;
                condemned.insert(cid, epoch);
            }
        }
        for row in rows {
            for table in ["chunks", "condemned"] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table}
                         WHERE frame IN (SELECT id FROM frames WHERE pack = ?1)"
                    ),
                    [row],
                )?;
            }
            tx.execute("DELETE FROM frames WHERE pack = ?1", [row])?;
            tx.execute("DELETE FROM packs WHERE id = ?1", [row])?;
        }
        for id in absent {
            let Some(row) = pack_row(tx, id)? else {
                continue;
            };
            for (cid, _) in rows_into(tx, "chunks", row)? {
                if added.contains(&cid) {
                    tx.execute(
                        "DELETE FROM chunks WHERE id = ?1
                         AND frame IN (SELECT id FROM frames WHERE pack = ?2)",
                        rusqlite::params![&cid.0[..], row],
                    )?;
                }
            }
        }
        // Deltas whose bases are gone leave first, so that a whole copy salvaged of one
        // takes its place.
        named.extend(undecodable_deltas(tx)?);
        for pack in sealed {
            index_pack(store.root(), tx, pack, &HashMap::new())?;
        }
        for (cid, epoch) in &condemned {
            let moved = tx.execute(
                "INSERT OR IGNORE INTO condemned (id, frame, offset, len, kind, depth, epoch)
                 SELECT id, frame, offset, len, kind, depth, ?2 FROM chunks WHERE id = ?1",
                rusqlite::params![&cid.0[..], epoch],
            )?;
            if moved > 0 {
                tx.execute("DELETE FROM chunks WHERE id = ?1", [&cid.0[..]])?;
            }
        }
        named.extend(undecodable_deltas(tx)?);
        let mut present = tx.prepare(
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE id = ?1)
                 OR EXISTS (SELECT 1 FROM condemned WHERE id = ?1)",
        )?;
        let mut seen = HashSet::new();
        let mut lost = Vec::new();
        for (cid, kind) in named {
            if seen.insert(cid) && !present.query_row([&cid.0[..]], |r| r.get::<_, bool>(0))? {
                lost.push((cid, kind));
            }
        }
        distrust_all(tx)?;
        // The proof, for a run killed before it removes the damaged files, that this one
        // switched: an unindexed damaged pack with a name in `damaged/` may be one a run
        // stopped before its switch left there.
        for id in damaged {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, strftime('%s','now'))",
                [switched_key(id)],
            )?;
        }
        Ok(lost)
    })
}

fn switched_key(id: &PackId) -> String {
    format!("salvaged {}", id.hex())
}

/// Whether a salvage switched the index away from pack `id` (and has not yet removed its
/// file from `packs/`).
pub(super) fn switched(store: &Store, id: &PackId) -> Result<bool> {
    let found: Option<i64> = store
        .db()
        .conn()
        .query_row(
            "SELECT 1 FROM meta WHERE key = ?1",
            [switched_key(id)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// Every pack whose switch left its mark (FORMAT §14.1 step 5).
pub(super) fn all_switched(store: &Store) -> Result<Vec<PackId>> {
    let db = store.db();
    let mut stmt = db
        .conn()
        .prepare("SELECT key FROM meta WHERE key LIKE 'salvaged %'")?;
    let keys = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for key in keys {
        let key = key?;
        out.extend(key.strip_prefix("salvaged ").and_then(PackId::from_hex));
    }
    Ok(out)
}

/// The damaged files of `ids` are gone from `packs/`: their marks go too.
pub(super) fn forget_switched(store: &Store, ids: &[PackId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    store.db().immediate(|tx| {
        for id in ids {
            tx.execute("DELETE FROM meta WHERE key = ?1", [switched_key(id)])?;
        }
        Ok(())
    })
}

/// The index's row of pack `id`, if it names it.
fn pack_row(tx: &Transaction, id: &PackId) -> Result<Option<i64>> {
    Ok(tx
        .query_row("SELECT id FROM packs WHERE name = ?1", [&id.0[..]], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The rows of `table` in pack `row`'s frames: (id, kind).
fn rows_into(tx: &Transaction, table: &str, row: i64) -> Result<Vec<(ChunkId, ChunkKind)>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT c.id, c.kind FROM {table} c JOIN frames f ON f.id = c.frame WHERE f.pack = ?1"
    ))?;
    let mut rows = stmt.query([row])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let cid: Vec<u8> = r.get(0)?;
        let kind = ChunkKind::from_u8(r.get(1)?).unwrap_or(ChunkKind::Data);
        if let Some(cid) = ChunkId::from_slice(&cid) {
            out.push((cid, kind));
        }
    }
    Ok(out)
}

/// Delete the rows of objects in delta frames whose base has no row, until none is left;
/// the `chunks` rows deleted.
fn undecodable_deltas(tx: &Transaction) -> Result<Vec<(ChunkId, ChunkKind)>> {
    let orphaned = "SELECT f.id FROM frames f WHERE f.base IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = f.base)
          AND NOT EXISTS (SELECT 1 FROM condemned c WHERE c.id = f.base)";
    let mut out = Vec::new();
    loop {
        let frames: Vec<i64> = {
            let mut stmt = tx.prepare(&format!(
                "{orphaned} AND (EXISTS (SELECT 1 FROM chunks c WHERE c.frame = f.id)
                              OR EXISTS (SELECT 1 FROM condemned c WHERE c.frame = f.id))"
            ))?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if frames.is_empty() {
            return Ok(out);
        }
        for frame in frames {
            let mut stmt = tx.prepare_cached("SELECT id, kind FROM chunks WHERE frame = ?1")?;
            let mut rows = stmt.query([frame])?;
            while let Some(r) = rows.next()? {
                let cid: Vec<u8> = r.get(0)?;
                let kind = ChunkKind::from_u8(r.get(1)?).unwrap_or(ChunkKind::Data);
                if let Some(cid) = ChunkId::from_slice(&cid) {
                    out.push((cid, kind));
                }
            }
            for table in ["chunks", "condemned"] {
                tx.execute(&format!("DELETE FROM {table} WHERE frame = ?1"), [frame])?;
            }
        }
    }
}
