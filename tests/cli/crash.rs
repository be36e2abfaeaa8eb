//! Crash safety: kill -9 mid-ingest or at any commit step leaves a consistent store with no
//! partial snapshot, and the next snapshot succeeds and exports bit-exact.

use std::io::Write;
use std::process::Stdio;

use crate::common::*;

/// The index only names what is on disk, and every snapshot replays exactly.
pub fn assert_consistent(store: &TestStore) {
    let db = store.db();
    let orphans: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN frames f ON f.id = c.frame WHERE f.id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "chunks whose frame is not indexed");
    let mut stmt = db.prepare("SELECT hex(name), size FROM packs").unwrap();
    let packs: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (name, size) in packs {
        let name = name.to_lowercase();
        let path = store
            .path()
            .join("packs")
            .join(&name[..2])
            .join(format!("{name}.pack"));
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            meta.len() as i64,
            size,
            "{} has the wrong size",
            path.display()
        );
    }
    for snap in store.json(&["list", "--json"]).as_array().unwrap() {
        let id = snap["id"].as_str().unwrap();
        let bytes = store.export(id);
        assert_eq!(sha256_hex(&bytes), snap["sha256"].as_str().unwrap());
    }
}

fn big_stream(store: &TestStore) -> Vec<u8> {
    // Incompressible, never-seen data throughout, so wherever the stream is cut the ingest
    // has new data in flight.
    let root = store.scratch("tree");
    crate::trees::portable_tree(&root);
    for i in 0..12 {
        write_file(
            &root.join(format!("bulk/{i}.bin")),
            &noise(2_000_000, 50 + i),
        );
    }
    tar_of_dir(&root)
}

/// kill -9 while the stream is still arriving (the rest of it is held back, so the kill lands
/// mid-ingest), at several points.
#[test]
fn kill_mid_ingest_records_nothing() {
    let store = TestStore::new();
    let stream = big_stream(&store);
    // An earlier snapshot, unrelated to the stream, must survive the crashes untouched.
    let other = store.scratch("other");
    crate::trees::portable_tree(&other);
    let base = tar_of_dir(&other);
    store.snapshot_bytes(&base, "base");
    let temp_files = || std::fs::read_dir(store.path().join("tmp")).unwrap().count();
    for fraction in [0.2, 0.5, 0.9] {
        let mut child = store
            .cmd(&["snapshot", "--name", "vm", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let cut = (stream.len() as f64 * fraction) as usize;
        let before = temp_files();
        stdin.write_all(&stream[..cut]).unwrap();
        stdin.flush().unwrap();
        // The writer has started a pack: the ingest is under way, not finished.
        wait_until("a pack being written", || temp_files() > before);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdin);
        assert_eq!(store.snapshot_count(), 1, "a killed ingest left a snapshot");
        assert_consistent(&store);
    }
    let id = store.snapshot_bytes(&stream, "vm");
    assert!(store.export(&id) == stream);
    assert!(store.export("base") == base);
    assert_eq!(store.snapshot_count(), 2);
    assert_consistent(&store);
}

/// Abort at each step of the commit: before the lock, once the last pack is named in the
/// lease, after the packs are sealed, inside the index transaction. None leaves a snapshot;
/// verify passes after each (a sealed pack holding the record of a snapshot never committed
/// is the killed ingest's leftover, not a lost snapshot); gc reclaims every leftover; each
/// next snapshot works.
#[test]
fn crash_at_every_commit_step_records_nothing() {
    let store = TestStore::new();
    let stream = big_stream(&store);
    for point in [
        "commit:before-lock",
        "commit:named",
        "commit:after-seal",
        "commit:in-transaction",
    ] {
        let mut child = store
            .cmd(&["snapshot", "--name", "vm", "-"])
            .env("CELLAR_FAILPOINT", point)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&stream);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "{point}: the process should have died"
        );
        assert!(stderr(&out).contains(point), "{point}: {}", stderr(&out));
        assert_eq!(
            store.snapshot_count(),
            0,
            "{point}: a crashed commit left a snapshot"
        );
        assert_consistent(&store);
        let verified = store.run(&["verify"]);
        assert_success(&verified, &["verify", "after", point]);
    }
    // Looking through packs/ for the leftovers' records passes over what is no fan-out
    // directory: a stray file, or (the same read_dir failing) one a gc removed meanwhile.
    let stray = store.path().join("packs/zz");
    std::fs::write(&stray, b"").unwrap();
    let verified = store.run(&["verify"]);
    assert_success(&verified, &["verify", "with a stray file in packs/"]);
    store.ok(&["gc", "--grace", "0"]);
    std::fs::remove_file(&stray).unwrap();
    assert!(
        store.pack_files().is_empty(),
        "gc left {:?}",
        store.pack_files()
    );
    assert_eq!(
        std::fs::read_dir(store.path().join("tmp")).unwrap().count(),
        0,
        "gc left temp files"
    );
    let id = store.snapshot_bytes(&stream, "vm");
    assert!(store.export(&id) == stream);
    let again = store.snapshot_bytes(&stream, "vm");
    assert!(store.export(&again) == stream);
    assert_consistent(&store);
}
