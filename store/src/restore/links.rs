//! Hardlinks: the first name of a group (same `ino`, `nlink` > 1) is written as usual and
//! remembered; each further name is linked to it, reached from DIR one directory at a time
//! without following symlinks, so a link is only ever made to a name this restore wrote.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{fs, Restorer};
use crate::error::Error;
use crate::tree::{Kind, Node};

impl Restorer<'_, '_> {
    /// If `node` is a further name of a hardlink group written earlier, link `name` (at
    /// `rel`) in `parent` to the group's first name. True when that is done with (linked, or
    /// something was in the way); false when `node` is to be written out (not in a group
    /// seen yet, or the link failed: a warning says a copy is written instead).
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
        let Some((first, _)) = self.links.get(&node.ino).cloned() else {
            return false;
        };
        match self.hardlink(parent, name, rel, &first) {
            Ok(true) => {
                self.report.files += 1;
                if let Some((_, left)) = self.links.get_mut(&node.ino) {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        self.links.remove(&node.ino);
                    }
                }
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

    /// `node` was just written as `rel`: if it is the first name of a hardlink group, the
    /// group's further names will link to it.
    pub(super) fn remember_link(&mut self, rel: &[u8], node: &Node) {
        if node.kind != Kind::Dir && node.ino != 0 && node.nlink > 1 {
            self.links
                .entry(node.ino)
                .or_insert_with(|| (rel.to_vec(), node.nlink - 1));
        }
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
