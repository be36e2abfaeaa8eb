//! Other tars read what the writer writes, and GNU tar writes the same bytes where it can.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{lchown, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use super::compare::{assert_same_tree, assert_same_tree_except};
use super::tree::{chmod, dir, file, mknod, noise, p, set_mtime, set_xattr, varied_tree, T0};
use super::{expected_names, no_opts, write};
use crate::tar::writer::sparse::looks_sparse;

fn pipe_through(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    out
}

fn gnu_extract(stream: &[u8], into: &Path) {
    let out = pipe_through(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
            // Times before 1970 and after now are what the tree is testing.
            .args(["--warning=no-timestamp", "-xpf", "-", "-C"])
            .arg(into),
        stream,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "GNU tar -x: {stderr}"
    );
}

#[test]
fn gnu_tar_extracts_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let sparse = varied_tree(&src);
    let (stream, _) = write(&src, &no_opts());
    let dst = dir(tmp.path(), b"gnu");
    gnu_extract(&stream, &dst);
    assert_same_tree(&src, &dst);
    for rel in &sparse {
        let md = fs::symlink_metadata(p(&dst, rel)).unwrap();
        assert!(
            looks_sparse(&md),
            "{:?} extracted without holes",
            String::from_utf8_lossy(rel)
        );
    }
    // `--sparse -tv` shows the real size of a sparse member.
    let list = pipe_through(Command::new("tar").args(["--sparse", "-tvf", "-"]), &stream);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list = String::from_utf8_lossy(&list.stdout);
    let holey = list
        .lines()
        .find(|l| l.ends_with("./sparse/holey"))
        .expect("listed");
    assert!(holey.contains(" 4194304 "), "{holey}");
}

/// bsdtar's complaint, shared with GNU tar's own archives, about a `path` record that is not
/// UTF-8 (see the module documentation); it still lists and extracts the name right.
const BSDTAR_NOT_UTF8: &str = "bsdtar: Pathname can't be converted from UTF-8 to current locale.\n\
    bsdtar: Error exit delayed from previous errors.\n";

#[test]
fn bsdtar_reads_and_extracts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    varied_tree(&src);
    let (stream, report) = write(&src, &no_opts());
    let list = pipe_through(Command::new("bsdtar").args(["-tvf", "-"]), &stream);
    assert_eq!(String::from_utf8_lossy(&list.stderr), BSDTAR_NOT_UTF8);
    // One line per member (bsdtar escapes the newline in a name).
    let lines = list.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, report.members);

    let dst = dir(tmp.path(), b"bsd");
    let extract = pipe_through(
        Command::new("bsdtar")
            .args(["--numeric-owner", "--xattrs", "-xpf", "-", "-C"])
            .arg(&dst),
        &stream,
    );
    assert_eq!(String::from_utf8_lossy(&extract.stderr), BSDTAR_NOT_UTF8);
    // libarchive 3.6 leaves the mtime of the directory extracted into alone, and reads
    // `mtime=-1.5` as -0.5 s (GNU tar's own archives too).
    assert_same_tree_except(&src, &dst, &["\"\": mtime ", "\"time/neg\": mtime "]);
}

/// Where nothing needs a GNU extension that varies (atime, ctime, sub-second mtimes,
/// sparse file names with a pid), GNU tar writes exactly the same bytes.
#[test]
fn byte_identical_to_gnu_tar_on_plain_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for (i, size) in [0, 1, 511, 512, 513, 70_000].into_iter().enumerate() {
        file(&src, format!("f{i}").as_bytes(), &noise(size, i as u64));
    }
    chmod(&file(&src, b"sub/setuid", b"x"), 0o4711);
    chmod(&dir(&src, b"sub/sticky"), 0o1777);
    symlink("short", src.join("sub/short")).unwrap();
    symlink("l".repeat(150), src.join("sub/long")).unwrap();
    fs::hard_link(src.join("f1"), src.join("sub/hard")).unwrap();
    let deep = [&b"deep/"[..], &[b'd'; 200], b"/", &[b'e'; 100]].concat();
    file(&src, &deep, b"deep");
    fs::hard_link(p(&src, &deep), src.join("sub/hard-to-deep")).unwrap();
    mknod(&src.join("sub/chr"), libc::S_IFCHR, 1, 3);
    mknod(&src.join("sub/fifo"), libc::S_IFIFO, 0, 0);
    // GNU tar links a symlink's second name as a file's (link(2) links the symlink itself),
    // and writes a device's or fifo's second name as a node of its own.
    for linked in ["short", "chr", "fifo"] {
        let at = |name: &str| src.join("sub").join(name);
        fs::hard_link(at(linked), at(&format!("{linked}-again"))).unwrap();
    }
    lchown(file(&src, b"sub/bigid", b"id"), Some(3_000_000), Some(7)).unwrap();
    set_xattr(&file(&src, b"sub/xattr", b"x"), "user.k", b"v\nw");
    // GNU tar moves names with non-ASCII bytes to `path` records; this one is ASCII.
    file(&src, b"odd/new\nline\t=", b"odd");
    for rel in expected_names(&src) {
        set_mtime(&p(&src, &rel), T0, 0);
    }
    let (ours, _) = write(&src, &no_opts());
    let gnu = Command::new("tar")
        .args([
            "--format=posix",
            "--numeric-owner",
            "--sort=name",
            "--xattrs",
            "--xattrs-include=*",
            "--pax-option=exthdr.name=./PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
            "-cf",
            "-",
            "-C",
        ])
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        gnu.status.success(),
        "{}",
        String::from_utf8_lossy(&gnu.stderr)
    );
    if ours != gnu.stdout {
        let at = ours.iter().zip(&gnu.stdout).position(|(a, b)| a != b);
        panic!(
            "differs from GNU tar at byte {at:?} (lengths {} and {}); block ours/GNU:\n{:?}\n{:?}",
            ours.len(),
            gnu.stdout.len(),
            at.map(|at| String::from_utf8_lossy(&ours[at / 512 * 512..][..512]).into_owned()),
            at.map(|at| String::from_utf8_lossy(&gnu.stdout[at / 512 * 512..][..512]).into_owned()),
        );
    }
}
