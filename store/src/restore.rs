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
//! File data is streamed through one 1 MiB buffer. A read error from the store (damaged
//! data) stops the restore with an error naming the path, and the partly written file is
//! removed: a restore never leaves wrong bytes behind silently.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{Kind, Node, Tree};

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
    /// Things left out or not fully restored (e.g. a device when not root, an xattr the
    /// filesystem refused), one line each.
    pub warnings: Vec<String>,
}

/// Warnings kept in the report; past this they are only counted.
const MAX_WARNINGS: usize = 1000;
/// File data moves through one buffer of this size.
const BUF_SIZE: usize = 1 << 20;
/// Deepest directory nesting restored (the tree builder stops at 256).
const MAX_DEPTH: usize = 1024;

/// Restore the node at `path` (from the snapshot's root; `/` and `.` components ignored) of
/// `snap` into `dir`. A directory's contents go directly into `dir` (and `dir` gets its
/// owner, mode, xattrs and mtime); anything else is written as `dir/NAME`. `dir` is created
/// if missing; an existing one must be empty unless `opts.force`.
///
/// Errors: `NotFound`/`InvalidArgument` (usage: unknown path, `dir` not a directory, a
/// symlink, or not empty); `Corrupt` naming the path when the store's data is damaged; `Io`
/// naming the path on disk when writing fails.
pub fn restore(
    store: &Store,
    snap: &Snapshot,
    path: &[u8],
    dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let tree = store.tree(snap)?;
    let node = tree.resolve(path)?;
    let prefix: Vec<u8> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect::<Vec<_>>()
        .join(&b'/');

    let root_fd = open_target(dir, opts.force)?;
    let mut r = Restorer {
        tree: &tree,
        dir: dir.to_path_buf(),
        prefix,
        root: root_fd,
        as_root: unsafe { libc::geteuid() } == 0,
        links: HashMap::new(),
        depth: 0,
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

/// Open (creating if missing) the target directory, without following a symlink at its last
/// component, and check it is empty unless `force`.
fn open_target(dir: &Path, force: bool) -> Result<OwnedFd> {
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Err(e) => return Err(Error::io(dir, e)),
        Ok(_) => {}
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{shown}: a path with a NUL byte")))?;
    let fd = match open_dir(libc::AT_FDCWD, &c) {
        Ok(fd) => fd,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => Error::InvalidArgument(format!(
                    "{shown} is a symlink; restore into the directory it points to"
                )),
                Some(libc::ENOTDIR) => {
                    Error::InvalidArgument(format!("{shown} is not a directory"))
                }
                _ => Error::io(dir, e),
            })
        }
    };
    if !force && !is_empty(fd.as_fd()).map_err(|e| Error::io(dir, e))? {
        return Err(Error::InvalidArgument(format!(
            "{shown} is not empty (use --force to restore into it anyway)"
        )));
    }
    Ok(fd)
}

struct Restorer<'a, 's> {
    tree: &'a Tree<'s>,
    /// DIR as given, for messages.
    dir: PathBuf,
    /// The restored node's path in the snapshot (for messages), without slashes around it.
    prefix: Vec<u8>,
    root: OwnedFd,
    as_root: bool,
    /// Hardlink groups: `ino` -> the first name written for it (relative to DIR) and how
    /// many more names the group has; forgotten once all are linked.
    links: HashMap<u64, (Vec<u8>, u64)>,
    /// Directories open on the current path.
    depth: usize,
    report: RestoreReport,
    dropped: u64,
    buf: Vec<u8>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Restorer<'_, '_> {
    fn warn(&mut self, msg: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(msg);
        } else {
            self.dropped += 1;
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
        format!("/{}", lossy(&join(&self.prefix, rel)))
    }

    fn io_err(&self, rel: &[u8], err: io::Error) -> Error {
        Error::io(self.disk(rel), err)
    }

    /// An error reading the store while restoring `rel`: damaged data keeps its kind (exit 1)
    /// and gains the path; anything else becomes an I/O error at the path on disk.
    fn read_err(&self, rel: &[u8], e: Error) -> Error {
        match e {
            Error::Corrupt(m) => Error::Corrupt(format!(
                "{} (restoring {}): {m}",
                self.snap_path(rel),
                self.disk(rel).display()
            )),
            e => self.io_err(
                rel,
                io::Error::other(format!(
                    "reading {} from the store: {e}",
                    self.snap_path(rel)
                )),
            ),
        }
    }

    /// Restore every child of the directory `node` into the open directory `fd` (at `rel`).
    fn contents(&mut self, fd: BorrowedFd, rel: &[u8], node: &Node) -> Result<()> {
        // Trees are built at most 256 levels deep; a deeper one is not from an ingest, and
        // must not exhaust the stack or the descriptors.
        if self.depth >= MAX_DEPTH {
            return Err(Error::corrupt(format!(
                "{}: directories nested over {MAX_DEPTH} levels deep",
                self.snap_path(rel)
            )));
        }
        let children = self.tree.readdir(node).map_err(|e| self.read_err(rel, e))?;
        self.depth += 1;
        let result = children.iter().try_for_each(|child| {
            let crel = join(rel, &child.name);
            self.child(fd, &crel, child)
        });
        self.depth -= 1;
        result
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
                lossy(name)
            );
            self.warn(msg);
            return Ok(());
        }
        let cname = CString::new(name.as_slice()).expect("no NUL, checked");

        if node.kind != Kind::Dir && node.ino != 0 {
            if let Some((first, _)) = self.links.get(&node.ino).cloned() {
                match self.hardlink(parent, &cname, rel, &first) {
                    Ok(true) => {
                        self.report.files += 1;
                        if let Some((_, left)) = self.links.get_mut(&node.ino) {
                            *left = left.saturating_sub(1);
                            if *left == 0 {
                                self.links.remove(&node.ino);
                            }
                        }
                        return Ok(());
                    }
                    Ok(false) => return Ok(()),
                    Err(e) => {
                        let msg = format!(
                            "{}: cannot hardlink to {}: {e}; writing a copy instead",
                            self.disk(rel).display(),
                            self.disk(&first).display()
                        );
                        self.warn(msg);
                    }
                }
            }
        }

        let created = match node.kind {
            Kind::Dir => {
                let Some(fd) = self.make_dir(parent, &cname, rel)? else {
                    return Ok(());
                };
                self.contents(fd.as_fd(), rel, node)?;
                self.meta_fd(fd.as_fd(), rel, node);
                true
            }
            Kind::File => self.file(parent, &cname, rel, node)?,
            Kind::Symlink => {
                let target = CString::new(node.link.as_slice());
                let Ok(target) = target else {
                    let msg = format!(
                        "{}: symlink target with a NUL byte skipped",
                        self.snap_path(rel)
                    );
                    self.warn(msg);
                    return Ok(());
                };
                let made = self.create(parent, &cname, rel, || {
                    cvt(unsafe {
                        libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), cname.as_ptr())
                    })
                })?;
                if made.is_some() {
                    self.meta_at(parent, &cname, rel, node);
                }
                made.is_some()
            }
            Kind::Char | Kind::Block | Kind::Fifo => self.special(parent, &cname, rel, node)?,
        };
        if created {
            self.report.files += 1;
            if node.kind != Kind::Dir && node.ino != 0 && node.nlink > 1 {
                self.links
                    .entry(node.ino)
                    .or_insert_with(|| (rel.to_vec(), node.nlink - 1));
            }
        }
        Ok(())
    }

    /// Run `make` to create a name; if something is already there, clear it (a non-directory
    /// is unlinked, an empty directory removed) and try once more. None when a non-empty
    /// directory is in the way (a warning says so).
    fn create<T>(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        mut make: impl FnMut() -> io::Result<T>,
    ) -> Result<Option<T>> {
        match make() {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(self.io_err(rel, e)),
        }
        let st = fstatat(parent, name).map_err(|e| self.io_err(rel, e))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        match cvt(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) }) {
            Ok(()) => {}
            Err(e)
                if is_dir && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                let msg = format!(
                    "{}: a non-empty directory is in the way; left as it is",
                    self.disk(rel).display()
                );
                self.warn(msg);
                return Ok(None);
            }
            Err(e) => return Err(self.io_err(rel, e)),
        }
        make().map(Some).map_err(|e| self.io_err(rel, e))
    }

    /// Create (or, if a directory is already there, reuse) directory `name` and open it
    /// without following symlinks; a non-directory in the way is replaced.
    fn make_dir(&mut self, parent: BorrowedFd, name: &CStr, rel: &[u8]) -> Result<Option<OwnedFd>> {
        let p = parent.as_raw_fd();
        match cvt(unsafe { libc::mkdirat(p, name.as_ptr(), 0o700) }) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                match open_dir(p, name) {
                    Ok(fd) => return Ok(Some(fd)),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                        // A file or symlink where the snapshot has a directory: replace it.
                        cvt(unsafe { libc::unlinkat(p, name.as_ptr(), 0) })
                            .map_err(|e| self.io_err(rel, e))?;
                        cvt(unsafe { libc::mkdirat(p, name.as_ptr(), 0o700) })
                            .map_err(|e| self.io_err(rel, e))?;
                    }
                    Err(e) => return Err(self.io_err(rel, e)),
                }
            }
            Err(e) => return Err(self.io_err(rel, e)),
        }
        open_dir(p, name).map(Some).map_err(|e| self.io_err(rel, e))
    }

    /// Link `name` in `parent` to `first` (a name written earlier, relative to DIR), reached
    /// from DIR one directory at a time without following symlinks. Ok(false): something is
    /// in the way (warned).
    fn hardlink(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        first: &[u8],
    ) -> io::Result<bool> {
        let comps: Vec<&[u8]> = first.split(|&b| b == b'/').collect();
        let (last, dirs) = comps.split_last().expect("split gives one or more");
        let mut held: Option<OwnedFd> = None;
        for d in dirs {
            let c = CString::new(*d).map_err(io::Error::other)?;
            let at = held
                .as_ref()
                .map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
            let fd = unsafe {
                libc::openat(
                    at,
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            held = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let olddir = held
            .as_ref()
            .map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
        let old = CString::new(*last).map_err(io::Error::other)?;
        let made = self
            .create(parent, name, rel, || {
                cvt(unsafe {
                    libc::linkat(olddir, old.as_ptr(), parent.as_raw_fd(), name.as_ptr(), 0)
                })
            })
            .map_err(|e| match e {
                Error::Io { err, .. } => err,
                e => io::Error::other(e.to_string()),
            })?;
        Ok(made.is_some())
    }

    /// A regular file: its data (only the data segments of a sparse file, then its length, so
    /// holes stay holes), then its attributes. False if something was in the way.
    fn file(&mut self, parent: BorrowedFd, name: &CStr, rel: &[u8], node: &Node) -> Result<bool> {
        let Some(fd) = self.create(parent, name, rel, || {
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })?
        else {
            return Ok(false);
        };
        let file = File::from(fd);
        match self.write_data(&file, rel, node) {
            Ok(n) => self.report.bytes += n,
            Err(e) => {
                // Never leave a file with wrong or missing bytes behind.
                drop(file);
                unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) };
                return Err(e);
            }
        }
        self.meta_fd(file.as_fd(), rel, node);
        Ok(true)
    }

    fn write_data(&mut self, file: &File, rel: &[u8], node: &Node) -> Result<u64> {
        let size = node.size;
        let ranges: Vec<(u64, u64)> = match node.content.as_ref().and_then(|c| c.segments.as_ref())
        {
            Some(segs) => segs.clone(),
            None => vec![(0, size)],
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut written = 0;
        let result = (|| {
            for (off, len) in ranges {
                let end = off.saturating_add(len).min(size);
                let mut pos = off;
                while pos < end {
                    let want = ((end - pos) as usize).min(buf.len());
                    let n = self
                        .tree
                        .read_at(node, pos, &mut buf[..want])
                        .map_err(|e| self.read_err(rel, e))?;
                    if n == 0 {
                        return Err(self.read_err(
                            rel,
                            Error::corrupt(format!(
                                "file data ends at {pos}, before its size {size}"
                            )),
                        ));
                    }
                    file.write_all_at(&buf[..n], pos)
                        .map_err(|e| self.io_err(rel, e))?;
                    pos += n as u64;
                    written += n as u64;
                }
            }
            file.set_len(size).map_err(|e| self.io_err(rel, e))
        })();
        self.buf = buf;
        result.map(|()| written)
    }

    /// A device or fifo.
    fn special(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        node: &Node,
    ) -> Result<bool> {
        let (kind, dev) = match node.kind {
            Kind::Char => (libc::S_IFCHR, true),
            Kind::Block => (libc::S_IFBLK, true),
            _ => (libc::S_IFIFO, false),
        };
        let (Ok(major), Ok(minor)) = (
            u32::try_from(node.rdev_major),
            u32::try_from(node.rdev_minor),
        ) else {
            let msg = format!(
                "{}: device number {}, {} is too large; skipped",
                self.snap_path(rel),
                node.rdev_major,
                node.rdev_minor
            );
            self.warn(msg);
            return Ok(false);
        };
        let rdev = if dev { libc::makedev(major, minor) } else { 0 };
        let made = self.create(parent, name, rel, || {
            cvt(unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), kind | 0o600, rdev) })
        });
        match made {
            Ok(Some(())) => {
                self.meta_at(parent, name, rel, node);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(Error::Io { err, .. }) if dev && err.raw_os_error() == Some(libc::EPERM) => {
                let msg = format!(
                    "{}: cannot create a {} device ({err}); skipped",
                    self.disk(rel).display(),
                    node.kind.name()
                );
                self.warn(msg);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Owner (as root), xattrs, mode and mtime of an open file or directory. Failures are
    /// warnings.
    fn meta_fd(&mut self, fd: BorrowedFd, rel: &[u8], node: &Node) {
        let raw = fd.as_raw_fd();
        if let Some((uid, gid)) = self.owner(rel, node) {
            if let Err(e) = cvt(unsafe { libc::fchown(raw, uid, gid) }) {
                self.meta_warn(rel, "owner", e);
            }
        }
        for (k, v) in &node.xattrs {
            let r = CString::new(k.as_slice())
                .map_err(io::Error::other)
                .and_then(|k| {
                    cvt(unsafe { libc::fsetxattr(raw, k.as_ptr(), v.as_ptr().cast(), v.len(), 0) })
                });
            if let Err(e) = r {
                self.meta_warn(rel, &format!("xattr {}", lossy(k)), e);
            }
        }
        if let Err(e) = cvt(unsafe { libc::fchmod(raw, (node.mode & 0o7777) as libc::mode_t) }) {
            self.meta_warn(rel, "mode", e);
        }
        let times = self.times(rel, node);
        if let Err(e) = cvt(unsafe { libc::futimens(raw, times.as_ptr()) }) {
            self.meta_warn(rel, "mtime", e);
        }
    }

    /// The same for a symlink, device or fifo, by name in `parent`, never following a
    /// symlink (a symlink's mode is not set: Linux has none).
    fn meta_at(&mut self, parent: BorrowedFd, name: &CStr, rel: &[u8], node: &Node) {
        let p = parent.as_raw_fd();
        if let Some((uid, gid)) = self.owner(rel, node) {
            if let Err(e) = cvt(unsafe {
                libc::fchownat(p, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
            }) {
                self.meta_warn(rel, "owner", e);
            }
        }
        if !node.xattrs.is_empty() {
            // lsetxattr by a path through the directory's descriptor: the directory is the
            // one we hold, and the last component is not followed.
            let mut path = format!("/proc/self/fd/{p}/").into_bytes();
            path.extend_from_slice(name.to_bytes());
            let path = CString::new(path).expect("no NUL");
            for (k, v) in &node.xattrs {
                let r = CString::new(k.as_slice())
                    .map_err(io::Error::other)
                    .and_then(|k| {
                        cvt(unsafe {
                            libc::lsetxattr(
                                path.as_ptr(),
                                k.as_ptr(),
                                v.as_ptr().cast(),
                                v.len(),
                                0,
                            )
                        })
                    });
                if let Err(e) = r {
                    self.meta_warn(rel, &format!("xattr {}", lossy(k)), e);
                }
            }
        }
        if node.kind != Kind::Symlink {
            let mode = (node.mode & 0o7777) as libc::mode_t;
            let r =
                cvt(unsafe { libc::fchmodat(p, name.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) })
                    .or_else(|e| match e.raw_os_error() {
                        // Without fchmodat2 or /proc: the name is the node just made, not a symlink.
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOENT | libc::EINVAL) => {
                            cvt(unsafe { libc::fchmodat(p, name.as_ptr(), mode, 0) })
                        }
                        _ => Err(e),
                    });
            if let Err(e) = r {
                self.meta_warn(rel, "mode", e);
            }
        }
        let times = self.times(rel, node);
        if let Err(e) = cvt(unsafe {
            libc::utimensat(p, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        }) {
            self.meta_warn(rel, "mtime", e);
        }
    }

    /// The owner to set: the snapshot's when running as root, else none (the files stay the
    /// current user's, as tar does).
    fn owner(&mut self, rel: &[u8], node: &Node) -> Option<(libc::uid_t, libc::gid_t)> {
        if !self.as_root {
            return None;
        }
        match (u32::try_from(node.uid), u32::try_from(node.gid)) {
            (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => Some((u, g)),
            _ => {
                let msg = format!(
                    "{}: owner {}:{} does not fit a Linux uid/gid; not set",
                    self.disk(rel).display(),
                    node.uid,
                    node.gid
                );
                self.warn(msg);
                None
            }
        }
    }

    /// [atime, mtime]: atime untouched, mtime to the nanosecond.
    fn times(&mut self, rel: &[u8], node: &Node) -> [libc::timespec; 2] {
        let mut nsec = node.mtime_nsec as libc::c_long;
        if nsec >= 1_000_000_000 {
            let msg = format!(
                "{}: mtime nanoseconds {nsec} out of range; using 0",
                self.disk(rel).display()
            );
            self.warn(msg);
            nsec = 0;
        }
        [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: node.mtime as libc::time_t,
                tv_nsec: nsec,
            },
        ]
    }

    fn meta_warn(&mut self, rel: &[u8], what: &str, e: io::Error) {
        let msg = format!("{}: cannot set {what}: {e}", self.disk(rel).display());
        self.warn(msg);
    }
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Open a directory by name in `at` without following a symlink.
fn open_dir(at: libc::c_int, name: &CStr) -> io::Result<OwnedFd> {
    let fd = unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstatat(at: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    cvt(unsafe {
        libc::fstatat(
            at.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

/// True if the open directory holds nothing but `.` and `..`.
fn is_empty(fd: BorrowedFd) -> io::Result<bool> {
    let dup = fd.try_clone_to_owned()?;
    let raw = dup.as_raw_fd();
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    // The DIR stream owns the descriptor now.
    std::mem::forget(dup);
    let mut empty = true;
    let mut err = None;
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            let last = io::Error::last_os_error();
            if last.raw_os_error() != Some(0) {
                err = Some(last);
            }
            break;
        }
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            empty = false;
            break;
        }
    }
    unsafe { libc::closedir(d) };
    match err {
        Some(e) => Err(e),
        None => Ok(empty),
    }
}
