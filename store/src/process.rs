//! Whether the process behind a lease or a temp file still runs on this host.

/// Is a process with this pid running? A zombie (killed, not yet reaped: its parent may never
/// reap it, as in a container without an init) is not: it holds nothing any more. A process
/// of another user (EPERM) is.
pub(crate) fn alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    !zombie(pid)
}

fn zombie(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let close = stat.iter().rposition(|&b| b == b')')?;
            stat[close + 1..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .copied()
        })
        == Some(b'Z')
}
