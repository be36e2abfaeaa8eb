//! Exports are durable once `export` returns: strace's record of the calls that sync files
//! and rename them into place, for a tar file, a new OCI layout and an existing one.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;
use crate::common::*;

/// The calls `args` made that make files durable or move them into place, from strace
/// (`fsync(3</path>)`, `rename("/from", "/to")`), in order, as (call, paths).
fn durability_calls(store: &TestStore, args: &[&str]) -> Vec<(String, Vec<String>)> {
    let log = store.scratch("strace.log");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg("-o")
        .arg(&log)
        .arg(cellar_bin())
        .arg("--store")
        .arg(store.path())
        .args(args)
        .env_remove("CELLAR_STORE")
        .stdout(Stdio::null())
        .status()
        .expect("run strace (scripts/test installs it)");
    assert!(status.success(), "{args:?}: {status}");
    let calls = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("= 0"))
        .filter_map(|l| {
            // Drop the pid, keep "call(args) = 0".
            let l = l.split_once(' ').map_or(l, |(_, rest)| rest).trim_start();
            let (call, rest) = l.split_once('(')?;
            // Names are quoted; a descriptor's path follows it in <...> (AT_FDCWD's too, so
            // a call that names paths is read for its names only).
            let delimiter = if rest.contains('"') { '"' } else { '<' };
            let paths = rest
                .split(delimiter)
                .skip(1)
                .step_by(2)
                .map(|p| p.split('>').next().unwrap_or(p).to_string())
                .collect();
            Some((call.to_string(), paths))
        })
        .collect();
    fs::remove_file(&log).unwrap();
    calls
}

/// What a crash just after `export` returns can leave: every file renamed into place was
/// synced first under its temporary name, and the directory it was renamed into was synced
/// after; in a layout, the blobs directory is synced before `index.json` is renamed in, so an
/// index never survives without the blobs it names.
#[test]
fn exports_are_synced_before_and_after_they_are_renamed_in() {
    let store = TestStore::new();
    let small = store.scratch("small");
    write_file(&small.join("f"), b"small\n");
    store.snapshot_bytes(&tar_of_dir(&small), "small");
    let out = store.scratch("out");
    fs::create_dir(&out).unwrap();
    let (file, layout) = (out.join("small.tar"), out.join("layout"));
    let (file, layout) = (file.to_str().unwrap(), layout.to_str().unwrap());
    let oci = |tag| {
        [
            "export", "small", "--format", "oci", "-o", layout, "--tag", tag,
        ]
    };
    for (what, args) in [
        ("tar file", vec!["export", "small", "-o", file]),
        ("new layout", oci("a").to_vec()),
        ("existing layout", oci("b").to_vec()),
    ] {
        let calls = durability_calls(&store, &args);
        let synced = |path: &str, range: &[(String, Vec<String>)]| {
            range
                .iter()
                .any(|(c, p)| c.contains("sync") && p.first().map(String::as_str) == Some(path))
        };
        let renames: Vec<usize> = (0..calls.len())
            .filter(|&i| calls[i].0.starts_with("rename") && calls[i].1.len() == 2)
            .collect();
        assert!(!renames.is_empty(), "{what}: no renames in {calls:?}");
        for &i in &renames {
            let (from, to) = (&calls[i].1[0], &calls[i].1[1]);
            assert!(
                synced(from, &calls[..i]),
                "{what}: {from} renamed unsynced: {calls:#?}"
            );
            let dir = Path::new(to).parent().unwrap().to_str().unwrap();
            assert!(
                synced(dir, &calls[i..]),
                "{what}: {dir} not synced after {to}: {calls:#?}"
            );
        }
        if what != "tar file" {
            let index = renames
                .iter()
                .rev()
                .find(|&&i| calls[i].1[1].ends_with("/index.json"))
                .expect("index.json renamed in");
            let last_blob = renames
                .iter()
                .filter(|&&i| calls[i].1[1].contains("/blobs/sha256/"))
                .max()
                .expect("blobs renamed in");
            let blobs = Path::new(&calls[*last_blob].1[1]).parent().unwrap();
            assert!(
                synced(blobs.to_str().unwrap(), &calls[*last_blob..*index]),
                "{what}: index.json renamed in before the blobs were synced: {calls:#?}"
            );
        }
    }
    oci_image(Path::new(layout), "a").assert_diff_ids();
    oci_image(Path::new(layout), "b").assert_diff_ids();
}
