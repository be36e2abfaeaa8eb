//! The oracle: GNU tar's extraction of a stream, walked and compared with what `ls --json`
//! says of the snapshot, and the decoders that needs (base64 `path_bytes`, RFC 3339 times,
//! `ls -b` escapes). Also: building a tree, archiving it and snapshotting the stream.
//!
//! The `pub(crate)` items are the mount tests' too (walking, extracting, archiving, xattr
//! names, `lossy`).

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

/// Standard base64 (padding optional), for `path_bytes`.
pub(super) fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {s:?}"),
        }
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for group in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..group.len()]);
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch and nanoseconds of an RFC 3339 UTC time
/// (`2024-01-02T03:04:05.123Z`).
pub(super) fn rfc3339(s: &str) -> (i64, u32) {
    let b = s.as_bytes();
    assert!(
        b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && (b[10] == b'T' || b[10] == b't')
            && b[13] == b':'
            && b[16] == b':',
        "mtime {s:?} is not RFC 3339"
    );
    let num = |r: std::ops::Range<usize>| -> i64 {
        s[r].parse()
            .unwrap_or_else(|_| panic!("mtime {s:?} is not RFC 3339"))
    };
    let secs = days_from_civil(num(0..4), num(5..7), num(8..10)) * 86_400
        + num(11..13) * 3600
        + num(14..16) * 60
        + num(17..19);
    let rest = &s[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..n], &r[n..])
        }
        None => ("", rest),
    };
    assert!(
        zone == "Z" || zone == "z" || zone == "+00:00",
        "mtime {s:?} is not UTC"
    );
    assert!(frac.len() <= 9, "mtime {s:?}: more than nanoseconds");
    let nsec = format!("{frac:0<9}").parse().unwrap();
    (secs, nsec)
}

/// A name as `ls -b` shows it (in a UTF-8 locale).
pub(super) fn ls_b(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                ' ' => out.push_str("\\ "),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\{b:03o}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// xattr names of `p` (not following symlinks), sorted.
pub(crate) fn xattr_names(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 1 << 16];
    let n = unsafe { libc::llistxattr(c_path(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(lossy)
        .collect();
    names.sort();
    names
}

/// What the tests compare of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) kind: String,
    /// Permission bits incl. setuid/setgid/sticky.
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: i64,
    pub(super) mtime_nsec: u32,
    /// Regular files and symlinks.
    pub(super) size: Option<u64>,
    /// Everything but directories.
    pub(super) nlink: Option<u64>,
    pub(super) target: Option<String>,
    pub(super) dev: Option<(u64, u64)>,
    pub(super) xattrs: Vec<String>,
}

fn dev_major(d: u64) -> u64 {
    ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)
}

fn dev_minor(d: u64) -> u64 {
    (d & 0xff) | ((d >> 12) & !0xff)
}

/// The entry at `p` on disk, as the extraction left it.
pub(super) fn disk_meta(p: &Path) -> Meta {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        panic!("{}: unexpected file type", p.display())
    };
    Meta {
        kind: kind.to_string(),
        mode: m.mode() & 0o7777,
        uid: m.uid() as u64,
        gid: m.gid() as u64,
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec() as u32,
        size: (ft.is_file() || ft.is_symlink()).then_some(m.size()),
        nlink: (!ft.is_dir()).then_some(m.nlink()),
        target: ft
            .is_symlink()
            .then(|| lossy(std::fs::read_link(p).unwrap().as_os_str().as_bytes())),
        dev: (ft.is_char_device() || ft.is_block_device())
            .then(|| (dev_major(m.rdev()), dev_minor(m.rdev()))),
        xattrs: xattr_names(p),
    }
}

/// One `ls --json` entry's path, exactly (from `path_bytes` when it is there).
fn json_path(v: &Value) -> Vec<u8> {
    let path = v["path"].as_str().expect("path is a string");
    match v.get("path_bytes").and_then(Value::as_str) {
        Some(b) => {
            let bytes = b64decode(b);
            assert!(
                std::str::from_utf8(&bytes).is_err(),
                "path_bytes given for a UTF-8 path: {v}"
            );
            assert_eq!(
                path,
                lossy(&bytes),
                "path is not the lossy form of path_bytes"
            );
            bytes
        }
        None => path.as_bytes().to_vec(),
    }
}

pub(super) fn json_meta(v: &Value) -> Meta {
    let kind = v["type"].as_str().expect("type").to_string();
    let num = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number: {v}"))
    };
    let device = kind == "char" || kind == "block";
    let mut xattrs: Vec<String> = v["xattrs"]
        .as_array()
        .unwrap_or_else(|| panic!("xattrs is not a list: {v}"))
        .iter()
        .map(|x| x.as_str().expect("xattr name").to_string())
        .collect();
    xattrs.sort();
    let (mtime, mtime_nsec) = rfc3339(v["mtime"].as_str().expect("mtime"));
    Meta {
        mode: num("mode") as u32,
        uid: num("uid"),
        gid: num("gid"),
        mtime,
        mtime_nsec,
        size: (kind == "file" || kind == "symlink").then(|| num("size")),
        nlink: (kind != "dir").then(|| num("nlink")),
        target: (kind == "symlink")
            .then(|| v["link_target"].as_str().expect("link_target").to_string()),
        dev: device.then(|| (num("dev_major"), num("dev_minor"))),
        xattrs,
        kind,
    }
}

/// Everything below `root` on disk, depth-first in name order (bytes), as ("/rel/path", path).
pub(crate) fn walk(root: &Path) -> Vec<(Vec<u8>, PathBuf)> {
    fn go(dir: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        for e in entries {
            let p = [rel, b"/", e.file_name().as_bytes()].concat();
            let path = e.path();
            out.push((p.clone(), path.clone()));
            if e.file_type().unwrap().is_dir() {
                go(&path, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, b"", &mut out);
    out
}

/// Extract `stream` into a new directory `dir` as GNU tar does with everything kept.
pub(crate) fn extract(store: &TestStore, stream: &[u8], dir: &Path) {
    let file = stream_file_for(store, stream, dir);
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf '{}' -C '{}'",
        file.display(),
        dir.display()
    ));
}

/// `stream` as a scratch file named for `dir`, for tar to extract into `dir` (made here if
/// missing).
pub(crate) fn stream_file_for(store: &TestStore, stream: &[u8], dir: &Path) -> PathBuf {
    let file = store.scratch(&format!(
        "{}.tar",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&file, stream).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    file
}

pub(super) fn ls_json(store: &TestStore, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["ls"];
    argv.extend_from_slice(args);
    argv.push("--json");
    store
        .json(&argv)
        .as_array()
        .unwrap_or_else(|| panic!("ls --json did not print an array"))
        .clone()
}

pub(super) fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

/// Compare `ls -R --json /` of snapshot `id` with GNU tar's extraction of `stream`: the same
/// paths in depth-first name order, every attribute, and `cat` of every regular file. Returns
/// the listing (paths, entries). `dir_mtimes_from`: take directory mtimes from this tree, not
/// the extraction (see `check_against_extraction`).
pub(super) fn assert_matches_extraction(
    store: &TestStore,
    id: &str,
    stream: &[u8],
    what: &str,
    dir_mtimes_from: Option<&Path>,
) -> (Vec<Vec<u8>>, Vec<Value>) {
    let dir = store.scratch("extracted");
    extract(store, stream, &dir);
    assert_matches_dir(store, id, &dir, what, dir_mtimes_from)
}

/// `assert_matches_extraction` against a tree extracted already.
pub(super) fn assert_matches_dir(
    store: &TestStore,
    id: &str,
    dir: &Path,
    what: &str,
    dir_mtimes_from: Option<&Path>,
) -> (Vec<Vec<u8>>, Vec<Value>) {
    let disk = walk(dir);
    let listed = ls_json(store, &[id, "-R", "/"]);

    // The same set of paths, in depth-first name order.
    let disk_set: BTreeSet<Vec<u8>> = disk.iter().map(|(p, _)| p.clone()).collect();
    let listed_paths: Vec<Vec<u8>> = listed.iter().map(json_path).collect();
    let listed_set: BTreeSet<Vec<u8>> = listed_paths.iter().cloned().collect();
    let only_tree: Vec<String> = listed_set.difference(&disk_set).map(|p| lossy(p)).collect();
    let only_disk: Vec<String> = disk_set.difference(&listed_set).map(|p| lossy(p)).collect();
    assert!(
        only_tree.is_empty() && only_disk.is_empty(),
        "{what}: paths differ from the extraction\nonly in the snapshot: {only_tree:#?}\nonly extracted: {only_disk:#?}"
    );
    assert_eq!(
        listed_paths.len(),
        listed_set.len(),
        "{what}: a path listed twice"
    );
    let disk_order: Vec<Vec<u8>> = disk.iter().map(|(p, _)| p.clone()).collect();
    assert!(
        listed_paths == disk_order,
        "{what}: ls -R is not depth-first in name order: {:#?}",
        listed_paths.iter().map(|p| lossy(p)).collect::<Vec<_>>()
    );

    // Every attribute, per path.
    for ((path, on_disk), entry) in disk.iter().zip(&listed) {
        let mut want = disk_meta(on_disk);
        if let (Some(root), "dir") = (dir_mtimes_from, want.kind.as_str()) {
            let m = std::fs::symlink_metadata(root.join(OsStr::from_bytes(&path[1..]))).unwrap();
            (want.mtime, want.mtime_nsec) = (m.mtime(), m.mtime_nsec() as u32);
        }
        let got = json_meta(entry);
        assert_eq!(
            got,
            want,
            "{what}: {} (left: snapshot, right: extracted)",
            lossy(path)
        );
    }

    // `cat` of every regular file gives the extracted bytes (holes of sparse files as zeros,
    // hardlinks the shared content). Non-UTF-8 paths: see `paths_with_odd_bytes_are_reachable`.
    for (path, on_disk) in &disk {
        if !on_disk.symlink_metadata().unwrap().is_file() {
            continue;
        }
        let Ok(p) = std::str::from_utf8(path) else {
            continue;
        };
        let out = store.run(&["cat", id, p]);
        assert_success(&out, &["cat", id, p]);
        let want = std::fs::read(on_disk).unwrap();
        assert!(
            out.stdout == want,
            "{what}: cat {} gave {} bytes (sha256 {}), extracted {} bytes (sha256 {})",
            p,
            out.stdout.len(),
            sha256_hex(&out.stdout),
            want.len(),
            sha256_hex(&want)
        );
    }

    (listed_paths, listed)
}

/// GNU tar's default format.
pub(crate) const GNU_TAR: &[&str] = &["tar", "-cf", "-"];

/// GNU tar's pax format, with every xattr.
pub(crate) const GNU_TAR_POSIX_XATTRS: &[&str] = &[
    "tar",
    "--format=posix",
    "--xattrs",
    "--xattrs-include=*",
    "-cf",
    "-",
];

/// The stream `writer` (an argv that writes a tar stream to stdout) makes of all of `root`.
pub(crate) fn archive(writer: &[&str], root: &Path) -> Vec<u8> {
    let mut argv = writer.to_vec();
    argv.extend(["-C", root.to_str().unwrap(), "."]);
    tar_stream(&argv)
}

/// A tree, the stream a writer made of it, and the snapshot of that stream.
pub(super) struct Snapped {
    pub(super) root: PathBuf,
    pub(super) stream: Vec<u8>,
    pub(super) id: String,
}

/// Build a tree with `fill` in the scratch directory `tree`, archive it with `writer` and
/// snapshot the stream.
pub(super) fn snapshot_tree(store: &TestStore, fill: fn(&Path), writer: &[&str]) -> Snapped {
    let root = store.scratch("tree");
    fill(&root);
    let stream = archive(writer, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    Snapped { root, stream, id }
}

/// `varied_tree` at `tree/`, archived by `writer`, snapshotted as "vm", and extracted by GNU
/// tar into `extract/`: the tree, the stream, the snapshot's id and the extraction.
pub(crate) fn varied_snapshot(store: &TestStore, writer: &[&str]) -> VariedSnapshot {
    let root = store.scratch("tree");
    crate::trees::varied_tree(&root);
    let stream = archive(writer, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let ex = store.scratch("extract");
    extract(store, &stream, &ex);
    VariedSnapshot {
        root,
        stream,
        id,
        ex,
    }
}

pub(crate) struct VariedSnapshot {
    pub root: PathBuf,
    pub stream: Vec<u8>,
    pub id: String,
    pub ex: PathBuf,
}
