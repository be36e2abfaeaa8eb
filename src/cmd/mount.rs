//! `cellar mount`: serve snapshots over FUSE until unmounted, in the foreground or, with
//! `--daemon`, in a background process that this one waits on until the mount answers.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use cellar_store::error::{path_text, printable};
use cellar_store::fsview::FsView;
use cellar_store::Store;
use fuser::{Config, MountOption, SessionACL};

use crate::cli::{MountArgs, UsageError};
use crate::fuse::{CellarFs, Feeder};
use crate::output::{errln, print_json};

/// Set in the background process: the fd to write one byte to once the mount is up.
const READY_FD: &str = "CELLAR_MOUNT_READY_FD";
/// Requests served at once (reads of several files, `find` beside `tar -c`).
const THREADS: usize = 4;

pub fn run(root: &Path, store: Store, args: MountArgs) -> anyhow::Result<()> {
    // A FUSE mount whose process was killed: there is a mount point, but nothing answers.
    // The kernel says ENOTCONN once the connection is gone, and ECONNABORTED to a request
    // that was waiting when it went (a server whose threads are still exiting).
    let shown = shown(&args.mountpoint);
    let word = shell_word(&args.mountpoint);
    if let Err(e) = std::fs::metadata(&args.mountpoint) {
        if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) {
            bail!(
                "{shown} is a mount point whose filesystem no longer answers (a mount that was \
                 killed); unmount it first (`fusermount3 -u {word}` or `umount -l {word}`)"
            );
        }
    }
    if let Some(why) = super::not_a_dir(&args.mountpoint) {
        return Err(UsageError(format!("{shown}: {why}")).into());
    }
    super::outside_store(
        root,
        &args.mountpoint,
        &shown,
        "a mount there would hide part of it from cellar itself",
    )?;
    if super::store_below(root, &args.mountpoint).is_some() {
        return Err(UsageError(format!(
            "{shown}: holds the store {} (a mount there would hide the store from cellar \
             itself)",
            printable(&root.display().to_string())
        ))
        .into());
    }
    // Mounting there would hide what is mounted, not replace it, and succeed silently.
    if is_mount_point(&args.mountpoint)? {
        let what = mounted_at(&args.mountpoint).map_or_else(
            || "of what, cellar cannot tell".to_string(),
            |m| m.to_string(),
        );
        bail!(
            "{shown} is already a mount point ({what}); unmount it first (`umount {word}` or \
             `fusermount3 -u {word}`)"
        );
    }
    if args.daemon {
        // A SNAP that names nothing is a usage error here, not a failed background process.
        if let Some(spec) = &args.snap {
            store.resolve(spec)?;
        }
        return daemonize(root, &args);
    }
    // The view holds the lease until the process ends: a snapshot it has gone into stays
    // readable while the kernel holds anything of it, even if it is forgotten meanwhile.
    let lease = Arc::new(store).read_lease("mount");
    lease.register()?;
    let view = match &args.snap {
        Some(spec) => {
            let snap = lease.resolve(spec)?;
            FsView::snapshot(lease, snap)?
        }
        None => FsView::all(lease),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        // A snapshot's setuid programs and device nodes are things to look at, not to run
        // as their owner or open: an old su, or a disk's node, would be live on this host.
        // (fuser mounts so by default; said here so that no change of default undoes it.)
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName("cellar".into()),
        MountOption::Subtype("cellar".into()),
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(THREADS);

    // Signals are taken by one thread with sigwait; every other thread has them blocked.
    let signals =
        crate::signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1]);
    let view = Arc::new(view);
    let notifier = Arc::new(OnceLock::new());
    let (feeder, feeding) = Feeder::start(view.clone(), notifier.clone());
    let session = fuser::spawn_mount(
        CellarFs::new(view.clone(), feeder),
        &args.mountpoint,
        &config,
    )
    .with_context(|| format!("mounting at {}", shown))?;
    let _ = notifier.set(session.notifier());
    errln!("cellar: mounted at {}", shown);
    if let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: the parent passed us this fd for exactly this purpose; we own it now.
        let mut ready = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = std::io::Write::write_all(&mut ready, b"1");
    }

    let (tx, rx) = mpsc::channel();
    let on_signal = tx.clone();
    // Weak: this thread outlives an unmount (it waits in sigwait), and the view must not,
    // since dropping it ends the lease (its row and pins).
    let reported = Arc::downgrade(&view);
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `signals` is an initialized set; sigwait only writes `sig`.
        if unsafe { libc::sigwait(&signals, &mut sig) } != 0 {
            return;
        }
        if sig == libc::SIGUSR1 {
            // What the mount holds, on demand (`kill -USR1`), into its log.
            if let Some(view) = reported.upgrade() {
                errln!(
                    "cellar: {} held, {} pinned",
                    counted(view.inode_count(), "inode"),
                    counted(view.pinned(), "snapshot")
                );
            }
            continue;
        }
        let _ = on_signal.send(Some(sig));
        return;
    });
    std::thread::spawn(move || {
        let _ = session.join();
        // The session's end dropped the filesystem, and with it the feeder's queue.
        let _ = feeding.join();
        let _ = tx.send(None);
    });
    if let Ok(Some(sig)) = rx.recv() {
        errln!("cellar: signal {sig}: unmounting {}", shown);
        unmount_lazily(&args.mountpoint);
        // A detached mount's session only ends when its last open file closes; do not wait
        // for that. Exiting closes /dev/fuse, which ends the connection (held files then get
        // ENOTCONN).
        let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        // The session thread may still hold the view, whose drop would end the lease: the
        // process exits first, so the lease ends here (else its row waits for a gc).
        view.end_lease();
    }
    errln!("cellar: unmounted {}", shown);
    Ok(())
}

/// `n` and `word`, in the plural unless `n` is 1.
fn counted(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `path` as messages show paths: control characters and bytes that are not UTF-8 escaped.
fn shown(path: &Path) -> String {
    path_text(path.as_os_str().as_bytes())
}

/// `path` as a word to paste into a shell (quoted where it has to be), shown as messages
/// show paths.
fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    let quoted = shlex::try_quote(&text).unwrap_or(text.clone());
    printable(&quoted).into_owned()
}

/// A mount as /proc/self/mountinfo lists it.
struct Mounted {
    fstype: String,
    source: String,
}

impl std::fmt::Display for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cellar = self.fstype == "fuse.cellar"
            || (self.fstype.starts_with("fuse") && self.source == "cellar");
        if cellar {
            write!(f, "a cellar mount")
        } else {
            write!(
                f,
                "{} from {}",
                printable(&self.fstype),
                printable(&self.source)
            )
        }
    }
}

/// What is mounted on top at `dir` (the last of the mounts there), if mountinfo says.
fn mounted_at(dir: &Path) -> Option<Mounted> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    info.split(|&b| b == b'\n').rev().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let dash = fields.iter().position(|f| *f == b"-")?;
        let text = |i: usize| Some(String::from_utf8_lossy(fields.get(i)?).into_owned());
        (unescape_mountinfo(fields.get(4)?) == dir.as_os_str().as_bytes()).then_some(Mounted {
            fstype: text(dash + 1)?,
            source: text(dash + 2)?,
        })
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether `dir` is the root of a mount (of any filesystem, a bind mount included).
fn is_mount_point(dir: &Path) -> anyhow::Result<bool> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statx is valid; statx only writes into it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statx buffer of the right type.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| dir.display().to_string());
    }
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & root != 0 {
        return Ok(stx.stx_attributes & root != 0);
    }
    // Kernels before 5.8 do not say; the root of another filesystem has another device.
    let parent = dir.join("..");
    let parent = std::fs::metadata(&parent).with_context(|| parent.display().to_string())?;
    Ok(libc::makedev(stx.stx_dev_major, stx.stx_dev_minor) != parent.dev())
}

/// Detach the mount even if it is busy: it leaves the namespace at once, and files open in
/// it keep working for as long as this process still serves them.
fn unmount_lazily(mountpoint: &Path) {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        // Not root: the setuid helper can do it.
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .status();
    }
}

/// Start `cellar mount` again in the background, logging to a file, and return once it says
/// the mount is up (or report its log if it fails).
fn daemonize(root: &Path, args: &MountArgs) -> anyhow::Result<()> {
    // A store whose logs cannot be written (a read-only filesystem, even with `logs/` there
    // from an earlier mount; no permission) keeps its mounts' logs in the temp directory.
    let (log_path, log) = match create_log(&root.join("logs")) {
        Ok(created) => created,
        Err(_) => create_log(&std::env::temp_dir().join("cellar-logs"))?,
    };

    let (mut ready_rx, ready_tx) = std::io::pipe().context("creating a pipe")?;
    let fd = ready_tx.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().context("finding the cellar binary")?);
    cmd.arg("--store")
        .arg(root)
        .arg("mount")
        .arg(&args.mountpoint);
    if let Some(snap) = &args.snap {
        cmd.arg(snap);
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    cmd.env(READY_FD, fd.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    // SAFETY: between fork and exec we only clear FD_CLOEXEC on one fd (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&log_path);
            return Err(e).context("starting the background mount");
        }
    };
    drop(ready_tx);
    // The log is named after the process that writes it (the pid to signal), which did not
    // exist yet when the log had to be opened for it.
    let pid = child.id();
    let named = log_path.with_file_name(format!("mount-{pid}.log"));
    let log_path = match std::fs::rename(&log_path, &named) {
        Ok(()) => named,
        Err(_) => log_path,
    };
    let mut byte = [0u8; 1];
    if ready_rx.read(&mut byte).unwrap_or(0) == 1 {
        errln!(
            "cellar: mounted at {} in the background (pid {pid}); log: {}",
            shown(&args.mountpoint),
            log_path.display()
        );
        if args.json {
            print_json(&serde_json::json!({
                "mountpoint": args.mountpoint,
                "pid": pid,
                "log": log_path,
            }))?;
        }
        return Ok(());
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    bail!(
        "the background mount failed; its log ({}):\n{}",
        log_path.display(),
        log.trim_end()
    )
}

/// A new log file for a background mount in `dir` (made if missing), named after this
/// process until the background one exists.
fn create_log(dir: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("mount-starting-{}.log", std::process::id()));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, file))
}
