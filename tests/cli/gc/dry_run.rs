//! `gc --dry-run` against what gc then does, and what `verify` says of the data gc leaves.

use std::process::Command;

use super::*;

/// `--dry-run` says what gc would do now. After a prune, with the default grace period, the
/// newly condemned chunks wait and nothing is freed yet, as the real run then shows; with
/// `--grace 0` the waiting chunks go, and their packs with them, as the real run then does,
/// and so do orphan files.
#[test]
fn dry_run_says_what_gc_then_does() {
    let store = TestStore::new();
    let snaps = lineage(&store, 4, 3_000_000);
    store.ok(&["prune", "--keep-last", "1"]);
    let same = |dry: &serde_json::Value, real: &serde_json::Value| {
        let what = format!("\ndry  {dry}\nreal {real}");
        for f in [
            "packs_deleted",
            "packs_repacked",
            "chunks_condemned",
            "chunks_deleted",
            "chunks_waiting",
            "orphans_deleted",
        ] {
            assert_eq!(dry[f], real[f], "{f}:{what}");
        }
        let (d, r) = (
            dry["bytes_freed"].as_u64().unwrap() as f64,
            real["bytes_freed"].as_u64().unwrap() as f64,
        );
        // A repack's saving is estimated from the frames' compressed sizes.
        assert!((d - r).abs() <= r * 0.05, "bytes_freed:{what}");
    };

    let dry = gc_json(&store, &["--dry-run"]);
    assert!(dry["chunks_condemned"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(dry["chunks_deleted"], 0, "{dry}");
    assert_eq!(dry["bytes_freed"], 0, "{dry}");
    same(&dry, &gc_json(&store, &[]));

    // Left by killed runs: a pack no row names, and a dead process's temp file.
    let pack = &store.pack_files()[0];
    let orphan = pack.with_file_name(format!("{}.pack", "ab".repeat(32)));
    std::fs::copy(pack, &orphan).unwrap();
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let temp = store.path().join(format!("tmp/{dead}-1-0.pack"));
    write_file(&temp, b"a pack cut short");
    let dry = gc_json(&store, &["--dry-run", "--grace", "0"]);
    assert_eq!(dry["orphans_deleted"], 2, "{dry}");
    // The human report of a dry run speaks of what gc would do, not of what it did.
    let text = store.ok(&["gc", "--dry-run", "--grace", "0"]);
    assert!(
        text.starts_with("dry run: nothing was changed; gc now would:\n"),
        "{text}"
    );
    for want in [
        "packs to delete:",
        "bytes to free:",
        "orphan files to delete:  2",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    assert!(
        orphan.exists() && temp.exists(),
        "--dry-run deleted orphans"
    );
    assert_eq!(dry["chunks_condemned"], 0, "condemned already: {dry}");
    assert!(dry["chunks_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["bytes_freed"].as_u64().unwrap() > 6_000_000, "{dry}");
    same(&dry, &gc_json(&store, &["--grace", "0"]));
    assert!(!orphan.exists() && !temp.exists(), "gc left the orphans");

    let (kept, stream) = snaps.last().unwrap();
    assert!(store.export(kept) == *stream);
}

/// With nothing to collect, a dry run says so, as the real run then shows: an ingest's small
/// last pack (a little metadata and the snapshot's record) is live, not half dead. And it
/// lists the leases of live processes, as a real run does: here an ingest's.
#[test]
fn dry_run_of_a_store_with_nothing_to_collect_and_a_running_ingest() {
    let store = TestStore::new();
    let snaps = lineage(&store, 2, 300_000);
    let dry = gc_json(&store, &["--dry-run", "--grace", "0"]);
    let real = gc_json(&store, &["--grace", "0"]);
    for f in ["packs_deleted", "packs_repacked", "bytes_freed"] {
        assert_eq!(dry[f], 0, "{f}: {dry}");
        assert_eq!(real[f], 0, "{f}: {real}");
    }

    // An ingest that holds its lease while it waits for the rest of its stream.
    let (_, stream) = &snaps[0];
    let file = store.scratch("slow.tar");
    write_file(&file, stream);
    let script = format!(
        "head -c 10240 '{f}'; sleep 3; tail -c +10241 '{f}'",
        f = file.display()
    );
    let mut ingest = store
        .cmd(&["snapshot", "--name", "slow", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let dry = loop {
        let dry = gc_json(&store, &["--dry-run"]);
        if dry["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["holder"] == "ingest")
        {
            break dry;
        }
        assert!(
            start.elapsed().as_secs() < 3,
            "no ingest lease listed: {dry}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(dry["leases"][0]["pid"], ingest.id(), "{dry}");
    assert!(ingest.wait().unwrap().success());
}

/// Snapshots of one unchanged stream: each one after the first writes a pack holding only its
/// snapshot record. Forgetting them leaves those packs dead (and the first one mostly dead)
/// whatever the grace period, and the dry run says so, as gc then does. A grace period
/// longer than the clock's past is no error.
#[test]
fn dry_run_counts_packs_of_forgotten_snapshot_records() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm\n");
    let stream = tar_of_dir(&dir);
    for _ in 0..4 {
        store.snapshot_bytes(&stream, "vm");
    }
    store.ok(&["rm", "vm~1", "vm~2", "vm~3"]);
    for grace in [&[][..], &["--grace", "0"]] {
        let dry = gc_json(&store, &[&["--dry-run"][..], grace].concat());
        assert!(dry["packs_deleted"].as_u64().unwrap() >= 2, "{dry}");
        if grace.is_empty() {
            continue;
        }
        let real = gc_json(&store, grace);
        for f in ["packs_deleted", "packs_repacked", "bytes_freed"] {
            assert_eq!(dry[f], real[f], "{f}:\ndry  {dry}\nreal {real}");
        }
    }
    let again = gc_json(&store, &["--dry-run", "--grace", "0"]);
    assert_eq!(
        (&again["packs_deleted"], &again["packs_repacked"]),
        (&0.into(), &0.into()),
        "gc left work for the next run: {again}"
    );
    for grace in ["9223372036854775808", "18446744073709551615"] {
        let dry = gc_json(&store, &["--dry-run", "--grace", grace]);
        assert_eq!(dry["packs_deleted"], 0, "{dry}");
        gc_json(&store, &["--grace", grace]);
    }
    store.ok(&["verify", "--data"]);
}

/// A forgotten snapshot's data that gc leaves in a pack still mostly live is, to verify, dead
/// bytes named for what they are; while its chunks wait out the grace period they are not
/// dead yet, and not named.
#[test]
fn verify_names_dead_data_left_in_a_live_pack_for_what_it_is() {
    let store = TestStore::new();
    // The second snapshot drops a 5 MB file (whole frames of it), beside 12 MB that stay.
    let dir = store.scratch("tree");
    write_file(&dir.join("a-gone.bin"), &noise(5_000_000, 31));
    write_file(&dir.join("b-kept.bin"), &noise(12_000_000, 32));
    store.snapshot_bytes(&tar_of_dir(&dir), "vm");
    std::fs::remove_file(dir.join("a-gone.bin")).unwrap();
    store.snapshot_bytes(&tar_of_dir(&dir), "vm");
    store.ok(&["rm", "vm~1"]);
    let notes =
        |store: &TestStore| store.json(&["verify", "--data", "--json"])["notes"].to_string();
    let waiting = gc_json(&store, &[]);
    assert!(waiting["chunks_waiting"].as_u64().unwrap() > 0, "{waiting}");
    assert!(!notes(&store).contains("record(s)"), "{}", notes(&store));
    let real = gc_json(&store, &["--grace", "0"]);
    assert_eq!(
        real["packs_repacked"], 0,
        "the pack is still mostly live: {real}"
    );
    let said = notes(&store);
    assert!(said.contains("hold no chunk the index uses"), "{said}");
    assert!(said.contains("forgotten snapshots"), "{said}");
}
