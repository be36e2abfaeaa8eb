//! The mount lists a directory in the order its stream had it, which is where its data is
//! stored: a reader going through the listing (`tar -c`, `cp -r`) reads the store's frames
//! through instead of jumping between them. A stream in name order lists by name.

use std::fs;
use std::path::Path;

use super::guard::*;
use crate::common::*;

/// Names of `dir` in the order `readdir` gives them.
fn readdir_order(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Member names of a tar stream, in order, without the leading `./` GNU tar writes.
fn members(stream: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("s.tar");
    fs::write(&tar, stream).unwrap();
    let listed = sh(&format!("tar -tf '{}'", tar.display()));
    String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

#[test]
fn a_directory_lists_in_the_order_of_its_stream_and_tar_of_the_mount_keeps_it() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    // Named on tar's command line in this order, neither by name nor the disk's.
    let order = [
        "zeta",
        "zeta/b.txt",
        "zeta/a.txt",
        "alpha",
        "mid",
        "mid/2",
        "mid/10",
        "mid/1",
        "mid/sub",
        "mid/sub/x",
        "link",
        "0-first-by-name",
    ];
    for (i, p) in order.iter().enumerate() {
        let path = root.join(p);
        match *p {
            "zeta" | "mid" | "mid/sub" => fs::create_dir_all(&path).unwrap(),
            "link" => std::os::unix::fs::symlink("alpha", &path).unwrap(),
            _ => write_file(&path, &text(3_000 + i * 10, i as u64)),
        }
    }
    let stream = tar_of_names(&root, &order);
    assert_eq!(members(&stream), order, "the stream has the chosen order");
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    assert_eq!(
        readdir_order(&m.path("")),
        ["zeta", "alpha", "mid", "link", "0-first-by-name"]
    );
    assert_eq!(readdir_order(&m.path("zeta")), ["b.txt", "a.txt"]);
    assert_eq!(readdir_order(&m.path("mid")), ["2", "10", "1", "sub"]);

    // GNU tar archives what it lists, as it lists it: the mount gives back the stream's order.
    let again = tar_stream(&["tar", "-cf", "-", "-C", m.dir_str(), "."]);
    assert_eq!(members(&again), order);
    for p in ["zeta/a.txt", "mid/10", "0-first-by-name"] {
        assert!(fs::read(m.path(p)).unwrap() == fs::read(root.join(p)).unwrap());
    }
}

#[test]
fn a_stream_in_name_order_lists_by_name() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    for name in ["c", "a", "b", "d/z", "d/y"] {
        write_file(&root.join(name), name.as_bytes());
    }
    let stream = tar_by_name(&root);
    let id = store.snapshot_bytes(&stream, "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    assert_eq!(readdir_order(&m.path("")), ["a", "b", "c", "d"]);
    assert_eq!(readdir_order(&m.path("d")), ["y", "z"]);
}
