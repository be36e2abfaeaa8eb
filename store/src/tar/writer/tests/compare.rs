//! Comparing a tree with its extraction.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::tree::p;
use crate::tar::writer::xattrs::read_xattrs;
use crate::tar::writer::{child, list_dir};

/// Differences between the tree at `src` and its extraction at `dst`: types, modes,
/// owners, mtimes (with nanoseconds), contents, link targets, devices, xattrs, and hard
/// links (files linked in `src` are linked in `dst`). Sockets are expected to be missing.
fn tree_diff(src: &Path, dst: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut inodes: HashMap<u64, u64> = HashMap::new();
    let mut pending = vec![Vec::new()];
    while let Some(rel) = pending.pop() {
        let (s, d) = (p(src, &rel), p(dst, &rel));
        let what = String::from_utf8_lossy(&rel).into_owned();
        let (sm, dm) = match (fs::symlink_metadata(&s), fs::symlink_metadata(&d)) {
            (Ok(sm), _) if sm.file_type().is_socket() => continue,
            (Ok(sm), Ok(dm)) => (sm, dm),
            (_, Err(e)) => {
                diffs.push(format!("{what:?}: missing from the extraction: {e}"));
                continue;
            }
            (Err(e), _) => panic!("{what:?}: {e}"),
        };
        diffs.extend(entry_diff(&what, &s, &d, &sm, &dm));
        if sm.is_file() && sm.nlink() > 1 {
            let first = *inodes.entry(sm.ino()).or_insert(dm.ino());
            if first != dm.ino() {
                diffs.push(format!("{what:?}: no longer a hard link"));
            }
        }
        if sm.is_dir() && dm.is_dir() {
            let sn: Vec<_> = list_dir(&s).unwrap().into_iter().collect();
            let dn = list_dir(&d).unwrap();
            for name in &dn {
                if !sn.contains(name) {
                    diffs.push(format!(
                        "{what:?}: extra entry {:?}",
                        OsStr::from_bytes(name)
                    ));
                }
            }
            pending.extend(sn.iter().map(|n| child(&rel, n)));
        }
    }
    diffs
}

fn entry_diff(what: &str, s: &Path, d: &Path, sm: &Metadata, dm: &Metadata) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut same = |field: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{what:?}: {field} {a} != {b}"));
        }
    };
    let kind = |m: &Metadata| format!("{:o}", m.mode() & libc::S_IFMT);
    same("type", kind(sm), kind(dm));
    same(
        "mode",
        format!("{:o}", sm.mode() & 0o7777),
        format!("{:o}", dm.mode() & 0o7777),
    );
    same(
        "owner",
        format!("{}:{}", sm.uid(), sm.gid()),
        format!("{}:{}", dm.uid(), dm.gid()),
    );
    let mtime = |m: &Metadata| format!("{}s+{}ns", m.mtime(), m.mtime_nsec());
    same("mtime", mtime(sm), mtime(dm));
    let xattrs = |path: &Path| format!("{:?}", read_xattrs(path).unwrap());
    same("xattrs", xattrs(s), xattrs(d));
    let ft = sm.file_type();
    if ft.is_file() {
        let same_content = fs::read(s).unwrap() == fs::read(d).unwrap_or_default();
        same(
            "content",
            "as source".into(),
            if same_content {
                "as source"
            } else {
                "different"
            }
            .into(),
        );
    } else if ft.is_symlink() {
        let target = |p: &Path| format!("{:?}", fs::read_link(p).ok());
        same("target", target(s), target(d));
    } else if ft.is_char_device() || ft.is_block_device() {
        same("rdev", sm.rdev().to_string(), dm.rdev().to_string());
    }
    diffs
}

/// Assert the trees are the same but for differences starting with one of `known`.
pub(super) fn assert_same_tree_except(src: &Path, dst: &Path, known: &[&str]) {
    let diffs: Vec<String> = tree_diff(src, dst)
        .into_iter()
        .filter(|d| !known.iter().any(|k| d.starts_with(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "extraction differs:\n{}",
        diffs.join("\n")
    );
}

pub(super) fn assert_same_tree(src: &Path, dst: &Path) {
    assert_same_tree_except(src, dst, &[]);
}
