//! Shared metadata: a snapshot of a stream that changed a little stores little, and `diff`
//! finds the few changed files among 100 000.

use std::path::Path;

use serde_json::json;

use super::oracle::*;
use crate::common::*;

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 100;

/// 100 000 small files in 1000 directories (each with its own member, the root too), in a
/// hand-made ustar stream. Files whose index is in `changed` get other bytes of the same length.
fn many_files_stream(changed: &[usize]) -> Vec<u8> {
    let mut s = Vec::with_capacity(DIRS * FILES_PER_DIR * 1024 + DIRS * 512 + 2048);
    member(&mut s, b"./", b'5', b"", b"", 0o755);
    for d in 0..DIRS {
        member(
            &mut s,
            format!("d{d:04}/").as_bytes(),
            b'5',
            b"",
            b"",
            0o755,
        );
        for f in 0..FILES_PER_DIR {
            let i = d * FILES_PER_DIR + f;
            let tag = if changed.contains(&i) {
                "CHANGED"
            } else {
                "content"
            };
            let data = format!("file {i:06} {tag}\n");
            member(
                &mut s,
                format!("d{d:04}/f{f:03}").as_bytes(),
                b'0',
                data.as_bytes(),
                b"",
                0o644,
            );
        }
    }
    end_of_archive(&mut s);
    s
}

#[test]
fn unchanged_directories_are_shared_between_snapshots() {
    let store = TestStore::new();
    let started = std::time::Instant::now();
    let base = many_files_stream(&[]);
    let file = store.scratch("many.tar");
    std::fs::write(&file, &base).unwrap();
    let snap = |path: &Path| -> String {
        store
            .ok(&["snapshot", "--name", "many", path.to_str().unwrap()])
            .trim()
            .to_string()
    };
    let a = snap(&file);
    let count = ls_json(&store, &[&a, "/d0999"]).len();
    assert_eq!(count, FILES_PER_DIR);

    let b = snap(&file);
    let shown = store.json(&["show", &b, "--json"]);
    let added = shown["added_bytes"].as_u64().expect("added_bytes");
    assert!(
        added < 64 << 10,
        "the identical stream again added {added} bytes"
    );
    assert_eq!(store.ok(&["diff", &a, &b]), "");

    let changed = [7, 12_345, 50_000, 77_777, 99_999];
    std::fs::write(&file, many_files_stream(&changed)).unwrap();
    let c = snap(&file);
    let shown = store.json(&["show", &c, "--json"]);
    let added = shown["added_bytes"].as_u64().expect("added_bytes");
    assert!(added < 256 << 10, "5 changed files added {added} bytes");
    let want: Vec<String> = changed
        .iter()
        .map(|i| format!("M /d{:04}/f{:03}", i / FILES_PER_DIR, i % FILES_PER_DIR))
        .collect();
    assert_eq!(lines(&store.ok(&["diff", &b, &c])), want);
    let got = store.json(&["diff", &b, &c, "--json"]);
    crate::readme_json::assert_readme_order(&got, "`diff --json` prints an array");
    for change in got.as_array().unwrap() {
        assert_eq!(change["change"], "modified");
        assert_eq!(change["fields"], json!(["content"]), "{change}");
    }
    assert_eq!(
        store.run(&["cat", &c, "/d0123/f045"]).stdout,
        b"file 012345 CHANGED\n"
    );
    eprintln!("shared metadata test took {:?}", started.elapsed());
}
