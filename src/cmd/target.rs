//! Where an export's stream goes: stdout, a descriptor cellar was given, a device, or a file
//! made whole beside its name and renamed into place. Checked before anything is made.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cellar_store::Error;

use crate::cli::{inherited_fd, UsageError};

/// Where `-o PATH`, or stdout without it, sends an export.
///
/// Stdout (no PATH, `-`, or a name of descriptor 1) must not be a terminal. `/dev/stderr`,
/// `/dev/fd/N` and `/proc/self/fd/N` are a descriptor cellar was given, written as it is: a
/// file opened for appending is appended to, not replaced (opening the name anew would start
/// a new file description, at offset 0 or truncating, and fail for a socket). A device, FIFO
/// or socket is written through, as `tar -f` and `cp` do (renaming a file over `/dev/null`
/// would replace the device). A regular file, or a name for a new one, is written beside
/// where its last symlink points and renamed into place, so a failed or interrupted export
/// leaves no partial file behind. A descriptor or device that is also stderr is refused:
/// warnings and the report would be mixed into the stream.
pub(super) enum Target<'a> {
    Stdout,
    Given {
        fd: i32,
        shown: &'a Path,
    },
    Through {
        shown: &'a Path,
        file: File,
        block: bool,
    },
    File {
        shown: &'a Path,
        path: PathBuf,
    },
}

const TERMINAL: &str = "refusing to write a tar stream to a terminal";
const STDERR: &str = "is also stderr, where cellar's messages go (they would be mixed into \
                      the stream); give another file";

/// Whether `fd` is the file stderr is: the same pipe, socket, file or block device. A
/// character device (`/dev/null`) does not count: nothing written there is kept.
fn is_stderr(fd: i32) -> bool {
    let stat = |fd| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat fills `st` when it returns 0, and reads nothing else.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| unsafe { st.assume_init() })
    };
    match (stat(fd), stat(2)) {
        (Some(a), Some(b)) => {
            (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
                && a.st_mode & libc::S_IFMT != libc::S_IFCHR
        }
        _ => false,
    }
}

impl<'a> Target<'a> {
    /// Where `path` sends an export, or why it cannot: a usage error for a terminal or stderr,
    /// a path that cannot name a file, a missing directory, or a descriptor cellar was not
    /// given; EBADF for one closed when cellar started.
    pub(super) fn of(path: Option<&'a Path>) -> anyhow::Result<Self> {
        let fd = path.and_then(inherited_fd);
        let Some(shown) = path.filter(|p| *p != Path::new("-") && fd != Some(1)) else {
            if std::io::stdout().is_terminal() {
                let why = format!("{TERMINAL}; redirect stdout or use -o FILE");
                return Err(UsageError(why).into());
            }
            return Ok(Target::Stdout);
        };
        let usage = |why: String| Err(UsageError(format!("-o {}: {why}", shown.display())).into());
        if let Some(fd) = fd {
            // SAFETY: F_GETFD reads a descriptor's flags and nothing else.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if flags == -1 || crate::closed_fds::closed_at_start(fd) {
                let e = std::io::Error::from_raw_os_error(libc::EBADF);
                return Err(e).with_context(|| format!("-o {}", shown.display()));
            }
            // A descriptor that came through exec has no close-on-exec flag (it would have
            // been closed); every one cellar opens itself has it.
            if flags & libc::FD_CLOEXEC != 0 {
                return usage("not a descriptor cellar was given".into());
            }
            // SAFETY: isatty only asks about the descriptor.
            if unsafe { libc::isatty(fd) } == 1 {
                return usage(TERMINAL.into());
            }
            if is_stderr(fd) {
                return usage(STDERR.into());
            }
            return Ok(Target::Given { fd, shown });
        }
        if let Some(why) = super::not_a_file_to_write(shown) {
            return usage(why);
        }
        // Links followed by the kernel: /dev/stdout's /proc/self/fd/1 names a pipe by no path.
        if let Some(m) = std::fs::metadata(shown).ok().filter(|m| !m.is_file()) {
            let block = m.file_type().is_block_device();
            // Opened now, so that a terminal (`/dev/tty`) or stderr is refused before any
            // work; not made the controlling terminal by it.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(shown)
                .with_context(|| format!("opening {}", shown.display()))?;
            if file.is_terminal() {
                return usage(TERMINAL.into());
            }
            if is_stderr(file.as_raw_fd()) {
                return usage(STDERR.into());
            }
            return Ok(Target::Through { shown, file, block });
        }
        let path = link_target(shown).with_context(|| format!("-o {}", shown.display()))?;
        let dir = parent_dir(&path);
        if !dir.is_dir() {
            return usage(format!("no directory {}", dir.display()));
        }
        Ok(Target::File { shown, path })
    }

    /// Whether the export goes to stdout, where there is no room for a report.
    pub(super) fn is_stdout(&self) -> bool {
        matches!(self, Target::Stdout)
    }

    /// Run `write` into the target.
    pub(super) fn write(
        self,
        write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Target::Stdout => {
                let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                write(&mut out)?;
                out.flush().map_err(|e| Error::Output(e).into())
            }
            Target::Given { fd, shown } => to_given(fd, shown, write),
            Target::Through { shown, file, block } => write_through(shown, &file, block, write),
            Target::File { shown, path } => to_file(shown, &path, write),
        }
    }
}

/// Write a file at `path` (where `shown` leads) beside it, and rename it into place.
fn to_file(
    shown: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    // Mode 0666 less the umask, as any other new file.
    let tmp = staged(
        path,
        |b| {
            b.permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)
        },
        |t| t.path(),
    )?;
    let writing = || format!("-o {}", shown.display());
    // A file written over keeps its owner and mode, as a shell's `>` and `tar -f` keep them:
    // an export of a root filesystem into a file made private must not come out readable to
    // all. (The owner only where this user may give it; its set-id bits are not kept.)
    if let Some(old) = std::fs::metadata(path).ok().filter(|m| m.is_file()) {
        let file = tmp.as_file();
        let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
        file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
            .with_context(writing)?;
    }
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    write(&mut out).map_err(|e| at_output(e, shown))?;
    out.flush().with_context(writing)?;
    drop(out);
    tmp.as_file().sync_all().with_context(writing)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// Where writing to `path` lands: `path` itself, or the end of the chain of symlinks it
/// starts (which need not exist yet, as with a shell's `>`).
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut at = path.to_path_buf();
    // The kernel's own limit on a chain of links (ELOOP past it).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&at)?;
                at = parent_dir(&at).join(to);
            }
            Ok(_) => return Ok(at),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(at),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// Write into an existing device, FIFO or socket in place. What was written stays if the
/// export fails; a block device is synced at the end, as a file would be.
fn write_through(
    path: &Path,
    file: &File,
    block: bool,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out).map_err(|e| at_output(e, path))?;
    out.flush().map_err(|e| at_output(Error::Output(e), path))?;
    drop(out);
    if block {
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
}

/// Write into descriptor `fd`, which cellar was given, as it is.
fn to_given(
    fd: i32,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    // SAFETY: dup only reads the descriptor table; the copy is owned here and closed on drop.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("-o {}", path.display()));
    }
    // SAFETY: `copy` is a new descriptor nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(copy) });
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out).map_err(|e| at_output(e, path))?;
    out.flush().map_err(|e| at_output(Error::Output(e), path))
}

/// fsync a directory, so that a name just renamed into it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// A temporary file or directory, made by `make` (given a builder with the name set), that
/// is to become `target`: named `.NAME.XXXX.cellar-tmp` after it, so a leftover (the machine
/// went down) says what it was, and removed by an interrupt. Interrupts are held from before
/// it is made until its cleaner takes them.
pub(super) fn staged<T>(
    target: &Path,
    make: impl FnOnce(&mut tempfile::Builder) -> std::io::Result<T>,
    path: impl Fn(&T) -> &Path,
) -> anyhow::Result<T> {
    let prefix = format!(
        ".{}.",
        target.file_name().unwrap_or_default().to_string_lossy()
    );
    let held = crate::signals::hold_interrupts();
    let made = make(
        tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".cellar-tmp"),
    )
    .map_err(os_error)
    .with_context(|| format!("staging {} beside it", target.display()))?;
    crate::signals::remove_on_interrupt(held, path(&made).to_path_buf());
    Ok(made)
}

/// An export's error, with `-o PATH` before it when it was writing there that failed (and
/// not, say, reading a damaged store).
pub(super) fn at_output(e: Error, path: &Path) -> anyhow::Error {
    let failed_writing = matches!(e, Error::Output(_));
    let e = anyhow::Error::from(e);
    match failed_writing {
        true => e.context(format!("-o {}", path.display())),
        false => e,
    }
}

/// tempfile's error without what it adds to the OS's message: ` at path "…"`, the name of its
/// own making, Debug-quoted (the caller's context names the target). Its type is private and
/// gives the OS's error only through Display.
fn os_error(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.rsplit_once(" at path \"") {
        Some((os, _)) if text.ends_with('"') => std::io::Error::new(e.kind(), os.to_string()),
        _ => e,
    }
}

/// The directory `path` is in (`.` for a bare name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(".".as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS's message is kept; tempfile's quoted name of its own making is not.
    #[test]
    fn staging_errors_say_what_the_os_said() {
        let e = tempfile::Builder::new()
            .tempfile_in("/nonexistent-dir")
            .unwrap_err();
        assert!(e.to_string().contains(" at path \""), "{e}");
        let plain = os_error(e);
        assert_eq!(plain.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(plain.to_string(), "No such file or directory (os error 2)");
    }
}
