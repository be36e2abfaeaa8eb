//! `cellar mount`: a read-only FUSE view of one snapshot (or of every snapshot, as NAME/ID/...
//! and NAME/latest), checked against GNU tar's extraction of the same stream with rsync and
//! with direct stat/getxattr/read calls; the foreground, --daemon and signal lifecycles; and the
//! mount beside writers and concurrent readers.
//!
//! Every mount is held by a `Mounted` guard that detaches it (umount -l) and reaps or kills
//! the process serving it, so a failing test never leaves a mount behind.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::trees::*;

// ---------------------------------------------------------------------------------------------
// Mount plumbing
// ---------------------------------------------------------------------------------------------

const BOUND: Duration = Duration::from_secs(15);

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// Poll `cond` every 10 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A mount point as /proc/self/mountinfo escapes it (octal for space, tab, newline, `\`).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(((b[i + 1] - b'0') << 6) | ((b[i + 2] - b'0') << 3) | (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The mountinfo line of the mount at `dir`, if something is mounted there.
fn mount_line(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .rfind(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| unescape_mountinfo(mp) == dir.as_os_str().as_bytes())
        })
        .map(str::to_string)
}

fn is_mounted(dir: &Path) -> bool {
    mount_line(dir).is_some()
}

/// Whether process `pid` still runs (a zombie has finished).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        }
        Err(_) => false,
    }
}

/// Processes (other than this one) whose argv has `mount` and exactly `dir`: what pgrep -f
/// would find for a background mount at `dir`.
fn mount_processes(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.iter().any(|a| *a == b"mount")
            && args.iter().any(|a| *a == dir.as_os_str().as_bytes())
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Wait (bounded) for a child; None if it is still running at the end.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: i32) {
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill {pid} {sig}: {}", io::Error::last_os_error());
}

/// A mount point and whatever serves it. Dropping it detaches the mount and makes sure the
/// serving process is gone.
struct Mounted {
    dir: PathBuf,
    child: Option<Child>,
    daemon: Option<i32>,
    log: PathBuf,
}

impl Mounted {
    /// A fresh, empty mount point `name` beside the store (absolute, canonical).
    fn new(store: &TestStore, name: &str) -> Self {
        let dir = store.scratch(name);
        fs::create_dir_all(&dir).expect("mkdir mount point");
        let dir = dir.canonicalize().expect("canonical mount point");
        let log = store.scratch(&format!("{name}.stderr"));
        Mounted {
            dir,
            child: None,
            daemon: None,
            log,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// `cellar mount --daemon DIR [SNAP]`: requires success; returns its stderr.
    fn daemon(&mut self, store: &TestStore, snap: Option<&str>) -> String {
        let mut args = vec!["mount", "--daemon", self.dir_str()];
        args.extend(snap);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = store.run(&argv);
        // Whatever happened, find the background process so the guard can reap it.
        let pids = mount_processes(&self.dir);
        self.daemon = pids.first().copied();
        assert_success(&out, &argv);
        assert_eq!(
            pids.len(),
            1,
            "exactly one background process serves {}: {pids:?}",
            self.dir.display()
        );
        stderr(&out)
    }

    /// `cellar mount DIR [SNAP]` in the foreground, returned once the mount is up.
    fn foreground(&mut self, store: &TestStore, snap: Option<&str>) -> u32 {
        let mut cmd = store.cmd(&["mount", self.dir_str()]);
        cmd.args(snap);
        let err = File::create(&self.log).expect("stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn cellar mount");
        let pid = child.id();
        self.child = Some(child);
        let up = wait_for(BOUND, || {
            is_mounted(&self.dir)
                || self
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        });
        assert!(
            up && is_mounted(&self.dir),
            "foreground mount at {} did not come up; stderr:\n{}",
            self.dir.display(),
            self.log_text()
        );
        pid
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) for the foreground process to exit.
    fn wait_child(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(self.child.as_mut().expect("a foreground mount"), limit)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if let Some(child) = self.child.as_mut() {
            if wait_exit(child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(pid) = self.daemon {
            if !wait_for(Duration::from_secs(5), || !alive(pid)) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_for(Duration::from_secs(5), || !alive(pid));
            }
        }
        // A mount left behind by a killed server: clear it.
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Oracles: GNU tar's extraction, rsync, walking trees
// ---------------------------------------------------------------------------------------------

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

/// Extract `stream` into a new directory `dir`, keeping everything (we run as root).
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

fn rel(root: &Path, p: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(&p[1..]))
}

/// Set mtime (to the nanosecond) without following symlinks.
fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let times = [t, t];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path(path).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// GNU tar restores a directory's mtime only when its members follow it directly, which
/// bsdtar's member order defeats: give the extraction's directories the source tree's times
/// (which the stream carries).
fn dir_mtimes_from(source: &Path, extraction: &Path) {
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
fn rsync_dry(from: &Path, to: &Path) -> (Option<i32>, String, String) {
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
fn assert_rsync_same(mount: &Path, extraction: &Path, what: &str) {
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

fn xattr_get(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let cp = c_path(p);
    let size = unsafe { libc::lgetxattr(cp.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 16];
    let got =
        unsafe { libc::lgetxattr(cp.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(got, size, "getxattr {name}: size query and value disagree");
    buf.truncate(got as usize);
    Ok(buf)
}

fn xattr_names(p: &Path) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let n = unsafe { libc::llistxattr(c_path(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    let mut names: Vec<Vec<u8>> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    names
}

fn errno_of(r: io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn libc_result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A small tree: `files` of (relative path, bytes), archived by GNU tar.
fn small_stream(store: &TestStore, tree: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let root = store.scratch(tree);
    for (p, data) in files {
        write_file(&root.join(p), data);
    }
    archive(&["tar", "-cf", "-"], &root)
}

// ---------------------------------------------------------------------------------------------
// Faithfulness
// ---------------------------------------------------------------------------------------------

/// Mount one snapshot of `varied_tree` as `writer` archived it; compare with GNU tar's
/// extraction of the same stream, with rsync both ways and with direct calls.
fn check_faithful(what: &str, writer: &[&str], bsdtar_dir_order: bool, foreground: bool) {
    require("fusermount3");
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

    let mut m = Mounted::new(&store, "mnt");
    if foreground {
        m.foreground(&store, Some(&id));
    } else {
        m.daemon(&store, Some(&id));
    }
    let mnt = m.path("");

    // rsync: content (-c), modes, owners, times, hardlinks (-H), xattrs (-X), devices, specials.
    assert_rsync_same(&mnt, &ex, what);

    // The same snapshot in the all-snapshots view, beside a second snapshot of the same stream:
    // each is faithful, and the two share no inode (else tools would take them for hardlinks).
    let id2 = store.snapshot_bytes(&stream, "vm");
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);
    for i in [&id, &id2] {
        assert_rsync_same(
            &all.path(&format!("vm/{i}")),
            &ex,
            &format!("{what}, all view, {i}"),
        );
    }
    let ino = |i: &str, p: &str| {
        fs::symlink_metadata(all.path(&format!("vm/{i}/{p}")))
            .unwrap()
            .ino()
    };
    assert_eq!(
        ino(&id2, "etc/hostname"),
        ino(&id2, "etc/hostname.hard"),
        "{what}: hardlinks in {id2}"
    );
    for p in ["etc/hostname", "usr/bin/tool", "etc", "etc/tool-link"] {
        assert_ne!(
            ino(&id, p),
            ino(&id2, p),
            "{what}: {p} in two snapshots shares an inode"
        );
    }
    drop(all);

    // The same paths, and each one's stat as the extraction has it.
    let on_mount = walk(&mnt);
    let extracted = walk(&ex);
    let lp: Vec<String> = on_mount
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect();
    let le: Vec<String> = extracted
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(lp, le, "{what}: the mount's paths are the extraction's");
    let mut all = vec![(b"/".to_vec(), mnt.clone(), ex.clone())];
    all.extend(
        on_mount
            .iter()
            .zip(&extracted)
            .map(|((p, a), (_, b))| (p.clone(), a.clone(), b.clone())),
    );
    for (p, a, b) in &all {
        let (ma, mb) = (a.symlink_metadata().unwrap(), b.symlink_metadata().unwrap());
        let shown = |m: &fs::Metadata| {
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                if m.is_dir() { 0 } else { m.size() },
                if m.is_dir() { 0 } else { m.nlink() },
                m.rdev(),
            )
        };
        assert_eq!(
            shown(&ma),
            shown(&mb),
            "{what}: {} (mode, uid, gid, mtime, nsec, size, nlink, rdev): left mount, right extraction",
            String::from_utf8_lossy(p)
        );
        assert_eq!(
            xattr_names(a),
            xattr_names(b),
            "{what}: xattr names of {}",
            String::from_utf8_lossy(p)
        );
    }

    // Hardlinks: one inode per group, the right link count, distinct groups distinct inodes.
    let st =
        |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap_or_else(|e| panic!("{what}: {p}: {e}"));
    let hard_long = format!("long/{}-hard", "h".repeat(110));
    let (h1, h2) = (st("etc/hostname"), st("etc/hostname.hard"));
    let (t1, t2) = (st("usr/bin/tool"), st(&hard_long));
    assert_eq!(
        h1.ino(),
        h2.ino(),
        "{what}: etc/hostname and etc/hostname.hard share an inode"
    );
    assert_eq!(
        t1.ino(),
        t2.ino(),
        "{what}: usr/bin/tool and its long-named link share an inode"
    );
    assert_ne!(
        h1.ino(),
        t1.ino(),
        "{what}: two hardlink groups, two inodes"
    );
    assert_eq!(
        (h1.nlink(), h2.nlink(), t1.nlink(), t2.nlink()),
        (2, 2, 2, 2),
        "{what}: link counts"
    );
    assert_ne!(
        st("etc/empty").ino(),
        h1.ino(),
        "{what}: an unlinked file has its own inode"
    );
    assert_eq!(st("etc/empty").nlink(), 1, "{what}");

    // Devices and the fifo.
    let null = st("dev/null");
    assert!(
        null.file_type().is_char_device(),
        "{what}: dev/null is a char device"
    );
    assert_eq!(
        (libc::major(null.rdev()), libc::minor(null.rdev())),
        (1, 3),
        "{what}: dev/null"
    );
    let lp9 = st("dev/loop9");
    assert!(
        lp9.file_type().is_block_device(),
        "{what}: dev/loop9 is a block device"
    );
    assert_eq!(
        (libc::major(lp9.rdev()), libc::minor(lp9.rdev())),
        (7, 9),
        "{what}: dev/loop9"
    );
    assert!(
        st("dev/fifo").file_type().is_fifo(),
        "{what}: dev/fifo is a fifo"
    );

    // xattrs through getxattr: values, a missing name, listxattr.
    let f = mnt.join("attrs/file");
    assert_eq!(
        xattr_get(&f, "user.cellar.note").unwrap(),
        b"hello",
        "{what}"
    );
    assert_eq!(
        xattr_get(&f, "user.cellar.binary").unwrap(),
        [0, 1, 2, 255, b'\n', b'='],
        "{what}"
    );
    assert_eq!(
        errno_of(xattr_get(&f, "user.cellar.nosuch")),
        Some(libc::ENODATA),
        "{what}: a missing xattr"
    );
    assert_eq!(
        xattr_names(&f),
        vec![b"user.cellar.binary".to_vec(), b"user.cellar.note".to_vec()],
        "{what}"
    );
    // A buffer too small for the value: ERANGE.
    let mut small = [0u8; 2];
    let n = CString::new("user.cellar.note").unwrap();
    let rc = unsafe {
        libc::lgetxattr(
            c_path(&f).as_ptr(),
            n.as_ptr(),
            small.as_mut_ptr().cast(),
            small.len(),
        )
    };
    assert_eq!(
        (rc, io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ERANGE)),
        "{what}: getxattr into a 2-byte buffer"
    );

    // Sparse files, read fully.
    for p in ["sparse/disk.img", "sparse/holes-only.img"] {
        let got = fs::read(mnt.join(p)).unwrap();
        let want = fs::read(ex.join(p)).unwrap();
        assert!(
            got == want,
            "{what}: {p}: {} bytes (sha256 {}), want {} (sha256 {})",
            got.len(),
            sha256_hex(&got),
            want.len(),
            sha256_hex(&want)
        );
    }
    assert_eq!(st("sparse/disk.img").len(), 20 << 20, "{what}");
    let holes = fs::read(mnt.join("sparse/holes-only.img")).unwrap();
    assert!(
        holes.len() == 3 << 20 && holes.iter().all(|&b| b == 0),
        "{what}: holes-only.img"
    );

    // Symlinks.
    assert_eq!(
        fs::read_link(mnt.join("etc/tool-link")).unwrap(),
        Path::new("../usr/bin/tool"),
        "{what}"
    );
    assert_eq!(
        fs::read_link(mnt.join("long/long-target-link")).unwrap(),
        PathBuf::from(format!("{}/target", "x".repeat(150))),
        "{what}"
    );
    assert_eq!(
        fs::read(mnt.join("etc/tool-link")).unwrap(),
        noise(300_000, 1),
        "{what}: following a symlink inside the mount"
    );

    // mtimes of a directory, a file and a symlink; numbers past 8^11.
    for p in [
        "etc",
        "usr/bin/tool",
        "etc/tool-link",
        "long/long-target-link",
        "ids/far-future",
    ] {
        let (a, b) = (st(p), fs::symlink_metadata(ex.join(p)).unwrap());
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{what}: mtime of {p}"
        );
    }
    if !bsdtar_dir_order {
        // The directory times are the source tree's too (GNU tar wrote them).
        let a = st("etc");
        let b = fs::symlink_metadata(root.join("etc")).unwrap();
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{what}: mtime of etc"
        );
    }
    assert_eq!(st("ids/far-future").mtime(), 10_000_000_000, "{what}");
    assert_eq!(
        (st("ids/big-owner").uid(), st("ids/big-owner").gid()),
        (3_000_000, 4_000_000),
        "{what}"
    );
    assert_eq!(st("modes/setuid").mode() & 0o7777, 0o4755, "{what}");
    assert_eq!(st("modes/sticky").mode() & 0o7777, 0o1777, "{what}");
    let odd = mnt
        .join("names")
        .join(OsStr::from_bytes(b"bad-\xff\xfe-utf8"));
    assert_eq!(
        fs::read(&odd).unwrap(),
        b"not utf-8\n",
        "{what}: a name with odd bytes"
    );

    // Negative controls: rsync does see a changed byte (same size and mtime) and a chmod.
    let victim = ex.join("usr/share/doc/readme.txt");
    let vm = victim.symlink_metadata().unwrap();
    let mut data = fs::read(&victim).unwrap();
    data[1000] ^= 0x20;
    fs::write(&victim, &data).unwrap();
    set_mtime_ns(&victim, vm.mtime(), vm.mtime_nsec());
    let chmodded = ex.join("etc/hostname");
    fs::set_permissions(&chmodded, fs::Permissions::from_mode(0o600)).unwrap();
    for (a, b, dir) in [
        (&mnt, &ex, "mount -> extraction"),
        (&ex, &mnt, "extraction -> mount"),
    ] {
        let (code, out, err) = rsync_dry(a, b);
        assert_eq!(
            code,
            Some(0),
            "{what}: rsync {dir} (control); stderr:\n{err}"
        );
        let line = |p: &str| out.lines().find(|l| l.ends_with(p)).map(str::to_string);
        let content = line("usr/share/doc/readme.txt")
            .unwrap_or_else(|| panic!("{what}: rsync {dir} missed a changed byte:\n{out}"));
        assert!(content.starts_with(">fc"), "{what}: rsync {dir}: {content}");
        let perms = line("etc/hostname")
            .unwrap_or_else(|| panic!("{what}: rsync {dir} missed a chmod:\n{out}"));
        assert_eq!(perms.as_bytes()[5], b'p', "{what}: rsync {dir}: {perms}");
    }
}

#[test]
fn mount_matches_gnu_tar_extraction_of_gnu_posix_stream() {
    check_faithful("gnu posix xattrs sparse", GNU_POSIX_SPARSE, false, true);
}

#[test]
fn mount_matches_gnu_tar_extraction_of_bsdtar_pax_stream() {
    check_faithful("bsdtar pax", BSDTAR_PAX, true, false);
}

/// Device numbers past 8 bits (major) and 8/20 bits (minor), and times before 1970 or with
/// nanoseconds, through FUSE's dev_t and timespec encodings.
#[test]
fn mount_shows_wide_device_numbers_and_old_times() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/nvme"), libc::S_IFBLK | 0o660, 259, 65_537);
    mknod(
        &root.join("dev/wide"),
        libc::S_IFCHR | 0o600,
        4000,
        1_000_000,
    );
    mknod(&root.join("dev/zero"), libc::S_IFCHR | 0o666, 0, 0);
    write_file(&root.join("old/1960"), b"old\n");
    set_mtime(&root.join("old/1960"), -315_619_200);
    write_file(&root.join("old/just-before-epoch"), b"x\n");
    set_mtime_ns(&root.join("old/just-before-epoch"), -2, 500_000_000);
    write_file(&root.join("old/ns"), b"ns\n");
    set_mtime_ns(&root.join("old/ns"), 1_700_000_000, 123_456_789);
    symlink("ns", root.join("old/ns-link")).unwrap();
    set_mtime_ns(&root.join("old/ns-link"), 1_600_000_000, 987_654_321);
    set_mtime_ns(&root.join("old"), 1_000_000_000, 1);
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let ex = store.scratch("extract");
    extract(&store, &stream, &ex);

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let mnt = m.path("");
    let st = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let dev = |p: &str| {
        let r = st(p).rdev();
        (libc::major(r), libc::minor(r))
    };
    assert_eq!(dev("dev/nvme"), (259, 65_537), "dev/nvme");
    assert!(st("dev/nvme").file_type().is_block_device());
    assert_eq!(dev("dev/wide"), (4000, 1_000_000), "dev/wide");
    assert_eq!(dev("dev/zero"), (0, 0), "dev/zero");
    let t = |p: &str| (st(p).mtime(), st(p).mtime_nsec());
    assert_eq!(t("old/1960"), (-315_619_200, 0), "old/1960");
    assert_eq!(
        t("old/just-before-epoch"),
        (-2, 500_000_000),
        "old/just-before-epoch"
    );
    assert_eq!(t("old/ns"), (1_700_000_000, 123_456_789), "old/ns");
    assert_eq!(
        t("old/ns-link"),
        (1_600_000_000, 987_654_321),
        "old/ns-link"
    );
    assert_eq!(t("old"), (1_000_000_000, 1), "old");
    assert_rsync_same(&mnt, &ex, "wide devices and old times");
}

/// One directory of 10,000 files: every name listed (by `ls` and readdir), each stat right,
/// a few read back.
#[test]
fn mount_lists_a_ten_thousand_entry_directory() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    let many = root.join("many");
    fs::create_dir_all(&many).unwrap();
    let content = |i: usize| format!("file number {i}\n").repeat(i % 7 + 1).into_bytes();
    for i in 0..10_000 {
        fs::write(many.join(format!("f{i:05}")), content(i)).unwrap();
    }
    let stream = archive(&["tar", "-cf", "-"], &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let dir = m.path("many");

    let ls = sh(&format!("ls -1 '{}'", dir.display()));
    let ls = String::from_utf8(ls).unwrap();
    let listed: Vec<&str> = ls.lines().collect();
    assert_eq!(listed.len(), 10_000, "ls of the 10,000-entry directory");
    let want: Vec<String> = (0..10_000).map(|i| format!("f{i:05}")).collect();
    assert!(
        listed.iter().zip(&want).all(|(a, b)| a == b),
        "ls names, in order"
    );

    let mut seen = BTreeSet::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let i: usize = name[1..].parse().unwrap();
        assert!(
            e.file_type().unwrap().is_file(),
            "{name}: type from readdir"
        );
        assert_eq!(
            e.metadata().unwrap().len(),
            content(i).len() as u64,
            "{name}: size"
        );
        assert!(seen.insert(name.clone()), "{name} listed twice");
    }
    assert_eq!(seen.len(), 10_000, "readdir of the 10,000-entry directory");
    for i in [0, 1, 4_999, 7_777, 9_999] {
        assert_eq!(
            fs::read(dir.join(format!("f{i:05}"))).unwrap(),
            content(i),
            "f{i:05}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Read-only
// ---------------------------------------------------------------------------------------------

fn assert_erofs(what: &str, r: io::Result<impl Sized>) {
    match r {
        Ok(_) => panic!("{what}: succeeded on a read-only mount"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
    }
}

#[test]
fn mount_is_read_only() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[
            ("etc/hostname", b"vm1\n".to_vec()),
            ("d/sub/x", b"x\n".to_vec()),
        ],
    );
    let id = store.snapshot_bytes(&stream, "vm");
    let mut one = Mounted::new(&store, "one");
    one.daemon(&store, Some(&id));
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);

    let p = |s: &str| one.path(s);
    let file = p("etc/hostname");
    assert_erofs("create a file", File::create(p("new.txt")));
    assert_erofs(
        "create a file in a subdirectory",
        File::create(p("d/new.txt")),
    );
    assert_erofs("open for writing", File::options().write(true).open(&file));
    assert_erofs(
        "open for appending",
        File::options().append(true).open(&file),
    );
    assert_erofs(
        "open read-write",
        File::options().read(true).write(true).open(&file),
    );
    assert_erofs(
        "open with O_TRUNC",
        File::options().write(true).truncate(true).open(&file),
    );
    assert_erofs("mkdir", fs::create_dir(p("newdir")));
    assert_erofs(
        "touch (utimensat now)",
        libc_result(unsafe {
            libc::utimensat(libc::AT_FDCWD, c_path(&file).as_ptr(), std::ptr::null(), 0)
        }),
    );
    assert_erofs(
        "chmod",
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)),
    );
    assert_erofs(
        "chmod a directory",
        fs::set_permissions(p("d"), fs::Permissions::from_mode(0o700)),
    );
    assert_erofs("chown", std::os::unix::fs::lchown(&file, Some(1), Some(1)));
    let (name, value) = (CString::new("user.x").unwrap(), b"1");
    assert_erofs(
        "setxattr",
        libc_result(unsafe {
            libc::lsetxattr(
                c_path(&file).as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                1,
                0,
            )
        }),
    );
    assert_erofs(
        "removexattr",
        libc_result(unsafe { libc::lremovexattr(c_path(&file).as_ptr(), name.as_ptr()) }),
    );
    assert_erofs(
        "truncate",
        libc_result(unsafe { libc::truncate(c_path(&file).as_ptr(), 0) }),
    );
    assert_erofs("unlink", fs::remove_file(&file));
    assert_erofs("rmdir", fs::remove_dir(p("d/sub")));
    assert_erofs("rename", fs::rename(&file, p("etc/renamed")));
    assert_erofs("symlink", symlink("hostname", p("etc/link")));
    assert_erofs("hardlink", fs::hard_link(&file, p("etc/hard")));
    assert_erofs(
        "mkfifo",
        libc_result(unsafe { libc::mkfifo(c_path(&p("fifo")).as_ptr(), 0o644) }),
    );
    // The shell tools say so too.
    for cmd in ["touch", "rm -f", "chmod 600"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} '{}'", file.display()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} on the mount succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
    // Nothing changed.
    assert_eq!(fs::read(&file).unwrap(), b"vm1\n");
    assert_eq!(names_in(&one.path("")), set(&["d", "etc"]));

    // The all-snapshots view is read-only at every level.
    assert_erofs("mkdir at the top", fs::create_dir(all.path("newlineage")));
    assert_erofs("create in a lineage", File::create(all.path("vm/new")));
    assert_erofs(
        "mkdir in a lineage",
        fs::create_dir(all.path("vm/000000000000")),
    );
    assert_erofs("replace latest", fs::remove_file(all.path("vm/latest")));
    assert_erofs(
        "rename a snapshot",
        fs::rename(all.path(&format!("vm/{id}")), all.path("vm/x")),
    );
    assert_erofs(
        "write in a snapshot",
        File::create(all.path(&format!("vm/{id}/etc/new"))),
    );
    assert_erofs(
        "chmod a lineage",
        fs::set_permissions(all.path("vm"), fs::Permissions::from_mode(0o700)),
    );
    assert_eq!(store.snapshot_count(), 1);
    assert_eq!(store.export(&id), stream);
}

// ---------------------------------------------------------------------------------------------
// All snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn all_snapshots_view_follows_new_snapshots_without_remounting() {
    require("fusermount3");
    let store = TestStore::new();
    let s1 = small_stream(
        &store,
        "t1",
        &[("f", b"one\n".to_vec()), ("d/g", b"g1\n".to_vec())],
    );
    let id1 = store.snapshot_bytes(&s1, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.foreground(&store, None);
    let top = m.path("");
    let hex12 = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(hex12(&id1));

    assert_eq!(names_in(&top), set(&["vm"]), "MOUNT/");
    assert!(fs::metadata(&top).unwrap().is_dir());
    assert_eq!(names_in(&m.path("vm")), set(&[&id1, "latest"]), "MOUNT/vm/");
    let latest = m.path("vm/latest");
    assert!(
        fs::symlink_metadata(&latest)
            .unwrap()
            .file_type()
            .is_symlink(),
        "latest is a symlink"
    );
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new(&id1),
        "latest -> first id"
    );
    assert_eq!(fs::read(m.path(&format!("vm/{id1}/f"))).unwrap(), b"one\n");
    assert_eq!(
        fs::read(m.path("vm/latest/f")).unwrap(),
        b"one\n",
        "through latest"
    );
    assert_eq!(fs::read(m.path("vm/latest/d/g")).unwrap(), b"g1\n");
    // Names that are not there, looked up before they exist (no negative caching may hide them later).
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("db"))),
        Some(libc::ENOENT),
        "MOUNT/db before"
    );
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("vm/000000000000"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno_of(fs::symlink_metadata(m.path("vm/latest-not"))),
        Some(libc::ENOENT)
    );

    // A second snapshot in the lineage, taken while mounted.
    let s2 = small_stream(
        &store,
        "t2",
        &[("f", b"two, longer\n".to_vec()), ("d/g", b"g2\n".to_vec())],
    );
    let id2 = store.snapshot_bytes(&s2, "vm");
    assert_ne!(id1, id2);
    assert_eq!(
        names_in(&m.path("vm")),
        set(&[&id1, &id2, "latest"]),
        "MOUNT/vm/ after a snapshot"
    );
    assert_eq!(
        fs::read_link(&latest).unwrap(),
        Path::new(&id2),
        "latest moved"
    );
    assert_eq!(
        fs::symlink_metadata(&latest).unwrap().len(),
        12,
        "latest's size is its target's length"
    );
    assert_eq!(
        fs::read(m.path("vm/latest/f")).unwrap(),
        b"two, longer\n",
        "latest/f after"
    );
    assert_eq!(fs::read(m.path(&format!("vm/{id2}/d/g"))).unwrap(), b"g2\n");
    assert_eq!(
        fs::read(m.path(&format!("vm/{id1}/f"))).unwrap(),
        b"one\n",
        "the old one stays"
    );

    // A new lineage appears at the top.
    let s3 = small_stream(&store, "t3", &[("db.conf", b"db\n".to_vec())]);
    let id3 = store.snapshot_bytes(&s3, "db");
    assert_eq!(
        names_in(&top),
        set(&["db", "vm"]),
        "MOUNT/ after a new lineage"
    );
    assert_eq!(names_in(&m.path("db")), set(&[&id3, "latest"]));
    assert_eq!(fs::read_link(m.path("db/latest")).unwrap(), Path::new(&id3));
    assert_eq!(fs::read(m.path("db/latest/db.conf")).unwrap(), b"db\n");

    // A third snapshot of vm, identical in content to the first: still a new id, latest moves.
    let id4 = store.snapshot_bytes(&s1, "vm");
    assert_eq!(names_in(&m.path("vm")), set(&[&id1, &id2, &id4, "latest"]));
    assert_eq!(fs::read_link(&latest).unwrap(), Path::new(&id4));
    assert_eq!(fs::read(m.path("vm/latest/f")).unwrap(), b"one\n");

    // Every snapshot directory exports what its stream held.
    for (id, s) in [(&id1, &s1), (&id2, &s2), (&id3, &s3), (&id4, &s1)] {
        assert_eq!(&store.export(id), s, "{id}");
    }
    // Unmounting with umount ends the foreground process cleanly.
    let st = Command::new("umount").arg(m.path("")).status().unwrap();
    assert!(st.success(), "umount");
    let exit = m.wait_child(BOUND);
    assert!(
        exit.is_some_and(|s| s.success()),
        "after umount: {exit:?}; stderr:\n{}",
        m.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle: --daemon, signals, kill -9
// ---------------------------------------------------------------------------------------------

#[test]
fn daemon_returns_once_the_mount_answers_and_exits_on_umount() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[
            ("etc/hostname", b"vm1\n".to_vec()),
            ("usr/bin/tool", noise(100_000, 5)),
            ("var/log/x", b"x\n".to_vec()),
        ],
    );
    let id = store.snapshot_bytes(&stream, "vm");
    for round in 0..3 {
        let mut m = Mounted::new(&store, &format!("mnt{round}"));
        let err = m.daemon(&store, Some(&id));
        // No sleep: the mount answers as soon as the command returns.
        assert_eq!(
            names_in(&m.path("")),
            set(&["etc", "usr", "var"]),
            "round {round}: MOUNT/ right after --daemon"
        );
        assert_eq!(fs::read(m.path("usr/bin/tool")).unwrap(), noise(100_000, 5));
        let log = err
            .lines()
            .find_map(|l| l.split_once("; log: ").map(|(_, p)| p.trim().to_string()))
            .unwrap_or_else(|| panic!("stderr names no log file: {err}"));
        assert!(Path::new(&log).is_file(), "log {log} exists");
        let pid = m.daemon.expect("background pid");
        assert!(alive(pid));

        let st = Command::new("umount").arg(m.path("")).status().unwrap();
        assert!(st.success(), "umount");
        assert!(
            wait_for(BOUND, || !alive(pid)),
            "round {round}: the background mount {pid} still runs after umount; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(!is_mounted(&m.path("")));
        assert!(
            names_in(&m.path("")).is_empty(),
            "the mount point is empty again"
        );
    }
    // SIGTERM to the background process: it unmounts and exits.
    let mut m = Mounted::new(&store, "mnt-term");
    m.daemon(&store, Some(&id));
    let pid = m.daemon.unwrap();
    assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), b"vm1\n");
    signal(pid as u32, libc::SIGTERM);
    assert!(
        wait_for(BOUND, || !alive(pid)),
        "the background mount {pid} still runs after SIGTERM"
    );
    assert!(
        !is_mounted(&m.path("")),
        "SIGTERM unmounted the background mount"
    );

    // The all-snapshots view too, unmounted with fusermount3 -u.
    let mut m = Mounted::new(&store, "all");
    m.daemon(&store, None);
    assert_eq!(names_in(&m.path("")), set(&["vm"]));
    let pid = m.daemon.unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(m.path(""))
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u");
    assert!(
        wait_for(BOUND, || !alive(pid)),
        "background mount exits after fusermount3 -u"
    );
}

#[test]
fn foreground_mount_unmounts_and_exits_on_sigterm_and_sigint() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[("a", b"a\n".to_vec()), ("big", noise(2_000_000, 9))],
    );
    let id = store.snapshot_bytes(&stream, "vm");

    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut m = Mounted::new(&store, &format!("mnt-{name}"));
        let pid = m.foreground(&store, Some(&id));
        assert_eq!(fs::read(m.path("a")).unwrap(), b"a\n");
        signal(pid, sig);
        let exit = m.wait_child(BOUND);
        assert!(
            exit.is_some(),
            "{name}: still running; stderr:\n{}",
            m.log_text()
        );
        assert_eq!(
            exit.unwrap().code(),
            Some(0),
            "{name}: exit status; stderr:\n{}",
            m.log_text()
        );
        assert!(!is_mounted(&m.path("")), "{name}: still mounted");
    }
}

#[test]
fn foreground_mount_exits_on_sigterm_while_a_file_is_open() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("big", noise(2_000_000, 9))]);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    let pid = m.foreground(&store, Some(&id));
    let mut held = File::open(m.path("big")).unwrap();
    let mut head = vec![0u8; 4096];
    held.read_exact(&mut head).unwrap();
    assert_eq!(head, noise(2_000_000, 9)[..4096]);
    signal(pid, libc::SIGTERM);
    let exit = m.wait_child(Duration::from_secs(10));
    let detached = !is_mounted(&m.path(""));
    if exit.is_none() {
        // Diagnose: does closing the file let it finish?
        drop(held);
        let later = m.wait_child(Duration::from_secs(5));
        panic!(
            "SIGTERM with a file open in the mount: the process did not exit within 10 s \
             (mount detached: {detached}); after closing the file: {later:?}; stderr:\n{}",
            m.log_text()
        );
    }
    assert_eq!(
        exit.unwrap().code(),
        Some(0),
        "exit status; stderr:\n{}",
        m.log_text()
    );
    assert!(detached, "the busy mount was detached");
    drop(held);
}

#[test]
fn kill_9_leaves_a_mount_umount_clears_and_the_store_is_intact() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    let pid = m.foreground(&store, Some(&id));
    assert_eq!(fs::read(m.path("usr/bin/tool")).unwrap(), noise(300_000, 1));
    signal(pid, libc::SIGKILL);
    let exit = m.wait_child(BOUND).expect("killed");
    assert_eq!(exit.code(), None, "killed by a signal");
    assert!(
        is_mounted(&m.path("")),
        "a killed server leaves its mount behind"
    );
    assert_eq!(
        errno_of(fs::read_dir(m.path(""))),
        Some(libc::ENOTCONN),
        "a dead mount answers ENOTCONN"
    );
    let st = Command::new("umount").arg(m.path("")).status().unwrap();
    assert!(st.success(), "umount of the dead mount");
    assert!(!is_mounted(&m.path("")));
    assert!(names_in(&m.path("")).is_empty());

    // The store is untouched: bit-exact export, and it mounts again at the same place.
    assert!(
        store.export(&id) == stream,
        "export after kill -9 of a mount"
    );
    let mut again = Mounted::new(&store, "mnt");
    again.daemon(&store, Some(&id));
    assert_eq!(fs::read(again.path("etc/hostname")).unwrap(), b"vm1\n");

    // kill -9 of a --daemon server: umount -l clears it as well.
    let dpid = again.daemon.unwrap();
    unsafe { libc::kill(dpid, libc::SIGKILL) };
    assert!(wait_for(BOUND, || !alive(dpid)));
    let st = Command::new("umount")
        .arg("-l")
        .arg(again.path(""))
        .status()
        .unwrap();
    assert!(st.success(), "umount -l of the dead mount");
    assert!(!is_mounted(&again.path("")));
    assert!(store.export(&id) == stream);
}

// ---------------------------------------------------------------------------------------------
// Beside writers and other readers
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_stays_right_while_snapshots_are_taken() {
    require("fusermount3");
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("data/{i}.bin"),
                noise(1_000_000 + i * 7_919, 40 + i as u64),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let s0 = small_stream(&store, "t0", &refs);
    let id0 = store.snapshot_bytes(&s0, "vm");
    let mut one = Mounted::new(&store, "one");
    one.daemon(&store, Some(&id0));
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);

    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let new_ids = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (p, want) in &files {
                    for base in [one.path(p), all.path(&format!("vm/{id0}/{p}"))] {
                        match fs::read(&base) {
                            Ok(got) if got == *want => {}
                            Ok(got) => bad.push(format!(
                                "{}: {} bytes, sha256 {}",
                                base.display(),
                                got.len(),
                                sha256_hex(&got)
                            )),
                            Err(e) => bad.push(format!("{}: {e}", base.display())),
                        }
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            bad
        });
        // However this ends (an assertion below too), the reader stops.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // Wait for the reader's first round, then write beside it.
        assert!(wait_for(BOUND, || rounds.load(Ordering::Relaxed) > 0
            || reader.is_finished()));
        let mut ids = Vec::new();
        for k in 0..3u64 {
            let more: Vec<(&str, Vec<u8>)> = vec![
                ("data/0.bin", noise(1_000_000, 40)),
                ("fresh.bin", noise(2_000_000, 500 + k)),
            ];
            let s = small_stream(&store, &format!("t{}", k + 1), &more);
            let name = if k == 2 { "other" } else { "vm" };
            let id = store.snapshot_bytes(&s, name);
            // The all-snapshots view sees each one at once.
            assert!(
                all.path(&format!("{name}/{id}")).is_dir(),
                "{name}/{id} in the mount"
            );
            ids.push((name, id, s));
        }
        let before = rounds.load(Ordering::Relaxed);
        assert!(wait_for(BOUND, || rounds.load(Ordering::Relaxed)
            > before + 1
            || reader.is_finished()));
        stop.store(true, Ordering::Relaxed);
        let bad = reader.join().unwrap();
        assert!(
            bad.is_empty(),
            "reads through the mount went wrong while snapshots were taken:\n{}",
            bad.join("\n")
        );
        ids
    });
    assert_eq!(
        fs::read_link(all.path("vm/latest")).unwrap(),
        Path::new(&new_ids[1].1)
    );
    for (name, id, s) in &new_ids {
        let fresh = fs::read(all.path(&format!("{name}/{id}/fresh.bin"))).unwrap();
        assert_eq!(fresh.len(), 2_000_000, "{name}/{id}/fresh.bin");
        assert!(store.export(id) == *s);
    }
    assert!(store.export(&id0) == s0);
}

#[test]
fn concurrent_readers_get_the_right_bytes() {
    require("fusermount3");
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("f/{i}.bin"),
                noise(2_000_000 + i * 4_099, 70 + i as u64),
            )
        })
        .chain([("f/text.txt".to_string(), text(3_000_000, 77))])
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let stream = small_stream(&store, "tree", &refs);
    let id = store.snapshot_bytes(&stream, "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.foreground(&store, Some(&id));

    let errors: Vec<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..12usize {
            let (p, want) = &files[t % files.len()];
            let path = m.path(p);
            handles.push(s.spawn(move || {
                let mut bad = Vec::new();
                for round in 0..3 {
                    // Whole-file reads...
                    let got = fs::read(&path).unwrap();
                    if got != *want {
                        bad.push(format!(
                            "thread {t} round {round}: {p} read whole: sha256 {}",
                            sha256_hex(&got)
                        ));
                    }
                    // ...and scattered preads of odd sizes at odd offsets.
                    let f = File::open(&path).unwrap();
                    let mut x = (t as u64 + 1) * 0x9E37_79B9 + round;
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let off = (x % want.len() as u64) as usize;
                        let len = ((x >> 32) % 200_000) as usize + 1;
                        let mut buf = vec![0u8; len];
                        let n = f.read_at(&mut buf, off as u64).unwrap();
                        let end = (off + len).min(want.len());
                        if buf[..n] != want[off..off + n] || n == 0 || (n < len && off + n != end) {
                            bad.push(format!(
                                "thread {t}: {p} pread {len} at {off}: {n} bytes, wrong"
                            ));
                        }
                    }
                }
                bad
            }));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        errors.is_empty(),
        "concurrent reads:\n{}",
        errors.join("\n")
    );
    // Reads past the end give nothing.
    let f = File::open(m.path("f/0.bin")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, 5_000_000).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Bad arguments
// ---------------------------------------------------------------------------------------------

/// Run `cellar ARGS` with a bound; a run that does not finish is killed and reported.
fn run_bounded(store: &TestStore, args: &[&str]) -> std::process::Output {
    let mut child = store
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cellar");
    if wait_exit(&mut child, BOUND).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("cellar {args:?} did not finish; stderr:\n{}", stderr(&out));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bad_snapshot_or_mount_point_exits_2() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("a", b"a\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");
    let m = Mounted::new(&store, "mnt");
    let mnt = m.dir_str().to_string();
    let file = store.scratch("plain-file");
    fs::write(&file, b"not a directory\n").unwrap();
    let file = file.to_str().unwrap().to_string();
    let missing = store.scratch("no-such-dir");
    let missing = missing.to_str().unwrap().to_string();

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["mount", &mnt, "nosuch", "--daemon"],
            "nosuch",
            "unknown SNAP, --daemon",
        ),
        (
            vec!["mount", &mnt, "nosuch"],
            "nosuch",
            "unknown SNAP, foreground",
        ),
        (
            vec!["mount", &file, &id, "--daemon"],
            "plain-file",
            "a file as MOUNTPOINT, --daemon",
        ),
        (
            vec!["mount", &file, &id],
            "plain-file",
            "a file as MOUNTPOINT",
        ),
        (
            vec!["mount", &file, "--daemon"],
            "plain-file",
            "a file as MOUNTPOINT, all snapshots",
        ),
        (
            vec!["mount", &missing, &id, "--daemon"],
            "no-such-dir",
            "a missing MOUNTPOINT, --daemon",
        ),
        (
            vec!["mount", &missing],
            "no-such-dir",
            "a missing MOUNTPOINT",
        ),
    ];
    for (args, needle, what) in cases {
        let out = run_bounded(&store, &args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit status; stderr:\n{err}"
        );
        assert!(
            err.contains(needle),
            "{what}: the message names {needle:?}:\n{err}"
        );
        assert!(!is_mounted(&m.path("")), "{what}: nothing mounted");
        assert!(
            mount_processes(&m.path("")).is_empty(),
            "{what}: no background process left"
        );
    }
    assert_eq!(fs::read(&file).unwrap(), b"not a directory\n");
    assert!(
        !Path::new(&missing).exists(),
        "a missing mount point is not created"
    );
}

// ---------------------------------------------------------------------------------------------
// --allow-other
// ---------------------------------------------------------------------------------------------

/// Run `argv` as uid/gid 65534 (nobody); (success, stdout, stderr).
fn as_nobody(argv: &[&str]) -> (bool, String, String) {
    require("setpriv");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn allow_other_lets_other_users_in_and_permissions_still_hold() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("pub.txt"), b"public\n");
    write_file(&root.join("secret"), b"root only\n");
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("pub.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let stream = archive(&["tar", "-cf", "-"], &root);
    let id = store.snapshot_bytes(&stream, "vm");
    // Let others reach the mount points below the (0700) temp dir.
    fs::set_permissions(store.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let mut plain = Mounted::new(&store, "plain");
    plain.daemon(&store, Some(&id));
    fs::set_permissions(store.scratch("plain"), fs::Permissions::from_mode(0o755)).ok();
    let p = plain.path("pub.txt");
    assert_eq!(
        fs::read(&p).unwrap(),
        b"public\n",
        "root reads its own mount"
    );
    let (ok, _, err) = as_nobody(&["cat", p.to_str().unwrap()]);
    assert!(!ok, "without --allow-other another user reads the mount");
    assert!(err.contains("Permission denied"), "{err}");

    for (name, daemon) in [("other-fg", false), ("other-daemon", true)] {
        let mut m = Mounted::new(&store, name);
        let dir = m.dir_str().to_string();
        if daemon {
            let out = store.run(&["mount", "--daemon", "--allow-other", &dir, &id]);
            m.daemon = mount_processes(&m.path("")).first().copied();
            assert_success(&out, &["mount", "--daemon", "--allow-other"]);
        } else {
            let mut cmd = store.cmd(&["mount", "--allow-other", &dir, &id]);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&m.log).unwrap())
                .spawn()
                .unwrap();
            m.child = Some(child);
            assert!(
                wait_for(BOUND, || is_mounted(&m.path(""))),
                "{name}: mounted; {}",
                m.log_text()
            );
        }
        let (ok, out, err) = as_nobody(&["cat", m.path("pub.txt").to_str().unwrap()]);
        assert!(
            ok && out == "public\n",
            "{name}: nobody reads pub.txt: {err}"
        );
        let (ok, out, err) = as_nobody(&["ls", m.path("").to_str().unwrap()]);
        assert!(
            ok && out == "pub.txt\nsecret\n",
            "{name}: nobody lists the root: {out} {err}"
        );
        let (ok, _, err) = as_nobody(&["cat", m.path("secret").to_str().unwrap()]);
        assert!(
            !ok && err.contains("Permission denied"),
            "{name}: a 0600 file stays private: {err}"
        );
        assert_eq!(
            fs::read(m.path("secret")).unwrap(),
            b"root only\n",
            "{name}: root reads it"
        );
    }
}
