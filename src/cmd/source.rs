//! The command after `snapshot --`: its stdout is the stream, its stderr is kept for messages,
//! and when the snapshot stops early it is stopped with whatever it started.
//!
//! cellar is the command's subreaper (`PR_SET_CHILD_SUBREAPER`), so what the command leaves
//! running when it dies (`sh -c 'tar ...; sleep 60'`) becomes cellar's child, not init's, and is
//! stopped with it instead of outliving the snapshot.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use cellar_store::Error;

/// How much of a command's stderr is kept to show when it fails.
const STDERR_KEEP: usize = 64 << 10;
/// How long a command whose stream broke may take to exit before it is stopped.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The command after `--`, its stdout piped into the ingest, its stderr kept for messages.
pub(super) struct SourceCommand {
    display: String,
    pub child: Child,
    stderr: Option<JoinHandle<()>>,
    stderr_text: Arc<Mutex<Vec<u8>>>,
    finished: bool,
}

impl SourceCommand {
    pub fn spawn(argv: &[OsString]) -> anyhow::Result<SourceCommand> {
        let display = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        // SAFETY: prctl(2) with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {display}"))?;
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr_text = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr_text.clone();
        let stderr = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEEP {
                    let cut = kept.len() - STDERR_KEEP;
                    kept.drain(..cut);
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

    fn stderr_text(&mut self) -> String {
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let text = self.stderr_text.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&text).trim_end().to_string()
    }

    /// The stream has been read to its end: the command must have succeeded, or ended with an
    /// allowed code (then a warning carries its stderr).
    pub fn finish(&mut self, allowed: &[i32]) -> Result<Option<String>, Error> {
        self.finished = true;
        let status = self
            .child
            .wait()
            .map_err(|e| Error::SourceFailed(format!("waiting for {}: {e}", self.display)))?;
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
        if status.is_none() {
            self.stop();
        }
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

    /// Stop the command and everything it started: SIGTERM to them all, then, for whatever is
    /// left once the command has had `EXIT_WAIT` to go, SIGKILL (orphans of the command are
    /// cellar's children by then, as its subreaper).
    pub fn stop(&mut self) {
        signal_descendants(libc::SIGTERM);
        if self.exited_within(EXIT_WAIT).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        signal_descendants(libc::SIGKILL);
        // Reap them: nothing else in this process waits for children.
        // SAFETY: waitpid(2) with a null status pointer writes nothing.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
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

/// Send `sig` to every process below this one, found through /proc (each process's parent).
fn signal_descendants(sig: i32) {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // The parent is the second field after the command name, which may hold spaces and
        // parentheses: it is read after the last ')'.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut below = vec![std::process::id() as i32];
    let mut at = 0;
    while at < below.len() {
        let parent = below[at];
        below.extend(
            parent_of
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(c, _)| c),
        );
        at += 1;
    }
    for &pid in &below[1..] {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}
