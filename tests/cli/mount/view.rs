//! `cellar mount DIR` without a snapshot: every snapshot as NAME/ID/... and NAME/latest,
//! following snapshots taken while it is mounted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::fixtures::*;
use super::guard::*;
use crate::common::*;

#[test]
fn all_snapshots_view_follows_new_snapshots_without_remounting() {
    require("fusermount3");
    let store = TestStore::new();
    let s1 = small_stream(
        &store,
        "t1",
        &[("f", b"one\n".to_vec()), ("d/g", b"g1\n".to_vec())],
    );
    let id1 = store.snapshot_bytes(&s1, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.foreground(&store, None);
    let top = m.path("");
    let hex12 = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(hex12(&id1));

    assert_eq!(names_in(&top), set(&["vm"]), "MOUNT/");
    assert!(fs::metadata(&top).unwrap().is_dir());
    assert_eq!(names_in(&m.path("vm")), set(&[&id1, "latest"]), "MOUNT/vm/");
    let latest = m.path("vm/latest");
    assert!(
        fs::symlink_metadata(&latest)
            .unwrap()
            .file_type()
            .is_symlink(),
        "latest is a symlink"
    );
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new(&id1),
        "latest -> first id"
    );
    assert_eq!(fs::read(m.path(&format!("vm/{id1}/f"))).unwrap(), b"one\n");
    assert_eq!(
        fs::read(m.path("vm/latest/f")).unwrap(),
        b"one\n",
        "through latest"
    );
    assert_eq!(fs::read(m.path("vm/latest/d/g")).unwrap(), b"g1\n");
    // Names that are not there, looked up before they exist (no negative caching may hide them later).
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("db"))),
        Some(libc::ENOENT),
        "MOUNT/db before"
    );
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("vm/000000000000"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("vm/latest-not"))),
        Some(libc::ENOENT)
    );

    // A second snapshot in the lineage, taken while mounted.
    let s2 = small_stream(
        &store,
        "t2",
        &[("f", b"two, longer\n".to_vec()), ("d/g", b"g2\n".to_vec())],
    );
    let id2 = store.snapshot_bytes(&s2, "vm");
    assert_ne!(id1, id2);
    assert_eq!(
        names_in(&m.path("vm")),
        set(&[&id1, &id2, "latest"]),
        "MOUNT/vm/ after a snapshot"
    );
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new(&id2),
        "latest moved"
    );
    assert_eq!(
        fs::symlink_metadata(&latest).unwrap().len(),
        12,
        "latest's size is its target's length"
    );
    assert_eq!(
        fs::read(m.path("vm/latest/f")).unwrap(),
        b"two, longer\n",
        "latest/f after"
    );
    assert_eq!(fs::read(m.path(&format!("vm/{id2}/d/g"))).unwrap(), b"g2\n");
    assert_eq!(
        fs::read(m.path(&format!("vm/{id1}/f"))).unwrap(),
        b"one\n",
        "the old one stays"
    );

    // A new lineage appears at the top.
    let s3 = small_stream(&store, "t3", &[("db.conf", b"db\n".to_vec())]);
    let id3 = store.snapshot_bytes(&s3, "db");
    assert_eq!(
        names_in(&top),
        set(&["db", "vm"]),
        "MOUNT/ after a new lineage"
    );
    assert_eq!(names_in(&m.path("db")), set(&[&id3, "latest"]));
    assert_eq!(fs::read_link(m.path("db/latest")).unwrap(), Path::new(&id3));
    assert_eq!(fs::read(m.path("db/latest/db.conf")).unwrap(), b"db\n");

    // A third snapshot of vm, identical in content to the first: still a new id, latest moves.
    let id4 = store.snapshot_bytes(&s1, "vm");
    assert_eq!(names_in(&m.path("vm")), set(&[&id1, &id2, &id4, "latest"]));
    assert_eq!(fs::read_link(&latest).unwrap(), Path::new(&id4));
    // Link counts as on a disk: two, and one for each directory inside (latest is a link).
    // The kernel keeps the view's own directories' attributes for a second.
    use std::os::unix::fs::MetadataExt;
    let nlink = |p: &str| fs::metadata(m.path(p)).unwrap().nlink();
    wait_until("the view's link counts", || {
        (nlink(""), nlink("vm"), nlink("db")) == (4, 5, 3)
    });
    assert_eq!(fs::read(m.path("vm/latest/f")).unwrap(), b"one\n");

    // Every snapshot directory exports what its stream held.
    for (id, s) in [(&id1, &s1), (&id2, &s2), (&id3, &s3), (&id4, &s1)] {
        assert_eq!(&store.export(id), s, "{id}");
    }
    // Unmounting with umount ends the foreground process cleanly.
    unmount(&["umount"], &m.path(""));
    let exit = m.wait_child(BOUND);
    assert!(
        exit.is_some_and(|s| s.success()),
        "after umount: {exit:?}; stderr:\n{}",
        m.log_text()
    );
}

/// The view's own entries (the root, each NAME/ and NAME/latest) show when the newest snapshot
/// in them was taken, not 1970.
#[test]
fn all_snapshots_view_directories_show_when_their_newest_snapshot_was_taken() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "t", &[("f", b"f\n".to_vec())]);
    let _vm1 = store.snapshot_bytes(&stream, "vm");
    let vm2 = store.snapshot_bytes(&stream, "vm");
    let db = store.snapshot_bytes(&stream, "db");
    // `created` (RFC 3339, nanoseconds) as (seconds, nanoseconds) since the epoch.
    let created = |id: &str| -> (i64, i64) {
        let show = store.json(&["show", id, "--json"]);
        let at = show["created"].as_str().expect("created");
        let out = Command::new("date")
            .args(["-u", "-d", at, "+%s %N"])
            .output()
            .unwrap();
        let said = String::from_utf8(out.stdout).unwrap();
        let (s, ns) = said.trim().split_once(' ').expect("date +%s %N");
        (s.parse().unwrap(), ns.parse().unwrap())
    };

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, None);
    for (path, newest) in [("", &db), ("vm", &vm2), ("vm/latest", &vm2), ("db", &db)] {
        let st = fs::symlink_metadata(m.path(path)).unwrap();
        assert_eq!(
            (st.mtime(), st.mtime_nsec()),
            created(newest),
            "MOUNT/{path}: the time of {newest}"
        );
    }
}
