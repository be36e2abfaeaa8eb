//! Attributes: owner (as root), xattrs, mode (setuid/setgid/sticky included) and mtime with
//! nanoseconds, set last on each name. A failure is a warning, never an error.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use super::{fs, Restorer};
use crate::error::path_text;
use crate::tree::{Kind, Node};

/// The id chown leaves unchanged ((uid_t)-1).
const KEEP: u32 = u32::MAX;

impl Restorer<'_, '_> {
    /// Owner (as root), xattrs, mode and mtime of an open file or directory. Failures are
    /// warnings.
    pub(super) fn meta_fd(&mut self, fd: BorrowedFd, rel: &[u8], node: &Node) {
        if let Some((uid, gid)) = self.owner(rel, node) {
            if let Err(e) = fs::fchown(fd, uid, gid) {
                self.meta_warn(rel, "owner", e);
            }
        }
        for (k, v) in &node.xattrs {
            if let Err(e) = fs::fsetxattr(fd, k, v) {
                self.meta_warn(rel, &format!("xattr {}", path_text(k)), e);
            }
        }
        if let Err(e) = fs::fchmod(fd, (node.mode & 0o7777) as libc::mode_t) {
            self.meta_warn(rel, "mode", e);
        }
        let times = self.times(rel, node);
        if let Err(e) = fs::futimens(fd, &times) {
            self.meta_warn(rel, "mtime", e);
        }
    }

    /// The same for a symlink, device or fifo, by name in `parent`, never following a
    /// symlink (a symlink's mode is not set: Linux has none).
    pub(super) fn meta_at(&mut self, parent: BorrowedFd, name: &CStr, rel: &[u8], node: &Node) {
        if let Some((uid, gid)) = self.owner(rel, node) {
            if let Err(e) = fs::fchownat(parent, name, uid, gid) {
                self.meta_warn(rel, "owner", e);
            }
        }
        if !node.xattrs.is_empty() {
            // lsetxattr by a path through the directory's descriptor: the directory is the
            // one we hold, and the last component is not followed.
            let path = fs::proc_path(parent, name);
            for (k, v) in &node.xattrs {
                if let Err(e) = fs::lsetxattr(&path, k, v) {
                    self.meta_warn(rel, &format!("xattr {}", path_text(k)), e);
                }
            }
        }
        if node.kind != Kind::Symlink {
            let mode = (node.mode & 0o7777) as libc::mode_t;
            if let Err(e) = fs::fchmodat(parent, name, mode) {
                self.meta_warn(rel, "mode", e);
            }
        }
        let times = self.times(rel, node);
        if let Err(e) = fs::utimensat(parent, name, &times) {
            self.meta_warn(rel, "mtime", e);
        }
    }

    /// The owner to set: the snapshot's when running as root, else none (the files stay the
    /// current user's, as tar does). An id Linux cannot hold (negative, past 32 bits, or
    /// 2^32-1, which chown takes as "unchanged") is left as it is, and the other one is still
    /// set, as GNU tar's chown does.
    fn owner(&mut self, rel: &[u8], node: &Node) -> Option<(libc::uid_t, libc::gid_t)> {
        if !self.as_root {
            return None;
        }
        let fits = |id: u64| u32::try_from(id).ok().filter(|&id| id != KEEP);
        let (uid, gid) = (fits(node.uid), fits(node.gid));
        let (u, g) = (node.uid, node.gid);
        let unfit = match (uid, gid) {
            (None, None) => Some(format!(
                "owner {u}:{g} does not fit a Linux uid/gid; not set"
            )),
            (None, _) => Some(format!(
                "uid {u} does not fit a Linux uid; left as it is, gid {g} set"
            )),
            (_, None) => Some(format!(
                "gid {g} does not fit a Linux gid; left as it is, uid {u} set"
            )),
            _ => None,
        };
        if let Some(what) = unfit {
            let msg = format!("{}: {what}", self.disk(rel).display());
            self.warn(msg);
        }
        match (uid, gid) {
            (None, None) => None,
            _ => Some((uid.unwrap_or(KEEP), gid.unwrap_or(KEEP))),
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
