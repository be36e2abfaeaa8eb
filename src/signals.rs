//! Signals taken by a thread of their own with `sigwait`, not by handlers, so what they do runs
//! as ordinary code.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::output::errln;

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

/// Start `cmd`'s process with no signal blocked: threads here block the interrupts (they are
/// taken with `sigwait`), and a blocked mask is inherited through exec. A command started so
/// could not be stopped by SIGTERM, nor by Ctrl-C, nor stop what it runs itself (`timeout`
/// inside it sends SIGTERM).
pub fn unblocked_in_child(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec, and only calls sigemptyset and
    // sigprocmask, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The signals that interrupt a command.
const INTERRUPTS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Interrupts held back from this thread (and threads it starts) until `remove_on_interrupt`
/// takes them: blocked before a file (or directory) is made, so none can end the process
/// between its creation and its cleaner's start (one that arrives meanwhile waits, pending).
pub struct Held(libc::sigset_t);

pub fn hold_interrupts() -> Held {
    Held(block(&INTERRUPTS))
}

/// Taken by an interrupt's cleanup for good (the process ends holding it), and by `settle`.
static ENDING: Mutex<()> = Mutex::new(());

/// From now on, an interrupt (SIGINT, SIGTERM, SIGHUP) removes `path` (a file, or a
/// directory with everything in it) and ends the process as the signal would have (exit 128 +
/// the signal): for a file or directory being written that must not outlive a run that did
/// not finish it. Threads started before `hold_interrupts` could take the signal themselves,
/// so hold them before starting any.
///
/// The writer goes on meanwhile, so a directory is first renamed aside and removed there: the
/// writer's paths then lead nowhere, and it can make nothing more in what is being removed,
/// provided it never creates the directory itself.
pub fn remove_on_interrupt(held: Held, path: PathBuf) {
    end_on_interrupt(held, move |_| remove(&path));
}

/// From now on, an interrupt (SIGINT, SIGTERM, SIGHUP) runs `cleanup` (given the signal) and
/// ends the process as the signal would have (exit 128 + the signal). Hold interrupts before
/// starting any thread.
pub fn end_on_interrupt(held: Held, cleanup: impl FnOnce(i32) + Send + 'static) {
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `held.0` is an initialized set; sigwait only writes `sig`.
        if unsafe { libc::sigwait(&held.0, &mut sig) } == 0 {
            // Not poisoned: no thread panics holding it.
            let _ending = ENDING.lock();
            cleanup(sig);
            std::process::exit(128 + sig);
        }
    });
}

/// From now on, an interrupt (SIGINT, SIGTERM, SIGHUP) sets `cancel`, for the command to
/// stop at its next step and clean up as after an error; the signal is returned, for the exit
/// status (128 + it). A second interrupt ends the process at once, as when the first cannot
/// be acted on (an input that stalls), killing every process below it. Hold interrupts
/// before starting any thread.
pub fn cancel_on_interrupt(held: Held, cancel: Arc<AtomicBool>) -> Arc<AtomicI32> {
    let got = Arc::new(AtomicI32::new(0));
    let seen = got.clone();
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `held.0` is an initialized set; sigwait only writes `sig`.
        if unsafe { libc::sigwait(&held.0, &mut sig) } != 0 {
            return;
        }
        seen.store(sig, Ordering::SeqCst);
        cancel.store(true, Ordering::SeqCst);
        errln!("cellar: signal {sig}: stopping (another interrupt stops at once)");
        // SAFETY: as above.
        if unsafe { libc::sigwait(&held.0, &mut sig) } == 0 {
            let _ending = ENDING.lock();
            // What the command started goes with it, though there is no waiting for it now.
            crate::procs::kill_descendants();
            std::process::exit(128 + sig);
        }
    });
    got
}

fn remove(path: &Path) {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if !is_dir {
        let _ = std::fs::remove_file(path);
        return;
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".removing");
    let gone = match std::fs::rename(path, &aside) {
        Ok(()) => Path::new(&aside),
        Err(_) => path,
    };
    let _ = std::fs::remove_dir_all(gone);
}

/// Called once the command is done, before the process ends: waits for an interrupt's
/// cleanup under way, so the process ends as that says (exit 128 + the signal, nothing left
/// behind), not with the error the cleanup caused the command; after it, an interrupt waits
/// for the process to end (the command's own outcome stands).
pub fn settle() {
    std::mem::forget(ENDING.lock());
}
