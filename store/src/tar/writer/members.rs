//! Writing members described by tree nodes rather than read from a directory: OCI layers are
//! synthesized from a snapshot's tree with it, in the same dialect `write_dir` uses (see the
//! module documentation), so a layer of an unchanged tree is the same bytes every time.

use std::io::{self, Write};

use super::header::{
    Entry, Timestamp, BLOCK_DEVICE, CHAR_DEVICE, FIFO, HARDLINK, REGULAR, SYMLINK,
};
use super::member_name;
use super::output::Out;
use super::sparse::sparse_map;
use super::xattrs::xattr_key;
use crate::error::{path_text, Error, Result};
use crate::tar::header::{BLOCK, DIRECTORY};
use crate::tree::{Kind, Node};

/// A tar stream written member by member. Paths are relative to the root, without a leading
/// `./` or a trailing `/` (the root is the empty path).
pub struct MemberWriter<'a> {
    out: Out<'a>,
    /// Names as `./path` (a root filesystem's layer) or as they are (files of an archive).
    dot_slash: bool,
}

impl Entry {
    fn for_node(name: Vec<u8>, typeflag: u8, node: &Node) -> Entry {
        let mut entry = Entry {
            name,
            typeflag,
            mode: node.mode & 0o7777,
            uid: node.uid,
            gid: node.gid,
            mtime: Timestamp {
                secs: node.mtime,
                nsec: node.mtime_nsec.min(999_999_999),
            },
            size: 0,
            link: Vec::new(),
            dev: (0, 0),
            pax: Default::default(),
            sparse_name: None,
        };
        for (name, value) in &node.xattrs {
            entry.pax.insert(xattr_key(name), value.clone());
        }
        entry
    }
}

/// A sparse file's map: as the payload's first bytes, and as (offset, length) segments.
pub struct SparseMap {
    pub encoded: Vec<u8>,
    pub segments: Vec<(u64, u64)>,
}

/// A file's data as the tar payload holds it: a sparse file's map, and how many data bytes
/// follow it (its segments back to back).
pub struct Payload {
    pub map: Option<SparseMap>,
    pub data_len: u64,
}

impl Payload {
    pub fn of(node: &Node) -> Payload {
        match node.content.as_ref().and_then(|c| c.segments.as_ref()) {
            None => Payload {
                map: None,
                data_len: node.size,
            },
            Some(segments) => {
                let mut segments = segments.to_vec();
                // Like `write_dir`, the map always reaches the file's size, so every reader
                // gives the file its full length.
                if segments.last().is_none_or(|&(o, l)| o + l < node.size) {
                    segments.push((node.size, 0));
                }
                let data_len = segments.iter().map(|&(_, l)| l).sum();
                Payload {
                    map: Some(SparseMap {
                        encoded: sparse_map(&segments),
                        segments,
                    }),
                    data_len,
                }
            }
        }
    }
}

impl<'a> MemberWriter<'a> {
    /// Members named `./path`, as `tar -C ROOT .` names them.
    pub fn new(out: &'a mut dyn Write) -> MemberWriter<'a> {
        MemberWriter {
            out: Out::new(out),
            dot_slash: true,
        }
    }

    /// Members named `path`, for archives of files rather than of a root.
    pub fn plain(out: &'a mut dyn Write) -> MemberWriter<'a> {
        MemberWriter {
            out: Out::new(out),
            dot_slash: false,
        }
    }

    fn name(&self, rel: &[u8], dir: bool) -> Vec<u8> {
        if self.dot_slash {
            return member_name(rel, dir);
        }
        let mut name = rel.to_vec();
        if dir {
            name.push(b'/');
        }
        name
    }

    /// A member for `node` at `rel`. For a regular file, `data` writes its data bytes (a
    /// sparse file's segments back to back; see [`Payload`]); it must write exactly that many.
    pub fn node(
        &mut self,
        rel: &[u8],
        node: &Node,
        data: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let typeflag = match node.kind {
            Kind::File => REGULAR,
            Kind::Dir => DIRECTORY,
            Kind::Symlink => SYMLINK,
            Kind::Char => CHAR_DEVICE,
            Kind::Block => BLOCK_DEVICE,
            Kind::Fifo => FIFO,
        };
        let mut entry = Entry::for_node(self.name(rel, node.is_dir()), typeflag, node);
        match node.kind {
            Kind::Symlink => entry.link = node.link.clone(),
            Kind::Char | Kind::Block => entry.dev = (node.rdev_major, node.rdev_minor),
            _ => {}
        }
        if node.kind != Kind::File {
            return self.header(&entry, rel);
        }
        let payload = Payload::of(node);
        match &payload.map {
            Some(map) => entry.make_sparse(&map.encoded, &map.segments, node.size),
            None => entry.size = node.size,
        }
        self.header(&entry, rel)?;
        if let Some(map) = &payload.map {
            self.out.write(&map.encoded)?;
        }
        let before = self.out.written();
        data(&mut self.out)?;
        let wrote = self.out.written() - before;
        if wrote != payload.data_len {
            return Err(Error::corrupt(format!(
                "/{}: its data is {wrote} bytes, but its node says {}",
                path_text(rel),
                payload.data_len
            )));
        }
        self.out.pad_to(BLOCK as u64)
    }

    /// A hard link at `rel` to the member written earlier at `target` (same inode as `node`).
    pub fn hardlink(&mut self, rel: &[u8], node: &Node, target: &[u8]) -> Result<()> {
        let mut entry = Entry::for_node(self.name(rel, false), HARDLINK, node);
        entry.link = self.name(target, false);
        self.header(&entry, rel)
    }

    /// An empty regular file owned by root, mode 0644, time 0: OCI whiteouts are these.
    pub fn empty_file(&mut self, rel: &[u8]) -> Result<()> {
        let mut node = Node::new(Kind::File);
        node.mode = 0o644;
        self.header(&Entry::for_node(self.name(rel, false), REGULAR, &node), rel)
    }

    fn header(&mut self, entry: &Entry, rel: &[u8]) -> Result<()> {
        let headers = entry
            .encode()
            .map_err(|why| Error::InvalidArgument(format!("/{}: {why}", path_text(rel))))?;
        self.out.write(&headers)
    }

    /// The end-of-archive marker and padding; flushes.
    pub fn finish(self) -> Result<()> {
        self.out.finish()
    }
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Out::write(self, buf).map_err(|e| match e {
            Error::Output(e) => e,
            e => io::Error::other(e.to_string()),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
