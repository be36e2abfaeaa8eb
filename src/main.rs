//! cellar: snapshot machine root filesystems into a content-addressed store.

mod cli;
mod closed_fds;
mod cmd;
mod exit;
mod fuse;
mod output;
mod procs;
mod progress;
mod registry;
mod serve;
mod signals;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::output::errln;

fn main() -> ExitCode {
    // An empty CELLAR_STORE is unset, as an empty XDG_DATA_HOME is (clap would take it as
    // an empty --store and complain about a flag nobody gave).
    if std::env::var_os("CELLAR_STORE").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("CELLAR_STORE");
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout, usage errors to stderr; a failed write is an error.
        Err(e) => {
            let code = e.exit_code() as u8;
            if !e.use_stderr() && closed_fds::closed_at_start(1) {
                errln!("cellar: error: stdout is closed, and help and version go there");
                return ExitCode::from(1);
            }
            if let Err(w) = e.print().and_then(|()| std::io::stdout().flush()) {
                if w.kind() != std::io::ErrorKind::BrokenPipe {
                    errln!("cellar: error: writing the output: {w}");
                }
                return ExitCode::from(1);
            }
            return ExitCode::from(code);
        }
    };
    raise_open_files_limit();
    if let Some(fd) = closed_fds::needed_but_closed(&cli.command) {
        // What the command writes would be lost, or what it reads would look empty.
        errln!("cellar: error: {fd} is closed, and this command needs it");
        return ExitCode::from(1);
    }
    let result = cmd::run(cli);
    signals::settle();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A reader that went away (`cellar export x | head`) is not an error worth a word.
            if broken_pipe(&e) {
                return ExitCode::from(1);
            }
            if let Some(cli::Interrupted(sig)) = e.downcast_ref() {
                errln!("cellar: {e}");
                return ExitCode::from((128 + sig) as u8);
            }
            if e.downcast_ref::<cli::Incomplete>().is_some() {
                errln!("cellar: {e}");
                return ExitCode::from(3);
            }
            errln!("cellar: error: {e:#}");
            let usage = e
                .downcast_ref::<cellar_store::Error>()
                .is_some_and(|e| e.is_usage())
                || e.downcast_ref::<cli::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Whether the error is stdout's reader going away, however it reached us.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let io = match cause.downcast_ref::<cellar_store::Error>() {
            Some(cellar_store::Error::Output(io)) => Some(io),
            _ => cause.downcast_ref::<std::io::Error>(),
        };
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Raise the soft limit on open files to the hard one. `snapshot --dir` holds a descriptor for
/// every directory level it is inside (entries are reached through them, never by a path that
/// a symlink could redirect) and `serve` one per connection; the soft limit is low only for
/// programs using select(2), which nothing here does. Go's runtime does the same at start.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or fill the one struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            // Failing leaves the soft limit as it was; a walk that runs out says so.
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
