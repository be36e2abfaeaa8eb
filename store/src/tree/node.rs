//! A tree node: one name in a directory, as its directory record (`record.rs`) holds it.

use crate::encoding::{put_bytes, put_varint, Decoder};
use crate::error::{path_text, Error, Result};
use crate::ids::ChunkId;
use crate::list::ListRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    Char = 3,
    Block = 4,
    Fifo = 5,
}

impl Kind {
    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::Char,
            4 => Kind::Block,
            5 => Kind::Fifo,
            k => return Err(Error::corrupt(format!("unknown node kind {k}"))),
        })
    }

    /// The short name `ls --json` gives as `type` (a contract: see the README).
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
        }
    }

    /// The kind spelled out, for messages ("/dev/null: is a character device").
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
        }
    }
}

/// Where a regular file's bytes are: its payload's chunks, and for sparse files the map of
/// data segments (holes read as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub chunks: ListRef,
    /// Offset of the first data byte in the payload (a PAX 1.0 sparse map precedes it).
    pub data_offset: u64,
    /// Sparse files: (offset in the file, length) of each data segment, in order.
    pub segments: Option<Segments>,
}

/// A sparse file's data segments, (offset in the file, length) in file order, with where each
/// one's bytes start in the payload's data, summed once when made: a read anywhere in a file
/// of a million segments finds its place by binary search, not by adding up the lengths
/// before it on every read.
#[derive(Debug, Clone, Default)]
pub struct Segments {
    map: Vec<(u64, u64)>,
    starts: Vec<u64>,
}

impl Segments {
    pub fn new(map: Vec<(u64, u64)>) -> Self {
        let mut at = 0u64;
        let starts = map
            .iter()
            .map(|&(_, len)| {
                let start = at;
                at = at.saturating_add(len);
                start
            })
            .collect();
        Segments { map, starts }
    }

    /// Where segment `i`'s bytes start in the payload's data.
    pub fn data_start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// The data's length: every segment's.
    pub fn data_len(&self) -> u64 {
        match (self.starts.last(), self.map.last()) {
            (Some(start), Some(&(_, len))) => start.saturating_add(len),
            _ => 0,
        }
    }

    fn footprint(&self) -> usize {
        self.map.capacity() * 16 + self.starts.capacity() * 8
    }
}

impl std::ops::Deref for Segments {
    type Target = [(u64, u64)];

    fn deref(&self) -> &[(u64, u64)] {
        &self.map
    }
}

/// Equal maps: the starts follow from them.
impl PartialEq for Segments {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Eq for Segments {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Files: the (expanded) size; symlinks: the target's length; others 0.
    pub size: u64,
    pub nlink: u64,
    /// Hardlink group: names sharing one inode share a nonzero `ino`.
    pub ino: u64,
    pub link: Vec<u8>,
    pub rdev_major: u64,
    pub rdev_minor: u64,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub content: Option<Content>,
    /// Directories: their record.
    pub child: Option<ChunkId>,
}

impl Node {
    pub fn new(kind: Kind) -> Self {
        Node {
            name: Vec::new(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            nlink: 1,
            ino: 0,
            link: Vec::new(),
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            content: None,
            child: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.name);
        out.push(self.kind as u8);
        put_varint(out, self.mode as u64);
        put_varint(out, self.uid);
        put_varint(out, self.gid);
        put_varint(out, zigzag(self.mtime));
        put_varint(out, self.mtime_nsec as u64);
        put_varint(out, self.size);
        put_varint(out, self.nlink);
        put_varint(out, self.ino);
        put_bytes(out, &self.link);
        put_varint(out, self.rdev_major);
        put_varint(out, self.rdev_minor);
        put_varint(out, self.xattrs.len() as u64);
        for (k, v) in &self.xattrs {
            put_bytes(out, k);
            put_bytes(out, v);
        }
        match &self.content {
            None => out.push(0),
            Some(c) => {
                out.push(if c.segments.is_some() { 2 } else { 1 });
                c.chunks.encode(out);
                if let Some(segs) = &c.segments {
                    put_varint(out, c.data_offset);
                    put_varint(out, segs.len() as u64);
                    for &(o, l) in segs.iter() {
                        put_varint(out, o);
                        put_varint(out, l);
                    }
                }
            }
        }
        match &self.child {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.0);
            }
        }
    }

    pub fn decode(d: &mut Decoder) -> Result<Self> {
        let mut n = Node {
            name: d.bytes()?.to_vec(),
            kind: Kind::from_u8(d.u8()?)?,
            mode: d.varint()? as u32,
            uid: d.varint()?,
            gid: d.varint()?,
            mtime: unzigzag(d.varint()?),
            mtime_nsec: d.varint()? as u32,
            size: d.varint()?,
            nlink: d.varint()?,
            ino: d.varint()?,
            link: d.bytes()?.to_vec(),
            rdev_major: d.varint()?,
            rdev_minor: d.varint()?,
            xattrs: Vec::new(),
            content: None,
            child: None,
        };
        let count = d.varint()?;
        for _ in 0..count {
            n.xattrs.push((d.bytes()?.to_vec(), d.bytes()?.to_vec()));
        }
        n.content = match d.u8()? {
            0 => None,
            tag @ (1 | 2) => {
                let chunks = ListRef::decode(d)?;
                let (data_offset, segments) = if tag == 2 {
                    let off = d.varint()?;
                    let count = d.varint()?;
                    let mut segs = Vec::with_capacity(count.min(1 << 16) as usize);
                    for _ in 0..count {
                        segs.push((d.varint()?, d.varint()?));
                    }
                    (off, Some(Segments::new(segs)))
                } else {
                    (0, None)
                };
                Some(Content {
                    chunks,
                    data_offset,
                    segments,
                })
            }
            t => return Err(Error::corrupt(format!("unknown content tag {t}"))),
        };
        n.child = match d.u8()? {
            0 => None,
            1 => Some(d.chunk_id()?),
            t => return Err(Error::corrupt(format!("unknown child tag {t}"))),
        };
        n.check_content()?;
        Ok(n)
    }

    /// What every reader relies on and the ingest guarantees, checked once when a node is
    /// decoded so that a damaged or crafted one is refused as damage rather than read out of
    /// bounds, past its chunks, or into an arithmetic overflow (FORMAT §6.1): a file's chunks
    /// hold its bytes (at least a plain file's size; exactly a sparse file's map, then its data
    /// segments), and the segments are in file order, apart, within the file.
    fn check_content(&self) -> Result<()> {
        let Some(c) = &self.content else {
            return Ok(());
        };
        let bad =
            |what: String| Error::corrupt(format!("tree node {:?}: {what}", path_text(&self.name)));
        let total = c.chunks.total_len();
        let Some(segments) = &c.segments else {
            // The file is the first `size` bytes of its chunks (FORMAT §6.1).
            if total < self.size {
                return Err(bad(format!(
                    "its chunks hold {total} bytes, but its size is {}",
                    self.size
                )));
            }
            return Ok(());
        };
        let mut end_of_previous = 0;
        for (i, &(offset, len)) in segments.iter().enumerate() {
            let end = offset.checked_add(len).filter(|&end| end <= self.size);
            if offset < end_of_previous || end.is_none() {
                return Err(bad(format!(
                    "sparse segment {i} ({offset}, {len}) overlaps the one before it or \
                     passes the file's size {}",
                    self.size
                )));
            }
            end_of_previous = end.unwrap_or(offset);
        }
        if c.data_offset.checked_add(segments.data_len()) != Some(total) {
            return Err(bad(format!(
                "its chunks hold {total} bytes, but its sparse map ({} bytes) and data \
                 segments ({} bytes) need exactly that",
                c.data_offset,
                segments.data_len()
            )));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// The kind of an encoded node, read without decoding the rest of it.
    pub fn kind_of(encoded: &[u8]) -> Result<Kind> {
        let mut d = Decoder::new(encoded, "tree node");
        d.bytes()?;
        Kind::from_u8(d.u8()?)
    }

    /// `lseek`'s `SEEK_DATA` (`hole` false) or `SEEK_HOLE` from `offset` in a file: the first
    /// offset at or after it that is data, or that is in a hole (the end of the file counts
    /// as one). None when `offset` is at or past the end, or no data follows it (`ENXIO`). A
    /// file that is not sparse is data to its end.
    pub fn seek(&self, offset: u64, hole: bool) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let Some(segments) = self.content.as_ref().and_then(|c| c.segments.as_deref()) else {
            return Some(if hole { self.size } else { offset });
        };
        // Segments are in order and apart (the ingest refuses a map that is not): the first
        // that ends after `offset` is where the answer is, or what follows it.
        let end = |&(start, len): &(u64, u64)| start.saturating_add(len).min(self.size);
        let first = segments.partition_point(|s| end(s) <= offset);
        let mut at = offset;
        for s in segments[first..].iter().filter(|s| s.1 > 0) {
            if s.0 > at {
                return Some(if hole { at } else { s.0 });
            }
            if !hole {
                return Some(at);
            }
            at = end(s);
        }
        hole.then_some(at)
    }

    /// About what the node takes in memory: the struct and the buffers it owns. Caches of
    /// decoded nodes are bounded by it.
    pub fn footprint(&self) -> usize {
        use std::mem::size_of;
        let xattrs: usize = self
            .xattrs
            .iter()
            .map(|(k, v)| size_of::<(Vec<u8>, Vec<u8>)>() + k.capacity() + v.capacity())
            .sum();
        let content = self.content.as_ref().map_or(0, |c| {
            let chunks = match &c.chunks {
                ListRef::Inline(entries) => entries.capacity() * size_of::<crate::list::Entry>(),
                ListRef::Tree { .. } => 0,
            };
            chunks + c.segments.as_ref().map_or(0, Segments::footprint)
        });
        size_of::<Node>() + self.name.capacity() + self.link.capacity() + xattrs + content
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(b, "tree node");
        let n = Node::decode(&mut d)?;
        d.finish()?;
        Ok(n)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The largest major and minor device numbers Linux holds (a 12-bit major, a 20-bit minor).
pub const MAX_MAJOR: u64 = 0xfff;
pub const MAX_MINOR: u64 = 0xf_ffff;

/// `major:minor` if Linux can hold it: a number past that can be neither made (mknod) nor
/// shown (stat) as itself.
pub fn linux_dev(major: u64, minor: u64) -> Option<(u32, u32)> {
    if major > MAX_MAJOR || minor > MAX_MINOR {
        return None;
    }
    Some((major as u32, minor as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::Entry;

    #[test]
    fn nodes_round_trip() {
        let mut f = Node::new(Kind::File);
        f.name = b"bad\xffname".to_vec();
        f.mode = 0o4755;
        f.uid = 3_000_000;
        f.mtime = -5;
        f.mtime_nsec = 123;
        f.size = 1 << 40;
        f.xattrs = vec![(b"user.a".to_vec(), vec![0, 255])];
        f.content = Some(Content {
            chunks: ListRef::Inline(vec![Entry {
                id: ChunkId::of(b"x"),
                len: 512 + 4096,
                aux: 0,
            }]),
            data_offset: 512,
            segments: Some(Segments::new(vec![(0, 10), (1 << 30, 4086)])),
        });
        let mut d = Node::new(Kind::Dir);
        d.name = b"sub".to_vec();
        d.child = Some(ChunkId::of(b"dir"));
        for n in [f, d] {
            assert_eq!(Node::from_bytes(&n.to_bytes()).unwrap(), n);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    /// A file's chunks must hold its bytes, and a sparse map must be in order, apart and
    /// within the file: a node breaking that is refused when decoded.
    #[test]
    fn a_node_whose_content_disagrees_with_itself_is_damage() {
        let file = |size: u64, total: u64, data_offset: u64, map: Option<&[(u64, u64)]>| {
            let mut f = Node::new(Kind::File);
            f.name = b"f".to_vec();
            f.size = size;
            f.content = Some(Content {
                chunks: ListRef::Inline(vec![Entry {
                    id: ChunkId::of(b"x"),
                    len: total,
                    aux: 0,
                }]),
                data_offset,
                segments: map.map(|m| Segments::new(m.to_vec())),
            });
            Node::from_bytes(&f.to_bytes())
        };
        assert!(file(10, 10, 0, None).is_ok() && file(10, 11, 0, None).is_ok());
        assert!(file(100, 512 + 20, 512, Some(&[(0, 10), (50, 10), (100, 0)])).is_ok());
        for bad in [
            file(10, 9, 0, None),
            file(100, 512 + 20, 512, Some(&[(50, 10), (0, 10)])),
            file(100, 512 + 20, 512, Some(&[(0, 10), (5, 10)])),
            file(100, 512 + 20, 512, Some(&[(0, 10), (95, 10)])),
            file(100, 512 + 20, 512, Some(&[(0, 10), (u64::MAX, 10)])),
            file(100, 512 + 21, 512, Some(&[(0, 10), (50, 10)])),
            file(100, 20, u64::MAX, Some(&[(0, 10), (50, 10)])),
        ] {
            assert!(matches!(bad, Err(Error::Corrupt(_))), "{bad:?}");
        }
    }

    /// `seek` against a byte-by-byte reading of the map: data where a segment covers the
    /// byte, a hole elsewhere, the end of the file a hole too.
    #[test]
    fn seek_finds_data_and_holes_as_a_byte_map_does() {
        let maps: [&[(u64, u64)]; 5] = [
            &[(0, 10), (30, 5), (35, 5), (60, 0), (70, 30)],
            &[(20, 10)],
            &[],
            &[(0, 100)],
            &[(5, 1), (7, 1), (99, 1)],
        ];
        for map in maps {
            let mut n = Node::new(Kind::File);
            n.size = 100;
            n.content = Some(Content {
                chunks: ListRef::Inline(Vec::new()),
                data_offset: 0,
                segments: Some(Segments::new(map.to_vec())),
            });
            let data = |b: u64| map.iter().any(|&(s, l)| (s..s + l).contains(&b));
            for offset in 0..110 {
                let want_data = (offset..100).find(|&b| data(b));
                let want_hole =
                    (offset < 100).then(|| (offset..100).find(|&b| !data(b)).unwrap_or(100));
                assert_eq!(
                    n.seek(offset, false),
                    want_data,
                    "{map:?} data from {offset}"
                );
                assert_eq!(
                    n.seek(offset, true),
                    want_hole,
                    "{map:?} hole from {offset}"
                );
            }
        }
        let mut dense = Node::new(Kind::File);
        dense.size = 10;
        assert_eq!(
            (dense.seek(3, false), dense.seek(3, true)),
            (Some(3), Some(10))
        );
        assert_eq!((dense.seek(10, false), dense.seek(10, true)), (None, None));
    }
}
