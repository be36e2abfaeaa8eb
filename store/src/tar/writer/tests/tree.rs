//! Building the trees the tests archive.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::tar::writer::list_dir;
use crate::tar::writer::sparse::looks_sparse;

/// A fixed time for the trees' mtimes.
pub(super) const T0: i64 = 1_600_000_000;
pub(super) const MIB: u64 = 1 << 20;

pub(super) fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub(super) fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths")
}

fn check(rc: libc::c_int, what: &str, path: &Path) {
    let err = io::Error::last_os_error();
    assert_eq!(
        rc,
        0,
        "{what} {}: {err} (these tests run as root)",
        path.display()
    );
}

pub(super) fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let ts = [libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    }; 2];
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path(path).as_ptr(), ts.as_ptr(), flags) };
    check(rc, "utimensat", path);
}

pub(super) fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of value.len() bytes.
    let rc = unsafe {
        let (cp, v) = (c_path(path), value.as_ptr().cast());
        libc::lsetxattr(cp.as_ptr(), name.as_ptr(), v, value.len(), 0)
    };
    check(rc, "lsetxattr", path);
}

pub(super) fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let dev = libc::makedev(major, minor);
    // SAFETY: valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c_path(path).as_ptr(), kind | 0o640, dev) };
    check(rc, "mknod", path);
}

pub(super) fn file(root: &Path, rel: &[u8], content: &[u8]) -> PathBuf {
    let path = p(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    path
}

pub(super) fn dir(root: &Path, rel: &[u8]) -> PathBuf {
    let path = p(root, rel);
    fs::create_dir_all(&path).unwrap();
    path
}

pub(super) fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic, incompressible-looking bytes.
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(super) fn sparse_file(root: &Path, rel: &[u8], len: u64, data: &[(u64, &[u8])]) -> PathBuf {
    let path = p(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::create(&path).unwrap();
    f.set_len(len).unwrap();
    for &(at, bytes) in data {
        f.write_all_at(bytes, at).unwrap();
    }
    let md = f.metadata().unwrap();
    assert!(
        looks_sparse(&md),
        "{} is not sparse on this file system",
        path.display()
    );
    path
}

/// Every directory under (and including) `root`, for setting their mtimes last.
fn all_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for name in list_dir(&dirs[i]).unwrap() {
            let path = dirs[i].join(OsStr::from_bytes(&name));
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                dirs.push(path);
            }
        }
        i += 1;
    }
    dirs
}

/// The long name with invalid UTF-8 that must travel in a `path` record.
pub(super) fn long_odd_name() -> Vec<u8> {
    let mut name = b"odd/".to_vec();
    for _ in 0..70 {
        name.extend_from_slice(b"x\xff");
    }
    name
}

/// A tree with every kind of member and every reason for an `x` header. Returns the
/// sparse files' relative paths.
pub(super) fn varied_tree(root: &Path) -> Vec<Vec<u8>> {
    // Regular files of several sizes.
    file(root, b"empty", b"");
    set_mtime(&file(root, b"one", b"1"), T0, 0);
    file(root, b"sizes/511", &noise(511, 1));
    file(root, b"sizes/512", &noise(512, 2));
    file(root, b"sizes/513", &noise(513, 3));
    file(root, b"sizes/100k", &noise(100_000, 4));
    file(root, b"sizes/1m+3", &noise(MIB as usize + 3, 5));
    // Modes.
    chmod(&file(root, b"mode/setuid", b"#!/bin/sh\n"), 0o4755);
    chmod(&file(root, b"mode/private", b"secret"), 0o600);
    chmod(&file(root, b"mode/none", b"nothing"), 0o000);
    chmod(&dir(root, b"mode/sticky"), 0o1777);
    chmod(&dir(root, b"mode/setgid"), 0o2750);
    // Long names: one a ustar prefix/name split holds, one only a `path` record can.
    let split = [&b"long/"[..], &[b'p'; 90], b"/", &[b'q'; 60]].concat();
    file(root, &split, b"split");
    let deep = [
        &b"long/"[..],
        &[b'd'; 120],
        b"/",
        &[b'e'; 120],
        b"/",
        &[b'f'; 200],
    ]
    .concat();
    file(root, &deep, b"deep");
    dir(root, &[&b"long/"[..], &[b'g'; 150]].concat());
    // Symlinks: short, long, dangling, to a directory (never followed), absolute.
    dir(root, b"links");
    symlink("target", root.join("links/short")).unwrap();
    symlink("t".repeat(300), root.join("links/long")).unwrap();
    symlink("../sizes", root.join("links/dir")).unwrap();
    symlink("/etc/passwd", root.join("links/abs")).unwrap();
    // Hard links, one under a long name, one in another directory.
    let a = file(root, b"hard/a", b"linked content");
    fs::hard_link(&a, root.join("hard/b")).unwrap();
    fs::hard_link(&a, p(root, &[&b"hard/"[..], &[b'h'; 150]].concat())).unwrap();
    dir(root, b"hard2");
    fs::hard_link(&a, root.join("hard2/c")).unwrap();
    // Extended attributes, binary and empty values, on a file and a directory.
    let x = file(root, b"xattr/file", b"with attributes");
    set_xattr(&x, "user.one", b"1");
    set_xattr(&x, "user.bin", b"\0\n=\xff binary");
    set_xattr(&x, "user.empty", b"");
    set_xattr(&x, "user.big", &noise(3000, 6));
    set_xattr(&dir(root, b"xattr/dir"), "user.d", b"on a directory");
    // Sparse files: holes around data, only holes, ending in data.
    let hello = b"hello".repeat(1000);
    let sparse: Vec<Vec<u8>> = vec![
        b"sparse/holey".to_vec(),
        b"sparse/allholes".to_vec(),
        b"sparse/endsdata".to_vec(),
    ];
    sparse_file(
        root,
        &sparse[0],
        4 * MIB,
        &[(MIB, &hello), (3 * MIB, b"more")],
    );
    sparse_file(root, &sparse[1], MIB, &[]);
    sparse_file(root, &sparse[2], 2 * MIB, &[(2 * MIB - 4096, &[7; 4096])]);
    // Special files; the socket is left out with a warning.
    dir(root, b"special");
    mknod(&root.join("special/fifo"), libc::S_IFIFO, 0, 0);
    mknod(&root.join("special/chr"), libc::S_IFCHR, 4, 64);
    mknod(&root.join("special/blk"), libc::S_IFBLK, 259, 70000);
    let sock = std::os::unix::net::UnixListener::bind(root.join("special/sock")).unwrap();
    drop(sock);
    // Odd bytes in names.
    for name in [
        &b"odd/new\nline"[..],
        b"odd/bad\xff\xfe",
        b"odd/sp ace",
        b"odd/=eq",
        "odd/ünï".as_bytes(),
        b"odd/\x01ctl",
        b"odd/back\\slash",
    ] {
        file(root, name, name);
    }
    file(root, &long_odd_name(), b"long and not UTF-8");
    // Owners beyond what ustar's 7 octal digits hold, on a file and a symlink.
    let big = file(root, b"own/big", b"big ids");
    lchown(&big, Some(3_000_000), Some(3_000_001)).unwrap();
    symlink("big", root.join("own/link")).unwrap();
    lchown(root.join("own/link"), Some(3_000_002), Some(42)).unwrap();
    lchown(
        file(root, b"own/small", b"small ids"),
        Some(1234),
        Some(5678),
    )
    .unwrap();
    // Times: nanoseconds, before the epoch, the epoch, past 11 octal digits.
    set_mtime(&file(root, b"time/ns", b"ns"), T0, 123_456_789);
    set_mtime(&file(root, b"time/neg", b"neg"), -2, 500_000_000);
    set_mtime(&file(root, b"time/old", b"old"), -100_000, 0);
    set_mtime(&file(root, b"time/zero", b"zero"), 0, 0);
    set_mtime(
        &file(root, b"time/future", b"future"),
        0o77777777777 + 10,
        0,
    );
    set_mtime(&root.join("own/link"), T0 + 5, 5);
    set_mtime(&root.join("links/short"), T0 - 5, 0);
    // Directories last: creating their entries changed their mtimes.
    for (i, d) in all_dirs(root).iter().enumerate() {
        set_mtime(d, T0 + i as i64, if i % 2 == 0 { 0 } else { 987_654_321 });
    }
    chmod(root, 0o750);
    sparse
}
