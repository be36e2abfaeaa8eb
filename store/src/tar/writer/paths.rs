//! Paths to the entries the walk visits, however deep. A path is the root's joined with the
//! entry's relative one while that stays well under `PATH_MAX`; past it (a deep tree, or a
//! root with a long path of its own), it goes through an open descriptor of an ancestor
//! directory, `/proc/self/fd/N/rest`, so the kernel never sees more than a few kilobytes at
//! once. GNU tar walks with `openat` for the same reason: an entry's name inside the root,
//! not where the root happens to be, decides whether it can be archived.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Paths shorter than this are used as they are. `PATH_MAX` is 4,096 with its NUL; the room
/// left covers `/proc/self/fd/N/`.
const ROOM: usize = 3800;

pub(super) struct Paths {
    root: PathBuf,
    /// Open ancestors of the entries being visited, shallowest first (each one a descendant
    /// of the one before it).
    anchors: Vec<Anchor>,
}

struct Anchor {
    /// Relative to the root, as the walk names entries.
    rel: Vec<u8>,
    dir: File,
}

impl Paths {
    pub fn new(root: &Path) -> Self {
        Paths {
            root: root.to_path_buf(),
            anchors: Vec::new(),
        }
    }

    /// The entry at `rel` (relative to the root, empty for the root itself), as seen from
    /// here. When a path cannot be made short (an ancestor cannot be opened), the long one
    /// comes back, and using it fails with the reason.
    pub fn access(&mut self, rel: &[u8]) -> PathBuf {
        let full = self.full(rel);
        if full.as_os_str().len() < ROOM {
            return full;
        }
        // Anchors of entries visited before and not above this one are done with.
        while self.anchors.last().is_some_and(|a| !is_below(rel, &a.rel)) {
            self.anchors.pop();
        }
        loop {
            let (base, from) = match self.anchors.last() {
                Some(a) => (fd_path(&a.dir), a.rel.len() + 1),
                None => (self.root.clone(), 0),
            };
            let rest = &rel[from..];
            if base.as_os_str().len() + 1 + rest.len() < ROOM {
                return base.join(OsStr::from_bytes(rest));
            }
            // Open the deepest ancestor still in reach from `base`, and go on from there.
            // A root whose own path leaves no room has nothing to split: its long path is used.
            let reach = ROOM.saturating_sub(base.as_os_str().len() + 1);
            let Some(cut) = rest[..reach.min(rest.len())]
                .iter()
                .rposition(|&b| b == b'/')
                .filter(|&cut| cut > 0)
            else {
                return full; // one name longer than the room: nothing to split
            };
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(base.join(OsStr::from_bytes(&rest[..cut])));
            match opened {
                Ok(dir) => self.anchors.push(Anchor {
                    rel: rel[..from + cut].to_vec(),
                    dir,
                }),
                Err(_) => return full,
            }
        }
    }

    /// A path `access` gave, as the root's path joined with the entry's, for messages.
    pub fn shown(&self, path: &Path) -> PathBuf {
        for a in self.anchors.iter().rev() {
            if let Ok(rest) = path.strip_prefix(fd_path(&a.dir)) {
                return self.full(&a.rel).join(rest);
            }
        }
        path.to_path_buf()
    }

    /// Where an entry is: the root's path joined with its own.
    pub fn full(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }
}

/// Whether `rel` is strictly below `dir` (both relative to the root).
fn is_below(rel: &[u8], dir: &[u8]) -> bool {
    rel.len() > dir.len() && rel.starts_with(dir) && rel[dir.len()] == b'/'
}

fn fd_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree whose deepest file's absolute path is far past PATH_MAX: every level is reached
    /// through short paths, and each names the entry the long path would.
    #[test]
    fn deep_entries_are_reached_through_short_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r".repeat(200));
        let level = "d".repeat(200);
        let mut rel = Vec::new();
        let mut dir = root.clone();
        std::fs::create_dir(&root).unwrap();
        let mut paths = Paths::new(&root);
        for i in 0..60 {
            if i > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(level.as_bytes());
            let made = paths.access(&rel);
            assert!(
                made.as_os_str().len() < ROOM,
                "level {i}: {}",
                made.display()
            );
            std::fs::create_dir(&made).unwrap();
            dir = dir.join(&level);
            assert_eq!(paths.full(&rel), dir);
            let file = [rel.as_slice(), b"/f"].concat();
            std::fs::write(paths.access(&file), i.to_string()).unwrap();
        }
        assert!(paths.full(&rel).as_os_str().len() > 12_000);
        // Back up to a shallow entry, then deep again: anchors follow.
        let shallow = rel[..level.len() * 3 + 2].to_vec();
        assert_eq!(paths.access(&shallow), paths.full(&shallow));
        let deepest = [rel.as_slice(), b"/f"].concat();
        let short = paths.access(&deepest);
        assert_eq!(std::fs::read(&short).unwrap(), b"59");
        assert_eq!(paths.shown(&short), paths.full(&deepest));

        // A root whose own path is past the room: its entries get the long path, as is.
        let far = PathBuf::from(format!("/{}", "x/".repeat(ROOM)));
        assert_eq!(Paths::new(&far).access(b"a/b"), far.join("a/b"));
    }
}
