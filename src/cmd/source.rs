//! The command after `snapshot --`: its stdout is the stream, its stderr is kept for messages,
//! and when the snapshot stops early it is stopped with whatever it started.
//!
//! cellar is the command's subreaper (`PR_SET_CHILD_SUBREAPER`), so what the command leaves
//! running when it dies (`sh -c 'tar ...; sleep 60'`) becomes cellar's child, not init's, and is
//! stopped with it instead of outliving the snapshot. A command that succeeds may leave things
//! running (a daemon it started): they are left alone, and not waited for. Such a daemon may
//! hold the command's stdout open: a thread watches for the command's exit (`exit_code`), and
//! tells the ingest, which then takes the stream to end once its end-of-archive marker has
//! come and the pipe stays idle. A command that fails stops the ingest soon after: nothing can
//! be recorded, and the pipe may never end.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use cellar_store::{Error, WriterExited};

use crate::procs::{adopt_orphans, reap_orphans, stop_descendants, EXIT_WAIT};

/// How much of a command's stderr is kept to show when it fails.
const STDERR_KEEP: usize = 64 << 10;

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
    /// Set once the command has exited with a status `--allow-exit` does not take.
    failed: Arc<AtomicBool>,
    /// The codes `--allow-exit` takes.
    allowed: Vec<i32>,
}

impl SourceCommand {
    /// Start the command. Once it exits, `exited` is told if its status is 0 or in
    /// `allowed`; otherwise `cancel` is set, to stop the ingest.
    pub fn spawn(
        argv: &[OsString],
        allowed: &[i32],
        exited: WriterExited,
        cancel: Arc<AtomicBool>,
    ) -> anyhow::Result<SourceCommand> {
        let display = shown(argv);
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
        let failed = Arc::new(AtomicBool::new(false));
        let pid = child.id();
        let (taken, failing) = (allowed.to_vec(), failed.clone());
        std::thread::spawn(move || match exit_code(pid) {
            Some(code) if accepts(code, &taken) => exited.set(),
            // Killed by a signal, or a code nobody allowed. All it wrote is in the pipe, so
            // the stream ends (and its own error, if any, says what it wrote) unless something
            // it left running holds the pipe: then, a moment later, the ingest is stopped.
            Some(_) => {
                failing.store(true, Ordering::SeqCst);
                std::thread::sleep(EXIT_WAIT);
                cancel.store(true, Ordering::SeqCst);
            }
            None => {}
        });
        Ok(SourceCommand {
            display,
            child,
            stderr: Some(stderr),
            stderr_text,
            finished: false,
            failed,
            allowed: allowed.to_vec(),
        })
    }

    /// Whether the command exited failing (and the ingest was told to stop for it).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
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
        // A failing command takes what it left running with it (which may hold its stderr,
        // waited for next).
        if !accepts(status.code(), allowed) {
            self.stop();
        }
        self.judge(status, allowed)
    }

    /// The command failed while its stream was read (`failed`): stopped with what it started
    /// (a daemon that holds its stdout), and its status is the error.
    pub fn failed_early(mut self, allowed: &[i32]) -> anyhow::Error {
        self.finished = true;
        // It has exited (the watcher saw it): its status first, before `stop` reaps orphans.
        let status = self.child.wait();
        self.stop();
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Error::SourceFailed(format!("waiting for {}: {e}", self.display)).into()
            }
        };
        match self.judge(status, allowed) {
            Err(e) => e.into(),
            Ok(_) => Error::Interrupted.into(),
        }
    }

    /// What the command's exit status means for the snapshot: a warning (an allowed code),
    /// or the error that records nothing.
    fn judge(&mut self, status: ExitStatus, allowed: &[i32]) -> Result<Option<String>, Error> {
        // Its stderr is not waited for when it is not shown: a daemon the command started may
        // hold it open.
        if status.code() == Some(0) {
            return Ok(None);
        }
        let stderr = self.stderr_text();
        let with_stderr = |msg: String| {
            if stderr.is_empty() {
                msg
            } else {
                format!("{msg}; its stderr:\n{stderr}")
            }
        };
        match status.code() {
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
            // Killed by the pipe cellar closed on refusing the stream: the refusal explains.
            Some(status) if by_sigpipe(status) => Error::SourceFailed(format!(
                "{e}; reading the output of `{}` (stopped){said}",
                self.display
            ))
            .into(),
            // An allowed status allows a whole stream, not a broken one.
            Some(status) if !status.success() && accepts(status.code(), &self.allowed) => {
                Error::SourceFailed(format!(
                    "`{}` ended ({status}, which --allow-exit takes), but what it wrote is no \
                     whole stream; nothing was recorded: {e}{said}",
                    self.display
                ))
                .into()
            }
            Some(status) if !status.success() => Error::SourceFailed(format!(
                "`{}` failed ({status}); nothing was recorded; what it wrote: {e}{said}",
                self.display
            ))
            .into(),
            _ if e.is_usage() => e.into(),
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
        // The command is among the descendants signalled. It is not killed through `Child`:
        // `reap_orphans` may have reaped it, and its pid may be another process's by now.
        stop_descendants(|| matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
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

/// The command as a shell would take it, for messages: words quoted where they need it.
fn shown(argv: &[OsString]) -> String {
    let word = |a: &OsString| {
        let a = a.to_string_lossy();
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
        match plain {
            true => a.into_owned(),
            false => format!("'{}'", a.replace('\'', r"'\''")),
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// Whether an exit (its code; none when a signal ended it) records the snapshot: 0, or a
/// code `--allow-exit` names.
fn accepts(code: Option<i32>, allowed: &[i32]) -> bool {
    code.is_some_and(|code| code == 0 || allowed.contains(&code))
}

/// Whether the command ended as a writer does when its reader goes away: killed by SIGPIPE,
/// or a shell's report of that (128 + 13).
fn by_sigpipe(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGPIPE) || status.code() == Some(128 + libc::SIGPIPE)
}

/// Wait for process `pid` to exit without reaping it (`WNOWAIT`: its status stays for
/// `Child::wait`): `Some(Some(code))` for an exit, `Some(None)` for a signal, `None` if it
/// cannot be waited for.
fn exit_code(pid: u32) -> Option<Option<i32>> {
    loop {
        // SAFETY: waitid(2) writes only into the zeroed siginfo it is given.
        let (rc, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            (rc, info)
        };
        if rc == 0 {
            // SAFETY: waitid filled in a child's siginfo.
            let status = unsafe { info.si_status() };
            return Some((info.si_code == libc::CLD_EXITED).then_some(status));
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}
