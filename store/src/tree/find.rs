//! Finding paths by pattern in snapshots (`cellar find`), restic's `find` over trees.
//!
//! A tree is a Merkle tree: a directory record names its subdirectories' records by id, so an
//! unchanged directory is the same record in every snapshot. A `Finder` remembers each
//! directory, at its path, below which nothing matched; another snapshot holding the same
//! record at the same path is not walked there again. Searching a lineage of a hundred
//! snapshots costs about what changed between them, not a hundred walks.
//!
//! Only directories with no match below them are remembered (a set of ids and paths, small
//! beside the trees): a match is found again by walking, which keeps the entries reported
//! those of the snapshot at hand (a hard link's count, say, is the snapshot's own).

use std::collections::HashSet;
use std::sync::Arc;

use super::node::Node;
use super::record::Dir;
use super::vfs::Tree;
use super::walk::join;
use crate::error::{path_text, Error, Result};
use crate::ids::ChunkId;
use crate::tar::glob::Pattern;

/// Patterns, and what earlier searches learned about where they do not match.
pub struct Finder {
    patterns: Vec<PathPattern>,
    /// (directory record, its path): nothing below it matches.
    barren: HashSet<(ChunkId, Vec<u8>)>,
}

/// A directory being walked: its nodes by name, the next to visit, where it is, and whether
/// anything in or below it matched so far.
struct Open {
    nodes: Arc<Dir>,
    next: usize,
    path: Vec<u8>,
    id: ChunkId,
    matched: bool,
}

/// One pattern, a wildcard pattern per component (`*`, `?`, `[...]`, `\` as `--exclude`
/// takes them, none of them matching `/`, as `find -name` and restic's `find` have it).
struct PathPattern {
    components: Vec<Pattern>,
    /// Written with a leading `/` (or `./`, as tar names members): matched against the whole
    /// path, not a trailing run.
    rooted: bool,
    /// Written with a trailing `/`: directories only.
    dirs_only: bool,
}

impl PathPattern {
    fn new(p: &[u8]) -> Result<PathPattern> {
        let bad = |why: &str| {
            let shown = match std::str::from_utf8(p) {
                Ok(text) => format!("{text:?}"),
                Err(_) => format!("\"{}\"", path_text(p)),
            };
            Error::InvalidArgument(format!("the pattern {shown} {why}"))
        };
        let mut components = Vec::new();
        for c in p.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    return Err(bad(
                        "has a '..' component, which names nothing in a snapshot",
                    ))
                }
                c => components.push(Pattern::new(c)),
            }
        }
        if components.is_empty() {
            return Err(bad("names no file (an empty pattern, or `/` alone)"));
        }
        Ok(PathPattern {
            components,
            rooted: p.starts_with(b"/") || p.starts_with(b"./"),
            dirs_only: p.ends_with(b"/"),
        })
    }

    fn matches(&self, path: &[u8], node: &Node) -> bool {
        if self.dirs_only && !node.is_dir() {
            return false;
        }
        let names: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let Some(skip) = names.len().checked_sub(self.components.len()) else {
            return false;
        };
        (skip == 0 || !self.rooted)
            && names[skip..]
                .iter()
                .zip(&self.components)
                .all(|(name, p)| p.matches(name))
    }
}

impl Finder {
    /// Patterns that match a path (from the root, no leading `/`) when their components match
    /// its last ones (`*.conf`, `apt/sources.list`), or, starting with `/` or `./`, all of
    /// them (`/etc/*`: what is in `/etc`); ending in `/`, directories only. `.` components
    /// are nothing; a `..` is refused. Patterns are bytes, as names are (`tar/glob.rs`).
    pub fn new<S: AsRef<[u8]>>(patterns: &[S]) -> Result<Finder> {
        let patterns = patterns
            .iter()
            .map(|p| PathPattern::new(p.as_ref()))
            .collect::<Result<_>>()?;
        Ok(Finder {
            patterns,
            barren: HashSet::new(),
        })
    }

    /// Every entry of `tree` (the root aside) whose path matches, depth first in name order,
    /// to `f` with its path (from the root, no leading `/`); how many there were. The error
    /// type is the caller's, so that `f` can fail in its own terms.
    pub fn find_in<E: From<Error>>(
        &mut self,
        tree: &Tree,
        mut f: impl FnMut(&[u8], &Node) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let root = tree.root();
        let Some(id) = root.child else {
            return Ok(0);
        };
        if self.barren.contains(&(id, Vec::new())) {
            return Ok(0);
        }
        let mut open = vec![Open {
            nodes: tree.readdir_at(root, b"", 0)?,
            next: 0,
            path: Vec::new(),
            id,
            matched: false,
        }];
        let (mut hits, mut visited) = (0, 0);
        while let Some(top) = open.last_mut() {
            let nodes = top.nodes.clone();
            let Some(n) = nodes.get(top.next) else {
                let done = open.pop().expect("a directory is open");
                match open.last_mut() {
                    Some(parent) if done.matched => parent.matched = true,
                    _ if done.matched => {}
                    _ => {
                        self.barren.insert((done.id, done.path));
                    }
                }
                continue;
            };
            top.next += 1;
            tree.count(&mut visited, 1)?;
            let path = join(&top.path, &n.name);
            if self.patterns.iter().any(|p| p.matches(&path, n)) {
                top.matched = true;
                hits += 1;
                f(&path, n)?;
            }
            let Some(id) = n.child.filter(|_| n.is_dir()) else {
                continue;
            };
            let key = (id, path);
            if self.barren.contains(&key) {
                continue;
            }
            let nodes = tree.readdir_at(n, &key.1, open.len())?;
            open.push(Open {
                nodes,
                next: 0,
                path: key.1,
                id,
                matched: false,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::crafted::crafted_dir;
    use crate::tree::Kind;
    use crate::Store;

    fn file(name: &str) -> Node {
        let mut n = Node::new(Kind::File);
        n.name = name.into();
        n
    }

    fn found(finder: &mut Finder, tree: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        finder
            .find_in::<Error>(tree, |p, _| {
                out.push(String::from_utf8(p.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn patterns_match_trailing_components_or_from_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let apt = crafted_dir(&store, b"apt", vec![file("sources.list")]);
        let etc = crafted_dir(&store, b"etc", vec![apt, file("hosts"), file("x.conf")]);
        let usr = crafted_dir(
            &store,
            b"usr",
            vec![crafted_dir(&store, b"etc", vec![file("y.conf")])],
        );
        let root = crafted_dir(&store, b"", vec![etc, usr]);
        let tree = Tree::from_root(&store, root);
        let find = |patterns: &[&str]| found(&mut Finder::new(patterns).unwrap(), &tree);
        assert_eq!(find(&["*.conf"]), vec!["etc/x.conf", "usr/etc/y.conf"]);
        assert_eq!(find(&["etc"]), vec!["etc", "usr/etc"]);
        assert_eq!(find(&["/etc"]), vec!["etc"]);
        assert_eq!(
            find(&["/etc/*"]),
            vec!["etc/apt", "etc/hosts", "etc/x.conf"]
        );
        assert_eq!(find(&["/etc/*/*"]), vec!["etc/apt/sources.list"]);
        assert_eq!(
            find(&["e*"]),
            vec!["etc", "usr/etc"],
            "`*` stays in its name"
        );
        assert_eq!(find(&["apt/sources.list"]), vec!["etc/apt/sources.list"]);
        assert_eq!(find(&["pt/sources.list"]), Vec::<String>::new());
        assert_eq!(find(&["hosts", "y.*"]), vec!["etc/hosts", "usr/etc/y.conf"]);
        assert_eq!(find(&["etc//./hosts"]), vec!["etc/hosts"]);
        assert_eq!(find(&["./etc/hosts", "./etc"]), vec!["etc", "etc/hosts"]);
        assert_eq!(find(&["etc/"]), vec!["etc", "usr/etc"]);
        assert_eq!(
            find(&["hosts/", "/x.*/"]),
            Vec::<String>::new(),
            "not directories"
        );
        let err = Finder::new(&["a\"b/.."])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(r#"the pattern "a\"b/..""#), "{err}");
        for bad in ["", "/", "./", "/etc/../etc", ".."] {
            assert!(Finder::new(&["x", bad]).is_err(), "{bad:?}");
        }
    }

    /// A directory below which nothing matched is not walked again at the same path, in any
    /// tree; at another path it is (a pattern can match the path above it).
    #[test]
    fn a_barren_directory_is_walked_once_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let lib = || crafted_dir(&store, b"lib", vec![file("a.so"), file("b.so")]);
        let first = Tree::from_root(&store, crafted_dir(&store, b"", vec![lib(), file("x")]));
        let second = Tree::from_root(&store, crafted_dir(&store, b"", vec![lib(), file("y")]));
        let mut finder = Finder::new(&["y", "/usr/lib/*"]).unwrap();
        assert_eq!(found(&mut finder, &first), Vec::<String>::new());
        assert_eq!(finder.barren.len(), 2, "lib and the root");
        let lib_id = lib().child.unwrap();
        assert!(finder.barren.contains(&(lib_id, b"lib".to_vec())));
        assert_eq!(found(&mut finder, &second), vec!["y"]);
        let moved = crafted_dir(&store, b"usr", vec![lib()]);
        let third = Tree::from_root(&store, crafted_dir(&store, b"", vec![moved]));
        assert_eq!(
            found(&mut finder, &third),
            vec!["usr/lib/a.so", "usr/lib/b.so"]
        );
    }

    /// A crafted tree of records shared under many names is refused as damage once the walk
    /// passes what its stream could make, as every whole-tree walk is.
    #[test]
    fn a_tree_larger_than_its_stream_makes_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let root = crate::tree::crafted::shared_records(&store, 40, vec![file("f")]);
        let tree = Tree::from_root(&store, root).with_members(10);
        let err = Finder::new(&["nothing"])
            .unwrap()
            .find_in::<Error>(&tree, |_, _| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
    }
}
