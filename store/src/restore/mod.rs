//! `restore`: write a snapshot's tree (or a subtree) into a directory on disk, as GNU tar's
//! extraction as root would: owners, modes (setuid/setgid/sticky included), mtimes with
//! nanoseconds, xattrs, hardlinks, symlinks, devices, fifos and sparse files.
//!
//! Safety does not depend on the tree being well-formed: DIR is opened once
//! (`O_DIRECTORY|O_NOFOLLOW`) and everything is created relative to directory descriptors with
//! the `*at` calls. Every directory is opened with `O_NOFOLLOW|O_DIRECTORY`, so a symlink in
//! DIR (one that was there before, with `--force`) is never followed; it is replaced by the
//! directory. A name that is empty, `.`, `..` or holds a `/` is skipped with a warning, and a
//! hardlink is only ever made to a name this restore wrote inside DIR. Nothing can be written
//! outside DIR through a name, a symlinked parent or a hardlink.
//!
//! A member that cannot be written (a non-empty directory in its way with `--force`, a
//! directory that refuses it, a full disk, a device when not root) is a failure, not a
//! warning: the restore goes on with everything else, as GNU tar does, and the report lists
//! it. A directory that could not be made fails with everything below it, each named. A
//! hardlink whose group's first name failed is not written either (as with tar, whose link
//! member has no data of its own to fall back on); it fails too, naming that first name.
//!
//! File data is streamed through one 1 MiB buffer (a sparse file's straight into its
//! segments' places, every chunk read once). A read error from the store (damaged
//! data) stops the restore with an error naming the path, and the partly written file is
//! removed: a restore never leaves wrong bytes behind silently.
//!
//! This module walks the tree; `create` makes directories, symlinks, devices and fifos
//! (replacing what is in the way), `file` writes regular files, `links` keeps the hardlink
//! groups, `meta` sets attributes, and `fs` holds the system calls they all go through.

mod create;
mod file;
mod fs;
mod links;
mod meta;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{path_text, Error, Result};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{join_path as join, Dir, Kind, Node, Tree, MAX_TREE_DEPTH};

/// How a restore treats what is already in DIR.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore into a non-empty DIR: an existing directory is reused (its attributes set from
    /// the snapshot), anything else in the way (a file, a symlink, an empty directory where
    /// the snapshot has a non-directory) is replaced.
    pub force: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Names created in DIR (files, directories, symlinks, hardlinks, devices, fifos), DIR
    /// itself not counted.
    pub files: u64,
    /// File data written (hardlinks and holes of sparse files not counted).
    pub bytes: u64,
    /// Things left out on purpose or not fully restored (e.g. an unsafe name, an xattr the
    /// filesystem refused), one line each.
    pub warnings: Vec<String>,
    /// How many members should have been restored and could not be (the restore went on
    /// without them); the first of them are in `failures`.
    pub failed: u64,
    pub failures: Vec<RestoreFailure>,
}

/// A member that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFailure {
    /// Its path in the snapshot (`/etc/motd`), as raw as the stream had it.
    pub path: Vec<u8>,
    /// Why, naming the path on disk where that helps.
    pub reason: String,
}

/// Warnings, and failures, kept in the report; past this they are only counted.
const MAX_WARNINGS: usize = 1000;
/// File data moves through one buffer of this size.
const BUF_SIZE: usize = 1 << 20;

/// Restore the node at `path` (from the snapshot's root; `/` and `.` components ignored) of
/// `snap` into `dir`. A directory's contents go directly into `dir` (and `dir` gets its
/// owner, mode, xattrs and mtime); anything else is written as `dir/NAME`. `dir` is created
/// if missing; an existing one must be empty unless `opts.force`.
///
/// Members that could not be written (something in the way with `opts.force`, an error
/// writing them) do not stop it: they are counted in the report's `failed` and listed in its
/// `failures`.
///
/// Errors: `NotFound`/`InvalidArgument` (usage: unknown path, named `SHORT_ID:/path: ...`;
/// `dir` not a directory, a symlink, or not empty); `Corrupt` naming the path when the store's data is damaged; `Io`
/// naming the path on disk when writing fails.
pub fn restore(
    store: &Store,
    snap: &Snapshot,
    path: &[u8],
    dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let tree = store.tree(snap)?;
    let node = tree.resolve(path).map_err(|e| in_snapshot(e, snap))?;
    let prefix = crate::tree::normalize_path(path);

    let (root_fd, dir) = open_target(dir, opts.force)?;
    let mut r = Restorer {
        tree: &tree,
        dir: dir.clone(),
        prefix,
        root: root_fd,
        as_root: fs::is_root(),
        links: HashMap::new(),
        depth: 0,
        visited: 0,
        report: RestoreReport::default(),
        dropped: 0,
        buf: vec![0u8; BUF_SIZE],
    };
    let root = r.root.try_clone().map_err(|e| Error::io(dir, e))?;
    if node.is_dir() {
        r.contents(root.as_fd(), b"", &node)?;
        r.meta_fd(root.as_fd(), b"", &node);
    } else {
        // The snapshot's path, as far as messages go, is `prefix` itself; on disk it is
        // DIR/NAME.
        let rel = node.name.clone();
        r.prefix = match r.prefix.iter().rposition(|&b| b == b'/') {
            Some(i) => r.prefix[..i].to_vec(),
            None => Vec::new(),
        };
        r.child(root.as_fd(), &rel, &node)?;
    }
    if r.dropped > 0 {
        let n = r.dropped;
        r.report
            .warnings
            .push(format!("... and {n} more warnings not shown"));
    }
    Ok(r.report)
}

/// A path error from `Tree::resolve` (`/etc/x: no such file or directory`), with the path
/// named in the snapshot as the summary line names it (`SHORT_ID:/etc/x: ...`): SNAP may be
/// a NAME or NAME~N, and the message says which snapshot was looked in.
fn in_snapshot(e: Error, snap: &Snapshot) -> Error {
    let short = snap.short_id();
    match e {
        Error::NotFound(m) => Error::NotFound(format!("{short}:{m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{short}:{m}")),
        e => e,
    }
}

/// Open (creating if missing) the target directory, without following a symlink at its last
/// component, and check it is empty unless `force`; with the path it was opened by.
fn open_target(dir: &Path, force: bool) -> Result<(OwnedFd, PathBuf)> {
    let shown = dir.display();
    // What was being done, since a bare "No such file or directory" does not say.
    let failed = |doing: &str, e: io::Error| {
        Error::io(
            dir,
            io::Error::new(e.kind(), format!("{doing} the restore directory: {e}")),
        )
    };
    let symlink = || {
        Error::InvalidArgument(format!(
            "{shown} is a symlink, and DIR must not be one: restore into the directory it \
             points to"
        ))
    };
    let dir = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let made = as_made(dir);
            std::fs::create_dir_all(&made).map_err(|e| failed("creating", e))?;
            made
        }
        // A file where DIR needs a directory, above it.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(Error::InvalidArgument(format!(
                "{shown}: part of the path is not a directory"
            )))
        }
        Err(e) => return Err(failed("looking up", e)),
        // Said before opening: `open_dir` of a symlink (even to a directory) fails with
        // ENOTDIR, which would call it "not a directory".
        Ok(m) if m.file_type().is_symlink() => return Err(symlink()),
        Ok(_) => dir.to_path_buf(),
    };
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{shown}: a path with a NUL byte")))?;
    let fd = match fs::open_dir(libc::AT_FDCWD, &c) {
        Ok(fd) => fd,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => symlink(),
                Some(libc::ENOTDIR) => {
                    Error::InvalidArgument(format!("{shown} is not a directory"))
                }
                _ => failed("opening", e),
            })
        }
    };
    if !force && !fs::is_empty(fd.as_fd()).map_err(|e| failed("reading", e))? {
        return Err(Error::InvalidArgument(format!(
            "{shown} is not empty (use --force to restore into it anyway)"
        )));
    }
    Ok((fd, dir))
}

/// `dir`, which does not exist, as it will be made: past the longest part of it that exists,
/// the directories made are real ones, so there `.` is nothing and `name/..` cancels
/// (`new/.` is `new`; `new/sub/..` is `new`, with no `sub` made and left behind).
fn as_made(dir: &Path) -> PathBuf {
    use std::path::Component;
    let parts: Vec<Component> = dir.components().collect();
    let exists = (0..=parts.len())
        .rev()
        .find(|&k| {
            k == 0
                || parts[..k]
                    .iter()
                    .collect::<PathBuf>()
                    .symlink_metadata()
                    .is_ok()
        })
        .unwrap_or(0);
    let mut made: PathBuf = parts[..exists].iter().collect();
    let mut new = 0; // components pushed onto `made` that are directories to make
    for part in &parts[exists..] {
        match part {
            Component::ParentDir if new > 0 => {
                made.pop();
                new -= 1;
            }
            Component::CurDir => {}
            part => {
                made.push(part);
                new += usize::from(matches!(part, Component::Normal(_)));
            }
        }
    }
    if made.as_os_str().is_empty() {
        made.push("."); // `new/..`: where cellar runs
    }
    made
}

struct Restorer<'a, 's> {
    tree: &'a Tree<'s>,
    /// DIR as given, for messages.
    dir: PathBuf,
    /// The restored node's path in the snapshot (for messages), without slashes around it.
    prefix: Vec<u8>,
    root: OwnedFd,
    as_root: bool,
    /// Hardlink groups met so far, by `ino`.
    links: HashMap<u64, links::Group>,
    /// Directories open on the current path.
    depth: usize,
    /// Nodes met so far ([`Tree::count`]).
    visited: u64,
    report: RestoreReport,
    dropped: u64,
    buf: Vec<u8>,
}

impl Restorer<'_, '_> {
    fn warn(&mut self, msg: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(msg);
        } else {
            self.dropped += 1;
        }
    }

    /// `rel` could not be restored, for `reason`: the restore goes on, and reports it.
    fn fail(&mut self, rel: &[u8], reason: String) {
        self.report.failed += 1;
        if self.report.failures.len() < MAX_WARNINGS {
            let path = [b"/", &join(&self.prefix, rel)[..]].concat();
            self.report.failures.push(RestoreFailure { path, reason });
        }
    }

    /// `rel` (relative to DIR) as a path on disk.
    fn disk(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    /// `rel` as a path in the snapshot: `/prefix/rel`.
    fn snap_path(&self, rel: &[u8]) -> String {
        format!("/{}", path_text(&join(&self.prefix, rel)))
    }

    fn io_err(&self, rel: &[u8], err: io::Error) -> Error {
        Error::io(self.disk(rel), err)
    }

    /// An error reading the store while restoring `rel`, which stops the restore: damaged
    /// data keeps its kind and gains the path; anything else becomes an I/O error at the
    /// store (never at a path in DIR, which would make it a failure of `rel` alone).
    fn read_err(&self, rel: &[u8], e: Error) -> Error {
        match e {
            Error::Corrupt(m) => Error::Corrupt(format!(
                "{} (restoring {}): {m}",
                self.snap_path(rel),
                self.disk(rel).display()
            )),
            e => Error::io(
                self.tree.store().root(),
                io::Error::other(format!(
                    "reading {} (restoring {}): {e}",
                    self.snap_path(rel),
                    self.disk(rel).display()
                )),
            ),
        }
    }

    /// Restore every child of the directory `node` into the open directory `fd` (at `rel`).
    fn contents(&mut self, fd: BorrowedFd, rel: &[u8], node: &Node) -> Result<()> {
        // Trees are built at most 256 levels deep; a deeper one is not from an ingest, and
        // must not exhaust the stack or the descriptors (one is held open per level).
        if self.depth >= MAX_TREE_DEPTH {
            return Err(Error::corrupt(format!(
                "{}: directories nested over {MAX_TREE_DEPTH} levels deep",
                self.snap_path(rel)
            )));
        }
        let children = self.tree.readdir(node).map_err(|e| self.read_err(rel, e))?;
        self.tree.count(&mut self.visited, children.len())?;
        self.depth += 1;
        let result = self.write_order(&children).into_iter().try_for_each(|i| {
            let child = &children[i];
            let crel = join(rel, &child.name);
            self.child(fd, &crel, child)?;
            crate::failpoint::hit("restore:child");
            Ok(())
        });
        self.depth -= 1;
        result
    }

    /// The order in which a directory's children are written: its files by where their data
    /// is stored, then the rest as the record lists them (the stream's order, where it keeps
    /// it). Written by name, a large directory's small files each cost the decoding of a
    /// whole frame (3.1 times the data of /usr/lib/x86_64-linux-gnu was decoded), and so do
    /// the files of many small subdirectories. The place of each file's data is looked up
    /// rather than taken from the listing: an incremental snapshot's unchanged files are
    /// where an earlier stream put them. Names of one hardlink group share their data's
    /// place, so they keep their listing order.
    fn write_order(&self, children: &Dir) -> Vec<usize> {
        let store = self.tree.store();
        let mut files = Vec::new();
        let mut rest = Vec::new();
        for i in children.listing() {
            let c = &children[i];
            // A file whose first chunk cannot be found goes with the rest: it meets its error
            // when written.
            let place = match (&c.kind, &c.content) {
                (Kind::File, Some(content)) => content
                    .chunks
                    .find(store, 0)
                    .ok()
                    .flatten()
                    .and_then(|(first, _)| store.storage_order(&first.id)),
                _ => None,
            };
            match place {
                Some(place) => files.push((place, i)),
                None => rest.push(i),
            }
        }
        files.sort_by_key(|&(place, _)| place);
        files.into_iter().map(|(_, i)| i).chain(rest).collect()
    }

    /// Restore one node as `rel` (its last component is the name) inside `parent`.
    fn child(&mut self, parent: BorrowedFd, rel: &[u8], node: &Node) -> Result<()> {
        let name = &node.name;
        let safe = !name.is_empty()
            && name != b"."
            && name != b".."
            && !name.contains(&b'/')
            && !name.contains(&0);
        if !safe {
            let msg = format!(
                "{}: unsafe name {:?} skipped",
                self.snap_path(rel),
                path_text(name)
            );
            self.warn(msg);
            return Ok(());
        }
        let cname = CString::new(name.as_slice()).expect("no NUL, checked");

        if self.link_to_earlier(parent, &cname, rel, node) {
            return Ok(());
        }

        let failed_before = self.report.failed;
        let created = match self.make(parent, &cname, rel, node) {
            Ok(created) => created,
            // Writing this name failed (an error at its own path; the store's errors are
            // elsewhere): the restore goes on without it, as tar's extraction does.
            Err(Error::Io { path, err }) if path == self.disk(rel) => {
                self.fail(rel, format!("{}: {err}", path.display()));
                if node.is_dir() {
                    self.fail_below(rel, node)?;
                }
                false
            }
            Err(e) => return Err(e),
        };
        if created {
            self.report.files += 1;
        }
        // A name skipped on purpose (an unsafe symlink target, say) is neither: the group's
        // next name is tried as a first one.
        if created || self.report.failed > failed_before {
            self.remember_link(rel, node, created);
        }
        Ok(())
    }

    /// The directory `node` at `rel` could not be made: everything below it fails too, each
    /// counted and named as tar's extraction names them, and a hardlink elsewhere to a file
    /// below it fails as a link to a name not restored.
    fn fail_below(&mut self, rel: &[u8], node: &Node) -> Result<()> {
        if self.depth >= MAX_TREE_DEPTH {
            return Ok(()); // `contents` reports such a tree as damaged
        }
        let children = self.tree.readdir(node).map_err(|e| self.read_err(rel, e))?;
        self.tree.count(&mut self.visited, children.len())?;
        let reason = format!("in {}, which could not be restored", self.snap_path(rel));
        self.depth += 1;
        let result = children.listing().try_for_each(|i| {
            let child = &children[i];
            let crel = join(rel, &child.name);
            self.fail(&crel, reason.clone());
            self.remember_link(&crel, child, false);
            if child.is_dir() {
                self.fail_below(&crel, child)?;
            }
            Ok(())
        });
        self.depth -= 1;
        result
    }

    /// Make `node` as `rel`: true if made, false if skipped or failed (and reported).
    fn make(&mut self, parent: BorrowedFd, name: &CStr, rel: &[u8], node: &Node) -> Result<bool> {
        match node.kind {
            Kind::Dir => {
                let Some(fd) = self.make_dir(parent, name, rel)? else {
                    return Ok(false);
                };
                self.contents(fd.as_fd(), rel, node)?;
                self.meta_fd(fd.as_fd(), rel, node);
                Ok(true)
            }
            Kind::File => self.file(parent, name, rel, node),
            Kind::Symlink => self.symlink(parent, name, rel, node),
            Kind::Char | Kind::Block | Kind::Fifo => self.special(parent, name, rel, node),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fuzzing::{snapshot_of_tar, xorshift};

    const FILES: usize = 240;
    const SIZE: usize = 256 << 10;

    /// Restore a stream of `FILES` files of `SIZE` bytes (twice the data the frame cache
    /// holds), made by `put(k, data)` in a shuffled order of `k`, and give how many frames
    /// restoring it decoded against how many frames its data take. Taken in any other order
    /// than where their data is, the files take turns among all the frames, decoding one for
    /// most files (about 130 of 240 here); in that order, each frame is decoded once.
    fn decodes_to_restore(put: impl Fn(&Path, usize, &[u8]) -> Vec<String>) -> (usize, usize) {
        let src = tempfile::tempdir().unwrap();
        let mut seed = 7;
        let mut order: Vec<usize> = (0..FILES).collect();
        for i in (1..FILES).rev() {
            order.swap(i, xorshift(&mut seed) as usize % (i + 1));
        }
        let mut names = Vec::new();
        let mut files = Vec::new();
        for k in order {
            let data: Vec<u8> = (0..SIZE).map(|_| xorshift(&mut seed) as u8).collect();
            let added = put(src.path(), k, &data);
            files.push((added.last().expect("a file").clone(), data));
            names.extend(added);
        }
        let root = tempfile::tempdir().unwrap();
        let snap = snapshot_of_tar(root.path(), src.path(), &names);
        let store = Store::open(root.path()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let report = restore(&store, &snap, b"/", dest.path(), &RestoreOptions::default()).unwrap();
        assert_eq!(report.files, names.len() as u64);
        assert_eq!(report.bytes, (FILES * SIZE) as u64);
        for (name, data) in &files {
            assert!(
                std::fs::read(dest.path().join(name)).unwrap() == *data,
                "{name}"
            );
        }
        let frames = FILES * SIZE / crate::pack::compress::FRAME_TARGET;
        (store.frames_decoded(), frames)
    }

    /// A directory whose stream order is not its name order (GNU tar writes `readdir` order):
    /// its files are written where their data is, not by name.
    #[test]
    fn a_directory_is_written_in_the_order_its_data_is_stored() {
        let (decoded, frames) = decodes_to_restore(|dir, k, data| {
            let name = format!("f{k:03}");
            std::fs::write(dir.join(&name), data).unwrap();
            vec![name]
        });
        assert!(
            decoded <= frames + 8,
            "{decoded} frames decoded to restore {frames} frames of data"
        );
    }

    /// The same with a file in each of many subdirectories (`/usr/share/locale/*/`): the
    /// subdirectories are gone through in the stream's order, as the record lists them.
    #[test]
    fn subdirectories_are_written_in_the_order_of_the_stream() {
        let (decoded, frames) = decodes_to_restore(|dir, k, data| {
            let sub = format!("d{k:03}");
            std::fs::create_dir(dir.join(&sub)).unwrap();
            std::fs::write(dir.join(&sub).join("f"), data).unwrap();
            vec![sub.clone(), format!("{sub}/f")]
        });
        assert!(
            decoded <= frames + 8,
            "{decoded} frames decoded to restore {frames} frames of data"
        );
    }
}
