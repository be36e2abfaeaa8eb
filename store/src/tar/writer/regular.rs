//! Regular files: opening them safely, hard links, and copying their data (sparse or not)
//! with a warning when a file changes while it is read.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::header::{Entry, REGULAR};
use super::output::ReadTrouble;
use super::sparse::{data_segments, looks_sparse, sparse_map};
use super::{member_name, Attrs, Walker};
use crate::error::Result;
use crate::tar::header::BLOCK;

impl Walker<'_> {
    /// A regular file (not an earlier one's hard link: `visit` wrote that).
    pub(super) fn regular(&mut self, rel: &[u8], path: &Path) -> Result<()> {
        // O_NONBLOCK: should a fifo have replaced the file since lstat, opening it must not
        // hang (GNU tar opens files the same way).
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => return self.left_out(rel, e),
        };
        // The header describes what was opened, not what lstat saw a moment earlier.
        let md = match file.metadata() {
            Ok(md) if md.is_file() => md,
            Ok(_) => {
                self.warn(rel, "file changed type as we read it; not dumped");
                return Ok(());
            }
            Err(e) => {
                self.unreadable(rel, &e, &e);
                return Ok(());
            }
        };
        self.file(rel, &file, &md)
    }

    /// Archive the regular file at `rel`, open as `file`, whose header will say `md`.
    pub(super) fn file(&mut self, rel: &[u8], file: &File, md: &Metadata) -> Result<()> {
        let size = md.size();
        let mut entry = Entry::new(member_name(rel, false), REGULAR, md);
        self.add_xattrs(&mut entry, rel, Attrs::Open(file));
        let sparse = looks_sparse(md)
            .then(|| data_segments(file, size))
            .flatten()
            .map(|segments| (sparse_map(&segments), segments));
        match &sparse {
            Some((map, segments)) => entry.make_sparse(map, segments, size),
            None => entry.size = size,
        }
        if !self.emit(&entry, rel)? {
            return Ok(());
        }
        let trouble = match &sparse {
            Some((map, segments)) => self.copy_sparse(file, map, segments)?,
            None => self.out.copy(file, 0, size)?,
        };
        self.out.pad_to(BLOCK as u64)?;
        self.report_trouble(rel, trouble, file, md);
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
        rel: &[u8],
        trouble: Option<ReadTrouble>,
        file: &File,
        md: &Metadata,
    ) {
        match trouble {
            Some(ReadTrouble::Shrank) => self.warn(rel, "file changed as we read it"),
            Some(ReadTrouble::Failed { at, error }) => self.unreadable(
                rel,
                &error,
                format_args!("read error at byte {at}: {error}; padded with zeros"),
            ),
            None if changed_since(file, md) => self.warn(rel, "file changed as we read it"),
            None => {}
        }
    }
}

/// Inodes archived with st_nlink > 1, so later links to them become `1` members.
#[derive(Default)]
pub(super) struct HardLinks(HashMap<(u64, u64), Seen>);

struct Seen {
    name: Vec<u8>,
    /// Links not met yet; the entry is dropped once all are, to bound memory.
    links_left: u64,
}

impl HardLinks {
    /// The member name under which this file was archived already, if it was.
    pub(super) fn earlier(&mut self, md: &Metadata) -> Option<Vec<u8>> {
        let key = (md.dev(), md.ino());
        let seen = self.0.get_mut(&key)?;
        let name = seen.name.clone();
        seen.links_left = seen.links_left.saturating_sub(1);
        if seen.links_left == 0 {
            self.0.remove(&key);
        }
        Some(name)
    }

    pub(super) fn remember(&mut self, md: &Metadata, name: Vec<u8>) {
        let links_left = md.nlink() - 1;
        self.0
            .insert((md.dev(), md.ino()), Seen { name, links_left });
    }
}

/// Whether a file changed between the header's fstat and the end of reading it.
fn changed_since(file: &File, before: &Metadata) -> bool {
    file.metadata().is_ok_and(|now| {
        now.size() != before.size()
            || now.mtime() != before.mtime()
            || now.mtime_nsec() != before.mtime_nsec()
    })
}
