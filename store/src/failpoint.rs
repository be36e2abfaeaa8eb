//! Crash points for tests: with `CELLAR_FAILPOINT=NAME` in the environment the process aborts
//! when it reaches NAME, as abruptly as a `kill -9`, so tests can crash it exactly mid-commit.
//! With `CELLAR_FAILPOINT=NAME:stop` it stops itself there (SIGSTOP) instead, so a test can
//! run another command at exactly that moment, then let it go on with SIGCONT (once: the
//! point passed again does not stop it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub(crate) fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("CELLAR_FAILPOINT").ok());
    let Some(point) = point.as_deref() else {
        return;
    };
    if point == name {
        eprintln!("cellar: failpoint {name}: aborting");
        std::process::abort();
    }
    // Once: a point a process passes again (verify's run made again) lets it go on.
    static STOPPED: AtomicBool = AtomicBool::new(false);
    if point.strip_suffix(":stop") == Some(name) && !STOPPED.swap(true, Ordering::Relaxed) {
        // SAFETY: raise(3) has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}
