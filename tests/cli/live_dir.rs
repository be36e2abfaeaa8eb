//! `snapshot --dir` of a directory that changes while it is archived, as a running machine's
//! does: files vanish between the listing and the read, shrink, grow and are rewritten. Each
//! snapshot succeeds with a warning per troubled file (naming it), and what it records is a
//! well-formed stream whose members GNU tar reads back at the sizes the tree lists.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::*;

const FILES: usize = 300;

/// Rewrite, truncate, append to and delete the files of `dir` until `stop`.
fn churn(dir: &Path, stop: &AtomicBool) {
    let mut seed = 1u64;
    let mut next = || {
        // xorshift: cheap and repeatable
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !stop.load(Ordering::Relaxed) {
        let path = dir.join(format!("f{}", next() % FILES as u64));
        let _ = match next() % 4 {
            0 => fs::remove_file(&path),
            1 => fs::write(&path, noise((next() % 200_000) as usize, next())),
            2 => fs::write(&path, b""),
            _ => fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &noise(100_000, next()))),
        };
    }
}

/// Path → size of every regular file in a tar stream, as GNU tar lists it.
fn sizes_in_stream(store: &TestStore, stream: &[u8]) -> BTreeMap<String, u64> {
    let file = store.scratch("stream.tar");
    fs::write(&file, stream).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar cannot read the stream: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[5].trim_start_matches("./").to_string(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_directory_changing_under_the_snapshot_is_recorded_consistently() {
    let store = TestStore::new();
    let dir = store.scratch("live");
    for i in 0..FILES {
        write_file(&dir.join(format!("f{i}")), &noise(50_000, i as u64));
    }
    let stop = AtomicBool::new(false);
    let mut warned = 0;
    std::thread::scope(|s| {
        s.spawn(|| churn(&dir, &stop));
        for _ in 0..8 {
            let args = ["snapshot", "--name", "live", "--dir", dir.to_str().unwrap()];
            let out = store.run(&args);
            assert_success(&out, &args);
            for line in stderr(&out).lines() {
                assert!(
                    line.contains(dir.to_str().unwrap())
                        && (line.contains("changed as we read it")
                            || line.contains("No such file")),
                    "a warning that names the file and the trouble: {line}"
                );
                warned += 1;
            }
            // What was recorded is a stream GNU tar reads, at the sizes the tree lists.
            let stream = store.export("live");
            let listed: BTreeMap<String, u64> = store
                .json(&["ls", "live", "--json"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "file")
                .map(|e| {
                    let path = e["path"].as_str().unwrap().trim_start_matches('/');
                    (path.to_string(), e["size"].as_u64().unwrap())
                })
                .collect();
            assert_eq!(sizes_in_stream(&store, &stream), listed);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(warned > 0, "the files never changed under a snapshot");
    store.ok(&["verify", "--data"]);
}
