//! A pack `repair-packs` gave up (its file was missing) whose file turns up again counts for
//! its chunks alone: its snapshot records may be of snapshots forgotten since, whose tombstones
//! gc dropped once no pack held their records.

use std::path::{Path, PathBuf};

use super::mixed_stream;
use crate::common::*;

/// Move the pack files `packs` out of the store to `away`, and give them up by name: the
/// (away, in the store) pairs.
fn give_up(
    store: &TestStore,
    packs: Vec<PathBuf>,
    away: &Path,
    code: i32,
) -> Vec<(PathBuf, PathBuf)> {
    let files: Vec<(PathBuf, PathBuf)> = packs
        .into_iter()
        .map(|f| (away.join(f.file_name().unwrap()), f))
        .collect();
    for (to, from) in &files {
        std::fs::rename(from, to).unwrap();
    }
    let names: Vec<String> = files
        .iter()
        .map(|(_, f)| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["repair-packs"];
    args.extend(names.iter().map(String::as_str));
    let out = store.run(&args);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    for name in &names {
        let mark = store.path().join("damaged").join(format!("{name}.retired"));
        assert!(mark.is_file(), "no {}", mark.display());
    }
    files
}

fn put_back(files: &[(PathBuf, PathBuf)]) {
    for (away, at) in files {
        // gc may have removed the emptied `packs/XX`.
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::rename(away, at).unwrap();
    }
}

#[test]
fn a_given_up_pack_put_back_brings_chunks_back_but_no_forgotten_snapshot() {
    let store = TestStore::new();
    let kept = mixed_stream(&store, "kept", 30);
    let kept_id = store.snapshot_bytes(&kept, "kept");
    let kept_packs = store.pack_files();
    let gone = mixed_stream(&store, "gone", 40);
    let gone_id = store.snapshot_bytes(&gone, "gone");
    let gone_full = store.json(&["show", &gone_id, "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gone_packs: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !kept_packs.contains(p))
        .collect();

    // `gone`'s packs go missing (a disk not mounted) and are given up; then `gone` is
    // forgotten, and gc drops what no pack needs any longer (its tombstone too, once no pack
    // holds its record).
    let away = store.scratch("away");
    std::fs::create_dir(&away).unwrap();
    let gone_files = give_up(&store, gone_packs, &away, 1);
    store.ok(&["rm", &gone_id]);
    store.ok(&["gc", "--grace", "0"]);

    // The files come back into `packs/`: verify notes them, gc neither deletes them nor stops
    // at their records, and a rebuilt index does not read them: `gone` stays forgotten.
    put_back(&gone_files);
    let out = store.run(&["verify"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("retired"), "{said}");
    store.ok(&["gc", "--grace", "0"]);
    for (_, f) in &gone_files {
        assert!(f.exists(), "gc deleted {}", f.display());
    }
    let out = store.run(&["repair-index", "--force"]);
    assert!(stderr(&out).contains("retired"), "{}", stderr(&out));
    assert!(
        !store.listed("id").contains(&gone_full),
        "{:?}",
        store.listed("id")
    );

    // `kept`'s packs go the same way: given up, its chunks are lost (exit 1), and once the
    // files are back `repair-packs` takes the chunks back from them, `kept` is whole again,
    // and every retired file is set aside, still without its records.
    let kept_files = give_up(&store, kept_packs, &away, 1);
    assert_eq!(store.run(&["verify"]).status.code(), Some(1));
    put_back(&kept_files);
    let report = super::salvage_json(&store, &[], 0);
    assert_eq!(
        report["packs"].as_array().unwrap().len(),
        gone_files.len() + kept_files.len(),
        "{report}"
    );
    for (_, f) in gone_files.iter().chain(&kept_files) {
        assert!(!f.exists(), "{} left in packs/", f.display());
    }
    assert!(!store.listed("id").contains(&gone_full));
    super::assert_whole(&store, &[(&kept_id, &kept)]);
    store.ok(&["repair-index"]);
    assert!(
        !store.listed("id").contains(&gone_full),
        "{:?}",
        store.listed("id")
    );
    assert_eq!(sha256_hex(&store.export(&kept_id)), sha256_hex(&kept));
}

/// The index files as they are now, to put back later (no process has the store open).
fn copy_index(store: &TestStore, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for f in ["cellar.db", "cellar.db-wal", "cellar.db-shm"] {
        let from = store.path().join(f);
        if from.exists() {
            std::fs::copy(&from, to.join(f)).unwrap();
        } else {
            let _ = std::fs::remove_file(to.join(f));
        }
    }
}

fn put_index_back(store: &TestStore, from: &Path) {
    for f in ["cellar.db", "cellar.db-wal", "cellar.db-shm"] {
        let to = store.path().join(f);
        let _ = std::fs::remove_file(&to);
        if from.join(f).exists() {
            std::fs::copy(from.join(f), &to).unwrap();
        }
    }
}

/// A mark names a pack retired, but the index names it (a copy of the index from before the
/// retirement put back, or a stray mark): the index is followed. `repair-index` reads the
/// pack, and `verify` says the mark is overruled.
#[test]
fn a_retired_mark_on_a_pack_the_index_names_is_overruled() {
    let store = TestStore::new();
    let a = mixed_stream(&store, "a", 50);
    store.snapshot_bytes(&a, "a");
    let a_packs = store.pack_files();
    let b = mixed_stream(&store, "b", 60);
    let b_id = store.snapshot_bytes(&b, "b");
    let b_packs: Vec<PathBuf> = store
        .pack_files()
        .into_iter()
        .filter(|p| !a_packs.contains(p))
        .collect();
    let before = store.scratch("index-before");
    copy_index(&store, &before);

    // b's packs given up while missing, then the old index and the files put back.
    let away = store.scratch("away");
    std::fs::create_dir(&away).unwrap();
    let files = give_up(&store, b_packs, &away, 1);
    put_back(&files);
    put_index_back(&store, &before);
    assert_eq!(sha256_hex(&store.export(&b_id)), sha256_hex(&b));
    let verify = store.ok(&["verify"]);
    assert!(verify.contains("the index is followed"), "{verify}");

    // A rebuilt index reads them: nothing is skipped, nothing lost, no --force needed.
    let out = store.run(&["repair-index"]);
    assert_success(&out, &["repair-index"]);
    assert!(!stderr(&out).contains("retired"), "{}", stderr(&out));
    super::assert_whole(&store, &[(&b_id, &b)]);
}

/// A delta and its base, in two packs given up together and put back together, are taken
/// back in one run: the delta is decoded against the base read from the other pack of the
/// run, before either is in the index again.
#[test]
fn a_delta_and_its_base_given_up_together_come_back_together() {
    let store = TestStore::new();
    let lineage = super::delta_lineage(&store);

    let away = store.scratch("away");
    std::fs::create_dir(&away).unwrap();
    let files = give_up(&store, store.pack_files(), &away, 1);
    put_back(&files);
    let report = super::salvage_json(&store, &[], 0);
    assert_eq!(report["lost"], serde_json::json!([]), "{report}");
    super::assert_whole(
        &store,
        &[(&lineage.id1, &lineage.v1), (&lineage.id2, &lineage.v2)],
    );
}

/// A retired pack put back whose objects the store holds again (here, copied from it the
/// first time) is set aside without copying them a second time.
#[test]
fn what_the_store_holds_again_is_not_copied_again() {
    let store = TestStore::new();
    let b = mixed_stream(&store, "b", 70);
    let b_id = store.snapshot_bytes(&b, "b");
    // Named outright, a sound pack is rewritten (and retired).
    let pack = super::biggest(&store.pack_files());
    let name = pack.file_stem().unwrap().to_str().unwrap().to_string();
    let first = super::salvage_json(&store, &[&name], 0);
    assert!(
        first["packs"][0]["objects"].as_u64().unwrap() > 0,
        "{first}"
    );
    let aside = store
        .path()
        .join(first["packs"][0]["moved_to"].as_str().unwrap());
    std::fs::rename(&aside, &pack).unwrap();

    let again = super::salvage_json(&store, &[], 0);
    assert_eq!(again["packs"][0]["objects"], 0, "{again}");
    assert_eq!(again["new_packs"].as_array().unwrap().len(), 0, "{again}");
    super::assert_whole(&store, &[(&b_id, &b)]);
}

/// ... but an object whose other copy is in a pack that is missing is copied: that pack may be
/// given up next, and then the retired pack's copy, set aside, would have been the last.
#[test]
fn what_only_a_missing_pack_holds_again_is_copied() {
    let store = TestStore::new();
    let b = mixed_stream(&store, "b", 80);
    let b_id = store.snapshot_bytes(&b, "b");
    let pack = super::biggest(&store.pack_files());
    let name = pack.file_stem().unwrap().to_str().unwrap().to_string();
    let first = super::salvage_json(&store, &[&name], 0);
    let aside = store
        .path()
        .join(first["packs"][0]["moved_to"].as_str().unwrap());
    std::fs::rename(&aside, &pack).unwrap();
    // The copy the first run wrote goes missing.
    let new = first["new_packs"][0].as_str().unwrap().to_string();
    let away = store.scratch("away");
    std::fs::create_dir(&away).unwrap();
    let new_path = store
        .path()
        .join("packs")
        .join(&new[..2])
        .join(format!("{new}.pack"));
    std::fs::rename(&new_path, away.join("new.pack")).unwrap();

    let again = super::salvage_json(&store, &[], 1);
    assert_eq!(again["missing"][0], new.as_str(), "{again}");
    assert_eq!(
        again["packs"][0]["objects"], first["packs"][0]["objects"],
        "{again}"
    );
    let given_up = super::salvage_json(&store, &[&new], 0);
    assert_eq!(given_up["lost"], serde_json::json!([]), "{given_up}");
    super::assert_whole(&store, &[(&b_id, &b)]);
}
