//! How the walk reaches the entries it archives: every one through the open descriptor of
//! its own directory, never by a path from the root.
//!
//! A path from the root is resolved afresh on every call, so an ancestor swapped for a
//! symlink while the walk is below it (the machine being archived keeps running) would send
//! the rest of the walk wherever the link points, outside DIR. Each directory is instead
//! opened once from its parent's descriptor, with O_NOFOLLOW, and its entries are reached
//! as `/proc/self/fd/N/NAME`: the kernel resolves `N` to the directory that was opened,
//! wherever it is now, and `NAME` is a single component the calls that never follow a
//! symlink (lstat, O_NOFOLLOW opens, readlink, llistxattr) take as it is. GNU tar walks
//! with `openat` for the same reason. Paths stay short however deep the tree, so depth is
//! bounded only by open descriptors (one per level; the binary raises its soft limit).
//! A directory's own listing and attributes are read from its descriptor. Without /proc
//! (a bare chroot) entries are reached by their paths from DIR, with a warning saying what
//! that loses.

use std::ffi::{CStr, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The path that reaches `name` in the directory open as `dir` (`.` for the directory).
pub(super) fn through(dir: &File, name: &[u8]) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(OsStr::from_bytes(name));
    path
}

/// Open a directory for the walk. `follow`: the root is followed if it is a symlink, as
/// `tar -C DIR` follows it; nothing below it is.
pub(super) fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOCTTY | nofollow)
        .open(path)
}

/// Whether opening failed for want of descriptors: the walk cannot go on without them.
pub(super) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Whether an O_NOFOLLOW | O_DIRECTORY open failed because the name is no longer a
/// directory (replaced by a symlink or a file since it was looked at).
pub(super) fn not_a_directory_now(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// The entry names of the directory open as `dir`, sorted by their bytes: the order that
/// makes the stream independent of how the file system returns them. Read from the
/// descriptor itself, so a directory that can be read but not searched (mode 0644) is listed,
/// as GNU tar lists it, and no /proc is needed.
pub(super) fn list_open_dir(dir: &File) -> io::Result<Vec<Vec<u8>>> {
    // fdopendir takes the descriptor over: give it a copy of ours.
    // SAFETY: fcntl on a descriptor we own; it touches no memory.
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else uses; on failure it is still ours.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` was not taken over.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    // SAFETY: `stream` is a valid DIR* until closedir below; each dirent it returns stays
    // valid until the next readdir on it, and its name is NUL-terminated.
    let listed = unsafe {
        // The copy shares the file offset: start from the beginning whatever it is.
        libc::rewinddir(stream);
        let mut names = Vec::new();
        let end = loop {
            *libc::__errno_location() = 0;
            let entry = libc::readdir64(stream);
            if entry.is_null() {
                break io::Error::last_os_error();
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        };
        libc::closedir(stream);
        match end.raw_os_error() {
            Some(0) => Ok(names),
            _ => Err(end),
        }
    };
    let mut names = listed?;
    names.sort_unstable();
    Ok(names)
}

/// A directory's entry names by its path, sorted by their bytes (for tests that check a
/// stream against the tree it came from).
#[cfg(test)]
pub(super) fn list_dir(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    list_open_dir(&open_dir(path, true)?)
}

/// Whether entries can be reached through their directory's descriptor: /proc is mounted.
pub(super) fn descriptors_reachable() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory moved elsewhere and replaced by a symlink is still reached where it went.
    use std::fs;

    #[test]
    fn entries_are_reached_in_the_directory_that_was_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, moved, decoy) = (
            tmp.path().join("a"),
            tmp.path().join("moved"),
            tmp.path().join("decoy"),
        );
        for d in [&a, &decoy] {
            fs::create_dir(d).unwrap();
        }
        fs::write(a.join("f"), "inside").unwrap();
        fs::write(decoy.join("f"), "outside").unwrap();
        let dir = open_dir(&a, false).unwrap();
        fs::rename(&a, &moved).unwrap();
        std::os::unix::fs::symlink(&decoy, &a).unwrap();
        assert_eq!(fs::read(through(&dir, b"f")).unwrap(), b"inside");
        assert_eq!(list_open_dir(&dir).unwrap(), [b"f".to_vec()]);
        let e = open_dir(&a, false).unwrap_err();
        assert!(not_a_directory_now(&e), "{e}");
    }
}
