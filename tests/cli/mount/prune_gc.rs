//! The mount beside `prune` and `gc`: neither waits on a live mount, data gc moves under the
//! mount (repacked) still reads bit-exact, and a mounted snapshot that is forgotten reads
//! until it is unmounted: the mount's lease keeps its chunks from the sweep (FORMAT §15.4).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::fixtures::*;
use super::guard::*;
use super::oracle::extract;
use crate::common::*;

fn gc_json(store: &TestStore, args: &[&str]) -> serde_json::Value {
    let mut argv = vec!["gc", "--json"];
    argv.extend_from_slice(args);
    let out = run_bounded(store, &argv);
    assert_success(&out, &argv);
    serde_json::from_slice(&out.stdout).expect("gc --json")
}

/// Every file under `mounted` has the bytes of the same file in GNU tar's extraction of
/// `cellar export SNAP` (and the two trees name the same paths).
fn assert_reads_like_export(store: &TestStore, snap: &str, mounted: &Path, what: &str) {
    let ex = store.scratch(&format!("export-{snap}"));
    let _ = fs::remove_dir_all(&ex);
    extract(store, &store.export(snap), &ex);
    assert_reads_like(mounted, &ex, what);
}

/// With the all-snapshots view mounted and a reader in the middle of a file, `prune` of the
/// other snapshots and `gc` run to the end without waiting on the mount; gc repacks the
/// pack the mounted file's data lives in, and the kept snapshots still read exactly: the
/// open file to its end, and files never read before gc.
#[test]
fn prune_and_gc_beside_a_live_mount_keep_mounted_snapshots_exact() {
    require("fusermount3");
    let store = TestStore::new();
    let shared = noise(3_000_000, 61);
    // The first snapshot's pack holds the shared file and much of its own; once it is
    // forgotten that pack is under half live, so gc repacks it under the mount.
    let s0 = small_stream(
        &store,
        "t0",
        &[
            ("shared.bin", shared.clone()),
            ("own0.bin", noise(8_000_000, 62)),
        ],
    );
    let s1 = small_stream(
        &store,
        "t1",
        &[
            ("shared.bin", shared.clone()),
            ("own1.bin", noise(500_000, 63)),
            ("etc/hostname", b"vm1\n".to_vec()),
        ],
    );
    let s2 = small_stream(
        &store,
        "t2",
        &[
            ("shared.bin", shared.clone()),
            ("own2.bin", noise(700_000, 64)),
            ("etc/hostname", b"vm2\n".to_vec()),
        ],
    );
    let id0 = store.snapshot_bytes(&s0, "vm");
    let id1 = store.snapshot_bytes(&s1, "vm");
    let id2 = store.snapshot_bytes(&s2, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, None);
    assert_eq!(names_in(&m.path("vm")), set(&[&id0, &id1, &id2, "latest"]));

    // A reader holds the kept snapshot's shared file open, half read.
    let mut held = File::open(m.path(&format!("vm/{id1}/shared.bin"))).unwrap();
    let mut got = vec![0u8; 1_500_000];
    held.read_exact(&mut got).unwrap();
    assert!(got == shared[..1_500_000], "the first half, before gc");

    // Another keeps reading through the mount the whole time.
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let path = m.path(&format!("vm/{id1}/own1.bin"));
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let want = noise(500_000, 63);
            while !stop.load(Ordering::Relaxed) {
                let got = fs::read(&path).expect("read through the mount during gc");
                assert!(got == want, "own1.bin changed while gc ran");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        // run_bounded: each must finish within BOUND, or the test fails naming it.
        let out = run_bounded(&store, &["prune", "--keep-last", "2"]);
        assert_success(&out, &["prune", "--keep-last", "2"]);
        let r = gc_json(&store, &["--grace", "0"]);
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader");
        assert!(
            r["packs_repacked"].as_u64().unwrap() >= 1,
            "gc should have repacked the shared data's pack: {r}"
        );
        assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
        assert!(took < BOUND, "prune and gc took {took:?} beside the mount");
    });
    assert!(reads.load(Ordering::Relaxed) > 0, "the reader never read");

    // The rest of the open file, from the repacked pack (or the old file still open).
    held.read_to_end(&mut got).unwrap();
    assert!(got == shared, "the held-open file changed across gc");
    // The forgotten snapshot is gone from the view; the kept ones read like their exports,
    // including files no one read before gc (so the mount looks their chunks up anew).
    assert_eq!(names_in(&m.path("vm")), set(&[&id1, &id2, "latest"]));
    assert_reads_like_export(&store, &id2, &m.path(&format!("vm/{id2}")), "vm~0");
    assert_reads_like_export(&store, &id1, &m.path(&format!("vm/{id1}")), "vm~1");
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}

/// The leases gc reports as held (JSON), as (holder, pid).
fn leases(r: &serde_json::Value) -> Vec<(String, i64)> {
    r["leases"]
        .as_array()
        .unwrap_or_else(|| panic!("gc --json has no leases: {r}"))
        .iter()
        .map(|l| {
            (
                l["holder"].as_str().unwrap().to_string(),
                l["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A mounted snapshot that is forgotten reads until it is unmounted: the mount pinned it, so
/// even a gc with `--grace 0` keeps it whole (condemns nothing, names the mount's lease), and
/// files the mount never read before read exactly. A mount killed with -9 leaves its lease
/// behind; gc finds its pid dead, drops it, and takes the snapshot.
#[test]
fn a_forgotten_mounted_snapshot_reads_until_it_is_unmounted() {
    require("fusermount3");
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("f{i}.bin"), noise(1_500_000, 70 + i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let old = store.snapshot_bytes(&small_stream(&store, "old", &refs), "old");
    let other_stream = small_stream(&store, "other", &[("x.bin", noise(300_000, 79))]);
    let other = store.snapshot_bytes(&other_stream, "other");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&old));
    let pid = i64::from(m.daemon.expect("the mount's pid"));
    assert!(fs::read(m.path("f0.bin")).unwrap() == files[0].1);

    store.ok(&["rm", &old]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(
        r["chunks_condemned"], 0,
        "the mount's pin keeps the snapshot: {r}"
    );
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(leases(&r), vec![("mount".to_string(), pid)], "{r}");
    assert_eq!(r["leases"][0]["keeps_forgotten"], 1, "{r}");
    for (name, data) in &files[1..] {
        assert!(
            fs::read(m.path(name)).unwrap() == *data,
            "{name}, first read after the forget and a gc past the grace period"
        );
    }
    // The text report names the lease too.
    let out = store.run(&["gc", "--grace", "0"]);
    assert_success(&out, &["gc", "--grace", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("mount (pid {pid})"))
            && text.contains("keeping 1 forgotten snapshot"),
        "gc's report: {text}"
    );

    // Killed with -9: the lease stays in the index until gc sees its pid is dead.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(wait_for(BOUND, || !alive(pid as i32)));
    // A dry run already counts the dead mount's pins for nothing.
    let r = gc_json(&store, &["--dry-run", "--grace", "0"]);
    assert_eq!(r["stale_leases"], 1, "{r}");
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(r["stale_leases"], 1, "{r}");
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["chunks_waiting"], 0, "{r}");
    assert!(leases(&r).is_empty(), "{r}");
    assert!(store.export(&other) == other_stream);
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}

/// A mount that ends cleanly, by a signal or by an unmount, ends its lease: the next gc
/// deletes what it kept.
#[test]
fn an_unmounted_snapshot_is_swept_by_the_next_gc() {
    require("fusermount3");
    let store = TestStore::new();
    for (round, by_unmount) in [false, true].into_iter().enumerate() {
        let data = noise(2_000_000, 81 + round as u64);
        let tree = format!("old{round}");
        let old = store.snapshot_bytes(
            &small_stream(&store, &tree, &[("a.bin", data.clone())]),
            "old",
        );
        let mut m = Mounted::new(&store, &format!("mnt{round}"));
        let pid = m.foreground(&store, Some(&old));
        store.ok(&["rm", &old]);
        let r = gc_json(&store, &["--grace", "0"]);
        assert_eq!(r["chunks_deleted"], 0, "{r}");
        assert!(fs::read(m.path("a.bin")).unwrap() == data);
        if by_unmount {
            unmount(&["fusermount3", "-u"], &m.path(""));
        } else {
            signal(pid, libc::SIGTERM);
        }
        let exit = m.wait_child(BOUND).expect("the mount ends");
        assert!(exit.success(), "{exit:?}: {}", m.log_text());
        let r = gc_json(&store, &["--grace", "0"]);
        let how = if by_unmount { "an unmount" } else { "SIGTERM" };
        assert_eq!(r["stale_leases"], 0, "{how} left its lease: {r}");
        assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
        assert!(leases(&r).is_empty(), "{r}");
        assert_eq!(store.pack_files().len(), 0, "{r}");
    }
}

/// The all-snapshots view pins a snapshot when it first goes into it, not when it lists it:
/// after both are forgotten, a gc with `--grace 0` takes the one only listed and keeps the one
/// gone into, whose files (reached through a directory held open, since its lineage has left
/// the view) read exactly, including one never read before.
#[test]
fn the_all_snapshots_view_pins_what_it_goes_into() {
    require("fusermount3");
    let store = TestStore::new();
    let (a0, a1) = (noise(900_000, 91), noise(1_100_000, 92));
    let a = store.snapshot_bytes(
        &small_stream(
            &store,
            "a",
            &[("a0.bin", a0.clone()), ("a1.bin", a1.clone())],
        ),
        "a",
    );
    let b = store.snapshot_bytes(
        &small_stream(&store, "b", &[("b0.bin", noise(1_000_000, 93))]),
        "b",
    );
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, None);
    let pid = i64::from(m.daemon.expect("the mount's pid"));
    assert_eq!(names_in(&m.path("b")), set(&[&b, "latest"]));
    let held = File::open(m.path(&format!("a/{a}"))).expect("open a snapshot's root");
    assert!(fs::read(m.path(&format!("a/{a}/a0.bin"))).unwrap() == a0);

    store.ok(&["rm", &a, &b]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(
        r["chunks_deleted"].as_u64().unwrap() > 0,
        "b, only listed, goes: {r}"
    );
    assert_eq!(leases(&r), vec![("mount".to_string(), pid)], "{r}");
    assert!(
        names_in(&m.path("")).is_empty(),
        "both lineages leave the view"
    );
    let through = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&held).to_string())
        .join("a1.bin");
    assert!(
        fs::read(&through).expect("a1.bin through the held directory") == a1,
        "a, gone into before the forget, reads on"
    );
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}

/// The all-snapshots view lets a snapshot go once the kernel holds nothing of it: after the
/// kernel drops its caches, a forgotten snapshot the view went into is pinned no more, and gc
/// takes it while the mount stays up and reads the others.
#[test]
fn the_all_snapshots_view_lets_go_what_the_kernel_forgot() {
    require("fusermount3");
    let store = TestStore::new();
    let old_data = noise(1_500_000, 95);
    let old = store.snapshot_bytes(
        &small_stream(&store, "old", &[("a.bin", old_data.clone())]),
        "old",
    );
    let kept = noise(300_000, 96);
    let keep = store.snapshot_bytes(
        &small_stream(&store, "keep", &[("k.bin", kept.clone())]),
        "keep",
    );
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, None);
    // Until gc has run, old is pinned only by the kernel's inodes: no other test may make the
    // kernel drop them meanwhile.
    let caches = kernel_caches();
    assert!(fs::read(m.path(&format!("old/{old}/a.bin"))).unwrap() == old_data);
    assert!(fs::read(m.path(&format!("keep/{keep}/k.bin"))).unwrap() == kept);
    assert_eq!(m.report().1, 2, "both gone into");

    store.ok(&["rm", &old]);
    let r = gc_json(&store, &["--grace", "0"]);
    assert_eq!(r["chunks_deleted"], 0, "the mount pins old: {r}");
    assert_eq!(r["leases"][0]["keeps_forgotten"], 1, "{r}");

    // Nothing is open: the kernel forgets every inode, and the view its pins.
    drop_kernel_caches(&caches);
    let mut pinned = 2;
    assert!(
        wait_for(BOUND, || {
            pinned = m.report().1;
            pinned == 0
        }),
        "{pinned} snapshots still pinned after the kernel dropped its caches"
    );
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "old goes: {r}");
    assert_eq!(r["leases"][0]["keeps_forgotten"], 0, "{r}");

    assert!(!m.path("old").exists(), "old left the view");
    assert!(fs::read(m.path(&format!("keep/{keep}/k.bin"))).unwrap() == kept);
    assert_eq!(m.report().1, 1, "keep is pinned again");
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}

/// `repair-index` would move the index a mount reads through (and pins in) aside, so it waits
/// for the mount to end, naming it, and leaves the index as it was meanwhile: a mount of one
/// snapshot, and a mount of every snapshot that has only listed them (it pins nothing, yet
/// it would go on reading the old index and never show a later snapshot).
#[test]
fn repair_index_refuses_while_a_mount_reads_the_store() {
    require("fusermount3");
    for one in [true, false] {
        let store = TestStore::new();
        let data = noise(200_000, 91);
        let stream = small_stream(&store, "tree", &[("a.bin", data.clone())]);
        let id = store.snapshot_bytes(&stream, "vm");
        let mut m = Mounted::new(&store, "mnt");
        let pid = m.foreground(&store, one.then_some(id.as_str()));
        let file = if one {
            "a.bin".to_string()
        } else {
            format!("vm/{id}/a.bin")
        };
        if one {
            assert!(fs::read(m.path(&file)).unwrap() == data);
        } else {
            assert_eq!(
                fs::read_dir(m.path("vm")).unwrap().count(),
                2,
                "{id} and latest"
            );
        }

        let out = store.run(&["repair-index"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("process {pid} (mount) is reading the store"))
                && err.contains("repair-index again"),
            "{err}"
        );
        // Nor does repair-packs go on: the mount may have looked up a chunk it takes out.
        let out = store.run(&[
            "repair-packs",
            &store.pack_files()[0].file_stem().unwrap().to_string_lossy()[..8],
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("repair-packs again"),
            "{}",
            stderr(&out)
        );
        let aside = fs::read_dir(store.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("broken")
            })
            .count();
        assert_eq!(aside, 0, "the index was moved aside");
        assert!(
            fs::read(m.path(&file)).unwrap() == data,
            "the mount reads on"
        );

        signal(pid, libc::SIGTERM);
        let exit = m.wait_child(BOUND).expect("the mount ends on SIGTERM");
        assert!(exit.success(), "{exit:?}: {}", m.log_text());
        let report = store.json(&["repair-index", "--json"]);
        assert_eq!(report["snapshots"], 1, "{report}");
        assert!(store.export(&id) == stream);
    }
}
