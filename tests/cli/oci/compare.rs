//! rsync as the judge of an unpacked image against GNU tar's extraction of the same stream: a
//! dry run each way (`-n -a -c -H --delete`, `-X` where the filesystem has xattrs, nanosecond
//! mtimes) itemizes nothing. Content, types, modes, owners, times, symlink targets, hardlinks,
//! devices, xattrs and extra or missing entries all show up as itemized lines.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::browse::oracle::walk;
use crate::common::require;

/// What the comparison may overlook. The default overlooks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compare {
    /// Compare mtimes to the nanosecond (`--modify-window=-1`), not just the second. Off only
    /// for streams whose format has whole seconds on one side (then both sides have them
    /// anyway; this is for a writer that drops a source's fraction on purpose).
    pub(crate) nanos: bool,
    /// Compare the root directory's own mtime. umoci unpack gives the rootfs the `./` entry's
    /// mtime, as GNU tar does the extraction directory, so this stays on; turn it off only for
    /// layers without a `./` entry, where each tool leaves the time it created the directory.
    pub(crate) root_mtime: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            nanos: true,
            root_mtime: true,
        }
    }
}

/// Whether the filesystem holding `dir` takes `user.*` xattrs (tmpfs without xattr support,
/// some overlay setups do not): then rsync compares xattrs (-X), else it could only fail.
pub(crate) fn xattrs_supported(dir: &Path) -> bool {
    let Ok(probe) = tempfile::NamedTempFile::new_in(dir) else {
        // Read-only (a mount point's parent, say): listing tells as much as setting would.
        let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
        return unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) } >= 0;
    };
    let path = CString::new(probe.path().as_os_str().as_bytes()).unwrap();
    let name = CString::new("user.cellar-test-probe").unwrap();
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if rc == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert!(
        err.raw_os_error() == Some(libc::ENOTSUP),
        "probing xattrs in {}: {err}",
        dir.display()
    );
    false
}

/// `rsync -n -a -c -H --delete --numeric-ids -i [-X] [--modify-window=-1] FROM/ TO/`: the
/// itemized lines (what rsync would change in TO to make it FROM), minus what `cmp` overlooks.
/// Panics if rsync fails.
pub(crate) fn rsync_itemize(from: &Path, to: &Path, cmp: Compare) -> Vec<String> {
    require("rsync");
    let mut args = vec![
        "-n",
        "-a",
        "-c",
        "-H",
        "--delete",
        "--numeric-ids",
        "--itemize-changes",
    ];
    let parent = |p: &Path| p.parent().unwrap_or(p).to_path_buf();
    if xattrs_supported(&parent(from)) && xattrs_supported(&parent(to)) {
        args.push("-X");
    }
    if cmp.nanos {
        // A negative window compares nanoseconds too (rsync >= 3.1.3 on the receiver).
        args.push("--modify-window=-1");
    }
    let out = Command::new("rsync")
        .args(&args)
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync {args:?} {} {} failed ({}):\n{}",
        from.display(),
        to.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| cmp.root_mtime || !is_root_time_only(l))
        .map(str::to_string)
        .collect()
}

/// An itemized line for the root directory saying only its time differs: `.d..t...... ./`.
fn is_root_time_only(line: &str) -> bool {
    let Some((flags, name)) = line.split_once(' ') else {
        return false;
    };
    name.trim_start() == "./"
        && flags.len() == 11
        && flags.starts_with(".d")
        && flags
            .char_indices()
            .all(|(i, c)| i < 2 || c == '.' || (i == 4 && matches!(c, 't' | 'T')))
}

/// Differences each way, each line prefixed with its direction; empty when the trees match.
pub(crate) fn tree_differences(expected: &Path, actual: &Path, cmp: Compare) -> Vec<String> {
    let mut out = Vec::new();
    for (from, to, dir) in [
        (expected, actual, "expected -> actual"),
        (actual, expected, "actual -> expected"),
    ] {
        out.extend(
            rsync_itemize(from, to, cmp)
                .into_iter()
                .map(|l| format!("{dir}: {l}")),
        );
    }
    out
}

/// `actual` is `expected` in every respect rsync sees (see `Compare::default`).
pub(crate) fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_same_tree_with(expected, actual, Compare::default(), "");
}

/// `assert_same_tree`, overlooking what `cmp` says, with `what` in the message.
pub(crate) fn assert_same_tree_with(expected: &Path, actual: &Path, cmp: Compare, what: &str) {
    let diffs = tree_differences(expected, actual, cmp);
    assert!(
        diffs.is_empty(),
        "{what}: {} (actual) differs from {} (expected) ({cmp:?}):\n{}",
        actual.display(),
        expected.display(),
        diffs.join("\n")
    );
}

fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
}

/// Negative control for `assert_same_tree(expected, actual)`: in a copy of `actual` (`cp -a`,
/// beside it), flip one byte of a non-empty regular file keeping its size and times, and move
/// another entry's mtime by 1 ns; the comparison must report both, each way.
pub(crate) fn assert_comparison_catches_changes(expected: &Path, actual: &Path) {
    let parent = actual.parent().expect("actual has a parent");
    let scratch = tempfile::tempdir_in(parent).expect("tempdir");
    let copy = scratch.path().join("copy");
    let out = Command::new("cp")
        .arg("-a")
        .arg(actual)
        .arg(&copy)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree_with(expected, &copy, Compare::default(), "cp -a copy (control)");

    let entries = walk(&copy);
    let rel = |p: &[u8]| String::from_utf8_lossy(&p[1..]).into_owned();
    let (byte_rel, byte_path) = entries
        .iter()
        .find(|(_, p)| {
            let m = p.symlink_metadata().unwrap();
            m.is_file() && m.len() > 0
        })
        .expect("a non-empty regular file to change");
    // Not a hardlink of the first (they share times), nor a symlink or directory (whose
    // times rsync treats specially: -O, --omit-link-times).
    let byte_ino = byte_path.symlink_metadata().unwrap().ino();
    let (time_rel, time_path) = entries
        .iter()
        .find(|(_, p)| {
            let m = p.symlink_metadata().unwrap();
            m.ino() != byte_ino && !m.is_dir() && !m.file_type().is_symlink()
        })
        .expect("a second entry (not a directory, symlink or hardlink of the first) to retime");

    let m = byte_path.symlink_metadata().unwrap();
    let mut data = std::fs::read(byte_path).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x01;
    std::fs::write(byte_path, &data).unwrap();
    // A write may clear setuid/setgid (without CAP_FSETID): only the byte may differ.
    std::fs::set_permissions(byte_path, m.permissions()).unwrap();
    set_mtime_ns(byte_path, m.mtime(), m.mtime_nsec());
    // Hardlinks of the retimed entry change with it; rsync reports the name it checks.
    let t = time_path.symlink_metadata().unwrap();
    let nsec = (t.mtime_nsec() + 1) % 1_000_000_000;
    set_mtime_ns(time_path, t.mtime(), nsec);

    let diffs = tree_differences(expected, &copy, Compare::default());
    let (byte_rel, time_rel) = (rel(byte_rel), rel(time_rel));
    for dir in ["expected -> actual", "actual -> expected"] {
        let line = |name: &str| {
            diffs
                .iter()
                .find(|l| l.starts_with(dir) && l.ends_with(&format!(" {name}")))
                .cloned()
        };
        let content = line(&byte_rel).unwrap_or_else(|| {
            panic!(
                "control: {dir} missed a changed byte in {byte_rel}:\n{}",
                diffs.join("\n")
            )
        });
        assert!(
            content.contains(": >fc"),
            "control: {dir}: {content} (want a checksum change)"
        );
        // Which name of a hardlinked group rsync reports is its choice: any changed time will
        // do, from flags like `.f..t......` after the direction prefix.
        let time_changed = |l: &String| {
            l.strip_prefix(dir)
                .and_then(|r| r.strip_prefix(": "))
                .is_some_and(|f| f.as_bytes().get(4) == Some(&b't'))
        };
        assert!(
            diffs.iter().any(time_changed),
            "control: {dir} missed a 1 ns mtime change of {time_rel}:\n{}",
            diffs.join("\n")
        );
    }
}
