//! The directory record: a directory's nodes, sorted by name so a lookup is a binary search,
//! and (version 2) the order the stream had them in. Records are content-addressed objects, so
//! an unchanged directory is the same object in every snapshot.
//!
//! The stream's order is kept because it is where the data is: the ingest packs members'
//! bytes as they come. A reader going through a directory by name (`tar -c` of a mount,
//! a restore) jumps between frames and decodes a 2 MiB frame for each small file; listed in
//! stream order, it reads the frames through once. A stream already in name order (the
//! `--dir` dialect, `tar --sort=name`) keeps version 1, so its records are what they were.

use std::ops::Deref;

use super::node::Node;
use crate::encoding::{put_varint, Decoder};
use crate::error::{path_text, Error, Result};

/// Version 1: the nodes, by name. Version 2: the same, then the stream order.
const BY_NAME: u8 = 1;
const WITH_ORDER: u8 = 2;

/// A decoded directory record. It derefs to its nodes, by name.
#[derive(Debug, PartialEq, Eq)]
pub struct Dir {
    nodes: Vec<Node>,
    order: Option<Order>,
}

/// A listing order other than by name: `listing[k]` is the name index of the `k`-th entry
/// listed, `rank` the inverse (the listing position of each name index).
#[derive(Debug, PartialEq, Eq)]
struct Order {
    listing: Box<[u32]>,
    rank: Box<[u32]>,
}

impl Deref for Dir {
    type Target = [Node];

    fn deref(&self) -> &[Node] {
        &self.nodes
    }
}

impl Dir {
    /// A record listed by name (version 1).
    pub(crate) fn by_name(nodes: Vec<Node>) -> Dir {
        Dir { nodes, order: None }
    }

    /// The name index of the `k`-th node listed (`k` < the number of nodes).
    fn index_at(&self, k: usize) -> usize {
        match &self.order {
            Some(o) => o.listing[k] as usize,
            None => k,
        }
    }

    /// The name indices of the nodes, in the order a listing gives them: the stream's, or
    /// by name for a record that keeps no order.
    pub fn listing(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).map(|k| self.index_at(k))
    }

    /// The nodes in listing order, from the `start`-th on (no walk over those before it: a
    /// large directory is listed a page at a time).
    pub fn listed_from(&self, start: usize) -> impl Iterator<Item = &Node> + '_ {
        (start.min(self.nodes.len())..self.nodes.len()).map(|k| &self.nodes[self.index_at(k)])
    }

    /// The nodes in listing order.
    pub fn listed(&self) -> impl Iterator<Item = &Node> + '_ {
        self.listed_from(0)
    }

    /// The `k`-th node listed.
    pub fn listed_at(&self, k: usize) -> Option<&Node> {
        (k < self.nodes.len()).then(|| &self.nodes[self.index_at(k)])
    }

    /// Where the node at name index `i` comes in the listing.
    pub fn position(&self, i: usize) -> usize {
        match &self.order {
            Some(o) => o.rank[i] as usize,
            None => i,
        }
    }

    /// About what the record takes in memory (caches are bounded by it).
    pub fn footprint(&self) -> usize {
        let order = self.order.as_ref().map_or(0, |o| 8 * o.listing.len());
        std::mem::size_of::<Dir>() + order + self.nodes.iter().map(Node::footprint).sum::<usize>()
    }
}

/// The start of a record of `count` nodes, whose encodings follow in name order; with
/// `ordered`, [`put_order`] ends it.
pub fn record_header(count: usize, ordered: bool) -> Vec<u8> {
    let mut out = vec![if ordered { WITH_ORDER } else { BY_NAME }];
    put_varint(&mut out, count as u64);
    out
}

/// The end of an ordered record: the name index of each entry, in stream order.
pub fn put_order(out: &mut Vec<u8>, listing: &[u32]) {
    for &i in listing {
        put_varint(out, i as u64);
    }
}

/// A whole record at once (the tree builder writes its records node by node).
#[cfg(test)]
pub fn encode_dir(nodes: &[Node], listing: Option<&[u32]>) -> Vec<u8> {
    let mut out = record_header(nodes.len(), listing.is_some());
    for n in nodes {
        n.encode(&mut out);
    }
    if let Some(l) = listing {
        put_order(&mut out, l);
    }
    out
}

pub fn decode_dir(bytes: &[u8]) -> Result<Dir> {
    let mut d = Decoder::new(bytes, "directory record");
    let version = d.expect_version(WITH_ORDER)?;
    let count = d.varint()?;
    let mut nodes = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        nodes.push(Node::decode(&mut d)?);
    }
    check_names(&nodes)?;
    let order = match version {
        BY_NAME => None,
        _ => Some(decode_order(&mut d, nodes.len())?),
    };
    d.finish()?;
    Ok(Dir { nodes, order })
}

/// Every name one path component (not empty, `.` or `..`, no `/`: what the ingest makes of a
/// stream's paths; a NUL can come in through a PAX `path` record and is kept, since no system
/// call takes it and tar readers end the name there), in strictly increasing byte order (lookups are binary searches;
/// a name twice would be two files at one path). A crafted record breaking this could put a
/// `../x` into a synthesized layer or a restore, or hide one entry behind another.
fn check_names(nodes: &[Node]) -> Result<()> {
    for (i, node) in nodes.iter().enumerate() {
        let name = &node.name[..];
        let why = if name.is_empty() || name == b"." || name == b".." {
            "is not a name"
        } else if name.contains(&b'/') {
            "holds a '/'"
        } else if i > 0 && nodes[i - 1].name[..] >= *name {
            "is not after the entry before it (names must be unique and in byte order)"
        } else {
            continue;
        };
        return Err(Error::corrupt(format!(
            "directory record: entry {i} ({:?}) {why}",
            path_text(name)
        )));
    }
    Ok(())
}

/// `n` name indices, each once: a listing that names every entry exactly once.
fn decode_order(d: &mut Decoder, n: usize) -> Result<Order> {
    let mut listing = Vec::with_capacity(n);
    let mut rank = vec![u32::MAX; n];
    for k in 0..n {
        let i = d.varint()?;
        let slot = usize::try_from(i).ok().and_then(|i| rank.get_mut(i));
        match slot {
            Some(r) if *r == u32::MAX => *r = k as u32,
            _ => {
                return Err(Error::corrupt(format!(
                    "directory record: listing entry {k} names entry {i}, \
                     out of range or named before (of {n})"
                )))
            }
        }
        listing.push(i as u32);
    }
    Ok(Order {
        listing: listing.into(),
        rank: rank.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use crate::tree::Kind;

    fn nodes() -> Vec<Node> {
        ["a", "b", "c"]
            .iter()
            .map(|name| {
                let mut n = Node::new(Kind::Dir);
                n.name = name.as_bytes().to_vec();
                n.child = Some(ChunkId::of(name.as_bytes()));
                n
            })
            .collect()
    }

    fn names(d: &Dir) -> Vec<&[u8]> {
        d.listed().map(|n| &n.name[..]).collect()
    }

    #[test]
    fn records_round_trip_with_and_without_an_order() {
        let by_name = decode_dir(&encode_dir(&nodes(), None)).unwrap();
        assert_eq!(&by_name[..], &nodes()[..]);
        assert_eq!(names(&by_name), [b"a", b"b", b"c"]);
        let ordered = decode_dir(&encode_dir(&nodes(), Some(&[2, 0, 1]))).unwrap();
        assert_eq!(&ordered[..], &nodes()[..], "derefs to the nodes by name");
        assert_eq!(names(&ordered), [b"c", b"a", b"b"]);
        let rest: Vec<&[u8]> = ordered.listed_from(1).map(|n| &n.name[..]).collect();
        assert_eq!(rest, [b"a", b"b"]);
        assert!(ordered.listed_from(7).next().is_none() && ordered.listed_at(3).is_none());
        assert_eq!(
            (0..3).map(|i| ordered.position(i)).collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }

    #[test]
    fn a_record_whose_names_are_not_single_sorted_components_is_damage() {
        let named = |names: &[&[u8]]| {
            let mut nodes = nodes();
            nodes.truncate(names.len());
            for (n, name) in nodes.iter_mut().zip(names) {
                n.name = name.to_vec();
            }
            encode_dir(&nodes, None)
        };
        assert!(decode_dir(&named(&[b"a", b"b\xff", b"b\xff\n\0"])).is_ok());
        for bad in [
            &[&b""[..]][..],
            &[b"."],
            &[b".."],
            &[b"a", b"../escape"],
            &[b"a/b"],
            &[b"b", b"a"],
            &[b"a", b"a"],
        ] {
            let err = decode_dir(&named(bad)).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{bad:?}: {err}");
            assert!(err.to_string().contains("directory record: entry"), "{err}");
        }
    }

    #[test]
    fn an_order_that_is_not_a_listing_of_every_entry_is_damage() {
        for bad in [&[0, 0, 1][..], &[0, 1, 3], &[0, 1]] {
            let err = decode_dir(&encode_dir(&nodes(), Some(bad))).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{bad:?}: {err}");
        }
        let mut extra = encode_dir(&nodes(), Some(&[0, 1, 2]));
        extra.push(0);
        assert!(decode_dir(&extra).is_err(), "trailing bytes");
        let mut future = encode_dir(&nodes(), None);
        future[0] = 3;
        assert!(matches!(
            decode_dir(&future),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }
}
