//! Extended attributes: reading them all, and their `SCHILY.xattr.` record keys.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Every extended attribute of `path` itself (not following a symlink), sorted by name.
pub(super) fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    read_all(
        // SAFETY: `buf` is valid for `len` bytes (or null with len 0), cpath is NUL-terminated.
        |buf, len| unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) },
        // SAFETY: as above; the name is NUL-terminated.
        |name, buf, len| unsafe { libc::lgetxattr(cpath.as_ptr(), name, buf.cast(), len) },
    )
}

/// Every extended attribute of the open file or directory `file`, sorted by name: what was
/// opened, whatever its path leads to now, and with no search permission needed on it.
pub(super) fn read_xattrs_fd(file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = file.as_raw_fd();
    read_all(
        // SAFETY: `buf` is valid for `len` bytes (or null with len 0); `fd` is open.
        |buf, len| unsafe { libc::flistxattr(fd, buf.cast(), len) },
        // SAFETY: as above; the name is NUL-terminated.
        |name, buf, len| unsafe { libc::fgetxattr(fd, name, buf.cast(), len) },
    )
}

/// The attributes `list` names, each read with `get`, sorted by name.
fn read_all(
    list: impl FnMut(*mut u8, usize) -> isize,
    mut get: impl FnMut(*const libc::c_char, *mut u8, usize) -> isize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = match xattr_call(list) {
        Ok(list) => list,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::ENOSYS)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut attrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        match xattr_call(|buf, len| get(cname.as_ptr(), buf, len)) {
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
pub(super) fn xattr_key(name: &[u8]) -> Vec<u8> {
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
