//! Reading a pipe: when its writer pauses, and when a stream from a command that has exited
//! is over although the pipe is still open.
//!
//! A command may start something that outlives it (a daemon) and inherits its stdout: the
//! pipe then stays open after the command is gone, and a read of it waits for as long as that
//! process lives. GNU tar stops at the end-of-archive marker and never sees this; cellar reads
//! on to keep what follows the marker (export gives it back), so it needs to know when that is
//! over. Once the command has exited (its starter says so, `WriterExited`), all it wrote is in
//! the pipe; what comes after is from what it left running. So once it has exited and the
//! marker has come, the stream ends when the pipe has had nothing for [`GONE_QUIET`], or at
//! the first moment it has nothing [`GONE_LIMIT`] on (a process that trickles into it).

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a pipe may have nothing to read before what has come is handed on. A writer that
/// keeps up refills it far sooner (`tar` writes every few microseconds), so blocks stay whole
/// and few; one that has stopped is noticed at once, to a person.
const PAUSE_MS: libc::c_int = 20;
/// How often a pipe with nothing to read looks whether its stream is over.
const IDLE_CHECK_MS: libc::c_int = 50;
/// How long the trailer of an exited command's stream may have nothing more before the
/// stream is taken to end there.
const GONE_QUIET: Duration = Duration::from_millis(250);
/// How long after the command's exit (and the marker) the stream is taken to end whenever
/// the pipe has nothing, however often something comes.
const GONE_LIMIT: Duration = Duration::from_secs(2);

/// Set by whoever started a pipe's writer once it has exited with a status the snapshot takes
/// (`IngestInput::command_pipe`).
#[derive(Clone, Default)]
pub struct WriterExited(Arc<AtomicBool>);

impl WriterExited {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the input thread and the parse tell each other.
#[derive(Default)]
pub(super) struct Shared {
    /// The parse has read the end-of-archive marker: what comes now is the trailer.
    pub trailer: AtomicBool,
    /// The stream was taken to end with its pipe still open.
    pub cut: AtomicBool,
    /// The compression the input was unwrapped from, once it is known.
    pub codec: OnceLock<&'static str>,
}

/// What to do when the pipe has nothing to read: a command's plain stream's pipe is made
/// non-blocking, and any pipe may come so (a parent's choice for stdin).
pub(super) struct Idle<'a> {
    pub fd: &'a OwnedFd,
    /// For a command's pipe: told when the command has exited.
    pub exited: Option<&'a WriterExited>,
    pub end: &'a Shared,
    /// The ingest's `cancel`: once set, nobody reads on.
    pub cancel: &'a AtomicBool,
    /// When the command's exit and the marker were both first seen.
    pub gone_since: Cell<Option<Instant>>,
}

/// How a wait for the pipe ended.
pub(super) enum Waited {
    /// It can be read: data, or its end.
    Ready,
    /// The stream is over with the pipe still open (see the module's docs).
    Over,
    /// The ingest was told to stop: the stream is not over, and nobody reads on.
    Stopped,
}

impl Idle<'_> {
    /// Wait until the pipe can be read, the stream is over without it, or the ingest stops.
    pub fn wait(&self) -> Waited {
        let quiet = Instant::now();
        loop {
            if poll_in(self.fd, IDLE_CHECK_MS) {
                return Waited::Ready;
            }
            if self.cancel.load(Ordering::SeqCst) {
                return Waited::Stopped;
            }
            let exited = self.exited.is_some_and(WriterExited::is_set);
            if exited && self.end.trailer.load(Ordering::SeqCst) {
                let since = self.gone_since.get().unwrap_or_else(Instant::now);
                self.gone_since.set(Some(since));
                if quiet.elapsed() >= GONE_QUIET || since.elapsed() >= GONE_LIMIT {
                    self.end.cut.store(true, Ordering::SeqCst);
                    return Waited::Over;
                }
            }
        }
    }
}

/// Whether the pipe has had nothing to read for [`PAUSE_MS`]: its writer is waiting.
pub(super) fn stalled(pipe: &OwnedFd) -> bool {
    !poll_in(pipe, PAUSE_MS)
}

/// Whether `fd` has something to read (or its end, or an error: the read that follows
/// decides) within `ms`. EINTR counts as something, for the same reason.
fn poll_in(fd: &OwnedFd, ms: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, for a descriptor `fd` holds open.
    unsafe { libc::poll(&mut p, 1, ms) != 0 }
}

/// Make reads of the pipe return `WouldBlock` when it is empty, so the reader can wait with
/// [`Idle::wait`] instead. The flag is the open pipe's, shared with every descriptor for it:
/// only for a pipe cellar made for a command.
pub(super) fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor `fd` holds open, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
