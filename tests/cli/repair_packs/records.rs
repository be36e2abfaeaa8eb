//! `repair-packs` and the snapshot and forget records: a listed snapshot keeps its record and
//! a forgotten one its tombstone, whatever the damage took, and nothing an orphan holds (a
//! killed run's, a killed `rm`'s) is made lasting.

use std::path::PathBuf;

use super::*;

/// A run killed after sealing its pack leaves that pack unindexed, for gc to delete: the next
/// run must not count the snapshot record in it as kept, or the record is gone once gc runs,
/// and with it the snapshot from any index rebuilt from the packs.
#[test]
fn a_killed_run_leaves_no_record_only_an_orphan_holds() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 7);
    let id = store.snapshot_bytes(&stream, "vm");
    let last = indexed_pack(&store, false);
    let pack = pack_path_of(&store, &last);
    // The snapshot record ends the pack: a byte of its payload.
    let len = std::fs::metadata(&pack).unwrap().len();
    flip(&pack, len - 20);
    let out = store
        .cmd(&["repair-packs"])
        .env("CELLAR_FAILPOINT", "salvage:after-seal")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = salvage_json(&store, &[], 0);
    let full = store.json(&["show", &id, "--json"])["id"].clone();
    assert_eq!(
        report["rewritten_records"],
        serde_json::json!([full]),
        "{report}"
    );
    store.ok(&["gc", "--grace", "0"]);
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    store.ok(&["repair-index", "--force"]);
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));
}

/// A tombstone lost to damage is written again, so that a rebuilt index does not bring the
/// forgotten snapshot back (its record is still in a pack the index names).
#[test]
fn a_lost_tombstone_is_written_again() {
    let store = TestStore::new();
    let a = mixed_stream(&store, "a", 9);
    let gone = store.snapshot_bytes(&a, "x");
    let b = mixed_stream(&store, "b", 19);
    let kept = store.snapshot_bytes(&b, "x");
    let before = store.pack_files();
    store.ok(&["rm", &gone]);
    let tombstone: Vec<_> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(tombstone.len(), 1, "{tombstone:?}");
    flip(&tombstone[0], 40);

    let report = salvage_json(&store, &[], 0);
    let tombstones = report["rewritten_tombstones"].as_array().unwrap();
    assert_eq!(tombstones.len(), 1, "{report}");
    assert!(
        tombstones[0].as_str().unwrap().starts_with(&gone),
        "{report}"
    );
    store.ok(&["repair-index", "--force"]);
    let listed: Vec<String> = store
        .json(&["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![kept], "the forgotten snapshot came back");
}

/// The tombstone of an `rm` killed before it committed is in a pack the index does not name,
/// which gc deletes: the snapshot stays. Damaged, that pack is set aside, but its tombstone
/// is not copied into a pack that lasts, or a rebuilt index would drop a listed snapshot.
#[test]
fn a_killed_rm_leaves_its_snapshot_even_when_its_tombstone_pack_is_damaged() {
    let store = TestStore::new();
    let a = mixed_stream(&store, "a", 11);
    store.snapshot_bytes(&a, "x");
    let b = mixed_stream(&store, "b", 21);
    let second = store.snapshot_bytes(&b, "x");
    let before = store.pack_files();
    let out = store
        .cmd(&["rm", &second])
        .env("CELLAR_FAILPOINT", "forget:after-tombstone")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    let tombstone: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(tombstone.len(), 1, "{tombstone:?}");
    flip(&tombstone[0], 20);

    let report = salvage_json(&store, &[], 0);
    assert_eq!(report["packs"][0]["records"], 0, "{report}");
    assert_success(&store.run(&["verify"]), &["verify"]);
    store.ok(&["repair-index", "--force"]);
    assert_eq!(sha256_hex(&store.export(&second)), sha256_hex(&b));
}

/// A run stopped after naming the damaged file in `damaged/` but before switching the index
/// leaves no mark of a switch: the next run salvages the pack again, rather than take the
/// name for a finished run and remove the only file of an unindexed pack's snapshot. A
/// symlink in `damaged/` to the pack is no name of it either.
#[test]
fn only_a_switched_run_counts_as_finished() {
    let store = TestStore::new();
    let kept = mixed_stream(&store, "kept", 13);
    store.snapshot_bytes(&kept, "kept");
    let before = store.pack_files();
    let hurt = mixed_stream(&store, "hurt", 23);
    let id = store.snapshot_bytes(&hurt, "hurt");
    let mine: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for p in &mine {
        let len = std::fs::metadata(p).unwrap().len();
        flip(p, len / 2);
    }
    // The rebuild skips them: the snapshot is in no index, only in those packs.
    assert_eq!(
        store.run(&["repair-index", "--force"]).status.code(),
        Some(1)
    );
    let damaged = store.path().join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    let name = mine[0].file_name().unwrap();
    std::os::unix::fs::symlink(&mine[0], damaged.join(name)).unwrap();
    let out = store
        .cmd(&["repair-packs"])
        .env("CELLAR_FAILPOINT", "salvage:after-link")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));

    let report = salvage_json(&store, &[], 1);
    assert_eq!(report["finished"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["packs"].as_array().unwrap().len(),
        mine.len(),
        "{report}"
    );
    for p in &mine {
        assert!(!p.exists());
    }
    let files = set_aside(&store);
    assert!(
        files
            .iter()
            .filter(|f| f.is_file() && !f.is_symlink())
            .count()
            >= mine.len(),
        "{files:?}"
    );
    // The snapshot comes back (missing what the flipped bytes took: exit 1 names it).
    let out = store.run(&["repair-index"]);
    assert!(stderr(&out).contains("problem"), "{}", stderr(&out));
    assert_eq!(sha256_hex(&store.export("kept")), sha256_hex(&kept));
    let out = store.run(&["show", &id]);
    assert_success(&out, &["show"]);
}

/// A pack cut short loses what was past the cut: here the snapshot's own record, which is
/// written again from the index (it hashes to the snapshot's id), so that an index rebuilt
/// from the packs still lists the snapshot.
#[test]
fn a_cut_off_pack_keeps_what_comes_before_the_cut_and_the_snapshot_record() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 3);
    let id = store.snapshot_bytes(&stream, "vm");
    let full = store.json(&["show", &id, "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The snapshot record ends the ingest's last pack.
    let pack = pack_path_of(&store, &indexed_pack(&store, false));
    let len = std::fs::metadata(&pack).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(len - 100).unwrap();

    let report = salvage_json(&store, &[], 0);
    assert_eq!(
        report["rewritten_records"],
        serde_json::json!([full]),
        "{report}"
    );
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    // No damaged pack is left to skip, so a rebuild needs no --force, and lists the snapshot.
    store.ok(&["repair-index"]);
    assert_eq!(store.json(&["show", &id, "--json"])["id"], full.as_str());
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));
}

/// A pack `repair-index` had to skip (junk appended) is in no index: its objects and its
/// snapshot record come back through the walk over its records, and a rebuild then restores
/// the snapshot it lost.
#[test]
fn a_pack_repair_index_skipped_is_salvaged_and_its_snapshot_comes_back() {
    let store = TestStore::new();
    let kept = mixed_stream(&store, "kept", 4);
    store.snapshot_bytes(&kept, "kept");
    let before = store.pack_files();
    let hurt = mixed_stream(&store, "hurt", 40);
    let id = store.snapshot_bytes(&hurt, "hurt");
    for p in store.pack_files().iter().filter(|p| !before.contains(p)) {
        let mut bytes = std::fs::read(p).unwrap();
        bytes.extend_from_slice(b"JUNK");
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::remove_file(store.path().join("cellar.db")).unwrap();
    assert_eq!(store.run(&["repair-index"]).status.code(), Some(1));
    assert_eq!(
        store.run(&["show", &id]).status.code(),
        Some(2),
        "the rebuild kept it"
    );

    let report = salvage_json(&store, &[], 0);
    assert!(!report["packs"].as_array().unwrap().is_empty(), "{report}");
    store.ok(&["repair-index"]);
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&hurt));
    assert_eq!(sha256_hex(&store.export("kept")), sha256_hex(&kept));
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
}
