//! A damaged pack never stops gc, nor is it deleted: it is named and left for verify and
//! repair, and every other pack is reclaimed. Nor does gc delete a pack file the index
//! lost while a snapshot still needs chunks the index lacks.

use std::path::PathBuf;

use crate::common::*;

/// Snapshot `stream` as `name`; the pack files the ingest added.
fn snapshot_new_packs(store: &TestStore, stream: &[u8], name: &str) -> Vec<PathBuf> {
    let before = store.pack_files();
    store.snapshot_bytes(stream, name);
    let added: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!added.is_empty(), "{name} added no pack");
    added
}

fn stream_of(store: &TestStore, dir: &str, files: &[(&str, usize, u64)]) -> Vec<u8> {
    let root = store.scratch(dir);
    for &(name, len, seed) in files {
        write_file(&root.join(name), &noise(len, seed));
    }
    tar_of_dir(&root)
}

fn truncate_by(path: &PathBuf, n: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - n).unwrap();
}

/// What lies past a pack's damage cannot be told, and bytes appended are undone by hand: a
/// damaged pack of forgotten data stays too, named, while gc reclaims the rest.
#[test]
fn a_damaged_pack_of_forgotten_data_is_kept_and_gc_goes_on() {
    let store = TestStore::new();
    let kept = stream_of(&store, "kept", &[("a.bin", 3_000_000, 1)]);
    store.snapshot_bytes(&kept, "kept");
    let gone = stream_of(&store, "gone", &[("b.bin", 3_000_000, 2)]);
    let gone_packs = snapshot_new_packs(&store, &gone, "gone");
    let later = stream_of(&store, "later", &[("c.bin", 2_000_000, 8)]);
    let later_packs = snapshot_new_packs(&store, &later, "later");
    store.ok(&["rm", "gone", "later"]);
    // Cut inside its last record, and junk after another pack's records.
    let biggest = biggest(&gone_packs);
    truncate_by(&biggest, 100);
    let smallest = gone_packs
        .iter()
        .min_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    if *smallest != biggest {
        let mut bytes = std::fs::read(smallest).unwrap();
        bytes.extend_from_slice(b"JUNK");
        std::fs::write(smallest, bytes).unwrap();
    }

    let out = store.run(&["gc", "--grace", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let named = report["damaged_packs"].as_array().unwrap();
    assert_eq!(named.len(), gone_packs.len(), "{report}");
    for p in &gone_packs {
        assert!(p.exists(), "damaged {} was deleted", p.display());
    }
    for p in &later_packs {
        assert!(!p.exists(), "{} was kept", p.display());
    }
    assert_eq!(sha256_hex(&store.export("kept")), sha256_hex(&kept));
}

/// An index rebuilt without a pack it could not read (bytes appended to it) lacks chunks its
/// snapshots need: gc then deletes no pack file the index does not name, as that one may be
/// where they are.
#[test]
fn gc_keeps_unindexed_packs_while_snapshots_need_chunks_the_index_lacks() {
    let store = TestStore::new();
    // Over one pack's worth: the first pack holds data only, the record is in the last.
    let big = stream_of(&store, "big", &[("big.bin", 40 << 20, 9)]);
    let packs = snapshot_new_packs(&store, &big, "big");
    assert!(packs.len() >= 2, "{packs:?}");
    let data_only = &biggest(&packs);
    let mut bytes = std::fs::read(data_only).unwrap();
    bytes.extend_from_slice(b"junk\n");
    std::fs::write(data_only, bytes).unwrap();
    sh(&format!("touch -d '2 hours ago' '{}'", data_only.display()));
    for f in std::fs::read_dir(store.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("cellar.db") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let out = store.run(&["repair-index"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = store.run(&["gc", "--grace", "0"]);
    assert!(data_only.exists(), "gc deleted the pack: {}", stderr(&out));
    // Put right by hand, the pack serves the snapshot again.
    let len = std::fs::metadata(data_only).unwrap().len();
    truncate_by(data_only, 5);
    assert_eq!(std::fs::metadata(data_only).unwrap().len(), len - 5);
    let out = store.run(&["repair-index", "--force"]);
    assert_success(&out, &["repair-index", "--force"]);
    assert_eq!(sha256_hex(&store.export("big")), sha256_hex(&big));
}

#[test]
fn a_damaged_pack_the_index_needs_is_named_and_the_rest_reclaimed() {
    let store = TestStore::new();
    // One frame holds a.bin's chunks and the start of b.bin's: with only a.bin live, the
    // pack is mostly dead, so gc repacks it, and checks a.bin's chunks as it copies them.
    let both = stream_of(
        &store,
        "both",
        &[("a.bin", 1_000_000, 3), ("b.bin", 5_000_000, 4)],
    );
    let damaged = snapshot_new_packs(&store, &both, "both");
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    let damaged = &damaged[0];
    let one = stream_of(&store, "one", &[("a.bin", 1_000_000, 3)]);
    store.snapshot_bytes(&one, "one");
    // A forgotten snapshot's pack, after the damaged one in gc's order.
    let later = stream_of(&store, "later", &[("c.bin", 2_000_000, 5)]);
    let later_packs = snapshot_new_packs(&store, &later, "later");
    store.ok(&["rm", "both"]);
    store.ok(&["rm", "later"]);
    // a.bin's bytes are stored as they are (noise does not compress): found by content, as
    // the compression workers' records reach the pack in either order.
    let mut bytes = std::fs::read(damaged).unwrap();
    let probe = &noise(1_000_000, 3)[500_000..500_064];
    let at = bytes.windows(probe.len()).position(|w| w == probe);
    let at = at.expect("a.bin's bytes stored as they are");
    bytes[at] ^= 0xff;
    std::fs::write(damaged, bytes).unwrap();

    let out = store.run(&["gc", "--grace", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert!(err.contains("damaged pack left as it is"), "{err}");
    assert!(
        err.contains(name) && err.contains("fails its checksum"),
        "{err}"
    );
    assert!(err.contains("cellar verify --data"), "{err}");
    assert!(!err.contains("store damaged: store damaged"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = report["damaged_packs"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{report}");
    assert!(listed[0].as_str().unwrap().contains(name), "{report}");
    // The damaged pack is as it was; the packs after it were reclaimed all the same.
    assert!(damaged.exists());
    for p in &later_packs {
        assert!(!p.exists(), "{} was kept", p.display());
    }
    // verify names the damage gc left; a later gc says the same again, and no more.
    let out = store.run(&["verify", "--data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = store.run(&["gc", "--grace", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("damaged pack left").count(), 1);
}
