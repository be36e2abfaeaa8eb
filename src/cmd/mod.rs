//! One module per command; each takes its parsed arguments and the store location.

mod export;
mod find;
mod gc;
mod list;
mod mount;
mod pack;
mod prune;
mod push;
mod repair;
mod restore;
mod serve;
mod snapshot;
mod source;
mod stats;
mod target;
mod tree;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use std::sync::Arc;

use cellar_store::oci::LeftOut;
use cellar_store::{ReadLease, Snapshot, Store};

use crate::cli::{self, Cli, Command};
use crate::output::{errln, left_out_summary};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let (root, named_by) = match cli.store {
        // clap fills --store from CELLAR_STORE: the message names where it came from.
        Some(dir) if std::env::var_os("CELLAR_STORE").is_some_and(|v| v == dir) => {
            (dir, "CELLAR_STORE")
        }
        Some(dir) => (dir, "--store"),
        None => (default_store()?, "the default store"),
    };
    // A store is a directory: a file there is no store, and none can be made there, nor
    // below one.
    let not_a_dir = match std::fs::metadata(&root) {
        Ok(m) => !m.is_dir(),
        Err(e) => e.raw_os_error() == Some(libc::ENOTDIR),
    };
    if not_a_dir {
        return Err(cli::UsageError(format!(
            "{named_by} {}: not a directory (a store is a directory)",
            root.display()
        ))
        .into());
    }
    match cli.command {
        Command::Snapshot(args) => snapshot::run(&root, args),
        Command::List(args) => list::list(&open(&root)?, args),
        Command::Show(args) => list::show(&open(&root)?, args),
        Command::Export(args) => reading(&root, "export", |l| export::run(l, args)),
        Command::Stats(args) => stats::run(&open(&root)?, args),
        Command::Ls(args) => tree::ls(&open(&root)?, args),
        Command::Cat(args) => reading(&root, "cat", |l| tree::cat(l, args)),
        Command::Diff(args) => tree::diff(&open(&root)?, args),
        Command::Find(args) => reading(&root, "find", |l| find::run(l, args)),
        Command::Mount(args) => mount::run(&root, open_to_stay(&root)?, args),
        Command::Restore(args) => reading(&root, "restore", |l| restore::run(l, args)),
        Command::Rm(args) => prune::rm(&open(&root)?, args),
        Command::Prune(args) => prune::prune(&open(&root)?, args),
        Command::Verify(args) => verify::verify(&root, args),
        Command::RepairIndex(args) => repair::repair_index(&root, args),
        Command::RepairPacks(args) => repair::repair_packs(&root, args),
        Command::Gc(args) => gc::run(&open(&root)?, args),
        Command::Serve(args) => serve::run(open_to_stay(&root)?, args),
        Command::Push(args) => reading(&root, "push", |l| push::run(l, args)),
        Command::Pack(args) => pack::run(open_to_stay(&root)?, args),
    }
}

pub(super) fn open(root: &Path) -> anyhow::Result<Store> {
    match Store::open(root) {
        // SQLite's write-ahead log needs the index and its directory writable even to read
        // (only a read-only filesystem is read without it): say so rather than
        // "attempt to write a readonly database".
        Err(e @ cellar_store::Error::Db(_)) if write_denied(root) => Err(anyhow::Error::from(e)
            .context(format!(
                "cannot open the index of {}: this user may not write to the store's \
                 directory or its index, and SQLite must, even to read (the index keeps a \
                 write-ahead log), except on a read-only filesystem; run as a user who may \
                 (the store's owner), or give write permission back",
                root.display()
            ))),
        // The error says what to do when SQLite finds the file damaged.
        Err(e @ cellar_store::Error::Db(_)) => {
            Err(anyhow::Error::from(e)
                .context(format!("cannot open the index of {}", root.display())))
        }
        other => Ok(other?),
    }
}

/// `open`, for a reader that runs on (mount, serve, pack): refused on a full disk, where the
/// index could only be opened as if it were on a read-only filesystem.
fn open_to_stay(root: &Path) -> anyhow::Result<Store> {
    let store = open(root)?;
    store.not_full()?;
    Ok(store)
}

/// Whether this process is denied writing the store's directory or its index by their
/// permissions (not by a read-only filesystem, which the store is opened read-only on, so an
/// error there is the index's own).
pub(super) fn write_denied(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    [root.to_path_buf(), root.join("cellar.db")]
        .iter()
        .any(|p| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).is_ok_and(|c| {
                // SAFETY: access(2) on a NUL-terminated path.
                let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
                rc != 0
                    && matches!(
                        std::io::Error::last_os_error().raw_os_error(),
                        Some(libc::EACCES | libc::EPERM)
                    )
            })
        })
}

/// Run `f` under a reader's lease (FORMAT §15.4): each snapshot it resolves through the lease
/// is pinned, so it reads to the end even if the snapshot is forgotten and gc runs meanwhile.
/// Commands that read little (`ls`, `diff`, `show`) rely on gc's grace period instead, and so
/// never wait on the index's write lock.
fn reading(
    root: &Path,
    holder: &str,
    f: impl FnOnce(&ReadLease) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let store = Arc::new(open(root)?);
    let lease = store.read_lease(holder);
    f(&lease)
}

/// What `snap`'s image leaves out (names starting `.wh.`), said as a warning on stderr; the
/// commands that make images (`export --format`, `push`, `pack`) also put it in `--json`.
fn warn_left_out(store: &Store, snap: &Snapshot) -> anyhow::Result<LeftOut> {
    let left_out = store.image_left_out(snap)?;
    if !left_out.is_empty() {
        errln!(
            "cellar: warning: the image of {} ({}) leaves out {}",
            snap.name,
            snap.short_id(),
            left_out_summary(&left_out)
        );
    }
    Ok(left_out)
}

/// Why `path` is not a directory to work in (following symlinks, as opening it does), or None
/// if it is one: "not a directory" alone would be wrong for a path that does not exist.
fn not_a_dir(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some("not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
            if path.symlink_metadata().is_ok() {
                "is a symlink to a path that does not exist"
            } else {
                "does not exist"
            }
            .into(),
        ),
        Err(e) => Some(e.to_string()),
    }
}

/// Why `path` cannot name a file to write, if it cannot: a trailing `/` (a directory's
/// name), a directory there, or a file above it. A device, FIFO or the like is a file here.
fn not_a_file_to_write(path: &Path) -> Option<String> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Some("a trailing / names a directory (give a file name)".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some("is a directory (give a file name)".into()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            Some("part of the path is not a directory".into())
        }
        _ => None,
    }
}

/// Why an export, restore or mount may not go inside the store: it could overwrite the index
/// or a pack it reads from.
const WOULD_DAMAGE: &str = "writing there would damage it";

/// A usage error, saying `why`, if `path` lands inside the store at `root`.
fn outside_store(root: &Path, path: &Path, shown: &str, why: &str) -> anyhow::Result<()> {
    let (Ok(root), Some(at)) = (root.canonicalize(), resolved(path)) else {
        return Ok(());
    };
    if !at.starts_with(&root) && !reaches_store(&root, &at) {
        return Ok(());
    }
    Err(cli::UsageError(format!(
        "{shown}: inside the store {} ({why})",
        root.display()
    ))
    .into())
}

/// Whether `at` (resolved: no symlinks in it) is in one of the store's directories by
/// identity, device and inode: another path to the store, a bind mount of it or of its
/// `packs`, is as much inside it as its own path. The store's directories are few (the root,
/// `tmp`, `packs` and its fan-out), so all of them are compared.
fn reaches_store(root: &Path, at: &Path) -> bool {
    let mut ours: Vec<_> = identity(root).into_iter().collect();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..2 {
        let below: Vec<PathBuf> = level
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        ours.extend(below.iter().filter_map(|d| identity(d)));
        level = below;
    }
    at.ancestors()
        .filter_map(identity)
        .any(|found| ours.contains(&found))
}

/// Where the store at `root` is below `path` (relative to it), if `path` holds it: a mount
/// there would hide it, and a restore could write into it. `path` may be another path to a
/// directory above the store (a bind mount of `/`): the same directory by device and inode.
fn store_below(root: &Path, path: &Path) -> Option<PathBuf> {
    let root = root.canonicalize().ok()?;
    let at = resolved(path)?;
    if let Ok(below) = root.strip_prefix(&at) {
        return Some(below.to_path_buf());
    }
    let target = identity(&at)?;
    let above = root.ancestors().find(|a| identity(a) == Some(target))?;
    root.strip_prefix(above).ok().map(Path::to_path_buf)
}

/// What a path names, whichever path it is reached by: its device and inode.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Where `path` lands, resolved a component at a time as the kernel resolves it: a symlink
/// is followed (to where nothing is yet, too: writing follows it), and `..` goes up from
/// where the path has got to, also past a directory that does not exist yet (`missing/..`,
/// which a restore or export makes and then leaves). None for a loop of links, or a
/// working directory that cannot be named.
fn resolved(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut at = match path.is_absolute() {
        true => PathBuf::from("/"),
        false => std::env::current_dir().ok()?.canonicalize().ok()?,
    };
    // What is left to walk, last first.
    let mut left: Vec<PathBuf> = path.iter().rev().map(PathBuf::from).collect();
    // The kernel's own limit on the links followed in one lookup (ELOOP past it).
    let mut links = 0;
    while let Some(part) = left.pop() {
        match part.components().next() {
            Some(Component::RootDir) => at = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::Normal(name)) => {
                let next = at.join(name);
                match std::fs::read_link(&next) {
                    Ok(to) => {
                        links += 1;
                        if links > 40 {
                            return None;
                        }
                        left.extend(to.iter().rev().map(PathBuf::from));
                    }
                    // Not a link, or not there: `at` holds no link, so `..` can pop it.
                    Err(_) => at = next,
                }
            }
            _ => {}
        }
    }
    Some(at)
}

/// `$XDG_DATA_HOME/cellar`, else `~/.local/share/cellar`. Only absolute paths count (the
/// XDG spec has relative ones ignored): a store must not depend on where cellar runs.
fn default_store() -> anyhow::Result<PathBuf> {
    let absolute = |var| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
    };
    if let Some(d) = absolute("XDG_DATA_HOME") {
        return Ok(d.join("cellar"));
    }
    let home = absolute("HOME").with_context(|| {
        let home = match std::env::var_os("HOME") {
            Some(_) => "HOME is not an absolute path",
            None => "HOME is not set",
        };
        format!("no store given: neither --store nor CELLAR_STORE is set, and {home}")
    })?;
    Ok(home.join(".local/share/cellar"))
}
