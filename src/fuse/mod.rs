//! FUSE over the engine's filesystem view: every trait method maps the view's `Result` to a
//! reply and does nothing else (a read from a file's start is also told to the feeder). The
//! mount is read-only, so the kernel answers writes with EROFS itself and no write operation
//! is implemented here.
//!
//! Requests are what a full read through the mount costs (a round trip and two context
//! switches each), so the kernel is asked to send as few as it can: no OPEN or RELEASE for
//! files (they are all immutable), none for directories either when every directory is
//! immutable, and READDIRPLUS, which hands over the entries' attributes with the listing so
//! that `stat` of each entry needs no LOOKUP. Small files are pushed into the kernel's page
//! cache ahead of a reader going through a directory ([`Feeder`]), so it sends no READ for
//! them either.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod feeder;
mod trim;

pub use feeder::Feeder;
use trim::Trim;

use cellar_store::fsview::{Attr, Entry, FsView};
use cellar_store::tree::linux_dev;
use cellar_store::{Error, Kind};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::output::errln;

/// The longest name a snapshot can hold (a tar stream's, up to PATH_MAX less the NUL), which
/// recent kernels pass through FUSE (older ones stop at 1,024 bytes).
const NAME_MAX: u32 = 4095;
/// The longest symlink target FUSE carries (a page, less the NUL): the kernel fails a longer
/// READLINK reply with EIO.
const LINK_MAX: usize = 4095;
/// The block size `statfs` counts in.
const BLOCK: u64 = 4096;

/// Snapshots never change: the kernel may cache their attributes and entries for good.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// The view's own directories (`NAME/`) and `NAME/latest` change as snapshots are taken and
/// removed: their attributes and entries are kept a second, as libfuse's defaults keep
/// everything. With none, each path through `NAME/latest/` cost the kernel a LOOKUP of
/// `NAME` and of `latest` and a GETATTR of each, besides the READLINK it always sends: six
/// requests for one `stat`, and `ls -l` of 20,000 files through `latest` took 11 s against
/// 1.6 s from inside the snapshot. Listings and `latest`'s target are never cached (a new
/// snapshot lists, and `latest` points at it, the moment it is committed); a directory's
/// link count and time, and a lineage whose last snapshot went, lag by up to a second.
const VOLATILE: Duration = Duration::from_secs(1);

pub struct CellarFs {
    view: Arc<FsView>,
    /// Told of every file read from its start.
    feeder: Feeder,
    /// The kernel opens files without asking (it said so at init).
    skip_open: bool,
    /// The kernel opens directories without asking, and nothing in the view changes: a
    /// directory opened that way has its listing cached by the kernel for good.
    skip_opendir: bool,
    /// Gives the heap back as the inode table shrinks.
    trim: Trim,
}

impl CellarFs {
    pub fn new(view: Arc<FsView>, feeder: Feeder) -> Self {
        CellarFs {
            view,
            feeder,
            skip_open: false,
            skip_opendir: false,
            trim: Trim::default(),
        }
    }

    /// Entries from `offset` on (1 and 2 are `.` and `..`, then the directory's entries in
    /// order), each given to `add` with its next offset until it says the reply is full.
    /// `counted`: the entries (not the dots) count as lookups (READDIRPLUS).
    fn entries(
        &self,
        ino: u64,
        offset: u64,
        counted: bool,
        mut add: impl FnMut(Entry, u64) -> cellar_store::Result<bool>,
    ) -> cellar_store::Result<()> {
        let mut next = offset;
        for name in [&b"."[..], b".."].into_iter().skip(offset as usize) {
            next += 1;
            if add(Entry::bare(ino, Kind::Dir, name), next)? {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        self.view.list(ino, skip, counted, |entry| {
            next += 1;
            add(entry, next)
        })
    }
}

fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::InvalidArgument(m) if m.contains("not a directory") => Errno::ENOTDIR,
        Error::InvalidArgument(_) => Errno::EINVAL,
        other => {
            // Damage or I/O trouble: this file fails, the mount goes on.
            errln!("cellar mount: {other}");
            Errno::EIO
        }
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

/// A stored time as the kernel is given it. A damaged node's nanoseconds past a second are
/// the second's last, and a time the system cannot hold is the epoch: it panicked a mount's
/// thread (an mtime of 2^63-1 seconds and 4e9 ns), and the directory read failed with it.
fn time(secs: i64, nsec: u32) -> SystemTime {
    let whole = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    t.and_then(|t| t.checked_add(Duration::from_nanos(nsec.min(999_999_999).into())))
        .unwrap_or(UNIX_EPOCH)
}

/// Linux's 32-bit dev_t encoding of major:minor (what FUSE carries), or 0 (no device) for a
/// number Linux cannot hold: never another device's number.
fn rdev(major: u64, minor: u64) -> u32 {
    linux_dev(major, minor).map_or(0, |(major, minor)| {
        (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12)
    })
}

/// An owner as Linux holds one. Snapshots record 0 for one past 32 bits (FORMAT §9.1); one
/// an older cellar recorded shows as 0 too, as a restore leaves it, never cut to another
/// user's id.
fn owner(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(0)
}

fn file_attr(a: &Attr) -> FileAttr {
    let mtime = time(a.mtime, a.mtime_nsec);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink.min(u32::MAX as u64) as u32,
        uid: owner(a.uid),
        gid: owner(a.gid),
        rdev: rdev(a.rdev_major, a.rdev_minor),
        blksize: 64 * 1024,
        flags: 0,
    }
}

fn ttl(a: &Attr) -> Duration {
    if a.volatile {
        VOLATILE
    } else {
        FOREVER
    }
}

/// Reply to a getxattr/listxattr: the size when asked for it, else the bytes (or ERANGE).
fn xattr_reply(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for CellarFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large sequential reads. Kernels cap this at the mount's `read_ahead_kb` (128 KiB by
        // default), so it is an upper bound, not what a reader gets.
        let _ = config.set_max_readahead(1 << 20);
        let offered = config.capabilities();
        self.skip_open = offered.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        // A cached listing of a lineage directory would hide new snapshots, and the kernel
        // skips OPENDIR for every directory or for none.
        self.skip_opendir =
            offered.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT) && !self.view.changes();
        // READDIRPLUS for every page of a listing. With READDIRPLUS_AUTO the kernel asks for
        // it on a listing's first page only until it sees lookups, so `tar` (which lists a
        // whole directory before it stats anything) sent a LOOKUP for each entry past the
        // first page, and the feeder had no inode to push into. `find` is no slower.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.view.lookup(parent.0, name.as_bytes()) {
            Ok(Some(a)) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(target) if target.len() > LINK_MAX => reply.error(Errno::ENAMETOOLONG),
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The snapshot's size as `list` gives it and its members, all used (read-only, as
    /// squashfs reports itself), and the longest name it may hold.
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.view.usage() {
            Ok(u) => reply.statfs(
                u.bytes.div_ceil(BLOCK),
                0,
                0,
                u.entries,
                0,
                BLOCK as u32,
                NAME_MAX,
                BLOCK as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.skip_open {
            // ENOSYS once tells the kernel to stop sending OPEN and RELEASE for files; it then
            // keeps their cached pages across opens, as FOPEN_KEEP_CACHE below asks.
            reply.error(Errno::ENOSYS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.skip_opendir {
            // As for files: no OPENDIR or RELEASEDIR from now on, and listings cached.
            reply.error(Errno::ENOSYS);
        } else {
            match self.view.getattr(ino.0) {
                Ok(a) if a.volatile => reply.opened(FileHandle(0), FopenFlags::empty()),
                Ok(_) => reply.opened(
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if offset == 0 {
            self.feeder.first_read(ino.0);
        }
        match self.view.read(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel sends only SEEK_DATA and SEEK_HOLE; it answers the others itself.
        let hole = match whence {
            libc::SEEK_DATA => false,
            libc::SEEK_HOLE => true,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.view.seek(ino.0, offset, hole) {
            Ok(Some(at)) => reply.offset(at as i64),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.entries(ino.0, offset, false, |entry, next| {
            Ok(reply.add(
                INodeNo(entry.ino),
                next,
                file_type(entry.kind),
                OsStr::from_bytes(entry.name),
            ))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Every entry with the attributes LOOKUP would give it; the kernel counts each (not the
    /// dots) as a lookup.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.entries(ino.0, offset, true, |entry, next| {
            let a = self.view.entry_attr(&entry)?;
            Ok(reply.add(
                INodeNo(entry.ino),
                next,
                OsStr::from_bytes(entry.name),
                &ttl(&a),
                &file_attr(&a),
                Generation(0),
            ))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.view.forget(ino.0, nlookup);
        self.trim.after_forget(self.view.inode_count());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.view.xattrs(ino.0) {
            Ok(attrs) => match attrs.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, v)) => xattr_reply(reply, size, v),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.view.xattrs(ino.0) {
            Ok(attrs) => {
                let mut names = Vec::new();
                for (k, _) in &attrs {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                xattr_reply(reply, size, &names);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_past_what_the_system_holds_do_not_panic() {
        assert_eq!(time(0, 5), UNIX_EPOCH + Duration::from_nanos(5));
        assert_eq!(
            time(-2, 500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        time(i64::MAX, 4_000_000_000);
        time(i64::MIN, u32::MAX);
    }
}
