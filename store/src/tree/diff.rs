//! Comparing two trees. Directory records are content-addressed, so equal records are skipped
//! without being read: only the directories that changed are visited.

use std::cmp::Ordering;

use super::node::{Kind, Node};
use super::vfs::Tree;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// From the root, without the leading `/`.
    pub path: Vec<u8>,
    pub kind: ChangeKind,
    /// For modifications: which attributes differ.
    pub fields: Vec<&'static str>,
}

/// Attributes that differ between two nodes at the same path (children not included).
pub fn changed_fields(a: &Node, b: &Node) -> Vec<&'static str> {
    // A directory's size and link count are the file system's, not the stream's: neither is
    // compared when either side is one (a type change says the rest).
    let no_dir = a.kind != Kind::Dir && b.kind != Kind::Dir;
    let mut f = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            f.push(name)
        }
    };
    check("type", a.kind != b.kind);
    check("mode", a.mode != b.mode);
    check("uid", a.uid != b.uid);
    check("gid", a.gid != b.gid);
    check("mtime", (a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec));
    check("size", a.size != b.size && no_dir);
    check(
        "content",
        a.kind == Kind::File && b.kind == Kind::File && !same_content(a, b),
    );
    check("link_target", a.link != b.link);
    check(
        "device",
        (a.rdev_major, a.rdev_minor) != (b.rdev_major, b.rdev_minor),
    );
    check("xattrs", a.xattrs != b.xattrs);
    check("nlink", a.nlink != b.nlink && no_dir);
    f
}

fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.content, &b.content) {
        (Some(x), Some(y)) => {
            x.chunks == y.chunks && x.segments == y.segments && x.data_offset == y.data_offset
        }
        _ => a.content == b.content,
    }
}

/// Whether two files whose stored forms differ hold the same bytes anyway: one file stored
/// sparse by one archiver and dense by another. Only then are bytes compared: the same bytes
/// cut by content make the same chunks, so two dense files differ exactly when their chunk
/// lists do.
fn same_bytes(ta: &Tree, a: &Node, tb: &Tree, b: &Node) -> Result<bool> {
    let sparse = |n: &Node| {
        n.content
            .as_ref()
            .is_some_and(|c| c.segments.is_some() || c.data_offset != 0)
    };
    if a.size != b.size || !(sparse(a) || sparse(b)) {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut off = 0;
    while off < a.size {
        let want = x.len().min((a.size - off) as usize);
        read_exact_at(ta, a, off, &mut x[..want])?;
        read_exact_at(tb, b, off, &mut y[..want])?;
        if x[..want] != y[..want] {
            return Ok(false);
        }
        off += want as u64;
    }
    Ok(true)
}

fn read_exact_at(tree: &Tree, node: &Node, mut offset: u64, mut buf: &mut [u8]) -> Result<()> {
    while !buf.is_empty() {
        let n = tree.read_at(node, offset, buf)?;
        if n == 0 {
            return Err(crate::error::Error::corrupt(format!(
                "a file of {} bytes ends at {offset}",
                node.size
            )));
        }
        offset += n as u64;
        buf = &mut buf[n..];
    }
    Ok(())
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        name.to_vec()
    } else {
        [path, b"/", name].concat()
    }
}

impl Tree<'_> {
    /// Every path that differs from `self` to `other`, sorted by path bytes. Everything under an
    /// added or removed directory is listed too.
    pub fn diff(&self, other: &Tree) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        let fields = changed_fields(self.root(), other.root());
        if !fields.is_empty() {
            out.push(Change {
                path: Vec::new(),
                kind: ChangeKind::Modified,
                fields,
            });
        }
        diff_dirs(self, self.root(), other, other.root(), &[], &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every path under `dir` (for added or removed directories).
    fn walk(&self, dir: &Node, path: &[u8], kind: ChangeKind, out: &mut Vec<Change>) -> Result<()> {
        for n in self.readdir(dir)?.iter() {
            let p = join(path, &n.name);
            out.push(Change {
                path: p.clone(),
                kind,
                fields: Vec::new(),
            });
            if n.is_dir() {
                self.walk(n, &p, kind, out)?;
            }
        }
        Ok(())
    }
}

fn diff_dirs(
    ta: &Tree,
    a: &Node,
    tb: &Tree,
    b: &Node,
    path: &[u8],
    out: &mut Vec<Change>,
) -> Result<()> {
    if a.child == b.child {
        return Ok(());
    }
    let (la, lb) = (ta.readdir(a)?, tb.readdir(b)?);
    let (mut i, mut j) = (0, 0);
    while i < la.len() || j < lb.len() {
        let order = match (la.get(i), lb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let n = &la[i];
                let p = join(path, &n.name);
                out.push(Change {
                    path: p.clone(),
                    kind: ChangeKind::Removed,
                    fields: Vec::new(),
                });
                if n.is_dir() {
                    ta.walk(n, &p, ChangeKind::Removed, out)?;
                }
                i += 1;
            }
            Ordering::Greater => {
                let n = &lb[j];
                let p = join(path, &n.name);
                out.push(Change {
                    path: p.clone(),
                    kind: ChangeKind::Added,
                    fields: Vec::new(),
                });
                if n.is_dir() {
                    tb.walk(n, &p, ChangeKind::Added, out)?;
                }
                j += 1;
            }
            Ordering::Equal => {
                let (x, y) = (&la[i], &lb[j]);
                let p = join(path, &x.name);
                let mut fields = changed_fields(x, y);
                if fields.contains(&"content") && same_bytes(ta, x, tb, y)? {
                    fields.retain(|f| *f != "content");
                }
                if !fields.is_empty() {
                    out.push(Change {
                        path: p.clone(),
                        kind: ChangeKind::Modified,
                        fields,
                    });
                }
                match (x.is_dir(), y.is_dir()) {
                    (true, true) => diff_dirs(ta, x, tb, y, &p, out)?,
                    (true, false) => ta.walk(x, &p, ChangeKind::Removed, out)?,
                    (false, true) => tb.walk(y, &p, ChangeKind::Added, out)?,
                    _ => {}
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
