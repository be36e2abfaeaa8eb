//! rsync as the judge of a mount against GNU tar's extraction: a dry run both ways finds
//! nothing to change (content, modes, owners, times, hardlinks, xattrs, devices).

use std::path::Path;
use std::process::Command;

use crate::common::*;

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
