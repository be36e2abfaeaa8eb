//! The processes below this one: a snapshot's command and what it started, or `pack`'s
//! smolvm. cellar makes itself their subreaper, so what they orphan stays below it, and stops
//! them all with them.

use std::time::{Duration, Instant};

/// How long a process may take to exit before it is killed: after SIGTERM here, and for a
/// command whose stream broke (`cmd/source.rs`).
pub const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Make what a child leaves running when it dies this process's child, not init's, so that
/// `stop_descendants` finds it.
pub fn adopt_orphans() {
    // SAFETY: prctl(2) with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Stop every process below this one: SIGTERM to them all, and SIGKILL to what is still
/// running `EXIT_WAIT` later, or as soon as none is left and `child_done` (the direct child
/// cellar waits on itself, whose status it may still want) says so. Orphans are reaped.
pub fn stop_descendants(mut child_done: impl FnMut() -> bool) {
    signal(&descendants(), libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < EXIT_WAIT {
        if child_done() && descendants().is_empty() {
            break;
        }
        reap_orphans();
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&descendants(), libc::SIGKILL);
    reap_orphans();
}

/// Reap exited children: the orphans a command left, and the command itself once its status
/// no longer matters.
pub fn reap_orphans() {
    // SAFETY: waitpid(2) with a null status pointer writes nothing.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Every process (pid, parent pid) but zombies, from /proc.
fn processes() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // The state and the parent follow the command name, which may hold spaces and
        // parentheses: they are read after the last ')'.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace());
        let state = fields.as_mut().and_then(|f| f.next());
        let ppid = fields.as_mut().and_then(|f| f.next()?.parse::<i32>().ok());
        if let (Some(state), Some(ppid)) = (state, ppid) {
            if state != "Z" {
                out.push((pid, ppid));
            }
        }
    }
    out
}

/// Whether any process below this one has not exited.
pub fn any_descendants() -> bool {
    !descendants().is_empty()
}

/// The processes below this one that have not exited.
fn descendants() -> Vec<i32> {
    let all = processes();
    let mut below = vec![std::process::id() as i32];
    let mut at = 0;
    while at < below.len() {
        let parent = below[at];
        below.extend(all.iter().filter(|&&(_, p)| p == parent).map(|&(c, _)| c));
        at += 1;
    }
    below.split_off(1)
}

fn signal(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// SIGKILL to every process below this one, at once: for a process ending now, which cannot
/// wait for them to stop of their own accord.
pub fn kill_descendants() {
    signal(&descendants(), libc::SIGKILL);
}
