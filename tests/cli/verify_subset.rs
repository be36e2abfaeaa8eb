//! `verify --data-subset N/T`: subsets 1/T to T/T read every pack once between them, and
//! damage is found by the one subset that reads its pack.

use serde_json::Value;

use crate::common::*;

fn verify_json(store: &TestStore, args: &[&str]) -> (Option<i32>, Value) {
    let mut argv = vec!["verify", "--json"];
    argv.extend(args);
    let out = store.run(&argv);
    let j = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), j)
}

#[test]
fn subsets_read_every_pack_once_and_find_damage_in_one() {
    let store = TestStore::new();
    for i in 0..6u64 {
        let dir = store.scratch(&format!("t{i}"));
        write_file(&dir.join("data.bin"), &noise(300_000, 200 + i));
        store.snapshot_bytes(&tar_of_dir(&dir), &format!("vm{i}"));
    }
    let packs = store.pack_files();
    assert!(packs.len() >= 6, "{packs:?}");
    // The middle of the largest pack is one file's data.
    let damaged = biggest(&packs);
    flip_middle_byte(&damaged);
    let damaged_id = damaged.file_stem().unwrap().to_str().unwrap();

    let (code, whole) = verify_json(&store, &["--data"]);
    assert_eq!(code, Some(1), "{whole:#}");
    assert_eq!(whole["packs_read"], whole["packs"], "{whole:#}");
    let (code, index) = verify_json(&store, &[]);
    assert_eq!(code, Some(0), "the index alone cannot see it: {index:#}");
    assert!(index.get("packs_read").is_none(), "{index:#}");

    for of in [1u64, 3, 4] {
        let mut read = 0;
        let mut found = Vec::new();
        for n in 1..=of {
            let arg = format!("{n}/{of}");
            let (code, j) = verify_json(&store, &["--data-subset", &arg]);
            read += j["packs_read"].as_u64().unwrap();
            let problems = j["problems"].as_array().unwrap();
            if code == Some(1) {
                // Only the damaged pack's chunk, not the records the subset did not read.
                assert!(
                    problems.iter().all(|p| p["pack"] == damaged_id),
                    "{arg}: {j:#}"
                );
                found.push(n);
            } else {
                assert_eq!(code, Some(0), "{arg}: {j:#}");
                assert!(problems.is_empty(), "{arg}: {j:#}");
            }
        }
        assert_eq!(
            read,
            packs.len() as u64,
            "subsets of {of} read every pack once"
        );
        assert_eq!(
            found.len(),
            1,
            "one subset of {of} finds the damage: {found:?}"
        );
    }
    let text = String::from_utf8(store.run(&["verify", "--data-subset", "1/2"]).stdout).unwrap();
    assert!(
        text.starts_with("checked the index and the stored bytes of subset 1/2 of the packs ("),
        "{text}"
    );
}

#[test]
fn a_malformed_subset_is_a_usage_error() {
    let store = TestStore::new();
    for bad in [
        "0/3", "4/3", "1/0", "1", "a/b", "1/3/4", "-1/3", "01/03", "+1/3", "1/+3", " 1/3",
    ] {
        let out = store.run(&["verify", &format!("--data-subset={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("N/T"), "{bad}: {}", stderr(&out));
    }
    let out = store.run(&["verify", "--data", "--data-subset", "1/2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_subset_too_large_says_so() {
    let store = TestStore::new();
    let out = store.run(&["verify", "--data-subset", "1/4294967296"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at most 4294967295"),
        "{}",
        stderr(&out)
    );
}

/// Only a run that reads every pack (`--data`, or `1/1`) judges snapshot records: whether a
/// listed snapshot's record is in no pack, and whether a record is of a snapshot the index
/// does not list, which takes every forget record.
#[test]
fn records_are_judged_only_by_a_run_that_reads_every_pack() {
    let store = TestStore::new();
    let mut ids = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let dir = store.scratch(name);
        write_file(&dir.join("f"), &noise(50_000, 300 + i as u64));
        ids.push(store.snapshot_bytes(&tar_of_dir(&dir), name));
    }
    store.ok(&["rm", &ids[0]]);
    for of in 1..=8 {
        for n in 1..=of {
            let (code, j) = verify_json(&store, &["--data-subset", &format!("{n}/{of}")]);
            assert_eq!(code, Some(0), "{n}/{of}: {j:#}");
            assert_eq!(j["notes"], serde_json::json!([]), "{n}/{of}: {j:#}");
        }
    }

    // b again: a pack of its record alone, whose row is then lost.
    let dir = store.scratch("b");
    store.snapshot_bytes(&tar_of_dir(&dir), "c");
    rusqlite::Connection::open(store.path().join("cellar.db"))
        .unwrap()
        .execute(
            "DELETE FROM packs WHERE id = (SELECT max(id) FROM packs)",
            [],
        )
        .unwrap();
    for args in [&["--data"][..], &["--data-subset", "1/1"]] {
        let (code, j) = verify_json(&store, args);
        assert_eq!(code, Some(1), "{args:?}: {j:#}");
        assert!(
            j.to_string().contains("no indexed pack holds its record"),
            "{j:#}"
        );
    }
}
