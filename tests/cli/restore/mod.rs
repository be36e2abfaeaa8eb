//! `cellar restore`: the restored directory against GNU tar's extraction of the same stream
//! (rsync -n -a -c -H -X in both directions), sparse files and hardlinks on disk, `--path`,
//! the non-empty-DIR rule, hostile streams and pre-existing symlinks that must not lead
//! outside DIR, and damaged packs that must fail loudly instead of writing wrong bytes.
//!
//! This file holds what the modules share: running `restore`, rsync as the judge, and the
//! fixture (a tree, its snapshot and GNU tar's extraction).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::browse::oracle::{
    archive, extract, stream_file_for, varied_snapshot, walk, VariedSnapshot,
};
use crate::common::*;
use crate::trees::*;

mod damage;
mod existing_dir;
mod faithful;
mod hostile;
mod write_errors;

pub(super) fn restore(store: &TestStore, args: &[&str]) -> Output {
    let mut argv = vec!["restore"];
    argv.extend_from_slice(args);
    store.run(&argv)
}

pub(super) fn restore_ok(store: &TestStore, args: &[&str]) -> Output {
    let out = restore(store, args);
    assert_success(&out, args);
    out
}

/// A `restore --json` report's `failed` count and the paths its `failures` list.
pub(super) fn failures(out: &Output) -> (u64, Vec<String>) {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    let paths = report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    (report["failed"].as_u64().expect("failed"), paths)
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tree archived by `writer`, snapshotted, and GNU tar's extraction of the same stream.
pub(super) struct Fixture {
    pub(super) store: TestStore,
    pub(super) root: PathBuf,
    pub(super) id: String,
    pub(super) ex: PathBuf,
}

pub(super) fn fixture(writer: &[&str], bsdtar_dir_order: bool) -> Fixture {
    let store = TestStore::new();
    let VariedSnapshot { root, id, ex, .. } = varied_snapshot(&store, writer);
    if bsdtar_dir_order {
        dir_mtimes_from(&root, &ex);
    }
    Fixture {
        store,
        root,
        id,
        ex,
    }
}

/// Everything below `dir` (which must exist), for "nothing was written here" checks.
pub(super) fn listing(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

/// GNU tar's extraction of `stream` into `dir` (created if missing), which exits 2 on the
/// members it refuses or cannot write: what it does extract is the oracle.
pub(super) fn extract_allowing_errors(store: &TestStore, stream: &[u8], dir: &Path) {
    let file = stream_file_for(store, stream, dir);
    let out = Command::new("tar")
        .args(["--numeric-owner", "-xpf", s(&file), "-C", s(dir)])
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 2),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
