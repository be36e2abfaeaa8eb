//! Whether the process behind a lease or a temp file still runs on this host.
//!
//! A pid alone does not say: pids are reused (a killed ingest's pid, after a reboot or a few
//! thousand processes, is some other program's), and a pid means another process in another
//! pid namespace (an ingest in a container with pid 3 is, to gc on the host, a kernel thread).
//! Either way a dead process would look alive forever, and its lease would keep gc from
//! reclaiming anything. So leases and temp file names record an [`Owner`]: the pid with the
//! process's start time (clock ticks after boot, which no later process of that pid on this
//! boot shares), its pid namespace, and for leases the boot.

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// The initial pid namespace's inode number (the kernel's `PROC_PID_INIT_INO`): a process
/// in it sees every process of the host.
const INIT_PID_NS: u64 = 0xEFFF_FFFC;

/// A process as a lease row or a temp file name records it. Rows and names written before
/// these fields were recorded have the pid alone, and are judged by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: i64,
    /// `starttime` of `/proc/PID/stat`: clock ticks from boot to the process's start.
    start: Option<u64>,
    /// The inode number of the process's pid namespace, in which `pid` is its pid.
    ns: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when it ran (leases only: file names stay short).
    boot: Option<String>,
}

impl Owner {
    /// This process.
    pub fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id() as i64;
            Owner {
                pid,
                start: stat("self").ok().and_then(|s| s.start),
                ns: pid_ns("self"),
                boot: boot_id(),
            }
        })
    }

    pub fn is_me(&self) -> bool {
        self.pid == Owner::me().pid && self.start == Owner::me().start
    }

    /// The first field of a temp file's name: `PID.START.NS`, or `PID` where they are unknown.
    pub fn file_tag(&self) -> String {
        match (self.start, self.ns) {
            (Some(start), Some(ns)) => format!("{}.{start}.{ns}", self.pid),
            _ => self.pid.to_string(),
        }
    }

    /// The owner a temp file's name gives (its first `-`-separated field); `None` for a file
    /// cellar did not name.
    pub fn of_file_name(name: &str) -> Option<Owner> {
        let tag = name.split('-').next()?;
        let mut fields = tag.split('.');
        let pid = fields.next()?.parse().ok()?;
        let (start, ns) = match (fields.next(), fields.next(), fields.next()) {
            (None, ..) => (None, None),
            (Some(s), Some(n), None) => (Some(s.parse().ok()?), Some(n.parse().ok()?)),
            _ => return None,
        };
        Some(Owner {
            pid,
            start,
            ns,
            boot: None,
        })
    }

    /// What a lease row records beside the pid (`leases.process`): `START.NS.BOOT`.
    pub fn lease_tag(&self) -> Option<String> {
        Some(format!(
            "{}.{}.{}",
            self.start?,
            self.ns?,
            self.boot.as_ref()?
        ))
    }

    /// The owner of a lease row: its pid and `leases.process` (NULL in rows of older writers).
    pub fn of_lease(pid: i64, tag: Option<&str>) -> Owner {
        let mut owner = Owner {
            pid,
            start: None,
            ns: None,
            boot: None,
        };
        let mut fields = tag.unwrap_or("").splitn(3, '.');
        if let (Some(Ok(start)), Some(Ok(ns)), Some(boot)) = (
            fields.next().map(str::parse),
            fields.next().map(str::parse),
            fields.next(),
        ) {
            owner.start = Some(start);
            owner.ns = Some(ns);
            owner.boot = Some(boot.to_string());
        }
        owner
    }

    /// Whether the process still runs. Where that cannot be told (a process of another pid
    /// namespace this one does not see, `/proc` hiding other users' processes), it is taken
    /// to run: a live writer's files and leases must never be taken.
    pub fn alive(&self) -> bool {
        if !alive(self.pid) && self.ns.is_none_or(|ns| Some(ns) == pid_ns("self")) {
            return false;
        }
        let Some(start) = self.start else {
            return alive(self.pid);
        };
        if let (Some(boot), Some(now)) = (&self.boot, &Owner::me().boot) {
            if boot != now {
                return false; // the host has rebooted since
            }
        }
        match self.ns {
            Some(ns) if Some(ns) != pid_ns("self") => in_other_namespace(self.pid, start, ns),
            _ => match stat(&self.pid.to_string()) {
                Ok(s) => !s.zombie && s.start == Some(start),
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            },
        }
    }
}

/// Whether a process started at `start` runs as `pid` in pid namespace `ns`, which is not
/// this process's: looked for among the processes this one sees (all of them, from the
/// initial namespace) by its start time, then by its pid there (the last `NSpid`).
fn in_other_namespace(pid: i64, start: u64, ns: u64) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        match stat(n) {
            Ok(s) if s.start == Some(start) && !s.zombie => {}
            _ => continue,
        }
        match pid_ns(n) {
            Some(found) if found != ns => continue,
            Some(_) => {}
            None => return true, // another user's: cannot tell
        }
        if ns_pid(n) == Some(pid) {
            return true;
        }
    }
    pid_ns("self") != Some(INIT_PID_NS)
}

/// Is a process with this pid running? A zombie (killed, not yet reaped: its parent may never
/// reap it, as in a container without an init) is not: it holds nothing any more. A process
/// of another user (EPERM) is.
fn alive(pid: i64) -> bool {
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
    !stat(&pid.to_string()).is_ok_and(|s| s.zombie)
}

struct Stat {
    zombie: bool,
    start: Option<u64>,
}

/// `/proc/PROC/stat`: the state and the start time (fields 3 and 22; the command name before
/// them, in parentheses, may hold anything).
fn stat(proc: &str) -> std::io::Result<Stat> {
    let bytes = std::fs::read(format!("/proc/{proc}/stat"))?;
    let close = bytes.iter().rposition(|&b| b == b')').unwrap_or(0);
    let rest = String::from_utf8_lossy(&bytes[close + 1..]);
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next();
    Ok(Stat {
        zombie: state == Some("Z"),
        start: fields.nth(18).and_then(|f| f.parse().ok()),
    })
}

fn pid_ns(proc: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{proc}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The process's pid in its own (innermost) pid namespace.
fn ns_pid(proc: &str) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{proc}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty() && !id.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_owner(child: &std::process::Child) -> Owner {
        let mut owner = Owner::me().clone();
        owner.pid = child.id() as i64;
        owner.start = stat(&child.id().to_string()).unwrap().start;
        owner
    }

    #[test]
    fn a_running_process_is_alive_and_a_reaped_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let owner = child_owner(&child);
        assert!(owner.alive());
        let reread = Owner::of_file_name(&format!("{}-scratch-x.db", owner.file_tag())).unwrap();
        assert!(reread.alive(), "{reread:?}");
        assert!(Owner::of_lease(owner.pid, owner.lease_tag().as_deref()).alive());
        child.kill().unwrap();
        // Killed, unreaped: a zombie, which holds nothing (once the signal has landed).
        let start = std::time::Instant::now();
        while stat(&owner.pid.to_string()).is_ok_and(|s| !s.zombie) {
            assert!(start.elapsed().as_secs() < 10, "the child never died");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!owner.alive(), "a zombie holds nothing");
        child.wait().unwrap();
        assert!(!owner.alive());
        assert!(!Owner::of_lease(owner.pid, None).alive());
    }

    #[test]
    fn a_pid_some_other_process_has_now_is_not_the_owner() {
        let me = Owner::me();
        assert!(me.alive() && me.is_me());
        let mut reused = me.clone();
        reused.start = me.start.map(|s| s + 1);
        assert!(!reused.alive(), "the pid runs, but started at another time");
        assert!(!reused.is_me());
        let mut rebooted = me.clone();
        rebooted.boot = Some("another-boot".into());
        assert!(!rebooted.alive(), "a lease from before a reboot");
        // Without the start time (an older writer's name or row), the pid is all there is.
        let old = Owner::of_file_name(&format!("{}-1a2b-0.pack", me.pid)).unwrap();
        assert!(old.alive());
    }

    #[test]
    fn names_and_rows_round_trip_and_foreign_names_are_none() {
        let me = Owner::me();
        let tag = me.file_tag();
        let back = Owner::of_file_name(&format!("{tag}-committing-abc")).unwrap();
        assert_eq!((back.pid, back.start, back.ns), (me.pid, me.start, me.ns));
        let row = Owner::of_lease(me.pid, me.lease_tag().as_deref());
        assert_eq!(&row, me);
        for name in ["notes.txt", "12.x.3-a", "1.2-a", "1.2.3.4-a", "-1"] {
            assert_eq!(Owner::of_file_name(name), None, "{name}");
        }
    }
}
