//! A snapshot as a read-only filesystem: the API `ls`, `cat`, `diff`, `restore`, FUSE and OCI
//! layers are built on. Directories are loaded one record at a time, on demand, and cached.

use std::io::Write;
use std::sync::Arc;

use super::node::{Kind, Node};
use super::record::{decode_dir, Dir};
use crate::error::{path_text, Error, Result};
use crate::object::ObjectSource;
use crate::snapshot::Snapshot;
use crate::store::Store;

pub struct Tree<'s> {
    store: &'s Store,
    root: Node,
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
        Ok(Tree { store: self, root })
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
        Tree { store, root }
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
                // Segments are in file order; find the first that ends after `offset`.
                let mut done = 0;
                let first = segs.partition_point(|(o, l)| o + l <= offset);
                let mut payload_pos = match first < segs.len() {
                    true => segs.data_start(first),
                    false => segs.data_len(),
                };
                let mut pos = offset;
                for &(o, l) in &segs[first..] {
                    if done == buf.len() {
                        break;
                    }
                    if pos < o {
                        let hole = ((o - pos) as usize).min(buf.len() - done);
                        buf[done..done + hole].fill(0);
                        done += hole;
                        pos += hole as u64;
                        if done == buf.len() {
                            break;
                        }
                    }
                    let within = pos - o;
                    let n = ((l - within) as usize).min(buf.len() - done);
                    self.read_payload(content, payload_pos + within, &mut buf[done..done + n])?;
                    done += n;
                    pos += n as u64;
                    payload_pos += l;
                }
                buf[done..].fill(0); // a trailing hole
                Ok(buf.len())
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
        let mut at = content.data_offset + offset;
        while done < buf.len() {
            let Some((entry, start)) = content.chunks.find(self.store, at)? else {
                return Err(Error::corrupt("file data ends before its size"));
            };
            let chunk = self.store.object(&entry.id)?;
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
        let (mut at, end) = (content.data_offset, content.data_offset + len);
        while at < end {
            let Some((entry, start)) = content.chunks.find(self.store, at)? else {
                return Err(Error::corrupt(format!(
                    "{}: file data ends before its size",
                    path_text(&node.name)
                )));
            };
            let chunk = self.store.object(&entry.id)?;
            let from = (at - start) as usize;
            let n = (chunk.len() - from).min((end - at) as usize);
            out.write_all(&chunk[from..from + n])
                .map_err(Error::Output)?;
            at += n as u64;
        }
        Ok(())
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
