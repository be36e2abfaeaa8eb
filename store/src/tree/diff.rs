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
use crate::error::{Error, Result};

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
        self.diff_each(other, |c| {
            out.push(c);
            Ok::<_, Error>(())
        })?;
        Ok(out)
    }

    /// [`Tree::diff`], a change at a time, in the same order: the walk visits each directory's
    /// entries and subdirectories in the order of their paths' bytes, so nothing is held to be
    /// sorted (a diff of millions of changes costs what its deepest directories do). The error
    /// type is the caller's, so that `f` can fail in its own terms.
    pub fn diff_each<E: From<Error>>(
        &self,
        other: &Tree,
        mut f: impl FnMut(Change) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let fields = changed_fields(self.root(), other.root());
        if !fields.is_empty() {
            f(Change {
                path: Vec::new(),
                kind: ChangeKind::Modified,
                fields,
            })?;
        }
        diff_dirs(self, other, &mut f)
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
        Pair::open_sides((ta, Some(x)), (tb, Some(y)), path, depth, met)
    }

    /// [`Pair::open`] where a side may have no directory at `path` (it was added or removed):
    /// that side is empty, so every node of the other is a change.
    fn open_sides(
        (ta, x): (&Tree, Option<&Node>),
        (tb, y): (&Tree, Option<&Node>),
        path: Vec<u8>,
        depth: usize,
        met: &mut (u64, u64),
    ) -> Result<Pair> {
        let side = |t: &Tree, dir: Option<&Node>, met: &mut u64| -> Result<Arc<Dir>> {
            let Some(dir) = dir else {
                return Ok(Arc::new(Dir::by_name(Vec::new())));
            };
            let nodes = t.readdir_at(dir, &path, depth)?;
            t.count(met, nodes.len())?;
            Ok(nodes)
        };
        Ok(Pair {
            la: side(ta, x, &mut met.0)?,
            lb: side(tb, y, &mut met.1)?,
            i: 0,
            j: 0,
            path,
        })
    }
}

/// A pair of directories being compared, with the subdirectories of theirs still to compare.
struct Open {
    pair: Pair,
    /// Each as (`NAME/`, the index of the directory in `la`, in `lb`), largest first. A
    /// subdirectory's paths sort after every name up to `NAME/` (`a-b` and `a.c` before `a/x`,
    /// `a0` after it), so it is compared once the walk passes that key.
    later: Vec<(Vec<u8>, Option<usize>, Option<usize>)>,
}

impl Open {
    fn new(pair: Pair) -> Open {
        Open {
            pair,
            later: Vec::new(),
        }
    }

    fn defer(&mut self, name: &[u8], a: Option<usize>, b: Option<usize>) {
        let mut key = name.to_vec();
        key.push(b'/');
        let at = self.later.partition_point(|(k, ..)| *k > key);
        self.later.insert(at, (key, a, b));
    }
}

/// The changes below the roots of `ta` and `tb`, in path order. The pairs of directories open
/// are kept on a stack rather than recursed into, which a crafted tree's depth could overflow
/// (`walk.rs`).
fn diff_dirs<E: From<Error>>(
    ta: &Tree,
    tb: &Tree,
    f: &mut impl FnMut(Change) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut open = Vec::new();
    // Nodes met in each tree, which bound the walk as they bound `Tree::walk`.
    let mut met = (0, 0);
    let (a, b) = (ta.root(), tb.root());
    if a.child != b.child {
        open.push(Open::new(Pair::open(
            (ta, a),
            (tb, b),
            Vec::new(),
            0,
            &mut met,
        )?));
    }
    let change = |path, kind, fields| Change { path, kind, fields };
    loop {
        // How deep the nodes of the innermost pair are.
        let depth = open.len();
        let Some(top) = open.last_mut() else {
            return Ok(());
        };
        let (la, lb, i, j) = (
            top.pair.la.clone(),
            top.pair.lb.clone(),
            top.pair.i,
            top.pair.j,
        );
        let (x, y) = (la.get(i), lb.get(j));
        let next = match (x, y) {
            (Some(x), Some(y)) => Some(std::cmp::min(&x.name, &y.name)),
            (Some(n), None) | (None, Some(n)) => Some(&n.name),
            (None, None) => None,
        };
        // A subdirectory whose paths come before the next name is compared first.
        if let Some((key, a, b)) = top.later.last() {
            if next.is_none_or(|n| key < n) {
                let (a, b) = (a.map(|k| &la[k]), b.map(|k| &lb[k]));
                let path = join(&top.pair.path, &key[..key.len() - 1]);
                top.later.pop();
                let pair = Pair::open_sides((ta, a), (tb, b), path, depth, &mut met)?;
                open.push(Open::new(pair));
                continue;
            }
        }
        let order = match (x, y) {
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
                top.pair.i += 1;
                let n = &la[i];
                f(change(
                    join(&top.pair.path, &n.name),
                    ChangeKind::Removed,
                    Vec::new(),
                ))?;
                if n.is_dir() {
                    top.defer(&n.name, Some(i), None);
                }
            }
            Ordering::Greater => {
                top.pair.j += 1;
                let n = &lb[j];
                f(change(
                    join(&top.pair.path, &n.name),
                    ChangeKind::Added,
                    Vec::new(),
                ))?;
                if n.is_dir() {
                    top.defer(&n.name, None, Some(j));
                }
            }
            Ordering::Equal => {
                top.pair.i += 1;
                top.pair.j += 1;
                let (x, y) = (&la[i], &lb[j]);
                let mut fields = changed_fields(x, y);
                if fields.contains(&"content") && same_bytes(ta, x, tb, y)? {
                    fields.retain(|f| *f != "content");
                }
                if !fields.is_empty() {
                    f(change(
                        join(&top.pair.path, &x.name),
                        ChangeKind::Modified,
                        fields,
                    ))?;
                }
                match (x.is_dir(), y.is_dir()) {
                    // Equal records are equal trees: not read.
                    (true, true) if x.child == y.child => {}
                    (true, true) => top.defer(&x.name, Some(i), Some(j)),
                    (true, false) => top.defer(&x.name, Some(i), None),
                    (false, true) => top.defer(&x.name, None, Some(j)),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::tree::crafted::{chain_over, chain_path, crafted_dir, deep_chain};
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

    /// A tree for the order test: a node with children is a directory, one without a fifo
    /// whose mtime tells two versions apart.
    #[derive(Default)]
    struct Sketch {
        kids: BTreeMap<Vec<u8>, Sketch>,
        mtime: i64,
    }

    impl Sketch {
        fn of(paths: &[(Vec<usize>, i64)]) -> Sketch {
            let mut root = Sketch::default();
            for (path, mtime) in paths {
                let mut at = &mut root;
                for &k in path {
                    at = at.kids.entry(NAMES[k].to_vec()).or_default();
                }
                at.mtime = *mtime;
            }
            root
        }

        /// The tree's root: a directory, if an empty one.
        fn root<'s>(&self, store: &'s Store) -> Tree<'s> {
            let kids = self.kids.iter().map(|(k, s)| s.node(store, k)).collect();
            Tree::from_root(store, crafted_dir(store, b"", kids))
        }

        fn node(&self, store: &Store, name: &[u8]) -> Node {
            if self.kids.is_empty() {
                let mut n = Node::new(Kind::Fifo);
                n.name = name.to_vec();
                n.mtime = self.mtime;
                return n;
            }
            let kids = self.kids.iter().map(|(k, s)| s.node(store, k)).collect();
            crafted_dir(store, name, kids)
        }

        /// Every path below, with whether it is a directory and its mtime.
        fn flat(&self, at: &[u8], out: &mut BTreeMap<Vec<u8>, (bool, i64)>) {
            for (name, s) in &self.kids {
                let p = join(at, name);
                out.insert(p.clone(), (!s.kids.is_empty(), s.mtime));
                s.flat(&p, out);
            }
        }
    }

    /// Names that sort on both sides of `a/`: `a-b` and `a.c` before it, `a0` after.
    const NAMES: [&[u8]; 5] = [b"a", b"a-b", b"a.c", b"a0", b"b"];

    fn sketch() -> impl Strategy<Value = Vec<(Vec<usize>, i64)>> {
        prop::collection::vec(
            (prop::collection::vec(0..NAMES.len(), 1..4), 0..2i64),
            0..24,
        )
    }

    proptest! {
        /// The walk gives exactly the changes two path sets differ by, in the order of the
        /// paths' bytes, without sorting them.
        #[test]
        fn changes_come_in_path_order(a in sketch(), b in sketch()) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(&dir.path().join("store")).unwrap();
            let (sa, sb) = (Sketch::of(&a), Sketch::of(&b));
            let (ta, tb) = (sa.root(&store), sb.root(&store));
            let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
            sa.flat(b"", &mut fa);
            sb.flat(b"", &mut fb);
            let mut paths: Vec<&Vec<u8>> = fa.keys().chain(fb.keys()).collect();
            paths.sort();
            paths.dedup();
            let want: Vec<(Vec<u8>, ChangeKind)> = paths
                .into_iter()
                .filter_map(|p| match (fa.get(p), fb.get(p)) {
                    (Some(_), None) => Some((p.clone(), ChangeKind::Removed)),
                    (None, Some(_)) => Some((p.clone(), ChangeKind::Added)),
                    (Some(x), Some(y)) if x != y && !(x.0 && y.0) => {
                        Some((p.clone(), ChangeKind::Modified))
                    }
                    _ => None,
                })
                .collect();
            let got: Vec<(Vec<u8>, ChangeKind)> = ta
                .diff(&tb)
                .unwrap()
                .into_iter()
                .map(|c| (c.path, c.kind))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
