//! Synthesized layers: a snapshot's tree as a tar, and the difference between two trees as an
//! OCI diff layer with whiteouts.
//!
//! Both are written in the `--dir` pax dialect (see `tar::writer`), depth-first in name order,
//! so the same snapshots always give the same bytes. Names starting `.wh.` cannot be carried
//! by an OCI layer (they would read as whiteouts): they are left out, and each writer returns
//! the paths it left out (a directory's, not what is below it) for the caller to report.
//!
//! A diff layer from A to B holds, in B's order:
//! - every path that is new in B or whose node differs (type, mode, owner, time, content,
//!   link target, device, xattrs, link count), a new directory with all it holds;
//! - `.wh.NAME` for each name of A gone from B, and before a name whose type changed (a
//!   whiteout applies to the layers below only, so the new entry beside it stands);
//! - `.wh..wh..opq` in a directory of both whose every old name is gone, in place of one
//!   whiteout per name, followed by the directory's whole content;
//! - every name of a hard-link group of which any name is written, so links never point to a
//!   file of a lower layer that may be gone: the first in order as the file, the rest as links.
//!   That takes a first pass to find the groups.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::error::Result;
use crate::tar::MemberWriter;
use crate::tree::{changed_fields, join_path as join, DirPair, Kind, Node, Tree};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// How many left-out paths are kept (the rest are counted).
const MAX_LEFT_OUT: usize = 1000;

/// The paths a layer would have carried but cannot, since their names start `.wh.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// The first [`MAX_LEFT_OUT`], relative to the root, in the layer's order.
    pub paths: Vec<Vec<u8>>,
    /// How many in all.
    pub count: u64,
}

impl LeftOut {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn add(&mut self, path: &[u8]) {
        self.count += 1;
        if self.paths.len() < MAX_LEFT_OUT {
            self.paths.push(path.to_vec());
        }
    }
}

/// Where members go: counted only (the first pass of a diff), or written.
struct Synth<'t, 'w> {
    tree: &'t Tree<'t>,
    out: Option<MemberWriter<'w>>,
    /// Hard-link groups (inode numbers of `tree`) with a name written.
    groups: HashSet<u64>,
    /// Second pass of a diff: the groups to write whole.
    whole: HashSet<u64>,
    /// Where each group's file went in this layer.
    first: HashMap<u64, Vec<u8>>,
    left_out: LeftOut,
}

impl<'t, 'w> Synth<'t, 'w> {
    fn new(tree: &'t Tree<'t>, out: Option<&'w mut dyn Write>) -> Self {
        Synth {
            tree,
            out: out.map(MemberWriter::new),
            groups: HashSet::new(),
            whole: HashSet::new(),
            first: HashMap::new(),
            left_out: LeftOut::default(),
        }
    }

    fn node(&mut self, rel: &[u8], node: &Node) -> Result<()> {
        let grouped = node.kind == Kind::File && node.ino != 0;
        if grouped {
            self.groups.insert(node.ino);
        }
        let Some(w) = self.out.as_mut() else {
            return Ok(());
        };
        if grouped {
            if let Some(target) = self.first.get(&node.ino) {
                return w.hardlink(rel, node, target);
            }
            self.first.insert(node.ino, rel.to_vec());
        }
        let tree = self.tree;
        w.node(rel, node, &mut |o| tree.write_data(node, o))
    }

    fn whiteout(&mut self, dir: &[u8], name: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w.empty_file(&join(dir, &[WHITEOUT, name].concat())),
            None => Ok(()),
        }
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w.empty_file(&join(dir, OPAQUE)),
            None => Ok(()),
        }
    }

    /// `node` at `rel` (`depth` levels below the root) and, for a directory, everything
    /// below it.
    fn whole_subtree(&mut self, rel: &[u8], node: &Node, depth: usize) -> Result<()> {
        if self.whole_node(rel, node)? && node.is_dir() {
            let tree = self.tree;
            tree.walk_from(node, rel, depth, |p, n| self.whole_node(p, n))?;
        }
        Ok(())
    }

    /// One node of a subtree written whole. False for a name no layer can carry: left out,
    /// with everything below it.
    fn whole_node(&mut self, rel: &[u8], node: &Node) -> Result<bool> {
        if node.name.starts_with(WHITEOUT) {
            self.left_out.add(rel);
            return Ok(false);
        }
        self.node(rel, node)?;
        Ok(true)
    }

    /// In a part of B the diff has no other reason to write (`node` at `rel`, `depth` levels
    /// down): the names of groups written whole.
    fn group_members(&mut self, rel: &[u8], node: &Node, depth: usize) -> Result<()> {
        if self.whole.is_empty() || !self.group_member(rel, node)? || !node.is_dir() {
            return Ok(());
        }
        let tree = self.tree;
        tree.walk_from(node, rel, depth, |p, n| self.group_member(p, n))
    }

    /// One node of [`Synth::group_members`], written if of a group written whole. False for
    /// a name no layer can carry, which nothing below it is written for either.
    fn group_member(&mut self, rel: &[u8], node: &Node) -> Result<bool> {
        let in_group = node.kind == Kind::File && self.whole.contains(&node.ino);
        if node.name.starts_with(WHITEOUT) {
            if in_group {
                self.left_out.add(rel);
            }
            return Ok(false);
        }
        if in_group {
            self.node(rel, node)?;
        }
        Ok(true)
    }

    /// The changes from A's root `x` to B's root `y`. The pairs of directories being compared
    /// are kept on a stack rather than recursed into, which a crafted tree's depth could
    /// overflow (`tree/walk.rs`).
    fn diff_dir(&mut self, a: &Tree, x: &Node, y: &Node) -> Result<()> {
        let mut open = Vec::new();
        // Nodes met in each tree, which bound the walk (`Tree::count`).
        let mut met = (0, 0);
        self.open_pair((a, x), y, Vec::new(), 0, &mut open, &mut met)?;
        loop {
            // How deep the nodes of the innermost pair are.
            let depth = open.len();
            let Some(top) = open.last_mut() else {
                return Ok(());
            };
            let (la, lb, i, j) = (top.la.clone(), top.lb.clone(), top.i, top.j);
            let order = match (la.get(i), lb.get(j)) {
                (Some(p), Some(q)) => p.name.cmp(&q.name),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => {
                    open.pop();
                    continue;
                }
            };
            let rel = top.path.clone();
            match order {
                Ordering::Less => {
                    top.i += 1;
                    if !la[i].name.starts_with(WHITEOUT) {
                        self.whiteout(&rel, &la[i].name)?;
                    }
                }
                Ordering::Greater => {
                    top.j += 1;
                    self.whole_subtree(&join(&rel, &lb[j].name), &lb[j], depth)?;
                }
                Ordering::Equal => {
                    top.i += 1;
                    top.j += 1;
                    let (p, q) = (&la[i], &lb[j]);
                    let path = join(&rel, &q.name);
                    if q.name.starts_with(WHITEOUT) {
                        // Not carried by any layer: left out if this one would write it.
                        let written = p.kind != q.kind
                            || p.child != q.child
                            || !changed_fields(p, q).is_empty()
                            || (q.ino != 0 && self.whole.contains(&q.ino));
                        if written {
                            self.left_out.add(&path);
                        }
                    } else if p.kind != q.kind {
                        self.whiteout(&rel, &q.name)?;
                        self.whole_subtree(&path, q, depth)?;
                    } else {
                        let changed = !changed_fields(p, q).is_empty();
                        if q.is_dir() {
                            if changed {
                                self.node(&path, q)?;
                            }
                            self.open_pair((a, p), q, path, depth, &mut open, &mut met)?;
                        } else if changed || (q.ino != 0 && self.whole.contains(&q.ino)) {
                            self.node(&path, q)?;
                        }
                    }
                }
            }
        }
    }

    /// Start on directory `x` of A and `y` of B, both at `rel`, `depth` levels down: what
    /// takes no comparison name by name is written here, the rest is pushed onto `open`.
    fn open_pair(
        &mut self,
        (a, x): (&Tree, &Node),
        y: &Node,
        rel: Vec<u8>,
        depth: usize,
        open: &mut Vec<DirPair>,
        met: &mut (u64, u64),
    ) -> Result<()> {
        if x.child == y.child {
            return self.group_members(&rel, y, depth);
        }
        let pair = DirPair::open((a, x), (self.tree, y), rel, depth, met)?;
        let (la, lb) = (&pair.la, &pair.lb);
        let present = |name: &[u8]| lb.binary_search_by(|n| n.name.as_slice().cmp(name)).is_ok();
        if !la.is_empty() && !la.iter().any(|n| present(&n.name)) {
            self.opaque(&pair.path)?;
            for n in lb.iter() {
                self.whole_subtree(&join(&pair.path, &n.name), n, depth + 1)?;
            }
            return Ok(());
        }
        open.push(pair);
        Ok(())
    }

    fn finish(self) -> Result<LeftOut> {
        if let Some(w) = self.out {
            w.finish()?;
        }
        Ok(self.left_out)
    }
}

/// The whole tree as a tar (with no `out`, only what it leaves out is found).
pub(super) fn write_tree(tree: &Tree, out: Option<&mut dyn Write>) -> Result<LeftOut> {
    let mut s = Synth::new(tree, out);
    s.whole_subtree(b"", tree.root(), 0)?;
    s.finish()
}

/// The diff layer that turns `a` into `b`.
pub(super) fn write_diff(a: &Tree, b: &Tree, out: &mut dyn Write) -> Result<LeftOut> {
    let run = |s: &mut Synth| -> Result<()> {
        if !changed_fields(a.root(), b.root()).is_empty() {
            s.node(b"", b.root())?;
        }
        s.diff_dir(a, a.root(), b.root())
    };
    let mut count = Synth::new(b, None);
    run(&mut count)?;
    let mut s = Synth::new(b, Some(out));
    s.whole = count.groups;
    run(&mut s)?;
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::tree::crafted::{chain_over, chain_path, crafted_dir, deep_chain};
    use crate::tree::MAX_TREE_DEPTH;
    use crate::Store;

    fn too_deep() -> String {
        crate::tree::too_deep(chain_path(MAX_TREE_DEPTH).as_bytes()).to_string()
    }

    /// A layer of a crafted tree thousands of directories deep is refused as damage (a
    /// `serve` thread overflowed its stack at about 2000), as is its diff from a tree with
    /// something else at the bottom, which compares every level.
    #[test]
    fn layers_of_trees_nested_too_deep_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let deep = Tree::from_root(&store, deep_chain(&store, 5000));
        for out in [None, Some(&mut Vec::new() as &mut dyn Write)] {
            let err = write_tree(&deep, out).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{err}");
            assert_eq!(err.to_string(), too_deep());
        }
        let other = chain_over(&store, 5000, vec![crafted_dir(&store, b"x", Vec::new())]);
        let other = Tree::from_root(&store, other);
        let empty = Tree::from_root(&store, crafted_dir(&store, b"", Vec::new()));
        for (a, b) in [(&deep, &other), (&other, &deep), (&empty, &deep)] {
            let err = write_diff(a, b, &mut Vec::new()).unwrap_err();
            assert_eq!(err.to_string(), too_deep());
        }
    }

    #[test]
    fn layers_of_trees_as_deep_as_the_limit_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        // The directory `x` at the bottom is the deepest read: MAX_TREE_DEPTH - 1 levels down.
        let levels = MAX_TREE_DEPTH - 2;
        let a = Tree::from_root(&store, deep_chain(&store, levels));
        let x = crafted_dir(&store, b"x", Vec::new());
        let b = Tree::from_root(&store, chain_over(&store, levels, vec![x]));
        let mut layer = Vec::new();
        assert!(write_tree(&b, Some(&mut layer)).unwrap().is_empty());
        let mut diff = Vec::new();
        assert!(write_diff(&a, &b, &mut diff).unwrap().is_empty());
        // The new directory at the bottom is in the diff, and the unchanged ones above are
        // not: far fewer bytes than the whole tree.
        let name = format!("{}/x", chain_path(levels));
        assert!(diff.windows(name.len()).any(|w| w == name.as_bytes()));
        assert!(
            diff.len() < layer.len() / 10,
            "{} of {}",
            diff.len(),
            layer.len()
        );
    }
}
