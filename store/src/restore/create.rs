//! Making a name in a directory: clearing what is in the way (with `--force`), directories,
//! symlinks, devices and fifos. Regular files are in `file.rs`, hardlinks in `links.rs`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{fs, Restorer};
use crate::error::{Error, Result};
use crate::tree::{linux_dev, Kind, Node, MAX_MAJOR, MAX_MINOR};

impl Restorer<'_, '_> {
    /// Run `make` to create a name; if something is already there, clear it (a non-directory
    /// is unlinked, an empty directory removed) and try once more. None when a non-empty
    /// directory is in the way: `rel` is then a failure of the restore.
    pub(super) fn create<T>(
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
        let st = fs::fstatat(parent, name).map_err(|e| self.io_err(rel, e))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        match fs::unlinkat(parent, name, is_dir) {
            Ok(()) => {}
            Err(e)
                if is_dir && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                let reason = format!(
                    "a non-empty directory is in the way at {}",
                    self.disk(rel).display()
                );
                self.fail(rel, reason);
                return Ok(None);
            }
            Err(e) => return Err(self.io_err(rel, e)),
        }
        make().map(Some).map_err(|e| self.io_err(rel, e))
    }

    /// Create (or, if a directory is already there, reuse) directory `name` and open it
    /// without following symlinks; a non-directory in the way is replaced.
    pub(super) fn make_dir(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
    ) -> Result<Option<OwnedFd>> {
        let p = parent.as_raw_fd();
        match fs::mkdirat(parent, name) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                match fs::open_dir(p, name) {
                    Ok(fd) => return Ok(Some(fd)),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                        // A file or symlink where the snapshot has a directory: replace it.
                        fs::unlinkat(parent, name, false).map_err(|e| self.io_err(rel, e))?;
                        fs::mkdirat(parent, name).map_err(|e| self.io_err(rel, e))?;
                    }
                    Err(e) => return Err(self.io_err(rel, e)),
                }
            }
            Err(e) => return Err(self.io_err(rel, e)),
        }
        fs::open_dir(p, name)
            .map(Some)
            .map_err(|e| self.io_err(rel, e))
    }

    /// A symlink, then its attributes. False if skipped or something was in the way.
    pub(super) fn symlink(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        node: &Node,
    ) -> Result<bool> {
        let target = CString::new(node.link.as_slice());
        let Ok(target) = target else {
            let msg = format!(
                "{}: symlink target with a NUL byte skipped",
                self.snap_path(rel)
            );
            self.warn(msg);
            return Ok(false);
        };
        let made = self.create(parent, name, rel, || fs::symlinkat(&target, parent, name))?;
        if made.is_some() {
            self.meta_at(parent, name, rel, node);
        }
        Ok(made.is_some())
    }

    /// A device or fifo, then its attributes. False if skipped or something was in the way.
    pub(super) fn special(
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
        let rdev = match linux_dev(node.rdev_major, node.rdev_minor) {
            Some((major, minor)) if dev => libc::makedev(major, minor),
            None if dev => {
                // As mknod(2) refuses it (GNU tar: "Cannot mknod"): a failure, not a warning.
                let reason = format!(
                    "device number {}, {} cannot be made on Linux (majors up to {}, \
                     minors up to {})",
                    node.rdev_major, node.rdev_minor, MAX_MAJOR, MAX_MINOR
                );
                self.fail(rel, reason);
                return Ok(false);
            }
            _ => 0,
        };
        let made = self.create(parent, name, rel, || fs::mknodat(parent, name, kind, rdev));
        match made {
            Ok(Some(())) => {
                self.meta_at(parent, name, rel, node);
                Ok(true)
            }
            Ok(None) => Ok(false),
            // Devices need root (CAP_MKNOD): a failure, as with tar, saying so.
            Err(Error::Io { path, err }) if dev && err.raw_os_error() == Some(libc::EPERM) => {
                let reason = format!(
                    "{}: cannot create a {} device ({err}): that needs root",
                    path.display(),
                    node.kind.name()
                );
                self.fail(rel, reason);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
