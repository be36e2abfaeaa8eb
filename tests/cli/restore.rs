//! `cellar restore`: the restored directory against GNU tar's extraction of the same stream
//! (rsync -n -a -c -H -X in both directions), sparse files and hardlinks on disk, `--path`,
//! the non-empty-DIR rule, hostile streams and pre-existing symlinks that must not lead
//! outside DIR, and damaged packs that must fail loudly instead of writing wrong bytes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use crate::trees::*;

const GNU_POSIX_SPARSE: &[&str] = &[
    "tar",
    "--format=posix",
    "--xattrs",
    "--xattrs-include=*",
    "--sparse",
    "-cf",
    "-",
];
const BSDTAR_PAX: &[&str] = &["bsdtar", "--format", "pax", "-cf", "-"];

fn archive(writer: &[&str], root: &Path) -> Vec<u8> {
    let mut argv = writer.to_vec();
    argv.extend(["-C", root.to_str().unwrap(), "."]);
    tar_stream(&argv)
}

/// GNU tar's extraction of `stream` into a new directory `dir`, everything kept (as root).
fn extract(store: &TestStore, stream: &[u8], dir: &Path) {
    let file = store.scratch(&format!(
        "{}.tar",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&file, stream).unwrap();
    fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf '{}' -C '{}'",
        file.display(),
        dir.display()
    ));
}

fn restore(store: &TestStore, args: &[&str]) -> Output {
    let mut argv = vec!["restore"];
    argv.extend_from_slice(args);
    store.run(&argv)
}

fn restore_ok(store: &TestStore, args: &[&str]) -> Output {
    let out = restore(store, args);
    assert_success(&out, args);
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Everything below `root`, depth-first in byte order of names: ("/rel", path).
fn walk(root: &Path) -> Vec<(Vec<u8>, PathBuf)> {
    fn go(dir: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, PathBuf)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        for e in entries {
            let p = [rel, b"/", e.file_name().as_bytes()].concat();
            let path = e.path();
            out.push((p.clone(), path.clone()));
            if e.file_type().unwrap().is_dir() {
                go(&path, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, b"", &mut out);
    out
}

fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// GNU tar restores a directory's mtime only when its members follow it directly, which
/// bsdtar's member order defeats: give the extraction's directories the source's times (which
/// the stream carries).
fn dir_mtimes_from(source: &Path, extraction: &Path) {
    let mut dirs: Vec<(PathBuf, PathBuf)> = walk(extraction)
        .into_iter()
        .filter(|(_, p)| p.symlink_metadata().unwrap().is_dir())
        .map(|(r, p)| (source.join(OsStr::from_bytes(&r[1..])), p))
        .collect();
    dirs.push((source.to_path_buf(), extraction.to_path_buf()));
    for (src, dst) in dirs {
        let m = src.symlink_metadata().unwrap();
        set_mtime_ns(&dst, m.mtime(), m.mtime_nsec());
    }
}

/// `rsync -n -a -c -H -X --numeric-ids --itemize-changes FROM/ TO/`: (exit code, stdout,
/// stderr).
fn rsync_dry(from: &Path, to: &Path) -> (Option<i32>, String, String) {
    rsync_dry_with(from, to, &[])
}

fn rsync_dry_with(from: &Path, to: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
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
        .args(extra)
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

/// rsync sees no difference in either direction.
fn assert_rsync_same(a: &Path, b: &Path, what: &str) {
    assert_rsync_same_with(a, b, what, &[]);
}

fn assert_rsync_same_with(a: &Path, b: &Path, what: &str, extra: &[&str]) {
    for (from, to, dir) in [
        (a, b, "restored -> extracted"),
        (b, a, "extracted -> restored"),
    ] {
        let (code, out, err) = rsync_dry_with(from, to, extra);
        assert_eq!(code, Some(0), "{what}: rsync {dir}; stderr:\n{err}");
        assert!(
            out.is_empty(),
            "{what}: rsync {dir} found differences:\n{out}\nstderr:\n{err}"
        );
    }
}

/// A tree archived by `writer`, snapshotted, and GNU tar's extraction of the same stream.
struct Fixture {
    store: TestStore,
    root: PathBuf,
    id: String,
    ex: PathBuf,
}

fn fixture(writer: &[&str], bsdtar_dir_order: bool) -> Fixture {
    let store = TestStore::new();
    let root = store.scratch("tree");
    varied_tree(&root);
    let stream = archive(writer, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let ex = store.scratch("extract");
    extract(&store, &stream, &ex);
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

/// Restore the whole snapshot and compare with the extraction: rsync both ways, sparse files
/// still sparse, hardlinks one inode, the report; then a negative control.
fn check_restore(what: &str, writer: &[&str], bsdtar_dir_order: bool) {
    let Fixture {
        store,
        id,
        ex,
        root,
        ..
    } = fixture(writer, bsdtar_dir_order);
    let out = store.scratch("out");
    let done = restore_ok(&store, &[&id, s(&out), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).expect("JSON report");
    assert_eq!(
        report["warnings"],
        serde_json::json!([]),
        "{what}: {report}"
    );
    assert_eq!(
        report["files"].as_u64().unwrap(),
        walk(&out).len() as u64,
        "{what}: files counts every name created: {report}"
    );
    assert!(
        report["bytes"].as_u64().unwrap() > 4_500_000,
        "{what}: {report}"
    );
    assert!(
        stderr(&done).contains("restored"),
        "{what}: no summary line: {}",
        stderr(&done)
    );

    assert_rsync_same(&out, &ex, what);

    // Sparse files stay sparse: only their data blocks are allocated.
    for (p, data) in [
        ("sparse/disk.img", 3 * 4096u64),
        ("sparse/holes-only.img", 0),
    ] {
        let m = out.join(p).symlink_metadata().unwrap();
        let src = root.join(p).symlink_metadata().unwrap();
        assert_eq!(m.len(), src.len(), "{what}: {p} length");
        assert!(
            m.blocks() * 512 <= data + (256 << 10),
            "{what}: {p} allocates {} bytes for {data} bytes of data",
            m.blocks() * 512
        );
    }
    // Hardlinks share an inode.
    let hard = format!("long/{}-hard", "h".repeat(110));
    for (a, b) in [
        ("etc/hostname", "etc/hostname.hard"),
        ("usr/bin/tool", hard.as_str()),
    ] {
        let (ma, mb) = (
            out.join(a).symlink_metadata().unwrap(),
            out.join(b).symlink_metadata().unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino(), "{what}: {a} and {b} are not one inode");
        assert_eq!(ma.nlink(), 2, "{what}: nlink of {a}");
    }
    // Spot checks rsync also covers, stated plainly.
    let st = |p: &str| out.join(p).symlink_metadata().unwrap();
    assert!(st("dev/null").file_type().is_char_device(), "{what}");
    assert_eq!(st("dev/loop9").rdev(), libc::makedev(7, 9), "{what}");
    assert!(st("dev/fifo").file_type().is_fifo(), "{what}");
    assert_eq!(st("modes/setuid").mode() & 0o7777, 0o4755, "{what}");
    assert_eq!(st("modes/sticky").mode() & 0o7777, 0o1777, "{what}");
    assert_eq!(
        (st("ids/big-owner").uid(), st("ids/big-owner").gid()),
        (3_000_000, 4_000_000),
        "{what}"
    );
    assert_eq!(st("ids/far-future").mtime(), 10_000_000_000, "{what}");
    assert_eq!(
        fs::read_link(out.join("etc/tool-link")).unwrap(),
        Path::new("../usr/bin/tool"),
        "{what}"
    );

    // Negative control: rsync does see a changed byte (same size and mtime) and a chmod.
    let victim = out.join("usr/share/doc/readme.txt");
    let vm = victim.symlink_metadata().unwrap();
    let mut data = fs::read(&victim).unwrap();
    data[1000] ^= 0x20;
    fs::write(&victim, &data).unwrap();
    set_mtime_ns(&victim, vm.mtime(), vm.mtime_nsec());
    fs::set_permissions(out.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, diff, err) = rsync_dry(&out, &ex);
    assert_eq!(code, Some(0), "{what}: control rsync: {err}");
    let line = |p: &str| diff.lines().find(|l| l.ends_with(p)).map(str::to_string);
    let changed = line("usr/share/doc/readme.txt")
        .unwrap_or_else(|| panic!("{what}: rsync missed a changed byte:\n{diff}"));
    assert!(changed.starts_with(">fc"), "{what}: {changed}");
    let perms =
        line("etc/hostname").unwrap_or_else(|| panic!("{what}: rsync missed a chmod:\n{diff}"));
    assert_eq!(perms.as_bytes()[5], b'p', "{what}: {perms}");
}

#[test]
fn restore_matches_gnu_tar_extraction_of_gnu_posix_sparse_stream() {
    check_restore("gnu posix xattrs sparse", GNU_POSIX_SPARSE, false);
}

#[test]
fn restore_matches_gnu_tar_extraction_of_bsdtar_pax_stream() {
    check_restore("bsdtar pax", BSDTAR_PAX, true);
}

#[test]
fn restore_path_of_a_directory_a_file_and_a_symlink() {
    let Fixture { store, id, ex, .. } = fixture(GNU_POSIX_SPARSE, false);

    // A directory: its contents (and its own attributes) go directly into DIR.
    let usr = store.scratch("usr");
    restore_ok(&store, &[&id, s(&usr), "--path", "/usr"]);
    assert_rsync_same(&usr, &ex.join("usr"), "--path /usr");
    let sparse = store.scratch("sparse");
    restore_ok(&store, &[&id, s(&sparse), "--path", "sparse/"]);
    assert_rsync_same(&sparse, &ex.join("sparse"), "--path sparse/");

    // A file (one name of a hardlink pair): DIR/NAME, with its attributes.
    let one = store.scratch("one");
    restore_ok(&store, &[&id, s(&one), "--path", "/usr/bin/tool"]);
    let names: Vec<_> = fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("tool")]);
    let (got, want) = (one.join("tool"), ex.join("usr/bin/tool"));
    assert!(
        fs::read(&got).unwrap() == fs::read(&want).unwrap(),
        "tool bytes"
    );
    let (mg, mw) = (got.metadata().unwrap(), want.metadata().unwrap());
    assert_eq!(
        (
            mg.mode(),
            mg.uid(),
            mg.gid(),
            mg.mtime(),
            mg.mtime_nsec(),
            mg.nlink()
        ),
        (
            mw.mode(),
            mw.uid(),
            mw.gid(),
            mw.mtime(),
            mw.mtime_nsec(),
            1
        ),
        "--path /usr/bin/tool: mode, owner, mtime (a lone name: one link)"
    );

    // A symlink: the link itself, never its target.
    let link = store.scratch("link");
    restore_ok(&store, &[&id, s(&link), "--path", "/etc/tool-link"]);
    let m = link.join("tool-link").symlink_metadata().unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(
        fs::read_link(link.join("tool-link")).unwrap(),
        Path::new("../usr/bin/tool")
    );
    let mw = ex.join("etc/tool-link").symlink_metadata().unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (mw.mtime(), mw.mtime_nsec()));

    // A path not in the snapshot, and an unknown SNAP: exit 2, DIR not even created.
    for args in [
        vec![id.as_str(), "", "--path", "/no/such"],
        vec!["nosuchsnap", "", "--path", "/"],
        vec![id.as_str(), "", "--path", "/etc/hostname/below"],
    ] {
        let dir = store.scratch("never");
        let mut args = args.clone();
        args[1] = s(&dir);
        let out = restore(&store, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!dir.exists(), "{args:?} created DIR");
    }
}

#[test]
fn a_non_empty_dir_is_refused_without_force_and_reused_with_it() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let id = store.snapshot_bytes(&archive(GNU_POSIX_SPARSE, &root), "vm");
    let ex = store.scratch("extract");
    extract(&store, &archive(GNU_POSIX_SPARSE, &root), &ex);

    let out = store.scratch("out");
    write_file(
        &out.join("etc/hostname"),
        b"something else, longer than before\n",
    );
    write_file(&out.join("mine.txt"), b"keep me\n");
    fs::create_dir_all(out.join("usr/bin/tool")).unwrap(); // an empty dir where a file goes
    symlink("nowhere", out.join("var")).unwrap(); // a symlink where a directory goes

    let refused = restore(&store, &[&id, s(&out)]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not empty") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        fs::read(out.join("etc/hostname")).unwrap(),
        b"something else, longer than before\n",
        "a refused restore touched DIR"
    );
    assert!(!out.join("usr/share").exists(), "a refused restore wrote");

    let done = restore_ok(&store, &[&id, s(&out), "--force"]);
    assert_eq!(fs::read(out.join("mine.txt")).unwrap(), b"keep me\n");
    fs::remove_file(out.join("mine.txt")).unwrap();
    assert!(
        !out.join("var").symlink_metadata().unwrap().is_symlink(),
        "the symlink in the way was kept"
    );
    assert_rsync_same(&out, &ex, "--force over an older tree");
    assert!(stderr(&done).contains("restored"), "{}", stderr(&done));

    // Restoring again over the complete result changes nothing.
    restore_ok(&store, &[&id, s(&out), "--force"]);
    assert_rsync_same(&out, &ex, "--force twice");

    // DIR itself a symlink: refused (exit 2); a file: refused.
    let link = store.scratch("dirlink");
    let target = store.scratch("dirlink-target");
    fs::create_dir(&target).unwrap();
    symlink(&target, &link).unwrap();
    for dir in [&link, &out.join("etc/hostname")] {
        let r = restore(&store, &[&id, s(dir), "--force"]);
        assert_eq!(
            r.status.code(),
            Some(2),
            "{}: {}",
            dir.display(),
            stderr(&r)
        );
    }
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// A ustar header written by hand (uid/gid 0, fixed mtime), with a correct checksum.
fn ustar_header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    assert!(name.len() <= 100 && link.len() <= 100);
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"13000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8], link: &[u8], mode: u32) {
    out.extend_from_slice(&ustar_header(name, typeflag, data.len() as u64, link, mode));
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// Everything below `dir` (which must exist), for "nothing was written here" checks.
fn listing(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

#[test]
fn a_hostile_stream_writes_nothing_outside_dir() {
    let store = TestStore::new();
    let outside = store.scratch("OUTSIDE_DIR");
    fs::create_dir(&outside).unwrap();
    write_file(&outside.join("victim"), b"original\n");
    let o = s(&outside).as_bytes().to_vec();
    let victim = [&o[..], b"/victim"].concat();

    let mut t = Vec::new();
    member(&mut t, b"link", b'2', b"", &o, 0o777);
    member(&mut t, b"link/evil", b'0', b"evil\n", b"", 0o644);
    member(&mut t, b"../escape", b'0', b"evil\n", b"", 0o644);
    member(&mut t, b"a/../../escape2", b'0', b"evil\n", b"", 0o644);
    member(
        &mut t,
        &[&o[..], b"/abs"].concat(),
        b'0',
        b"abs\n",
        b"",
        0o644,
    );
    member(&mut t, b"hard-out", b'1', b"", &victim, 0o644);
    member(
        &mut t,
        b"hard-up",
        b'1',
        b"",
        b"../OUTSIDE_DIR/victim",
        0o644,
    );
    member(&mut t, b"victim-link", b'2', b"", &victim, 0o777);
    member(&mut t, b"victim-link", b'0', b"replaced\n", b"", 0o644);
    member(&mut t, b"dirlink", b'2', b"", &o, 0o777);
    member(&mut t, b"dirlink/", b'5', b"", b"", 0o755);
    member(&mut t, b"dirlink/x", b'0', b"evil\n", b"", 0o644);
    member(&mut t, b"ok", b'0', b"fine\n", b"", 0o644);
    t.extend_from_slice(&[0u8; 1024]);

    let snap = store.run_stdin(&["snapshot", "--name", "evil", "-"], &t);
    assert_success(&snap, &["snapshot", "hostile"]);
    let warned = stderr(&snap);
    for skipped in ["/link is a symlink", "../escape", "hard-out", "hard-up"] {
        assert!(
            warned.contains(skipped),
            "the snapshot does not say {skipped} was left out:\n{warned}"
        );
    }

    let out = store.scratch("out");
    restore_ok(&store, &["evil", s(&out)]);
    assert_eq!(
        listing(&outside),
        vec!["/victim"],
        "something was written outside DIR"
    );
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original\n");
    assert!(!store.scratch("escape").exists() && !store.dir.path().join("escape2").exists());
    assert!(out.join("link").symlink_metadata().unwrap().is_symlink());
    assert_eq!(
        fs::read(out.join(format!("{}/abs", &s(&outside)[1..]))).unwrap(),
        b"abs\n",
        "an absolute name lands inside DIR"
    );
    assert_eq!(fs::read(out.join("victim-link")).unwrap(), b"replaced\n");
    assert!(out.join("dirlink").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read(out.join("dirlink/x")).unwrap(), b"evil\n");
    assert_eq!(fs::read(out.join("ok")).unwrap(), b"fine\n");

    // Restored again over itself (with --force, the snapshot's own symlinks already in DIR),
    // and GNU tar's extraction of the same stream agrees.
    restore_ok(&store, &["evil", s(&out), "--force"]);
    assert_eq!(listing(&outside), vec!["/victim"]);
    let ex = store.scratch("extract");
    extract_allowing_errors(&store, &t, &ex);
    assert_eq!(listing(&outside), vec!["/victim"], "GNU tar wrote outside");
    // Directories the stream never names get the stream's newest mtime in the snapshot, and
    // the time of extraction from GNU tar: leave directory times out of this comparison. And
    // `victim-link`: GNU tar delays a symlink with an absolute target (a placeholder file),
    // writes the later regular member into the placeholder and then turns it back into the
    // symlink, so its extraction keeps the first member; the tree keeps the last (as the
    // README says), and what matters here is that neither wrote through the link.
    assert_rsync_same_with(
        &out,
        &ex,
        "hostile stream",
        &["--omit-dir-times", "--exclude=/victim-link"],
    );
    assert!(ex
        .join("victim-link")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
}

/// GNU tar exits 2 on the members it refuses; what it does extract is the oracle.
fn extract_allowing_errors(store: &TestStore, stream: &[u8], dir: &Path) {
    let file = store.scratch("hostile.tar");
    fs::write(&file, stream).unwrap();
    fs::create_dir_all(dir).unwrap();
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

#[test]
fn force_never_follows_a_symlink_already_in_dir() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("sub/a"), b"a\n");
    write_file(&root.join("sub/deeper/b"), b"b\n");
    write_file(&root.join("file"), b"file\n");
    write_file(&root.join("dev-less/c"), b"c\n");
    fs::hard_link(root.join("sub/a"), root.join("sub/deeper/a-hard")).unwrap();
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let outside = store.scratch("OUTSIDE");
    fs::create_dir(&outside).unwrap();
    let out = store.scratch("out");
    fs::create_dir(&out).unwrap();
    symlink(&outside, out.join("sub")).unwrap();
    symlink(outside.join("file"), out.join("file")).unwrap();
    fs::create_dir(out.join("dev-less")).unwrap();
    symlink(&outside, out.join("dev-less/c")).unwrap();

    restore_ok(&store, &[&id, s(&out), "--force"]);
    assert!(
        listing(&outside).is_empty(),
        "written outside DIR through a symlink: {:?}",
        listing(&outside)
    );
    assert!(out.join("sub").symlink_metadata().unwrap().is_dir());
    assert!(out.join("file").symlink_metadata().unwrap().is_file());
    assert_eq!(fs::read(out.join("sub/deeper/b")).unwrap(), b"b\n");
    assert_eq!(
        out.join("sub/a").metadata().unwrap().ino(),
        out.join("sub/deeper/a-hard").metadata().unwrap().ino()
    );
    let ex = store.scratch("extract");
    extract(&store, &stream, &ex);
    assert_rsync_same(&out, &ex, "--force over symlinks");
}

// ---------------------------------------------------------------------------------------------
// Damaged data
// ---------------------------------------------------------------------------------------------

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn a_damaged_pack_fails_loudly_and_never_writes_wrong_bytes() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("data/blob"), &noise(4_000_000, 9));
    write_file(&root.join("data/text"), &text(600_000, 5));
    write_file(&root.join("small"), b"small\n");
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let good = store.scratch("good");
    restore_ok(&store, &[&id, s(&good)]);
    assert!(fs::read(good.join("data/blob")).unwrap() == noise(4_000_000, 9));

    let packs = store.pack_files();
    let pack = packs
        .iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap()
        .clone();
    let len = pack.metadata().unwrap().len();

    // The middle of the pack is the noise file's data (stored raw, not compressible).
    flip(&pack, len / 2);
    let bad = store.scratch("bad");
    let out = restore(&store, &[&id, s(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/data/blob") && err.contains("damaged"),
        "the error does not name the file: {err}"
    );
    assert!(
        !bad.join("data/blob").exists(),
        "a partly restored file was left behind"
    );
    flip(&pack, len / 2);

    // Anywhere across the pack: a restore either fails (exit 1, with a message) or gives
    // exactly the good tree. Never silently wrong bytes.
    let mut failed = 0;
    for i in 1..=11u64 {
        let at = len * i / 12;
        flip(&pack, at);
        let dir = store.scratch(&format!("try{i}"));
        let out = restore(&store, &[&id, s(&dir)]);
        match out.status.code() {
            Some(1) => {
                assert!(stderr(&out).contains("cellar: error:"), "{}", stderr(&out));
                failed += 1;
                if dir.join("data/blob").exists() {
                    assert!(
                        fs::read(dir.join("data/blob")).unwrap() == noise(4_000_000, 9),
                        "byte {at}: a wrong /data/blob was left"
                    );
                }
            }
            Some(0) => assert_rsync_same(&dir, &good, &format!("pack byte {at} flipped")),
            c => panic!("byte {at}: exit {c:?}: {}", stderr(&out)),
        }
        flip(&pack, at);
    }
    assert!(
        failed >= 5,
        "only {failed} of 11 damaged bytes were noticed"
    );
}
