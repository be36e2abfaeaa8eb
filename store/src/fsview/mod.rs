//! A filesystem view with inode numbers over one snapshot or over every snapshot of the store
//! (`NAME/ID/...` plus `NAME/latest`): what a FUSE adapter (or any other filesystem front end)
//! needs, with no FUSE types in it.
//!
//! Inode numbers are handed out as nodes are looked up and kept while the kernel holds them
//! (`inodes.rs`); the names of one hardlink group in one snapshot share one inode. Snapshots are
//! immutable, so everything below a snapshot's root may be cached by the kernel for as long as
//! it likes; the lineage directories above them are read from the index whenever it has
//! changed (`listing.rs`), so snapshots taken or removed while mounted appear and vanish.

mod inodes;
mod listing;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, RwLock};

use inodes::{Held, Inode, Inodes, Key};
use listing::Listing;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::gc::ReadLease;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{Kind, Node, Tree};

pub const ROOT_INO: u64 = 1;
const LATEST: &[u8] = b"latest";
/// Entries one `files_after` looks through at most: a walk past many large files or empty
/// directories ends there.
const AFTER_SCAN: usize = 4096;

/// Attributes of an inode, as `stat` shows them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// 512-byte blocks of data: a sparse file's holes take none.
    pub blocks: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u64,
    pub rdev_major: u64,
    pub rdev_minor: u64,
    /// True for the lineage directories, whose contents change while mounted.
    pub volatile: bool,
}

/// One entry of a directory listing.
pub struct Entry<'a> {
    pub ino: u64,
    pub kind: Kind,
    pub name: &'a [u8],
    /// The node a snapshot's entry shows, which has its attributes: READDIRPLUS gives them
    /// with every entry, and taking them from the listing spares a lookup and a decode each.
    node: Option<&'a Node>,
}

impl<'a> Entry<'a> {
    /// An entry whose attributes `entry_attr` looks up (`.` and `..`, say).
    pub fn bare(ino: u64, kind: Kind, name: &'a [u8]) -> Self {
        Entry {
            ino,
            kind,
            name,
            node: None,
        }
    }
}

/// See [`FsView::usage`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
}

pub struct FsView {
    /// Every snapshot the view goes into is pinned through it (FORMAT §15.4): forgotten while
    /// shown, it stays readable while the view holds inodes in it.
    lease: ReadLease,
    inodes: RwLock<Inodes>,
    snapshots: Listing,
}

impl FsView {
    /// One snapshot's tree at the root (`snap` pinned by `lease` already, or now).
    pub fn snapshot(lease: ReadLease, snap: Snapshot) -> Result<Self> {
        lease.pin(&snap.id)?;
        let node = Held::new(lease.store().tree(&snap)?.root());
        Ok(Self::with_root(
            lease,
            Inode::Node {
                snap: Arc::new(snap),
                node,
                parent: 0,
            },
        ))
    }

    /// Every snapshot: `NAME/ID/...` and `NAME/latest -> ID`. A snapshot is pinned when the
    /// view first goes into it.
    pub fn all(lease: ReadLease) -> Self {
        Self::with_root(lease, Inode::Top)
    }

    fn with_root(lease: ReadLease, root: Inode) -> Self {
        FsView {
            lease,
            inodes: RwLock::new(Inodes::new(root)),
            snapshots: Listing::default(),
        }
    }

    fn store(&self) -> &Store {
        self.lease.store()
    }

    /// The tree of `snap`, about to be read below its root: pinned first (a no-op while it is
    /// pinned), so it stays readable while the view holds inodes in it, even if it is
    /// forgotten.
    /// Listing a lineage does not pin its snapshots; going into one does. One forgotten
    /// before the view went into it is `NotFound`.
    fn enter<'a>(&'a self, snap: &'a Snapshot) -> Result<Tree<'a>> {
        self.lease.pin(&snap.id)?;
        self.store().tree(snap)
    }

    /// Whether anything in the view can change while it is shown: the lineage directories of
    /// the all-snapshots view do; a single snapshot never does.
    pub fn changes(&self) -> bool {
        matches!(self.get(ROOT_INO), Ok(Inode::Top))
    }

    fn get(&self, ino: u64) -> Result<Inode> {
        let inodes = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        inodes
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no inode {ino}")))
    }

    /// Change the inode table; then stop pinning each snapshot it dropped the last inode of.
    /// That is done before the table is unlocked: an inode made in the snapshot afterwards
    /// (a new lookup) pins it again before anything is read through it (`enter`).
    fn inodes_mut<R>(&self, change: impl FnOnce(&mut Inodes) -> R) -> R {
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let out = change(&mut inodes);
        for id in inodes.take_released() {
            self.lease.unpin(&id);
        }
        out
    }

    /// The inode for `key`, allocated on first sight; `counted`: handed to the kernel as a
    /// lookup (see `inodes`).
    fn intern(&self, key: Key, counted: bool, make: impl FnOnce() -> Inode) -> u64 {
        self.inodes_mut(|inodes| inodes.intern(key, counted, make))
    }

    /// The kernel forgot `n` lookups of `ino` (FUSE FORGET): with none left, it is dropped,
    /// and with it, if it was the last inode of its snapshot, the view's pin of that snapshot.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes_mut(|inodes| inodes.forget(ino, n));
    }

    /// What the view shows, for `statfs`: the snapshot's stream (every snapshot's, for the
    /// all-snapshots view) in bytes, as `list` gives its size, and its members.
    pub fn usage(&self) -> Result<Usage> {
        let snaps = match self.get(ROOT_INO)? {
            Inode::Node { snap, .. } => vec![(*snap).clone()],
            _ => self.snapshots.all(self.store())?.to_vec(),
        };
        Ok(snaps.iter().fold(Usage::default(), |u, s| Usage {
            bytes: u.bytes + s.stream_len,
            entries: u.entries + s.members,
        }))
    }

    /// How many inodes the view holds now.
    pub fn inode_count(&self) -> usize {
        self.inodes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many snapshots the view pins: those it has gone into of which the kernel still
    /// holds something.
    pub fn pinned(&self) -> usize {
        self.lease.pinned()
    }

    /// End the view's lease now (`ReadLease::end`), for a mount that exits while the kernel
    /// still holds it.
    pub fn end_lease(&self) {
        self.lease.end()
    }

    fn lineages(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .snapshots
            .all(self.store())?
            .iter()
            .map(|s| s.name.clone())
            .collect())
    }

    fn child_ino(&self, parent: u64, snap: &Arc<Snapshot>, node: &Node, counted: bool) -> u64 {
        self.intern(Key::child(parent, snap.id, node), counted, || Inode::Node {
            snap: snap.clone(),
            node: Held::new(node),
            parent,
        })
    }

    fn snapshot_ino(&self, snap: Snapshot, counted: bool) -> Result<u64> {
        let node = Held::new(self.store().tree(&snap)?.root());
        let id = snap.id;
        Ok(self.intern(Key::Root(id), counted, move || Inode::Node {
            snap: Arc::new(snap),
            node,
            parent: 0,
        }))
    }

    /// The entry `name` in directory `parent`, if there is one. A found entry counts as a
    /// lookup the kernel holds until it forgets it.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Attr>> {
        let Some(ino) = self.lookup_ino(parent, name)? else {
            return Ok(None);
        };
        match self.getattr(ino) {
            Ok(attr) => Ok(Some(attr)),
            Err(e) => {
                // Not handed out after all.
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    fn lookup_ino(&self, parent: u64, name: &[u8]) -> Result<Option<u64>> {
        Ok(Some(match self.get(parent)? {
            Inode::Top => {
                let Ok(name) = std::str::from_utf8(name) else {
                    return Ok(None);
                };
                if !self.lineages()?.contains(name) {
                    return Ok(None);
                }
                self.intern(Key::Lineage(name.to_string()), true, || {
                    Inode::Lineage(name.to_string())
                })
            }
            Inode::Lineage(lineage) => {
                if name == LATEST {
                    self.intern(Key::Latest(lineage.clone()), true, || {
                        Inode::Latest(lineage)
                    })
                } else {
                    let found = self
                        .snapshots
                        .of(self.store(), &lineage)?
                        .into_iter()
                        .find(|s| s.short_id().as_bytes() == name);
                    match found {
                        Some(s) => self.snapshot_ino(s, true)?,
                        None => return Ok(None),
                    }
                }
            }
            Inode::Latest(_) => return Err(not_a_dir()),
            Inode::Node { snap, node, .. } => {
                let tree = self.enter(&snap)?;
                match tree.lookup(&node.node()?, name)? {
                    Some(child) => self.child_ino(parent, &snap, &child, true),
                    None => return Ok(None),
                }
            }
        }))
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        // The view's own directories (and `latest`) have the time the newest snapshot in them
        // was taken (not 1970), read from the index on every call, as their listings are; and,
        // as on a disk, a link for each directory in them besides their own two.
        let synthetic = |snaps: &[Snapshot], subdirs: usize| {
            let (mtime, mtime_nsec) = newest(snaps);
            Attr {
                ino,
                kind: Kind::Dir,
                mode: 0o555,
                uid: 0,
                gid: 0,
                size: 0,
                blocks: 0,
                mtime,
                mtime_nsec,
                nlink: 2 + subdirs as u64,
                rdev_major: 0,
                rdev_minor: 0,
                volatile: true,
            }
        };
        Ok(match self.get(ino)? {
            Inode::Top => {
                let snaps = self.snapshots.all(self.store())?;
                let lineages: HashSet<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
                synthetic(&snaps, lineages.len())
            }
            Inode::Lineage(lineage) => {
                let snaps = self.snapshots.of(self.store(), &lineage)?;
                synthetic(&snaps, snaps.len())
            }
            Inode::Latest(lineage) => {
                let latest = self.snapshots.of(self.store(), &lineage)?.pop();
                Attr {
                    kind: Kind::Symlink,
                    mode: 0o777,
                    size: latest.as_ref().map_or(0, |s| s.short_id().len() as u64),
                    nlink: 1,
                    ..synthetic(latest.as_slice(), 0)
                }
            }
            Inode::Node { node, .. } => node_attr(ino, &*node.shared()?),
        })
    }

    /// The attributes of a listed entry, as `getattr` gives them.
    pub fn entry_attr(&self, entry: &Entry) -> Result<Attr> {
        match entry.node {
            Some(node) => Ok(node_attr(entry.ino, node)),
            None => self.getattr(entry.ino),
        }
    }

    fn latest_target(&self, lineage: &str) -> Result<Vec<u8>> {
        Ok(self
            .snapshots
            .of(self.store(), lineage)?
            .pop()
            .map(|s| s.short_id().into_bytes())
            .unwrap_or_default())
    }

    /// A directory's entries (without `.` and `..`) from the `skip`-th on, each handed to `add`
    /// until it returns true. With `counted` (READDIRPLUS) each entry
    /// counts as a lookup, except the one `add` refused (the reply was full).
    pub fn list(
        &self,
        ino: u64,
        skip: usize,
        counted: bool,
        mut add: impl FnMut(Entry) -> Result<bool>,
    ) -> Result<()> {
        let mut give = |entry: Entry| -> Result<bool> {
            let ino = entry.ino;
            let full = add(entry);
            if counted && !matches!(full, Ok(false)) {
                self.forget(ino, 1);
            }
            full
        };
        match self.get(ino)? {
            Inode::Top => {
                for name in self.lineages()?.into_iter().skip(skip) {
                    let n = name.clone();
                    let child = self.intern(Key::Lineage(name.clone()), counted, move || {
                        Inode::Lineage(n)
                    });
                    if give(Entry::bare(child, Kind::Dir, name.as_bytes()))? {
                        break;
                    }
                }
            }
            Inode::Lineage(lineage) => {
                let snaps = self.snapshots.of(self.store(), &lineage)?;
                let count = snaps.len();
                for s in snaps.into_iter().skip(skip) {
                    let name = s.short_id().into_bytes();
                    if give(Entry::bare(
                        self.snapshot_ino(s, counted)?,
                        Kind::Dir,
                        &name,
                    ))? {
                        return Ok(());
                    }
                }
                if skip <= count {
                    let l = lineage.clone();
                    let latest =
                        self.intern(Key::Latest(lineage), counted, move || Inode::Latest(l));
                    give(Entry::bare(latest, Kind::Symlink, LATEST))?;
                }
            }
            Inode::Latest(_) => return Err(not_a_dir()),
            Inode::Node { snap, node, .. } => {
                let tree = self.enter(&snap)?;
                // In the stream's order where the record keeps it: where the data is, so a
                // reader going through the listing (`tar -c`, `cp -r`) reads frames through.
                for c in tree.readdir(&node.node()?)?.listed_from(skip) {
                    let child = self.child_ino(ino, &snap, c, counted);
                    let entry = Entry {
                        node: Some(c),
                        ..Entry::bare(child, c.kind, &c.name)
                    };
                    if give(entry)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Up to `size` bytes of a file at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let Inode::Node { snap, node, .. } = self.get(ino)? else {
            return Err(Error::InvalidArgument("not a file".into()));
        };
        let node = node.shared()?;
        let tree = self.enter(&snap)?;
        let want = size.min(node.size.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; want];
        let mut done = 0;
        while done < want {
            let n = tree.read_at(&node, offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// `SEEK_DATA` (`hole` false) or `SEEK_HOLE` from `offset` in a file ([`Node::seek`]): the
    /// offset, or None for `ENXIO`. Holes are a sparse file's, so `cp` and `tar` reading a
    /// file through the mount skip them as they would on its disk.
    pub fn seek(&self, ino: u64, offset: u64, hole: bool) -> Result<Option<u64>> {
        let Inode::Node { node, .. } = self.get(ino)? else {
            return Err(Error::InvalidArgument("not a file".into()));
        };
        let node = node.shared()?;
        if node.kind != Kind::File {
            return Err(Error::InvalidArgument("not a file".into()));
        }
        Ok(node.seek(offset, hole))
    }

    /// The plain files of at most `max_size` bytes (and more than none) that come after `ino`
    /// in its snapshot's stream, in order, handed to `visit` as (inode, size) until it returns
    /// false: the rest of the directory it was found in, as listed, going into each
    /// subdirectory as it comes, then on in the directories above. That is what a reader going
    /// through the tree as it is listed (`tar`, `cp -r`) reads next, and where the data is
    /// stored. The walk stops at the first file or directory the kernel holds no inode of (it
    /// was listed without attributes and not looked up yet, so nothing can be pushed into it),
    /// and after `AFTER_SCAN` entries.
    pub fn files_after(
        &self,
        ino: u64,
        max_size: u64,
        mut visit: impl FnMut(u64, u64) -> bool,
    ) -> Result<()> {
        let Inode::Node { snap, node, parent } = self.get(ino)? else {
            return Ok(());
        };
        let tree = self.enter(&snap)?;
        let held = |dir: u64, c: &Node| {
            let inodes = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            inodes.find_held(&Key::child(dir, snap.id, c))
        };
        let mut scanned = 0;
        // The walk goes on after entry `name` of directory `dir`.
        let (mut dir, mut name) = (parent, node.node()?.name);
        loop {
            let Ok(Inode::Node {
                node: d,
                parent: up,
                ..
            }) = self.get(dir)
            else {
                return Ok(());
            };
            let d = d.node()?;
            let listing = tree.readdir(&d)?;
            let Ok(i) = listing.binary_search_by(|c| c.name.cmp(&name)) else {
                return Ok(());
            };
            // The directories entered, each with its listing and the next position in it.
            let mut open = vec![(dir, listing.clone(), listing.position(i) + 1)];
            while let Some((at, listing, pos)) = open.last_mut() {
                let (at, listing) = (*at, listing.clone());
                let Some(c) = listing.listed_at(*pos) else {
                    open.pop();
                    continue;
                };
                *pos += 1;
                scanned += 1;
                if scanned > AFTER_SCAN {
                    return Ok(());
                }
                match c.kind {
                    Kind::File if c.content.is_some() && (1..=max_size).contains(&c.size) => {
                        let Some(file) = held(at, c) else {
                            return Ok(());
                        };
                        if !visit(file, c.size) {
                            return Ok(());
                        }
                    }
                    Kind::Dir => {
                        let Some(sub) = held(at, c) else {
                            return Ok(());
                        };
                        open.push((sub, tree.readdir(c)?, 0));
                    }
                    _ => {}
                }
            }
            if up == 0 {
                return Ok(()); // the snapshot's root
            }
            (dir, name) = (up, d.name);
        }
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.get(ino)? {
            Inode::Latest(lineage) => self.latest_target(&lineage),
            Inode::Node { node, .. } => match node.node()? {
                n if n.kind == Kind::Symlink => Ok(n.link),
                _ => Err(not_a_symlink()),
            },
            _ => Err(not_a_symlink()),
        }
    }

    pub fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(match self.get(ino)? {
            Inode::Node { node, .. } => node.shared()?.xattrs.clone(),
            _ => Vec::new(),
        })
    }
}

/// When the newest of `snaps` was taken (seconds and nanoseconds since the epoch), or the
/// epoch for none.
fn newest(snaps: &[Snapshot]) -> (i64, u32) {
    snaps
        .iter()
        .filter_map(|s| OffsetDateTime::parse(&s.created, &Rfc3339).ok())
        .max()
        .map_or((0, 0), |t| (t.unix_timestamp(), t.nanosecond()))
}

/// The attributes of `node`, shown at inode `ino`.
fn node_attr(ino: u64, node: &Node) -> Attr {
    Attr {
        ino,
        kind: node.kind,
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        size: node.size,
        blocks: data_len(node).div_ceil(512),
        mtime: node.mtime,
        mtime_nsec: node.mtime_nsec,
        nlink: node.nlink,
        rdev_major: node.rdev_major,
        rdev_minor: node.rdev_minor,
        volatile: false,
    }
}

/// The bytes of a node's data: a sparse file's data segments, not its holes.
fn data_len(node: &Node) -> u64 {
    match node.content.as_ref().and_then(|c| c.segments.as_ref()) {
        Some(segments) => segments.data_len(),
        None => node.size,
    }
}

fn not_a_dir() -> Error {
    Error::InvalidArgument("not a directory".into())
}

fn not_a_symlink() -> Error {
    Error::InvalidArgument("not a symlink".into())
}
