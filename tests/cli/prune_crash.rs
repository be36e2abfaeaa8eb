//! `prune` killed mid-work: by a failpoint at each step of the forget, and by a real SIGKILL
//! timed by what the process has written. Every kill leaves each snapshot either forgotten or
//! not, as one set; `verify` passes; the next snapshot works; `gc` reclaims what the killed
//! runs left; and `repair-index` agrees with the index once the forget is done.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::crash::assert_consistent;

/// A small hand-made stream: a few files, one of which changes with `generation`, so each
/// snapshot of a lineage has some data of its own for gc to reclaim.
fn stream(generation: u64) -> Vec<u8> {
    let mut t = Vec::new();
    member(&mut t, b"etc/", b'5', b"", b"", 0o755);
    member(&mut t, b"etc/hostname", b'0', b"vm1\n", b"", 0o644);
    member(
        &mut t,
        b"usr/shared.bin",
        b'0',
        &noise(40_000, 7),
        b"",
        0o644,
    );
    let own = noise(20_000 + generation as usize, 1_000 + generation);
    member(&mut t, b"var/own.bin", b'0', &own, b"", 0o644);
    end_of_archive(&mut t);
    t
}

/// Snapshots `from..to` of lineage `name`; (full id, stream) each.
fn lineage(store: &TestStore, name: &str, from: u64, to: u64) -> Vec<(String, Vec<u8>)> {
    let made: Vec<(String, Vec<u8>)> = (from..to)
        .map(|g| {
            let s = stream(g);
            (store.snapshot_bytes(&s, name), s)
        })
        .collect();
    let full: std::collections::HashMap<String, String> = store
        .json(&["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().to_string();
            (id[..12].to_string(), id)
        })
        .collect();
    made.into_iter()
        .map(|(short, s)| (full[&short].clone(), s))
        .collect()
}

/// The full ids `list` shows.
fn listed(store: &TestStore) -> BTreeSet<String> {
    listed_at(&store.path())
}

fn listed_at(path: &Path) -> BTreeSet<String> {
    let out = cellar_at(path, &["list", "--json"]);
    assert_success(&out, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// What `repair-index` makes of the packs alone: run on a copy of the store, so the store
/// under test keeps its own index.
fn repaired(store: &TestStore, name: &str) -> BTreeSet<String> {
    let copy = store.scratch(name);
    let _ = std::fs::remove_dir_all(&copy);
    sh(&format!(
        "cp -a '{}' '{}'",
        store.path().display(),
        copy.display()
    ));
    let out = cellar_at(&copy, &["repair-index"]);
    assert_success(&out, &["repair-index", "(on a copy)"]);
    listed_at(&copy)
}

fn verify_ok(store: &TestStore) {
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}

/// Files in `STORE/tmp` and pack files no `packs` row names: what killed processes leave.
fn leftovers(store: &TestStore) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let tmp: Vec<PathBuf> = std::fs::read_dir(store.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let indexed: BTreeSet<String> = {
        let db = store.db();
        let mut stmt = db.prepare("SELECT lower(hex(name)) FROM packs").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let unindexed = store
        .pack_files()
        .into_iter()
        .filter(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            !indexed.contains(stem)
        })
        .collect();
    (tmp, unindexed)
}

fn ids(list: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    list.iter().map(|(id, _)| id.clone()).collect()
}

/// Abort at each step of the forget, twice over. Each kill forgets nothing (the list is
/// unchanged, not partly pruned); what it leaves is a temp file or an unindexed tombstone
/// pack. The first round's leftovers go to gc with the forget never redone: the snapshots
/// stay, and `repair-index` agrees. The second round's forget is redone: it is idempotent,
/// and `repair-index` agrees again.
#[test]
fn prune_killed_at_every_forget_step_forgets_all_or_nothing() {
    let store = TestStore::new();
    let vm = lineage(&store, "vm", 0, 6);
    let db = lineage(&store, "db", 100, 102);
    let all: BTreeSet<String> = ids(&vm).union(&ids(&db)).cloned().collect();
    // --keep-last 2 keeps vm's newest two and both of db.
    let kept: BTreeSet<String> = ids(&vm[4..]).union(&ids(&db)).cloned().collect();

    for round in 0..2 {
        let mut left = 0;
        for point in [
            "forget:before-seal",
            "forget:after-tombstone",
            "forget:in-transaction",
        ] {
            let out = store
                .cmd(&["prune", "--keep-last", "2"])
                .env("CELLAR_FAILPOINT", point)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                !out.status.success() && stderr(&out).contains(point),
                "round {round}, {point}: the prune should have died there; stderr:\n{}",
                stderr(&out)
            );
            assert_eq!(
                listed(&store),
                all,
                "round {round}, {point}: a killed prune changed the list"
            );
            verify_ok(&store);
            assert_consistent(&store);
            let (tmp, unindexed) = leftovers(&store);
            left += 1;
            assert_eq!(
                tmp.len() + unindexed.len(),
                left,
                "round {round}, {point}: each kill leaves exactly one file \
                 (tmp {tmp:?}, unindexed packs {unindexed:?})"
            );
            if point == "forget:after-tombstone" && round == 0 {
                // A sealed tombstone no index row names: repair-index cannot tell it was
                // never committed, and honours it (FORMAT §15.5).
                assert_eq!(
                    repaired(&store, "repair-in-doubt"),
                    kept,
                    "repair-index should honour a sealed tombstone"
                );
            }
        }
        if round == 0 {
            // Never redone: gc deletes the orphans, the snapshots stay, and a rebuilt index
            // now agrees with the store's.
            let r = store.json(&["gc", "--grace", "0", "--json"]);
            assert_eq!(r["orphans_deleted"], 3, "{r}");
            assert_eq!(leftovers(&store), (vec![], vec![]), "gc left files");
            assert_eq!(listed(&store), all);
            assert_eq!(repaired(&store, "repair-after-gc"), all);
        } else {
            // Redone: the forget takes, once, and the packs say the same.
            store.ok(&["prune", "--keep-last", "2"]);
            assert_eq!(listed(&store), kept);
            assert_eq!(repaired(&store, "repair-after-redo"), kept);
            // Again: nothing left to forget, nothing changes.
            store.ok(&["prune", "--keep-last", "2"]);
            assert_eq!(listed(&store), kept);
        }
    }

    // The next snapshot works and replays exactly; gc reclaims the killed runs' files and the
    // forgotten snapshots' data, and keeps the rest whole.
    let next = stream(6);
    let id = store.snapshot_bytes(&next, "vm");
    assert!(store.export(&id) == next, "the next snapshot changed");
    let r = store.json(&["gc", "--grace", "0", "--json"]);
    assert_eq!(r["orphans_deleted"], 3, "{r}");
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(leftovers(&store), (vec![], vec![]), "gc left files");
    verify_ok(&store);
    assert_consistent(&store);
    for (id, s) in vm[4..].iter().chain(&db) {
        assert!(store.export(id) == *s, "{id} changed");
    }
    assert_eq!(repaired(&store, "repair-end"), listed(&store));
}

/// A real SIGKILL of prunes over a long lineage: the first stopped at a failpoint once its
/// tombstone is sealed (mid-forget, certainly), the others killed the moment their tombstone
/// appears in `tmp/`, or after a delay. Each kill leaves the whole list or the whole pruned
/// list; the killed runs' files are gc's.
#[test]
fn sigkill_of_a_running_prune_leaves_a_consistent_set() {
    let store = TestStore::new();
    let snaps = lineage(&store, "vm", 0, 120);
    let tmp = store.path().join("tmp");
    let mut keep = snaps.len();
    let mut mid_forget = 0;
    for round in 0..8 {
        keep -= 10;
        let before = listed(&store);
        let after: BTreeSet<String> = ids(&snaps[snaps.len() - keep..]);
        let files_before = leftovers(&store);
        let tmp_before = files_before.0.len();
        let arg = keep.to_string();
        let args = ["prune", "--keep-last", &arg];
        let start = Instant::now();
        let mut child = if round == 0 {
            // Stopped once its tombstone is written: certain to be killed mid-forget, which
            // the timed rounds below reach only when the machine lets them (the window is a
            // few fsyncs long, and nearly nothing on tmpfs).
            store.stopped_at(&args, "forget:after-tombstone")
        } else {
            store
                .cmd(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        if round == 0 {
            // Stopped already.
        } else if round % 2 == 0 {
            // Spin (no sleep: the window is a few fsyncs long) until the tombstone's temp
            // pack appears, then kill.
            while std::fs::read_dir(&tmp).unwrap().count() == tmp_before
                && child.try_wait().unwrap().is_none()
                && start.elapsed() < Duration::from_secs(20)
            {}
        } else {
            std::thread::sleep(Duration::from_millis(5 * round));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = listed(&store);
        assert!(
            now == before || now == after,
            "round {round}: a killed prune left a partial list: {} listed, {} before, {} \
             wanted",
            now.len(),
            before.len(),
            after.len()
        );
        let mid = status.code().is_none() && now == before && leftovers(&store) != files_before;
        assert!(
            mid || round > 0,
            "the prune stopped mid-forget left nothing of its own"
        );
        mid_forget += usize::from(mid && round > 0);
        verify_ok(&store);
        if now == before {
            // Finish what the killed run started, as a user would.
            store.ok(&["prune", "--keep-last", &arg]);
        }
        assert_eq!(listed(&store), after, "round {round}");
    }
    // The timed kills land mid-forget only as the machine lets them: said, not asserted.
    eprintln!("{mid_forget} of 7 timed kills landed mid-forget");
    let next = stream(500);
    let id = store.snapshot_bytes(&next, "vm");
    assert!(store.export(&id) == next);
    store.ok(&["gc", "--grace", "0"]);
    assert_eq!(leftovers(&store), (vec![], vec![]), "gc left files");
    verify_ok(&store);
    assert_consistent(&store);
    assert_eq!(repaired(&store, "repair"), listed(&store));
}
