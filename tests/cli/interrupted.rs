//! An interrupt (SIGINT, SIGTERM, SIGHUP) of a running `snapshot`: it says so, exits 128 +
//! the signal, records nothing and leaves none of what it wrote, even while its input stalls.
//! Of a `restore`: it says what it leaves.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Files under the store's `tmp/`.
fn temp_files(store: &TestStore) -> usize {
    std::fs::read_dir(store.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `snapshot -- sh -c SCRIPT`, started.
fn snapshot_of(store: &TestStore, script: &str) -> std::process::Child {
    store
        .cmd(&["snapshot", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn an_interrupted_snapshot_records_nothing_and_leaves_nothing() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm\n");
    store.snapshot_bytes(&tar_of_dir(&dir), "base");
    let packs_before = store.pack_files();
    write_file(&dir.join("big.bin"), &noise(72 << 20, 5));
    let file = store.scratch("big.tar");
    write_file(&file, &tar_of_dir(&dir));
    // Most of the stream, then a stall far longer than the test waits (the stream is never
    // finished: the interrupt comes first). Through a command, the stall is a process of the
    // shell's own, which the interrupt must stop too, not leave behind.
    let feed = format!("head -c 50000000 '{}'; exec sleep 60", file.display());
    let stall = format!("sleep 61.{}", std::process::id());
    let feed_by_command = format!("head -c 50000000 '{}'; {stall}", file.display());
    for (sig, by_command) in [
        (libc::SIGTERM, false),
        (libc::SIGINT, true),
        (libc::SIGHUP, false),
    ] {
        let mut feeder = None;
        let mut cmd = if by_command {
            store.cmd(&["snapshot", "--", "sh", "-c", &feed_by_command])
        } else {
            let mut sh = std::process::Command::new("sh")
                .args(["-c", &feed])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut c = store.cmd(&["snapshot", "-"]);
            c.stdin(sh.stdout.take().unwrap());
            feeder = Some(sh);
            c
        };
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Until the ingest has sealed a pack of the new data.
        let start = Instant::now();
        while store.pack_files().len() == packs_before.len() {
            assert!(start.elapsed() < Duration::from_secs(60), "no pack sealed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        if let Some(mut sh) = feeder {
            let _ = sh.kill();
            let _ = sh.wait();
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128 + sig), "signal {sig}: {err}");
        assert!(
            err.contains(&format!(
                "interrupted by signal {sig}; nothing was recorded"
            )),
            "{err}"
        );
        assert_eq!(store.snapshot_count(), 1, "signal {sig}");
        if by_command {
            assert!(
                !running(&stall),
                "signal {sig}: `{stall}` outlived the snapshot"
            );
        }
        assert_eq!(store.pack_files(), packs_before, "signal {sig}: packs left");
        assert_eq!(temp_files(&store), 0, "signal {sig}: temp files left");
    }
    store.ok(&["verify", "--data"]);
}

/// An interrupt while the snapshot waits for another process's commit (here `rm`'s, stopped
/// holding the lock) stops it there: once the lock is free, nothing is committed.
#[test]
fn an_interrupt_while_waiting_to_commit_records_nothing() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm\n");
    store.snapshot_bytes(&tar_of_dir(&dir), "base");
    store.snapshot_bytes(&tar_of_dir(&dir), "other");
    let rm = store.stopped_at(&["rm", "other"], "forget:before-seal");
    write_file(&dir.join("etc/motd"), b"new\n");
    let stream = store.scratch("next.tar");
    write_file(&stream, &tar_of_dir(&dir));
    let log = store.scratch("snapshot.err");
    let child = store
        .cmd(&["snapshot", stream.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let err = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the snapshot to wait for the lock", || {
        err().contains("waiting for another cellar process")
    });
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    resume(&rm);
    let out = child.wait_with_output().unwrap();
    assert!(rm.wait_with_output().unwrap().status.success());
    let err = err();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert_eq!(store.snapshot_count(), 1, "only base is left: {err}");
    store.ok(&["verify"]);
}

/// An interrupt after the stream is read, while the snapshot waits for its command to exit,
/// stops it there, and the command with it: nothing is recorded, and the command does not
/// get to its end.
#[test]
fn an_interrupt_after_the_stream_records_nothing() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm\n");
    let mark = store.scratch("stream-done");
    let ended = store.scratch("command-ended");
    let stall = format!("sleep 62.{}", std::process::id());
    let script = format!(
        "tar -cf - -C '{}' .; exec >&-; touch '{}'; {stall}; touch '{}'",
        dir.display(),
        mark.display(),
        ended.display()
    );
    let child = snapshot_of(&store, &script);
    wait_until("the stream to end", || mark.exists());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        stderr(&out)
    );
    assert_eq!(store.snapshot_count(), 0, "{}", stderr(&out));
    assert!(
        !ended.exists(),
        "the snapshot waited for its command to end"
    );
    assert!(!running(&stall), "`{stall}` outlived the snapshot");
}

/// A second interrupt ends the snapshot at once, without waiting for the command to stop of
/// its own accord (it ignores SIGTERM here), but not without it: the command, and what it
/// started, are killed.
#[test]
fn a_second_interrupt_ends_at_once_and_takes_the_command_with_it() {
    let store = TestStore::new();
    let stall = format!("sleep 63.{}", std::process::id());
    let mark = store.scratch("writing");
    let script = format!(
        "trap '' TERM; printf 'x%.0s' $(seq 600); touch '{}'; {stall}",
        mark.display()
    );
    let child = snapshot_of(&store, &script);
    wait_until("the command to write", || mark.exists());
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = output_within_a_minute(child, "snapshot after two interrupts");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGINT),
        "{}",
        stderr(&out)
    );
    wait_until("the command to be gone", || !running(&stall));
    assert_eq!(store.snapshot_count(), 0);
}

/// An interrupt ends a restore where it is, saying what it leaves (exit 128 + the signal);
/// restoring again with --force completes the tree.
#[test]
fn an_interrupted_restore_says_what_it_leaves_and_force_completes_it() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    for i in 0..2000 {
        write_file(
            &dir.join(format!("d{}/f{i}", i % 20)),
            &noise(300, i as u64),
        );
    }
    store.snapshot_bytes(&tar_of_dir(&dir), "vm");
    let out_dir = store.scratch("out");
    let out_arg = out_dir.to_str().unwrap();
    let restore = store.stopped_at(&["restore", "vm", out_arg], "restore:child");
    assert_eq!(unsafe { libc::kill(restore.id() as i32, libc::SIGTERM) }, 0);
    resume(&restore);
    let out = restore.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(
        err.contains("restore stopped")
            && err.contains(out_arg)
            && err.contains("restore again with --force"),
        "{err}"
    );
    assert!(
        !err.contains("restored"),
        "no summary for a restore cut short: {err}"
    );

    store.ok(&["restore", "vm", out_arg, "--force"]);
    let whole = store.scratch("whole");
    store.ok(&["restore", "vm", whole.to_str().unwrap()]);
    crate::oci::assert_same_tree(&whole, &out_dir);
}
