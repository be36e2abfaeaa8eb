//! Concurrent writers both succeed; a writer that waits says for what; readers never block.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;

use crate::common::*;
use crate::trees::varied_tree;

fn streams(store: &TestStore) -> (Vec<u8>, Vec<u8>) {
    let root = store.scratch("tree");
    varied_tree(&root);
    for i in 0..8 {
        write_file(
            &root.join(format!("bulk/{i}.bin")),
            &noise(1_500_000, 10 + i),
        );
    }
    let r = root.to_str().unwrap();
    let a = tar_stream(&["tar", "-cf", "-", "-C", r, "."]);
    write_file(&root.join("bulk/extra.bin"), &noise(2_000_000, 99));
    let b = tar_stream(&["tar", "--format=posix", "-cf", "-", "-C", r, "."]);
    (a, b)
}

#[test]
fn two_snapshots_at_once_both_succeed() {
    let store = TestStore::new();
    let (a, b) = streams(&store);
    std::fs::write(store.scratch("a.tar"), &a).unwrap();
    std::fs::write(store.scratch("b.tar"), &b).unwrap();
    // Same lineage and different lineages, all at once.
    let spawn = |name: &str, file: &str| {
        store
            .cmd(&[
                "snapshot",
                "--name",
                name,
                store.scratch(file).to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [
        spawn("vm", "a.tar"),
        spawn("vm", "b.tar"),
        spawn("other", "b.tar"),
    ];
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_success(&out, &["snapshot (concurrent)"]);
    }
    let list = store.json(&["list", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for s in list {
        let bytes = store.export(s["id"].as_str().unwrap());
        assert_eq!(sha256_hex(&bytes), s["sha256"].as_str().unwrap());
    }
    // The two `vm` snapshots form a lineage in commit order, whichever committed first.
    let vm: Vec<_> = list.iter().filter(|s| s["name"] == "vm").collect();
    assert_eq!(vm[1]["parent"], vm[0]["id"]);
    crate::crash::assert_consistent(&store);
}

#[test]
fn a_waiting_writer_says_why_and_readers_do_not_wait() {
    let store = TestStore::new();
    let (a, b) = streams(&store);
    store.snapshot_bytes(&a, "vm");

    // Hold the commit lock as another writer would.
    let lock = File::options()
        .write(true)
        .open(store.path().join("lock"))
        .expect("lock file exists after a snapshot");
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let mut child = store
        .cmd(&["snapshot", "--name", "vm", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&b).unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting for another cellar process"),
        "stderr: {line:?}"
    );

    // While it waits: readers work and see only committed snapshots.
    assert_eq!(store.snapshot_count(), 1);
    assert_eq!(store.export("vm"), a);

    drop(lock);
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(store.snapshot_count(), 2);
}

/// Writers that opened the index and wait for the commit lock while `repair-index` holds it
/// (an `rm`, a `gc`), or a snapshot that opened it before a whole repair ran, would commit into
/// the index the repair set aside, deciding on what that one said: each stops instead, saying
/// why, and changes nothing; the rebuilt index holds what was there, and the same commands
/// run again work.
#[test]
fn writers_stop_rather_than_write_into_an_index_repair_set_aside() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm\n");
    write_file(&dir.join("data.bin"), &noise(300_000, 61));
    let base = tar_of_dir(&dir);
    store.snapshot_bytes(&base, "vm");
    store.snapshot_bytes(&base, "db");
    write_file(&dir.join("etc/motd"), b"new\n");
    let next = store.scratch("next.tar");
    write_file(&next, &tar_of_dir(&dir));
    let next_arg = next.to_str().unwrap();
    let refused = |what: &str, out: std::process::Output, err: String| {
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("rebuilt by `cellar repair-index`"),
            "{what}: {err}"
        );
    };

    // A snapshot with the index open, before it has written anything a repair would see.
    let snapshot = store.stopped_at(&["snapshot", "--name", "vm", next_arg], "ingest:start");
    // rm and gc waiting for the lock a repair holds.
    let repair = store.stopped_at(&["repair-index"], "repair:locked");
    let waiting: Vec<_> = [("rm", vec!["rm", "db"]), ("gc", vec!["gc", "--grace", "0"])]
        .into_iter()
        .map(|(what, args)| {
            let log = store.scratch(&format!("{what}.err"));
            let child = store
                .cmd(&args)
                .stdout(Stdio::piped())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap();
            wait_until(&format!("{what} to wait for the lock"), || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("waiting for another cellar process")
            });
            (what, child, log)
        })
        .collect();
    resume(&repair);
    let repaired = repair.wait_with_output().unwrap();
    assert!(repaired.status.success(), "{}", stderr(&repaired));
    for (what, child, log) in waiting {
        let out = child.wait_with_output().unwrap();
        refused(what, out, std::fs::read_to_string(&log).unwrap());
    }
    resume(&snapshot);
    let out = snapshot.wait_with_output().unwrap();
    let err = stderr(&out);
    refused("snapshot", out, err);

    // Nothing changed: both snapshots, nothing else, and a clean index.
    let names: Vec<String> = store
        .json(&["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["vm", "db"]);
    store.ok(&["verify", "--data"]);
    // Run again, they work.
    store.ok(&["rm", "db"]);
    store.ok(&["snapshot", "--name", "vm", next_arg]);
    store.ok(&["gc", "--grace", "0"]);
    assert_eq!(store.snapshot_count(), 2);
    store.ok(&["verify", "--data"]);
    assert!(store.export("vm") == std::fs::read(&next).unwrap());
}
