//! `verify` beside a gc and beside an ingest's commit: what they do while its read
//! transaction is open is not damage. Each command is stopped at the moment that matters
//! (`CELLAR_FAILPOINT=NAME:stop`), the other runs, and it goes on.

use super::*;

#[test]
fn packs_a_gc_removes_while_verify_runs_are_not_damage() {
    let store = TestStore::new();
    lineage(&store, 4, 3_000_000);
    store.ok(&["prune", "--keep-last", "1"]);
    let verify = store.stopped_at(&["verify", "--data", "--json"], "verify:in-transaction");
    let gc = gc_json(&store, &["--grace", "0"]);
    let changed = gc["packs_deleted"].as_u64().unwrap() + gc["packs_repacked"].as_u64().unwrap();
    assert!(changed > 0, "gc changed no pack: {gc}");
    resume(&verify);
    let out = verify.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", stderr(&out));
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("a gc deleted or repacked")),
        "{report}"
    );
    store.ok(&["verify", "--data"]);
}

#[test]
fn a_pack_an_ingest_is_committing_is_not_damage() {
    let store = TestStore::new();
    lineage(&store, 1, 300_000);
    let dir = store.scratch("late");
    write_file(&dir.join("late.bin"), &noise(400_000, 78));
    let file = store.scratch("late.tar");
    write_file(&file, &tar_of_dir(&dir));
    let ingest = store.stopped_at(
        &["snapshot", "--name", "vm", file.to_str().unwrap()],
        "commit:after-seal",
    );
    let report = store.json(&["verify", "--json"]);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let pid = ingest.id().to_string();
    assert!(
        report["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains(&format!("an ingest (process {pid}) is running"))),
        "{report}"
    );
    resume(&ingest);
    let out = ingest.wait_with_output().unwrap();
    assert_success(&out, &["snapshot"]);
    assert_eq!(store.snapshot_count(), 2);
    store.ok(&["verify", "--data"]);
}

/// The ingest commits while verify settles what its transaction found: between verify's look
/// at the leases and its look at the snapshots listed now. Its pack is no problem.
#[test]
fn an_ingest_committing_while_verify_settles_is_not_damage() {
    let store = TestStore::new();
    lineage(&store, 1, 300_000);
    let dir = store.scratch("late");
    write_file(&dir.join("late.bin"), &noise(400_000, 79));
    let file = store.scratch("late.tar");
    write_file(&file, &tar_of_dir(&dir));
    let ingest = store.stopped_at(
        &["snapshot", "--name", "vm", file.to_str().unwrap()],
        "commit:after-seal",
    );
    let verify = store.stopped_at(&["verify", "--json"], "verify:settling");
    resume(&ingest);
    assert_success(&ingest.wait_with_output().unwrap(), &["snapshot"]);
    resume(&verify);
    let out = verify.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(out.status.code(), Some(0), "{report}");
}
