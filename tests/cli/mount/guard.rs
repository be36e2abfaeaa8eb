//! Mount plumbing: `Mounted`, the guard that holds a mount (foreground or --daemon) and on drop
//! detaches it (umount -l) and reaps or kills the process serving it; reading
//! /proc/self/mountinfo; finding, waiting for and signalling processes.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long a mount, an exit or an unmount may take before a test gives up.
pub(super) const BOUND: Duration = Duration::from_secs(15);

/// Poll `cond` every 10 ms until it holds or `limit` passes.
pub(super) fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// Unmount `dir` with `argv` (`umount`, or `fusermount3 -u`), asserting that it succeeds.
/// A busy mount is tried again until [`BOUND`]: another thread's child holds this process's
/// files (one open in the mount among them) from its fork until its exec, which under load
/// is long enough for an unmount to meet it.
pub(super) fn unmount(argv: &[&str], dir: &Path) {
    let start = Instant::now();
    loop {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let busy = err.contains("busy");
        assert!(
            busy && start.elapsed() < BOUND,
            "{argv:?} {}: {}",
            dir.display(),
            err
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn is_mounted(dir: &Path) -> bool {
    mount_line(dir).is_some()
}

/// Whether process `pid` still runs (a zombie has finished).
pub(super) fn alive(pid: i32) -> bool {
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
pub(super) fn mount_processes(dir: &Path) -> Vec<i32> {
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
pub(super) fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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

pub(super) fn signal(pid: u32, sig: i32) {
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill {pid} {sig}: {}", io::Error::last_os_error());
}

/// A mount point and whatever serves it. Dropping it detaches the mount and makes sure the
/// serving process is gone.
pub(super) struct Mounted {
    pub(super) dir: PathBuf,
    pub(super) child: Option<Child>,
    pub(super) daemon: Option<i32>,
    /// The foreground process's stderr, or the log the background one named.
    pub(super) log: PathBuf,
}

impl Mounted {
    /// A fresh, empty mount point `name` beside the store (absolute, canonical).
    pub(super) fn new(store: &TestStore, name: &str) -> Self {
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

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }

    pub(super) fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// `cellar mount --daemon DIR [SNAP]`: requires success; returns its stderr.
    pub(super) fn daemon(&mut self, store: &TestStore, snap: Option<&str>) -> String {
        self.daemon_by(store.cmd(&[]), snap)
    }

    /// `cellar mount --daemon DIR [SNAP]` through `cellar` (a command with its global options
    /// and environment set): requires success; returns its stderr.
    pub(super) fn daemon_by(&mut self, mut cellar: Command, snap: Option<&str>) -> String {
        let mut args = vec!["mount", "--daemon", self.dir_str()];
        args.extend(snap);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cellar
            .args(&argv)
            .stdin(Stdio::null())
            .output()
            .expect("run cellar");
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
        let said = stderr(&out);
        if let Some(log) = said.rsplit_once("log: ") {
            self.log = PathBuf::from(log.1.trim());
        }
        said
    }

    /// `cellar mount DIR [SNAP]` in the foreground, returned once the mount is up.
    pub(super) fn foreground(&mut self, store: &TestStore, snap: Option<&str>) -> u32 {
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

    /// What `kill -USR1` makes the background mount log: the inodes it holds and the
    /// snapshots it pins.
    pub(super) fn report(&self) -> (usize, usize) {
        let line = self.report_line();
        // "cellar: N inodes held, M snapshots pinned" (or "1 inode", "1 snapshot")
        let numbers: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
        assert_eq!(numbers.len(), 2, "{line}");
        (numbers[0], numbers[1])
    }

    /// The line `kill -USR1` makes the background mount log.
    pub(super) fn report_line(&self) -> String {
        const SAID: &str = " held, ";
        let count = |text: &str| text.matches(SAID).count();
        let before = count(&self.log_text());
        let pid = self.daemon.expect("a background mount");
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        let mut text = String::new();
        assert!(
            wait_for(BOUND, || {
                text = self.log_text();
                count(&text) > before
            }),
            "the mount did not report its inodes; log:\n{text}"
        );
        text.lines()
            .rev()
            .find(|l| l.contains(SAID))
            .unwrap()
            .to_string()
    }

    pub(super) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) for the foreground process to exit.
    pub(super) fn wait_child(&mut self, limit: Duration) -> Option<ExitStatus> {
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

/// Run `cellar ARGS` with a bound; a run that does not finish is killed and reported.
pub(super) fn run_bounded(store: &TestStore, args: &[&str]) -> std::process::Output {
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
