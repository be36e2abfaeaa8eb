//! A process started with stdin or stdout closed (`cellar export x >&-`). Rust's runtime opens
//! /dev/null on a closed fd 0, 1 or 2 before `main`, so an export's data would vanish with
//! exit 0 and a closed stdin would read as an empty stream; coreutils say "Bad file
//! descriptor" instead. This looks at the two before the runtime does, from an ELF
//! constructor, and `main` refuses a command that needs one of them.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::Command;

static STDIN_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

extern "C" fn look() {
    for (fd, closed) in [(0, &STDIN_CLOSED), (1, &STDOUT_CLOSED)] {
        // SAFETY: F_GETFD reads a descriptor's flags and nothing else; -1 (EBADF): closed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

// Run by the dynamic loader (and by a static binary's start code) before `main`, and so
// before the runtime fills the descriptors.
#[used]
#[link_section = ".init_array"]
static LOOK: extern "C" fn() = look;

/// The standard stream `command` needs that was closed when the process started, if any.
pub fn needed_but_closed(command: &Command) -> Option<&'static str> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) && writes_stdout(command) {
        return Some("stdout");
    }
    if STDIN_CLOSED.load(Ordering::Relaxed) && reads_stdin(command) {
        return Some("stdin");
    }
    None
}

/// Whether `command` puts what it produces (data or its report) on stdout.
fn writes_stdout(command: &Command) -> bool {
    match command {
        Command::Export(a) => a.to_stdout() || a.json,
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
