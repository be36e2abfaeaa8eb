//! `export --path P`: part of a snapshot's tree as a tar (restic's `dump`), against GNU tar's
//! extraction of the whole stream.

use std::path::Path;

use crate::browse::oracle::{
    archive, extract, varied_snapshot, VariedSnapshot, GNU_TAR_POSIX_XATTRS,
};
use crate::common::*;
use crate::oci::compare::{
    assert_comparison_catches_changes, assert_same_tree, assert_same_tree_with, Compare,
};

/// `export SNAP --path P --json -o FILE`, and the JSON it printed.
fn dump(store: &TestStore, snap: &str, path: &str, file: &Path) -> serde_json::Value {
    let args = [
        "export",
        snap,
        "--path",
        path,
        "--json",
        "-o",
        file.to_str().unwrap(),
    ];
    serde_json::from_str(&store.ok(&args)).unwrap()
}

#[test]
fn a_dumped_path_extracts_as_that_part_of_the_stream() {
    let store = TestStore::new();
    let VariedSnapshot { id, ex: full, .. } = varied_snapshot(&store, GNU_TAR_POSIX_XATTRS);

    // `long/` holds a hard link to usr/bin/tool, whose first name is outside it: in the dump
    // it is the file.
    for (path, rel) in [
        ("/", ""),
        ("/usr", "usr"),
        ("/long/", "long"),
        ("sparse", "sparse"),
    ] {
        let file = store.scratch(&format!("dump-{rel}.tar"));
        let report = dump(&store, &id, path, &file);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(report["path"], format!("/{rel}"), "{report}");
        assert_eq!(report["size"], bytes.len() as u64, "{report}");
        assert_eq!(report["sha256"], sha256_hex(&bytes), "{report}");
        let out = store.scratch(&format!("out-{rel}"));
        extract(&store, &bytes, &out);
        assert_same_tree(&full.join(rel), &out.join(rel));
        if rel == "long" {
            assert_comparison_catches_changes(&full.join(rel), &out.join(rel));
        }
        // Nothing but P and what is below it.
        let names = |d: &Path| std::fs::read_dir(d).unwrap().count();
        let want = if rel.is_empty() { names(&full) } else { 1 };
        assert_eq!(names(&out), want, "{rel}");
        // The same bytes every time.
        let again = dump(&store, &id, path, &file);
        assert_eq!(again["sha256"], report["sha256"]);
    }

    // A file alone, with its xattrs.
    let file = store.scratch("one.tar");
    dump(&store, &id, "/attrs/file", &file);
    let listing = String::from_utf8(sh(&format!("tar -tf '{}'", file.display()))).unwrap();
    assert_eq!(listing, "./attrs/file\n");
    let out = store.scratch("out-one");
    extract(&store, &std::fs::read(&file).unwrap(), &out);
    assert_eq!(
        std::fs::read(out.join("attrs/file")).unwrap(),
        std::fs::read(full.join("attrs/file")).unwrap()
    );
}

#[test]
fn a_path_the_snapshot_lacks_writes_nothing() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("etc/hostname"), b"vm\n");
    let id = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let file = store.scratch("out.tar");
    let out = store.run(&[
        "export",
        &id,
        "--path",
        "/nope",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nope"), "{}", stderr(&out));
    assert!(!file.exists());
    let out = store.run(&["export", &id, "--path", "/etc/hostname/x"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = store.run(&[
        "export", &id, "--path", "/etc", "--format", "oci", "-o", "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--format tar"), "{}", stderr(&out));
}

/// A hard-linked symlink keeps its group in a dump, as the `--dir` dialect links symlinks.
#[test]
fn hard_linked_symlinks_stay_linked() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::os::unix::fs::symlink("target", root.join("a/s1")).unwrap();
    std::fs::hard_link(root.join("a/s1"), root.join("a/s3")).unwrap();
    std::fs::hard_link(root.join("a/s1"), root.join("b/s2")).unwrap();
    let stream = archive(GNU_TAR_POSIX_XATTRS, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let full = store.scratch("full");
    extract(&store, &stream, &full);
    for (path, rel) in [("/a", "a"), ("/", "")] {
        let file = store.scratch(&format!("dump-{rel}.tar"));
        dump(&store, &id, path, &file);
        let out = store.scratch(&format!("out-{rel}"));
        extract(&store, &std::fs::read(&file).unwrap(), &out);
        // GNU tar leaves the time of the directory it extracts the original stream into
        // unset when a hard link there names a symlink: that one time is not compared.
        let cmp = Compare {
            root_mtime: !rel.is_empty(),
            ..Compare::default()
        };
        assert_same_tree_with(&full.join(rel), &out.join(rel), cmp, path);
    }
}
