//! Browsing a snapshot as a tree: `cellar ls`, `cellar cat` and `cellar diff`, checked against
//! what `tar --numeric-owner --xattrs --xattrs-include='*' -xpf` extracts from the same stream
//! (the tests run as root, so the extraction keeps owners, modes, devices and xattrs).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::common::*;
use crate::trees::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Standard base64 (padding optional), for `path_bytes`.
fn b64decode(s: &str) -> Vec<u8> {
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
fn rfc3339(s: &str) -> (i64, u32) {
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
fn ls_b(name: &[u8]) -> String {
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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// xattr names of `p` (not following symlinks), sorted.
fn xattr_names(p: &Path) -> Vec<String> {
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
struct Meta {
    kind: String,
    /// Permission bits incl. setuid/setgid/sticky.
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    mtime_nsec: u32,
    /// Regular files and symlinks.
    size: Option<u64>,
    /// Everything but directories.
    nlink: Option<u64>,
    target: Option<String>,
    dev: Option<(u64, u64)>,
    xattrs: Vec<String>,
}

fn dev_major(d: u64) -> u64 {
    ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)
}

fn dev_minor(d: u64) -> u64 {
    (d & 0xff) | ((d >> 12) & !0xff)
}

/// The entry at `p` on disk, as the extraction left it.
fn disk_meta(p: &Path) -> Meta {
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

fn json_meta(v: &Value) -> Meta {
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
fn walk(root: &Path) -> Vec<(Vec<u8>, PathBuf)> {
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
fn extract(store: &TestStore, stream: &[u8], dir: &Path) {
    let file = store.scratch(&format!(
        "{}.tar",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&file, stream).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf '{}' -C '{}'",
        file.display(),
        dir.display()
    ));
}

fn ls_json(store: &TestStore, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["ls"];
    argv.extend_from_slice(args);
    argv.push("--json");
    store
        .json(&argv)
        .as_array()
        .unwrap_or_else(|| panic!("ls --json did not print an array"))
        .clone()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

/// Run `cellar ARGS` where some arguments are raw bytes.
fn run_os(store: &TestStore, args: &[&OsStr]) -> Output {
    let mut c = store.cmd(&[]);
    c.args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cellar")
}

/// Require exit status 2, nothing on stdout, and a message with every one of `needles`.
fn assert_usage_error(out: &Output, what: &str, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status; stderr:\n{err}"
    );
    assert!(out.stdout.is_empty(), "{what}: wrote to stdout");
    for n in needles {
        assert!(err.contains(n), "{what}: message should name {n:?}:\n{err}");
    }
}

/// A ustar header written by hand (uid/gid 0, fixed mtime), with a correct checksum.
fn ustar_header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    assert!(name.len() <= 100 && link.len() <= 100);
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"13000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Append one member (header and padded data) to a hand-made stream.
fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8], link: &[u8], mode: u32) {
    out.extend_from_slice(&ustar_header(name, typeflag, data.len() as u64, link, mode));
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn end_of_archive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

// ---------------------------------------------------------------------------------------------
// The tree against GNU tar's extraction, for each writer

/// Compare `ls -R --json /` of snapshot `id` with GNU tar's extraction of `stream`: the same
/// paths in depth-first name order, every attribute, and `cat` of every regular file. Returns
/// the listing (paths, entries). `dir_mtimes_from`: take directory mtimes from this tree, not
/// the extraction (see `check_against_extraction`).
fn assert_matches_extraction(
    store: &TestStore,
    id: &str,
    stream: &[u8],
    what: &str,
    dir_mtimes_from: Option<&Path>,
) -> (Vec<Vec<u8>>, Vec<Value>) {
    let dir = store.scratch("extracted");
    extract(store, stream, &dir);
    let disk = walk(&dir);
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

/// Snapshot `varied_tree` as written by `writer`, extract the same stream with GNU tar, and
/// compare `ls -R --json /`, `ls -R` and `cat` of every file with the extraction.
///
/// `dir_mtimes_from_source`: GNU tar restores a directory's mtime only if the directory's
/// members follow it directly; bsdtar writes all of a directory's subdirectories before their
/// contents, so GNU tar's extraction leaves those directories with the time of extraction. For
/// such a writer, directory mtimes are compared with the tree it read instead.
fn check_against_extraction(
    what: &str,
    writer: &[&str],
    carries_xattrs: bool,
    dir_mtimes_from_source: bool,
) {
    let store = TestStore::new();
    let root = store.scratch("tree");
    varied_tree(&root);
    let mut argv = writer.to_vec();
    argv.extend(["-C", root.to_str().unwrap(), "."]);
    let stream = tar_stream(&argv);
    let id = store.snapshot_bytes(&stream, "vm");
    let source = dir_mtimes_from_source.then_some(root.as_path());
    let (listed_paths, listed) = assert_matches_extraction(&store, &id, &stream, what, source);

    // The writer really carried the interesting things (else the comparison proves little).
    let by_path: BTreeMap<Vec<u8>, &Value> = listed_paths.iter().cloned().zip(&listed).collect();
    let get = |p: &str| -> &Value {
        by_path
            .get(p.as_bytes())
            .unwrap_or_else(|| panic!("{what}: {p} missing"))
    };
    assert_eq!(get("/dev/null")["type"], "char", "{what}");
    assert_eq!(
        (
            get("/dev/loop9")["dev_major"].clone(),
            get("/dev/loop9")["dev_minor"].clone()
        ),
        (json!(7), json!(9)),
        "{what}"
    );
    assert_eq!(get("/dev/fifo")["type"], "fifo", "{what}");
    assert_eq!(get("/modes/setuid")["mode"], 0o4755, "{what}");
    assert_eq!(get("/modes/sticky")["mode"], 0o1777, "{what}");
    assert_eq!(get("/etc/hostname")["nlink"], 2, "{what}");
    assert_eq!(get("/etc/hostname.hard")["nlink"], 2, "{what}");
    assert_eq!(get("/usr/bin/tool")["nlink"], 2, "{what}");
    assert_eq!(
        get("/etc/tool-link")["link_target"],
        "../usr/bin/tool",
        "{what}"
    );
    assert_eq!(get("/sparse/disk.img")["size"], 20u64 << 20, "{what}");
    if what != "busybox" {
        assert_eq!(get("/ids/big-owner")["uid"], 3_000_000, "{what}");
        assert_eq!(get("/ids/big-owner")["gid"], 4_000_000, "{what}");
        assert_eq!(
            rfc3339(get("/ids/far-future")["mtime"].as_str().unwrap()).0,
            10_000_000_000,
            "{what}"
        );
    }
    if carries_xattrs {
        assert_eq!(
            get("/attrs/file")["xattrs"],
            json!(["user.cellar.binary", "user.cellar.note"]),
            "{what}"
        );
    }
    let odd = by_path
        .keys()
        .find(|p| p.ends_with(b"bad-\xff\xfe-utf8"))
        .unwrap_or_else(|| panic!("{what}: the non-UTF-8 name is missing"));
    assert_eq!(odd, b"/names/bad-\xff\xfe-utf8", "{what}");

    // The plain listing: the same entries in the same order, escaped like `ls -b`.
    let text = store.ok(&["ls", &id, "-R"]);
    let want: Vec<String> = listed_paths
        .iter()
        .map(|p| format!("/{}", ls_b(&p[1..])))
        .collect();
    assert_eq!(lines(&text), want, "{what}: ls -R");

    // Extraction-independent: the stream itself is still exported bit-exact.
    assert!(store.export(&id) == stream, "{what}: export differs");
}

#[test]
fn gnu_tar_default_tree_matches_extraction() {
    check_against_extraction("gnu default", &["tar", "-cf", "-"], false, false);
}

#[test]
fn gnu_tar_posix_xattrs_sparse_tree_matches_extraction() {
    check_against_extraction(
        "gnu posix xattrs sparse",
        &[
            "tar",
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--sparse",
            "-cf",
            "-",
        ],
        true,
        false,
    );
}

#[test]
fn gnu_tar_other_sparse_formats_tree_matches_extraction() {
    check_against_extraction(
        "gnu old sparse",
        &["tar", "--format=gnu", "--sparse", "-cf", "-"],
        false,
        false,
    );
    check_against_extraction(
        "pax sparse 1.0",
        &[
            "tar",
            "--format=posix",
            "--sparse",
            "--sparse-version=1.0",
            "-cf",
            "-",
        ],
        false,
        false,
    );
}

#[test]
fn bsdtar_pax_tree_matches_extraction() {
    check_against_extraction(
        "bsdtar pax",
        &["bsdtar", "--format", "pax", "-cf", "-"],
        true,
        true,
    );
}

#[test]
fn busybox_tar_tree_matches_extraction() {
    check_against_extraction("busybox", &["busybox", "tar", "-cf", "-"], false, false);
}

/// A hand-made stream where order matters: hardlinks (to a hardlink, to a symlink, to a file
/// a later member replaces), a directory named twice, a file replaced by a directory. The
/// snapshot's tree is what GNU tar extracts.
#[test]
fn stream_order_decides_the_tree() {
    let store = TestStore::new();
    let mut s = Vec::new();
    member(&mut s, b"./", b'5', b"", b"", 0o755);
    member(&mut s, b"d/", b'5', b"", b"", 0o755);
    member(&mut s, b"d/a", b'0', b"shared by three names\n", b"", 0o640);
    member(&mut s, b"d/b", b'1', b"", b"d/a", 0o640);
    member(&mut s, b"e/", b'5', b"", b"", 0o755);
    member(&mut s, b"e/c", b'1', b"", b"d/b", 0o640);
    member(&mut s, b"x", b'0', b"one\n", b"", 0o644);
    member(&mut s, b"y", b'1', b"", b"x", 0o644);
    member(&mut s, b"x", b'0', b"two, longer\n", b"", 0o600);
    member(&mut s, b"s", b'2', b"", b"d/a", 0o777);
    member(&mut s, b"s2", b'1', b"", b"s", 0o777);
    member(&mut s, b"f", b'0', b"a file first\n", b"", 0o644);
    member(&mut s, b"f/", b'5', b"", b"", 0o711);
    member(&mut s, b"f/g", b'0', b"below\n", b"", 0o644);
    member(&mut s, b"d/", b'5', b"", b"", 0o700);
    end_of_archive(&mut s);
    let id = store.snapshot_bytes(&s, "vm");
    let (paths, listed) = assert_matches_extraction(&store, &id, &s, "hand-made", None);

    let by: BTreeMap<String, &Value> = paths.iter().map(|p| lossy(p)).zip(&listed).collect();
    for p in ["/d/a", "/d/b", "/e/c"] {
        assert_eq!(by[p]["nlink"], 3, "{p}");
    }
    assert_eq!(by["/x"]["nlink"], 1);
    assert_eq!(by["/y"]["nlink"], 1);
    assert_eq!(by["/s"]["nlink"], 2);
    assert_eq!(by["/s2"]["type"], "symlink");
    assert_eq!(
        by["/d"]["mode"], 0o700,
        "the last member for a directory wins"
    );
    assert_eq!(by["/f"]["type"], "dir");
    assert_eq!(
        store.run(&["cat", &id, "/e/c"]).stdout,
        b"shared by three names\n"
    );
    assert_eq!(store.run(&["cat", &id, "/x"]).stdout, b"two, longer\n");
    assert_eq!(store.run(&["cat", &id, "/y"]).stdout, b"one\n");
    assert!(store.export(&id) == s);
}

/// xattrs that only libarchive's records carry (GNU tar ignores them on extraction, so no
/// oracle): names are %-decoded, values base64.
#[test]
fn libarchive_only_xattrs_are_read() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("f"), b"x\n");
    set_xattr(&root.join("f"), "user.only=libarchive", b"v");
    let stream = tar_stream(&[
        "bsdtar",
        "--format",
        "pax",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        "f",
    ]);
    // Drop the SCHILY copy of the record (libarchive writes it with the name %-encoded too),
    // keeping the stream well-formed: rename its key to one nothing reads, same length.
    let mut stream = stream;
    let key = b"SCHILY.xattr.user.only%3Dlibarchive=v";
    let pos = stream
        .windows(key.len())
        .position(|w| w == key)
        .expect("bsdtar wrote a SCHILY.xattr record");
    stream[pos..pos + 6].copy_from_slice(b"XXXXXX");
    assert!(
        stream.windows(17).any(|w| w == b"LIBARCHIVE.xattr."),
        "bsdtar wrote a LIBARCHIVE.xattr record"
    );
    let id = store.snapshot_bytes(&stream, "vm");
    let entries = ls_json(&store, &[&id, "/f"]);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["xattrs"], json!(["user.only=libarchive"]));
}

// ---------------------------------------------------------------------------------------------
// ls

#[test]
fn ls_lists_one_directory_or_one_entry() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    varied_tree(&root);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", root.to_str().unwrap(), "."]);
    let id = store.snapshot_bytes(&stream, "vm");

    // The root (default and explicit), and a directory: its entries only, in name order.
    let children = |rel: &str| -> Vec<String> {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("/{rel}")
        };
        names
            .iter()
            .map(|n| format!("{prefix}/{}", ls_b(n)))
            .collect()
    };
    assert_eq!(lines(&store.ok(&["ls", &id])), children(""), "ls SNAP");
    assert_eq!(
        lines(&store.ok(&["ls", &id, "/"])),
        children(""),
        "ls SNAP /"
    );
    assert_eq!(lines(&store.ok(&["ls", &id, "/etc"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "/etc/"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "etc"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "/names"])), children("names"));
    assert_eq!(
        lines(&store.ok(&["ls", &id, "/usr"])),
        vec!["/usr/bin", "/usr/share"],
        "no -R: nothing below the subdirectories"
    );
    assert_eq!(
        store.ok(&["ls", &id, "/var/empty-dir"]),
        "",
        "an empty directory"
    );
    assert_eq!(
        ls_json(&store, &[&id, "/var/empty-dir"]),
        Vec::<Value>::new()
    );

    // -R from a subdirectory: everything below it, depth first.
    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R", "/usr"])),
        vec![
            "/usr/bin",
            "/usr/bin/tool",
            "/usr/share",
            "/usr/share/doc",
            "/usr/share/doc/readme.txt"
        ]
    );

    // A file, a symlink, a device: that entry.
    assert_eq!(store.ok(&["ls", &id, "/etc/hostname"]), "/etc/hostname\n");
    assert_eq!(store.ok(&["ls", &id, "/etc/tool-link"]), "/etc/tool-link\n");
    assert_eq!(store.ok(&["ls", &id, "-R", "/dev/null"]), "/dev/null\n");
    let one = ls_json(&store, &[&id, "/etc/tool-link"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["path"], "/etc/tool-link");
    assert_eq!(one[0]["type"], "symlink");
    assert_eq!(one[0]["link_target"], "../usr/bin/tool");
    assert_eq!(one[0]["size"], "../usr/bin/tool".len());

    let f = &ls_json(&store, &[&id, "/ids/far-future"])[0];
    assert_eq!(f["mtime"], "2286-11-20T17:46:40Z");
    assert_eq!(f["size"], 16);
    assert_eq!(f["type"], "file");
    assert_eq!(f["mode"], 0o644);
    let big = &ls_json(&store, &[&id, "/ids/big-owner"])[0];
    assert_eq!(
        (big["uid"].clone(), big["gid"].clone()),
        (json!(3_000_000), json!(4_000_000))
    );
    let dev = &ls_json(&store, &[&id, "/dev/null"])[0];
    assert_eq!(dev["type"], "char");
    assert_eq!(
        (dev["dev_major"].clone(), dev["dev_minor"].clone()),
        (json!(1), json!(3))
    );
    let null_mode = std::fs::symlink_metadata(root.join("dev/null"))
        .unwrap()
        .mode()
        & 0o7777;
    assert_eq!(dev["mode"], null_mode);
    let blk = &ls_json(&store, &[&id, "/dev/loop9"])[0];
    assert_eq!(blk["type"], "block");
    // A directory PATH lists what is in it, not the directory itself.
    assert_eq!(
        ls_json(&store, &[&id, "/modes/sticky"]),
        Vec::<Value>::new()
    );
    let modes = ls_json(&store, &[&id, "/modes"]);
    let paths: Vec<&str> = modes.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/modes/setuid", "/modes/sticky"]);
    assert_eq!(modes[0]["mode"], 0o4755);
    assert_eq!(modes[1]["type"], "dir");
    assert_eq!(modes[1]["mode"], 0o1777);

    // The non-UTF-8 name: escaped in text, lossy `path` plus exact `path_bytes` in JSON.
    let names = ls_json(&store, &[&id, "/names"]);
    let odd = names
        .iter()
        .find(|e| e.get("path_bytes").is_some())
        .expect("an entry with path_bytes");
    assert_eq!(
        b64decode(odd["path_bytes"].as_str().unwrap()),
        b"/names/bad-\xff\xfe-utf8"
    );
    assert_eq!(odd["path"], "/names/bad-\u{fffd}\u{fffd}-utf8");
    assert_eq!(
        names
            .iter()
            .filter(|e| e.get("path_bytes").is_some())
            .count(),
        1,
        "path_bytes only where the name is not UTF-8"
    );
    let text = store.ok(&["ls", &id, "/names"]);
    for want in [
        "/names/bad-\\377\\376-utf8",
        "/names/tab\\tand\\ space",
        "/names/new\\nline",
        "/names/ünïcødé-日本語.txt",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "ls /names should show {want:?}:\n{text}"
        );
    }
}

/// `ls -l` against GNU `ls -lnd` of the extracted tree: mode string, link count (non
/// directories), numeric owners, size (or device numbers), time, and `-> target`.
#[test]
fn ls_long_looks_like_ls_l() {
    require("ls");
    let store = TestStore::new();
    let root = store.scratch("tree");
    varied_tree(&root);
    let stream = tar_stream(&[
        "tar",
        "--format=posix",
        "--xattrs",
        "--xattrs-include=*",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    let id = store.snapshot_bytes(&stream, "vm");
    let dir = store.scratch("extracted");
    extract(&store, &stream, &dir);

    let long = store.ok(&["ls", &id, "-R", "-l"]);
    let long: Vec<&str> = long.lines().collect();
    let disk = walk(&dir);
    assert_eq!(
        long.len(),
        disk.len(),
        "one -l line per entry:\n{}",
        long.join("\n")
    );

    for (line, (path, on_disk)) in long.iter().zip(&disk) {
        let meta = disk_meta(on_disk);
        let out = std::process::Command::new("ls")
            .args(["-lnd", "-b", "--time-style=+%Y-%m-%d %H:%M", "--"])
            .arg(on_disk)
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert!(out.status.success(), "ls -lnd {}", on_disk.display());
        let reference = String::from_utf8(out.stdout).unwrap();
        let reference = reference.trim_end();
        // Columns before the name: 7, or 8 for devices ("MAJOR, MINOR").
        let columns = if meta.dev.is_some() { 8 } else { 7 };
        let ours: Vec<&str> = line.split_whitespace().collect();
        let theirs: Vec<&str> = reference.split_whitespace().collect();
        let shown = lossy(path);
        assert!(ours.len() > columns, "{shown}: short line {line:?}");
        // Mode string (GNU ls may mark an SELinux context or ACL with '.'/'+').
        assert_eq!(
            ours[0],
            theirs[0].trim_end_matches(['.', '+']),
            "{shown}: mode string in {line:?} vs {reference:?}"
        );
        if meta.kind != "dir" {
            assert_eq!(
                ours[1], theirs[1],
                "{shown}: link count in {line:?} vs {reference:?}"
            );
            assert_eq!(
                ours[4..columns - 2],
                theirs[4..columns - 2],
                "{shown}: size / device in {line:?} vs {reference:?}"
            );
        }
        assert_eq!(
            ours[2..4],
            theirs[2..4],
            "{shown}: owners in {line:?} vs {reference:?}"
        );
        assert_eq!(
            ours[columns - 2..columns],
            theirs[columns - 2..columns],
            "{shown}: time in {line:?} vs {reference:?}"
        );
        // The name, escaped like `ls -b`, then `-> target` for symlinks.
        let name_and_target = ours[columns..].join(" ");
        let mut want = format!("/{}", ls_b(&path[1..]));
        if let Some((_, target)) = reference.split_once(" -> ") {
            want.push_str(" -> ");
            want.push_str(target);
        }
        assert_eq!(name_and_target, want, "{shown}: name in {line:?}");
    }

    // And literally, the cases the issue names.
    let find = |suffix: &str| -> &str {
        long.iter()
            .find(|l| l.ends_with(suffix))
            .unwrap_or_else(|| panic!("no -l line ends with {suffix:?}"))
    };
    assert!(find(" /modes/setuid").starts_with("-rwsr-xr-x "));
    assert!(find(" /modes/sticky").starts_with("drwxrwxrwt "));
    assert!(find(" /etc/tool-link -> ../usr/bin/tool").starts_with("lrwxrwxrwx "));
    assert!(find(" /dev/null").starts_with('c'));
    assert!(find(" /dev/loop9").starts_with('b'));
    assert!(find(" /dev/fifo").starts_with('p'));
    let big = find(" /ids/big-owner");
    assert!(
        big.contains(" 3000000 ") && big.contains(" 4000000 "),
        "{big}"
    );
    find(" /names/tab\\tand\\ space");
    find(" /names/bad-\\377\\376-utf8");
    let long_target = format!(" /long/long-target-link -> {}/target", "x".repeat(150));
    find(&long_target);

    // -l on a single entry.
    let one = store.ok(&["ls", &id, "-l", "/etc/hostname"]);
    assert!(
        one.starts_with("-rw-r--r-- ") && one.trim_end().ends_with(" /etc/hostname"),
        "{one}"
    );
    assert_eq!(one.lines().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// cat

/// A path given as raw bytes reaches a file whose name is not UTF-8, as `ls` and `cat` on a
/// filesystem would.
#[test]
fn paths_with_odd_bytes_are_reachable() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    varied_tree(&root);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", root.to_str().unwrap(), "."]);
    let id = store.snapshot_bytes(&stream, "vm");

    let out = store.run(&["cat", &id, "/names/tab\tand space"]);
    assert_success(&out, &["cat", "tab and space"]);
    assert_eq!(out.stdout, b"tab\n");
    let out = store.run(&["cat", &id, "/names/new\nline"]);
    assert_success(&out, &["cat", "new\\nline"]);
    assert_eq!(out.stdout, b"newline\n");
    let out = store.run(&["cat", &id, "/names/ünïcødé-日本語.txt"]);
    assert_success(&out, &["cat", "unicode"]);
    assert_eq!(out.stdout, b"unicode\n");

    let odd = OsStr::from_bytes(b"/names/bad-\xff\xfe-utf8");
    let out = run_os(&store, &[OsStr::new("cat"), OsStr::new(&id), odd]);
    assert!(
        out.status.success(),
        "cat of a non-UTF-8 path failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(out.stdout, b"not utf-8\n");
    let out = run_os(&store, &[OsStr::new("ls"), OsStr::new(&id), odd]);
    assert!(
        out.status.success(),
        "ls of a non-UTF-8 path failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(out.stdout, b"/names/bad-\\377\\376-utf8\n");
}

#[test]
fn cat_gives_files_and_hardlinks() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", root.to_str().unwrap(), "."]);
    let id = store.snapshot_bytes(&stream, "vm");
    assert_eq!(store.run(&["cat", &id, "/etc/hostname"]).stdout, b"vm1\n");
    assert_eq!(
        store.run(&["cat", &id, "etc/hostname.hard"]).stdout,
        b"vm1\n"
    );
    let empty = store.run(&["cat", &id, "/etc/empty"]);
    assert_success(&empty, &["cat", "/etc/empty"]);
    assert!(empty.stdout.is_empty());
    let tool = store.run(&["cat", &id, "/usr/bin/tool"]);
    assert!(tool.stdout == noise(300_000, 1), "cat /usr/bin/tool");
    let readme = store.run(&["cat", &id, "/usr/share/doc/readme.txt"]);
    assert!(readme.stdout == text(70_000, 2), "cat readme.txt");
}

// ---------------------------------------------------------------------------------------------
// diff

/// What `diff` should say, computed from two extractions.
fn expected_diff(a: &Path, b: &Path) -> Vec<(Vec<u8>, &'static str, Vec<&'static str>)> {
    let mut ma: BTreeMap<Vec<u8>, PathBuf> = walk(a).into_iter().collect();
    let mut mb: BTreeMap<Vec<u8>, PathBuf> = walk(b).into_iter().collect();
    // The root itself, shown as `/`.
    ma.insert(b"/".to_vec(), a.to_path_buf());
    mb.insert(b"/".to_vec(), b.to_path_buf());
    let mut out = Vec::new();
    let all: BTreeSet<&Vec<u8>> = ma.keys().chain(mb.keys()).collect();
    for p in all {
        match (ma.get(p), mb.get(p)) {
            (Some(_), None) => out.push((p.clone(), "removed", vec![])),
            (None, Some(_)) => out.push((p.clone(), "added", vec![])),
            (Some(x), Some(y)) => {
                let (mx, my) = (disk_meta(x), disk_meta(y));
                let (sx, sy) = (
                    std::fs::symlink_metadata(x).unwrap(),
                    std::fs::symlink_metadata(y).unwrap(),
                );
                let mut f = Vec::new();
                let mut check = |name, differs: bool| {
                    if differs {
                        f.push(name)
                    }
                };
                check("type", mx.kind != my.kind);
                check("mode", mx.mode != my.mode);
                check("uid", mx.uid != my.uid);
                check("gid", mx.gid != my.gid);
                check(
                    "mtime",
                    (sx.mtime(), sx.mtime_nsec()) != (sy.mtime(), sy.mtime_nsec()),
                );
                check(
                    "size",
                    mx.kind != "dir" && mx.size.unwrap_or(0) != my.size.unwrap_or(0),
                );
                check(
                    "content",
                    mx.kind == "file"
                        && my.kind == "file"
                        && std::fs::read(x).unwrap() != std::fs::read(y).unwrap(),
                );
                check("link_target", mx.target != my.target);
                check("device", mx.dev != my.dev);
                check("xattrs", mx.xattrs != my.xattrs);
                check(
                    "nlink",
                    mx.kind != "dir" && mx.nlink.unwrap_or(1) != my.nlink.unwrap_or(1),
                );
                if !f.is_empty() {
                    out.push((p.clone(), "modified", f));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Reset a file's content keeping its mtime (to the nanosecond).
fn rewrite_keeping_mtime(path: &Path, data: &[u8]) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(before)
        .unwrap();
}

#[test]
fn diff_lists_what_changed_between_extractions() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    write_file(&root.join("keep/touched.txt"), b"touch me\n");
    set_mtime(&root.join("keep/touched.txt"), 1_500_000_000);
    write_file(&root.join("keep/attrs.txt"), b"attrs\n");
    write_file(&root.join("gone/sub/deeper/x"), b"x\n");
    write_file(&root.join("gone/y"), b"y\n");
    let writer = |root: &Path| {
        tar_stream(&[
            "tar",
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "-cf",
            "-",
            "-C",
            root.to_str().unwrap(),
            ".",
        ])
    };
    let stream_a = writer(&root);
    let a = store.snapshot_bytes(&stream_a, "vm");

    // Change the tree.
    write_file(&root.join("new/a.txt"), b"new a\n");
    write_file(&root.join("new/sub/b.bin"), &noise(5000, 7));
    write_file(&root.join("etc/added.conf"), b"added\n");
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.third")).unwrap();
    std::fs::remove_dir_all(root.join("gone")).unwrap();
    let mut tool = noise(300_000, 1);
    tool[150_000] ^= 0xFF;
    rewrite_keeping_mtime(&root.join("usr/bin/tool"), &tool);
    std::fs::set_permissions(
        root.join("etc/empty"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(root.join("etc/tool-link")).unwrap();
    symlink("../usr/bin/other-tool", root.join("etc/tool-link")).unwrap();
    set_mtime(&root.join("keep/touched.txt"), 1_600_000_000);
    set_xattr(&root.join("keep/attrs.txt"), "user.added", b"1");
    std::fs::remove_dir(root.join("var/empty-dir")).unwrap();
    write_file(&root.join("var/empty-dir"), b"now a file\n");
    let stream_b = writer(&root);
    let b = store.snapshot_bytes(&stream_b, "vm");

    let (ea, eb) = (store.scratch("a"), store.scratch("b"));
    extract(&store, &stream_a, &ea);
    extract(&store, &stream_b, &eb);
    let want = expected_diff(&ea, &eb);

    // Text: one sorted line per changed path.
    let text = store.ok(&["diff", &a, &b]);
    let want_text: Vec<String> = want
        .iter()
        .map(|(p, change, _)| {
            let sign = match *change {
                "added" => "+",
                "removed" => "-",
                _ => "M",
            };
            format!("{sign} {}", lossy(p))
        })
        .collect();
    assert_eq!(lines(&text), want_text, "diff A B");
    let paths: Vec<&str> = text.lines().map(|l| &l[2..]).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "diff output is sorted");

    // The changes the test made are all there, as the issue describes them.
    for line in [
        "+ /new",
        "+ /new/a.txt",
        "+ /new/sub",
        "+ /new/sub/b.bin",
        "+ /etc/added.conf",
        "+ /etc/hostname.third",
        "- /gone",
        "- /gone/sub",
        "- /gone/sub/deeper",
        "- /gone/sub/deeper/x",
        "- /gone/y",
        "M /usr/bin/tool",
        "M /etc/empty",
        "M /etc/tool-link",
        "M /keep/touched.txt",
        "M /keep/attrs.txt",
        "M /etc/hostname",
        "M /etc/hostname.hard",
        "M /var/empty-dir",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "diff should list {line:?}:\n{text}"
        );
    }
    for untouched in ["/usr/bin", "/keep"] {
        assert!(
            !text.lines().any(|l| l.ends_with(&format!(" {untouched}"))),
            "{untouched} did not change:\n{text}"
        );
    }

    // JSON: which fields.
    let got = store.json(&["diff", &a, &b, "--json"]);
    let want_json: Vec<Value> = want
        .iter()
        .map(|(p, change, fields)| json!({"path": lossy(p), "change": change, "fields": fields}))
        .collect();
    assert_eq!(got, Value::Array(want_json.clone()), "diff --json A B");
    let fields = |path: &str| -> Value {
        got.as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in diff --json"))["fields"]
            .clone()
    };
    assert_eq!(fields("/usr/bin/tool"), json!(["content"]));
    assert_eq!(fields("/etc/empty"), json!(["mode"]));
    assert_eq!(fields("/keep/touched.txt"), json!(["mtime"]));
    assert_eq!(fields("/keep/attrs.txt"), json!(["xattrs"]));
    assert_eq!(fields("/etc/hostname"), json!(["nlink"]));
    let link = fields("/etc/tool-link");
    assert!(
        link.as_array().unwrap().contains(&json!("link_target")),
        "{link}"
    );
    assert!(
        fields("/var/empty-dir")
            .as_array()
            .unwrap()
            .contains(&json!("type")),
        "a directory became a file"
    );

    // The other way round: added and removed swap.
    let back = store.ok(&["diff", &b, &a]);
    let want_back: Vec<String> = want_text
        .iter()
        .map(|l| match &l[..2] {
            "+ " => format!("- {}", &l[2..]),
            "- " => format!("+ {}", &l[2..]),
            _ => l.clone(),
        })
        .collect();
    assert_eq!(lines(&back), want_back, "diff B A");

    // A snapshot against itself, and against an identical re-snapshot: nothing.
    assert_eq!(store.ok(&["diff", &a, &a]), "");
    assert_eq!(store.json(&["diff", &b, &b, "--json"]), json!([]));
    let b2 = store.snapshot_bytes(&stream_b, "other");
    assert_eq!(store.ok(&["diff", &b, &b2]), "");
}

// ---------------------------------------------------------------------------------------------
// Hostile and odd streams

#[test]
fn hostile_names_stay_inside_the_tree() {
    let store = TestStore::new();
    let mut s = Vec::new();
    member(&mut s, b"/abs/file", b'0', b"abs\n", b"", 0o644);
    member(&mut s, b"../evil", b'0', b"evil\n", b"", 0o644);
    member(&mut s, b"a/../../b", b'0', b"b\n", b"", 0o644);
    member(&mut s, b"link", b'2', b"", b"/etc", 0o777);
    member(
        &mut s,
        b"link/passwd",
        b'0',
        b"root::0:0::/:/bin/sh\n",
        b"",
        0o644,
    );
    member(&mut s, b"ok", b'0', b"ok\n", b"", 0o600);
    end_of_archive(&mut s);

    let out = store.run_stdin(&["snapshot", "--name", "vm", "-"], &s);
    assert_success(&out, &["snapshot", "(hostile names)"]);
    let id = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    let err = stderr(&out);
    for name in ["../evil", "a/../../b"] {
        assert!(
            err.lines()
                .any(|l| l.contains("warning") && l.contains(name)),
            "snapshot should warn about {name:?}:\n{err}"
        );
    }
    assert!(store.export(&id) == s, "export is still bit-exact");

    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R"])),
        vec!["/abs", "/abs/file", "/link", "/ok"],
        "'..' members are left out; nothing is reachable through the symlink"
    );
    assert_eq!(store.run(&["cat", &id, "/abs/file"]).stdout, b"abs\n");
    assert_eq!(store.run(&["cat", &id, "abs/file"]).stdout, b"abs\n");
    let link = &ls_json(&store, &[&id, "/link"])[0];
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link_target"], "/etc");
    assert!(store
        .ok(&["ls", &id, "-l", "/link"])
        .trim_end()
        .ends_with(" /link -> /etc"));

    let out = store.run(&["ls", &id, "/link/passwd"]);
    assert_usage_error(&out, "ls /link/passwd", &["/link"]);
    let out = store.run(&["cat", &id, "/link/passwd"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "cat /link/passwd: {}",
        stderr(&out)
    );
    for p in ["/evil", "/b", "/a", "/../evil"] {
        let out = store.run(&["ls", &id, p]);
        assert_eq!(out.status.code(), Some(2), "ls {p}: {}", stderr(&out));
    }
}

/// `tar -rf` appends a second `f`: the last member for a path wins, as extraction has it.
#[test]
fn the_last_member_for_a_path_wins() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("d/f"), b"first version\n");
    write_file(&root.join("g"), b"g\n");
    let archive = store.scratch("appended.tar");
    let (r, a) = (root.display(), archive.display());
    sh(&format!("tar -cf '{a}' -C '{r}' d g"));
    std::fs::write(root.join("d/f"), b"second, longer version\n").unwrap();
    std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    sh(&format!("tar -rf '{a}' -C '{r}' d/f"));
    let stream = std::fs::read(&archive).unwrap();
    let id = store.snapshot_bytes(&stream, "vm");

    let out = store.run(&["cat", &id, "/d/f"]);
    assert_success(&out, &["cat", "/d/f"]);
    assert_eq!(out.stdout, b"second, longer version\n");
    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R"])),
        vec!["/d", "/d/f", "/g"]
    );
    let f = &ls_json(&store, &[&id, "/d/f"])[0];
    assert_eq!(f["size"], 23);
    assert_eq!(f["mode"], 0o640);
    assert_eq!(f["nlink"], 1);

    let dir = store.scratch("extracted");
    extract(&store, &stream, &dir);
    assert_eq!(
        std::fs::read(dir.join("d/f")).unwrap(),
        b"second, longer version\n"
    );
    assert_eq!(json_meta(f), disk_meta(&dir.join("d/f")));
    assert!(store.export(&id) == stream);
}

/// A member whose parent directories the stream never names: they exist, 0755, root-owned.
#[test]
fn implicit_parent_directories() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("usr/bin/tool"), b"#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::lchown(root.join("usr/bin/tool"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(root.join("usr"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(root.join("usr"), Some(42), Some(42)).unwrap();
    let stream = tar_stream(&[
        "tar",
        "--no-recursion",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        "usr/bin/tool",
    ]);
    let id = store.snapshot_bytes(&stream, "vm");

    let all = ls_json(&store, &[&id, "-R", "/"]);
    let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/usr", "/usr/bin", "/usr/bin/tool"]);
    for e in &all[..2] {
        assert_eq!(e["type"], "dir", "{e}");
        assert_eq!(e["mode"], 0o755, "{e}");
        assert_eq!(e["uid"], 0, "{e}");
        assert_eq!(e["gid"], 0, "{e}");
    }
    let tool = &all[2];
    assert_eq!(tool["mode"], 0o700);
    assert_eq!(
        (tool["uid"].clone(), tool["gid"].clone()),
        (json!(1234), json!(5678))
    );
    assert_eq!(
        store.run(&["cat", &id, "/usr/bin/tool"]).stdout,
        b"#!/bin/sh\n"
    );
    let long = store.ok(&["ls", &id, "-l"]);
    assert!(long.starts_with("drwxr-xr-x "), "{long}");
    assert!(long.trim_end().ends_with(" /usr"), "{long}");

    // The same stream snapshotted again (a second later) is the same tree: what the implicit
    // directories get does not depend on when the snapshot was taken.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = store.snapshot_bytes(&stream, "vm");
    assert_eq!(
        store.ok(&["diff", &id, &again]),
        "",
        "diff of two snapshots of one stream"
    );
}

// ---------------------------------------------------------------------------------------------
// Shared metadata

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 100;

/// 100 000 small files in 1000 directories (each with its own member, the root too), in a
/// hand-made ustar stream. Files whose index is in `changed` get other bytes of the same length.
fn many_files_stream(changed: &[usize]) -> Vec<u8> {
    let mut s = Vec::with_capacity(DIRS * FILES_PER_DIR * 1024 + DIRS * 512 + 2048);
    member(&mut s, b"./", b'5', b"", b"", 0o755);
    for d in 0..DIRS {
        member(
            &mut s,
            format!("d{d:04}/").as_bytes(),
            b'5',
            b"",
            b"",
            0o755,
        );
        for f in 0..FILES_PER_DIR {
            let i = d * FILES_PER_DIR + f;
            let tag = if changed.contains(&i) {
                "CHANGED"
            } else {
                "content"
            };
            let data = format!("file {i:06} {tag}\n");
            member(
                &mut s,
                format!("d{d:04}/f{f:03}").as_bytes(),
                b'0',
                data.as_bytes(),
                b"",
                0o644,
            );
        }
    }
    end_of_archive(&mut s);
    s
}

#[test]
fn unchanged_directories_are_shared_between_snapshots() {
    let store = TestStore::new();
    let started = std::time::Instant::now();
    let base = many_files_stream(&[]);
    let file = store.scratch("many.tar");
    std::fs::write(&file, &base).unwrap();
    let snap = |path: &Path| -> String {
        store
            .ok(&["snapshot", "--name", "many", path.to_str().unwrap()])
            .trim()
            .to_string()
    };
    let a = snap(&file);
    let count = ls_json(&store, &[&a, "/d0999"]).len();
    assert_eq!(count, FILES_PER_DIR);

    let b = snap(&file);
    let shown = store.json(&["show", &b, "--json"]);
    let added = shown["added_bytes"].as_u64().expect("added_bytes");
    assert!(
        added < 64 << 10,
        "the identical stream again added {added} bytes"
    );
    assert_eq!(store.ok(&["diff", &a, &b]), "");

    let changed = [7, 12_345, 50_000, 77_777, 99_999];
    std::fs::write(&file, many_files_stream(&changed)).unwrap();
    let c = snap(&file);
    let shown = store.json(&["show", &c, "--json"]);
    let added = shown["added_bytes"].as_u64().expect("added_bytes");
    assert!(added < 256 << 10, "5 changed files added {added} bytes");
    let want: Vec<String> = changed
        .iter()
        .map(|i| format!("M /d{:04}/f{:03}", i / FILES_PER_DIR, i % FILES_PER_DIR))
        .collect();
    assert_eq!(lines(&store.ok(&["diff", &b, &c])), want);
    let got = store.json(&["diff", &b, &c, "--json"]);
    for change in got.as_array().unwrap() {
        assert_eq!(change["change"], "modified");
        assert_eq!(change["fields"], json!(["content"]), "{change}");
    }
    assert_eq!(
        store.run(&["cat", &c, "/d0123/f045"]).stdout,
        b"file 012345 CHANGED\n"
    );
    eprintln!("shared metadata test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Bad arguments

#[test]
fn bad_paths_and_snapshots_exit_2() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", root.to_str().unwrap(), "."]);
    let id = store.snapshot_bytes(&stream, "vm");

    let out = store.run(&["ls", &id, "/no/such"]);
    assert_usage_error(&out, "ls /no/such", &["/no", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/nosuch"]);
    assert_usage_error(&out, "ls /etc/nosuch", &["/etc/nosuch", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/hostname/x"]);
    assert_usage_error(
        &out,
        "ls /etc/hostname/x",
        &["/etc/hostname", "not a directory"],
    );
    let out = store.run(&["cat", &id, "/etc/hostname/x"]);
    assert_usage_error(
        &out,
        "cat /etc/hostname/x",
        &["/etc/hostname", "not a directory"],
    );
    let out = store.run(&["cat", &id, "/etc"]);
    assert_usage_error(&out, "cat /etc", &["/etc", "directory"]);
    let out = store.run(&["cat", &id, "/"]);
    assert_usage_error(&out, "cat /", &["directory"]);
    let out = store.run(&["cat", &id, "/etc/tool-link"]);
    assert_usage_error(&out, "cat /etc/tool-link", &["symlink", "../usr/bin/tool"]);
    let out = store.run(&["cat", &id, "/etc/missing"]);
    assert_usage_error(&out, "cat /etc/missing", &["/etc/missing", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/../etc"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "'..' in a path: {}",
        stderr(&out)
    );

    let out = store.run(&["ls", "nosuch-snap"]);
    assert_usage_error(&out, "ls nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["cat", "nosuch-snap", "/etc/hostname"]);
    assert_usage_error(&out, "cat nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["diff", &id, "nosuch-snap"]);
    assert_usage_error(&out, "diff SNAP nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["cat", &id]);
    assert_eq!(out.status.code(), Some(2), "cat without a path");
}
