//! Phase 3 of `verify`: what each bad chunk damages. Every snapshot's recipe and tree are
//! walked with the bad chunks refused; what a walk cannot get past is what it hurts. Results
//! are kept per piece, list and directory record, which snapshots share.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use rusqlite::OptionalExtension;

use super::walk::Probe;
use super::{chunk_kind, chunk_problem, reason, Bad, Hurt, Problem, Verifier};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::list::ListRef;
use crate::object::ObjectSource;
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{Node, Tree, MAX_TREE_DEPTH};

/// Paths below a directory (relative, no leading `/`; empty: the directory itself) and the
/// bad chunks each one uses.
type DirHits = Rc<Vec<(Vec<u8>, Vec<ChunkId>)>>;

/// Per bad chunk: (snapshot index, path or None for the stream) of each use.
type Uses = HashMap<ChunkId, BTreeSet<(usize, Option<Vec<u8>>)>>;

struct Attr<'a> {
    store: &'a Store,
    bad: &'a HashMap<ChunkId, Bad>,
    /// Chunks that turned out bad only now.
    extra: HashMap<ChunkId, Bad>,
    lists: HashMap<ChunkId, Vec<ChunkId>>,
    pieces: HashMap<ChunkId, Vec<ChunkId>>,
    dirs: HashMap<ChunkId, DirHits>,
    /// Some metadata could not be read, so some uses of bad chunks may be unknown.
    incomplete: bool,
}

impl Attr<'_> {
    fn is_bad(&self, id: &ChunkId) -> bool {
        self.bad.contains_key(id) || self.extra.contains_key(id)
    }

    /// A walk cannot get past metadata object `id`.
    fn found_bad(&mut self, id: ChunkId, e: &Error) {
        self.incomplete = true;
        if !self.is_bad(&id) {
            self.extra.insert(id, Bad::new(reason(e)));
        }
    }

    /// The bad chunks a list uses: its entries and its nodes.
    fn list(&mut self, list: &ListRef) -> Result<Vec<ChunkId>> {
        let root = match list {
            ListRef::Inline(entries) => {
                return Ok(entries
                    .iter()
                    .filter(|e| self.is_bad(&e.id))
                    .map(|e| e.id)
                    .collect())
            }
            ListRef::Tree { root, .. } => root.id,
        };
        if let Some(hits) = self.lists.get(&root) {
            return Ok(hits.clone());
        }
        let mut hits = Vec::new();
        let failed = {
            let refuse = |id: &ChunkId| self.is_bad(id);
            let probe = Probe::new(self.store, Some(&refuse));
            probe.walk(list, &mut |e| {
                if self.is_bad(&e.id) {
                    hits.push(e.id);
                }
                Ok(())
            })?
        };
        if let Some((id, e)) = failed {
            self.found_bad(id, &e);
            hits.push(id);
        }
        self.lists.insert(root, hits.clone());
        Ok(hits)
    }

    /// The bad chunks a piece uses: itself, or its items' lists.
    fn piece(&mut self, id: ChunkId) -> Result<Vec<ChunkId>> {
        if let Some(hits) = self.pieces.get(&id) {
            return Ok(hits.clone());
        }
        let hits = if self.is_bad(&id) {
            self.incomplete = true;
            vec![id]
        } else {
            match self.store.object(&id).and_then(|o| piece::decode(&o)) {
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => {
                    self.found_bad(id, &e);
                    vec![id]
                }
                Ok(items) => {
                    let mut hits = Vec::new();
                    for item in &items {
                        hits.extend(self.list(&item.chunks)?);
                    }
                    hits
                }
            }
        };
        self.pieces.insert(id, hits.clone());
        Ok(hits)
    }

    /// The bad chunks a snapshot's stream uses.
    fn stream(&mut self, s: &Snapshot) -> Result<BTreeSet<ChunkId>> {
        let mut pieces = Vec::new();
        let mut hits = BTreeSet::new();
        let failed = {
            let refuse = |id: &ChunkId| self.is_bad(id);
            let probe = Probe::new(self.store, Some(&refuse));
            probe.walk(&s.root, &mut |e| {
                pieces.push(e.id);
                Ok(())
            })?
        };
        if let Some((id, e)) = failed {
            self.found_bad(id, &e);
            hits.insert(id);
        }
        for p in pieces {
            hits.extend(self.piece(p)?);
        }
        Ok(hits)
    }

    /// The paths below directory `dir` (`depth` levels below its tree's root) that use bad
    /// chunks.
    fn dir(&mut self, tree: &Tree, dir: &Node, depth: usize) -> Result<DirHits> {
        let id = dir.child.expect("a directory");
        if let Some(hits) = self.dirs.get(&id) {
            return Ok(hits.clone());
        }
        if depth >= MAX_TREE_DEPTH {
            // A crafted tree that no reader goes into (the walk of the trees reports it):
            // not recursed into either, which could overflow the stack. What is below goes
            // unattributed, so the attribution is said to be incomplete.
            self.incomplete = true;
            return Ok(Rc::default());
        }
        let mut out = Vec::new();
        if self.is_bad(&id) {
            self.incomplete = true;
            out.push((Vec::new(), vec![id]));
        } else {
            match tree.readdir(dir) {
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => {
                    self.found_bad(id, &e);
                    out.push((Vec::new(), vec![id]));
                }
                Ok(nodes) => {
                    for n in nodes.iter() {
                        if let Some(c) = &n.content {
                            let hits = self.list(&c.chunks)?;
                            if !hits.is_empty() {
                                out.push((n.name.clone(), hits));
                            }
                        }
                        if n.child.is_some() {
                            for (rel, hits) in self.dir(tree, n, depth + 1)?.iter() {
                                let mut path = n.name.clone();
                                if !rel.is_empty() {
                                    path.push(b'/');
                                    path.extend_from_slice(rel);
                                }
                                out.push((path, hits.clone()));
                            }
                        }
                    }
                }
            }
        }
        let out = Rc::new(out);
        self.dirs.insert(id, out.clone());
        Ok(out)
    }
}

/// Fill in where each bad chunk is stored and what kind it is, from the index.
fn locate(store: &Store, bad: &mut HashMap<ChunkId, Bad>) -> Result<()> {
    let db = store.db();
    let mut stmt = db.conn().prepare_cached(
        "SELECT p.name, f.offset, c.kind FROM chunks c
         JOIN frames f ON f.id = c.frame JOIN packs p ON p.id = f.pack WHERE c.id = ?1",
    )?;
    for (id, b) in bad.iter_mut() {
        if b.pack.is_some() && b.kind.is_some() {
            continue;
        }
        let found = stmt
            .query_row([&id.0[..]], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        if let Some((pack, offset, kind)) = found {
            if b.pack.is_none() {
                b.pack = PackId::from_slice(&pack);
                b.offset = Some(offset.max(0) as u64);
            }
            if b.kind.is_none() {
                b.kind = chunk_kind(kind);
            }
        }
    }
    Ok(())
}

/// Turn the bad chunks into problems, each with what it hurts.
pub(super) fn report_bad(v: &mut Verifier, snaps: &[Snapshot]) -> Result<()> {
    if v.bad.is_empty() {
        return Ok(());
    }
    let store = v.store;
    let mut hurts: Uses = HashMap::new();
    let (extra, incomplete) = {
        let mut a = Attr {
            store,
            bad: &v.bad,
            extra: HashMap::new(),
            lists: HashMap::new(),
            pieces: HashMap::new(),
            dirs: HashMap::new(),
            incomplete: false,
        };
        for (i, s) in snaps.iter().enumerate() {
            for id in a.stream(s)? {
                hurts.entry(id).or_default().insert((i, None));
            }
            let Some(root) = s.tree.as_ref().filter(|r| r.child.is_some()) else {
                continue;
            };
            let tree = store.tree(s)?;
            for (rel, ids) in a.dir(&tree, root, 0)?.iter() {
                let mut path = vec![b'/'];
                path.extend_from_slice(rel);
                for id in ids {
                    hurts
                        .entry(*id)
                        .or_default()
                        .insert((i, Some(path.clone())));
                }
            }
        }
        (a.extra, a.incomplete)
    };
    for (id, b) in extra {
        v.bad.entry(id).or_insert(b);
    }
    let mut bad = std::mem::take(&mut v.bad);
    locate(store, &mut bad)?;
    let mut bad: Vec<(ChunkId, Bad)> = bad.into_iter().collect();
    bad.sort_by(|(a, x), (b, y)| (x.pack, x.offset, a).cmp(&(y.pack, y.offset, b)));
    for (id, b) in bad {
        let hurts: Vec<Hurt> = hurts
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(i, path)| Hurt {
                snapshot: snaps[i].id,
                name: snaps[i].name.clone(),
                path,
            })
            .collect();
        v.problems.push(Problem {
            what: chunk_problem(b.kind, &id, &b.what),
            reason: b.what,
            pack: b.pack,
            offset: b.offset,
            chunk: Some(id),
            unreferenced: hurts.is_empty() && !incomplete,
            hurts,
        });
    }
    Ok(())
}
