//! A snapshot as a read-only filesystem: the API `ls`, `cat`, `diff`, `restore`, FUSE and OCI
//! layers are built on. Directories are loaded one record at a time, on demand, and cached.

use std::io::Write;
use std::sync::Arc;

use super::build::MAX_DEPTH as MAX_INGEST_DEPTH;
use super::node::{Kind, Node};
use super::record::{decode_dir, Dir};
use crate::error::{path_text, Error, Result};
use crate::object::ObjectSource;
use crate::snapshot::Snapshot;
use crate::store::Store;

pub struct Tree<'s> {
    store: &'s Store,
    root: Node,
    /// How many members the snapshot's stream had, when known: what bounds its tree's size.
    members: Option<u64>,
}

impl Store {
    /// The browsable tree of a snapshot.
    pub fn tree(&self, snap: &Snapshot) -> Result<Tree<'_>> {
        let root = snap.tree.clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "snapshot {} was made before cellar kept trees; it can only be exported",
                snap.short_id()
            ))
        })?;
        // Counted since the first trees; a zero from elsewhere bounds nothing.
        let members = Some(snap.members).filter(|&m| m > 0);
        Ok(Tree {
            store: self,
            root,
            members,
        })
    }
}

/// A snapshot path as `resolve` reads it: the components without empty and `.` ones, joined
/// by single slashes, without the leading `/` (`..` is kept, for `resolve` to refuse). Whatever
/// echoes a user's path prints this, so `/./etc//motd` and `etc/motd` show the same.
pub fn normalize_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    normalize_path_into(path, &mut out);
    out
}

/// [`normalize_path`] into `out` (cleared first), for a caller that normalizes path after
/// path with one buffer.
pub(crate) fn normalize_path_into(path: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for c in path.split(|&b| b == b'/') {
        if !c.is_empty() && c != b"." {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c);
        }
    }
}

impl<'s> Tree<'s> {
    /// The tree below a root node of this store's.
    pub(crate) fn from_root(store: &'s Store, root: Node) -> Self {
        Tree {
            store,
            root,
            members: None,
        }
    }

    /// The same tree, bounded as a snapshot of `members` members bounds it.
    #[cfg(test)]
    pub(crate) fn with_members(self, members: u64) -> Self {
        Tree {
            members: Some(members),
            ..self
        }
    }

    /// Count `n` more nodes into a whole-tree walk's `visited`. Each member of the stream
    /// makes one node, and at most [`MAX_INGEST_DEPTH`] directories above it that the stream
    /// does not name: a walk past that is going round and round records a crafted store
    /// shares between many names (a few kilobytes of them can name 10^15 paths), and is
    /// refused as damage rather than left to run for ever.
    pub(crate) fn count(&self, visited: &mut u64, n: usize) -> Result<()> {
        *visited = visited.saturating_add(n as u64);
        let Some(members) = self.members else {
            return Ok(());
        };
        let most = members.saturating_mul(MAX_INGEST_DEPTH as u64 + 1);
        if *visited > most {
            return Err(Error::corrupt(format!(
                "the tree holds over {most} entries, more than its stream's {members} members \
                 can make: its directory records are damaged or crafted"
            )));
        }
        Ok(())
    }

    pub(crate) fn store(&self) -> &'s Store {
        self.store
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// A directory's nodes, sorted by name.
    pub fn readdir(&self, dir: &Node) -> Result<Arc<Dir>> {
        let Some(id) = dir.child else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory",
                path_text(&dir.name)
            )));
        };
        self.store
            .dir_record(&id, || decode_dir(&self.store.object(&id)?))
    }

    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        let nodes = self.readdir(dir)?;
        Ok(nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| nodes[i].clone()))
    }

    /// The node at `path` (from the root; leading `/` optional). Symlinks are never followed:
    /// a path through one (or through a file) is an error, as is a path that is not there.
    pub fn resolve(&self, path: &[u8]) -> Result<Node> {
        let mut node = self.root.clone();
        let mut walked: Vec<u8> = Vec::new();
        for c in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if c == b".." {
                return Err(Error::InvalidArgument(format!(
                    "/{}: '..' is not allowed in snapshot paths",
                    path_text(&normalize_path(path))
                )));
            }
            if !node.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "/{}: not a directory (it is a {})",
                    path_text(&walked),
                    node.kind.describe()
                )));
            }
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(c);
            node = self.lookup(&node, c)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "/{}: no such file or directory",
                    path_text(&walked)
                ))
            })?;
        }
        // `f/` (or `f/.`) names a directory, as it does to open(2): ENOTDIR for anything else.
        let names_a_dir = path.ends_with(b"/") || path.ends_with(b"/.") || path == b".";
        if !walked.is_empty() && names_a_dir && !node.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "/{}/: not a directory (it is a {})",
                path_text(&walked),
                node.kind.describe()
            )));
        }
        Ok(node)
    }

    pub fn readlink<'n>(&self, node: &'n Node) -> Result<&'n [u8]> {
        match node.kind {
            Kind::Symlink => Ok(&node.link),
            k => Err(Error::InvalidArgument(format!(
                "{} is a {}, not a symlink",
                path_text(&node.name),
                k.describe()
            ))),
        }
    }

    pub fn getxattr<'n>(&self, node: &'n Node, name: &[u8]) -> Option<&'n [u8]> {
        node.xattrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn listxattr<'n>(&self, node: &'n Node) -> impl Iterator<Item = &'n [u8]> {
        node.xattrs.iter().map(|(k, _)| k.as_slice())
    }

    /// Read file bytes at `offset`; returns how many were read (0 at the end). Finds the chunk
    /// by binary search over the chunk list's lengths; holes of sparse files read as zeros.
    pub fn read_at(&self, node: &Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let content = file_content(node)?;
        if offset >= node.size || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min((node.size - offset) as usize);
        let buf = &mut buf[..want];
        match &content.segments {
            None => self.read_payload(content, offset, buf),
            Some(segs) => {
                // Segments are in file order; find the first that ends after `offset`. Where
                // each piece of data goes in `buf`: (at, len), back to back in the payload.
                // Saturating: a damaged map's segment past 2^64 is read as reaching the end.
                let first = segs.partition_point(|(o, l)| o.saturating_add(*l) <= offset);
                let end = offset + want as u64;
                let mut places = Vec::new();
                for &(o, l) in segs[first..].iter().take_while(|(o, _)| *o < end) {
                    let from = o.max(offset);
                    let to = o.saturating_add(l).min(end);
                    places.push(((from - offset) as usize, (to - from) as usize));
                }
                buf.fill(0);
                let Some(&(at, n)) = places.first() else {
                    return Ok(want); // all hole
                };
                let start = segs.data_start(first) + (offset + at as u64 - segs[first].0);
                if places.len() == 1 {
                    self.read_payload(content, start, &mut buf[at..at + n])?;
                    return Ok(want);
                }
                // The data is read in one go, so that a chunk holding many small segments
                // is fetched and checked once per read, not once per segment.
                let mut data = vec![0u8; places.iter().map(|&(_, n)| n).sum()];
                self.read_payload(content, start, &mut data)?;
                let mut taken = 0;
                for (at, n) in places {
                    buf[at..at + n].copy_from_slice(&data[taken..taken + n]);
                    taken += n;
                }
                Ok(want)
            }
        }
    }

    /// Fill `buf` from the payload's data, starting `offset` bytes into the data.
    fn read_payload(
        &self,
        content: &super::node::Content,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let mut done = 0;
        let mut at = past(content.data_offset, offset)?;
        while done < buf.len() {
            let Some((entry, start)) = content.chunks.find(self.store, at)? else {
                return Err(Error::corrupt("file data ends before its size"));
            };
            let chunk = self.chunk(&entry)?;
            let from = (at - start) as usize;
            let n = (chunk.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&chunk[from..from + n]);
            done += n;
            at += n as u64;
        }
        Ok(done)
    }

    /// Stream a file's data as its tar payload holds it to `out`: for a sparse file, only its
    /// data segments, back to back (holes are not written). Every chunk is checked against its
    /// id on the way.
    pub fn write_data(&self, node: &Node, out: &mut dyn Write) -> Result<()> {
        let content = file_content(node)?;
        let len = match &content.segments {
            Some(segs) => segs.data_len(),
            None => node.size,
        };
        let (mut at, end) = (content.data_offset, past(content.data_offset, len)?);
        while at < end {
            let Some((entry, start)) = content.chunks.find(self.store, at)? else {
                return Err(Error::corrupt(format!(
                    "{}: file data ends before its size",
                    path_text(&node.name)
                )));
            };
            let chunk = self.chunk(&entry)?;
            let from = (at - start) as usize;
            let n = (chunk.len() - from).min((end - at) as usize);
            out.write_all(&chunk[from..from + n])
                .map_err(Error::Output)?;
            at += n as u64;
        }
        Ok(())
    }

    /// The chunk `entry` names, as long as the entry says: a node whose lengths disagree
    /// with its chunks (damaged, or made so) would read other bytes than were stored, or
    /// none at all and loop.
    fn chunk(&self, entry: &crate::list::Entry) -> Result<crate::object::Object> {
        let chunk = self.store.object(&entry.id)?;
        if chunk.len() as u64 != entry.len || chunk.is_empty() {
            return Err(Error::corrupt(format!(
                "chunk {} is {} bytes, but the file's chunk list says {}",
                entry.id.short(),
                chunk.len(),
                entry.len
            )));
        }
        Ok(chunk)
    }

    /// Stream a whole file to `out`.
    pub fn cat(&self, node: &Node, out: &mut dyn Write) -> Result<()> {
        file_content(node)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        loop {
            let n = self.read_at(node, offset, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(Error::Output)?;
            offset += n as u64;
        }
    }
}

/// `base + by`, or damage: offsets come from the node, which may be wrong.
fn past(base: u64, by: u64) -> Result<u64> {
    base.checked_add(by)
        .ok_or_else(|| Error::corrupt("a file's data offset runs past 2^64 bytes"))
}

fn file_content(node: &Node) -> Result<&super::node::Content> {
    match (&node.kind, &node.content) {
        (Kind::File, Some(c)) => Ok(c),
        (Kind::Symlink, _) => Err(Error::InvalidArgument(format!(
            "{} is a symlink to {}",
            path_text(&node.name),
            path_text(&node.link)
        ))),
        (k, _) => Err(Error::InvalidArgument(format!(
            "{} is a {}, not a file",
            path_text(&node.name),
            k.describe()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use crate::fuzzing::xorshift;
    use crate::ingest::{IngestInput, IngestOptions};
    use crate::tree::Kind;
    use crate::Store;

    /// A store in `dir` holding the snapshot of `stream`.
    fn stored(dir: &std::path::Path, stream: Vec<u8>) -> (Store, crate::Snapshot) {
        let store = Store::create(&dir.join("store")).unwrap();
        let report = store
            .ingest(
                IngestInput::stream(Cursor::new(stream)),
                IngestOptions::new("vm"),
                || Ok(()),
            )
            .unwrap();
        (store, report.snapshot)
    }

    /// A sparse file of many small data segments (a few to a chunk), from GNU tar, read at
    /// any offset and length gives the file's bytes: holes as zeros, data where it was.
    #[test]
    fn reads_across_many_small_segments_give_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let path = src.join("holey");
        let file = std::fs::File::create(&path).unwrap();
        let mut seed = 7;
        // A block of data every other 4 KiB block, and a hole at the end.
        for i in 0..600u64 {
            let data: Vec<u8> = (0..100).map(|_| xorshift(&mut seed) as u8).collect();
            std::os::unix::fs::FileExt::write_at(&file, &data, i * 8192 + (i % 7) * 11).unwrap();
        }
        file.set_len(600 * 8192 + 100_000).unwrap();
        let want = std::fs::read(&path).unwrap();
        let out = std::process::Command::new("tar")
            .args(["--format=posix", "--sparse", "-cf", "-", "-C"])
            .arg(&src)
            .arg("holey")
            .output()
            .expect("run tar");
        assert!(out.status.success());
        let (store, snapshot) = stored(dir.path(), out.stdout);
        let tree = store.tree(&snapshot).unwrap();
        let node = tree.resolve(b"/holey").unwrap();
        assert_eq!(node.kind, Kind::File);
        let segments = node
            .content
            .as_ref()
            .unwrap()
            .segments
            .as_ref()
            .map(|s| s.len());
        assert!(segments.unwrap_or(0) >= 600, "stored sparse: {segments:?}");
        for _ in 0..300 {
            let offset = xorshift(&mut seed) % want.len() as u64;
            let len = (xorshift(&mut seed) % (200 << 10)) as usize;
            let mut buf = vec![0xaa; len];
            let n = tree.read_at(&node, offset, &mut buf).unwrap();
            let end = (offset as usize + len).min(want.len());
            assert_eq!(n, end - offset as usize);
            assert!(
                buf[..n] == want[offset as usize..end],
                "at {offset}, {len} bytes"
            );
        }
    }

    /// A chunk list whose lengths disagree with its chunks (a damaged or crafted node) is
    /// damage to every reader: it read other bytes, or looped for ever on a chunk too short.
    #[test]
    fn a_chunk_list_longer_or_shorter_than_its_chunks_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"hello\n").unwrap();
        let out = std::process::Command::new("tar")
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(&src)
            .arg("f")
            .output()
            .expect("run tar");
        let (store, snapshot) = stored(dir.path(), out.stdout);
        let tree = store.tree(&snapshot).unwrap();
        let node = tree.resolve(b"/f").unwrap();
        for claimed in [100, 3] {
            let mut lying = node.clone();
            lying.size = claimed;
            let content = lying.content.as_mut().unwrap();
            let crate::list::ListRef::Inline(entries) = &mut content.chunks else {
                panic!("one small chunk is listed inline");
            };
            entries[0].len = claimed;
            let mut buf = vec![0; 200];
            let err = tree.read_at(&lying, 0, &mut buf).unwrap_err();
            assert!(err.to_string().contains("chunk list says"), "{err}");
            let err = tree.write_data(&lying, &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("chunk list says"), "{err}");
        }
    }
}
