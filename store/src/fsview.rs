//! A filesystem view with inode numbers over one snapshot or over every snapshot of the store
//! (`NAME/ID/...` plus `NAME/latest`): what a FUSE adapter (or any other filesystem front end)
//! needs, with no FUSE types in it.
//!
//! Inode numbers are handed out as nodes are looked up and stay fixed for the life of the
//! view; the names of one hardlink group in one snapshot share one inode. Snapshots are
//! immutable, so everything below a snapshot's root may be cached by the kernel for as long as
//! it likes; the lineage directories above them are read from the index on every call, so
//! snapshots taken or removed while mounted appear and vanish.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::gc::ReadLease;
use crate::ids::SnapshotId;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::{Kind, Node, Tree};

pub const ROOT_INO: u64 = 1;
const LATEST: &[u8] = b"latest";

/// What the view shows at one inode.
#[derive(Clone)]
enum Inode {
    /// All-snapshots view: the lineage names.
    Top,
    /// A lineage: its snapshots' short ids and `latest`.
    Lineage(String),
    /// `NAME/latest`, a symlink to the newest snapshot's id.
    Latest(String),
    /// A node inside a snapshot (its root included).
    Node {
        snap: Arc<Snapshot>,
        node: Arc<Node>,
    },
}

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Lineage(String),
    Latest(String),
    Root(SnapshotId),
    Child(u64, Vec<u8>),
    Hardlink(SnapshotId, u64),
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u64,
    pub rdev_major: u64,
    pub rdev_minor: u64,
    /// True for the lineage directories, whose contents change while mounted.
    pub volatile: bool,
}

#[derive(Default)]
struct Inodes {
    by_ino: Vec<Inode>,
    by_key: HashMap<Key, u64>,
}

pub struct FsView {
    /// Every snapshot the view shows is pinned through it (FORMAT §15.4): forgotten while
    /// shown, it stays readable until the view is dropped.
    lease: ReadLease,
    inodes: RwLock<Inodes>,
}

impl FsView {
    /// One snapshot's tree at the root (`snap` pinned by `lease` already, or now).
    pub fn snapshot(lease: ReadLease, snap: Snapshot) -> Result<Self> {
        lease.pin(&snap.id)?;
        let node = lease.store().tree(&snap)?.root().clone();
        Ok(Self::with_root(
            lease,
            Inode::Node {
                snap: Arc::new(snap),
                node: Arc::new(node),
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
            inodes: RwLock::new(Inodes {
                by_ino: vec![root],
                by_key: HashMap::new(),
            }),
        }
    }

    fn store(&self) -> &Store {
        self.lease.store()
    }

    /// The tree of `snap`, about to be read below its root: pinned first (a no-op after the
    /// first time), so it stays readable until the view is dropped even if it is forgotten.
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
        ino.checked_sub(1)
            .and_then(|i| inodes.by_ino.get(i as usize))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no inode {ino}")))
    }

    /// The inode for `key`, allocated on first sight.
    fn intern(&self, key: Key, make: impl FnOnce() -> Inode) -> u64 {
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = inodes.by_key.get(&key) {
            return ino;
        }
        inodes.by_ino.push(make());
        let ino = inodes.by_ino.len() as u64;
        inodes.by_key.insert(key, ino);
        ino
    }

    fn lineages(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .store()
            .list(None)?
            .into_iter()
            .map(|s| s.name)
            .collect())
    }

    fn child_ino(&self, parent: u64, snap: &Arc<Snapshot>, node: &Node) -> u64 {
        let key = if node.ino != 0 {
            Key::Hardlink(snap.id, node.ino)
        } else {
            Key::Child(parent, node.name.clone())
        };
        self.intern(key, || Inode::Node {
            snap: snap.clone(),
            node: Arc::new(node.clone()),
        })
    }

    fn snapshot_ino(&self, snap: Snapshot) -> Result<u64> {
        let node = self.store().tree(&snap)?.root().clone();
        let id = snap.id;
        Ok(self.intern(Key::Root(id), move || Inode::Node {
            snap: Arc::new(snap),
            node: Arc::new(node),
        }))
    }

    /// The entry `name` in directory `parent`, if there is one.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Attr>> {
        let ino = match self.get(parent)? {
            Inode::Top => {
                let Ok(name) = std::str::from_utf8(name) else {
                    return Ok(None);
                };
                if !self.lineages()?.contains(name) {
                    return Ok(None);
                }
                self.intern(Key::Lineage(name.to_string()), || {
                    Inode::Lineage(name.to_string())
                })
            }
            Inode::Lineage(lineage) => {
                if name == LATEST {
                    self.intern(Key::Latest(lineage.clone()), || Inode::Latest(lineage))
                } else {
                    let found = self
                        .store()
                        .list(Some(&lineage))?
                        .into_iter()
                        .find(|s| s.short_id().as_bytes() == name);
                    match found {
                        Some(s) => self.snapshot_ino(s)?,
                        None => return Ok(None),
                    }
                }
            }
            Inode::Latest(_) => return Err(not_a_dir()),
            Inode::Node { snap, node } => {
                let tree = self.enter(&snap)?;
                match tree.lookup(&node, name)? {
                    Some(child) => self.child_ino(parent, &snap, &child),
                    None => return Ok(None),
                }
            }
        };
        self.getattr(ino).map(Some)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let dir = |volatile| Attr {
            ino,
            kind: Kind::Dir,
            mode: 0o555,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            nlink: 2,
            rdev_major: 0,
            rdev_minor: 0,
            volatile,
        };
        Ok(match self.get(ino)? {
            Inode::Top | Inode::Lineage(_) => dir(true),
            Inode::Latest(lineage) => Attr {
                kind: Kind::Symlink,
                mode: 0o777,
                size: self.latest_target(&lineage)?.len() as u64,
                nlink: 1,
                ..dir(true)
            },
            Inode::Node { node, .. } => Attr {
                ino,
                kind: node.kind,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                size: node.size,
                mtime: node.mtime,
                mtime_nsec: node.mtime_nsec,
                nlink: node.nlink,
                rdev_major: node.rdev_major,
                rdev_minor: node.rdev_minor,
                volatile: false,
            },
        })
    }

    fn latest_target(&self, lineage: &str) -> Result<Vec<u8>> {
        Ok(self
            .store()
            .latest(lineage, 0)?
            .map(|s| s.short_id().into_bytes())
            .unwrap_or_default())
    }

    /// A directory's entries (without `.` and `..`): inode, kind, name.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, Vec<u8>)>> {
        match self.get(ino)? {
            Inode::Top => Ok(self
                .lineages()?
                .into_iter()
                .map(|name| {
                    let n = name.clone();
                    let ino = self.intern(Key::Lineage(name.clone()), move || Inode::Lineage(n));
                    (ino, Kind::Dir, name.into_bytes())
                })
                .collect()),
            Inode::Lineage(lineage) => {
                let mut out = Vec::new();
                for s in self.store().list(Some(&lineage))? {
                    let name = s.short_id().into_bytes();
                    out.push((self.snapshot_ino(s)?, Kind::Dir, name));
                }
                let l = lineage.clone();
                let latest = self.intern(Key::Latest(lineage), move || Inode::Latest(l));
                out.push((latest, Kind::Symlink, LATEST.to_vec()));
                Ok(out)
            }
            Inode::Latest(_) => Err(not_a_dir()),
            Inode::Node { snap, node } => {
                let tree = self.enter(&snap)?;
                Ok(tree
                    .readdir(&node)?
                    .iter()
                    .map(|c| (self.child_ino(ino, &snap, c), c.kind, c.name.clone()))
                    .collect())
            }
        }
    }

    /// Up to `size` bytes of a file at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let Inode::Node { snap, node } = self.get(ino)? else {
            return Err(Error::InvalidArgument("not a file".into()));
        };
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

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.get(ino)? {
            Inode::Latest(lineage) => self.latest_target(&lineage),
            Inode::Node { node, .. } if node.kind == Kind::Symlink => Ok(node.link.clone()),
            _ => Err(Error::InvalidArgument("not a symlink".into())),
        }
    }

    pub fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(match self.get(ino)? {
            Inode::Node { node, .. } => node.xattrs.clone(),
            _ => Vec::new(),
        })
    }
}

fn not_a_dir() -> Error {
    Error::InvalidArgument("not a directory".into())
}
