//! Indexing a sealed pack at commit: its frames and chunks go into the index, read back
//! from the pack file itself, so no row can name bytes that are not durably there.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use rusqlite::params;

use crate::error::{IoContext, Result};
use crate::ids::ChunkId;
use crate::layout;
use crate::pack::{ChunkKind, RecordKind, SealedPack};

/// Index one sealed pack's records. Chunks already indexed (stored twice by concurrent
/// ingests) keep their first location and depth.
pub(crate) fn index_pack(
    root: &Path,
    tx: &rusqlite::Transaction,
    pack: &SealedPack,
    depths: &HashMap<ChunkId, u32>,
) -> Result<()> {
    let path = layout::pack_path(root, &pack.id);
    let file = File::open(&path).at(&path)?;
    index_pack_file(tx, file, &path, pack, depths)
}

/// `index_pack` of a pack read through `file` (`path` names it in errors): the commit indexes
/// its last pack while that pack is synced and renamed to its name. The transaction commits
/// only once it is.
pub(crate) fn index_pack_file(
    tx: &rusqlite::Transaction,
    file: File,
    path: &Path,
    pack: &SealedPack,
    depths: &HashMap<ChunkId, u32>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO packs (name, size, created) VALUES (?1, ?2, strftime('%s','now'))",
        params![&pack.id.0[..], pack.size as i64],
    )?;
    let pack_row = tx.last_insert_rowid();
    let mut frame_stmt = tx.prepare_cached(
        "INSERT INTO frames (pack, offset, stored_len, raw_len, codec, base)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut rows = Vec::new();
    crate::pack::scan_file(file, path, |rec| {
        let h = &rec.header;
        if h.kind != RecordKind::Chunks {
            return Ok(());
        }
        frame_stmt.execute(params![
            pack_row,
            rec.payload_offset as i64,
            h.stored_len,
            h.raw_len,
            h.codec as u8,
            h.base.map(|b| b.0.to_vec()),
        ])?;
        let frame = tx.last_insert_rowid();
        let mut offset = 0u64;
        for e in &h.entries {
            let depth = depths.get(&e.id).copied().unwrap_or(0);
            rows.push(ChunkRow {
                id: e.id,
                frame,
                offset,
                len: e.len,
                kind: e.kind,
                depth,
            });
            offset += e.len as u64;
            if rows.len() == SORTED_ROWS {
                insert_chunks(tx, &mut rows)?;
            }
        }
        Ok(())
    })?;
    insert_chunks(tx, &mut rows)
}

/// Chunk rows sorted and inserted together, at most: 4 MiB of them. A pack of tiny files
/// holds a million.
const SORTED_ROWS: usize = 1 << 16;

/// Insert `rows` (and clear it) in id order, many to a statement: the ids are random, and
/// inserting them is most of a cold commit's time. The sort is stable: of two copies of a
/// chunk, the first is kept, as it is across calls.
fn insert_chunks(tx: &rusqlite::Transaction, rows: &mut Vec<ChunkRow>) -> Result<()> {
    rows.sort_by_key(|r| r.id);
    let mut batch = rows.chunks_exact(CHUNK_ROWS_PER_INSERT);
    let mut stmt = tx.prepare_cached(&chunk_insert(CHUNK_ROWS_PER_INSERT))?;
    for group in &mut batch {
        bind_chunk_rows(&mut stmt, group)?;
        stmt.raw_execute()?;
    }
    let rest = batch.remainder();
    if !rest.is_empty() {
        let mut stmt = tx.prepare(&chunk_insert(rest.len()))?;
        bind_chunk_rows(&mut stmt, rest)?;
        stmt.raw_execute()?;
    }
    rows.clear();
    Ok(())
}

/// Rows of the chunks table inserted by one statement (6 parameters each: well under
/// SQLite's limit of 32766).
const CHUNK_ROWS_PER_INSERT: usize = 128;

struct ChunkRow {
    id: ChunkId,
    frame: i64,
    offset: u64,
    len: u32,
    kind: ChunkKind,
    depth: u32,
}

/// An insert of `rows` chunk rows. Chunks already indexed (stored twice by concurrent
/// ingests) keep their first location and depth.
fn chunk_insert(rows: usize) -> String {
    format!(
        "INSERT OR IGNORE INTO chunks (id, frame, offset, len, kind, depth) VALUES {}",
        vec!["(?,?,?,?,?,?)"; rows].join(",")
    )
}

fn bind_chunk_rows(stmt: &mut rusqlite::Statement, rows: &[ChunkRow]) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        let at = 6 * i + 1;
        stmt.raw_bind_parameter(at, &r.id.0[..])?;
        stmt.raw_bind_parameter(at + 1, r.frame)?;
        stmt.raw_bind_parameter(at + 2, r.offset as i64)?;
        stmt.raw_bind_parameter(at + 3, r.len)?;
        stmt.raw_bind_parameter(at + 4, r.kind as u8)?;
        stmt.raw_bind_parameter(at + 5, r.depth)?;
    }
    Ok(())
}
