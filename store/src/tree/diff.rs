//! Comparing two trees. Directory records are content-addressed, so equal records are skipped
//! without being read: only the directories that changed are visited.

use std::cmp::Ordering;
use std::sync::Arc;

use super::node::{Kind, Node};
use super::record::Dir;
use super::vfs::Tree;
use super::walk::join;
#[cfg(doc)]
use super::MAX_TREE_DEPTH;
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

impl Tree<'_> {
    /// Every path that differs from `self` to `other`, sorted by path bytes. Everything under an
    /// added or removed directory is listed too. Directories nested over [`MAX_TREE_DEPTH`]
    /// levels (which no ingest makes) are `Corrupt`.
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
        diff_dirs(self, other, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every path below `dir` (at `path`, `depth` levels down), for added or removed
    /// directories.
    fn walk_all(
        &self,
        dir: &Node,
        path: &[u8],
        depth: usize,
        kind: ChangeKind,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        self.walk_from(dir, path, depth, |p, _| {
            out.push(Change {
                path: p.to_vec(),
                kind,
                fields: Vec::new(),
            });
            Ok(true)
        })
    }
}

/// Two directories at the same path being compared (here, and by the diff layers of
/// `oci/synth.rs`): their nodes, and the next of each.
pub(crate) struct Pair {
    pub la: Arc<Dir>,
    pub lb: Arc<Dir>,
    pub i: usize,
    pub j: usize,
    pub path: Vec<u8>,
}

impl Pair {
    /// Directory `x` of one tree and `y` of the other, both at `path`, `depth` levels down,
    /// read for comparing; their nodes are counted into `met` (one tally a tree).
    pub(crate) fn open(
        (ta, x): (&Tree, &Node),
        (tb, y): (&Tree, &Node),
        path: Vec<u8>,
        depth: usize,
        met: &mut (u64, u64),
    ) -> Result<Pair> {
        let (la, lb) = (
            ta.readdir_at(x, &path, depth)?,
            tb.readdir_at(y, &path, depth)?,
        );
        ta.count(&mut met.0, la.len())?;
        tb.count(&mut met.1, lb.len())?;
        Ok(Pair {
            la,
            lb,
            i: 0,
            j: 0,
            path,
        })
    }
}

/// The changes below the roots of `ta` and `tb`. The pairs of directories open are kept on
/// a stack rather than recursed into, which a crafted tree's depth could overflow (`walk.rs`).
fn diff_dirs(ta: &Tree, tb: &Tree, out: &mut Vec<Change>) -> Result<()> {
    let mut open = Vec::new();
    // Nodes met in each tree, which bound the walk as they bound `Tree::walk`.
    let mut met = (0, 0);
    let (a, b) = (ta.root(), tb.root());
    if a.child != b.child {
        open.push(Pair::open((ta, a), (tb, b), Vec::new(), 0, &mut met)?);
    }
    loop {
        // How deep the nodes of the innermost pair are.
        let depth = open.len();
        let Some(top) = open.last_mut() else {
            return Ok(());
        };
        let (la, lb, i, j) = (top.la.clone(), top.lb.clone(), top.i, top.j);
        let order = match (la.get(i), lb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => {
                open.pop();
                continue;
            }
        };
        match order {
            Ordering::Less => {
                top.i += 1;
                let n = &la[i];
                let p = join(&top.path, &n.name);
                out.push(Change {
                    path: p.clone(),
                    kind: ChangeKind::Removed,
                    fields: Vec::new(),
                });
                if n.is_dir() {
                    ta.walk_all(n, &p, depth, ChangeKind::Removed, out)?;
                }
            }
            Ordering::Greater => {
                top.j += 1;
                let n = &lb[j];
                let p = join(&top.path, &n.name);
                out.push(Change {
                    path: p.clone(),
                    kind: ChangeKind::Added,
                    fields: Vec::new(),
                });
                if n.is_dir() {
                    tb.walk_all(n, &p, depth, ChangeKind::Added, out)?;
                }
            }
            Ordering::Equal => {
                top.i += 1;
                top.j += 1;
                let (x, y) = (&la[i], &lb[j]);
                let p = join(&top.path, &x.name);
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
                    // Equal records are equal trees: not read.
                    (true, true) if x.child == y.child => {}
                    (true, true) => {
                        open.push(Pair::open((ta, x), (tb, y), p, depth, &mut met)?);
                    }
                    (true, false) => ta.walk_all(x, &p, depth, ChangeKind::Removed, out)?,
                    (false, true) => tb.walk_all(y, &p, depth, ChangeKind::Added, out)?,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::tree::crafted::{chain_over, chain_path, deep_chain};
    use crate::tree::MAX_TREE_DEPTH;
    use crate::Store;

    /// Two crafted chains `levels` deep that differ only at the bottom, where the second has
    /// an empty file `f`: every record on the way differs, so the comparison goes all the way.
    fn chains(store: &Store, levels: usize) -> (Tree<'_>, Tree<'_>) {
        let mut f = Node::new(Kind::File);
        f.name = b"f".to_vec();
        f.content = Some(crate::tree::Content {
            chunks: crate::list::ListRef::Inline(Vec::new()),
            data_offset: 0,
            segments: None,
        });
        let a = Tree::from_root(store, deep_chain(store, levels));
        let b = Tree::from_root(store, chain_over(store, levels, vec![f]));
        (a, b)
    }

    #[test]
    fn trees_as_deep_as_the_limit_compare() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let (a, b) = chains(&store, MAX_TREE_DEPTH - 1);
        let changes = a.diff(&b).unwrap();
        let want = format!("{}/f", chain_path(MAX_TREE_DEPTH - 1));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].path, want.as_bytes());
        assert_eq!(changes[0].kind, ChangeKind::Added);
    }

    /// A crafted chain of records thousands deep is refused as damage, whether both trees
    /// are compared down it or one side's whole subtree is listed, rather than overflowing
    /// the stack.
    #[test]
    fn trees_nested_too_deep_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let (a, b) = chains(&store, 3000);
        let too_deep = crate::tree::too_deep(chain_path(MAX_TREE_DEPTH).as_bytes()).to_string();
        for err in [a.diff(&b), b.diff(&a)].map(Result::unwrap_err) {
            assert!(matches!(err, Error::Corrupt(_)), "{err}");
            assert_eq!(err.to_string(), too_deep);
        }
        // Against an empty tree: everything below is added, or removed.
        let empty = Tree::from_root(
            &store,
            crate::tree::crafted::crafted_dir(&store, b"", vec![]),
        );
        for err in [a.diff(&empty), empty.diff(&a)].map(Result::unwrap_err) {
            assert_eq!(err.to_string(), too_deep);
        }
    }

    /// Two crafted trees of shared records (2^40 paths each) that differ at every leaf: the
    /// comparison stops past what their streams' members can make.
    #[test]
    fn comparing_trees_of_shared_records_is_bounded() {
        use crate::tree::crafted::shared_records;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let tree = |leaf: &[u8]| {
            let mut f = Node::new(Kind::Fifo);
            f.name = leaf.to_vec();
            Tree::from_root(&store, shared_records(&store, 40, vec![f])).with_members(10)
        };
        let (a, b) = (tree(b"x"), tree(b"y"));
        for err in [a.diff(&b), b.diff(&a)].map(Result::unwrap_err) {
            assert!(matches!(err, Error::Corrupt(_)), "{err}");
            assert!(err.to_string().contains("10 members"), "{err}");
        }
    }
}
