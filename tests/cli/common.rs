//! Helpers shared by the integration tests: a store in a temp dir, running the binary, making
//! trees and tar streams with real tools.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub use crate::tar_bytes::*;

pub fn cellar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cellar")
}

/// A scratch directory holding a store (`DIR/store`) and whatever else a test needs.
pub struct TestStore {
    pub dir: TempDir,
}

impl TestStore {
    pub fn new() -> Self {
        TestStore {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A path for test files beside the store.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cellar_bin());
        c.arg("--store").arg(self.path()).args(args);
        c.env_remove("CELLAR_STORE");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cellar")
    }

    /// Run and require success; returns stdout as text.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cellar");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            // The reader may stop early on bad input; a broken pipe is fine then.
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait cellar");
        writer.join().expect("stdin writer");
        out
    }

    /// Snapshot a tar stream given as bytes on stdin; returns the short id.
    pub fn snapshot_bytes(&self, bytes: &[u8], name: &str) -> String {
        let out = self.run_stdin(&["snapshot", "--name", name, "-"], bytes);
        assert_success(&out, &["snapshot", "--name", name, "-"]);
        let id = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string();
        assert!(
            id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "snapshot printed {id:?}, not a short id"
        );
        id
    }

    pub fn export(&self, snap: &str) -> Vec<u8> {
        let out = self.run(&["export", snap]);
        assert_success(&out, &["export", snap]);
        out.stdout
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("valid JSON")
    }

    /// Field `key` (`id`, `short_id`, `name`…) of every snapshot `list` shows.
    pub fn listed(&self, key: &str) -> Vec<String> {
        self.json(&["list", "--json"])
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s[key].as_str().expect("a string").to_string())
            .collect()
    }

    pub fn snapshot_count(&self) -> usize {
        if !self.path().join("cellar.db").exists() {
            return 0;
        }
        self.json(&["list", "--json"])
            .as_array()
            .expect("array")
            .len()
    }

    /// Pack files on disk (sealed ones; temp files excluded).
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let packs = self.path().join("packs");
        if let Ok(dirs) = std::fs::read_dir(&packs) {
            for d in dirs.flatten() {
                for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn stored_bytes(&self) -> u64 {
        self.json(&["stats", "--json"])["stored_bytes"]
            .as_u64()
            .expect("stored_bytes")
    }

    /// Open the index directly (read-only) for checks the CLI does not expose.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path().join("cellar.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open index")
    }
}

/// Snapshot `name`: one file of 96 MiB of noise, big enough for an export of it to be
/// interrupted part way (see `interrupt_when`).
pub fn snapshot_big(store: &TestStore, name: &str) {
    let dir = store.scratch(name);
    write_file(&dir.join("noise"), &noise(96 << 20, 5));
    store.snapshot_bytes(&tar_of_dir(&dir), name);
}

/// Send `signal` to `child` as soon as `started()` says it is under way (polled every
/// millisecond, for at most 30 s): stopped first and continued after, so the signal lands
/// mid-work, not after the work is done. Returns how the child ended.
pub fn interrupt_when(
    mut child: Child,
    signal: libc::c_int,
    started: impl Fn() -> bool,
) -> ExitStatus {
    let start = std::time::Instant::now();
    while !started() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the command never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: signals to our own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        libc::kill(pid, signal);
        libc::kill(pid, libc::SIGCONT);
    }
    child.wait().unwrap()
}

/// The paths of what is in `dir` (not below it), sorted.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "cellar {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A tool the tests need; `scripts/test` installs them. Missing ones fail loudly, never skip.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; run scripts/test, which installs what tests need"
    );
}

/// Run a shell script (bash, `set -euo pipefail`), panicking with its stderr if it fails.
pub fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// GNU tar (default format) of everything in `dir`.
pub fn tar_of_dir(dir: &Path) -> Vec<u8> {
    tar_stream(&["tar", "-cf", "-", "-C", dir.to_str().unwrap(), "."])
}

/// GNU tar's stream of `dir`, each directory's entries in name order (`--sort=name`).
pub fn tar_by_name(dir: &Path) -> Vec<u8> {
    tar_stream(&[
        "tar",
        "--sort=name",
        "-cf",
        "-",
        "-C",
        dir.to_str().unwrap(),
        ".",
    ])
}

/// GNU tar's stream of `names` below `dir`, in that order, a directory without its contents
/// (`--no-recursion`).
pub fn tar_of_names(dir: &Path, names: &[&str]) -> Vec<u8> {
    let mut argv = vec![
        "tar",
        "--no-recursion",
        "-cf",
        "-",
        "-C",
        dir.to_str().unwrap(),
    ];
    argv.extend(names);
    tar_stream(&argv)
}

/// Run a tar-writing command (argv) and return its stdout. Writers that exit 1 with a warning
/// (e.g. a name too long for the format) still produce a stream the tests can use.
pub fn tar_stream(argv: &[&str]) -> Vec<u8> {
    require(argv[0]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "{argv:?} wrote nothing");
    out.stdout
}

/// Deterministic pseudo-random bytes (xorshift), for file contents that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible text-like bytes.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta ", "eta\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = seed as usize;
    while out.len() < len {
        out.extend_from_slice(words[i % words.len()].as_bytes());
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, data).expect("write file");
}

/// Set mtime (to the nanosecond) without following symlinks.
pub fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let times = [t, t];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// GNU tar restores a directory's mtime only when its members follow it directly, which
/// bsdtar's member order defeats: give the extraction's directories the source tree's times
/// (which the stream carries).
pub fn dir_mtimes_from(source: &Path, extraction: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let rel = |p: &[u8]| source.join(std::ffi::OsStr::from_bytes(&p[1..]));
    let mut dirs: Vec<(PathBuf, PathBuf)> = crate::browse::oracle::walk(extraction)
        .into_iter()
        .filter(|(_, p)| p.symlink_metadata().unwrap().is_dir())
        .map(|(r, p)| (rel(&r), p))
        .collect();
    dirs.push((source.to_path_buf(), extraction.to_path_buf()));
    for (src, dst) in dirs {
        let m = src.symlink_metadata().unwrap();
        set_mtime_ns(&dst, m.mtime(), m.mtime_nsec());
    }
}

/// `rsync -n -a -c -H -X --numeric-ids --itemize-changes EXTRA FROM/ TO/`: (exit code, stdout,
/// stderr). rsync is the judge of a tree against GNU tar's extraction: content, modes, owners,
/// times, hardlinks, xattrs, devices.
pub fn rsync_dry_with(from: &Path, to: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
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

pub fn rsync_dry(from: &Path, to: &Path) -> (Option<i32>, String, String) {
    rsync_dry_with(from, to, &[])
}

/// rsync finds no difference between `actual` and `expected`, in either direction.
pub fn assert_rsync_same(actual: &Path, expected: &Path, what: &str) {
    assert_rsync_same_with(actual, expected, what, &[]);
}

pub fn assert_rsync_same_with(actual: &Path, expected: &Path, what: &str, extra: &[&str]) {
    for (from, to, dir) in [
        (actual, expected, "actual -> expected"),
        (expected, actual, "expected -> actual"),
    ] {
        let (code, out, err) = rsync_dry_with(from, to, extra);
        assert_eq!(code, Some(0), "{what}: rsync {dir}; stderr:\n{err}");
        assert!(
            out.is_empty(),
            "{what}: rsync {dir} found differences:\n{out}\nstderr:\n{err}"
        );
    }
}

/// `cellar --store DIR ARGS` for a store seen at a path other than a `TestStore`'s own (a
/// read-only view of one, a store on another filesystem).
pub fn cellar_at(store: &Path, args: &[&str]) -> Output {
    Command::new(cellar_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CELLAR_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("run cellar")
}

impl TestStore {
    /// `cellar ARGS` started with `CELLAR_FAILPOINT=POINT:stop`, once it has stopped there
    /// (its output piped, for `wait_with_output` after `resume`).
    pub fn stopped_at(&self, args: &[&str], point: &str) -> Child {
        let child = self
            .cmd(args)
            .env("CELLAR_FAILPOINT", format!("{point}:stop"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_stopped(&child);
        child
    }
}

/// Wait for a child to stop at its failpoint (`CELLAR_FAILPOINT=NAME:stop`), as /proc says.
pub fn wait_stopped(child: &Child) {
    let stat = format!("/proc/{}/stat", child.id());
    let start = std::time::Instant::now();
    loop {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        if s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('T')
        {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "never stopped: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Let a child stopped at its failpoint go on.
pub fn resume(child: &Child) {
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGCONT) }, 0);
}

/// Wait until `cond` holds; a minute without it fails the test, naming `what` it waited for.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether a process runs whose command line is `words`.
pub fn running(words: &str) -> bool {
    let want: Vec<u8> = words
        .split(' ')
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
}

/// Wait for `child` up to a minute (a hang, not a speed: no test's command takes near that),
/// then collect its output; a child still running then is killed and fails the test.
pub fn output_within_a_minute(mut child: Child, what: &str) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after a minute (hung?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Every extended attribute of `path` itself (not following a symlink).
pub fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0);
        value.truncate(len as usize);
        out.insert(name.to_vec(), value);
    }
    out
}

/// The largest of `files` (of packs: the one whose middle is file data).
pub fn biggest(files: &[PathBuf]) -> PathBuf {
    files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("some files")
        .clone()
}

/// Flip every bit of the byte in the middle of `path`.
pub fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}
