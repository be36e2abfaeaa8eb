//! `verify` finds damage and names what it hurts; a snapshot onto damage fails and records
//! nothing; `repair-index` rebuilds a lost or damaged index from the packs alone, and every
//! snapshot still exports bit-exact.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A store with two snapshots whose data are in separate packs: "vm", a tree with a large
/// unique incompressible file (so the middle of its pack is that file's data), and "db",
/// different data from a separate run.
struct Fixture {
    store: TestStore,
    vm: String,
    vm_stream: Vec<u8>,
    vm_pack: PathBuf,
    db: String,
    db_stream: Vec<u8>,
    db_pack: PathBuf,
}

fn fixture() -> Fixture {
    let store = TestStore::new();
    let vm_dir = store.scratch("vm");
    crate::trees::portable_tree(&vm_dir);
    write_file(&vm_dir.join("big.bin"), &noise(4_000_000, 71));
    let vm_stream = tar_of_dir(&vm_dir);
    let vm = store.snapshot_bytes(&vm_stream, "vm");
    let vm_packs = store.pack_files();
    assert_eq!(vm_packs.len(), 1, "one pack for the first snapshot");

    let db_dir = store.scratch("db");
    write_file(&db_dir.join("data/table.bin"), &noise(1_500_000, 72));
    write_file(&db_dir.join("etc/db.conf"), &text(20_000, 73));
    let db_stream = tar_of_dir(&db_dir);
    let db = store.snapshot_bytes(&db_stream, "db");
    let db_pack = store
        .pack_files()
        .into_iter()
        .find(|p| !vm_packs.contains(p))
        .expect("the second snapshot has a pack of its own");
    Fixture {
        vm_pack: vm_packs[0].clone(),
        store,
        vm,
        vm_stream,
        db,
        db_stream,
        db_pack,
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn list_json(store: &TestStore) -> serde_json::Value {
    store.json(&["list", "--json"])
}

/// Every snapshot of the fixture exports exactly what was ingested.
fn assert_exports(f: &Fixture) {
    assert!(f.store.export(&f.vm) == f.vm_stream, "vm is not bit-exact");
    assert!(f.store.export(&f.db) == f.db_stream, "db is not bit-exact");
}

#[test]
fn clean_store_verifies_with_notes_for_leftovers() {
    let f = fixture();
    let out = f.store.run(&["verify"]);
    assert_success(&out, &["verify"]);
    assert!(stdout(&out).contains("no problems"), "{}", stdout(&out));
    let out = f.store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);

    let j = f.store.json(&["verify", "--data", "--json"]);
    assert_eq!(j["ok"], true);
    assert_eq!(j["packs"], 2);
    assert_eq!(j["snapshots"], 2);
    assert!(j["chunks"].as_u64().unwrap() > 100);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
    assert_eq!(j["notes"].as_array().unwrap().len(), 0);

    // Leftovers of a crashed writer are notes, not problems.
    let stray = f
        .store
        .path()
        .join(format!("packs/00/{}.pack", "0".repeat(64)));
    write_file(&stray, b"CELLARPK leftover");
    write_file(&f.store.path().join("tmp/999999999-1-0.pack"), b"partial");
    let j = f.store.json(&["verify", "--json"]);
    assert_eq!(j["ok"], true, "{j:#}");
    let notes = j["notes"].to_string();
    assert!(
        notes.contains("packs/00/") && notes.contains("not in the index"),
        "{notes}"
    );
    assert!(notes.contains("tmp/999999999-1-0.pack"), "{notes}");
    assert!(notes.contains("reclaimable by gc"), "{notes}");
}

/// Flip a byte of /big.bin's data where it sits in the pack. Its noise does not compress, so
/// it is stored verbatim; the middle of the pack is not always big.bin (frames from the two
/// compression workers land in the order they finish).
fn flip_byte_of_big_bin(pack: &Path) {
    let needle = &noise(4_000_000, 71)[2_000_000..2_000_064];
    let mut bytes = std::fs::read(pack).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("big.bin's bytes are in the pack verbatim");
    bytes[at + 32] ^= 0xff;
    std::fs::write(pack, bytes).unwrap();
}

#[test]
fn flipped_byte_names_the_snapshot_and_path_it_hurts() {
    let f = fixture();
    flip_byte_of_big_bin(&f.vm_pack);

    let out = f.store.run(&["verify", "--data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("fails its checksum"), "{text}");
    assert!(
        text.contains(&format!("snapshot {} (vm): /big.bin", f.vm)),
        "{text}"
    );
    assert!(
        text.contains(&format!("snapshot {}: stream (export)", f.vm)),
        "{text}"
    );
    assert!(!text.contains(&f.db), "db is not hurt:\n{text}");
    assert!(stderr(&out).contains("problem"), "{}", stderr(&out));

    let out = f.store.run(&["verify", "--data", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false);
    let problems = j["problems"].as_array().unwrap();
    let damaged = problems
        .iter()
        .find(|p| p["chunk"].is_string())
        .expect("a damaged chunk is named");
    assert_eq!(damaged["pack"].as_str().unwrap().len(), 64);
    assert!(damaged["offset"].as_u64().unwrap() > 0);
    let hurts = damaged["hurts"].as_array().unwrap();
    assert!(
        hurts
            .iter()
            .any(|h| h["snapshot"].as_str().unwrap().starts_with(&f.vm)
                && h["name"] == "vm"
                && h["path"] == "/big.bin"),
        "{hurts:?}"
    );
    assert!(
        hurts.iter().any(|h| h.get("path").is_none()),
        "the stream is hurt"
    );

    // The hurt snapshot no longer exports; the other, in its own pack, still does, exactly.
    let out = f.store.run(&["export", &f.vm]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert!(f.store.export(&f.db) == f.db_stream);
}

/// A flipped byte in a record's header, where its payload is whole: readers go by the index
/// and read every byte right, so verify names the damage (repair-index and gc's repack read
/// headers) without calling any snapshot hurt.
#[test]
fn a_damaged_record_header_hurts_no_reader() {
    let f = fixture();
    // The pack's first record starts right after the 32-byte pack header; its header's 20
    // fixed bytes are followed by its entries, the first id at 20..52.
    let mut bytes = std::fs::read(&f.db_pack).unwrap();
    assert_eq!(&bytes[32..36], b"CREC", "a record after the pack header");
    bytes[32 + 30] ^= 0xff;
    std::fs::write(&f.db_pack, bytes).unwrap();

    let out = f.store.run(&["verify", "--data", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = j["problems"].as_array().unwrap();
    let header = problems
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains("header of its record"))
        .unwrap_or_else(|| panic!("the damaged header is a problem: {j:#}"));
    assert!(
        header["what"]
            .as_str()
            .unwrap()
            .contains("readers are not hurt"),
        "{header}"
    );
    assert!(
        problems
            .iter()
            .all(|p| p["hurts"].as_array().unwrap().is_empty()),
        "no snapshot is hurt: {j:#}"
    );
    assert_exports(&f);
}

#[test]
fn damage_no_snapshot_uses_is_unreferenced() {
    let f = fixture();
    f.store.ok(&["rm", &f.db]);
    flip_middle_byte(&f.db_pack);
    let out = f.store.run(&["verify", "--data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("unreferenced"), "{text}");
    assert!(!text.contains("hurts snapshot"), "{text}");
    let j: serde_json::Value =
        serde_json::from_slice(&f.store.run(&["verify", "--data", "--json"]).stdout).unwrap();
    let damaged = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["chunk"].is_string())
        .expect("a damaged chunk");
    assert_eq!(damaged["hurts"].as_array().unwrap().len(), 0);
    assert_eq!(damaged["unreferenced"], true);
    assert!(f.store.export(&f.vm) == f.vm_stream);
}

/// Chunks the index lost (a piece of db's recipe, and a list node of vm's) are each named
/// once in their problem: `chunk ID: not in the index`, not `chunk ID: chunk ID is not in the
/// index`. They come from different snapshots' packs: a recipe is a tree of nodes when one of
/// its piece ids ends a node (1 in 128, and likelier for the lowest ids), and a lost node
/// hides the pieces below it.
#[test]
fn a_chunk_the_index_lost_is_named_once() {
    let f = fixture();
    {
        let db = rusqlite::Connection::open(f.store.path().join("cellar.db")).unwrap();
        for (kind, pack) in [(1, "max"), (2, "min")] {
            let sql = format!(
                "DELETE FROM chunks WHERE id = (SELECT c.id FROM chunks c \
                 JOIN frames f ON f.id = c.frame \
                 WHERE c.kind = ?1 AND f.pack = (SELECT {pack}(id) FROM packs) LIMIT 1)"
            );
            assert_eq!(db.execute(&sql, [kind]).unwrap(), 1, "kind {kind}");
        }
    }
    let out = f.store.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost: Vec<&serde_json::Value> = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["chunk"].is_string())
        .collect();
    assert_eq!(lost.len(), 2, "{j:#}");
    for p in lost {
        let short = &p["chunk"].as_str().unwrap()[..12];
        let what = p["what"].as_str().unwrap();
        assert_eq!(what, format!("chunk {short}: not in the index"), "{j:#}");
    }
    let text = stdout(&f.store.run(&["verify"]));
    for line in text.lines().filter(|l| l.starts_with("problem: chunk ")) {
        let short = &line["problem: chunk ".len()..][..12];
        assert_eq!(line.matches(short).count(), 1, "{text}");
    }
}

#[test]
fn missing_pack_is_found_without_reading_data() {
    let f = fixture();
    std::fs::remove_file(&f.db_pack).unwrap();
    let out = f.store.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("cannot be found"), "{text}");
    assert!(
        text.contains(&format!("snapshot {}: stream (export)", f.db)),
        "{text}"
    );
    assert!(!text.contains(&f.vm), "vm is not hurt:\n{text}");
    assert!(f.store.export(&f.vm) == f.vm_stream);
}

/// A snapshot taken onto a parent whose pack is gone fails before it records anything, and
/// names the damage; with the pack back, the same snapshot goes in.
#[test]
fn a_snapshot_onto_a_lost_parent_pack_fails_and_records_nothing() {
    let store = TestStore::new();
    let root = store.scratch("root");
    crate::trees::small_files(&root, 2000);
    let first = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    // Enough pieces for the parent's piece list to be stored in nodes: the next ingest reads
    // them for its delta bases, as it reads the parent's directory records for theirs.
    let nodes: i64 = store
        .db()
        .query_row("SELECT count(*) FROM chunks WHERE kind = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        nodes > 0,
        "the piece list is inline: the test reads no parent node"
    );
    let pack = store.pack_files().pop().expect("a pack");
    let kept = store.scratch("kept.pack");
    std::fs::rename(&pack, &kept).unwrap();

    write_file(&root.join("etc/conf1/file1"), b"changed\n");
    let stream = tar_of_dir(&root);
    let out = store.run_stdin(&["snapshot", "--name", "vm", "-"], &stream);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is missing") && err.contains("repair-packs"),
        "{err}"
    );
    assert_eq!(store.snapshot_count(), 1, "nothing recorded");
    assert!(
        entries(&store.path().join("tmp")).is_empty(),
        "nothing left in tmp"
    );

    std::fs::rename(&kept, &pack).unwrap();
    let second = store.snapshot_bytes(&stream, "vm");
    assert_ne!(second, first);
    assert!(store.export(&second) == stream);
    store.ok(&["verify", "--data"]);
}

/// The index files, so a test can lose them.
fn index_files(store: &TestStore) -> Vec<PathBuf> {
    ["cellar.db", "cellar.db-wal", "cellar.db-shm"]
        .iter()
        .map(|n| store.path().join(n))
        .collect()
}

#[test]
fn repair_index_rebuilds_a_lost_index() {
    let f = fixture();
    // A second snapshot of vm: a parent chain, and pieces and records stored as deltas.
    let vm_dir = f.store.scratch("vm");
    write_file(&vm_dir.join("etc/hostname"), b"vm1-renamed\n");
    let vm2_stream = tar_of_dir(&vm_dir);
    let vm2 = f.store.snapshot_bytes(&vm2_stream, "vm");
    let before = list_json(&f.store);
    assert_eq!(before.as_array().unwrap().len(), 3);

    for p in index_files(&f.store) {
        let _ = std::fs::remove_file(p);
    }
    let out = f.store.run(&["list"]);
    assert_eq!(out.status.code(), Some(1), "no index, no store");

    let report = f.store.json(&["repair-index", "--json"]);
    assert_eq!(report["snapshots"], 3, "{report}");
    assert_eq!(report["forgotten"], 0, "{report}");
    assert_eq!(report["skipped_packs"], 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(
        report["moved"],
        serde_json::json!([]),
        "no index to move: {report}"
    );
    assert!(report["chunks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        list_json(&f.store),
        before,
        "the same snapshots, in the same order"
    );
    let text = f.store.ok(&["repair-index"]);
    assert!(text.contains("restored 3 snapshots"), "{text}");
    assert!(
        text.contains("cellar.db.broken-"),
        "the first rebuild moved aside: {text}"
    );
    assert_exports(&f);
    assert!(f.store.export(&vm2) == vm2_stream);
    assert!(
        f.store.export("vm") == vm2_stream,
        "vm's latest is still vm2"
    );
    assert!(f.store.export("vm~1") == f.vm_stream);
    // The rebuilt index's own scratch files are not left in tmp/ for verify to report.
    let tmp: Vec<_> = std::fs::read_dir(f.store.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
    let said = f.store.ok(&["verify", "--data"]);
    assert!(!said.contains("tmp/"), "{said}");
}

/// An index file cut to nothing (its first page never reached the disk) beside packs is a
/// lost index, not an empty store: commands say so and point at repair-index, a snapshot does
/// not make it a new, empty index that knows none of the packs, and repair-index restores it.
#[test]
fn an_empty_index_file_is_a_lost_index() {
    let f = fixture();
    let before = list_json(&f.store);
    for p in index_files(&f.store) {
        let _ = std::fs::remove_file(p);
    }
    let db = f.store.path().join("cellar.db");
    std::fs::write(&db, b"").unwrap();
    for args in [&["list"][..], &["stats"], &["ls", "vm"]] {
        let out = f.store.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("repair-index"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = f
        .store
        .run_stdin(&["snapshot", "--name", "x", "-"], &f.db_stream);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "made into a new index"
    );

    let report = f.store.json(&["repair-index", "--json"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(list_json(&f.store), before);
    assert_exports(&f);
}

#[test]
fn repair_index_replaces_a_damaged_index() {
    let f = fixture();
    let before = list_json(&f.store);
    let db = f.store.path().join("cellar.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].fill(0xa5);
    std::fs::write(&db, &bytes).unwrap();

    for args in [
        &["list"][..],
        &["stats"],
        &["export", "vm"],
        &["ls", "vm"],
        &["verify"],
    ] {
        let out = f.store.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        // verify reports the damage as its problem, on stdout, and fails on stderr.
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            said.contains("cellar: error:") && said.contains("index"),
            "{args:?}: {said}"
        );
    }
    let out = f.store.run(&["verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("problem: the index file cannot be read") && said.contains("repair-index"),
        "{said}"
    );
    let out = f
        .store
        .run_stdin(&["snapshot", "--name", "x", "-"], &f.db_stream);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a snapshot into a damaged index fails"
    );

    let text = f.store.ok(&["repair-index"]);
    assert!(text.contains("cellar.db.broken-"), "{text}");
    // The damaged index is kept, as it was.
    let kept: Vec<PathBuf> = std::fs::read_dir(f.store.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("cellar.db.broken-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(std::fs::read(&kept[0]).unwrap() == bytes);

    assert_eq!(list_json(&f.store), before);
    assert_exports(&f);
    f.store.ok(&["verify", "--data"]);

    // The store works on: a new snapshot commits and exports.
    let dir = f.store.scratch("new");
    write_file(&dir.join("new.bin"), &noise(200_000, 74));
    write_file(&dir.join("big.bin"), &noise(4_000_000, 71));
    let stream = tar_of_dir(&dir);
    let id = f.store.snapshot_bytes(&stream, "vm");
    assert!(f.store.export(&id) == stream);
    assert_eq!(f.store.snapshot_count(), 3);
    f.store.ok(&["verify", "--data"]);
}

/// A damaged pack is no reason to rebuild a readable index: the rebuilt one would lose every
/// snapshot the pack holds, undamaged files and all. repair-index refuses, changing nothing,
/// unless told --force.
#[test]
fn repair_index_keeps_a_readable_index_when_a_pack_is_damaged() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.db_pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f.db_pack, bytes).unwrap();
    let before = list_json(&f.store);

    let out = f.store.run(&["repair-index"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for want in ["1 pack(s) could not be read", "left as it is", "--force"] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert_eq!(list_json(&f.store), before, "the index was replaced");
    let moved_aside = std::fs::read_dir(f.store.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("broken"));
    assert!(!moved_aside, "the index was moved aside");
    assert!(f.store.export(&f.vm) == f.vm_stream);

    // --force: the rebuilt index, without the damaged pack's snapshot; the old one kept aside.
    let out = f.store.run(&["repair-index", "--force", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped_packs"], 1, "{report}");
    assert_eq!(report["moved"].as_array().unwrap().len(), 3, "{report}");
    // The snapshot that went with the pack is named, and only it.
    let lost: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str().filter(|w| w.contains("is lost")))
        .collect();
    assert_eq!(lost.len(), 1, "{report}");
    assert!(
        lost[0].contains(&f.db[..12]) && lost[0].contains("(db)"),
        "{report}"
    );
    assert!(f.store.export(&f.vm) == f.vm_stream);
}

/// A pack file gone from the store (a disk not mounted, an rsync not finished) loses what only
/// it holds as surely as a damaged one: repair-index keeps the readable index that still knows
/// the pack, and says which; gc, which points at repair-index, is not led into deleting what
/// the missing pack's snapshot needs. With the pack back, all is whole; `--force` means the loss.
#[test]
fn repair_index_keeps_a_readable_index_when_a_pack_is_missing() {
    let f = fixture();
    let before = list_json(&f.store);
    let kept = f.store.scratch("kept.pack");
    std::fs::rename(&f.db_pack, &kept).unwrap();

    let out = f.store.run(&["repair-index"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "1 pack file(s) the current index lists are missing",
        f.db_pack.to_str().unwrap(),
        &f.db[..12],
        "left as it is",
        "--force",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert_eq!(list_json(&f.store), before, "the index was replaced");
    let gc = f.store.run(&["gc", "--grace", "0"]);
    assert_eq!(gc.status.code(), Some(1), "{}", stderr(&gc));

    std::fs::rename(&kept, &f.db_pack).unwrap();
    assert!(f.store.export(&f.db) == f.db_stream);
    f.store.ok(&["verify"]);

    std::fs::rename(&f.db_pack, &kept).unwrap();
    let out = f.store.run(&["repair-index", "--force"]);
    let err = stderr(&out);
    assert!(
        err.contains("is lost") && err.contains(&f.db[..12]),
        "{err}"
    );
    assert!(f.store.export(&f.vm) == f.vm_stream);
}
