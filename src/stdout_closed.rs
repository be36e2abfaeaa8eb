//! A process started with stdout closed (`cellar export x >&-`). Rust's runtime opens
//! /dev/null on a closed fd 1 before `main`, so every write would succeed and the data
//! vanish with exit 0; coreutils say "write error: Bad file descriptor" instead. This looks
//! at fd 1 before the runtime does, from an ELF constructor.

use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

extern "C" fn look() {
    // SAFETY: F_GETFD reads a descriptor's flags and nothing else; -1 (EBADF) means closed.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

// Run by the dynamic loader (and by a static binary's start code) before `main`, and so
// before the runtime fills fd 1.
#[used]
#[link_section = ".init_array"]
static LOOK: extern "C" fn() = look;

/// Whether fd 1 was closed when the process started.
pub fn was_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}
