//! `gc`: reclaims what forgotten snapshots left, never loses data: not when killed at any
//! step, not beside a running ingest or a reader of a forgotten snapshot.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::crash::assert_consistent;

mod beside_ingest;
mod beside_verify;
mod damaged_packs;
mod dry_run;
mod killed_commit;
mod leases;

/// A lineage of `n` snapshots: a shared tree plus, in each, a large file of its own.
pub(super) fn lineage(store: &TestStore, n: u64, big: usize) -> Vec<(String, Vec<u8>)> {
    let dir = store.scratch("tree");
    crate::trees::portable_tree(&dir);
    let mut out = Vec::new();
    for i in 0..n {
        let _ = std::fs::remove_dir_all(dir.join("own"));
        write_file(&dir.join(format!("own/{i}.bin")), &noise(big, 900 + i));
        write_file(&dir.join("etc/version"), format!("{i}\n").as_bytes());
        let stream = tar_of_dir(&dir);
        let id = store.snapshot_bytes(&stream, "vm");
        out.push((id, stream));
    }
    out
}

/// Pack files plus the index: what the store costs on disk.
pub(super) fn store_size(store: &TestStore) -> u64 {
    let packs: u64 = store
        .pack_files()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    packs
        + std::fs::metadata(store.path().join("cellar.db"))
            .unwrap()
            .len()
}

pub(super) fn verify_ok(store: &TestStore, data: bool) {
    let args: &[&str] = if data {
        &["verify", "--data"]
    } else {
        &["verify"]
    };
    let out = store.run(args);
    assert_success(&out, args);
}

/// Condemned rows point at indexed frames too (readers fall back to them).
pub(super) fn assert_condemned_consistent(store: &TestStore) {
    let n: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM condemned c LEFT JOIN frames f ON f.id = c.frame
             WHERE f.id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "condemned rows whose frame is not indexed");
}

pub(super) fn gc_json(store: &TestStore, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    store.json(&all)
}

/// Everything gc could change, to compare before and after a dry run.
pub(super) fn state(store: &TestStore) -> (Vec<std::path::PathBuf>, Vec<i64>) {
    let db = store.db();
    let counts = [
        "chunks",
        "condemned",
        "frames",
        "packs",
        "snapshots",
        "leases",
    ]
    .iter()
    .map(|t| {
        db.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    })
    .collect();
    (store.pack_files(), counts)
}

#[test]
fn prune_then_gc_reclaims_space_and_keeps_data() {
    let store = TestStore::new();
    let snaps = lineage(&store, 4, 3_000_000);
    store.ok(&["prune", "--keep-last", "1"]);
    let before = state(&store);
    let dry = gc_json(&store, &["--dry-run", "--grace", "0"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["bytes_freed"].as_u64().unwrap() > 6_000_000, "{dry}");
    assert_eq!(state(&store), before, "--dry-run changed the store");

    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["chunks_condemned"], r["chunks_deleted"], "{r}");
    let (kept, stream) = snaps.last().unwrap();
    assert!(store.export(kept) == *stream);
    verify_ok(&store, true);
    assert_consistent(&store);

    // A fresh store holding only the kept snapshot.
    let fresh = TestStore::new();
    fresh.snapshot_bytes(stream, "vm");
    let (got, want) = (store_size(&store), store_size(&fresh));
    assert!(
        (got as f64) <= want as f64 * 1.1,
        "after gc the store is {got} bytes; a fresh one holding the same is {want}"
    );
    // Nothing left to do.
    let again = gc_json(&store, &["--grace", "0"]);
    assert_eq!(again["bytes_freed"], 0, "{again}");
    assert_eq!(again["chunks_condemned"], 0, "{again}");
}

/// Kill gc at each of its steps, twice over: the store stays consistent, and the next gc
/// finishes the work.
#[test]
fn crash_at_every_gc_step_loses_nothing() {
    let store = TestStore::new();
    let snaps = lineage(&store, 5, 1_500_000);
    let mut keep = &snaps[snaps.len() - 2..];
    store.ok(&["prune", "--keep-last", "2"]);
    for round in 0..2 {
        for point in ["gc:after-condemn", "gc:after-seal", "gc:after-switch"] {
            let out = store
                .cmd(&["gc", "--grace", "0"])
                .env("CELLAR_FAILPOINT", point)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                // Nothing left that reaches this step.
                continue;
            }
            assert!(
                stderr(&out).contains(point),
                "{round} {point}: {}",
                stderr(&out)
            );
            verify_ok(&store, true);
            assert_consistent(&store);
            assert_condemned_consistent(&store);
            for (id, stream) in keep {
                assert!(store.export(id) == *stream, "{point}: {id} changed");
            }
        }
        // Forget one more between rounds, so the second round has work again.
        if round == 0 {
            store.ok(&["prune", "--keep-last", "1"]);
            keep = &snaps[snaps.len() - 1..];
        }
    }
    gc_json(&store, &["--grace", "0"]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(
        r["bytes_freed"], 0,
        "the gc after the crashes left work: {r}"
    );
    verify_ok(&store, true);
    let (id, stream) = snaps.last().unwrap();
    assert!(store.export(id) == *stream);
}

/// A real SIGKILL at several moments of a gc on a bigger store.
#[test]
fn sigkill_during_gc_loses_nothing() {
    let store = TestStore::new();
    let snaps = lineage(&store, 6, 6_000_000);
    store.ok(&["prune", "--keep-last", "1"]);
    for delay_ms in [5, 40, 120, 300] {
        let mut child = store
            .cmd(&["gc", "--grace", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        verify_ok(&store, false);
        assert_consistent(&store);
        assert_condemned_consistent(&store);
    }
    gc_json(&store, &["--grace", "0"]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(r["bytes_freed"], 0, "{r}");
    verify_ok(&store, true);
    let (id, stream) = snaps.last().unwrap();
    assert!(store.export(id) == *stream);
}

/// An ingest that deduplicates against a just-forgotten snapshot's data while gc runs: both
/// succeed, and the new snapshot is whole.
#[test]
fn gc_beside_a_slow_ingest() {
    let store = TestStore::new();
    let dir = store.scratch("old");
    write_file(&dir.join("a/shared.bin"), &noise(2_000_000, 11));
    write_file(&dir.join("b/gone.bin"), &noise(500_000, 12));
    let old = store.snapshot_bytes(&tar_of_dir(&dir), "old");
    // The new stream starts with the old snapshot's data, then more of its own.
    let new_dir = store.scratch("new");
    write_file(&new_dir.join("a/shared.bin"), &noise(2_000_000, 11));
    write_file(&new_dir.join("z/own.bin"), &noise(1_000_000, 13));
    let stream = tar_of_dir(&new_dir);
    let mut child = store
        .cmd(&["snapshot", "--name", "new", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&stream[..2_200_000]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the ingest dedups against "old"
    store.ok(&["rm", &old]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    for piece in stream[2_200_000..].chunks(200_000) {
        stdin.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["snapshot", "(slow)"]);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(store.export(&id) == stream);
    verify_ok(&store, true);
    gc_json(&store, &["--grace", "0"]);
    assert!(store.export(&id) == stream);
    verify_ok(&store, true);
    assert_consistent(&store);
}

/// An export of a snapshot forgotten while it runs reads to the end through a gc with
/// `--grace 0`: the export pinned the snapshot, so gc keeps it whole (condemns nothing) and
/// names the lease. The file is larger than the export reads ahead, so most of it is looked
/// up after the gc. Once the export is done, the next gc takes it all.
#[test]
fn gc_beside_an_export_of_a_forgotten_snapshot() {
    let store = TestStore::new();
    let dir = store.scratch("old");
    write_file(&dir.join("big.bin"), &noise(24_000_000, 21));
    let stream = tar_of_dir(&dir);
    let id = store.snapshot_bytes(&stream, "old");
    let mut child = store
        .cmd(&["export", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut got = vec![0u8; 100_000];
    stdout.read_exact(&mut got).unwrap();
    store.ok(&["rm", &id]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(
        r["chunks_condemned"], 0,
        "the export's pin keeps the snapshot: {r}"
    );
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["leases"][0]["holder"], "export", "{r}");
    assert_eq!(r["leases"][0]["pid"], child.id(), "{r}");
    let start = Instant::now();
    stdout.read_to_end(&mut got).unwrap();
    assert!(start.elapsed() < Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "export failed: {}", stderr(&out));
    assert!(
        got == stream,
        "the export of the forgotten snapshot changed"
    );
    verify_ok(&store, true);
    // Once the export is done, it all goes.
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["leases"], serde_json::json!([]), "{r}");
    assert_eq!(store.pack_files().len(), 0, "{r}");
    // Nor are the fan-out directories the packs were in left behind.
    let left = entries(&store.path().join("packs"));
    assert!(left.is_empty(), "{left:?}");
    // And a snapshot after that makes the one it needs again.
    let id = store.snapshot_bytes(&stream, "again");
    assert!(store.export(&id) == stream);
}

/// A stream of `files` small files whose contents all change with `generation`: each
/// snapshot of the lineage adds as many index rows as it has files.
fn many_files(files: usize, generation: u64) -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..files {
        let data = format!("generation {generation} file {i}\n").repeat(1 + i % 5);
        member(
            &mut t,
            format!("d{}/f{i:05}", i % 20).as_bytes(),
            b'0',
            data.as_bytes(),
            b"",
            0o644,
        );
    }
    end_of_archive(&mut t);
    t
}

fn db_size(store: &TestStore) -> u64 {
    ["cellar.db", "cellar.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(store.path().join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// After a prune of most of a store's many small files, gc gives the index's space back:
/// `cellar.db` ends up no bigger than a fresh store's holding only what is kept.
#[test]
fn gc_compacts_the_index_after_pruning_many_members() {
    let store = TestStore::new();
    let mut last = Vec::new();
    for g in 0..5 {
        last = many_files(2_000, g);
        store.snapshot_bytes(&last, "vm");
    }
    store.ok(&["prune", "--keep-last", "1"]);
    let before = db_size(&store);
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_deleted"].as_u64().unwrap() >= 8_000, "{r}");
    let after = db_size(&store);

    // The same snapshot alone in a fresh store; its gc (nothing to reclaim) only folds the
    // WAL into the file, so both sizes are of checkpointed databases.
    let fresh = TestStore::new();
    fresh.snapshot_bytes(&last, "vm");
    gc_json(&fresh, &["--grace", "0"]);
    let want = db_size(&fresh);
    // The slack is for rows gc must keep: the kept snapshot's pieces and directory records are
    // deltas against its forgotten parents' (FORMAT §8.4), so those bases stay live, each a
    // chunk row and a frame row of its own (about 300 of each here) that a fresh store,
    // whose only snapshot has no parent, does not have.
    let bound = want + want / 10 + (128 << 10);
    assert!(
        before > bound,
        "the pruned index ({before} bytes) is already within bounds of a fresh one ({want}): \
         this test would not notice an index gc leaves as it is"
    );
    assert!(
        after <= bound,
        "after gc cellar.db is {after} bytes (it was {before}); a fresh store holding the same \
         snapshot has {want}"
    );
    // And at most half of it is waste (gc's rule for when to VACUUM, FORMAT §15.3): a VACUUM
    // of a copy packs it to no less than half its size.
    let copy = store.scratch("vacuumed.db");
    std::fs::copy(store.path().join("cellar.db"), &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    let packed = std::fs::metadata(&copy).unwrap().len();
    assert!(
        after <= 2 * packed,
        "after gc cellar.db is {after} bytes; VACUUM makes it {packed}"
    );
    assert!(store.export("vm") == last);
    verify_ok(&store, true);
}

/// A snapshot whose pack is sealed but which the index does not list, and which no killed
/// ingest's marker names (an index that lost its last commits: here a copy of `cellar.db`
/// taken while the ingest was committing, put back after it committed) is one `repair-index`
/// restores: gc must not delete its pack as a leftover. It refuses, names the pack and the
/// snapshot, and runs once the index lists it (or once it is forgotten).
#[test]
fn gc_refuses_while_an_unindexed_pack_holds_a_snapshot_repair_index_would_restore() {
    let store = TestStore::new();
    let first = lineage(&store, 1, 300_000);
    let dir = store.scratch("tree");
    write_file(&dir.join("own/late.bin"), &noise(400_000, 77));
    let stream = tar_of_dir(&dir);
    let file = store.scratch("late.tar");
    write_file(&file, &stream);
    let index = store.path().join("cellar.db");
    let older = store.scratch("cellar.db.older");
    let committing = store.stopped_at(
        &["snapshot", "--name", "vm", file.to_str().unwrap()],
        "commit:named",
    );
    // A copy as SQLite makes one (what its write-ahead log holds too).
    rusqlite::Connection::open(&index)
        .unwrap()
        .execute("VACUUM INTO ?1", [older.to_str().unwrap()])
        .unwrap();
    resume(&committing);
    assert_success(&committing.wait_with_output().unwrap(), &["snapshot"]);
    for side in ["cellar.db-wal", "cellar.db-shm"] {
        let _ = std::fs::remove_file(store.path().join(side));
    }
    std::fs::copy(&older, &index).unwrap();
    assert_eq!(store.snapshot_count(), 1);
    let packs = store.pack_files();

    for args in [
        &["gc", "--grace", "0"][..],
        &["gc", "--grace", "0", "--dry-run"],
    ] {
        let out = store.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("which the index does not list"), "{err}");
        assert!(err.contains("repair-index"), "{err}");
        assert_eq!(store.pack_files(), packs, "{args:?} deleted a pack");
    }
    let out = store.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "verify: {}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("that the index does not list"),
        "verify: {report}"
    );
    // However young the pack: the snapshot may reach older packs and indexed chunks.
    let out = store.run(&["gc"]);
    assert_eq!(out.status.code(), Some(1), "gc: {}", stderr(&out));
    assert_eq!(store.pack_files(), packs);

    store.ok(&["repair-index"]);
    assert_eq!(
        store.snapshot_count(),
        2,
        "repair-index restores the snapshot"
    );
    let restored = store.json(&["list", "--json"])[1]["short_id"]
        .as_str()
        .expect("short id")
        .to_string();
    assert!(store.export(&restored) == stream);
    store.ok(&["gc", "--grace", "0"]);
    assert!(store.export(&restored) == stream);
    assert!(store.export(&first[0].0) == first[0].1);
    // Once forgotten, it goes as any forgotten snapshot does.
    store.ok(&["rm", &restored]);
    store.ok(&["gc", "--grace", "0"]);
    assert_consistent(&store);
    assert!(store.export(&first[0].0) == first[0].1);
}
