//! An ingest killed while committing leaves packs the index does not name: its earlier packs,
//! and its last one, sealed later, which holds the snapshot's record. gc deletes none of them
//! while that last one is too young to go, however old the others are, so `repair-index`
//! restores the whole snapshot.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::lineage;
use crate::common::*;

/// A snapshot of more than one pack's worth of data, its ingest killed at `point`: the
/// stream, and the packs it left.
fn killed_committing(store: &TestStore, point: &str) -> (Vec<u8>, Vec<PathBuf>) {
    let dir = store.scratch("tree");
    write_file(&dir.join("big.bin"), &noise(40 << 20, 5));
    let stream = tar_of_dir(&dir);
    let file = store.scratch("big.tar");
    write_file(&file, &stream);
    let before = store.pack_files();
    let mut child = store.stopped_at(
        &["snapshot", "--name", "big", file.to_str().unwrap()],
        point,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.len() >= 2, "{left:?}");
    (stream, left)
}

/// Every pack but the newest (the last, holding the record) made an hour old.
fn age_all_but_the_last(packs: &[PathBuf]) {
    let mtime = |p: &PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let last = packs.iter().max_by_key(|p| mtime(p)).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for p in packs.iter().filter(|p| *p != last) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(hour_ago).unwrap();
    }
}

/// Killed with its marker still there (the commit never began) and killed just after the
/// marker went (here: the marker removed by hand), with a grace period the earlier packs are
/// past and the last pack is not: gc goes on or refuses, and deletes no pack of the ingest.
#[test]
fn the_packs_of_an_ingest_killed_committing_go_together() {
    for marker_gone in [false, true] {
        let store = TestStore::new();
        let first = lineage(&store, 1, 300_000);
        let (stream, left) = killed_committing(&store, "commit:in-transaction");
        if marker_gone {
            let tmp = store.path().join("tmp");
            for f in std::fs::read_dir(&tmp).unwrap().flatten() {
                if f.file_name().to_string_lossy().contains("-committing-") {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
        }
        age_all_but_the_last(&left);

        let out = store.run(&["gc", "--grace", "60"]);
        let err = stderr(&out);
        if marker_gone {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("which the index does not list"), "{err}");
        } else {
            assert_success(&out, &["gc"]);
        }
        for p in &left {
            assert!(
                p.exists(),
                "marker gone {marker_gone}: gc deleted {p:?}: {err}"
            );
        }

        store.ok(&["repair-index"]);
        let listed = store.json(&["list", "--json"]);
        let big = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "big")
            .unwrap_or_else(|| panic!("repair-index did not restore it: {listed}"));
        assert!(store.export(big["short_id"].as_str().unwrap()) == stream);
        assert!(store.export(&first[0].0) == first[0].1);
    }
}
