//! The command after `snapshot --`: its stdout is the stream, its stderr is kept for messages,
//! and when the snapshot stops early it is stopped with whatever it started.
//!
//! cellar is the command's subreaper (`PR_SET_CHILD_SUBREAPER`), so what the command leaves
//! running when it dies (`sh -c 'tar ...; sleep 60'`) becomes cellar's child, not init's, and is
//! stopped with it instead of outliving the snapshot. A command that succeeds may leave things
//! running (a daemon it started): they are left alone, and not waited for.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use cellar_store::Error;

/// How much of a command's stderr is kept to show when it fails.
const STDERR_KEEP: usize = 64 << 10;
/// How long a command whose stream broke may take to exit before it is stopped.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The end of the command's stderr, and how much came before it.
#[derive(Default)]
struct Kept {
    tail: Vec<u8>,
    dropped: u64,
}

/// The command after `--`, its stdout piped into the ingest, its stderr kept for messages.
pub(super) struct SourceCommand {
    display: String,
    pub child: Child,
    stderr: Option<JoinHandle<()>>,
    stderr_text: Arc<Mutex<Kept>>,
    finished: bool,
}

impl SourceCommand {
    pub fn spawn(argv: &[OsString]) -> anyhow::Result<SourceCommand> {
        let display = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        adopt_orphans();
        let mut command = Command::new(&argv[0]);
        let mut child = crate::signals::unblocked_in_child(&mut command)
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {display}"))?;
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr_text = Arc::new(Mutex::new(Kept::default()));
        let keep = stderr_text.clone();
        let stderr = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
                kept.tail.extend_from_slice(&buf[..n]);
                if kept.tail.len() > STDERR_KEEP {
                    let cut = kept.tail.len() - STDERR_KEEP;
                    kept.tail.drain(..cut);
                    kept.dropped += cut as u64;
                }
            }
        });
        Ok(SourceCommand {
            display,
            child,
            stderr: Some(stderr),
            stderr_text,
            finished: false,
        })
    }

    /// What the command wrote on stderr. Its end is waited for, but not past `EXIT_WAIT`: a
    /// process the command left running may hold the pipe open for as long as it lives.
    fn stderr_text(&mut self) -> String {
        if let Some(t) = self.stderr.take() {
            let start = Instant::now();
            while !t.is_finished() && start.elapsed() < EXIT_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let kept = self.stderr_text.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&kept.tail).trim_end().to_string();
        match kept.dropped {
            0 => text,
            n => {
                format!("[its first {n} bytes are not kept; the last {STDERR_KEEP} follow]\n{text}")
            }
        }
    }

    /// The stream has been read to its end: the command must have succeeded, or ended with an
    /// allowed code (then a warning carries its stderr). It may go on after closing its
    /// stdout; an interrupt (`cancel`) meanwhile stops the wait, and the caller stops it.
    pub fn finish(
        &mut self,
        allowed: &[i32],
        cancel: &AtomicBool,
    ) -> Result<Option<String>, Error> {
        self.finished = true;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if cancel.load(Ordering::SeqCst) => return Err(Error::Interrupted),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let why = format!("waiting for {}: {e}", self.display);
                    return Err(Error::SourceFailed(why));
                }
            }
        };
        let stderr = self.stderr_text();
        let with_stderr = |msg: String| {
            if stderr.is_empty() {
                msg
            } else {
                format!("{msg}; its stderr:\n{stderr}")
            }
        };
        match status.code() {
            Some(0) => Ok(None),
            Some(code) if allowed.contains(&code) => Ok(Some(with_stderr(format!(
                "`{}` exited with status {code} (allowed by --allow-exit)",
                self.display
            )))),
            _ => Err(Error::SourceFailed(with_stderr(format!(
                "`{}` failed ({status}); nothing was recorded",
                self.display
            )))),
        }
    }

    /// The ingest failed before the stream was accepted. A command that failed is the cause
    /// and the broken stream only its symptom (`machine exec` of a stopped VM writes nothing
    /// and exits 1), so its exit status leads, even one `--allow-exit` names (that allows a
    /// whole stream from a command that complained); a command still writing is stopped.
    pub fn explain(mut self, e: Error) -> anyhow::Error {
        if self.finished {
            return e.into();
        }
        let status = self.exited_within(EXIT_WAIT);
        // Still writing, or gone but with something it started still running: stopped.
        self.stop();
        let stderr = self.stderr_text();
        let said = if stderr.is_empty() {
            String::new()
        } else {
            format!("; its stderr:\n{stderr}")
        };
        match status {
            Some(status) if !status.success() => Error::SourceFailed(format!(
                "`{}` failed ({status}); nothing was recorded; what it wrote: {e}{said}",
                self.display
            ))
            .into(),
            _ if said.is_empty() || e.is_usage() => e.into(),
            _ => Error::SourceFailed(format!(
                "{e}; reading the output of `{}`{}{said}",
                self.display,
                if status.is_none() { " (stopped)" } else { "" }
            ))
            .into(),
        }
    }

    /// Stop the command and everything it started: SIGTERM to them all, and SIGKILL to what is
    /// still running `EXIT_WAIT` later. What the command orphans is cellar's child (its
    /// subreaper), so it is found, and reaped here.
    pub fn stop(&mut self) {
        let child = &mut self.child;
        stop_descendants(|| matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
        let _ = self.child.kill();
        let _ = self.child.wait();
        reap_orphans();
    }

    /// The command's exit status, if it ends within `wait`. Usually it has closed its stdout
    /// and is on its way out; one still writing into the pipe nobody reads now is not.
    fn exited_within(&mut self, wait: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }
}

/// Make what a child leaves running when it dies this process's child, not init's, so that
/// `stop_descendants` finds it.
pub(super) fn adopt_orphans() {
    // SAFETY: prctl(2) with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Stop every process below this one: SIGTERM to them all, and SIGKILL to what is still
/// running `EXIT_WAIT` later, or as soon as none is left and `child_done` (the direct child
/// cellar waits on itself, whose status it may still want) says so. Orphans are reaped.
pub(super) fn stop_descendants(mut child_done: impl FnMut() -> bool) {
    signal(&descendants(), libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < EXIT_WAIT {
        if child_done() && descendants().is_empty() {
            break;
        }
        reap_orphans();
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&descendants(), libc::SIGKILL);
    reap_orphans();
}

/// Reap exited children: the orphans a command left, and the command itself once its status
/// no longer matters.
fn reap_orphans() {
    // SAFETY: waitpid(2) with a null status pointer writes nothing.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Every process (pid, parent pid) but zombies, from /proc.
fn processes() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // The state and the parent follow the command name, which may hold spaces and
        // parentheses: they are read after the last ')'.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace());
        let state = fields.as_mut().and_then(|f| f.next());
        let ppid = fields.as_mut().and_then(|f| f.next()?.parse::<i32>().ok());
        if let (Some(state), Some(ppid)) = (state, ppid) {
            if state != "Z" {
                out.push((pid, ppid));
            }
        }
    }
    out
}

/// The processes below this one that have not exited.
fn descendants() -> Vec<i32> {
    let all = processes();
    let mut below = vec![std::process::id() as i32];
    let mut at = 0;
    while at < below.len() {
        let parent = below[at];
        below.extend(all.iter().filter(|&&(_, p)| p == parent).map(|&(c, _)| c));
        at += 1;
    }
    below.split_off(1)
}

fn signal(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}
