//! Crash points for tests: with `CELLAR_FAILPOINT=NAME` in the environment the process aborts
//! when it reaches NAME, as abruptly as a `kill -9`, so tests can crash it exactly mid-commit.

use std::sync::OnceLock;

pub(crate) fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("CELLAR_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("cellar: failpoint {name}: aborting");
        std::process::abort();
    }
}
