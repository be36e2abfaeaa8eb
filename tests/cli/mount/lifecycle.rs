//! The lifecycles of a mount: --daemon returns once the mount answers; umount, fusermount3 -u,
//! SIGTERM and SIGINT end it cleanly (also with a file held open); kill -9 leaves a dead mount
//! that umount clears, and the store intact.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::fixtures::*;
use super::guard::*;
use super::oracle::archive;
use crate::common::*;
use crate::readonly::ReadOnlyView;
use crate::trees::*;

#[test]
fn daemon_returns_once_the_mount_answers_and_exits_on_umount() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[
            ("etc/hostname", b"vm1\n".to_vec()),
            ("usr/bin/tool", noise(100_000, 5)),
            ("var/log/x", b"x\n".to_vec()),
        ],
    );
    let id = store.snapshot_bytes(&stream, "vm");
    for round in 0..3 {
        let mut m = Mounted::new(&store, &format!("mnt{round}"));
        let err = m.daemon(&store, Some(&id));
        // No sleep: the mount answers as soon as the command returns.
        assert_eq!(
            names_in(&m.path("")),
            set(&["etc", "usr", "var"]),
            "round {round}: MOUNT/ right after --daemon"
        );
        assert_eq!(fs::read(m.path("usr/bin/tool")).unwrap(), noise(100_000, 5));
        let log = err
            .lines()
            .find_map(|l| l.split_once("; log: ").map(|(_, p)| p.trim().to_string()))
            .unwrap_or_else(|| panic!("stderr names no log file: {err}"));
        assert!(Path::new(&log).is_file(), "log {log} exists");
        let pid = m.daemon.expect("background pid");
        assert!(alive(pid));

        unmount(&["umount"], &m.path(""));
        assert!(
            wait_for(BOUND, || !alive(pid)),
            "round {round}: the background mount {pid} still runs after umount; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(!is_mounted(&m.path("")));
        assert!(
            names_in(&m.path("")).is_empty(),
            "the mount point is empty again"
        );
    }
    // SIGTERM to the background process: it unmounts and exits.
    let mut m = Mounted::new(&store, "mnt-term");
    m.daemon(&store, Some(&id));
    let pid = m.daemon.unwrap();
    assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), b"vm1\n");
    signal(pid as u32, libc::SIGTERM);
    assert!(
        wait_for(BOUND, || !alive(pid)),
        "the background mount {pid} still runs after SIGTERM"
    );
    assert!(
        !is_mounted(&m.path("")),
        "SIGTERM unmounted the background mount"
    );

    // The all-snapshots view too, unmounted with fusermount3 -u.
    let mut m = Mounted::new(&store, "all");
    m.daemon(&store, None);
    assert_eq!(names_in(&m.path("")), set(&["vm"]));
    let pid = m.daemon.unwrap();
    unmount(&["fusermount3", "-u"], &m.path(""));
    assert!(
        wait_for(BOUND, || !alive(pid)),
        "background mount exits after fusermount3 -u"
    );
}

#[test]
fn foreground_mount_unmounts_and_exits_on_sigterm_and_sigint() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[("a", b"a\n".to_vec()), ("big", noise(2_000_000, 9))],
    );
    let id = store.snapshot_bytes(&stream, "vm");

    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut m = Mounted::new(&store, &format!("mnt-{name}"));
        let pid = m.foreground(&store, Some(&id));
        assert_eq!(fs::read(m.path("a")).unwrap(), b"a\n");
        signal(pid, sig);
        let exit = m.wait_child(BOUND);
        assert!(
            exit.is_some(),
            "{name}: still running; stderr:\n{}",
            m.log_text()
        );
        assert_eq!(
            exit.unwrap().code(),
            Some(0),
            "{name}: exit status; stderr:\n{}",
            m.log_text()
        );
        assert!(!is_mounted(&m.path("")), "{name}: still mounted");
    }
}

#[test]
fn foreground_mount_exits_on_sigterm_while_a_file_is_open() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("big", noise(2_000_000, 9))]);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    let pid = m.foreground(&store, Some(&id));
    let mut held = File::open(m.path("big")).unwrap();
    let mut head = vec![0u8; 4096];
    held.read_exact(&mut head).unwrap();
    assert_eq!(head, noise(2_000_000, 9)[..4096]);
    signal(pid, libc::SIGTERM);
    let exit = m.wait_child(Duration::from_secs(10));
    let detached = !is_mounted(&m.path(""));
    if exit.is_none() {
        // Diagnose: does closing the file let it finish?
        drop(held);
        let later = m.wait_child(Duration::from_secs(5));
        panic!(
            "SIGTERM with a file open in the mount: the process did not exit within 10 s \
             (mount detached: {detached}); after closing the file: {later:?}; stderr:\n{}",
            m.log_text()
        );
    }
    assert_eq!(
        exit.unwrap().code(),
        Some(0),
        "exit status; stderr:\n{}",
        m.log_text()
    );
    assert!(detached, "the busy mount was detached");
    drop(held);
    // Its lease ended with it, though the kernel still held a file: no row waits for gc.
    let gc = store.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(gc["stale_leases"], 0, "{gc}");
    assert_eq!(gc["leases"], serde_json::json!([]), "{gc}");
}

#[test]
fn kill_9_leaves_a_mount_umount_clears_and_the_store_is_intact() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    let pid = m.foreground(&store, Some(&id));
    assert_eq!(fs::read(m.path("usr/bin/tool")).unwrap(), noise(300_000, 1));
    signal(pid, libc::SIGKILL);
    let exit = m.wait_child(BOUND).expect("killed");
    assert_eq!(exit.code(), None, "killed by a signal");
    assert!(
        is_mounted(&m.path("")),
        "a killed server leaves its mount behind"
    );
    assert!(
        dead(errno_of(fs::read_dir(m.path("")))),
        "a dead mount answers ENOTCONN"
    );
    // Mounting there again is refused, saying how to clear it (whether the kernel still has
    // the dead root's attributes cached, or answers ENOTCONN for it).
    let refused_there = |at: &std::path::Path| {
        let out = store.run(&["mount", at.to_str().unwrap(), &id, "--daemon"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("fusermount3 -u"), "{}", stderr(&out));
    };
    refused_there(&m.path(""));
    unmount(&["umount"], &m.path(""));
    assert!(!is_mounted(&m.path("")));
    assert!(names_in(&m.path("")).is_empty());

    // The store is untouched: bit-exact export, and it mounts again at the same place.
    assert!(
        store.export(&id) == stream,
        "export after kill -9 of a mount"
    );
    let mut again = Mounted::new(&store, "mnt");
    again.daemon(&store, Some(&id));
    assert_eq!(fs::read(again.path("etc/hostname")).unwrap(), b"vm1\n");

    // kill -9 of a --daemon server: umount -l clears it as well.
    let dpid = again.daemon.unwrap();
    unsafe { libc::kill(dpid, libc::SIGKILL) };
    assert!(wait_for(BOUND, || !alive(dpid)));
    refused_there(&again.path(""));
    let st = Command::new("umount")
        .arg("-l")
        .arg(again.path(""))
        .status()
        .unwrap();
    assert!(st.success(), "umount -l of the dead mount");
    assert!(!is_mounted(&again.path("")));
    assert!(store.export(&id) == stream);
}

/// What a dead mount answers: ENOTCONN, or ECONNABORTED to a request that was waiting when
/// the connection went (the server's leader thread is a zombie before its others are gone).
fn dead(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// A mount whose server was killed before anything looked at it answers ENOTCONN even for
/// its root: mounting there again is refused as a mount point is (exit 1), saying how to
/// clear it, and `fusermount3 -u` does.
#[test]
fn mounting_over_a_dead_mount_says_to_unmount_it() {
    require("fusermount3");
    let store = TestStore::new();
    let id = store.snapshot_bytes(&small_stream(&store, "t", &[("f", b"f\n".to_vec())]), "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let pid = m.daemon.unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_for(BOUND, || !alive(pid)));
    let at = m.path("");
    assert!(
        dead(errno_of(fs::metadata(&at))),
        "a dead mount answers ENOTCONN"
    );
    let out = store.run(&["mount", at.to_str().unwrap(), &id, "--daemon"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no longer answers") && err.contains("fusermount3 -u"),
        "{err}"
    );
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&at)
        .status()
        .unwrap();
    assert!(st.success());
    m.daemon(&store, Some(&id));
    assert_eq!(fs::read(m.path("f")).unwrap(), b"f\n");
}

/// A server killed while `cellar mount`'s own look at DIR waited on it: that look gets
/// ECONNABORTED rather than ENOTCONN, and is refused all the same, saying how to clear it.
#[test]
fn a_look_at_dir_cut_off_by_the_servers_death_says_to_unmount_it() {
    require("fusermount3");
    let store = TestStore::new();
    let id = store.snapshot_bytes(&small_stream(&store, "t", &[("f", b"f\n".to_vec())]), "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let pid = m.daemon.unwrap();
    let at = m.path("");
    // A stopped server takes requests but answers none: the new mount's stat of DIR waits
    // (in FUSE's request_wait_answer).
    signal(pid as u32, libc::SIGSTOP);
    let again = store
        .cmd(&["mount", at.to_str().unwrap(), &id, "--daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Where it sleeps: request_wait_answer for a request sent, fuse_get_req for one that
    // waits to be sent (a connection not yet initialized, or throttled).
    let mut wchan = String::new();
    let waiting = wait_for(BOUND, || {
        wchan = fs::read_to_string(format!("/proc/{}/wchan", again.id())).unwrap_or_default();
        wchan == "request_wait_answer" || wchan == "fuse_get_req"
    });
    signal(pid as u32, libc::SIGKILL);
    let out = again.wait_with_output().unwrap();
    assert!(
        waiting,
        "the new mount never waited on the stopped server (it last slept in {wchan:?}; {}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no longer answers") && err.contains("fusermount3 -u"),
        "{err}"
    );
    assert!(wait_for(BOUND, || !alive(pid)));
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&at)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A read-only store that has a `logs/` directory (any store once mounted with --daemon): the
/// background mount logs to $TMPDIR/cellar-logs/, as it does on a read-only store without one.
#[test]
fn daemon_on_a_read_only_store_with_a_logs_dir_logs_to_the_temp_dir() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("etc/hostname", b"vm1\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");
    fs::create_dir_all(store.path().join("logs")).unwrap();
    let view = ReadOnlyView::new(&store.path(), &store.scratch("ro"));
    let tmp = store.scratch("tmp");
    fs::create_dir_all(&tmp).unwrap();

    let mut m = Mounted::new(&store, "mnt");
    let mut cellar = Command::new(cellar_bin());
    cellar
        .arg("--store")
        .arg(&view.dst)
        .env_remove("CELLAR_STORE")
        .env("TMPDIR", &tmp);
    m.daemon_by(cellar, Some(&id));
    assert!(
        m.log.starts_with(tmp.join("cellar-logs")) && m.log.is_file(),
        "the log is {}",
        m.log.display()
    );
    assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), b"vm1\n");
}

/// --daemon says which process serves the mount (the pid `kill -USR1` and `kill` need), and its
/// log is named after that process.
#[test]
fn daemon_says_the_background_pid_and_names_the_log_after_it() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("etc/hostname", b"vm1\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    let said = m.daemon(&store, Some(&id));
    // The process serving the mount, found by its argv.
    let pid = m.daemon.expect("background pid");
    assert!(
        said.contains(&format!(" in the background (pid {pid}); log: ")),
        "the background process is {pid}: {said}"
    );
    assert_eq!(
        m.log.file_name().unwrap().to_str().unwrap(),
        format!("mount-{pid}.log"),
        "{said}"
    );
    // It is the log that process writes: it reports there on SIGUSR1.
    m.report();
}

/// `--daemon --json`: the mount point, the background process and its log on stdout, once
/// the mount answers; `--json` alone is a usage error.
#[test]
fn daemon_json_says_the_pid_and_the_log() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("etc/hostname", b"vm1\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");
    let mut m = Mounted::new(&store, "mnt");
    let dir = m.dir_str().to_string();
    let out = store.run(&["mount", "--daemon", "--json", &dir, &id]);
    m.daemon = mount_processes(&m.dir).first().copied();
    assert_success(&out, &["mount", "--daemon", "--json"]);
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(said["pid"].as_i64(), m.daemon.map(i64::from), "{said}");
    assert_eq!(said["mountpoint"], dir.as_str());
    assert!(
        std::path::Path::new(said["log"].as_str().unwrap()).exists(),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(m.dir.join("etc/hostname")).unwrap(),
        "vm1\n"
    );
    let alone = store.run(&["mount", "--json", &dir, &id]);
    assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
}

/// A mount point already in use (by a cellar mount or any other) is refused, saying what is
/// mounted there and how to unmount it, in commands that paste into a shell as they are:
/// mounting there would hide what is mounted, and both would seem to work.
#[test]
fn a_mount_point_already_in_use_is_refused() {
    require("fusermount3");
    let store = TestStore::new();
    let one = small_stream(&store, "t1", &[("etc/hostname", b"vm1\n".to_vec())]);
    let id = store.snapshot_bytes(&one, "vm");
    let two = small_stream(&store, "t2", &[("etc/hostname", b"db\n".to_vec())]);
    let other = store.snapshot_bytes(&two, "db");

    let mut m = Mounted::new(&store, "mnt x");
    m.daemon(&store, Some(&id));
    let dir = m.dir_str().to_string();
    let bound = Mounted::new(&store, "bound");
    sh(&format!("mount --bind '{0}' '{0}'", bound.dir_str()));
    let bound_dir = bound.dir_str().to_string();
    for (at, word, what, args) in [
        (
            &dir,
            format!("'{dir}'"),
            "a cellar mount",
            vec!["mount", "--daemon", &dir, &other],
        ),
        (
            &dir,
            format!("'{dir}'"),
            "a cellar mount",
            vec!["mount", &dir, &other],
        ),
        (
            &dir,
            format!("'{dir}'"),
            "a cellar mount",
            vec!["mount", "--daemon", &dir],
        ),
        (
            &bound_dir,
            bound_dir.clone(),
            " from ",
            vec!["mount", &bound_dir, &other],
        ),
    ] {
        let out = run_bounded(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{at} is already a mount point ("))
                && err.contains(what)
                && err.contains(&format!("`umount {word}` or `fusermount3 -u {word}`")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        mount_processes(&m.dir),
        vec![m.daemon.unwrap()],
        "one process serves the mount"
    );
    assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), b"vm1\n");

    // The command it gives, pasted into a shell as it is, unmounts.
    let err = stderr(&run_bounded(&store, &["mount", &dir, &other]));
    let command = err
        .split('`')
        .find(|c| c.starts_with("fusermount3 -u "))
        .unwrap_or_else(|| panic!("a fusermount3 command in: {err}"));
    sh(command);
    assert!(
        wait_for(BOUND, || !is_mounted(&m.dir)),
        "`{command}` unmounted"
    );
}

/// SIGUSR1's report says "1 snapshot", not "1 snapshots" (and the same of inodes).
#[test]
fn the_usr1_report_says_one_in_the_singular() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("etc/hostname", b"vm1\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let inodes = |n: usize| if n == 1 { "inode" } else { "inodes" };
    // The inodes held are the kernel's lookups: no other test may make it drop them.
    let _caches = kernel_caches();
    // The root (and whatever the kernel has looked up), in one snapshot.
    for read in [false, true] {
        if read {
            assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), b"vm1\n");
        }
        let line = m.report_line();
        let held: usize = line.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap();
        assert!(!read || held >= 3, "the root, etc, etc/hostname: {line}");
        assert_eq!(
            line,
            format!("cellar: {held} {} held, 1 snapshot pinned", inodes(held))
        );
    }
}

/// A `snapshot --dir` whose walk is stuck on a file system that stopped answering (here a
/// mount inside the directory, its process stopped) ends at the first interrupt, as one whose
/// input stalls does: the walk is not waited for.
#[test]
fn a_dir_snapshot_stuck_in_a_hung_mount_ends_at_the_first_interrupt() {
    require("fusermount3");
    let store = TestStore::new();
    let src = store.scratch("src");
    write_file(&src.join("f"), b"data\n");
    store.snapshot_bytes(&tar_of_dir(&src), "vm");
    let mut m = Mounted::new(&store, "tree/mnt");
    let server = m.foreground(&store, None);
    write_file(&store.scratch("tree/a.txt"), b"a\n");
    signal(server, libc::SIGSTOP);

    let other = TestStore::new();
    let tree = store.scratch("tree");
    let mut snap = other
        .cmd(&["snapshot", "--dir", tree.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The store is made once interrupts are taken; the walk then meets the mount.
    let started = wait_for(BOUND, || other.path().join("cellar.db").exists());
    std::thread::sleep(Duration::from_millis(200));
    signal(snap.id(), libc::SIGINT);
    let status = wait_exit(&mut snap, BOUND);
    signal(server, libc::SIGCONT);
    if status.is_none() {
        let _ = wait_exit(&mut snap, BOUND); // let it go, now that the mount answers
    }
    let mut err = String::new();
    snap.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(started, "the snapshot did not start: {err}");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "ended only once the mount answered again, if at all: {err}"
    );
    assert_eq!(other.snapshot_count(), 0, "{err}");
}
