//! `cellar ls`, `cellar cat` and `cellar diff`: a snapshot seen as a filesystem tree.

use std::ffi::OsStr;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::Context;
use cellar_store::{ChangeKind, Kind, Node, ReadLease, Store, Tree};
use serde::Serialize;

use crate::cli::{CatArgs, DiffArgs, LsArgs, UsageError};
use crate::output::{escape_name, rfc3339, JsonArray};

pub(super) fn shown(path: &[u8]) -> String {
    format!("/{}", escape_name(path))
}

/// A snapshot path in a message: escaped as messages are (spaces as they are), not as a
/// listing line.
fn said(path: &[u8]) -> String {
    format!("/{}", cellar_store::error::path_text(path))
}

#[derive(Serialize)]
pub(super) struct EntryJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    mode_string: String,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: String,
    link_target: Option<String>,
    nlink: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev_major: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev_minor: Option<u64>,
    xattrs: Vec<String>,
}

/// `/` + the path, for JSON (`output::json_path`).
fn json_path(path: &[u8]) -> (String, Option<String>) {
    crate::output::json_path(&[b"/", path].concat())
}

pub(super) fn entry_json(path: &[u8], n: &Node) -> EntryJson {
    let (path, path_bytes) = json_path(path);
    let device = matches!(n.kind, Kind::Char | Kind::Block);
    EntryJson {
        path,
        path_bytes,
        kind: n.kind.name(),
        mode: n.mode,
        mode_string: mode_string(n),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime: rfc3339(n.mtime, n.mtime_nsec),
        link_target: (n.kind == Kind::Symlink)
            .then(|| String::from_utf8_lossy(&n.link).into_owned()),
        nlink: n.nlink,
        dev_major: device.then_some(n.rdev_major),
        dev_minor: device.then_some(n.rdev_minor),
        xattrs: n
            .xattrs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect(),
    }
}

/// `drwxr-xr-x`, with setuid/setgid/sticky as `ls` shows them.
fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Char => 'c',
        Kind::Block => 'b',
        Kind::Fifo => 'p',
    };
    let m = n.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, special: u32, on: char, off: char| match (m & x != 0, m & special != 0) {
        (true, true) => on,
        (false, true) => off,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// The widths of `ls -l`'s number columns: each grows to the widest value met so far and
/// never shrinks, as `tar -tv` sizes its columns, so a listing streams and still lines up
/// once its widest values have gone by.
pub(super) struct Columns([usize; 4]);

impl Default for Columns {
    fn default() -> Self {
        Columns([3, 5, 5, 10])
    }
}

impl Columns {
    pub(super) fn line(&mut self, path: &[u8], n: &Node) -> String {
        let size = match n.kind {
            Kind::Char | Kind::Block => format!("{}, {}", n.rdev_major, n.rdev_minor),
            _ => n.size.to_string(),
        };
        let numbers = [
            n.nlink.to_string(),
            n.uid.to_string(),
            n.gid.to_string(),
            size,
        ];
        let mut line = mode_string(n);
        for (width, value) in self.0.iter_mut().zip(&numbers) {
            *width = (*width).max(value.len());
            line.push_str(&format!(" {value:>width$}", width = *width));
        }
        line.push_str(&format!(
            " {} {}",
            crate::output::minutes(n.mtime),
            shown(path)
        ));
        if n.kind == Kind::Symlink {
            line.push_str(" -> ");
            line.push_str(&escape_name(&n.link));
        }
        line
    }
}

/// What `ls` lists of a directory: what is in it (and with -R everything below it),
/// depth-first in name order. The store's walk keeps its own stack and refuses, as damage,
/// a crafted tree nested deeper than any ingest makes, which recursing here would not survive.
fn collect(
    tree: &Tree,
    path: &[u8],
    node: &Node,
    recursive: bool,
    f: &mut dyn FnMut(&[u8], &Node) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    tree.walk(node, path, |p, child| {
        f(p, child)?;
        Ok(recursive)
    })
}

/// A PATH argument as raw bytes (names need not be UTF-8), normalized (no surrounding or
/// doubled slashes, no `.` components), since the paths `ls` prints are built on it.
fn snapshot_path(path: &OsStr) -> Vec<u8> {
    cellar_store::tree::normalize_path(path.as_bytes())
}

pub fn ls(store: &Store, args: LsArgs) -> anyhow::Result<()> {
    let snap = store.resolve(&args.snap)?;
    let tree = store.tree(&snap)?;
    let raw = args.path.as_deref().unwrap_or(OsStr::new("/"));
    // Resolved as given, so that a trailing slash asks for a directory.
    let node = tree.resolve(raw.as_bytes())?;
    let path = snapshot_path(raw);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    // An entry at a time: `ls -R --json` of millions of files holds none of them.
    let mut json = args.json.then(JsonArray::default);
    let mut columns = Columns::default();
    let mut emit = |p: &[u8], n: &Node| -> anyhow::Result<()> {
        if let Some(json) = &mut json {
            json.push(&mut out, &entry_json(p, n))?;
        } else if args.long {
            written(writeln!(out, "{}", columns.line(p, n)))?;
        } else {
            written(writeln!(out, "{}", shown(p)))?;
        }
        Ok(())
    };
    if node.is_dir() {
        collect(&tree, &path, &node, args.recursive, &mut emit)?;
    } else {
        emit(&path, &node)?;
    }
    if let Some(json) = json {
        json.end(&mut out)?;
    }
    written(out.flush())
}

/// A write to stdout, its failure said to be the output's.
pub(super) fn written(result: std::io::Result<()>) -> anyhow::Result<()> {
    Ok(result.map_err(cellar_store::Error::Output)?)
}

pub fn cat(lease: &ReadLease, args: CatArgs) -> anyhow::Result<()> {
    let store = lease.store();
    let snap = lease.resolve(&args.snap)?;
    let tree = store.tree(&snap)?;
    let node = tree.resolve(args.path.as_bytes())?;
    let path = snapshot_path(&args.path);
    // Refused here rather than by `Tree::cat`, which knows only the node's name: the message
    // names the whole path, in the `PATH: ...` form of the other path errors.
    match node.kind {
        Kind::File => {}
        Kind::Symlink => {
            return Err(UsageError(format!(
                "{}: is a symlink to {}",
                said(&path),
                cellar_store::error::path_text(&node.link)
            ))
            .into())
        }
        k => return Err(UsageError(format!("{}: is a {}", said(&path), k.describe())).into()),
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    // A damaged chunk's error names the chunk and its pack; this names the file it hurts.
    tree.cat(&node, &mut out).with_context(|| said(&path))?;
    out.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct ChangeJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    change: &'static str,
    fields: Vec<&'static str>,
}

pub fn diff(store: &Store, args: DiffArgs) -> anyhow::Result<()> {
    let a = store.resolve(&args.a)?;
    let b = store.resolve(&args.b)?;
    let (ta, tb) = (store.tree(&a)?, store.tree(&b)?);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        // A change at a time, as the walk finds them in path order: nothing is held.
        let mut json = JsonArray::default();
        ta.diff_each(&tb, |c| {
            let (path, path_bytes) = json_path(&c.path);
            let change = ChangeJson {
                path,
                path_bytes,
                change: match c.kind {
                    ChangeKind::Added => "added",
                    ChangeKind::Removed => "removed",
                    ChangeKind::Modified => "modified",
                },
                fields: c.fields,
            };
            json.push(&mut out, &change)
        })?;
        json.end(&mut out)?;
        return written(out.flush());
    }
    ta.diff_each(&tb, |c| {
        let sign = match c.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
        };
        written(writeln!(out, "{sign} {}", shown(&c.path)))
    })?;
    written(out.flush())
}
