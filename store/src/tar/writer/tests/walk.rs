//! The walk: excludes, mount points, the root, errors and warnings, files that change.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tree::{c_path, dir, file, noise, set_mtime, set_xattr, T0};
use super::{names_with, no_opts, read_back, write, Read};
use crate::error::Error;
use crate::tar::pax;
use crate::tar::writer::{write_dir, DirOptions, Walker};

#[test]
fn excludes_leave_out_members_and_directory_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for rel in [
        &b"proc/1/status"[..],
        b"var/cache/apt/pkgcache.bin",
        b"var/log/syslog.log",
        b"var/log/keep.txt",
        b"home/cache/x",
        b"home/user/a.log",
        b"home/user/[literal]",
    ] {
        file(root, rel, b"x");
    }
    let opts = DirOptions {
        excludes: vec!["proc".into(), "var/cache/*".into(), "*.log".into()],
        one_file_system: false,
        ..Default::default()
    };
    assert_eq!(
        names_with(root, &opts),
        [
            "./",
            "./home/",
            "./home/cache/",
            "./home/cache/x",
            "./home/user/",
            "./home/user/[literal]",
            "./var/",
            "./var/cache/",
            "./var/log/",
            "./var/log/keep.txt",
        ]
    );
    let opts = DirOptions {
        excludes: vec!["cache".into(), "home/user/\\[*".into(), "v?r".into()],
        one_file_system: false,
        ..Default::default()
    };
    assert_eq!(
        names_with(root, &opts),
        [
            "./",
            "./home/",
            "./home/user/",
            "./home/user/a.log",
            "./proc/",
            "./proc/1/",
            "./proc/1/status"
        ]
    );
}

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c_path(&self.0).as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn one_file_system_stops_at_mount_points() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    file(root, b"a", b"a");
    let mnt = dir(root, b"mnt");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs (these tests run as root)");
    let _mounted = Mounted(mnt.clone());
    file(root, b"mnt/inside", b"other fs");
    file(root, b"z", b"z");
    let all = ["./", "./a", "./mnt/", "./mnt/inside", "./z"];
    assert_eq!(names_with(root, &no_opts()), all);
    let opts = DirOptions {
        one_file_system: true,
        ..Default::default()
    };
    assert_eq!(names_with(root, &opts), ["./", "./a", "./mnt/", "./z"]);
}

#[test]
fn root_must_be_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let f = file(tmp.path(), b"f", b"");
    let err = write_dir(&f, &no_opts(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = write_dir(&tmp.path().join("nope"), &no_opts(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn a_symlinked_root_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let real = dir(tmp.path(), b"real");
    file(&real, b"f", b"content");
    set_xattr(&real, "user.root", b"on the root");
    set_mtime(&real, T0, 0);
    symlink("real", tmp.path().join("link")).unwrap();
    let (direct, _) = write(&real, &no_opts());
    let (via_link, _) = write(&tmp.path().join("link"), &no_opts());
    assert!(direct == via_link);
    let root = &read_back(&direct)[0];
    assert_eq!(
        pax::lookup(&root.pax, "SCHILY.xattr.user.root"),
        Some(&b"on the root"[..])
    );
}

struct FailingWriter(usize);

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.0 {
            return Err(io::Error::other("disk full"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_output_errors() {
    let tmp = tempfile::tempdir().unwrap();
    file(tmp.path(), b"big", &noise(300_000, 9));
    for budget in [0, 100_000] {
        let err = write_dir(tmp.path(), &no_opts(), &mut FailingWriter(budget)).unwrap_err();
        assert!(matches!(err, Error::Output(_)), "{err}");
    }
}

/// A walker over `root` writing into `out`, for driving single steps.
fn walker<'a>(root: &'a Path, out: &'a mut Vec<u8>) -> Walker<'a> {
    let dir = File::open(root).unwrap();
    let md = dir.metadata().unwrap();
    let mut w = Walker::new(root, &md, &no_opts(), out);
    w.start(dir, &md).unwrap();
    w
}

#[test]
fn vanished_paths_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let mut w = walker(tmp.path(), &mut out);
    assert!(w.visit(b"gone".to_vec()).unwrap().is_none());
    assert_eq!(w.report.members, 1, "the root's member only");
    let warning = &w.report.warnings[0];
    assert!(
        warning.starts_with(&format!("{}: ", tmp.path().join("gone").display())),
        "{warning}"
    );
    assert!(warning.contains("No such file"), "{warning}");
}

/// The machine being archived keeps running: a directory the walk is inside of is moved
/// away and a symlink to elsewhere put in its place. The walk goes on in the directory it
/// opened; nothing from where the symlink points gets in.
#[test]
fn a_directory_swapped_for_a_symlink_mid_walk_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
    file(&root, b"a/b/file", b"inside");
    file(&outside, b"b/file", b"secret");
    file(&outside, b"b/extra", b"secret");
    let mut out = Vec::new();
    let warnings = {
        let mut w = walker(&root, &mut out);
        assert!(w.step().unwrap(), "./a/ written and entered");
        fs::rename(root.join("a"), root.join("z")).unwrap();
        symlink(&outside, root.join("a")).unwrap();
        w.run().unwrap();
        w.out.finish().unwrap();
        w.report.warnings
    };
    assert_eq!(warnings, Vec::<String>::new());
    let members = read_back(&out);
    let names: Vec<_> = members.iter().map(|m| m.path.as_slice()).collect();
    assert_eq!(names, [&b"./"[..], b"./a/", b"./a/b/", b"./a/b/file"]);
    assert_eq!(members[3].payload, b"inside");
    assert!(!out.windows(6).any(|w| w == b"secret"));
}

/// Write one file whose size changes between the header's fstat and the copy.
fn changed_file(new_len: u64) -> (Vec<Read>, Vec<String>, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let content = noise(10_000, 11);
    let path = file(tmp.path(), b"f", &content);
    let f = File::open(&path).unwrap();
    let md = f.metadata().unwrap();
    let grown = [content.clone(), noise(5000, 12)].concat();
    fs::write(&path, &grown).unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(new_len)
        .unwrap();
    let mut out = Vec::new();
    let warnings = {
        let mut w = walker(tmp.path(), &mut out);
        w.file(b"f", &f, &md).unwrap();
        w.out.finish().unwrap();
        w.report.warnings
    };
    // The root's member, then the file's.
    (read_back(&out).split_off(1), warnings, grown)
}

#[test]
fn a_file_that_shrinks_is_padded_with_zeros() {
    let (members, warnings, grown) = changed_file(3000);
    let payload = &members[0].payload;
    assert_eq!(payload.len(), 10_000, "the size in the header");
    assert_eq!(&payload[..3000], &grown[..3000]);
    assert!(payload[3000..].iter().all(|&b| b == 0));
    assert!(
        warnings[0].ends_with(": file changed as we read it"),
        "{warnings:?}"
    );
}

#[test]
fn a_file_that_grows_is_cut_at_the_header_size() {
    let (members, warnings, grown) = changed_file(15_000);
    assert_eq!(members[0].payload, grown[..10_000]);
    assert!(
        warnings[0].ends_with(": file changed as we read it"),
        "{warnings:?}"
    );
}
