//! rsync as the judge of a mount against GNU tar's extraction: a dry run both ways finds
//! nothing to change (content, modes, owners, times, hardlinks, xattrs, devices).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fixtures::set_mtime_ns;
use super::oracle::walk;
use crate::common::*;

fn rel(root: &Path, p: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(&p[1..]))
}

/// GNU tar restores a directory's mtime only when its members follow it directly, which
/// bsdtar's member order defeats: give the extraction's directories the source tree's times
/// (which the stream carries).
pub(super) fn dir_mtimes_from(source: &Path, extraction: &Path) {
    let mut dirs: Vec<(PathBuf, PathBuf)> = walk(extraction)
        .into_iter()
        .filter(|(_, p)| p.symlink_metadata().unwrap().is_dir())
        .map(|(r, p)| (rel(source, &r), p))
        .collect();
    dirs.push((source.to_path_buf(), extraction.to_path_buf()));
    for (src, dst) in dirs {
        let m = src.symlink_metadata().unwrap();
        set_mtime_ns(&dst, m.mtime(), m.mtime_nsec());
    }
}

/// `rsync -n -a -c -H -X --itemize-changes FROM/ TO/`: (exit code, stdout, stderr).
pub(super) fn rsync_dry(from: &Path, to: &Path) -> (Option<i32>, String, String) {
    require("rsync");
    let out = Command::new("rsync")
        .args([
            "-n",
            "-a",
            "-c",
            "-H",
            "-X",
            "--numeric-ids",
            "--itemize-changes",
        ])
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .output()
        .expect("run rsync");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// rsync finds no difference in either direction.
pub(super) fn assert_rsync_same(mount: &Path, extraction: &Path, what: &str) {
    for (a, b, dir) in [
        (mount, extraction, "mount -> extraction"),
        (extraction, mount, "extraction -> mount"),
    ] {
        let (code, out, err) = rsync_dry(a, b);
        assert_eq!(
            code,
            Some(0),
            "{what}: rsync {dir} exit status; stderr:\n{err}"
        );
        assert!(
            out.is_empty(),
            "{what}: rsync {dir} found differences:\n{out}\nstderr:\n{err}"
        );
    }
}
