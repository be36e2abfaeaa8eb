//! Mark and condemn (FORMAT §15.3 steps 2–3): the live set of chunk ids, kept in a temp SQLite
//! table (`temp.gc_live`, spilled to a file, so memory stays bounded), then every indexed
//! chunk outside it moved to `condemned`.

use std::collections::HashSet;

use super::{now_secs, GcReport, ManualTx};
use crate::error::Result;
use crate::ids::ChunkId;
use crate::list::ListRef;
use crate::object::{Object, ObjectSource};
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// What the mark saw: the last snapshot (commit order) its read transaction held.
pub(super) struct Mark {
    pub max_seq: i64,
}

/// Add `id` to the live set: a chunk whose references, if it has any, are walked elsewhere (a
/// data chunk, a list node read by its list's walk, a delta base).
fn add(store: &Store, id: &ChunkId) -> Result<()> {
    let db = store.db();
    let mut stmt = db
        .conn()
        .prepare_cached("INSERT OR IGNORE INTO temp.gc_live (id) VALUES (?1)")?;
    stmt.execute([&id.0[..]])?;
    Ok(())
}

/// Add `id`, an object whose references its caller walks next (a piece, a directory record, a
/// list's root), to the live set; true unless they were walked before. Being live is not
/// enough to skip it: `close_bases` makes delta bases live without walking them, and a
/// snapshot committed during gc may reach such a base as its own piece or record (the same
/// content as a forgotten snapshot's), whose chunks nothing else marks.
fn visit(store: &Store, id: &ChunkId) -> Result<bool> {
    let db = store.db();
    let mut stmt = db.conn().prepare_cached(
        "INSERT INTO temp.gc_live (id, walked) VALUES (?1, 1)
         ON CONFLICT (id) DO UPDATE SET walked = 1 WHERE walked = 0",
    )?;
    Ok(stmt.execute([&id.0[..]])? == 1)
}

/// Reads objects through the store and marks each one read (the nodes of a list walk).
struct Marking<'s>(&'s Store);

impl ObjectSource for Marking<'_> {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        add(self.0, id)?;
        self.0.object(id)
    }
}

/// A chunk list: its nodes and its entries. A list whose root node was walked before is
/// skipped (lists are content-addressed).
fn walk_list(store: &Store, list: &ListRef) -> Result<()> {
    match list {
        ListRef::Inline(entries) => entries.iter().try_for_each(|e| add(store, &e.id)),
        ListRef::Tree { root, .. } => {
            if !visit(store, &root.id)? {
                return Ok(());
            }
            list.for_each(&Marking(store), &mut |e| add(store, &e.id))
        }
    }
}

/// Everything one snapshot reaches, the same walk `verify` makes (check/index/snapshots.rs): recipe
/// (piece list → pieces → item chunk lists) and tree (directory records → file chunk lists).
fn walk_snapshot(store: &Store, s: &Snapshot) -> Result<()> {
    if let ListRef::Tree { root, .. } = &s.root {
        add(store, &root.id)?;
    }
    s.root.for_each(&Marking(store), &mut |e| {
        if visit(store, &e.id)? {
            for item in piece::decode(&store.object(&e.id)?)? {
                walk_list(store, &item.chunks)?;
            }
        }
        Ok(())
    })?;
    let Some(root) = &s.tree else {
        return Ok(());
    };
    let tree = store.tree(s)?;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let id = dir.child.expect("only directories are stacked");
        if !visit(store, &id)? {
            continue;
        }
        for n in tree.readdir(&dir)?.iter() {
            if let Some(c) = &n.content {
                walk_list(store, &c.chunks)?;
            }
            if n.child.is_some() {
                stack.push(n.clone());
            }
        }
    }
    Ok(())
}

/// Delta bases of live objects are live, transitively (chains are at most 16 long).
fn close_bases(store: &Store) -> Result<()> {
    let db = store.db();
    loop {
        let mut added = 0;
        for table in ["chunks", "condemned"] {
            added += db.conn().execute(
                &format!(
                    "INSERT OR IGNORE INTO temp.gc_live (id)
                     SELECT f.base FROM temp.gc_live l JOIN {table} c ON c.id = l.id
                     JOIN frames f ON f.id = c.frame
                     WHERE f.codec = 2 AND f.base IS NOT NULL"
                ),
                [],
            )?;
        }
        if added == 0 {
            return Ok(());
        }
    }
}

/// Step 2: the live set as of one read transaction. Takes no lock. `dead_leases`: leases
/// whose process is gone but whose rows are still there (a dry run deletes nothing): their
/// pins keep nothing.
pub(super) fn mark(store: &Store, dead_leases: &[i64]) -> Result<Mark> {
    store.db().conn().execute_batch(
        "PRAGMA temp_store = FILE;
         DROP TABLE IF EXISTS temp.gc_live;
         CREATE TEMP TABLE gc_live (id BLOB PRIMARY KEY, walked INTEGER NOT NULL DEFAULT 0)
             WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS gc_dead_leases (id INTEGER PRIMARY KEY);
         DELETE FROM temp.gc_dead_leases;",
    )?;
    for id in dead_leases {
        store
            .db()
            .conn()
            .execute("INSERT INTO temp.gc_dead_leases (id) VALUES (?1)", [id])?;
    }
    let tx = ManualTx::begin(store, false)?;
    let max_seq: i64 =
        store
            .db()
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM snapshots", [], |r| {
                r.get(0)
            })?;
    for s in store.list(None)? {
        walk_snapshot(store, &s)?;
    }
    // Snapshots readers pin stay live once forgotten (FORMAT §15.4).
    for s in store.pinned_after(0)? {
        walk_snapshot(store, &s)?;
    }
    close_bases(store)?;
    // Only the temp table was written; committing keeps it.
    tx.commit()?;
    Ok(Mark { max_seq })
}

/// Whether the live set holds a chunk neither `chunks` nor `condemned` has a row for.
pub(super) fn live_chunks_unindexed(store: &Store) -> Result<bool> {
    Ok(store.db().conn().query_row(
        "SELECT EXISTS (SELECT 1 FROM temp.gc_live l
          WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = l.id)
            AND NOT EXISTS (SELECT 1 FROM condemned c WHERE c.id = l.id))",
        [],
        |r| r.get(0),
    )?)
}

/// Step 3, under the commit lock in one transaction: snapshots committed since the mark (and
/// pinned ones the mark did not see) join the live set, and every other indexed chunk is
/// condemned under a new epoch.
pub(super) fn condemn(
    store: &Store,
    mark: &Mark,
    on_wait: &dyn Fn(&str),
    report: &mut GcReport,
) -> Result<()> {
    let _lock = store.commit_lock(on_wait)?;
    let tx = ManualTx::begin(store, true)?;
    let newer: HashSet<String> = {
        let db = store.db();
        let mut stmt = db
            .conn()
            .prepare("SELECT id FROM snapshots WHERE seq > ?1")?;
        let rows = stmt.query_map([mark.max_seq], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // A snapshot the mark did not see may have been pinned and then forgotten since: only the
    // pin keeps it now.
    let pinned = store.pinned_after(mark.max_seq)?;
    if !newer.is_empty() || !pinned.is_empty() {
        for s in store.list(None)? {
            if newer.contains(&s.id.hex()) {
                walk_snapshot(store, &s)?;
            }
        }
        for s in &pinned {
            walk_snapshot(store, s)?;
        }
        close_bases(store)?;
    }
    {
        let db = store.db();
        let c = db.conn();
        let epoch: i64 = c.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'gc_epoch' RETURNING value",
            [],
            |r| r.get(0),
        )?;
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![format!("condemned_at:{epoch}"), now_secs()],
        )?;
        report.chunks_condemned = c.execute(
            "INSERT OR REPLACE INTO condemned (id, frame, offset, len, kind, depth, epoch)
             SELECT id, frame, offset, len, kind, depth, ?1 FROM chunks
             WHERE id NOT IN (SELECT id FROM temp.gc_live)",
            [epoch],
        )? as u64;
        c.execute(
            "DELETE FROM chunks WHERE id NOT IN (SELECT id FROM temp.gc_live)",
            [],
        )?;
    }
    tx.commit()
}

/// How many indexed chunks the live set leaves out (for a dry run).
pub(super) fn unreferenced(store: &Store) -> Result<u64> {
    Ok(store.db().conn().query_row(
        "SELECT COUNT(*) FROM chunks WHERE id NOT IN (SELECT id FROM temp.gc_live)",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}
