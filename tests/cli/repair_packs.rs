//! `repair-packs`: a damaged pack gives up only what its damage spoiled. What still checks
//! out goes into a new pack, the damaged file is set aside in `damaged/`, lost chunks leave
//! the index (verify names what they hurt), and a new snapshot of the same data makes the
//! old snapshots whole again.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A stream of compressible text and incompressible noise: zstd frames and stored ones.
fn mixed_stream(store: &TestStore, dir: &str, seed: u64) -> Vec<u8> {
    let root = store.scratch(dir);
    for i in 0..4u64 {
        write_file(&root.join(format!("t{i}.txt")), &text(1_500_000, seed + i));
        write_file(
            &root.join(format!("n{i}.bin")),
            &noise(700_000, seed + 10 + i),
        );
    }
    tar_of_dir(&root)
}

fn biggest(packs: &[PathBuf]) -> PathBuf {
    packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn salvage_json(store: &TestStore, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["repair-packs", "--json"];
    all.extend_from_slice(args);
    let out = store.run(&all);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn chunk_count(store: &TestStore) -> u64 {
    store.json(&["stats", "--json"])["chunks"].as_u64().unwrap()
}

fn set_aside(store: &TestStore) -> Vec<PathBuf> {
    let dir = store.path().join("damaged");
    if dir.exists() {
        entries(&dir)
    } else {
        Vec::new()
    }
}

#[test]
fn a_flipped_byte_costs_only_what_it_spoils_and_a_new_snapshot_heals() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 1);
    let id = store.snapshot_bytes(&stream, "vm");
    let pack = biggest(&store.pack_files());
    let chunks = chunk_count(&store);
    let len = std::fs::metadata(&pack).unwrap().len();
    flip(&pack, len / 2);

    let report = salvage_json(&store, &[], 1);
    let salvaged = report["packs"].as_array().unwrap();
    assert_eq!(salvaged.len(), 1, "{report}");
    let name = pack.file_stem().unwrap().to_str().unwrap();
    assert_eq!(salvaged[0]["pack"], name, "{report}");
    let lost = report["lost"].as_array().unwrap().len() as u64;
    assert!(lost >= 1, "{report}");
    // One frame at most (2 MiB of a stream of 9): most of the pack comes back.
    assert!(
        lost * 4 < chunks,
        "lost {lost} of {chunks} chunks: {report}"
    );
    assert!(!pack.exists(), "the damaged file is still among the packs");
    assert_eq!(
        set_aside(&store),
        vec![store.path().join("damaged").join(format!("{name}.pack"))]
    );
    // What is lost is named: the problems say which files it hurts.
    assert_eq!(report["verified"], false, "{report}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("not in the index")
            && (problems.contains(".txt") || problems.contains(".bin")),
        "{report}"
    );
    let out = store.run(&["export", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The same data again stores what was lost; the old snapshot is whole with it.
    store.snapshot_bytes(&stream, "vm");
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));
    // The file set aside is a note until it is deleted.
    let notes = store.json(&["verify", "--json"])["notes"].to_string();
    assert!(notes.contains(&format!("damaged/{name}.pack")), "{notes}");
}

/// A record header is only an index to the payload: the index's rows find the frame all the
/// same, so nothing at all is lost, and the command succeeds.
#[test]
fn damage_to_a_record_header_loses_nothing() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 2);
    let id = store.snapshot_bytes(&stream, "vm");
    let pack = biggest(&store.pack_files());
    // The first record's header starts right after the 32-byte pack header: its first entry's id.
    flip(&pack, 32 + 20 + 3);
    assert_eq!(store.run(&["verify", "--data"]).status.code(), Some(1));

    let report = salvage_json(&store, &[], 0);
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));
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
    let db = store.db();
    let last: Vec<u8> = db
        .query_row("SELECT name FROM packs ORDER BY id DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    drop(db);
    let hex: String = last.iter().map(|b| format!("{b:02x}")).collect();
    let pack = store
        .path()
        .join("packs")
        .join(&hex[..2])
        .join(format!("{hex}.pack"));
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

#[test]
fn a_store_without_damage_is_left_as_it_is() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 5);
    let id = store.snapshot_bytes(&stream, "vm");
    let packs = store.pack_files();
    let out = store.run(&["repair-packs"]);
    assert_success(&out, &["repair-packs"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no damaged packs"));
    assert_eq!(store.pack_files(), packs);
    assert!(set_aside(&store).is_empty());

    // A pack named outright is rewritten whole, even though it hashes to its name.
    let name = biggest(&packs)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // Named twice, it is salvaged once.
    let report = salvage_json(&store, &[&name[..10], &name[..12]], 0);
    assert_eq!(report["packs"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["packs"][0]["pack"], name.as_str(), "{report}");
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));

    // Like an unknown snapshot id: a usage error.
    let out = store.run(&["repair-packs", "0000ff"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("0000ff"), "{}", stderr(&out));
}

/// Killed after the new pack is sealed, or after the index switched to it: the store reads
/// as before or as after, and the command run again finishes the work.
#[test]
fn a_salvage_killed_midway_is_finished_by_the_next() {
    for point in ["salvage:after-seal", "salvage:after-switch"] {
        let store = TestStore::new();
        let stream = mixed_stream(&store, "vm", 6);
        let id = store.snapshot_bytes(&stream, "vm");
        let pack = biggest(&store.pack_files());
        let header = 32 + 20 + 3;
        flip(&pack, header);
        let out = store
            .cmd(&["repair-packs"])
            .env("CELLAR_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: {}", stderr(&out));
        assert_eq!(
            sha256_hex(&store.export(&id)),
            sha256_hex(&stream),
            "{point}"
        );

        let report = salvage_json(&store, &[], 0);
        assert_eq!(
            report["lost"].as_array().unwrap().len(),
            0,
            "{point}: {report}"
        );
        // Past the switch, only the removal was left: nothing is salvaged a second time.
        let (salvaged, finished) = match point {
            "salvage:after-seal" => (1, 0),
            _ => (0, 1),
        };
        assert_eq!(
            report["packs"].as_array().unwrap().len(),
            salvaged,
            "{report}"
        );
        assert_eq!(
            report["finished"].as_array().unwrap().len(),
            finished,
            "{report}"
        );
        assert!(!pack.exists(), "{point}");
        assert_eq!(
            set_aside(&store).len(),
            1,
            "{point}: {:?}",
            set_aside(&store)
        );
        assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
        store.ok(&["gc", "--grace", "0"]);
        assert_eq!(
            sha256_hex(&store.export(&id)),
            sha256_hex(&stream),
            "{point}"
        );
        assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    }
}

/// The path of the pack the index names by `row`'s name.
fn pack_path_of(store: &TestStore, name: &[u8]) -> PathBuf {
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    store
        .path()
        .join("packs")
        .join(&hex[..2])
        .join(format!("{hex}.pack"))
}

/// A lost object that other packs' deltas are made against takes those deltas with it:
/// they cannot be decoded, so they leave the index too, and the next snapshot of their data
/// stores them whole (rather than finding them and committing a snapshot nothing can read),
/// even though the lineage's parent is what was damaged.
#[test]
fn deltas_on_a_lost_base_are_lost_too_and_the_next_snapshot_stores_them() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    // Subdirectories, so that the next snapshot reads its parent's directory records.
    let name = |i: u64| format!("d{}/f{i:02}.txt", i % 4);
    for i in 0..40u64 {
        write_file(&root.join(name(i)), &text(20_000, i));
    }
    let v1 = tar_of_dir(&root);
    store.snapshot_bytes(&v1, "vm");
    let first: Vec<u8> = store
        .db()
        .query_row("SELECT name FROM packs ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    for i in (0..40u64).step_by(7) {
        write_file(&root.join(name(i)), &text(20_000, 100 + i));
    }
    let v2 = tar_of_dir(&root);
    let id2 = store.snapshot_bytes(&v2, "vm");
    let deltas: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM frames WHERE base IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(deltas > 0, "the second snapshot made no deltas");
    // Cut v1's pack inside its first metadata frame: the bases of v2's deltas.
    let meta: i64 = store
        .db()
        .query_row(
            "SELECT MIN(f.offset) FROM frames f JOIN packs p ON p.id = f.pack
             JOIN chunks c ON c.frame = f.id WHERE p.name = ?1 AND c.kind <> 0",
            [&first],
            |r| r.get(0),
        )
        .unwrap();
    let pack = pack_path_of(&store, &first);
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(meta as u64 + 10).unwrap();

    let report = salvage_json(&store, &[], 1);
    let kinds = report["lost"].to_string();
    assert!(
        kinds.contains("piece") || kinds.contains("directory record"),
        "{report}"
    );
    let left: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM chunks c JOIN frames f ON f.id = c.frame
             WHERE f.base IS NOT NULL AND NOT EXISTS (SELECT 1 FROM chunks b WHERE b.id = f.base)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "deltas on lost bases are still indexed: {report}");

    // The same lineage, whose parent's metadata is lost, takes a snapshot; it reads back.
    let id3 = store.snapshot_bytes(&v2, "vm");
    assert_eq!(sha256_hex(&store.export(&id3)), sha256_hex(&v2));
    assert_eq!(
        sha256_hex(&store.export(&id2)),
        sha256_hex(&v2),
        "v2 is whole again"
    );
}

/// A run killed after sealing its pack leaves that pack unindexed, for gc to delete: the next
/// run must not count the snapshot record in it as kept, or the record is gone once gc runs,
/// and with it the snapshot from any index rebuilt from the packs.
#[test]
fn a_killed_run_leaves_no_record_only_an_orphan_holds() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 7);
    let id = store.snapshot_bytes(&stream, "vm");
    let last: Vec<u8> = store
        .db()
        .query_row("SELECT name FROM packs ORDER BY id DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
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

/// Two damaged copies of one pack (a copy under a name that sorts first, and the pack cut
/// short): what either still holds is kept, whichever is read first.
#[test]
fn a_copy_in_another_damaged_pack_makes_up_for_a_lost_one() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 8);
    let id = store.snapshot_bytes(&stream, "vm");
    let pack = biggest(&store.pack_files());
    let copy = store
        .path()
        .join("packs/00")
        .join(format!("{}.pack", "00".repeat(32)));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&pack, &copy).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(100_000).unwrap();

    let report = salvage_json(&store, &[], 0);
    assert_eq!(report["packs"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
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

/// A pack file the index names that is gone is given up only when named (it may come back):
/// then its chunks leave the index, its snapshot's record is written again from the index,
/// and the next snapshot of the same data makes that snapshot whole (and gc runs again).
#[test]
fn a_missing_pack_is_given_up_when_named_and_a_new_snapshot_heals() {
    let store = TestStore::new();
    let kept = mixed_stream(&store, "kept", 10);
    let kept_id = store.snapshot_bytes(&kept, "kept");
    let before = store.pack_files();
    let gone = mixed_stream(&store, "gone", 20);
    let gone_id = store.snapshot_bytes(&gone, "gone");
    let files: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }

    let out = store.run(&["repair-packs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("its file is missing"),
        "{}",
        stderr(&out)
    );
    assert_eq!(store.run(&["gc", "--grace", "0"]).status.code(), Some(1));
    // Nor does a snapshot go in, even of data the lost pack never held: what it finds stored
    // could be in that pack.
    let out = store.run_stdin(&["snapshot", "--name", "other", "-"], &kept);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair-packs"), "{}", stderr(&out));

    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy()[..12].to_string())
        .collect();
    let mut args: Vec<&str> = names.iter().map(String::as_str).collect();
    args.insert(0, "--json");
    args.insert(0, "repair-packs");
    let out = store.run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report["lost"].as_array().unwrap().is_empty(), "{report}");
    let full = store.json(&["show", &gone_id, "--json"])["id"].clone();
    assert_eq!(
        report["rewritten_records"],
        serde_json::json!([full]),
        "{report}"
    );
    assert_eq!(
        report["packs"][0]["moved_to"],
        serde_json::Value::Null,
        "{report}"
    );

    store.snapshot_bytes(&gone, "gone");
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    store.ok(&["gc", "--grace", "0"]);
    assert_eq!(sha256_hex(&store.export(&gone_id)), sha256_hex(&gone));
    assert_eq!(sha256_hex(&store.export(&kept_id)), sha256_hex(&kept));
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

/// Deltas whose base is lost leave the index before the salvaged packs are indexed, so that a
/// whole copy salvaged of one stands in for it. Here lineage "b" stored a second snapshot's
/// objects whole while lineage "a" stored them as deltas on its first snapshot's (the index
/// names the deltas: "a" committed first); the first snapshot's metadata is then lost.
#[test]
fn a_whole_copy_salvaged_stands_in_for_a_delta_whose_base_is_lost() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    for i in 0..40u64 {
        write_file(
            &root.join(format!("d{}/f{i:02}.txt", i % 4)),
            &text(3_000, i),
        );
    }
    store.snapshot_bytes(&tar_of_dir(&root), "a");
    let first: Vec<u8> = store
        .db()
        .query_row("SELECT name FROM packs ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    // Every member's header changes (its mtime), so no piece or directory record of the
    // first snapshot is shared: each is stored again, as a delta on the first one's. (The
    // files are one chunk each: a longer file's chunk list would be shared, and lost.)
    for i in 0..40u64 {
        set_mtime_ns(
            &root.join(format!("d{}/f{i:02}.txt", i % 4)),
            1_600_000_000,
            0,
        );
    }
    let v2 = tar_of_dir(&root);
    let file = store.scratch("v2.tar");
    std::fs::write(&file, &v2).unwrap();
    // "b" has no parent: whole objects. Held before its commit while "a" commits.
    let b = store.stopped_at(
        &["snapshot", "--name", "b", file.to_str().unwrap()],
        "commit:before-lock",
    );
    let a2 = store.snapshot_bytes(&v2, "a");
    let before_b = store.pack_files();
    resume(&b);
    let out = output_within_a_minute(b, "snapshot b");
    assert!(out.status.success(), "{}", stderr(&out));
    let deltas: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM chunks c JOIN frames f ON f.id = c.frame
             WHERE f.base IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(deltas > 0, "a's second snapshot made no deltas");
    // A byte of the first pack's metadata frame: the bases of a2's deltas.
    let meta: i64 = store
        .db()
        .query_row(
            "SELECT MIN(f.offset) FROM frames f JOIN packs p ON p.id = f.pack
             JOIN chunks c ON c.frame = f.id WHERE p.name = ?1 AND c.kind <> 0",
            [&first],
            |r| r.get(0),
        )
        .unwrap();
    flip(&pack_path_of(&store, &first), meta as u64 + 20);

    // b's packs named with the damaged one, so its whole copies are salvaged (a2's deltas,
    // in a pack not named, stay where they are, undecodable).
    let b_packs: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before_b.contains(p))
        .collect();
    assert!(!b_packs.is_empty());
    let names: Vec<String> = b_packs
        .iter()
        .chain([&pack_path_of(&store, &first)])
        .map(|p| p.file_stem().unwrap().to_string_lossy()[..16].to_string())
        .collect();
    let mut args = vec!["repair-packs", "--json"];
    args.extend(names.iter().map(String::as_str));
    let out = store.run(&args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The first snapshot's pieces and directory records are lost (they hurt it alone).
    assert!(!report["lost"].as_array().unwrap().is_empty(), "{report}");
    for snap in [a2.as_str(), "b"] {
        let out = store.run(&["export", snap]);
        assert!(out.stdout == v2, "{snap}: {}\n{report}", stderr(&out));
    }
}

/// A chunk gc condemned and an ingest stored again since has a row in both tables; when the
/// condemned one was in a damaged pack, the salvage leaves the live row alone, so gc does not
/// take a chunk a listed snapshot needs.
#[test]
fn a_chunk_stored_again_after_gc_condemned_it_stays_live() {
    let store = TestStore::new();
    let stream = mixed_stream(&store, "vm", 12);
    let first = store.snapshot_bytes(&stream, "vm");
    let packs = store.pack_files();
    store.ok(&["rm", &first]);
    store.ok(&["gc", "--grace", "3600"]);
    let condemned: i64 = store
        .db()
        .query_row("SELECT COUNT(*) FROM condemned", [], |r| r.get(0))
        .unwrap();
    assert!(condemned > 0, "gc condemned nothing");
    let again = store.snapshot_bytes(&stream, "vm");
    let both: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM condemned d JOIN chunks c ON c.id = d.id",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(both > 0, "no chunk is in both tables");
    let pack = biggest(&packs);
    let len = std::fs::metadata(&pack).unwrap().len();
    flip(&pack, len / 2);

    salvage_json(&store, &[], 0);
    store.ok(&["gc", "--grace", "0"]);
    assert_eq!(sha256_hex(&store.export(&again)), sha256_hex(&stream));
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
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
