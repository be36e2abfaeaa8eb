//! `repair-packs`: a damaged pack gives up only what its damage spoiled. What still checks
//! out goes into a new pack, the damaged file is set aside in `damaged/`, lost chunks leave
//! the index (verify names what they hurt), and a new snapshot of the same data makes the
//! old snapshots whole again.

use std::path::{Path, PathBuf};

use crate::common::*;

mod copies;
mod records;
mod retired;

/// A stream of compressible text and incompressible noise: zstd frames and stored ones.
pub(super) fn mixed_stream(store: &TestStore, dir: &str, seed: u64) -> Vec<u8> {
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

pub(super) fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

pub(super) fn salvage_json(store: &TestStore, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["repair-packs", "--json"];
    all.extend_from_slice(args);
    let out = store.run(&all);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(super) fn chunk_count(store: &TestStore) -> u64 {
    store.json(&["stats", "--json"])["chunks"].as_u64().unwrap()
}

/// Two snapshots of lineage "vm" of a tree in subdirectories (so that the second reads its
/// parent's directory records), the second storing its metadata as deltas on the first's.
pub(super) struct DeltaLineage {
    pub v1: Vec<u8>,
    pub id1: String,
    /// The first snapshot's pack (the index's name of it): the bases of the deltas.
    pub first: Vec<u8>,
    pub v2: Vec<u8>,
    pub id2: String,
}

pub(super) fn delta_lineage(store: &TestStore) -> DeltaLineage {
    let root = store.scratch("tree");
    let name = |i: u64| format!("d{}/f{i:02}.txt", i % 4);
    for i in 0..40u64 {
        write_file(&root.join(name(i)), &text(20_000, i));
    }
    let v1 = tar_of_dir(&root);
    let id1 = store.snapshot_bytes(&v1, "vm");
    let first = indexed_pack(store, true);
    for i in (0..40u64).step_by(7) {
        write_file(&root.join(name(i)), &text(20_000, 100 + i));
    }
    let v2 = tar_of_dir(&root);
    let id2 = store.snapshot_bytes(&v2, "vm");
    assert!(
        indexed_deltas(store) > 0,
        "the second snapshot made no deltas"
    );
    DeltaLineage {
        v1,
        id1,
        first,
        v2,
        id2,
    }
}

/// Each snapshot exports exactly its stream, and `verify --data` finds nothing wrong.
pub(super) fn assert_whole(store: &TestStore, snaps: &[(&str, &[u8])]) {
    for (id, stream) in snaps {
        assert_eq!(
            sha256_hex(&store.export(id)),
            sha256_hex(stream),
            "snapshot {id}"
        );
    }
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
}

/// The pack files set aside in `damaged/` (not the `.retired` marks beside them).
pub(super) fn set_aside(store: &TestStore) -> Vec<PathBuf> {
    let dir = store.path().join("damaged");
    if dir.exists() {
        entries(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect()
    } else {
        Vec::new()
    }
}

/// The name of the pack indexed first (`first`) or last.
pub(super) fn indexed_pack(store: &TestStore, first: bool) -> Vec<u8> {
    let order = if first { "ASC" } else { "DESC" };
    let sql = format!("SELECT name FROM packs ORDER BY id {order} LIMIT 1");
    store.db().query_row(&sql, [], |r| r.get(0)).unwrap()
}

/// Where the first frame of `pack` holding metadata (pieces, directory records) starts.
pub(super) fn first_metadata_frame(store: &TestStore, pack: &[u8]) -> u64 {
    let at: i64 = store
        .db()
        .query_row(
            "SELECT MIN(f.offset) FROM frames f JOIN packs p ON p.id = f.pack
             JOIN chunks c ON c.frame = f.id WHERE p.name = ?1 AND c.kind <> 0",
            [pack],
            |r| r.get(0),
        )
        .unwrap();
    at as u64
}

/// Objects the index has stored as deltas.
pub(super) fn indexed_deltas(store: &TestStore) -> i64 {
    store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM chunks c JOIN frames f ON f.id = c.frame
             WHERE f.base IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// The path of the pack the index names by `row`'s name.
pub(super) fn pack_path_of(store: &TestStore, name: &[u8]) -> PathBuf {
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    store
        .path()
        .join("packs")
        .join(&hex[..2])
        .join(format!("{hex}.pack"))
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
