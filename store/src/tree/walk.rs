//! Walking everything below a directory without recursion. A tree is only as sound as its
//! store: a crafted chain of hash-valid records nests as deep as it likes, and a walk that
//! recursed once per level would overflow its thread's stack (2 MiB on a `serve` thread) long
//! before it got anywhere. Walks keep their open directories on the heap instead, and stop at
//! [`MAX_TREE_DEPTH`].

use std::sync::Arc;

use super::node::Node;
use super::record::Dir;
use super::vfs::Tree;
use super::MAX_TREE_DEPTH;
use crate::error::{path_text, Error, Result};

/// What a walk says of directory `path` (from the root, without the leading `/`) when it is
/// nested too deep to go into.
pub(crate) fn too_deep(path: &[u8]) -> Error {
    Error::corrupt(format!(
        "/{}: directories nested over {MAX_TREE_DEPTH} levels deep",
        path_text(path)
    ))
}

/// The path of `name` in directory `dir`, both from the root without the leading `/` (the
/// root is the empty path).
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

impl Tree<'_> {
    /// [`Tree::readdir`] of directory `dir` at `path`, `depth` levels below where its walk
    /// started: refused (as damage) once that is [`MAX_TREE_DEPTH`] levels, for walks that
    /// keep their own stack of directories.
    pub(crate) fn readdir_at(&self, dir: &Node, path: &[u8], depth: usize) -> Result<Arc<Dir>> {
        if depth >= MAX_TREE_DEPTH {
            return Err(too_deep(path));
        }
        self.readdir(dir)
    }

    /// Everything below directory `dir`, whose path is `path` (from the root, without the
    /// leading `/`), depth-first in name order: `f` gets each node with its path before
    /// anything below it, and answers for a directory whether to go into it. A directory
    /// nested [`MAX_TREE_DEPTH`] levels below `dir` ends the walk with `Corrupt`. The error
    /// type is the caller's, so that `f` can fail in its own terms.
    pub fn walk<E: From<Error>>(
        &self,
        dir: &Node,
        path: &[u8],
        f: impl FnMut(&[u8], &Node) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        self.walk_from(dir, path, 0, f)
    }

    /// [`Tree::walk`] from a directory already `depth` levels into a larger walk (a
    /// comparison of two trees), so that the limit counts from where that one started.
    pub(crate) fn walk_from<E: From<Error>>(
        &self,
        dir: &Node,
        path: &[u8],
        depth: usize,
        mut f: impl FnMut(&[u8], &Node) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        // The directories open, innermost last: each one's nodes, the next to visit, its path.
        let mut open = vec![(self.readdir_at(dir, path, depth)?, 0, path.to_vec())];
        let mut visited = 0;
        while let Some((nodes, next, at)) = open.last_mut() {
            let (nodes, i) = (nodes.clone(), *next);
            let Some(n) = nodes.get(i) else {
                open.pop();
                continue;
            };
            *next += 1;
            self.count(&mut visited, 1)?;
            let p = join(at, &n.name);
            if f(&p, n)? && n.is_dir() {
                let below = self.readdir_at(n, &p, depth + open.len())?;
                open.push((below, 0, p));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use crate::tree::record::encode_dir;
    use crate::tree::Kind;
    use crate::Store;

    /// A directory named `name` whose record holds `nodes`, the record put in the store's
    /// cache of decoded records, where every reader of a tree looks first: as a store
    /// holding the record would give it, without the ingest that never builds such trees.
    pub(crate) fn crafted_dir(store: &Store, name: &[u8], nodes: Vec<Node>) -> Node {
        let id = ChunkId::of(&encode_dir(&nodes, None));
        store.dir_record(&id, || Ok(Dir::by_name(nodes))).unwrap();
        let mut dir = Node::new(Kind::Dir);
        dir.name = name.to_vec();
        dir.child = Some(id);
        dir
    }

    /// The root of a crafted tree: a chain of `levels` directories named `d` below it, each
    /// inside the one before, the last one empty (`d/d/.../d`).
    pub(crate) fn deep_chain(store: &Store, levels: usize) -> Node {
        chain_over(store, levels, Vec::new())
    }

    /// [`deep_chain`] with `last` in its innermost directory.
    pub(crate) fn chain_over(store: &Store, levels: usize, last: Vec<Node>) -> Node {
        let mut dir = crafted_dir(store, b"d", last);
        for _ in 1..levels {
            dir = crafted_dir(store, b"d", vec![dir]);
        }
        crafted_dir(store, b"", vec![dir])
    }

    /// The root of a crafted tree of `levels` records each naming the next twice (`a` and
    /// `b`), 2^`levels` paths, the innermost directories holding `leaf`.
    pub(crate) fn shared_records(store: &Store, levels: usize, leaf: Vec<Node>) -> Node {
        let mut level = crafted_dir(store, b"", leaf);
        for _ in 0..levels {
            let names = [&b"a"[..], b"b"].map(|name| Node {
                name: name.to_vec(),
                ..level.clone()
            });
            level = crafted_dir(store, b"", names.to_vec());
        }
        level
    }

    /// The path of the `depth`-th directory of a [`deep_chain`] (without the leading `/`).
    pub(crate) fn chain_path(depth: usize) -> String {
        vec!["d"; depth].join("/")
    }

    #[test]
    fn a_walk_goes_as_deep_as_the_limit_allows_and_stops_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();

        let root = deep_chain(&store, MAX_TREE_DEPTH - 1);
        let tree = Tree::from_root(&store, root.clone());
        let mut seen = 0;
        tree.walk(&root, b"", |_, _| -> Result<bool> {
            seen += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, MAX_TREE_DEPTH - 1);

        // One level more is one too many, and named.
        let root = deep_chain(&store, MAX_TREE_DEPTH);
        let tree = Tree::from_root(&store, root.clone());
        let err = tree.walk(&root, b"", |_, _| Ok(true)).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert_eq!(
            err.to_string(),
            too_deep(chain_path(MAX_TREE_DEPTH).as_bytes()).to_string()
        );
    }

    /// A chain far deeper than any recursion could follow is refused, not overflowed.
    #[test]
    fn a_walk_of_a_chain_thousands_deep_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let root = deep_chain(&store, 5000);
        let tree = Tree::from_root(&store, root.clone());
        let err: Error = tree.walk(&root, b"", |_, _| Ok(true)).unwrap_err();
        assert!(err.to_string().contains("levels deep"), "{err}");
        // A walk that does not go into directories is not deep at all.
        let mut seen = 0;
        tree.walk(&root, b"", |_, _| -> Result<bool> {
            seen += 1;
            Ok(false)
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    /// Records shared under many names (two names a level, 40 levels: 2^40 paths from 41
    /// records) are refused once a walk passes what the snapshot's members could make, not
    /// walked for ever; a tree within that is walked whole.
    #[test]
    fn a_tree_of_shared_records_larger_than_its_stream_makes_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let level = shared_records(&store, 40, Vec::new());
        let tree = Tree::from_root(&store, level.clone()).with_members(10);
        let err = tree.walk(&level, b"", |_, _| Ok(true)).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("its stream's 10 members"), "{err}");

        let root = deep_chain(&store, 3);
        let tree = Tree::from_root(&store, root.clone()).with_members(1);
        let mut seen = 0;
        tree.walk(&root, b"", |_, _| -> Result<bool> {
            seen += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, 3, "a member's implicit parents are within the bound");
    }
}
