//! Signals taken by a thread of their own with `sigwait`, not by handlers, so what they do runs
//! as ordinary code.

use std::path::PathBuf;

/// Block `signals` in this thread, and so in every thread it starts from now on; returns the
/// set, for `sigwait`.
pub fn block(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The signals that interrupt a command.
const INTERRUPTS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Interrupts held back from this thread (and threads it starts) until `remove_on_interrupt`
/// takes them: blocked before a file is made, so none can end the process between the file's
/// creation and its cleaner's start (one that arrives meanwhile waits, pending).
pub struct Held(libc::sigset_t);

pub fn hold_interrupts() -> Held {
    Held(block(&INTERRUPTS))
}

/// From now on, an interrupt (SIGINT, SIGTERM, SIGHUP) removes `path` and ends the process as
/// the signal would have (exit 128 + the signal): for a file being written that must not
/// outlive a run that did not finish it. Threads started before `hold_interrupts` could take
/// the signal themselves, so hold them before starting any.
pub fn remove_on_interrupt(held: Held, path: PathBuf) {
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `held.0` is an initialized set; sigwait only writes `sig`.
        if unsafe { libc::sigwait(&held.0, &mut sig) } == 0 {
            let _ = std::fs::remove_file(&path);
            std::process::exit(128 + sig);
        }
    });
}
