//! Trees the tests build on disk, to be archived by real tar writers.

#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::common::{noise, text, write_file};

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).expect("name");
    let rc = unsafe {
        libc::lsetxattr(
            c_path(path).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) {
    let rc = unsafe { libc::mknod(c_path(path).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Set a file's mtime (and atime) to `secs` since the epoch, without following symlinks.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path(path).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A sparse file: `len` bytes with data only at `at` offsets.
pub fn sparse_file(path: &Path, len: u64, at: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(path).expect("create sparse");
    f.set_len(len).expect("set_len");
    for (i, &off) in at.iter().enumerate() {
        f.write_all_at(&noise(4096, i as u64 + 100), off)
            .expect("write sparse data");
    }
}

/// `count` one-line files under `etc/conf0` to `etc/conf49` (`etc/confN/fileI`, "setting I"):
/// a stream of many small members, whose headers are most of it.
pub fn small_files(root: &Path, count: usize) {
    for i in 0..count {
        write_file(
            &root.join(format!("etc/conf{}/file{i}", i % 50)),
            format!("setting {i}\n").as_bytes(),
        );
    }
}

/// Names, links and types every tar format can carry: for ustar, v7 and the like.
pub fn portable_tree(root: &Path) {
    write_file(&root.join("etc/hostname"), b"vm1\n");
    write_file(&root.join("etc/empty"), b"");
    write_file(&root.join("usr/bin/tool"), &noise(300_000, 1));
    write_file(&root.join("usr/share/doc/readme.txt"), &text(70_000, 2));
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.hard")).unwrap();
    fs::create_dir_all(root.join("var/empty-dir")).unwrap();
}

/// Everything the issue names: long names and link targets, hardlinks, symlinks, xattrs, a
/// sparse file, devices, a fifo, unicode and odd bytes in names, numbers that need base-256,
/// setuid and sticky modes.
pub fn varied_tree(root: &Path) {
    portable_tree(root);
    let long_dir = root.join(format!("long/{}/{}", "a".repeat(90), "b".repeat(90)));
    write_file(
        &long_dir.join(format!("{}.txt", "c".repeat(120))),
        b"deep\n",
    );
    symlink(
        format!("{}/target", "x".repeat(150)),
        root.join("long/long-target-link"),
    )
    .unwrap();
    fs::hard_link(
        root.join("usr/bin/tool"),
        root.join(format!("long/{}-hard", "h".repeat(110))),
    )
    .unwrap();

    write_file(&root.join("big/random.bin"), &noise(3_000_000, 3));
    write_file(&root.join("big/log.txt"), &text(1_500_000, 4));

    let x = root.join("attrs/file");
    write_file(&x, b"has xattrs\n");
    set_xattr(&x, "user.cellar.note", b"hello");
    set_xattr(&x, "user.cellar.binary", &[0, 1, 2, 255, b'\n', b'=']);

    fs::create_dir_all(root.join("sparse")).unwrap();
    sparse_file(
        &root.join("sparse/disk.img"),
        20 << 20,
        &[0, 5 << 20, (20 << 20) - 4096],
    );
    sparse_file(&root.join("sparse/holes-only.img"), 3 << 20, &[]);

    fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&root.join("dev/loop9"), libc::S_IFBLK | 0o660, 7, 9);
    mknod(&root.join("dev/fifo"), libc::S_IFIFO | 0o644, 0, 0);

    write_file(&root.join("names/ünïcødé-日本語.txt"), b"unicode\n");
    write_file(&root.join("names/tab\tand space"), b"tab\n");
    write_file(&root.join("names/new\nline"), b"newline\n");
    let odd = root
        .join("names")
        .join(OsStr::from_bytes(b"bad-\xff\xfe-utf8"));
    write_file(&odd, b"not utf-8\n");

    let big_ids = root.join("ids/big-owner");
    write_file(&big_ids, b"owned by a large uid\n");
    std::os::unix::fs::lchown(&big_ids, Some(3_000_000), Some(4_000_000)).unwrap();
    let future = root.join("ids/far-future");
    write_file(&future, b"from the future\n");
    set_mtime(&future, 10_000_000_000); // past 8^11: base-256 in GNU headers
    let suid = root.join("modes/setuid");
    write_file(&suid, b"#!/bin/sh\n");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("modes/sticky")).unwrap();
    fs::set_permissions(
        root.join("modes/sticky"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
}
