//! Snapshot rows, and every snapshot's recipe and tree against the index.

use std::collections::{HashMap, HashSet};

use crate::check::walk::Probe;
use crate::check::{reason, Bad, Verifier};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, SnapshotId};
use crate::list::ListRef;
use crate::object::ObjectSource;
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{join_path as join, too_deep, Node, MAX_TREE_DEPTH};

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
    /// Directory records, each with the deepest it was walked from.
    dirs: HashMap<ChunkId, usize>,
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
        match recipe_len(&s.root) {
            Some(len) if len == s.stream_len => {}
            Some(len) => v.problem(format!(
                "{label}: its recipe adds up to {len} bytes, but its stream is {}",
                s.stream_len
            )),
            None => v.problem(format!(
                "{label}: its recipe's lengths add up past 2^64 bytes, but its stream is {}",
                s.stream_len
            )),
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
        // Each directory with how deep it is and its path, for a tree too deep to read.
        let mut stack = vec![(root.clone(), 0, Vec::new())];
        let mut deep = false;
        while let Some((dir, depth, path)) = stack.pop() {
            let id = dir.child.expect("only directories are stacked");
            if depth >= MAX_TREE_DEPTH {
                // Every reader refuses it; said once a snapshot, and not walked on, so that
                // a crafted chain of records costs no more than this.
                if !deep {
                    deep = true;
                    v.problem(format!("{label}: {}", reason(&too_deep(&path))));
                }
                continue;
            }
            // A record walked before is walked again only from deeper down (records are
            // shared, within and across trees): what is below it may then pass the limit.
            match seen.dirs.get(&id) {
                Some(&walked) if walked >= depth => continue,
                _ => seen.dirs.insert(id, depth),
            };
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
                    stack.push((n.clone(), depth + 1, join(&path, &n.name)));
                }
            }
        }
    }
    Ok(())
}

/// The bytes a recipe adds up to, None past u64: a damaged or crafted inline list's lengths
/// may overflow, which must be reported rather than panic (or wrap) here.
fn recipe_len(list: &ListRef) -> Option<u64> {
    match list {
        ListRef::Inline(entries) => entries
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.len)),
        ListRef::Tree { root, .. } => Some(root.len),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::check::hurts::report_bad;
    use crate::ids::SnapshotId;
    use crate::list::Entry;
    use crate::tree::crafted::deep_chain;

    /// A snapshot whose recipe's lengths pass 2^64 (as no decoded one can, but verify must
    /// not count on it) and whose tree is a crafted chain of records thousands deep: both
    /// are reported, and neither the walks nor the attribution of bad chunks panic or
    /// overflow.
    #[test]
    fn a_crafted_recipe_and_a_tree_nested_too_deep_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let piece = |n: u8| Entry {
            id: ChunkId([n; 32]),
            len: u64::MAX,
            aux: 0,
        };
        let snap = Snapshot {
            id: SnapshotId([1; 32]),
            name: "crafted".into(),
            parent: None,
            created: "2024-01-01T00:00:00Z".into(),
            stream_len: 0,
            stream_sha256: String::new(),
            members: 0,
            added_bytes: 0,
            labels: Default::default(),
            root: ListRef::Inline(vec![piece(1), piece(2)]),
            tree: Some(deep_chain(&store, 5000)),
            image: Default::default(),
            exact_layer: false,
        };
        let mut v = Verifier {
            store: &store,
            problems: Vec::new(),
            notes: Vec::new(),
            bad: HashMap::new(),
            unlisted: Vec::new(),
            seen_in: Vec::new(),
        };
        check_snapshots(&mut v, std::slice::from_ref(&snap)).unwrap();
        let said = |what: &str| v.problems.iter().filter(|p| p.what.contains(what)).count();
        assert_eq!(said("past 2^64"), 1);
        assert_eq!(said("directories nested over 1024 levels deep"), 1);
        // The pieces are not in the store: bad chunks, whose uses are looked for in the tree.
        assert!(!v.bad.is_empty());
        report_bad(&mut v, &[snap]).unwrap();
    }
}
