//! A process started with stdin, stdout or stderr closed (`cellar export x >&-`). Rust's
//! runtime opens /dev/null on a closed fd 0, 1 or 2 before `main`, so an export's data would
//! vanish with exit 0 and a closed stdin would read as an empty stream; coreutils say "Bad
//! file descriptor" instead. This looks at the three before the runtime does, from an ELF
//! constructor: `main` refuses a command that needs stdin or stdout, and `-o /dev/fd/N`
//! one that was closed.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::{Command, ExportFormat};

/// Whether descriptors 0, 1 and 2 were closed when the process started.
static CLOSED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

extern "C" fn look() {
    for (fd, closed) in (0..).zip(&CLOSED) {
        // SAFETY: F_GETFD reads a descriptor's flags and nothing else; -1 (EBADF): closed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether `fd` (0, 1 or 2) was closed when the process started: what is there now is the
/// runtime's /dev/null.
pub fn closed_at_start(fd: i32) -> bool {
    usize::try_from(fd)
        .ok()
        .and_then(|i| CLOSED.get(i))
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

// Run by the dynamic loader (and by a static binary's start code) before `main`, and so
// before the runtime fills the descriptors.
#[used]
#[link_section = ".init_array"]
static LOOK: extern "C" fn() = look;

/// The standard stream `command` needs that was closed when the process started, if any.
pub fn needed_but_closed(command: &Command) -> Option<&'static str> {
    if closed_at_start(1) && writes_stdout(command) {
        return Some("stdout");
    }
    if closed_at_start(0) && reads_stdin(command) {
        return Some("stdin");
    }
    None
}

/// Whether `command` puts what it produces (data or its report) on stdout.
fn writes_stdout(command: &Command) -> bool {
    match command {
        // An image's digest is printed when the image is not on stdout itself.
        Command::Export(a) => a.format != ExportFormat::Tar || a.to_stdout() || a.json,
        Command::Mount(a) => a.json,
        Command::Restore(a) => a.json,
        Command::Serve(a) => a.json,
        Command::Pack(a) => a.json,
        _ => true,
    }
}

/// Whether `command` reads its tar stream from stdin.
fn reads_stdin(command: &Command) -> bool {
    match command {
        Command::Snapshot(a) => {
            a.dir.is_none()
                && a.command.is_empty()
                && a.source.as_ref().is_none_or(|s| s.as_os_str() == "-")
        }
        _ => false,
    }
}
