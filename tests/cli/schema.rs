//! A store last written at an older schema (4, before readers' leases) is read as it is on a
//! read-only disk, and migrated to the current schema by the first command that can write.

use std::path::Path;

use crate::common::*;
use crate::readonly::ReadOnlyView;

/// Take the index back to schema 4: what a store written before readers' leases looks like.
fn downgrade_to_4(store: &Path) {
    let db = rusqlite::Connection::open(store.join("cellar.db")).unwrap();
    db.execute_batch(
        "DROP TABLE pins;
         ALTER TABLE leases DROP COLUMN process;
         ALTER TABLE leases DROP COLUMN holder;
         PRAGMA user_version = 4;",
    )
    .unwrap();
}

fn user_version(store: &Path) -> i64 {
    let db = rusqlite::Connection::open(store.join("cellar.db")).unwrap();
    db.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_schema_4_store_reads_read_only_and_migrates_when_writable() {
    let store = TestStore::new();
    let tree = store.scratch("tree");
    write_file(&tree.join("etc/hostname"), b"vm1\n");
    write_file(&tree.join("bin/tool"), &noise(500_000, 7));
    let stream = tar_of_dir(&tree);
    let id = store.snapshot_bytes(&stream, "vm");
    downgrade_to_4(&store.path());

    {
        let view = ReadOnlyView::new(&store.path(), &store.scratch("ro"));
        let out = cellar_at(&view.dst, &["export", "vm"]);
        assert_success(&out, &["export", "vm (read-only, schema 4)"]);
        assert!(out.stdout == stream);
        let layout = store.scratch("layout");
        let args = [
            "export",
            &id,
            "--format",
            "oci",
            "-o",
            layout.to_str().unwrap(),
        ];
        assert_success(&cellar_at(&view.dst, &args), &args);
        let out = cellar_at(&view.dst, &["rm", "vm"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(
        user_version(&store.path()),
        4,
        "a read-only open migrates nothing"
    );

    // Writable: the first command migrates (through schema 5's readers' leases and 6's
    // processes), and leases work.
    assert!(store.export("vm") == stream);
    assert_eq!(user_version(&store.path()), 6);
    store.ok(&["rm", "vm"]);
    let r = store.json(&["gc", "--grace", "0", "--json"]);
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["leases"], serde_json::json!([]), "{r}");
    store.ok(&["verify"]);
}
