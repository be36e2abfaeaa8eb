//! What the mount tests build and call beside the mount: tar writers and small streams,
//! nanosecond mtimes, getxattr and errno helpers, directory listings as name sets, and the
//! kernel's caches.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::oracle::{archive, c_path, GNU_TAR};
use crate::common::*;

pub(super) fn xattr_get(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let cp = c_path(p);
    let size = unsafe { libc::lgetxattr(cp.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 16];
    let got =
        unsafe { libc::lgetxattr(cp.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(got, size, "getxattr {name}: size query and value disagree");
    buf.truncate(got as usize);
    Ok(buf)
}

pub(super) fn errno_of(r: io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

pub(super) fn libc_result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

pub(super) fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

static KERNEL_CACHES: Mutex<()> = Mutex::new(());

/// Held while a test drops the kernel's caches, and while one counts what the kernel holds of
/// its mount (inodes, cached pages): a drop made by another test meanwhile would make the
/// kernel forget that mount's inodes, and their pages, too. Held too by a test that relies on
/// them otherwise (a snapshot pinned only by the inodes the kernel looked up).
pub(super) fn kernel_caches() -> MutexGuard<'static, ()> {
    KERNEL_CACHES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Make the kernel evict the dentries and inodes it can (nothing open): it sends FORGET for
/// each. Call with `kernel_caches` held.
pub(super) fn drop_kernel_caches(_held: &MutexGuard<'static, ()>) {
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop the kernel's caches (root)");
}

/// A small tree: `files` of (relative path, bytes), archived by GNU tar.
pub(super) fn small_stream(store: &TestStore, tree: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let root = store.scratch(tree);
    for (p, data) in files {
        write_file(&root.join(p), data);
    }
    archive(GNU_TAR, &root)
}

/// Every path under `mounted` is in `want` (GNU tar's extraction) and reads the same.
pub(super) fn assert_reads_like(mounted: &Path, want: &Path, what: &str) {
    let got = super::oracle::walk(mounted);
    let expected = super::oracle::walk(want);
    assert_eq!(got.len(), expected.len(), "{what}: path counts differ");
    for ((g_rel, g), (w_rel, w)) in got.iter().zip(&expected) {
        assert_eq!(g_rel, w_rel, "{what}");
        if w.symlink_metadata().unwrap().is_file() {
            assert!(
                fs::read(g).unwrap() == fs::read(w).unwrap(),
                "{what}: {} differs",
                String::from_utf8_lossy(g_rel)
            );
        }
    }
}
