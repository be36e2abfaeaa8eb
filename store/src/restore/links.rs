//! Hardlinks: the first name of a group (same `ino`, `nlink` > 1) is written as usual and
//! remembered; each further name is linked to it, reached from DIR one directory at a time
//! without following symlinks, so a link is only ever made to a name this restore wrote. When
//! the first name could not be restored (something in the way), the further names are not
//! written either: each is a failure naming it, as GNU tar's "Cannot hard link" is.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{fs, Restorer};
use crate::error::Error;
use crate::tree::{Kind, Node};

/// A hardlink group met in the walk: its first name (relative to DIR), whether that was
/// restored, and how many more names the group has; forgotten once all are met.
pub(super) struct Group {
    first: Vec<u8>,
    restored: bool,
    left: u64,
}

impl Restorer<'_, '_> {
    /// If `node` is a further name of a hardlink group met earlier, link `name` (at `rel`) in
    /// `parent` to the group's first name. True when that is done with (linked, something was
    /// in the way, or the first name was not restored: both failures); false when `node` is
    /// to be written out (not in a group met yet, or the link failed: a warning says a copy
    /// is written instead).
    pub(super) fn link_to_earlier(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        node: &Node,
    ) -> bool {
        if node.kind == Kind::Dir || node.ino == 0 {
            return false;
        }
        let Some(group) = self.links.get_mut(&node.ino) else {
            return false;
        };
        group.left = group.left.saturating_sub(1);
        let (first, restored) = (group.first.clone(), group.restored);
        if group.left == 0 {
            self.links.remove(&node.ino);
        }
        if !restored {
            let reason = format!(
                "a hardlink to {}, which could not be restored",
                self.snap_path(&first)
            );
            self.fail(rel, reason);
            return true;
        }
        match self.hardlink(parent, name, rel, &first) {
            Ok(true) => {
                self.report.files += 1;
                true
            }
            Ok(false) => true,
            Err(e) => {
                let msg = format!(
                    "{}: cannot hardlink to {}: {e}; writing a copy instead",
                    self.disk(rel).display(),
                    self.disk(&first).display()
                );
                self.warn(msg);
                false
            }
        }
    }

    /// `node` was just met as `rel`, and written (`restored`) or failed: if it is the first
    /// name of a hardlink group, the group's further names will link to it (or fail too).
    pub(super) fn remember_link(&mut self, rel: &[u8], node: &Node, restored: bool) {
        if node.kind != Kind::Dir && node.ino != 0 && node.nlink > 1 {
            self.links.entry(node.ino).or_insert_with(|| Group {
                first: rel.to_vec(),
                restored,
                left: node.nlink - 1,
            });
        }
    }

    /// Link `name` in `parent` to `first` (a name written earlier, relative to DIR), reached
    /// from DIR one directory at a time without following symlinks. Ok(false): something is
    /// in the way (a failure of the restore).
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
            let at = held.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            held = Some(fs::open_dir_path(at, &c)?);
        }
        // Raw: `self` is borrowed mutably below, and `self.root` stays open meanwhile.
        let olddir = held
            .as_ref()
            .map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
        let old = CString::new(*last).map_err(io::Error::other)?;
        let made = self
            .create(parent, name, rel, || fs::linkat(olddir, &old, parent, name))
            .map_err(|e| match e {
                Error::Io { err, .. } => err,
                e => io::Error::other(e.to_string()),
            })?;
        Ok(made.is_some())
    }
}
