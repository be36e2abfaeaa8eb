//! The mount under load: a 10,000-entry directory, snapshots taken while readers read through
//! both views, and many threads reading whole files and scattered ranges at once.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::fixtures::*;
use super::guard::*;
use super::oracle::{archive, GNU_TAR};
use crate::common::*;

/// One directory of 10,000 files: every name listed (by `ls` and readdir), each stat right,
/// a few read back.
#[test]
fn mount_lists_a_ten_thousand_entry_directory() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    let many = root.join("many");
    fs::create_dir_all(&many).unwrap();
    let content = |i: usize| format!("file number {i}\n").repeat(i % 7 + 1).into_bytes();
    for i in 0..10_000 {
        fs::write(many.join(format!("f{i:05}")), content(i)).unwrap();
    }
    let stream = archive(GNU_TAR, &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let dir = m.path("many");

    let ls = sh(&format!("ls -1 '{}'", dir.display()));
    let ls = String::from_utf8(ls).unwrap();
    let listed: Vec<&str> = ls.lines().collect();
    assert_eq!(listed.len(), 10_000, "ls of the 10,000-entry directory");
    let want: Vec<String> = (0..10_000).map(|i| format!("f{i:05}")).collect();
    assert!(
        listed.iter().zip(&want).all(|(a, b)| a == b),
        "ls names, in order"
    );

    let mut seen = BTreeSet::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let i: usize = name[1..].parse().unwrap();
        assert!(
            e.file_type().unwrap().is_file(),
            "{name}: type from readdir"
        );
        assert_eq!(
            e.metadata().unwrap().len(),
            content(i).len() as u64,
            "{name}: size"
        );
        assert!(seen.insert(name.clone()), "{name} listed twice");
    }
    assert_eq!(seen.len(), 10_000, "readdir of the 10,000-entry directory");
    for i in [0, 1, 4_999, 7_777, 9_999] {
        assert_eq!(
            fs::read(dir.join(format!("f{i:05}"))).unwrap(),
            content(i),
            "f{i:05}"
        );
    }
}

#[test]
fn mount_stays_right_while_snapshots_are_taken() {
    require("fusermount3");
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("data/{i}.bin"),
                noise(1_000_000 + i * 7_919, 40 + i as u64),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let s0 = small_stream(&store, "t0", &refs);
    let id0 = store.snapshot_bytes(&s0, "vm");
    let mut one = Mounted::new(&store, "one");
    one.daemon(&store, Some(&id0));
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);

    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let new_ids = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (p, want) in &files {
                    for base in [one.path(p), all.path(&format!("vm/{id0}/{p}"))] {
                        match fs::read(&base) {
                            Ok(got) if got == *want => {}
                            Ok(got) => bad.push(format!(
                                "{}: {} bytes, sha256 {}",
                                base.display(),
                                got.len(),
                                sha256_hex(&got)
                            )),
                            Err(e) => bad.push(format!("{}: {e}", base.display())),
                        }
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            bad
        });
        // However this ends (an assertion below too), the reader stops.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // Wait for the reader's first round, then write beside it.
        assert!(wait_for(BOUND, || rounds.load(Ordering::Relaxed) > 0
            || reader.is_finished()));
        let mut ids = Vec::new();
        for k in 0..3u64 {
            let more: Vec<(&str, Vec<u8>)> = vec![
                ("data/0.bin", noise(1_000_000, 40)),
                ("fresh.bin", noise(2_000_000, 500 + k)),
            ];
            let s = small_stream(&store, &format!("t{}", k + 1), &more);
            let name = if k == 2 { "other" } else { "vm" };
            let id = store.snapshot_bytes(&s, name);
            // The all-snapshots view sees each one at once.
            assert!(
                all.path(&format!("{name}/{id}")).is_dir(),
                "{name}/{id} in the mount"
            );
            ids.push((name, id, s));
        }
        let before = rounds.load(Ordering::Relaxed);
        assert!(wait_for(BOUND, || rounds.load(Ordering::Relaxed)
            > before + 1
            || reader.is_finished()));
        stop.store(true, Ordering::Relaxed);
        let bad = reader.join().unwrap();
        assert!(
            bad.is_empty(),
            "reads through the mount went wrong while snapshots were taken:\n{}",
            bad.join("\n")
        );
        ids
    });
    assert_eq!(
        fs::read_link(all.path("vm/latest")).unwrap(),
        Path::new(&new_ids[1].1)
    );
    for (name, id, s) in &new_ids {
        let fresh = fs::read(all.path(&format!("{name}/{id}/fresh.bin"))).unwrap();
        assert_eq!(fresh.len(), 2_000_000, "{name}/{id}/fresh.bin");
        assert!(store.export(id) == *s);
    }
    assert!(store.export(&id0) == s0);
}

#[test]
fn concurrent_readers_get_the_right_bytes() {
    require("fusermount3");
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("f/{i}.bin"),
                noise(2_000_000 + i * 4_099, 70 + i as u64),
            )
        })
        .chain([("f/text.txt".to_string(), text(3_000_000, 77))])
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let stream = small_stream(&store, "tree", &refs);
    let id = store.snapshot_bytes(&stream, "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.foreground(&store, Some(&id));

    let errors: Vec<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..12usize {
            let (p, want) = &files[t % files.len()];
            let path = m.path(p);
            handles.push(s.spawn(move || {
                let mut bad = Vec::new();
                for round in 0..3 {
                    // Whole-file reads...
                    let got = fs::read(&path).unwrap();
                    if got != *want {
                        bad.push(format!(
                            "thread {t} round {round}: {p} read whole: sha256 {}",
                            sha256_hex(&got)
                        ));
                    }
                    // ...and scattered preads of odd sizes at odd offsets.
                    let f = File::open(&path).unwrap();
                    let mut x = (t as u64 + 1) * 0x9E37_79B9 + round;
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let off = (x % want.len() as u64) as usize;
                        let len = ((x >> 32) % 200_000) as usize + 1;
                        let mut buf = vec![0u8; len];
                        let n = f.read_at(&mut buf, off as u64).unwrap();
                        let end = (off + len).min(want.len());
                        if buf[..n] != want[off..off + n] || n == 0 || (n < len && off + n != end) {
                            bad.push(format!(
                                "thread {t}: {p} pread {len} at {off}: {n} bytes, wrong"
                            ));
                        }
                    }
                }
                bad
            }));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        errors.is_empty(),
        "concurrent reads:\n{}",
        errors.join("\n")
    );
    // Reads past the end give nothing.
    let f = File::open(m.path("f/0.bin")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, 5_000_000).unwrap(), 0);
}
