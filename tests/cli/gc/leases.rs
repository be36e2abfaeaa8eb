//! Leases of processes that are gone, though their pid is not: gc must tell a killed
//! process's lease (and temp files) from a live one's when the pid now names another process,
//! or names one in another pid namespace, or it would keep what they hold forever.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{gc_json, verify_ok};
use crate::common::*;

/// What gc reclaims once `a` is forgotten, with no lease in the way.
fn forgotten_snapshot(store: &TestStore) -> Vec<u8> {
    let dir = store.scratch("a");
    write_file(&dir.join("a.bin"), &noise(3_000_000, 61));
    let stream = tar_of_dir(&dir);
    store.snapshot_bytes(&stream, "a");
    store.ok(&["rm", "a"]);
    stream
}

/// An ingest in a pid namespace of its own (as in a container), still running, holds its
/// lease against gc on the host, where its pid is some other process's; killed, its lease and
/// its temp files go, and what it held back is reclaimed.
#[test]
fn an_ingest_in_another_pid_namespace_holds_its_lease_until_it_is_killed() {
    require("unshare");
    let store = TestStore::new();
    forgotten_snapshot(&store);
    // A stream of new data, so the ingest has a temp pack by the time it waits.
    let dir = store.scratch("b");
    write_file(&dir.join("b.bin"), &noise(8_000_000, 62));
    let file = store.scratch("slow.tar");
    write_file(&file, &tar_of_dir(&dir));
    let script = format!(
        "head -c 6000000 '{f}'; sleep 60; tail -c +6000001 '{f}'",
        f = file.display()
    );
    // --kill-child: when unshare dies, the namespace's first process does, and with it
    // every process in the namespace.
    let mut ns = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(cellar_bin())
        .arg("--store")
        .arg(store.path())
        .args(["snapshot", "--name", "b", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Waited for with dry runs: a real gc before the ingest takes its lease would reclaim
    // the forgotten snapshot there and then, and leave nothing for the end to find.
    let start = Instant::now();
    loop {
        let r = gc_json(&store, &["--grace", "0", "--dry-run"]);
        let tmp_pack = entries(&store.path().join("tmp"))
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "pack"));
        if r["leases"].as_array().unwrap().len() == 1 && tmp_pack {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the ingest never started: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = gc_json(&store, &["--grace", "0"]);
    assert_eq!(live["bytes_freed"], 0, "held back by the ingest: {live}");
    // Its pid there is 1 (cellar itself, after unshare's fork): on the host, init. The lease
    // is not taken for stale, nor its temp files for leftovers.
    assert_eq!(live["leases"][0]["holder"], "ingest", "{live}");
    assert_ne!(live["leases"][0]["pid"], ns.id(), "{live}");
    assert_eq!(live["stale_leases"], 0, "{live}");
    assert_eq!(live["orphans_deleted"], 0, "{live}");

    ns.kill().unwrap();
    ns.wait().unwrap();
    let start = Instant::now();
    let r = loop {
        let r = gc_json(&store, &["--grace", "0"]);
        if r["stale_leases"] == 1 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the killed ingest's lease stays: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r["leases"], serde_json::json!([]), "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 2_000_000, "{r}");
    let left = entries(&store.path().join("tmp"));
    assert!(
        left.is_empty(),
        "the killed ingest's temp files stay: {left:?}"
    );
    assert_eq!(store.pack_files().len(), 0);
    verify_ok(&store, true);
}

/// A lease whose pid has since been given to another process (here: the test's own, alive)
/// is stale; a lease row of an older writer, which recorded the pid alone, is judged by the
/// pid, as before.
#[test]
fn a_lease_whose_pid_another_process_has_now_is_stale() {
    let store = TestStore::new();
    forgotten_snapshot(&store);
    let me = std::process::id();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ns = std::fs::metadata("/proc/self/ns/pid").unwrap();
    // The test's own pid, namespace and boot, but a start time no process of it has.
    let other = format!(
        "1.{}.{}",
        std::os::unix::fs::MetadataExt::ino(&ns),
        boot.trim()
    );
    let db = rusqlite::Connection::open(store.path().join("cellar.db")).unwrap();
    db.execute(
        "INSERT INTO leases (pid, started_epoch, started, holder, process)
         VALUES (?1, 0, strftime('%s','now'), 'ingest', ?2)",
        rusqlite::params![me, other],
    )
    .unwrap();
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(r["stale_leases"], 1, "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 2_000_000, "{r}");

    // The same pid with no more than the pid recorded: alive as far as can be told.
    forgotten_snapshot(&store);
    db.execute(
        "INSERT INTO leases (pid, started_epoch, started, holder)
             VALUES (?1, 0, strftime('%s','now'), 'ingest')",
        [me],
    )
    .unwrap();
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(r["stale_leases"], 0, "{r}");
    assert_eq!(r["leases"][0]["pid"], me, "{r}");
    assert_eq!(r["bytes_freed"], 0, "{r}");
}
