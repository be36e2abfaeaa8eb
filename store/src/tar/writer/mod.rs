//! A native tar writer for `cellar snapshot --dir DIR`: archives a local directory without an
//! external `tar`, deterministically (an unchanged directory gives the same bytes every time).
//!
//! # The stream
//!
//! POSIX pax, as GNU tar writes it with `tar --format=posix -C DIR -cf - .`, minus everything
//! that varies between runs:
//!
//! - Headers are ustar (magic `ustar\0`, version `00`). Numbers are zero-padded octal ending in
//!   NUL (`%07o`, `%011o`); the checksum is `%06o\0 `. uname, gname, atime and ctime are never
//!   written (owners are numeric only); devmajor/devminor are `0000000\0` except for devices.
//! - Member names: the root is `./`, everything else `./path`, directories end in `/`. The walk
//!   is depth-first, entries of a directory sorted by the bytes of their names, a directory
//!   before its contents. Names are raw bytes (any byte but NUL and `/`, newlines included).
//! - Mode is `st_mode & 0o7777` (setuid, setgid and sticky included); uid and gid are numeric;
//!   mtime is seconds. Typeflags: `0` regular file, `1` hard link, `2` symlink (target from
//!   readlink, raw bytes), `3`/`4` character/block device (devmajor, devminor), `5` directory,
//!   `6` fifo. Sockets and other types are left out, with a warning.
//! - Hard links: a regular file or symlink with st_nlink > 1 whose (st_dev, st_ino) was
//!   already archived is a `1` member, size 0, linkname the first member's name. As in GNU
//!   tar, devices and fifos are never linked: each name is a node of its own.
//! - A local `x` header precedes a member only when something does not fit ustar: the name
//!   does not fit the 100-byte name field nor a split at a `/` into prefix (≤ 155 bytes) and
//!   name (1..=100 bytes) (`path`; the name field then holds its first 100 bytes); the link
//!   target is over 100 bytes (`linkpath`; likewise truncated in the field); uid or gid over
//!   0o7777777 or size over 0o77777777777 (`uid`, `gid`, `size`; the field then holds 0); mtime
//!   negative, over 0o77777777777 or with non-zero nanoseconds (`mtime=SECS` or
//!   `mtime=SECS.FRACTION`, fraction trailing zeros trimmed, negative times as `-1.5`; the field
//!   holds the whole seconds, 0 when out of range); extended attributes; sparse files. Records
//!   are `"%d %s=%s\n"` with the self-inclusive decimal length, sorted by key bytes. The `x`
//!   header's own ustar header: name `./PaxHeaders/<basename>` (basename `.` for the root;
//!   truncated to 100 bytes), mode 0644, uid/gid 0, mtime the member's mtime field, no
//!   devmajor/devminor.
//! - Extended attributes: every one llistxattr/lgetxattr return, in any namespace, as
//!   `SCHILY.xattr.NAME=VALUE` (VALUE raw bytes; `%` and `=` in NAME written `%25` and `%3D`, as
//!   GNU tar does).
//! - Sparse files (st_blocks * 512 < st_size, and SEEK_DATA/SEEK_HOLE find a hole): GNU sparse
//!   format 1.0, byte for byte as GNU tar 1.34 `--sparse --format=posix` writes it, except the
//!   `%p` in the name is 0: records `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
//!   `GNU.sparse.name=<member name>`, `GNU.sparse.realsize=<st_size>`; the ustar name is
//!   `<dir>/GNUSparseFile.0/<basename>` (`<dir>` the member name's directory part, e.g. `.`;
//!   truncated to 100 bytes); the payload is the map in decimal — `<count>\n`, then
//!   `<offset>\n<length>\n` per data segment, always ending with a `(st_size, 0)` segment —
//!   NUL-padded to a multiple of 512, then the data segments' bytes. The size field is the map
//!   (padded) plus the data. A file with no data at all has the single segment `(st_size, 0)`.
//! - The end: two zero blocks, then zeros up to a multiple of 10240 bytes.
//!
//! # What is read
//!
//! Nothing is followed through a symlink except DIR itself (like `tar -C DIR`): every
//! directory is opened once, from its parent's descriptor, and its entries are reached through
//! it (`paths.rs`), so a directory swapped for a symlink mid-walk cannot lead outside DIR; one
//! moved elsewhere is walked where it went. Files are opened with O_NOFOLLOW and streamed; a file that shrinks while being read is padded with
//! zeros to the size in its header, one that grows is cut there, and both give a "file changed
//! as we read it" warning. A path that cannot be read (permission denied, vanished) is left out
//! with a warning naming it. `--one-file-system` archives a directory on another device than
//! DIR (a mount point) but not its contents. `--exclude` patterns are GNU tar's (described in
//! the `glob` module); an excluded directory is left out with its contents; the root itself is
//! never excluded.
//!
//! # Differences from GNU tar's posix format
//!
//! Besides leaving out atime, ctime, uname and gname and naming every `x` header
//! `./PaxHeaders/<basename>`: names with non-ASCII bytes stay in the ustar fields when they fit
//! (GNU tar moves them to `path` records), a name of 101..=256 bytes is split into prefix and
//! name when a `/` allows it (GNU tar always uses a `path` record), and `x` records are sorted
//! by key (GNU tar writes them in its own order). Like GNU tar, `path`/`linkpath` values are
//! written as the raw bytes of the name with no `hdrcharset` record (GNU tar 1.34 would warn
//! about one); bsdtar reads such names right but warns about those that are not UTF-8.

mod header;
mod members;
mod output;
mod paths;
mod regular;
mod sparse;
mod xattrs;

use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use self::header::{Entry, BLOCK_DEVICE, CHAR_DEVICE, FIFO, HARDLINK, SYMLINK};
pub use self::members::{MemberWriter, Payload};
use self::output::Out;
#[cfg(test)]
use self::paths::list_dir;
use self::paths::{
    descriptors_reachable, list_open_dir, not_a_directory_now, open_dir, out_of_descriptors,
    through,
};
use self::regular::HardLinks;
use self::xattrs::{read_xattrs, read_xattrs_fd, xattr_key};
use super::glob::Excludes;
use crate::error::{Error, Result};
use crate::tar::header::DIRECTORY;
use crate::tree::join_path as child;

#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// GNU tar-like `--exclude` patterns (see the `glob` module), bytes as names are.
    pub excludes: Vec<Vec<u8>>,
    /// Do not descend into directories on another device than the root.
    pub one_file_system: bool,
    /// Directories (device, inode) left out with their contents, and a warning: the store the
    /// snapshot is written to, whose packs grow while they are read, as GNU tar leaves out
    /// the archive it writes ("file is the archive; not dumped").
    pub leave_out: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// Paths left out or archived imperfectly, each message naming the path.
    pub warnings: Vec<String>,
    /// Of those, the paths that could not be read (an error other than the path vanishing):
    /// missing from the stream, or in it without their xattrs or with zeros for data.
    pub unreadable: u64,
    /// Members written (the `x` headers are not members of their own).
    pub members: u64,
}

/// Write DIR as a tar stream to `out`. Deterministic: the same unchanged directory gives the
/// same bytes every time. See the module documentation for the exact dialect.
pub fn write_dir(root: &Path, opts: &DirOptions, out: &mut dyn Write) -> Result<DirReport> {
    let dir = open_dir(root, true).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => {
            Error::InvalidArgument(format!("{}: not a directory", root.display()))
        }
        _ => Error::io(root, e),
    })?;
    let root_md = dir.metadata().map_err(|e| Error::io(root, e))?;
    let mut walker = Walker::new(root, &root_md, opts, out);
    if !walker.by_descriptor {
        walker.warn(
            b"",
            "/proc is not mounted: entries are reached by their paths, so a directory \
             replaced by a symlink during the walk could be followed",
        );
    }
    walker.start(dir, &root_md)?;
    walker.run()?;
    walker.out.finish()?;
    Ok(walker.report)
}

/// The walk's state. Errors returned by its methods are fatal (the output failed, the root
/// cannot be listed, no descriptor is left); anything wrong with one path becomes a warning.
struct Walker<'a> {
    /// DIR as given, for messages.
    root: PathBuf,
    /// The directories being walked, the root first, each open (see `paths.rs`).
    stack: Vec<OpenDir>,
    /// Entries are reached through their directory's descriptor (/proc is mounted), not by
    /// their paths from DIR.
    by_descriptor: bool,
    root_dev: u64,
    one_file_system: bool,
    excludes: Excludes,
    leave_out: Vec<(u64, u64)>,
    out: Out<'a>,
    links: HardLinks,
    report: DirReport,
}

/// Where an entry's extended attributes are read from: the entry itself when it is open (a
/// directory or regular file), else its path (a symlink, device or fifo).
enum Attrs<'a> {
    Path(&'a Path),
    Open(&'a File),
}

/// A directory whose member is written and whose entries are being walked.
struct OpenDir {
    /// Path relative to the root, no leading `./`, no trailing `/` (empty for the root).
    rel: Vec<u8>,
    dir: File,
    names: std::vec::IntoIter<Vec<u8>>,
}

impl<'a> Walker<'a> {
    fn new(
        root: &Path,
        root_md: &Metadata,
        opts: &DirOptions,
        out: &'a mut dyn Write,
    ) -> Walker<'a> {
        Walker {
            root: root.to_path_buf(),
            stack: Vec::new(),
            by_descriptor: descriptors_reachable(),
            root_dev: root_md.dev(),
            one_file_system: opts.one_file_system,
            excludes: Excludes::new(&opts.excludes),
            leave_out: opts.leave_out.clone(),
            out: Out::new(out),
            links: HardLinks::default(),
            report: DirReport::default(),
        }
    }

    /// Archive the root, open as `dir`, and make it the first directory to walk.
    fn start(&mut self, dir: File, md: &Metadata) -> Result<()> {
        if let Some(open) = self.opened(Vec::new(), dir, md)? {
            self.stack.push(open);
        }
        Ok(())
    }

    /// Depth-first with an explicit stack, so a deep tree cannot overflow the call stack.
    fn run(&mut self) -> Result<()> {
        while self.step()? {}
        Ok(())
    }

    /// Archive the next entry; false once every one is.
    fn step(&mut self) -> Result<bool> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(false);
        };
        match top.names.next() {
            Some(name) => {
                let rel = child(&top.rel, &name);
                if let Some(dir) = self.visit(rel)? {
                    self.stack.push(dir);
                }
            }
            None => {
                self.stack.pop();
            }
        }
        Ok(true)
    }

    /// Where the entry at `rel`, a child of the directory on top of the stack, is reached.
    fn path(&self, rel: &[u8]) -> PathBuf {
        if !self.by_descriptor {
            return self.root.join(OsStr::from_bytes(rel));
        }
        let parent = self.stack.last().expect("an entry below the root");
        through(
            &parent.dir,
            &rel[parent.rel.len() + usize::from(!parent.rel.is_empty())..],
        )
    }

    /// A warning about the entry at `rel`, naming it by its path from DIR.
    fn warn(&mut self, rel: &[u8], what: impl Display) {
        let full = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        };
        self.report
            .warnings
            .push(format!("{}: {what}", shown(&full)));
    }

    /// A warning that the entry at `rel` could not be read (`what` says how that left it),
    /// counted as such unless it vanished first, as a live tree's files do: GNU tar too
    /// tells "removed before we read it" from a failure.
    fn unreadable(&mut self, rel: &[u8], e: &io::Error, what: impl Display) {
        if e.kind() != io::ErrorKind::NotFound {
            self.report.unreadable += 1;
        }
        self.warn(rel, what);
    }

    /// The entry at `rel` could not be opened: it is left out with a warning, unless the
    /// process ran out of descriptors, which would leave out everything deeper as well.
    fn left_out(&mut self, rel: &[u8], e: io::Error) -> Result<()> {
        if !out_of_descriptors(&e) {
            self.unreadable(rel, &e, &e);
            return Ok(());
        }
        let depth = rel.split(|&b| b == b'/').count();
        Err(Error::io(
            self.root.join(OsStr::from_bytes(rel)),
            io::Error::other(format!(
                "{e}: the walk holds a directory open for each of the {depth} levels it is \
                 inside (raise `ulimit -n`)"
            )),
        ))
    }

    /// Archive one entry below the root, a child of the directory on top of the stack; a
    /// directory comes back to have its entries walked.
    fn visit(&mut self, rel: Vec<u8>) -> Result<Option<OpenDir>> {
        if self.excludes.excludes(&rel) {
            return Ok(None);
        }
        let path = self.path(&rel);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                self.unreadable(&rel, &e, &e);
                return Ok(None);
            }
        };
        let ft = md.file_type();
        if ft.is_dir() {
            return self.directory(rel, &path);
        }
        // A later name of an archived file or symlink is a `1` member naming the first. GNU
        // tar links those two types alone: a device's or fifo's names are each a node.
        if md.nlink() > 1 && (ft.is_file() || ft.is_symlink()) {
            if let Some(first) = self.links.earlier(&md) {
                let mut entry = Entry::new(member_name(&rel, false), HARDLINK, &md);
                entry.link = first;
                self.emit(&entry, &rel)?;
                return Ok(None);
            }
        }
        if ft.is_file() {
            self.regular(&rel, &path)?;
        } else if ft.is_symlink() {
            self.symlink(&rel, &path, &md)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            self.special(&rel, &path, &md)?;
        } else if ft.is_socket() {
            self.warn(&rel, "socket ignored");
        } else {
            self.warn(&rel, "unknown file type; not dumped");
        }
        Ok(None)
    }

    /// Open a directory below the root, never through a symlink, and archive it.
    fn directory(&mut self, rel: Vec<u8>, path: &Path) -> Result<Option<OpenDir>> {
        let opened = open_dir(path, false).and_then(|dir| {
            let md = dir.metadata()?;
            Ok((dir, md))
        });
        let (dir, md) = match opened {
            Ok(opened) => opened,
            Err(e) if not_a_directory_now(&e) => {
                self.warn(&rel, "directory changed type as we read it; not dumped");
                return Ok(None);
            }
            Err(e) => return self.left_out(&rel, e).map(|()| None),
        };
        if self.leave_out.contains(&(md.dev(), md.ino())) {
            self.warn(&rel, "is the store being written to; not dumped");
            return Ok(None);
        }
        self.opened(rel, dir, &md)
    }

    /// Write the member of a directory open as `dir`; return it with its sorted entries
    /// unless it is a mount point under `--one-file-system`. The entries are listed first so
    /// that a directory that cannot be read is left out whole, as GNU tar does.
    fn opened(&mut self, rel: Vec<u8>, dir: File, md: &Metadata) -> Result<Option<OpenDir>> {
        let descend = !self.one_file_system || md.dev() == self.root_dev;
        let names = if descend {
            match list_open_dir(&dir) {
                Ok(names) => names,
                // Without its root listing the snapshot would be empty: that is an error.
                Err(e) if rel.is_empty() => return Err(Error::io(&self.root, e)),
                Err(e) => return self.left_out(&rel, e).map(|()| None),
            }
        } else {
            Vec::new()
        };
        let mut entry = Entry::new(member_name(&rel, true), DIRECTORY, md);
        self.add_xattrs(&mut entry, &rel, Attrs::Open(&dir));
        if !self.emit(&entry, &rel)? {
            return Ok(None);
        }
        Ok(Some(OpenDir {
            rel,
            dir,
            names: names.into_iter(),
        }))
    }

    fn symlink(&mut self, rel: &[u8], path: &Path, md: &Metadata) -> Result<()> {
        let target = match fs::read_link(path) {
            Ok(t) => t.into_os_string().into_vec(),
            Err(e) => {
                self.unreadable(rel, &e, &e);
                return Ok(());
            }
        };
        let mut entry = Entry::new(member_name(rel, false), SYMLINK, md);
        entry.link = target;
        self.add_xattrs(&mut entry, rel, Attrs::Path(path));
        self.emit_linkable(entry, rel, md)
    }

    /// Devices and fifos: header only.
    fn special(&mut self, rel: &[u8], path: &Path, md: &Metadata) -> Result<()> {
        let ft = md.file_type();
        let typeflag = if ft.is_char_device() {
            CHAR_DEVICE
        } else if ft.is_block_device() {
            BLOCK_DEVICE
        } else {
            FIFO
        };
        let mut entry = Entry::new(member_name(rel, false), typeflag, md);
        if typeflag != FIFO {
            let rdev = md.rdev() as libc::dev_t;
            entry.dev = (libc::major(rdev).into(), libc::minor(rdev).into());
        }
        self.add_xattrs(&mut entry, rel, Attrs::Path(path));
        self.emit(&entry, rel)?;
        Ok(())
    }

    /// Write a member other names may link to: an inode with more links is remembered by
    /// the name it was archived under.
    fn emit_linkable(&mut self, entry: Entry, rel: &[u8], md: &Metadata) -> Result<()> {
        if self.emit(&entry, rel)? && md.nlink() > 1 {
            self.links.remember(md, entry.name);
        }
        Ok(())
    }

    /// The extended attributes of the entry at `rel`.
    fn add_xattrs(&mut self, entry: &mut Entry, rel: &[u8], from: Attrs) {
        let read = match from {
            Attrs::Path(path) => read_xattrs(path),
            Attrs::Open(file) => read_xattrs_fd(file),
        };
        match read {
            Ok(attrs) => {
                for (name, value) in attrs {
                    entry.pax.insert(xattr_key(&name), value);
                }
            }
            Err(e) => self.unreadable(
                rel,
                &e,
                format_args!("cannot read extended attributes: {e}; archived without them"),
            ),
        }
    }

    /// Write a member's headers. A member that cannot be represented is left out with a
    /// warning; returns whether it was written.
    fn emit(&mut self, entry: &Entry, rel: &[u8]) -> Result<bool> {
        match entry.encode() {
            Ok(headers) => {
                self.out.write(&headers)?;
                self.report.members += 1;
                Ok(true)
            }
            Err(why) => {
                self.warn(rel, format_args!("{why}; not dumped"));
                Ok(false)
            }
        }
    }
}

/// The member name GNU tar gives a path under `tar -C DIR -cf - .`.
fn member_name(rel: &[u8], dir: bool) -> Vec<u8> {
    if rel.is_empty() {
        return b"./".to_vec();
    }
    let mut name = Vec::with_capacity(rel.len() + 3);
    name.extend_from_slice(b"./");
    name.extend_from_slice(rel);
    if dir {
        name.push(b'/');
    }
    name
}

/// A path for a warning: control characters (newlines in names) escaped.
fn shown(path: &Path) -> String {
    let mut s = String::new();
    for c in path.to_string_lossy().chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests;
