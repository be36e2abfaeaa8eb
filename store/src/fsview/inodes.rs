//! The view's inode table. An inode's number is derived from its key (a node's name in its
//! parent directory, a hard-link group, a snapshot's root, a lineage), so the same path has
//! the same number for the life of the mount, as on a disk, however often the kernel forgets
//! it and looks it up again. The table holds an entry only while the kernel holds a lookup of
//! it (FUSE counts one for each LOOKUP and READDIRPLUS entry it is given, and sends FORGET
//! when it evicts the entry), so a mount that lives long and browses much holds what the
//! kernel still caches, not every node it ever showed. It also counts each snapshot's inodes:
//! a snapshot whose last one is dropped is one the kernel holds nothing of, which the view
//! can stop pinning.
//!
//! A walked tree leaves the kernel holding an inode per entry, so the table is kept lean: a
//! node is held encoded (`Held`), and a number's key is not stored beside it but derived
//! from it when the number is dropped.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::error::Result;
use crate::ids::SnapshotId;
use crate::snapshot::Snapshot;
use crate::tree::Node;

use super::ROOT_INO;

/// What the view shows at one inode.
#[derive(Clone)]
pub(super) enum Inode {
    /// All-snapshots view: the lineage names.
    Top,
    /// A lineage: its snapshots' short ids and `latest`.
    Lineage(String),
    /// `NAME/latest`, a symlink to the newest snapshot's id.
    Latest(String),
    /// A node inside a snapshot (its root included).
    Node {
        snap: Arc<Snapshot>,
        node: Held,
        /// The directory it was first found in (0 for a snapshot's root).
        parent: u64,
    },
}

/// A node as the table holds it: its encoding (as in a directory record), decoded when asked
/// for. A small file's node is about 70 bytes encoded and 400 decoded (the struct, its name and
/// its chunk list), and decoding one costs far less than the FUSE request that wants it. A
/// large one (a sparse file's map of many segments, many xattrs) is held decoded: decoding a
/// map of 100,000 segments for each 128 KiB read made `cp` of such a file take minutes.
#[derive(Clone)]
pub(super) enum Held {
    Encoded(Arc<[u8]>),
    Decoded(Arc<Node>),
}

/// Encodings past this are held decoded.
const HELD_DECODED_PAST: usize = 4096;

impl Held {
    pub fn new(node: &Node) -> Self {
        // Encoded into a buffer kept per thread, then copied once: growing a fresh vector
        // byte by byte cost more than the rest of handing out the number.
        thread_local!(static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) });
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            node.encode(buf);
            if buf.len() > HELD_DECODED_PAST {
                Held::Decoded(Arc::new(node.clone()))
            } else {
                Held::Encoded(Arc::from(buf.as_slice()))
            }
        })
    }

    pub fn node(&self) -> Result<Node> {
        match self {
            Held::Encoded(bytes) => Node::from_bytes(bytes),
            Held::Decoded(node) => Ok(Node::clone(node)),
        }
    }

    /// The node, shared rather than copied where it is held decoded: for reads.
    pub fn shared(&self) -> Result<Arc<Node>> {
        match self {
            Held::Encoded(bytes) => Ok(Arc::new(Node::from_bytes(bytes)?)),
            Held::Decoded(node) => Ok(node.clone()),
        }
    }
}

/// What an inode number stands for, so that the same thing gets the same number.
#[derive(Clone, Hash, PartialEq, Eq)]
pub(super) enum Key {
    Lineage(String),
    Latest(String),
    Root(SnapshotId),
    Child(u64, Vec<u8>),
    Hardlink(SnapshotId, u64),
}

impl Key {
    /// The key of `node`, found in directory `parent` of snapshot `snap`: the names of one
    /// hardlink group share the group's key.
    pub fn child(parent: u64, snap: SnapshotId, node: &Node) -> Key {
        if node.ino != 0 {
            Key::Hardlink(snap, node.ino)
        } else {
            Key::Child(parent, node.name.clone())
        }
    }

    /// The key `inode` was interned under (the root's is never asked for: it is never
    /// dropped). None only if its node no longer decodes, which the table's own encoding
    /// never gives.
    fn of(inode: &Inode) -> Option<Key> {
        match inode {
            Inode::Top => None,
            Inode::Lineage(l) => Some(Key::Lineage(l.clone())),
            Inode::Latest(l) => Some(Key::Latest(l.clone())),
            Inode::Node {
                snap, parent: 0, ..
            } => Some(Key::Root(snap.id)),
            Inode::Node { snap, node, parent } => {
                Some(Key::child(*parent, snap.id, &node.node().ok()?))
            }
        }
    }
}

/// The table's maps hash with foldhash, not SipHash: a `find` through a mount interns an
/// entry per name and looks it up again on each request, and SipHash took a sixth of the
/// mount's instructions. foldhash is seeded per map, so names chosen to collide cannot be
/// made in advance.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The hash numbers are derived with: fixed, so a key's number does not depend on the run.
/// Names made to collide under it (it is public) cost the colliding entries their stable
/// numbers, nothing else: a number held is never given to another key.
const NUMBERS: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6365_6c6c_6172);

struct Slot {
    inode: Inode,
    /// Lookups the kernel holds: counted when handed out by LOOKUP or READDIRPLUS, given back
    /// by FORGET.
    lookups: u64,
}

/// Numbers handed out without a lookup (plain READDIR, whose numbers the kernel only shows)
/// are kept, the newest this many, so a lookup soon after gets the number the listing showed.
const UNCOUNTED_MAX: usize = 16 * 1024;

pub(super) struct Inodes {
    slots: HashMap<u64, Slot>,
    by_key: HashMap<Key, u64>,
    /// Slots made without a lookup, oldest first (some may have been counted since).
    uncounted: VecDeque<u64>,
    /// Inodes of each snapshot (nodes below its root, the root included).
    per_snapshot: HashMap<SnapshotId, usize>,
    /// Snapshots whose last inode was dropped since `take_released`.
    released: Vec<SnapshotId>,
}

/// The snapshot an inode shows a node of.
fn snapshot_of(inode: &Inode) -> Option<SnapshotId> {
    match inode {
        Inode::Node { snap, .. } => Some(snap.id),
        _ => None,
    }
}

impl Inodes {
    pub fn new(root: Inode) -> Self {
        let mut slots = HashMap::default();
        // A single snapshot's root is never dropped, so neither is that snapshot.
        let per_snapshot = snapshot_of(&root).map(|id| (id, 1)).into_iter().collect();
        slots.insert(
            ROOT_INO,
            Slot {
                inode: root,
                lookups: 0,
            },
        );
        Inodes {
            slots,
            by_key: HashMap::default(),
            uncounted: VecDeque::new(),
            per_snapshot,
            released: Vec::new(),
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.slots.get(&ino).map(|s| &s.inode)
    }

    /// The number `key` has now, if the kernel holds a lookup of it (so it has an inode
    /// for it), without handing one out.
    pub fn find_held(&self, key: &Key) -> Option<u64> {
        let ino = *self.by_key.get(key)?;
        (self.slots.get(&ino)?.lookups > 0).then_some(ino)
    }

    /// How many inodes the table holds (the root included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The number for `key`, made by `make` on first sight, with one lookup counted if
    /// `counted` (it is being handed to the kernel in a LOOKUP or READDIRPLUS reply).
    pub fn intern(&mut self, key: Key, counted: bool, make: impl FnOnce() -> Inode) -> u64 {
        let held = self
            .by_key
            .get(&key)
            .copied()
            .filter(|ino| self.slots.contains_key(ino));
        let ino = match held {
            Some(ino) => ino,
            None => self.insert(key, make(), counted),
        };
        if counted {
            if let Some(slot) = self.slots.get_mut(&ino) {
                slot.lookups += 1;
            }
        }
        ino
    }

    fn insert(&mut self, key: Key, inode: Inode, counted: bool) -> u64 {
        let ino = self.free_number(&key);
        if let Some(id) = snapshot_of(&inode) {
            *self.per_snapshot.entry(id).or_default() += 1;
        }
        self.slots.insert(ino, Slot { inode, lookups: 0 });
        self.by_key.insert(key, ino);
        if !counted {
            self.uncounted.push_back(ino);
            while self.uncounted.len() > UNCOUNTED_MAX {
                let old = self.uncounted.pop_front().expect("over the bound");
                if self.slots.get(&old).is_some_and(|s| s.lookups == 0) {
                    self.remove(old);
                }
            }
        }
        ino
    }

    /// The number of `key`: a hash of it (the same in every run of this build), or, in the
    /// rare case that another key holds that number now, the next free one after it.
    fn free_number(&self, key: &Key) -> u64 {
        let mut ino = NUMBERS.hash_one(key);
        while ino <= ROOT_INO || self.slots.contains_key(&ino) {
            ino = ino.wrapping_add(1);
        }
        ino
    }

    /// The kernel gave back `n` lookups of `ino`: with none left, the number is dropped.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(slot) = self.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            self.remove(ino);
        }
    }

    fn remove(&mut self, ino: u64) {
        let Some(Slot { inode, .. }) = self.slots.remove(&ino) else {
            return;
        };
        // A key left behind (its node would not decode) leads nowhere: `intern` checks that
        // the number it finds is still held.
        if let Some(key) = Key::of(&inode) {
            if self.by_key.get(&key) == Some(&ino) {
                self.by_key.remove(&key);
            }
        }
        if let Some(id) = snapshot_of(&inode) {
            let left = self
                .per_snapshot
                .get_mut(&id)
                .expect("counted when inserted");
            *left -= 1;
            if *left == 0 {
                self.per_snapshot.remove(&id);
                self.released.push(id);
            }
        }
    }

    /// The snapshots whose last inode was dropped since the last call.
    pub fn take_released(&mut self) -> Vec<SnapshotId> {
        std::mem::take(&mut self.released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(name: &str) -> (Key, Inode) {
        (Key::Lineage(name.into()), Inode::Lineage(name.into()))
    }

    #[test]
    fn numbers_live_while_the_kernel_holds_lookups() {
        let mut t = Inodes::new(Inode::Top);
        let (k, i) = lineage("vm");
        let a = t.intern(k.clone(), true, || i.clone());
        assert_eq!(
            t.intern(k.clone(), true, || i.clone()),
            a,
            "same key, same number"
        );
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "one lookup is still held");
        t.forget(a, 1);
        assert!(t.get(a).is_none(), "all lookups given back");
        let b = t.intern(k, false, || i);
        assert_eq!(a, b, "a key forgotten and seen again has its number again");
        t.forget(ROOT_INO, 5);
        assert!(t.get(ROOT_INO).is_some(), "the root stays");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_dropped_node_takes_its_key_with_it() {
        let snap = Arc::new(Snapshot::bare(7, "vm", "2026-11-30T00:00:00Z"));
        let mut t = Inodes::new(Inode::Top);
        let root = t.intern(Key::Root(snap.id), true, || Inode::Node {
            snap: snap.clone(),
            node: Held::new(&Node::new(crate::tree::Kind::Dir)),
            parent: 0,
        });
        let mut file = Node::new(crate::tree::Kind::File);
        file.name = b"hosts".to_vec();
        let mut linked = file.clone();
        linked.name = b"a-link".to_vec();
        linked.ino = 42;
        let child = |t: &mut Inodes, node: &Node| {
            t.intern(Key::child(root, snap.id, node), true, || Inode::Node {
                snap: snap.clone(),
                node: Held::new(node),
                parent: root,
            })
        };
        let a = child(&mut t, &file);
        let b = child(&mut t, &linked);
        assert_eq!(
            t.get(a).map(|i| matches!(i, Inode::Node { node, .. }
            if node.node().unwrap() == file)),
            Some(true),
            "held as it was"
        );
        for (ino, node) in [(a, &file), (b, &linked)] {
            t.forget(ino, 1);
            assert!(t.find_held(&Key::child(root, snap.id, node)).is_none());
            assert!(t.by_key.values().all(|&i| i != ino), "its key went with it");
        }
        t.forget(root, 1);
        assert!(t.by_key.is_empty() && t.len() == 1, "only the top is left");
        assert_eq!(
            child(&mut t, &file),
            a,
            "a key seen again gets its number again"
        );
    }

    /// A key whose number another key holds takes the next free one; the root's is never
    /// given out.
    #[test]
    fn a_number_taken_goes_to_the_next_free_one() {
        let mut t = Inodes::new(Inode::Top);
        let (k, i) = lineage("vm");
        let own = NUMBERS.hash_one(&k);
        let (other, other_inode) = lineage("other");
        t.slots.insert(
            own,
            Slot {
                inode: other_inode,
                lookups: 1,
            },
        );
        t.by_key.insert(other, own);
        let got = t.intern(k, true, || i);
        assert_ne!(got, own);
        assert!(got > ROOT_INO && t.slots.contains_key(&own) && t.slots.contains_key(&got));
    }

    #[test]
    fn uncounted_numbers_are_bounded_and_counted_ones_survive_the_bound() {
        let mut t = Inodes::new(Inode::Top);
        let (k, i) = lineage("kept");
        let kept = t.intern(k.clone(), false, || i.clone());
        t.intern(k, true, || i);
        for n in 0..UNCOUNTED_MAX + 100 {
            let (k, i) = lineage(&format!("l{n}"));
            t.intern(k, false, || i);
        }
        assert!(t.len() <= UNCOUNTED_MAX + 2, "{} inodes", t.len());
        assert!(
            t.get(kept).is_some(),
            "a counted number is never dropped for the bound"
        );
        let (k, i) = lineage("l0");
        let again = t.intern(k, false, || i);
        assert!(t.get(again).is_some(), "an evicted key is interned again");
    }
}
