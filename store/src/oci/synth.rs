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

use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::error::Result;
use crate::tar::MemberWriter;
use crate::tree::{changed_fields, Kind, Node, Tree};

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

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
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

    /// `node` at `rel` and, for a directory, everything below it.
    fn whole_subtree(&mut self, rel: &[u8], node: &Node) -> Result<()> {
        if node.name.starts_with(WHITEOUT) {
            self.left_out.add(rel);
            return Ok(());
        }
        self.node(rel, node)?;
        if node.is_dir() {
            for child in self.tree.readdir(node)?.iter() {
                self.whole_subtree(&join(rel, &child.name), child)?;
            }
        }
        Ok(())
    }

    /// In a part of B the diff has no other reason to write: the names of groups written whole.
    fn group_members(&mut self, rel: &[u8], node: &Node) -> Result<()> {
        if self.whole.is_empty() {
            return Ok(());
        }
        let in_group = node.kind == Kind::File && self.whole.contains(&node.ino);
        if node.name.starts_with(WHITEOUT) {
            if in_group {
                self.left_out.add(rel);
            }
            return Ok(());
        }
        if node.is_dir() {
            for child in self.tree.readdir(node)?.iter() {
                self.group_members(&join(rel, &child.name), child)?;
            }
        } else if in_group {
            self.node(rel, node)?;
        }
        Ok(())
    }

    /// The changes from directory `x` of A to directory `y` of B (both at `rel`).
    fn diff_dir(&mut self, a: &Tree, x: &Node, y: &Node, rel: &[u8]) -> Result<()> {
        if x.child == y.child {
            return self.group_members(rel, y);
        }
        let (la, lb) = (a.readdir(x)?, self.tree.readdir(y)?);
        let present = |name: &[u8]| lb.binary_search_by(|n| n.name.as_slice().cmp(name)).is_ok();
        if !la.is_empty() && !la.iter().any(|n| present(&n.name)) {
            self.opaque(rel)?;
            for n in lb.iter() {
                self.whole_subtree(&join(rel, &n.name), n)?;
            }
            return Ok(());
        }
        let (mut i, mut j) = (0, 0);
        while i < la.len() || j < lb.len() {
            let order = match (la.get(i), lb.get(j)) {
                (Some(p), Some(q)) => p.name.cmp(&q.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    if !la[i].name.starts_with(WHITEOUT) {
                        self.whiteout(rel, &la[i].name)?;
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.whole_subtree(&join(rel, &lb[j].name), &lb[j])?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (p, q) = (&la[i], &lb[j]);
                    let path = join(rel, &q.name);
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
                        self.whiteout(rel, &q.name)?;
                        self.whole_subtree(&path, q)?;
                    } else {
                        let changed = !changed_fields(p, q).is_empty();
                        if q.is_dir() {
                            if changed {
                                self.node(&path, q)?;
                            }
                            self.diff_dir(a, p, q, &path)?;
                        } else if changed || (q.ino != 0 && self.whole.contains(&q.ino)) {
                            self.node(&path, q)?;
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
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
    s.whole_subtree(b"", tree.root())?;
    s.finish()
}

/// The diff layer that turns `a` into `b`.
pub(super) fn write_diff(a: &Tree, b: &Tree, out: &mut dyn Write) -> Result<LeftOut> {
    let run = |s: &mut Synth| -> Result<()> {
        if !changed_fields(a.root(), b.root()).is_empty() {
            s.node(b"", b.root())?;
        }
        s.diff_dir(a, a.root(), b.root(), b"")
    };
    let mut count = Synth::new(b, None);
    run(&mut count)?;
    let mut s = Synth::new(b, Some(out));
    s.whole = count.groups;
    run(&mut s)?;
    s.finish()
}
