//! `cellar diff` between two snapshots, against what differs between GNU tar's extractions of
//! the two streams.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::oracle::*;
use crate::common::*;
use crate::trees::*;

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
                let no_dir = mx.kind != "dir" && my.kind != "dir";
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
                    no_dir && mx.size.unwrap_or(0) != my.size.unwrap_or(0),
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
                    no_dir && mx.nlink.unwrap_or(1) != my.nlink.unwrap_or(1),
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
    write_file(&root.join("var/becomes-dir"), b"a file first\n");
    symlink("empty-dir", root.join("var/link-becomes-dir")).unwrap();
    // Names that sort between a directory and what is below it (`keep-b.txt` comes before
    // `keep/attrs.txt`, `keep0` after it): the walk gives them in path order.
    write_file(&root.join("keep-b.txt"), b"sibling\n");
    write_file(&root.join("keep0"), b"after\n");
    write_file(&root.join("gone-x"), b"x\n");
    write_file(&root.join("gone.d/inner"), b"i\n");
    let stream_a = archive(GNU_TAR_POSIX_XATTRS, &root);
    let a = store.snapshot_bytes(&stream_a, "vm");

    // Change the tree.
    write_file(&root.join("new/a.txt"), b"new a\n");
    write_file(&root.join("new/sub/b.bin"), &noise(5000, 7));
    write_file(&root.join("etc/added.conf"), b"added\n");
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.third")).unwrap();
    std::fs::remove_dir_all(root.join("gone")).unwrap();
    std::fs::remove_dir_all(root.join("gone.d")).unwrap();
    std::fs::remove_file(root.join("gone-x")).unwrap();
    write_file(&root.join("new-1.txt"), b"n1\n");
    write_file(&root.join("new.txt"), b"n\n");
    write_file(&root.join("new0/z"), b"z\n");
    rewrite_keeping_mtime(&root.join("keep-b.txt"), b"SIBLING\n");
    rewrite_keeping_mtime(&root.join("keep0"), b"AFTER\n");
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
    for was in ["var/becomes-dir", "var/link-becomes-dir"] {
        std::fs::remove_file(root.join(was)).unwrap();
        write_file(&root.join(was).join("inside"), b"in\n");
    }
    let stream_b = archive(GNU_TAR_POSIX_XATTRS, &root);
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
    // The other way, a directory's size and link count are not compared either.
    for became_dir in ["/var/becomes-dir", "/var/link-becomes-dir"] {
        let f = fields(became_dir);
        let f = f.as_array().unwrap();
        assert!(f.contains(&json!("type")), "{became_dir}: {f:?}");
        assert!(
            !f.contains(&json!("size")) && !f.contains(&json!("nlink")),
            "{became_dir}: {f:?}"
        );
    }

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
    let want_back_json: Vec<Value> = expected_diff(&eb, &ea)
        .iter()
        .map(|(p, change, fields)| json!({"path": lossy(p), "change": change, "fields": fields}))
        .collect();
    assert_eq!(
        store.json(&["diff", &b, &a, "--json"]),
        Value::Array(want_back_json),
        "diff --json B A"
    );

    // A snapshot against itself, and against an identical re-snapshot: nothing.
    assert_eq!(store.ok(&["diff", &a, &a]), "");
    assert_eq!(store.json(&["diff", &b, &b, "--json"]), json!([]));
    let b2 = store.snapshot_bytes(&stream_b, "other");
    assert_eq!(store.ok(&["diff", &b, &b2]), "");
}

/// One file stored sparse (cellar's `--dir`, GNU sparse 1.0) and dense (GNU tar without -S):
/// the same bytes, so no content change; a real change inside it still shows.
#[test]
fn the_same_bytes_stored_sparse_and_dense_are_not_a_content_change() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    std::fs::create_dir(&root).unwrap();
    let file = root.join("disk.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(b"data in the middle", 2 << 20).unwrap();
    }
    set_mtime(&file, 1_600_000_000);
    let sparse = store.ok(&[
        "snapshot",
        "--name",
        "sparse",
        "--dir",
        root.to_str().unwrap(),
    ]);
    // GNU tar without -S stores the file dense.
    let dense = |name: &str| {
        let stream = tar_stream(&[
            "tar",
            "--format=posix",
            "-cf",
            "-",
            "-C",
            root.to_str().unwrap(),
            ".",
        ]);
        store.snapshot_bytes(&stream, name)
    };
    // Whether diff says /disk.img's content changed from the sparse snapshot to `other`.
    let content_changed = |other: &str| {
        let changed = store.json(&["diff", sparse.trim(), other, "--json"]);
        changed.as_array().unwrap().iter().any(|c| {
            c["path"] == "/disk.img" && c["fields"].as_array().unwrap().contains(&json!("content"))
        })
    };
    assert!(!content_changed(&dense("dense")));

    // One byte changed (size and mtime kept): that is a content change.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(b"D", 2 << 20).unwrap();
    }
    set_mtime(&file, 1_600_000_000);
    assert!(content_changed(&dense("edited")));
}
