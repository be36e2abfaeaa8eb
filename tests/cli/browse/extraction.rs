//! The tree against GNU tar's extraction of the same stream: for each writer, for a hand-made
//! stream where member order matters, and the xattrs only libarchive's records carry.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::oracle::*;
use crate::common::*;
use crate::trees::*;

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
    let Snapped { root, stream, id } = snapshot_tree(&store, varied_tree, writer);
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
    check_against_extraction("gnu default", GNU_TAR, false, false);
}

#[test]
fn gnu_tar_posix_xattrs_sparse_tree_matches_extraction() {
    check_against_extraction("gnu posix xattrs sparse", GNU_POSIX_SPARSE, true, false);
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

/// A hard link's target loses what comes before its last `..`, as GNU tar has it ("Removing
/// leading `q/../' from hard link targets"): the link is made, to what is left.
#[test]
fn hardlink_targets_drop_what_comes_before_their_last_dotdot() {
    let store = TestStore::new();
    let mut s = Vec::new();
    member(&mut s, b"d/", b'5', b"", b"", 0o755);
    member(&mut s, b"d/a", b'0', b"linked thrice\n", b"", 0o644);
    member(&mut s, b"d/two", b'1', b"", b"../../d/./a", 0o644);
    member(&mut s, b"one", b'1', b"", b"q/../d/a", 0o644);
    end_of_archive(&mut s);
    let id = store.snapshot_bytes(&s, "vm");
    let (paths, listed) = assert_matches_extraction(&store, &id, &s, "dotdot targets", None);
    let by: BTreeMap<String, &Value> = paths.iter().map(|p| lossy(p)).zip(&listed).collect();
    for p in ["/d/a", "/one", "/d/two"] {
        assert_eq!(by[p]["nlink"], 3, "{p}");
    }
    assert_eq!(store.run(&["cat", &id, "/one"]).stdout, b"linked thrice\n");
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
