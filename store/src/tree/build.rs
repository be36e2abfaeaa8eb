//! Building a snapshot's tree while its stream is ingested.
//!
//! Members arrive in stream order, not tree order, and a stream may hold millions of them, so
//! nodes are kept by (parent path, name) in memory up to a budget and in a scratch SQLite file
//! past it (`members.rs`): the last member for a path replaces earlier ones, as extraction
//! would. At the end the directories are built depth-first, each stored as a content-addressed
//! record (delta-compressed against the parent snapshot's record for the same path), so an
//! unchanged directory costs nothing.

use std::collections::HashMap;

use super::members::{Members, BUDGET};
use super::meta::keep_earlier_xattrs;
use super::node::{Kind, Node};
use super::record::{decode_dir, put_order, record_header, Dir};
use crate::error::{path_text, Error, Result};
use crate::ids::ChunkId;
use crate::ingest::sink::MAX_OBJECT;
use crate::ingest::{Scratch, Sink};
use crate::object::{ObjectSink, ObjectSource};
use crate::pack::ChunkKind;

pub struct TreeBuilder<'a> {
    members: Members<'a>,
    root: Node,
    /// The snapshot's time, for directories no member names: the newest mtime in the
    /// stream, so the same stream always gives the same tree (and the same record ids). The
    /// ingest's clock is used only for a stream without members.
    newest: Option<i64>,
    clock: i64,
    next_ino: u64,
    /// The last parent directory made sure of (tar streams come directory by directory).
    last_parent: Option<Vec<u8>>,
    /// The first `MAX_WARNINGS`; `more_warnings` counts the rest.
    warnings: Vec<String>,
    more_warnings: u64,
    /// A member name the stream's own extraction would put elsewhere than the tree does, or
    /// that an OCI layer would read as a whiteout (or a member not every extractor reads).
    odd_names: bool,
    /// A name beginning with `/` was warned of (once a stream).
    absolute_noted: bool,
    /// Sparse data segments in the nodes put so far, hard links' copies included.
    segments: u64,
}

/// Most sparse data segments a tree holds, all nodes together. A hard link copies its file's
/// node, map and all, so without a bound a stream could make one file's map of millions of
/// empty segments (16 MiB of PAX records) and a few hundred 512-byte link headers cost
/// gigabytes to build. A real tree's sparse files hold thousands.
const MAX_TREE_SEGMENTS: u64 = 1 << 22;

/// A path split into its parent and name; the root has an empty name.
fn split(components: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    match components.split_last() {
        None => (Vec::new(), Vec::new()),
        Some((name, parents)) => (parents.join(&b'/'), name.to_vec()),
    }
}

/// Paths longer than Linux can open (PATH_MAX) could never be extracted, and no root
/// filesystem nests hundreds of directories deep: such members are left out of the tree.
/// Readers do not count on it (a crafted store can nest deeper): they stop at
/// [`super::MAX_TREE_DEPTH`].
const MAX_PATH: usize = 4095;
pub(crate) const MAX_DEPTH: usize = 256;

/// GNU tar's rules for member names: leading `/` and `.` components go; a name with `..` is
/// not extracted. Returns None for names to skip.
pub fn normalize(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.len() > MAX_PATH {
        return None;
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    (out.len() <= MAX_DEPTH).then_some(out)
}

/// GNU tar's rule for a hard link's target: the part up to and including its last `..`
/// component goes ("Removing leading `q/../' from hard link targets"), and the rest is a name
/// as `normalize` takes it.
pub fn normalize_link_target(target: &[u8]) -> Option<Vec<&[u8]>> {
    if target.len() > MAX_PATH {
        return None;
    }
    let mut out = Vec::new();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => out.clear(),
            c => out.push(c),
        }
    }
    (out.len() <= MAX_DEPTH).then_some(out)
}

/// Warnings kept for the report. A stream can earn one per member (millions): past these, only
/// a count is kept.
const MAX_WARNINGS: usize = 1000;

/// Marks directories no member named until the snapshot's time is known. No member's node has
/// it (`meta::action` moves such a time one second on).
const IMPLICIT_TIME: i64 = i64::MIN;

fn display(path: &[u8]) -> String {
    format!("/{}", path_text(path))
}

impl<'a> TreeBuilder<'a> {
    /// Build in memory, or in the scratch space's `m` table once the members outgrow
    /// `members::BUDGET`.
    pub fn new(scratch: &'a Scratch, time: i64) -> Result<Self> {
        let members = Members::new(scratch, BUDGET);
        let mut root = Node::new(Kind::Dir);
        root.mode = 0o755;
        root.mtime = IMPLICIT_TIME;
        Ok(TreeBuilder {
            members,
            root,
            newest: None,
            clock: time,
            next_ino: 1,
            last_parent: None,
            warnings: Vec::new(),
            more_warnings: 0,
            odd_names: false,
            absolute_noted: false,
            segments: 0,
        })
    }

    /// Make sure every directory above `components` exists (as an implicit directory if the
    /// stream never named it). False if one of them is not a directory: nothing may be
    /// reached through a symlink or a file.
    fn ensure_parents(&mut self, parents: &[&[u8]]) -> Result<bool> {
        // The directories of the last parent path are known to be directories still (a member
        // that replaces one clears `last_parent`): only those below them are looked up. A tar
        // stream lists a directory's members together and recurses into its subdirectories,
        // so that is mostly one lookup, or none.
        let shared = match &self.last_parent {
            Some(last) => {
                let known = last.split(|&b| b == b'/').filter(|c| !c.is_empty());
                let shared = parents
                    .iter()
                    .zip(known.clone())
                    .take_while(|(a, b)| *a == b)
                    .count();
                if shared == parents.len() && shared == known.count() {
                    return Ok(true);
                }
                shared
            }
            None => 0,
        };
        for i in shared..parents.len() {
            let (dir, name) = split(&parents[..=i]);
            match self.members.get(&dir, &name)? {
                Some(n) if n.is_dir() => {}
                Some(n) => {
                    let path = display(&parents[..=i].join(&b'/'));
                    self.warn(format!(
                        "{path} is a {}, not a directory: members below it are left out",
                        n.kind.describe()
                    ));
                    return Ok(false);
                }
                None => {
                    let mut d = Node::new(Kind::Dir);
                    d.name = name;
                    d.mode = 0o755;
                    d.mtime = IMPLICIT_TIME;
                    self.members.put(&dir, &d)?;
                }
            }
        }
        self.last_parent = Some(parents.join(&b'/'));
        Ok(true)
    }

    /// Something about a member the tree leaves out or changes.
    pub fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        } else {
            self.more_warnings += 1;
        }
    }

    /// The warnings so far, the last one counting those not kept.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut out = std::mem::take(&mut self.warnings);
        if self.more_warnings > 0 {
            out.push(format!(
                "and {} more warnings like these",
                std::mem::take(&mut self.more_warnings)
            ));
        }
        out
    }

    /// Whether the stream, as it is, extracts to this tree as an OCI layer: nothing was left
    /// out or moved, and no name reads as a whiteout.
    pub fn exact_layer(&self) -> bool {
        self.warnings.is_empty() && !self.odd_names
    }

    /// Something about the stream other than its names keeps it from being a layer as it is.
    pub fn not_exact(&mut self) {
        self.odd_names = true;
    }

    fn note_time(&mut self, mtime: i64) {
        self.newest = Some(self.newest.map_or(mtime, |t| t.max(mtime)));
    }

    fn note_name(&mut self, path: &[u8]) {
        if path.starts_with(b"/") && !self.absolute_noted {
            // Once, as GNU tar says "Removing leading `/' from member names".
            self.absolute_noted = true;
            self.warn(format!(
                "{}: names beginning with '/' are read from the root without it",
                path_text(&path[..path.len().min(200)])
            ));
        }
        if path.starts_with(b"/")
            || path
                .split(|&b| b == b'/')
                .any(|c| c.starts_with(b".wh.") || c == b"..")
        {
            self.odd_names = true;
        }
    }

    /// Place a member's node at `path` (raw, from the stream).
    pub fn put_member(&mut self, path: &[u8], mut node: Node) -> Result<()> {
        self.note_name(path);
        self.note_time(node.mtime);
        let segments = node.content.as_ref().and_then(|c| c.segments.as_ref());
        self.segments += segments.map_or(0, |s| s.len() as u64);
        if self.segments > MAX_TREE_SEGMENTS {
            return Err(Error::TooLarge(format!(
                "{}: the tree's sparse files (a hard link counting its file again) hold more \
                 than {MAX_TREE_SEGMENTS} data segments in all",
                path_text(&path[..path.len().min(200)])
            )));
        }
        let Some(components) = normalize(path) else {
            self.warn(format!(
                "{}: a name with '..' (or over {MAX_PATH} bytes or {MAX_DEPTH} levels) is left out of the tree",
                path_text(&path[..path.len().min(200)])
            ));
            return Ok(());
        };
        if components.is_empty() {
            if node.is_dir() {
                node.name.clear();
                keep_earlier_xattrs(&mut node, std::mem::take(&mut self.root.xattrs));
                self.root = node;
            } else {
                // GNU tar fails such a member ("Cannot open: File exists"); an image's
                // extractor refuses to change the root's type.
                self.warn(format!(
                    "{}: a {} named as the root directory is left out of the tree",
                    path_text(&path[..path.len().min(200)]),
                    node.kind.describe()
                ));
            }
            return Ok(());
        }
        if !self.ensure_parents(&components[..components.len() - 1])? {
            return Ok(());
        }
        // Whatever now stands at this path may no longer be the directory the cache vouches for.
        let full = components.join(&b'/');
        if let Some(p) = &self.last_parent {
            if p.starts_with(&full) && (p.len() == full.len() || p[full.len()] == b'/') {
                self.last_parent = None;
            }
        }
        let (dir, name) = split(&components);
        node.name = name;
        if self.members.put_new(&dir, &node)? {
            return Ok(());
        }
        // A later member for the same path replaces the earlier, as extraction does, with
        // GNU tar's one exception: nothing but a directory can take the place of a directory
        // that is not empty (it cannot be removed, and the member fails). A directory over a
        // directory is that directory again, with its earlier xattrs.
        if let Some(old) = self.members.get(&dir, &node.name)?.filter(|o| o.is_dir()) {
            if node.is_dir() {
                keep_earlier_xattrs(&mut node, old.xattrs);
            } else if self.members.has_children(&full)? {
                self.warn(format!(
                    "{}: a {} where a non-empty directory stands is left out of the tree, \
                     as GNU tar leaves it out",
                    display(&full),
                    node.kind.describe()
                ));
                return Ok(());
            }
        }
        self.members.put(&dir, &node)
    }

    /// A hardlink member: the same inode as `target`'s node at this point of the stream. Its
    /// own `mtime` counts toward the newest, as every member's does.
    pub fn put_link(&mut self, path: &[u8], target: &[u8], mtime: i64) -> Result<()> {
        self.note_name(target);
        self.note_time(mtime);
        let (Some(components), Some(target_c)) = (normalize(path), normalize_link_target(target))
        else {
            self.warn(format!(
                "{}: a hardlink named with '..' (or over {MAX_PATH} bytes or {MAX_DEPTH} \
                 levels) is left out of the tree",
                path_text(path)
            ));
            return Ok(());
        };
        let (tdir, tname) = split(&target_c);
        let found = if target_c.is_empty() {
            None
        } else {
            self.members.get(&tdir, &tname)?
        };
        let Some(mut t) = found.filter(|t| !t.is_dir()) else {
            self.warn(format!(
                "{}: hardlink to {}, which is not an earlier file, is left out",
                display(&components.join(&b'/')),
                display(&target_c.join(&b'/'))
            ));
            return Ok(());
        };
        if target_c == components {
            // A link to its own name (GNU tar writes one for a file named twice, as in
            // `tar -c dir dir/file`): extraction leaves the file as it is, but an image's
            // extractor removes the name before it links, and then has nothing to link to.
            self.not_exact();
        }
        if t.ino == 0 {
            t.ino = self.next_ino;
            self.next_ino += 1;
            self.members.put(&tdir, &t)?;
        }
        self.put_member(path, t)
    }

    /// Store every directory record, bottom-up, and return the root node. `parent` is the
    /// previous snapshot's root, whose records serve as delta bases.
    pub fn finish(
        self,
        sink: &mut Sink,
        src: &dyn ObjectSource,
        parent: Option<&Node>,
    ) -> Result<Node> {
        let links = self.members.link_counts()?;
        let time = self.newest.unwrap_or(self.clock);
        let mut b = Build {
            members: &self.members,
            sink,
            src,
            links,
            time,
        };
        let mut root = self.root.clone();
        if root.mtime == IMPLICIT_TIME {
            root.mtime = time;
        }
        let base = parent.and_then(|p| p.child);
        let (child, subdirs) = b.dir(&[], base)?;
        root.child = Some(child);
        root.nlink = 2 + subdirs;
        Ok(root)
    }
}

struct Build<'a, 's> {
    members: &'a Members<'a>,
    sink: &'a mut Sink<'s>,
    src: &'a dyn ObjectSource,
    links: HashMap<u64, u64>,
    time: i64,
}

impl Build<'_, '_> {
    /// Build the directory at `path`; returns its record id and how many subdirectories it
    /// has (for its link count). Most members are plain files, symlinks and devices whose
    /// nodes are final as collected: their encodings go into the record as they are. Only
    /// directories (a child record, a link count, maybe the snapshot's time) and hard links
    /// (a link count) are decoded to be completed.
    fn dir(&mut self, path: &[u8], base: Option<ChunkId>) -> Result<(ChunkId, u64)> {
        let members = self.members.dir(path)?;
        // The stream's order, kept unless it is the names' own.
        let mut listing: Vec<u32> = (0..members.len() as u32).collect();
        listing.sort_by_key(|&i| members[i as usize].seq);
        let ordered = listing.windows(2).any(|w| w[0] > w[1]);
        let mut record = record_header(members.len(), ordered);
        // The parent's record for this path, decoded only to find a subdirectory's base.
        let mut base_nodes = None;
        let mut subdirs = 0;
        for m in &members {
            let kind = Node::kind_of(&m.encoded)?;
            if kind != Kind::Dir && m.ino == 0 {
                record.extend_from_slice(&m.encoded);
                continue;
            }
            let mut n = Node::from_bytes(&m.encoded)?;
            if kind == Kind::Dir {
                if n.mtime == IMPLICIT_TIME {
                    n.mtime = self.time;
                }
                subdirs += 1;
                let child_path = if path.is_empty() {
                    n.name.clone()
                } else {
                    [path, b"/", &n.name].concat()
                };
                let base_nodes = match (&mut base_nodes, base) {
                    (Some(nodes), _) => nodes,
                    // A parent's record `repair-packs` could not salvage gives no bases: the
                    // snapshot being taken may be what stores the lost objects again. (Any
                    // other damage stops the ingest: what it would dedup against may be in a
                    // pack that is missing.)
                    (None, Some(id)) => {
                        let nodes = match self.src.object(&id).and_then(|o| decode_dir(&o)) {
                            Ok(nodes) => nodes,
                            Err(Error::Corrupt(_)) if self.src.lost(&id)? => {
                                Dir::by_name(Vec::new())
                            }
                            Err(e) => return Err(e),
                        };
                        base_nodes.insert(nodes)
                    }
                    (None, None) => base_nodes.insert(Dir::by_name(Vec::new())),
                };
                let child_base = base_nodes
                    .binary_search_by(|b| b.name.as_slice().cmp(&n.name))
                    .ok()
                    .and_then(|i| base_nodes[i].child);
                let (child, child_subdirs) = self.dir(&child_path, child_base)?;
                n.child = Some(child);
                n.nlink = 2 + child_subdirs;
            } else {
                n.nlink = self.links.get(&m.ino).copied().unwrap_or(1);
            }
            n.encode(&mut record);
        }
        if ordered {
            put_order(&mut record, &listing);
        }
        if record.len() > MAX_OBJECT {
            return Err(Error::TooLarge(format!(
                "{}: the directory's record ({} entries, {} bytes) is more than cellar stores \
                 in one object ({} MiB)",
                display(path),
                members.len(),
                record.len(),
                MAX_OBJECT >> 20
            )));
        }
        let id = match base {
            Some(b) => self
                .sink
                .put_delta(ChunkKind::Dir, &record, b, || self.src.object(&b))?,
            None => self.sink.put(ChunkKind::Dir, &record)?,
        };
        Ok((id, subdirs))
    }
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::snapshot_of_tar;
    use crate::object::ObjectSource;
    use crate::store::Store;

    /// The names a snapshot of `names` (tarred in that order) lists at `path`, and the
    /// version of that directory's record.
    fn listed(names: &[&str], path: &str) -> (Vec<String>, u8) {
        let src = tempfile::tempdir().unwrap();
        for n in names {
            let p = src.path().join(n);
            if n.starts_with("sub") && !n.contains('/') {
                std::fs::create_dir_all(p).unwrap();
            } else {
                std::fs::write(p, n).unwrap();
            }
        }
        let root = tempfile::tempdir().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let snap = snapshot_of_tar(root.path(), src.path(), &names);
        let store = Store::open(root.path()).unwrap();
        let tree = store.tree(&snap).unwrap();
        let dir = tree.resolve(path.as_bytes()).unwrap();
        let listing = tree.readdir(&dir).unwrap();
        let record = store.object(&dir.child.unwrap()).unwrap();
        let names = listing
            .listed()
            .map(|n| String::from_utf8(n.name.clone()).unwrap())
            .collect();
        (names, record[0])
    }

    #[test]
    fn a_record_lists_its_directory_in_the_order_of_the_stream() {
        let stream = ["c", "a", "sub", "sub/y", "sub/x", "b"];
        let (names, version) = listed(&stream, "/");
        assert_eq!(names, ["c", "a", "sub", "b"]);
        assert_eq!(version, 2);
        let (names, version) = listed(&stream, "sub");
        assert_eq!(names, ["y", "x"]);
        assert_eq!(version, 2);
    }

    #[test]
    fn a_stream_in_name_order_keeps_records_by_name() {
        let (names, version) = listed(&["a", "b", "sub", "sub/x", "sub/y"], "/");
        assert_eq!(names, ["a", "b", "sub"]);
        assert_eq!(
            version, 1,
            "the record is what it was before records kept an order"
        );
    }

    #[test]
    fn a_member_that_replaces_an_earlier_one_keeps_its_place() {
        let (names, _) = listed(&["b", "a", "c", "b"], "/");
        assert_eq!(names, ["b", "a", "c"]);
    }
}
