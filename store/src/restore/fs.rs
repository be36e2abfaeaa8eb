//! The system calls a restore makes, each relative to a directory descriptor (the `*at`
//! calls) or on an open descriptor, never following a symlink at the last component. Every
//! `unsafe` block of the restore is here; the callers decide what a failure means.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A descriptor just returned by a call, or its error.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Is this process running as root (so owners are restored)?
pub(super) fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Open a directory by name in `at` without following a symlink.
pub(super) fn open_dir(at: libc::c_int, name: &CStr) -> io::Result<OwnedFd> {
    owned(unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Open a directory by name in `at` as a path only (to name things in it), without
/// following a symlink.
pub(super) fn open_dir_path(at: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    owned(unsafe {
        libc::openat(
            at.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Create the regular file `name` in `parent` (mode 0600, failing if the name exists, never
/// through a symlink) and open it for writing.
pub(super) fn create_file(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    owned(unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })
}

/// Create directory `name` in `parent`, mode 0700 (its own mode is set last).
pub(super) fn mkdirat(parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) })
}

/// Remove `name` from `parent`: a directory (empty) with `dir`, else a non-directory.
pub(super) fn unlinkat(parent: BorrowedFd, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    cvt(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) })
}

pub(super) fn symlinkat(target: &CStr, parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), name.as_ptr()) })
}

/// Hardlink `new` in `newdir` to `old` in the open directory `olddir` (`old` itself, if a
/// symlink, not followed).
pub(super) fn linkat(olddir: RawFd, old: &CStr, newdir: BorrowedFd, new: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::linkat(olddir, old.as_ptr(), newdir.as_raw_fd(), new.as_ptr(), 0) })
}

/// Create a device or fifo: `kind` is `S_IFCHR`, `S_IFBLK` or `S_IFIFO`; mode 0600 (set
/// last).
pub(super) fn mknodat(
    parent: BorrowedFd,
    name: &CStr,
    kind: libc::mode_t,
    rdev: libc::dev_t,
) -> io::Result<()> {
    cvt(unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), kind | 0o600, rdev) })
}

pub(super) fn fstatat(at: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    cvt(unsafe {
        libc::fstatat(
            at.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

/// True if the open directory holds nothing but `.` and `..`.
pub(super) fn is_empty(fd: BorrowedFd) -> io::Result<bool> {
    let dup = fd.try_clone_to_owned()?;
    let raw = dup.as_raw_fd();
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    // The DIR stream owns the descriptor now.
    std::mem::forget(dup);
    let mut empty = true;
    let mut err = None;
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            let last = io::Error::last_os_error();
            if last.raw_os_error() != Some(0) {
                err = Some(last);
            }
            break;
        }
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            empty = false;
            break;
        }
    }
    unsafe { libc::closedir(d) };
    match err {
        Some(e) => Err(e),
        None => Ok(empty),
    }
}

// Attributes of an open file or directory.

pub(super) fn fchown(fd: BorrowedFd, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(super) fn fsetxattr(fd: BorrowedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = CString::new(key).map_err(io::Error::other)?;
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

pub(super) fn fchmod(fd: BorrowedFd, mode: libc::mode_t) -> io::Result<()> {
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// Set the times ([atime, mtime]) of an open file or directory.
pub(super) fn futimens(fd: BorrowedFd, times: &[libc::timespec; 2]) -> io::Result<()> {
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

// Attributes of a name in a directory (a symlink, device or fifo), not following it.

pub(super) fn fchownat(
    parent: BorrowedFd,
    name: &CStr,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> io::Result<()> {
    cvt(unsafe {
        libc::fchownat(
            parent.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// A path to `name` through the directory's descriptor, for the calls that take only paths:
/// the directory is the one held, and the last component is not followed by `l*` calls.
pub(super) fn proc_path(parent: BorrowedFd, name: &CStr) -> CString {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    CString::new(path).expect("no NUL")
}

/// Set an xattr of `path` (from `proc_path`) without following a symlink.
pub(super) fn lsetxattr(path: &CStr, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = CString::new(key).map_err(io::Error::other)?;
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Set the mode of `name` in `parent`, not following a symlink where the kernel can say so.
pub(super) fn fchmodat(parent: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    let p = parent.as_raw_fd();
    cvt(unsafe { libc::fchmodat(p, name.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) }).or_else(|e| {
        match e.raw_os_error() {
            // Without fchmodat2 or /proc: the name is the node just made, not a symlink.
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOENT | libc::EINVAL) => {
                cvt(unsafe { libc::fchmodat(p, name.as_ptr(), mode, 0) })
            }
            _ => Err(e),
        }
    })
}

/// Set the times ([atime, mtime]) of `name` in `parent`, not following a symlink.
pub(super) fn utimensat(
    parent: BorrowedFd,
    name: &CStr,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    cvt(unsafe {
        libc::utimensat(
            parent.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}
