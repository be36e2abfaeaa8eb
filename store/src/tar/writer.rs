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
//! - Hard links: a regular file with st_nlink > 1 whose (st_dev, st_ino) was already archived
//!   is a `1` member, size 0, linkname the first member's name.
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
//! Nothing is followed through a symlink except DIR itself (like `tar -C DIR`). Files are
//! opened with O_NOFOLLOW and streamed; a file that shrinks while being read is padded with
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

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fmt::Display;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::glob::Excludes;
use super::header::{self, BLOCK};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// GNU tar-like `--exclude` patterns (see the `glob` module).
    pub excludes: Vec<String>,
    /// Do not descend into directories on another device than the root.
    pub one_file_system: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// Paths left out or archived imperfectly, each message naming the path.
    pub warnings: Vec<String>,
    /// Members written (the `x` headers are not members of their own).
    pub members: u64,
}

/// GNU tar's default record size: the archive's length is a multiple of it.
const RECORD: u64 = 10240;
/// Read and write in pieces this large: files are never held in memory whole.
const COPY_BUF: usize = 64 * 1024;

/// Where each field lives in a ustar header block.
mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHECKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
}

const NAME_LEN: usize = field::NAME.end - field::NAME.start;
const PREFIX_LEN: usize = field::PREFIX.end - field::PREFIX.start;
/// The largest value of a 12-byte field (11 octal digits): size and mtime.
const MAX_OCTAL_11: u64 = 0o77777777777;

const REGULAR: u8 = b'0';
const HARDLINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const CHAR_DEVICE: u8 = b'3';
const BLOCK_DEVICE: u8 = b'4';
const FIFO: u8 = b'6';

/// Write DIR as a tar stream to `out`. Deterministic: the same unchanged directory gives the
/// same bytes every time. See the module documentation for the exact dialect.
pub fn write_dir(root: &Path, opts: &DirOptions, out: &mut dyn Write) -> Result<DirReport> {
    // The root is followed if it is a symlink, as `tar -C DIR` would. Naming it `DIR/.` then
    // makes the calls that never follow a symlink (lgetxattr) see the directory as well.
    let is_link = fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink());
    let root = if is_link {
        root.join(".")
    } else {
        root.to_path_buf()
    };
    let root_md = fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
    if !root_md.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: not a directory",
            root.display()
        )));
    }
    let mut walker = Walker::new(&root, &root_md, opts, out);
    walker.run(&root_md)?;
    walker.out.finish()?;
    Ok(walker.report)
}

/// The walk's state. Errors returned by its methods are fatal (the output failed, or the root
/// cannot be listed); anything wrong with one path becomes a warning.
struct Walker<'a> {
    root: &'a Path,
    root_dev: u64,
    one_file_system: bool,
    excludes: Excludes,
    out: Out<'a>,
    links: HardLinks,
    report: DirReport,
}

/// A directory whose member is written and whose entries are being walked.
struct OpenDir {
    /// Path relative to the root, no leading `./`, no trailing `/` (empty for the root).
    rel: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

impl<'a> Walker<'a> {
    fn new(
        root: &'a Path,
        root_md: &Metadata,
        opts: &DirOptions,
        out: &'a mut dyn Write,
    ) -> Walker<'a> {
        Walker {
            root,
            root_dev: root_md.dev(),
            one_file_system: opts.one_file_system,
            excludes: Excludes::new(&opts.excludes),
            out: Out::new(out),
            links: HardLinks::default(),
            report: DirReport::default(),
        }
    }

    /// Depth-first with an explicit stack, so a deep tree cannot overflow the call stack.
    fn run(&mut self, root_md: &Metadata) -> Result<()> {
        let mut stack: Vec<OpenDir> = self.directory(Vec::new(), root_md)?.into_iter().collect();
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.next() else {
                stack.pop();
                continue;
            };
            let rel = child(&top.rel, &name);
            if let Some(dir) = self.visit(rel)? {
                stack.push(dir);
            }
        }
        Ok(())
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn warn(&mut self, path: &Path, what: impl Display) {
        self.report
            .warnings
            .push(format!("{}: {what}", shown(path)));
    }

    /// Archive one entry below the root; a directory comes back to have its entries walked.
    fn visit(&mut self, rel: Vec<u8>) -> Result<Option<OpenDir>> {
        if self.excludes.excludes(&rel) {
            return Ok(None);
        }
        let path = self.path(&rel);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                self.warn(&path, e);
                return Ok(None);
            }
        };
        let ft = md.file_type();
        if ft.is_dir() {
            return self.directory(rel, &md);
        }
        if ft.is_file() {
            self.regular(&rel, &path, &md)?;
        } else if ft.is_symlink() {
            self.symlink(&rel, &path, &md)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            self.special(&rel, &path, &md)?;
        } else if ft.is_socket() {
            self.warn(&path, "socket ignored");
        } else {
            self.warn(&path, "unknown file type; not dumped");
        }
        Ok(None)
    }

    /// Write a directory's member; return it with its sorted entries unless it is a mount
    /// point under `--one-file-system`. The entries are listed first so that a directory that
    /// cannot be read is left out whole, as GNU tar does.
    fn directory(&mut self, rel: Vec<u8>, md: &Metadata) -> Result<Option<OpenDir>> {
        let path = self.path(&rel);
        let descend = !self.one_file_system || md.dev() == self.root_dev;
        let names = if descend {
            match list_dir(&path) {
                Ok(names) => names,
                // Without its root listing the snapshot would be empty: that is an error.
                Err(e) if rel.is_empty() => return Err(Error::io(path, e)),
                Err(e) => {
                    self.warn(&path, e);
                    return Ok(None);
                }
            }
        } else {
            Vec::new()
        };
        let mut entry = Entry::new(member_name(&rel, true), header::DIRECTORY, md);
        self.add_xattrs(&mut entry, &path);
        if !self.emit(&entry, &path)? {
            return Ok(None);
        }
        Ok(Some(OpenDir {
            rel,
            names: names.into_iter(),
        }))
    }

    fn regular(&mut self, rel: &[u8], path: &Path, md: &Metadata) -> Result<()> {
        let name = member_name(rel, false);
        if md.nlink() > 1 {
            if let Some(first) = self.links.earlier(md) {
                let mut entry = Entry::new(name, HARDLINK, md);
                entry.link = first;
                self.emit(&entry, path)?;
                return Ok(());
            }
        }
        // O_NONBLOCK: should a fifo have replaced the file since lstat, opening it must not
        // hang (GNU tar opens files the same way).
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                self.warn(path, e);
                return Ok(());
            }
        };
        // The header describes what was opened, not what lstat saw a moment earlier.
        let md = match file.metadata() {
            Ok(md) if md.is_file() => md,
            Ok(_) => {
                self.warn(path, "file changed type as we read it; not dumped");
                return Ok(());
            }
            Err(e) => {
                self.warn(path, e);
                return Ok(());
            }
        };
        self.file(name, path, &file, &md)
    }

    /// Archive an open regular file whose header will say `md`.
    fn file(&mut self, name: Vec<u8>, path: &Path, file: &File, md: &Metadata) -> Result<()> {
        let size = md.size();
        let mut entry = Entry::new(name, REGULAR, md);
        self.add_xattrs(&mut entry, path);
        let sparse = looks_sparse(md)
            .then(|| data_segments(file, size))
            .flatten()
            .map(|segments| (sparse_map(&segments), segments));
        match &sparse {
            Some((map, segments)) => entry.make_sparse(map, segments, size),
            None => entry.size = size,
        }
        if !self.emit(&entry, path)? {
            return Ok(());
        }
        let trouble = match &sparse {
            Some((map, segments)) => self.copy_sparse(file, map, segments)?,
            None => self.out.copy(file, 0, size)?,
        };
        self.out.pad_to(BLOCK as u64)?;
        self.report_trouble(path, trouble, file, md);
        if md.nlink() > 1 {
            self.links.remember(md, entry.name);
        }
        Ok(())
    }

    /// A GNU sparse 1.0 payload: the map, then each data segment.
    fn copy_sparse(
        &mut self,
        file: &File,
        map: &[u8],
        segments: &[(u64, u64)],
    ) -> Result<Option<ReadTrouble>> {
        self.out.write(map)?;
        let mut trouble = None;
        for &(offset, len) in segments {
            let t = self.out.copy(file, offset, len)?;
            trouble = trouble.or(t);
        }
        Ok(trouble)
    }

    /// Warn about a file that did not read back as its header said.
    fn report_trouble(
        &mut self,
        path: &Path,
        trouble: Option<ReadTrouble>,
        file: &File,
        md: &Metadata,
    ) {
        match trouble {
            Some(ReadTrouble::Shrank) => self.warn(path, "file changed as we read it"),
            Some(ReadTrouble::Failed { at, error }) => self.warn(
                path,
                format_args!("read error at byte {at}: {error}; padded with zeros"),
            ),
            None if changed_since(file, md) => self.warn(path, "file changed as we read it"),
            None => {}
        }
    }

    fn symlink(&mut self, rel: &[u8], path: &Path, md: &Metadata) -> Result<()> {
        let target = match fs::read_link(path) {
            Ok(t) => t.into_os_string().into_vec(),
            Err(e) => {
                self.warn(path, e);
                return Ok(());
            }
        };
        let mut entry = Entry::new(member_name(rel, false), SYMLINK, md);
        entry.link = target;
        self.add_xattrs(&mut entry, path);
        self.emit(&entry, path)?;
        Ok(())
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
        self.add_xattrs(&mut entry, path);
        self.emit(&entry, path)?;
        Ok(())
    }

    fn add_xattrs(&mut self, entry: &mut Entry, path: &Path) {
        match read_xattrs(path) {
            Ok(attrs) => {
                for (name, value) in attrs {
                    entry.pax.insert(xattr_key(&name), value);
                }
            }
            Err(e) => self.warn(
                path,
                format_args!("cannot read extended attributes: {e}; archived without them"),
            ),
        }
    }

    /// Write a member's headers. A member that cannot be represented is left out with a
    /// warning; returns whether it was written.
    fn emit(&mut self, entry: &Entry, path: &Path) -> Result<bool> {
        match entry.encode() {
            Ok(headers) => {
                self.out.write(&headers)?;
                self.report.members += 1;
                Ok(true)
            }
            Err(why) => {
                self.warn(path, format_args!("{why}; not dumped"));
                Ok(false)
            }
        }
    }
}

/// `parent/name` for relative paths, where the root is the empty path.
fn child(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        rel.extend_from_slice(parent);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
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

/// A directory's entry names, sorted by their bytes: the order that makes the stream
/// independent of how the file system happens to return them.
fn list_dir(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name().into_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(names)
}

/// Files archived with st_nlink > 1, so later links to them become `1` members.
#[derive(Default)]
struct HardLinks(HashMap<(u64, u64), Seen>);

struct Seen {
    name: Vec<u8>,
    /// Links not met yet; the entry is dropped once all are, to bound memory.
    links_left: u64,
}

impl HardLinks {
    /// The member name under which this file was archived already, if it was.
    fn earlier(&mut self, md: &Metadata) -> Option<Vec<u8>> {
        let key = (md.dev(), md.ino());
        let seen = self.0.get_mut(&key)?;
        let name = seen.name.clone();
        seen.links_left = seen.links_left.saturating_sub(1);
        if seen.links_left == 0 {
            self.0.remove(&key);
        }
        Some(name)
    }

    fn remember(&mut self, md: &Metadata, name: Vec<u8>) {
        let links_left = md.nlink() - 1;
        self.0
            .insert((md.dev(), md.ino()), Seen { name, links_left });
    }
}

/// GNU tar's test for files worth scanning for holes: fewer blocks allocated than the size
/// needs.
fn looks_sparse(md: &Metadata) -> bool {
    md.blocks().saturating_mul(512) < md.size()
}

/// The data segments `(offset, length)` of a file with holes, found with SEEK_DATA/SEEK_HOLE
/// exactly as GNU tar 1.34 does (including the final `(size, 0)` segment it always adds).
/// None when the file turns out to have no hole, or the file system cannot tell, or the file
/// changes under the scan: it is then archived as an ordinary file.
fn data_segments(file: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    let mut offset = 0;
    loop {
        let data = match seek(file, offset, libc::SEEK_DATA) {
            Ok(data) if data < size => data,
            Ok(_) => size,
            // No data from `offset` to the end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
            Err(_) => return None,
        };
        if data == size {
            segments.push((size, 0));
            return Some(segments);
        }
        let hole = seek(file, data, libc::SEEK_HOLE).ok()?.min(size);
        if hole <= data {
            return None;
        }
        if offset == 0 && data == 0 && hole == size {
            return None;
        }
        segments.push((data, hole - data));
        offset = hole;
    }
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a file descriptor we own; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// The GNU sparse 1.0 map that starts the payload: decimal text, NUL-padded to a block.
fn sparse_map(segments: &[(u64, u64)]) -> Vec<u8> {
    let mut map = format!("{}\n", segments.len()).into_bytes();
    for (offset, len) in segments {
        map.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
    }
    map.resize(map.len().next_multiple_of(BLOCK), 0);
    map
}

/// Whether a file changed between the header's fstat and the end of reading it.
fn changed_since(file: &File, before: &Metadata) -> bool {
    file.metadata().is_ok_and(|now| {
        now.size() != before.size()
            || now.mtime() != before.mtime()
            || now.mtime_nsec() != before.mtime_nsec()
    })
}

/// Every extended attribute of `path` itself (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let list = xattr_call(|buf, len| {
        // SAFETY: `buf` is valid for `len` bytes (or null with len 0), cpath is NUL-terminated.
        unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) }
    });
    let list = match list {
        Ok(list) => list,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::ENOSYS)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut attrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let value = xattr_call(|buf, len| {
            // SAFETY: as above; cname is NUL-terminated.
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        });
        match value {
            Ok(value) => attrs.push((name.to_vec(), value)),
            // Removed between listing and reading: it is simply not there any more.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    attrs.sort();
    Ok(attrs)
}

/// The size-then-fetch protocol of the *xattr calls, retried when the value grows between the
/// two calls (ERANGE).
fn xattr_call(mut call: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        if size == 0 {
            return Ok(buf);
        }
        let n = call(buf.as_mut_ptr(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
    Err(io::Error::other("extended attributes keep changing"))
}

/// `SCHILY.xattr.NAME`, with `%` and `=` in NAME escaped as GNU tar does (a raw `=` would end
/// the key).
fn xattr_key(name: &[u8]) -> Vec<u8> {
    let mut key = b"SCHILY.xattr.".to_vec();
    for &b in name {
        match b {
            b'%' => key.extend_from_slice(b"%25"),
            b'=' => key.extend_from_slice(b"%3D"),
            _ => key.push(b),
        }
    }
    key
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timestamp {
    secs: i64,
    /// 0..1_000_000_000, as stat returns it (also for negative `secs`).
    nsec: u32,
}

/// One member as it is about to be written.
struct Entry {
    /// `./`, `./a`, `./dir/`.
    name: Vec<u8>,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timestamp,
    /// Payload bytes after the header.
    size: u64,
    link: Vec<u8>,
    dev: (u64, u64),
    /// Records that go in the `x` header whatever the fields (xattrs, sparse); `encode` adds
    /// those for values that do not fit.
    pax: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sparse files: the ustar name, the real one being in `GNU.sparse.name`.
    sparse_name: Option<Vec<u8>>,
}

impl Entry {
    fn new(name: Vec<u8>, typeflag: u8, md: &Metadata) -> Entry {
        Entry {
            name,
            typeflag,
            mode: md.mode() & 0o7777,
            uid: md.uid().into(),
            gid: md.gid().into(),
            mtime: Timestamp {
                secs: md.mtime(),
                // stat guarantees 0..1e9; clamp rather than trust it blindly.
                nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
            },
            size: 0,
            link: Vec::new(),
            dev: (0, 0),
            pax: BTreeMap::new(),
            sparse_name: None,
        }
    }

    /// Turn a regular file's entry into a GNU sparse 1.0 one.
    fn make_sparse(&mut self, map: &[u8], segments: &[(u64, u64)], real_size: u64) {
        let data: u64 = segments.iter().map(|&(_, len)| len).sum();
        self.size = map.len() as u64 + data;
        self.sparse_name = Some(sparse_ustar_name(&self.name));
        let records: [(&str, Vec<u8>); 4] = [
            ("GNU.sparse.major", b"1".to_vec()),
            ("GNU.sparse.minor", b"0".to_vec()),
            ("GNU.sparse.name", self.name.clone()),
            ("GNU.sparse.realsize", real_size.to_string().into_bytes()),
        ];
        for (key, value) in records {
            self.pax.insert(key.as_bytes().to_vec(), value);
        }
    }

    /// The member's header blocks: an `x` header when needed, then the ustar header. Err says
    /// why the member cannot be represented at all.
    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        let mut pax = self.pax.clone();
        let mut b = Block::new(self.typeflag);
        self.put_names(&mut b, &mut pax);
        b.octal(field::MODE, self.mode.into());
        b.number(field::UID, self.uid, "uid", &mut pax);
        b.number(field::GID, self.gid, "gid", &mut pax);
        b.number(field::SIZE, self.size, "size", &mut pax);
        let mtime = mtime_field(self.mtime);
        b.octal(field::MTIME, mtime);
        if self.mtime.nsec != 0 || self.mtime.secs != mtime as i64 {
            pax.insert(b"mtime".to_vec(), pax_time(self.mtime).into_bytes());
        }
        if !(b.octal(field::DEVMAJOR, self.dev.0) && b.octal(field::DEVMINOR, self.dev.1)) {
            return Err("device number too large for a tar header".into());
        }
        let mut out = Vec::with_capacity(3 * BLOCK);
        if !pax.is_empty() {
            out.extend_from_slice(&pax_header(&self.name, mtime, &pax)?);
        }
        out.extend_from_slice(&b.finish());
        Ok(out)
    }

    /// Name, prefix and linkname fields, with `path`/`linkpath` records when they do not fit.
    fn put_names(&self, b: &mut Block, pax: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        if let Some(sparse_name) = &self.sparse_name {
            b.bytes(field::NAME, sparse_name);
        } else if let Some((prefix, name)) = split_name(&self.name) {
            b.bytes(field::NAME, name);
            b.bytes(field::PREFIX, prefix);
        } else {
            b.bytes(field::NAME, &self.name);
            pax.insert(b"path".to_vec(), self.name.clone());
        }
        b.bytes(field::LINKNAME, &self.link);
        if self.link.len() > field::LINKNAME.len() {
            pax.insert(b"linkpath".to_vec(), self.link.clone());
        }
    }
}

/// The mtime header field: the whole seconds, or 0 when they do not fit (negative, or past
/// 11 octal digits) and a `mtime` record carries them.
fn mtime_field(t: Timestamp) -> u64 {
    u64::try_from(t.secs)
        .ok()
        .filter(|&s| s <= MAX_OCTAL_11)
        .unwrap_or(0)
}

/// A pax time: `SECS` or `SECS.FRACTION` without trailing zeros; negative times count down
/// from zero (`-1.5` is 1.5 s before the epoch, stat's secs -2 + nsec 500000000).
fn pax_time(t: Timestamp) -> String {
    if t.nsec == 0 {
        return t.secs.to_string();
    }
    let (sign, whole, frac) = if t.secs < 0 {
        ("-", (t.secs + 1).unsigned_abs(), 1_000_000_000 - t.nsec)
    } else {
        ("", t.secs.unsigned_abs(), t.nsec)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Split a name for ustar: all of it in the name field when it fits, else at the first `/`
/// that leaves a name part of 1..=100 bytes, with a prefix part of at most 155 bytes. None
/// when no split works.
fn split_name(full: &[u8]) -> Option<(&[u8], &[u8])> {
    if full.len() <= NAME_LEN {
        return Some((&[], full));
    }
    let i = (0..full.len()).find(|&i| full[i] == b'/' && full.len() - i - 1 <= NAME_LEN)?;
    let (prefix, name) = (&full[..i], &full[i + 1..]);
    (prefix.len() <= PREFIX_LEN && !name.is_empty() && !prefix.is_empty()).then_some((prefix, name))
}

/// `<dir>/GNUSparseFile.0/<basename>`: GNU tar's `%d/GNUSparseFile.%p/%f` with the process id
/// fixed at 0, cut to the name field like GNU tar cuts it.
fn sparse_ustar_name(name: &[u8]) -> Vec<u8> {
    let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b"."[..], name),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"/GNUSparseFile.0/");
    out.extend_from_slice(base);
    out.truncate(NAME_LEN);
    out
}

/// `./PaxHeaders/<basename>` for the `x` header in front of `name` (basename `.` for `./`).
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let base = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    let mut out = b"./PaxHeaders/".to_vec();
    out.extend_from_slice(base);
    out.truncate(NAME_LEN);
    out
}

/// The `x` header block and its records, padded to a block.
fn pax_header(
    member_name: &[u8],
    mtime: u64,
    records: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> std::result::Result<Vec<u8>, String> {
    let mut data = Vec::new();
    for (key, value) in records {
        data.extend_from_slice(&pax_record(key, value));
    }
    let mut b = Block::new(header::PAX_LOCAL);
    b.bytes(field::NAME, &pax_header_name(member_name));
    b.octal(field::MODE, 0o644);
    b.octal(field::UID, 0);
    b.octal(field::GID, 0);
    b.octal(field::MTIME, mtime);
    if !b.octal(field::SIZE, data.len() as u64) {
        return Err("extended header too large".into());
    }
    // GNU tar leaves devmajor/devminor of `x` headers empty.
    b.0[field::DEVMAJOR.start..field::DEVMINOR.end].fill(0);
    let mut out = b.finish().to_vec();
    out.extend_from_slice(&data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    Ok(out)
}

/// `"%d %s=%s\n"`, the length counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // the space, `=` and newline
    let digits = |n: usize| n.to_string().len();
    // Adding the length's digits can add a digit to the length: iterate to the fixed point.
    let mut len = body + digits(body);
    while len != body + digits(len) {
        len = body + digits(len);
    }
    let mut record = Vec::with_capacity(len);
    record.extend_from_slice(format!("{len} ").as_bytes());
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A ustar header block being filled in.
struct Block([u8; BLOCK]);

impl Block {
    fn new(typeflag: u8) -> Block {
        let mut b = Block([0; BLOCK]);
        b.0[field::TYPEFLAG] = typeflag;
        b.bytes(field::MAGIC, b"ustar\0");
        b.bytes(field::VERSION, b"00");
        // Every ustar number GNU tar writes, device numbers included, is present.
        b.octal(field::DEVMAJOR, 0);
        b.octal(field::DEVMINOR, 0);
        b
    }

    /// Copy `value` into the field, cut to its width (NUL-terminated only when shorter).
    fn bytes(&mut self, range: Range<usize>, value: &[u8]) {
        let f = &mut self.0[range];
        let n = value.len().min(f.len());
        f[..n].copy_from_slice(&value[..n]);
        f[n..].fill(0);
    }

    /// Zero-padded octal filling all but the last byte, which is NUL. False (field untouched)
    /// when `v` needs more digits.
    fn octal(&mut self, range: Range<usize>, v: u64) -> bool {
        let f = &mut self.0[range];
        let digits = f.len() - 1;
        if v >> (3 * digits) != 0 {
            return false;
        }
        for (k, d) in f[..digits].iter_mut().rev().enumerate() {
            *d = b'0' + ((v >> (3 * k)) & 7) as u8;
        }
        f[digits] = 0;
        true
    }

    /// A number that goes to a pax record (the field holding 0) when it does not fit.
    fn number(
        &mut self,
        range: Range<usize>,
        v: u64,
        key: &str,
        pax: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) {
        if !self.octal(range.clone(), v) {
            self.octal(range, 0);
            pax.insert(key.as_bytes().to_vec(), v.to_string().into_bytes());
        }
    }

    /// Fill in the checksum, `%06o\0 ` as GNU tar writes it.
    fn finish(mut self) -> [u8; BLOCK] {
        self.0[field::CHECKSUM].fill(b' ');
        let sum: u64 = self.0.iter().map(|&b| u64::from(b)).sum();
        let at = field::CHECKSUM.start;
        self.octal(at..at + 7, sum);
        self.0
    }
}

/// How copying a file's bytes went wrong (the missing bytes were written as zeros).
enum ReadTrouble {
    /// The file ended before the size in its header.
    Shrank,
    Failed {
        at: u64,
        error: io::Error,
    },
}

/// The output: buffered, counting, every error an `Error::Output`.
struct Out<'a> {
    w: BufWriter<&'a mut dyn Write>,
    written: u64,
    /// For file data.
    buf: Vec<u8>,
}

impl<'a> Out<'a> {
    fn new(out: &'a mut dyn Write) -> Out<'a> {
        Out {
            w: BufWriter::with_capacity(COPY_BUF, out),
            written: 0,
            buf: vec![0; COPY_BUF],
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(Error::Output)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const ZEROS: [u8; BLOCK] = [0; BLOCK];
        while n > 0 {
            let k = n.min(BLOCK as u64) as usize;
            self.write(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn pad_to(&mut self, multiple: u64) -> Result<()> {
        self.zeros(self.written.next_multiple_of(multiple) - self.written)
    }

    /// Copy exactly `len` bytes of `file` from `offset`. If the file ends early or cannot be
    /// read, the rest is written as zeros (the header has promised `len` bytes) and the
    /// trouble returned.
    fn copy(&mut self, file: &File, offset: u64, len: u64) -> Result<Option<ReadTrouble>> {
        let mut done = 0;
        while done < len {
            let want = (len - done).min(self.buf.len() as u64) as usize;
            match file.read_at(&mut self.buf[..want], offset + done) {
                Ok(0) => {
                    self.zeros(len - done)?;
                    return Ok(Some(ReadTrouble::Shrank));
                }
                Ok(n) => {
                    self.w.write_all(&self.buf[..n]).map_err(Error::Output)?;
                    self.written += n as u64;
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.zeros(len - done)?;
                    let at = offset + done;
                    return Ok(Some(ReadTrouble::Failed { at, error }));
                }
            }
        }
        Ok(None)
    }

    /// The end-of-archive marker and the padding to a whole record.
    fn finish(mut self) -> Result<()> {
        self.zeros(2 * BLOCK as u64)?;
        self.pad_to(RECORD)?;
        self.w.flush().map_err(Error::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::pax::{self, PaxRecord};
    use crate::tar::{IoSource, TarReader};
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    use std::process::{Command, Stdio};

    /// A fixed time for the trees' mtimes.
    const T0: i64 = 1_600_000_000;
    const MIB: u64 = 1 << 20;

    // ---- building trees -------------------------------------------------------------------

    fn p(root: &Path, rel: &[u8]) -> PathBuf {
        root.join(OsStr::from_bytes(rel))
    }

    fn c_path(path: &Path) -> CString {
        CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths")
    }

    fn check(rc: libc::c_int, what: &str, path: &Path) {
        let err = io::Error::last_os_error();
        assert_eq!(
            rc,
            0,
            "{what} {}: {err} (these tests run as root)",
            path.display()
        );
    }

    fn set_mtime(path: &Path, secs: i64, nsec: i64) {
        let ts = [libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        }; 2];
        let flags = libc::AT_SYMLINK_NOFOLLOW;
        // SAFETY: valid NUL-terminated path and a two-element timespec array.
        let rc =
            unsafe { libc::utimensat(libc::AT_FDCWD, c_path(path).as_ptr(), ts.as_ptr(), flags) };
        check(rc, "utimensat", path);
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let name = CString::new(name).unwrap();
        // SAFETY: valid C strings and a buffer of value.len() bytes.
        let rc = unsafe {
            let (cp, v) = (c_path(path), value.as_ptr().cast());
            libc::lsetxattr(cp.as_ptr(), name.as_ptr(), v, value.len(), 0)
        };
        check(rc, "lsetxattr", path);
    }

    fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
        let dev = libc::makedev(major, minor);
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::mknod(c_path(path).as_ptr(), kind | 0o640, dev) };
        check(rc, "mknod", path);
    }

    fn file(root: &Path, rel: &[u8], content: &[u8]) -> PathBuf {
        let path = p(root, rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    fn dir(root: &Path, rel: &[u8]) -> PathBuf {
        let path = p(root, rel);
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Deterministic, incompressible-looking bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn sparse_file(root: &Path, rel: &[u8], len: u64, data: &[(u64, &[u8])]) -> PathBuf {
        let path = p(root, rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for &(at, bytes) in data {
            f.write_all_at(bytes, at).unwrap();
        }
        let md = f.metadata().unwrap();
        assert!(
            looks_sparse(&md),
            "{} is not sparse on this file system",
            path.display()
        );
        path
    }

    /// Every directory under (and including) `root`, for setting their mtimes last.
    fn all_dirs(root: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![root.to_path_buf()];
        let mut i = 0;
        while i < dirs.len() {
            for name in list_dir(&dirs[i]).unwrap() {
                let path = dirs[i].join(OsStr::from_bytes(&name));
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    dirs.push(path);
                }
            }
            i += 1;
        }
        dirs
    }

    /// The long name with invalid UTF-8 that must travel in a `path` record.
    fn long_odd_name() -> Vec<u8> {
        let mut name = b"odd/".to_vec();
        for _ in 0..70 {
            name.extend_from_slice(b"x\xff");
        }
        name
    }

    /// A tree with every kind of member and every reason for an `x` header. Returns the
    /// sparse files' relative paths.
    fn varied_tree(root: &Path) -> Vec<Vec<u8>> {
        // Regular files of several sizes.
        file(root, b"empty", b"");
        set_mtime(&file(root, b"one", b"1"), T0, 0);
        file(root, b"sizes/511", &noise(511, 1));
        file(root, b"sizes/512", &noise(512, 2));
        file(root, b"sizes/513", &noise(513, 3));
        file(root, b"sizes/100k", &noise(100_000, 4));
        file(root, b"sizes/1m+3", &noise(MIB as usize + 3, 5));
        // Modes.
        chmod(&file(root, b"mode/setuid", b"#!/bin/sh\n"), 0o4755);
        chmod(&file(root, b"mode/private", b"secret"), 0o600);
        chmod(&file(root, b"mode/none", b"nothing"), 0o000);
        chmod(&dir(root, b"mode/sticky"), 0o1777);
        chmod(&dir(root, b"mode/setgid"), 0o2750);
        // Long names: one a ustar prefix/name split holds, one only a `path` record can.
        let split = [&b"long/"[..], &[b'p'; 90], b"/", &[b'q'; 60]].concat();
        file(root, &split, b"split");
        let deep = [
            &b"long/"[..],
            &[b'd'; 120],
            b"/",
            &[b'e'; 120],
            b"/",
            &[b'f'; 200],
        ]
        .concat();
        file(root, &deep, b"deep");
        dir(root, &[&b"long/"[..], &[b'g'; 150]].concat());
        // Symlinks: short, long, dangling, to a directory (never followed), absolute.
        dir(root, b"links");
        symlink("target", root.join("links/short")).unwrap();
        symlink("t".repeat(300), root.join("links/long")).unwrap();
        symlink("../sizes", root.join("links/dir")).unwrap();
        symlink("/etc/passwd", root.join("links/abs")).unwrap();
        // Hard links, one under a long name, one in another directory.
        let a = file(root, b"hard/a", b"linked content");
        fs::hard_link(&a, root.join("hard/b")).unwrap();
        fs::hard_link(&a, p(root, &[&b"hard/"[..], &[b'h'; 150]].concat())).unwrap();
        dir(root, b"hard2");
        fs::hard_link(&a, root.join("hard2/c")).unwrap();
        // Extended attributes, binary and empty values, on a file and a directory.
        let x = file(root, b"xattr/file", b"with attributes");
        set_xattr(&x, "user.one", b"1");
        set_xattr(&x, "user.bin", b"\0\n=\xff binary");
        set_xattr(&x, "user.empty", b"");
        set_xattr(&x, "user.big", &noise(3000, 6));
        set_xattr(&dir(root, b"xattr/dir"), "user.d", b"on a directory");
        // Sparse files: holes around data, only holes, ending in data.
        let hello = b"hello".repeat(1000);
        let sparse: Vec<Vec<u8>> = vec![
            b"sparse/holey".to_vec(),
            b"sparse/allholes".to_vec(),
            b"sparse/endsdata".to_vec(),
        ];
        sparse_file(
            root,
            &sparse[0],
            4 * MIB,
            &[(MIB, &hello), (3 * MIB, b"more")],
        );
        sparse_file(root, &sparse[1], MIB, &[]);
        sparse_file(root, &sparse[2], 2 * MIB, &[(2 * MIB - 4096, &[7; 4096])]);
        // Special files; the socket is left out with a warning.
        dir(root, b"special");
        mknod(&root.join("special/fifo"), libc::S_IFIFO, 0, 0);
        mknod(&root.join("special/chr"), libc::S_IFCHR, 4, 64);
        mknod(&root.join("special/blk"), libc::S_IFBLK, 259, 70000);
        let sock = std::os::unix::net::UnixListener::bind(root.join("special/sock")).unwrap();
        drop(sock);
        // Odd bytes in names.
        for name in [
            &b"odd/new\nline"[..],
            b"odd/bad\xff\xfe",
            b"odd/sp ace",
            b"odd/=eq",
            "odd/ünï".as_bytes(),
            b"odd/\x01ctl",
            b"odd/back\\slash",
        ] {
            file(root, name, name);
        }
        file(root, &long_odd_name(), b"long and not UTF-8");
        // Owners beyond what ustar's 7 octal digits hold, on a file and a symlink.
        let big = file(root, b"own/big", b"big ids");
        lchown(&big, Some(3_000_000), Some(3_000_001)).unwrap();
        symlink("big", root.join("own/link")).unwrap();
        lchown(root.join("own/link"), Some(3_000_002), Some(42)).unwrap();
        lchown(
            file(root, b"own/small", b"small ids"),
            Some(1234),
            Some(5678),
        )
        .unwrap();
        // Times: nanoseconds, before the epoch, the epoch, past 11 octal digits.
        set_mtime(&file(root, b"time/ns", b"ns"), T0, 123_456_789);
        set_mtime(&file(root, b"time/neg", b"neg"), -2, 500_000_000);
        set_mtime(&file(root, b"time/old", b"old"), -100_000, 0);
        set_mtime(&file(root, b"time/zero", b"zero"), 0, 0);
        set_mtime(
            &file(root, b"time/future", b"future"),
            0o77777777777 + 10,
            0,
        );
        set_mtime(&root.join("own/link"), T0 + 5, 5);
        set_mtime(&root.join("links/short"), T0 - 5, 0);
        // Directories last: creating their entries changed their mtimes.
        for (i, d) in all_dirs(root).iter().enumerate() {
            set_mtime(d, T0 + i as i64, if i % 2 == 0 { 0 } else { 987_654_321 });
        }
        chmod(root, 0o750);
        sparse
    }

    // ---- writing and reading back ---------------------------------------------------------

    fn write(root: &Path, opts: &DirOptions) -> (Vec<u8>, DirReport) {
        let mut out = Vec::new();
        let report = write_dir(root, opts, &mut out).expect("write_dir");
        (out, report)
    }

    fn no_opts() -> DirOptions {
        DirOptions::default()
    }

    /// What the crate's own reader sees in one member.
    struct Read {
        path: Vec<u8>,
        typeflag: u8,
        link: Vec<u8>,
        pax: Vec<PaxRecord>,
        payload: Vec<u8>,
    }

    impl Read {
        /// The real name: sparse members carry it in `GNU.sparse.name`.
        fn name(&self) -> Vec<u8> {
            pax::lookup(&self.pax, "GNU.sparse.name")
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| self.path.clone())
        }
    }

    fn read_back(stream: &[u8]) -> Vec<Read> {
        let mut reader = TarReader::new(IoSource(stream));
        let mut members = Vec::new();
        while let Ok(m) = reader.next_member().expect("the reader accepts the stream") {
            let mut payload = vec![0; m.payload_len as usize];
            let mut at = 0;
            while at < payload.len() {
                at += reader.read_payload(&mut payload[at..]).expect("payload");
            }
            members.push(Read {
                path: m.path,
                typeflag: m.typeflag,
                link: m.link,
                pax: m.pax,
                payload,
            });
        }
        let mut rest = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match reader.read_rest(&mut buf).unwrap() {
                0 => break,
                n => rest.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            rest.iter().all(|&b| b == 0),
            "only zeros after the end marker"
        );
        members
    }

    /// The member names a correct walk of `root` gives, in order (sockets left out).
    fn expected_names(root: &Path) -> Vec<Vec<u8>> {
        fn walk(root: &Path, rel: &[u8], out: &mut Vec<Vec<u8>>) {
            for name in list_dir(&p(root, rel)).unwrap() {
                let rel = child(rel, &name);
                let ft = fs::symlink_metadata(p(root, &rel)).unwrap().file_type();
                if ft.is_socket() {
                    continue;
                }
                out.push(member_name(&rel, ft.is_dir()));
                if ft.is_dir() {
                    walk(root, &rel, out);
                }
            }
        }
        let mut names = vec![b"./".to_vec()];
        walk(root, b"", &mut names);
        names
    }

    fn pipe_through(cmd: &mut Command, input: &[u8]) -> std::process::Output {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    }

    fn gnu_extract(stream: &[u8], into: &Path) {
        let out = pipe_through(
            Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
                // Times before 1970 and after now are what the tree is testing.
                .args(["--warning=no-timestamp", "-xpf", "-", "-C"])
                .arg(into),
            stream,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "GNU tar -x: {stderr}"
        );
    }

    // ---- comparing trees ------------------------------------------------------------------

    /// Differences between the tree at `src` and its extraction at `dst`: types, modes,
    /// owners, mtimes (with nanoseconds), contents, link targets, devices, xattrs, and hard
    /// links (files linked in `src` are linked in `dst`). Sockets are expected to be missing.
    fn tree_diff(src: &Path, dst: &Path) -> Vec<String> {
        let mut diffs = Vec::new();
        let mut inodes: HashMap<u64, u64> = HashMap::new();
        let mut pending = vec![Vec::new()];
        while let Some(rel) = pending.pop() {
            let (s, d) = (p(src, &rel), p(dst, &rel));
            let what = String::from_utf8_lossy(&rel).into_owned();
            let (sm, dm) = match (fs::symlink_metadata(&s), fs::symlink_metadata(&d)) {
                (Ok(sm), _) if sm.file_type().is_socket() => continue,
                (Ok(sm), Ok(dm)) => (sm, dm),
                (_, Err(e)) => {
                    diffs.push(format!("{what:?}: missing from the extraction: {e}"));
                    continue;
                }
                (Err(e), _) => panic!("{what:?}: {e}"),
            };
            diffs.extend(entry_diff(&what, &s, &d, &sm, &dm));
            if sm.is_file() && sm.nlink() > 1 {
                let first = *inodes.entry(sm.ino()).or_insert(dm.ino());
                if first != dm.ino() {
                    diffs.push(format!("{what:?}: no longer a hard link"));
                }
            }
            if sm.is_dir() && dm.is_dir() {
                let sn: Vec<_> = list_dir(&s).unwrap().into_iter().collect();
                let dn = list_dir(&d).unwrap();
                for name in &dn {
                    if !sn.contains(name) {
                        diffs.push(format!(
                            "{what:?}: extra entry {:?}",
                            OsStr::from_bytes(name)
                        ));
                    }
                }
                pending.extend(sn.iter().map(|n| child(&rel, n)));
            }
        }
        diffs
    }

    fn entry_diff(what: &str, s: &Path, d: &Path, sm: &Metadata, dm: &Metadata) -> Vec<String> {
        let mut diffs = Vec::new();
        let mut same = |field: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{what:?}: {field} {a} != {b}"));
            }
        };
        let kind = |m: &Metadata| format!("{:o}", m.mode() & libc::S_IFMT);
        same("type", kind(sm), kind(dm));
        same(
            "mode",
            format!("{:o}", sm.mode() & 0o7777),
            format!("{:o}", dm.mode() & 0o7777),
        );
        same(
            "owner",
            format!("{}:{}", sm.uid(), sm.gid()),
            format!("{}:{}", dm.uid(), dm.gid()),
        );
        let mtime = |m: &Metadata| format!("{}s+{}ns", m.mtime(), m.mtime_nsec());
        same("mtime", mtime(sm), mtime(dm));
        let xattrs = |path: &Path| format!("{:?}", read_xattrs(path).unwrap());
        same("xattrs", xattrs(s), xattrs(d));
        let ft = sm.file_type();
        if ft.is_file() {
            let same_content = fs::read(s).unwrap() == fs::read(d).unwrap_or_default();
            same(
                "content",
                "as source".into(),
                if same_content {
                    "as source"
                } else {
                    "different"
                }
                .into(),
            );
        } else if ft.is_symlink() {
            let target = |p: &Path| format!("{:?}", fs::read_link(p).ok());
            same("target", target(s), target(d));
        } else if ft.is_char_device() || ft.is_block_device() {
            same("rdev", sm.rdev().to_string(), dm.rdev().to_string());
        }
        diffs
    }

    /// Assert the trees are the same but for differences starting with one of `known`.
    fn assert_same_tree_except(src: &Path, dst: &Path, known: &[&str]) {
        let diffs: Vec<String> = tree_diff(src, dst)
            .into_iter()
            .filter(|d| !known.iter().any(|k| d.starts_with(k)))
            .collect();
        assert!(
            diffs.is_empty(),
            "extraction differs:\n{}",
            diffs.join("\n")
        );
    }

    fn assert_same_tree(src: &Path, dst: &Path) {
        assert_same_tree_except(src, dst, &[]);
    }

    // ---- the tests ------------------------------------------------------------------------

    #[test]
    fn same_tree_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        varied_tree(&src);
        let (first, report) = write(&src, &no_opts());
        let (second, _) = write(&src, &no_opts());
        assert!(first == second, "two runs over an unchanged tree differ");
        assert_eq!(first.len() % RECORD as usize, 0);
        assert_eq!(
            report.warnings,
            vec![format!(
                "{}: socket ignored",
                src.join("special/sock").display()
            )]
        );
    }

    #[test]
    fn own_reader_parses_every_member() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let sparse = varied_tree(&src);
        let (stream, report) = write(&src, &no_opts());
        let members = read_back(&stream);
        assert_eq!(members.len() as u64, report.members);
        let names: Vec<Vec<u8>> = members.iter().map(Read::name).collect();
        assert_eq!(names, expected_names(&src), "members and their order");

        let by_name = |name: &[u8]| members.iter().find(|m| m.name() == name).unwrap();
        // Plain file contents come through verbatim.
        assert_eq!(by_name(b"./sizes/100k").payload, noise(100_000, 4));
        // Long names: split into prefix/name when possible, else a `path` record.
        let split = [&b"./long/"[..], &[b'p'; 90], b"/", &[b'q'; 60]].concat();
        assert_eq!(
            pax::lookup(&by_name(&split).pax, "path"),
            None,
            "split, not a record"
        );
        assert_eq!(
            by_name(&[b"./".as_slice(), &long_odd_name()].concat()).typeflag,
            REGULAR
        );
        // Hard links point at the first name, in sorted order.
        for link in [&b"./hard/b"[..], b"./hard2/c"] {
            let m = by_name(link);
            assert_eq!(
                (m.typeflag, m.link.as_slice()),
                (HARDLINK, &b"./hard/a"[..])
            );
            assert!(m.payload.is_empty());
        }
        assert_eq!(by_name(b"./links/long").link, b"t".repeat(300));
        // Sparse members: the GNU 1.0 map, then the data.
        let holey = by_name(&member_name(&sparse[0], false));
        assert_eq!(holey.path, b"./sparse/GNUSparseFile.0/holey");
        assert_eq!(
            pax::lookup(&holey.pax, "GNU.sparse.realsize"),
            Some(&b"4194304"[..])
        );
        assert!(
            holey.payload.starts_with(b"3\n1048576\n"),
            "{:?}",
            &holey.payload[..20]
        );
        let allholes = by_name(&member_name(&sparse[1], false));
        assert_eq!(allholes.payload, sparse_map(&[(MIB, 0)]));
        // Records: xattrs, big owners, times.
        let x = by_name(b"./xattr/file");
        assert_eq!(
            pax::lookup(&x.pax, "SCHILY.xattr.user.bin"),
            Some(&b"\0\n=\xff binary"[..])
        );
        assert_eq!(
            pax::lookup(&x.pax, "SCHILY.xattr.user.empty"),
            Some(&b""[..])
        );
        let big = by_name(b"./own/big");
        assert_eq!(pax::lookup(&big.pax, "uid"), Some(&b"3000000"[..]));
        let mtime = |name: &[u8]| pax::lookup(&by_name(name).pax, "mtime").map(<[u8]>::to_vec);
        assert_eq!(mtime(b"./time/ns"), Some(b"1600000000.123456789".to_vec()));
        assert_eq!(mtime(b"./time/neg"), Some(b"-1.5".to_vec()));
        assert_eq!(mtime(b"./time/old"), Some(b"-100000".to_vec()));
        assert_eq!(mtime(b"./time/zero"), None);
        assert_eq!(mtime(b"./time/future"), Some(b"8589934601".to_vec()));
        assert!(
            by_name(b"./one").pax.is_empty(),
            "no x header when nothing needs one"
        );
    }

    #[test]
    fn gnu_tar_extracts_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let sparse = varied_tree(&src);
        let (stream, _) = write(&src, &no_opts());
        let dst = dir(tmp.path(), b"gnu");
        gnu_extract(&stream, &dst);
        assert_same_tree(&src, &dst);
        for rel in &sparse {
            let md = fs::symlink_metadata(p(&dst, rel)).unwrap();
            assert!(
                looks_sparse(&md),
                "{:?} extracted without holes",
                String::from_utf8_lossy(rel)
            );
        }
        // `--sparse -tv` shows the real size of a sparse member.
        let list = pipe_through(Command::new("tar").args(["--sparse", "-tvf", "-"]), &stream);
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let list = String::from_utf8_lossy(&list.stdout);
        let holey = list
            .lines()
            .find(|l| l.ends_with("./sparse/holey"))
            .expect("listed");
        assert!(holey.contains(" 4194304 "), "{holey}");
    }

    /// bsdtar's complaint, shared with GNU tar's own archives, about a `path` record that is not
    /// UTF-8 (see the module documentation); it still lists and extracts the name right.
    const BSDTAR_NOT_UTF8: &str =
        "bsdtar: Pathname can't be converted from UTF-8 to current locale.\n\
        bsdtar: Error exit delayed from previous errors.\n";

    #[test]
    fn bsdtar_reads_and_extracts_it() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        varied_tree(&src);
        let (stream, report) = write(&src, &no_opts());
        let list = pipe_through(Command::new("bsdtar").args(["-tvf", "-"]), &stream);
        assert_eq!(String::from_utf8_lossy(&list.stderr), BSDTAR_NOT_UTF8);
        // One line per member (bsdtar escapes the newline in a name).
        let lines = list.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(lines, report.members);

        let dst = dir(tmp.path(), b"bsd");
        let extract = pipe_through(
            Command::new("bsdtar")
                .args(["--numeric-owner", "--xattrs", "-xpf", "-", "-C"])
                .arg(&dst),
            &stream,
        );
        assert_eq!(String::from_utf8_lossy(&extract.stderr), BSDTAR_NOT_UTF8);
        // libarchive 3.6 leaves the mtime of the directory extracted into alone, and reads
        // `mtime=-1.5` as -0.5 s (GNU tar's own archives too).
        assert_same_tree_except(&src, &dst, &["\"\": mtime ", "\"time/neg\": mtime "]);
    }

    /// Where nothing needs a GNU extension that varies (atime, ctime, sub-second mtimes,
    /// sparse file names with a pid), GNU tar writes exactly the same bytes.
    #[test]
    fn byte_identical_to_gnu_tar_on_plain_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for (i, size) in [0, 1, 511, 512, 513, 70_000].into_iter().enumerate() {
            file(&src, format!("f{i}").as_bytes(), &noise(size, i as u64));
        }
        chmod(&file(&src, b"sub/setuid", b"x"), 0o4711);
        chmod(&dir(&src, b"sub/sticky"), 0o1777);
        symlink("short", src.join("sub/short")).unwrap();
        symlink("l".repeat(150), src.join("sub/long")).unwrap();
        fs::hard_link(src.join("f1"), src.join("sub/hard")).unwrap();
        let deep = [&b"deep/"[..], &[b'd'; 200], b"/", &[b'e'; 100]].concat();
        file(&src, &deep, b"deep");
        fs::hard_link(p(&src, &deep), src.join("sub/hard-to-deep")).unwrap();
        mknod(&src.join("sub/chr"), libc::S_IFCHR, 1, 3);
        mknod(&src.join("sub/fifo"), libc::S_IFIFO, 0, 0);
        lchown(file(&src, b"sub/bigid", b"id"), Some(3_000_000), Some(7)).unwrap();
        set_xattr(&file(&src, b"sub/xattr", b"x"), "user.k", b"v\nw");
        // GNU tar moves names with non-ASCII bytes to `path` records; this one is ASCII.
        file(&src, b"odd/new\nline\t=", b"odd");
        for rel in expected_names(&src) {
            set_mtime(&p(&src, &rel), T0, 0);
        }
        let (ours, _) = write(&src, &no_opts());
        let gnu = Command::new("tar")
            .args([
                "--format=posix",
                "--numeric-owner",
                "--sort=name",
                "--xattrs",
                "--xattrs-include=*",
                "--pax-option=exthdr.name=./PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
                "-cf",
                "-",
                "-C",
            ])
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            gnu.status.success(),
            "{}",
            String::from_utf8_lossy(&gnu.stderr)
        );
        if ours != gnu.stdout {
            let at = ours.iter().zip(&gnu.stdout).position(|(a, b)| a != b);
            panic!(
                "differs from GNU tar at byte {at:?} (lengths {} and {}); block ours/GNU:\n{:?}\n{:?}",
                ours.len(),
                gnu.stdout.len(),
                at.map(|at| String::from_utf8_lossy(&ours[at / 512 * 512..][..512]).into_owned()),
                at.map(|at| String::from_utf8_lossy(&gnu.stdout[at / 512 * 512..][..512]).into_owned()),
            );
        }
    }

    fn names_with(root: &Path, opts: &DirOptions) -> Vec<String> {
        let (stream, _) = write(root, opts);
        read_back(&stream)
            .iter()
            .map(|m| String::from_utf8_lossy(&m.name()).into_owned())
            .collect()
    }

    #[test]
    fn excludes_leave_out_members_and_directory_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for rel in [
            &b"proc/1/status"[..],
            b"var/cache/apt/pkgcache.bin",
            b"var/log/syslog.log",
            b"var/log/keep.txt",
            b"home/cache/x",
            b"home/user/a.log",
            b"home/user/[literal]",
        ] {
            file(root, rel, b"x");
        }
        let opts = DirOptions {
            excludes: vec!["proc".into(), "var/cache/*".into(), "*.log".into()],
            one_file_system: false,
        };
        assert_eq!(
            names_with(root, &opts),
            [
                "./",
                "./home/",
                "./home/cache/",
                "./home/cache/x",
                "./home/user/",
                "./home/user/[literal]",
                "./var/",
                "./var/cache/",
                "./var/log/",
                "./var/log/keep.txt",
            ]
        );
        let opts = DirOptions {
            excludes: vec!["cache".into(), "home/user/\\[*".into(), "v?r".into()],
            one_file_system: false,
        };
        assert_eq!(
            names_with(root, &opts),
            [
                "./",
                "./home/",
                "./home/user/",
                "./home/user/a.log",
                "./proc/",
                "./proc/1/",
                "./proc/1/status"
            ]
        );
    }

    /// Unmounts when dropped, so a failing test leaves no mount behind.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c_path(&self.0).as_ptr(), libc::MNT_DETACH) };
        }
    }

    #[test]
    fn one_file_system_stops_at_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        file(root, b"a", b"a");
        let mnt = dir(root, b"mnt");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (these tests run as root)");
        let _mounted = Mounted(mnt.clone());
        file(root, b"mnt/inside", b"other fs");
        file(root, b"z", b"z");
        let all = ["./", "./a", "./mnt/", "./mnt/inside", "./z"];
        assert_eq!(names_with(root, &no_opts()), all);
        let opts = DirOptions {
            excludes: Vec::new(),
            one_file_system: true,
        };
        assert_eq!(names_with(root, &opts), ["./", "./a", "./mnt/", "./z"]);
    }

    #[test]
    fn root_must_be_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let f = file(tmp.path(), b"f", b"");
        let err = write_dir(&f, &no_opts(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = write_dir(&tmp.path().join("nope"), &no_opts(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn a_symlinked_root_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = dir(tmp.path(), b"real");
        file(&real, b"f", b"content");
        set_xattr(&real, "user.root", b"on the root");
        set_mtime(&real, T0, 0);
        symlink("real", tmp.path().join("link")).unwrap();
        let (direct, _) = write(&real, &no_opts());
        let (via_link, _) = write(&tmp.path().join("link"), &no_opts());
        assert!(direct == via_link);
        let root = &read_back(&direct)[0];
        assert_eq!(
            pax::lookup(&root.pax, "SCHILY.xattr.user.root"),
            Some(&b"on the root"[..])
        );
    }

    struct FailingWriter(usize);

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.0 {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors_are_output_errors() {
        let tmp = tempfile::tempdir().unwrap();
        file(tmp.path(), b"big", &noise(300_000, 9));
        for budget in [0, 100_000] {
            let err = write_dir(tmp.path(), &no_opts(), &mut FailingWriter(budget)).unwrap_err();
            assert!(matches!(err, Error::Output(_)), "{err}");
        }
    }

    /// A walker over `root` writing into `out`, for driving single steps.
    fn walker<'a>(root: &'a Path, out: &'a mut Vec<u8>) -> Walker<'a> {
        let md = fs::metadata(root).unwrap();
        Walker::new(root, &md, &no_opts(), out)
    }

    #[test]
    fn vanished_paths_are_warnings() {
        let tmp = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut w = walker(tmp.path(), &mut out);
        assert!(w.visit(b"gone".to_vec()).unwrap().is_none());
        assert_eq!(w.report.members, 0);
        let warning = &w.report.warnings[0];
        assert!(
            warning.starts_with(&format!("{}: ", tmp.path().join("gone").display())),
            "{warning}"
        );
        assert!(warning.contains("No such file"), "{warning}");
    }

    /// Write one file whose size changes between the header's fstat and the copy.
    fn changed_file(new_len: u64) -> (Vec<Read>, Vec<String>, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let content = noise(10_000, 11);
        let path = file(tmp.path(), b"f", &content);
        let f = File::open(&path).unwrap();
        let md = f.metadata().unwrap();
        let grown = [content.clone(), noise(5000, 12)].concat();
        fs::write(&path, &grown).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(new_len)
            .unwrap();
        let mut out = Vec::new();
        let warnings = {
            let mut w = walker(tmp.path(), &mut out);
            w.file(b"./f".to_vec(), &path, &f, &md).unwrap();
            w.out.finish().unwrap();
            w.report.warnings
        };
        (read_back(&out), warnings, grown)
    }

    #[test]
    fn a_file_that_shrinks_is_padded_with_zeros() {
        let (members, warnings, grown) = changed_file(3000);
        let payload = &members[0].payload;
        assert_eq!(payload.len(), 10_000, "the size in the header");
        assert_eq!(&payload[..3000], &grown[..3000]);
        assert!(payload[3000..].iter().all(|&b| b == 0));
        assert!(
            warnings[0].ends_with(": file changed as we read it"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_file_that_grows_is_cut_at_the_header_size() {
        let (members, warnings, grown) = changed_file(15_000);
        assert_eq!(members[0].payload, grown[..10_000]);
        assert!(
            warnings[0].ends_with(": file changed as we read it"),
            "{warnings:?}"
        );
    }

    // ---- encoding details -----------------------------------------------------------------

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in 0..1100 {
            let value = vec![b'v'; value_len];
            let record = pax_record(b"path", &value);
            let parsed = pax::parse_records(&record).expect("well-formed");
            assert_eq!(
                parsed,
                vec![PaxRecord {
                    key: b"path".to_vec(),
                    value
                }]
            );
        }
        assert_eq!(pax_record(b"a", b"1234"), b"9 a=1234\n");
        // 9 bytes of body: a 1-digit length would make 10, which has 2 digits: 11.
        assert_eq!(pax_record(b"a", b"12345"), b"11 a=12345\n");
        // Bodies of 97, 98 and 99 bytes: 99 fits in 2 digits, 100 and 101 take 3.
        assert_eq!(pax_record(b"a", &[b'v'; 93]).len(), 99);
        assert_eq!(pax_record(b"a", &[b'v'; 94]).len(), 101);
        assert_eq!(pax_record(b"a", &[b'v'; 95]).len(), 102);
    }

    #[test]
    fn pax_times() {
        let t = |secs, nsec| pax_time(Timestamp { secs, nsec });
        assert_eq!(t(0, 0), "0");
        assert_eq!(t(T0, 100_000_000), "1600000000.1");
        assert_eq!(t(T0, 1), "1600000000.000000001");
        assert_eq!(t(-2, 500_000_000), "-1.5");
        assert_eq!(t(-1, 999_999_999), "-0.000000001");
        assert_eq!(t(-7, 0), "-7");
        assert_eq!(t(i64::MIN, 1), format!("-{}.999999999", i64::MAX));
    }

    #[test]
    fn ustar_name_splits() {
        assert_eq!(split_name(b"./a"), Some((&b""[..], &b"./a"[..])));
        let exactly_100 = [b'n'; 100];
        assert_eq!(split_name(&exactly_100), Some((&b""[..], &exactly_100[..])));
        let name = [&b"./"[..], &[b'p'; 120], b"/", &[b'n'; 100]].concat();
        let (prefix, rest) = split_name(&name).unwrap();
        assert_eq!((prefix.len(), rest.len()), (122, 100));
        // A directory's trailing slash cannot be the split point.
        let dir = [&b"./"[..], &[b'd'; 120], b"/"].concat();
        assert_eq!(split_name(&dir), None);
        let dir = [&b"./"[..], &[b'p'; 60], b"/", &[b'd'; 60], b"/"].concat();
        assert_eq!(
            split_name(&dir).map(|(p, n)| (p.len(), n.len())),
            Some((62, 61))
        );
        let too_long_prefix = [&b"./"[..], &[b'p'; 160], b"/n"].concat();
        assert_eq!(split_name(&too_long_prefix), None);
        let too_long_name = [&b"./"[..], &[b'n'; 101]].concat();
        assert_eq!(split_name(&too_long_name), None);
    }

    #[test]
    fn helper_header_names() {
        assert_eq!(pax_header_name(b"./"), b"./PaxHeaders/.");
        assert_eq!(pax_header_name(b"./a/bc/"), b"./PaxHeaders/bc");
        assert_eq!(pax_header_name(b"./a/f"), b"./PaxHeaders/f");
        assert_eq!(pax_header_name(&[b'x'; 300]).len(), 100);
        assert_eq!(sparse_ustar_name(b"./f"), b"./GNUSparseFile.0/f");
        assert_eq!(sparse_ustar_name(b"./a/b/f"), b"./a/b/GNUSparseFile.0/f");
        assert_eq!(
            sparse_ustar_name(&[&b"./"[..], &[b'x'; 200]].concat()).len(),
            100
        );
    }

    #[test]
    fn header_blocks_are_valid_ustar() {
        let tmp = tempfile::tempdir().unwrap();
        let md = fs::metadata(tmp.path()).unwrap();
        let mut e = Entry::new([&b"./"[..], &[b'n'; 300]].concat(), REGULAR, &md);
        e.uid = 1 << 40;
        e.size = MAX_OCTAL_11 + 1;
        e.mtime = Timestamp { secs: -1, nsec: 0 };
        let blocks = e.encode().unwrap();
        assert_eq!(blocks.len() % BLOCK, 0);
        let last: &[u8; BLOCK] = blocks[blocks.len() - BLOCK..].try_into().unwrap();
        let h = header::Header(last);
        h.checksum_ok().unwrap();
        assert_eq!(h.dialect(), header::Dialect::Ustar);
        assert_eq!((h.uid(), h.size(), h.mtime()), (Ok(0), Ok(0), Ok(0)));
        let x: &[u8; BLOCK] = blocks[..BLOCK].try_into().unwrap();
        header::Header(x).checksum_ok().unwrap();
        let data = &blocks[BLOCK..blocks.len() - BLOCK];
        let records = pax::parse_records(data).unwrap();
        let keys: Vec<&[u8]> = records.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(
            keys,
            [&b"mtime"[..], b"path", b"size", b"uid"],
            "sorted by key"
        );
        assert_eq!(pax::lookup(&records, "size"), Some(&b"8589934592"[..]));
        let mut dev = Entry::new(b"./d".to_vec(), CHAR_DEVICE, &md);
        dev.dev = (1 << 21, 0);
        assert!(dev.encode().is_err());
    }
}
