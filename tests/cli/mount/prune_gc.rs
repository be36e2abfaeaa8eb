//! The mount beside `prune` and `gc`: neither waits on a live mount, data gc moves under the
//! mount (repacked) still reads bit-exact, and a mounted snapshot that is forgotten reads
//! until gc's grace period has passed, then fails with EIO (FORMAT §15.4).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::fixtures::*;
use super::guard::*;
use super::oracle::{extract, walk};
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
    let want = walk(&ex);
    let got = walk(mounted);
    let names = |w: &[(Vec<u8>, std::path::PathBuf)]| -> Vec<Vec<u8>> {
        w.iter().map(|(r, _)| r.clone()).collect()
    };
    assert_eq!(
        names(&got),
        names(&want),
        "{what}: the mount lists other paths"
    );
    for ((rel, g), (_, w)) in got.iter().zip(&want) {
        if w.symlink_metadata().unwrap().is_file() {
            assert!(
                fs::read(g).unwrap() == fs::read(w).unwrap(),
                "{what}: {} reads differently through the mount",
                String::from_utf8_lossy(rel)
            );
        }
    }
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

/// A mounted snapshot that is forgotten: a gc within the grace period condemns its chunks and
/// the mount still reads files it never read before; a gc past the grace period (here
/// `--grace 0`) deletes them, and then reading such a file fails with EIO. Other snapshots
/// are untouched.
#[test]
fn a_forgotten_mounted_snapshot_reads_until_the_grace_period_passes() {
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
    assert!(fs::read(m.path("f0.bin")).unwrap() == files[0].1);

    store.ok(&["rm", &old]);
    // Within the grace period (the default, 600 s): condemned, not deleted.
    let r = gc_json(&store, &[]);
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["chunks_deleted"], 0, "{r}");
    assert!(
        fs::read(m.path("f1.bin")).unwrap() == files[1].1,
        "a file first read after the forget, within the grace period"
    );

    // Past it: swept. A file the mount has not read is gone (EIO), and says so at once.
    let r = gc_json(&store, &["--grace", "0"]);
    assert!(r["chunks_deleted"].as_u64().unwrap() > 0, "{r}");
    let start = Instant::now();
    let err = fs::read(m.path("f3.bin")).expect_err("f3.bin read after its chunks were swept");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "reading swept data through the mount: {err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // The names are still there (the tree was read at mount time), and the mount still
    // answers; the store is whole and the other snapshot exact.
    assert_eq!(
        names_in(&m.path("")),
        set(&["f0.bin", "f1.bin", "f2.bin", "f3.bin"])
    );
    assert!(store.export(&other) == other_stream);
    let out = store.run(&["verify", "--data"]);
    assert_success(&out, &["verify", "--data"]);
}
