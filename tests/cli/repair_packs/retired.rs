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
    assert_eq!(sha256_hex(&store.export(&kept_id)), sha256_hex(&kept));
    assert_success(&store.run(&["verify", "--data"]), &["verify", "--data"]);
    store.ok(&["repair-index"]);
    assert!(
        !store.listed("id").contains(&gone_full),
        "{:?}",
        store.listed("id")
    );
    assert_eq!(sha256_hex(&store.export(&kept_id)), sha256_hex(&kept));
}
