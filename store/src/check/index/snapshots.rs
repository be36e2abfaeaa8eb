//! Snapshot rows, and every snapshot's recipe and tree against the index.

use std::collections::HashSet;

use crate::check::walk::Probe;
use crate::check::{reason, Bad, Verifier};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::list::ListRef;
use crate::object::ObjectSource;
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::Node;

/// Every snapshot row, in commit order. A row that does not parse is a problem and is left
/// out of the walks.
pub(in crate::check) fn load_snapshots(v: &mut Verifier) -> Result<Vec<Snapshot>> {
    type Parsed = std::result::Result<Snapshot, (String, String)>;
    let parsed: Vec<Parsed> = {
        let db = v.store.db();
        let mut stmt = db.conn().prepare(
            "SELECT id, name, parent, created, stream_len, stream_sha256, members, added_bytes,
                    labels, root, tree, image, exact_layer
             FROM snapshots NOT INDEXED ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let id: String = r.get(0)?;
            let parent: Option<String> = r.get(2)?;
            let labels: String = r.get(8)?;
            let root: Vec<u8> = r.get(9)?;
            let tree: Option<Vec<u8>> = r.get(10)?;
            let image: Option<String> = r.get(11)?;
            let exact_layer: bool = r.get(12)?;
            let fail = |what: String| (id.clone(), what);
            let parse = || -> Parsed {
                Ok(Snapshot {
                    id: SnapshotId::from_hex(&id).ok_or_else(|| fail("malformed id".into()))?,
                    name: r.get(1).map_err(|e| fail(e.to_string()))?,
                    parent: match &parent {
                        Some(p) => Some(
                            SnapshotId::from_hex(p)
                                .ok_or_else(|| fail("malformed parent".into()))?,
                        ),
                        None => None,
                    },
                    created: r.get(3).map_err(|e| fail(e.to_string()))?,
                    stream_len: r.get::<_, i64>(4).map_err(|e| fail(e.to_string()))? as u64,
                    stream_sha256: r.get(5).map_err(|e| fail(e.to_string()))?,
                    members: r.get::<_, i64>(6).map_err(|e| fail(e.to_string()))? as u64,
                    added_bytes: r.get::<_, i64>(7).map_err(|e| fail(e.to_string()))? as u64,
                    labels: serde_json::from_str(&labels)
                        .map_err(|e| fail(format!("malformed labels: {e}")))?,
                    root: ListRef::from_bytes(&root)
                        .map_err(|e| fail(format!("malformed recipe: {}", reason(&e))))?,
                    tree: tree
                        .map(|t| Node::from_bytes(&t))
                        .transpose()
                        .map_err(|e| fail(format!("malformed tree: {}", reason(&e))))?,
                    image: match &image {
                        Some(i) => serde_json::from_str(i)
                            .map_err(|e| fail(format!("malformed image settings: {e}")))?,
                        None => Default::default(),
                    },
                    exact_layer,
                })
            };
            Ok(parse())
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut snaps = Vec::with_capacity(parsed.len());
    for p in parsed {
        match p {
            Ok(s) if !s.matches_id() => v.problem(format!(
                "snapshot row {}: its columns do not match its id (the row, or an index of \
                 the snapshots table, is damaged)",
                s.id.hex()
            )),
            Ok(s) => snaps.push(s),
            Err((id, what)) => v.problem(format!("snapshot row {id}: {what}")),
        }
    }
    Ok(snaps)
}

fn indexed(store: &Store, id: &ChunkId) -> Result<bool> {
    let db = store.db();
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
    Ok(stmt.exists([&id.0[..]])?)
}

/// What the walks have checked already (objects are shared between snapshots).
#[derive(Default)]
struct Seen {
    pieces: HashSet<ChunkId>,
    lists: HashSet<ChunkId>,
    dirs: HashSet<ChunkId>,
}

/// A chunk list: its nodes are read (verified), its data chunks must be indexed.
fn check_list(v: &mut Verifier, list: &ListRef, seen: &mut Seen) -> Result<()> {
    let store = v.store;
    match list {
        ListRef::Inline(entries) => {
            for e in entries {
                if !indexed(store, &e.id)? {
                    v.bad_chunk(e.id, Bad::new("not in the index"));
                }
            }
        }
        ListRef::Tree { root, .. } => {
            if !seen.lists.insert(root.id) {
                return Ok(());
            }
            let probe = Probe::new(store, None);
            let mut missing = Vec::new();
            let stopped = probe.walk(list, &mut |e| {
                if !indexed(store, &e.id)? {
                    missing.push(e.id);
                }
                Ok(())
            });
            for id in missing {
                v.bad_chunk(id, Bad::new("not in the index"));
            }
            if let Some((id, e)) = stopped? {
                v.bad_chunk(id, Bad::new(reason(&e)));
            }
        }
    }
    Ok(())
}

/// Every snapshot's recipe and tree name only indexed chunks, and their metadata objects read
/// back (verified).
pub(in crate::check) fn check_snapshots(v: &mut Verifier, snaps: &[Snapshot]) -> Result<()> {
    let store = v.store;
    let mut seen = Seen::default();
    for s in snaps {
        let label = format!("snapshot {} ({})", s.short_id(), s.name);
        if s.root.total_len() != s.stream_len {
            v.problem(format!(
                "{label}: its recipe adds up to {} bytes, but its stream is {}",
                s.root.total_len(),
                s.stream_len
            ));
        }
        // The recipe: piece list → pieces → items → chunk lists.
        let probe = Probe::new(store, None);
        let mut pieces = Vec::new();
        let stopped = probe.walk(&s.root, &mut |e| {
            pieces.push(e.id);
            Ok(())
        })?;
        if let Some((id, e)) = stopped {
            v.bad_chunk(id, Bad::new(reason(&e)));
        }
        for p in pieces {
            if !seen.pieces.insert(p) {
                continue;
            }
            match store.object(&p).and_then(|o| piece::decode(&o)) {
                Ok(items) => {
                    for item in &items {
                        check_list(v, &item.chunks, &mut seen)?;
                    }
                }
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => v.bad_chunk(p, Bad::new(reason(&e))),
            }
        }
        // The tree: directory records → file chunk lists and subdirectories.
        let Some(root) = &s.tree else {
            continue;
        };
        if root.child.is_none() {
            v.problem(format!("{label}: the root of its tree is not a directory"));
            continue;
        }
        let tree = store.tree(s)?;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let id = dir.child.expect("only directories are stacked");
            if !seen.dirs.insert(id) {
                continue;
            }
            let nodes = match tree.readdir(&dir) {
                Ok(n) => n,
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => {
                    v.bad_chunk(id, Bad::new(reason(&e)));
                    continue;
                }
            };
            for n in nodes.iter() {
                if let Some(c) = &n.content {
                    check_list(v, &c.chunks, &mut seen)?;
                }
                if n.child.is_some() {
                    stack.push(n.clone());
                }
            }
        }
    }
    Ok(())
}
