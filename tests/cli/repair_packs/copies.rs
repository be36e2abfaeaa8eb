//! `repair-packs` and copies of objects: a delta on a lost base is lost too, a copy in any
//! damaged pack stands in for one lost in another, a live chunk stays live, and a missing pack
//! named is given up; a new snapshot of the same data heals what was lost.

use std::path::PathBuf;

use super::*;

/// A lost object that other packs' deltas are made against takes those deltas with it:
/// they cannot be decoded, so they leave the index too, and the next snapshot of their data
/// stores them whole (rather than finding them and committing a snapshot nothing can read),
/// even though the lineage's parent is what was damaged.
#[test]
fn deltas_on_a_lost_base_are_lost_too_and_the_next_snapshot_stores_them() {
    let store = TestStore::new();
    let DeltaLineage { first, v2, id2, .. } = delta_lineage(&store);
    // Cut v1's pack inside its first metadata frame: the bases of v2's deltas.
    let meta = first_metadata_frame(&store, &first);
    let pack = pack_path_of(&store, &first);
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(meta + 10).unwrap();

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
    let first = indexed_pack(&store, true);
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
    assert!(
        indexed_deltas(&store) > 0,
        "a's second snapshot made no deltas"
    );
    // A byte of the first pack's metadata frame: the bases of a2's deltas.
    let meta = first_metadata_frame(&store, &first);
    flip(&pack_path_of(&store, &first), meta + 20);

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
    super::assert_whole(&store, &[(&again, &stream)]);
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

/// The same with both packs damaged (junk appended, so everything is salvaged), the one
/// holding the live rows read first: whether an id is live is asked of the index before any
/// damaged pack's rows go.
#[test]
fn a_chunk_stored_again_stays_live_when_both_its_packs_are_damaged() {
    // Pack names are random: retried until the live pack's sorts first.
    for _ in 0..40 {
        let store = TestStore::new();
        let stream = mixed_stream(&store, "vm", 14);
        let first = store.snapshot_bytes(&stream, "vm");
        let old = store.pack_files();
        store.ok(&["rm", &first]);
        store.ok(&["gc", "--grace", "3600"]);
        let again = store.snapshot_bytes(&stream, "vm");
        let new: Vec<PathBuf> = store
            .pack_files()
            .into_iter()
            .filter(|p| !old.contains(p))
            .collect();
        if new.iter().min() > old.iter().min() {
            continue;
        }
        for p in store.pack_files() {
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.extend_from_slice(b"JUNK");
            std::fs::write(&p, bytes).unwrap();
        }
        salvage_json(&store, &[], 0);
        store.ok(&["gc", "--grace", "0"]);
        super::assert_whole(&store, &[(&again, &stream)]);
        return;
    }
    panic!("the live pack's name never sorted first");
}
