//! What a tar member means for the tree: its kind and attributes, with PAX records, GNU
//! extensions and libarchive's xattrs applied as `tar --xattrs -xpf` would apply them.

use std::collections::HashSet;

use super::acl::{acl_mode, acl_xattr};
use super::node::{Content, Kind, Node};
use crate::list::ListRef;
use crate::tar::header;
use crate::tar::pax::{self, parse_time, PaxRecord};
use crate::tar::Member;

/// How a member changes the tree.
pub enum Action {
    /// Put this node at the member's path.
    Put(Box<Node>),
    /// A hardlink to an earlier member's path, and the link member's own mtime (seconds).
    Link(Vec<u8>, i64),
    /// Nothing to extract (volume labels and the like).
    Skip,
}

/// The sparse layout of a member, when it has one.
pub enum Sparse {
    None,
    /// The map is known from the headers.
    Map(Vec<(u64, u64)>),
    /// PAX sparse 1.0: the map opens the payload.
    InPayload,
}

/// A regular (or contiguous) file member whose name ends in `/`: a directory, by the BSD
/// convention GNU tar and bsdtar follow (v7 headers have no directory type; `bsdtar
/// --format=v7` writes directories so).
pub fn slash_dir(m: &Member) -> bool {
    matches!(m.typeflag, b'0' | 0 | b'7') && m.real_path().ends_with(b"/")
}

pub fn sparse_layout(m: &Member) -> Sparse {
    if m.gnu_realsize.is_some() {
        return Sparse::Map(m.gnu_sparse.clone());
    }
    if pax::lookup(&m.pax, "GNU.sparse.major") == Some(b"1") {
        return Sparse::InPayload;
    }
    if let Some(map) = pax::lookup(&m.pax, "GNU.sparse.map") {
        let nums: Vec<u64> = map
            .split(|&b| b == b',')
            .filter_map(pax::parse_decimal)
            .collect();
        return Sparse::Map(nums.chunks_exact(2).map(|p| (p[0], p[1])).collect());
    }
    // PAX 0.0: offset/numbytes records in order.
    let mut map = Vec::new();
    let mut offset = None;
    for r in &m.pax {
        match r.key.as_slice() {
            b"GNU.sparse.offset" => offset = pax::parse_decimal(&r.value),
            b"GNU.sparse.numbytes" => {
                if let (Some(o), Some(n)) = (offset.take(), pax::parse_decimal(&r.value)) {
                    map.push((o, n));
                }
            }
            _ => {}
        }
    }
    if map.is_empty() {
        Sparse::None
    } else {
        Sparse::Map(map)
    }
}

/// The most of a PAX 1.0 sparse member's payload kept to read its map from: 2^20 segments
/// (the old GNU format's limit of map entries) of two 20-digit numbers, and the count.
pub const MAX_PAYLOAD_MAP: usize = (1 << 20) * 42 + 21;

/// The start of a PAX 1.0 sparse member's payload, kept as it is chunked until its map is
/// whole (its count line and two lines per segment), and no further: a sparse file's data is
/// not held, and a map of any size up to [`MAX_PAYLOAD_MAP`] is read whole.
#[derive(Default)]
pub struct MapCapture {
    pub bytes: Vec<u8>,
    /// Lines seen, and how many the map has once its count line is read.
    lines: u64,
    need: Option<u64>,
}

impl MapCapture {
    pub fn take(&mut self, data: &[u8]) {
        let whole = self.need.is_some_and(|need| self.lines >= need);
        if whole || self.bytes.len() >= MAX_PAYLOAD_MAP {
            return;
        }
        let from = self.bytes.len();
        let room = MAX_PAYLOAD_MAP - from;
        self.bytes.extend_from_slice(&data[..room.min(data.len())]);
        for i in from..self.bytes.len() {
            if self.bytes[i] != b'\n' {
                continue;
            }
            self.lines += 1;
            if self.lines == 1 {
                // A count past what fits is read as the limit: the map then ends short of
                // it, and fails to parse.
                let count = pax::parse_decimal(&self.bytes[..i]).unwrap_or(u64::MAX);
                self.need = Some(count.saturating_mul(2).saturating_add(1));
            }
            if self.need.is_some_and(|need| self.lines >= need) {
                self.bytes.truncate(i + 1);
                return;
            }
        }
    }
}

/// Parse a PAX 1.0 sparse map from the start of the payload: decimal lines, count first, then
/// offset/length pairs, padded to a block. Returns the map and where the data begins, or None
/// if `prefix` is too short or malformed.
pub fn parse_payload_map(prefix: &[u8]) -> Option<(Vec<(u64, u64)>, u64)> {
    let mut pos = 0;
    let mut next = || -> Option<u64> {
        let end = prefix[pos..].iter().position(|&b| b == b'\n')? + pos;
        let v = pax::parse_decimal(&prefix[pos..end]);
        pos = end + 1;
        v
    };
    let count = next()?;
    let mut map = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let o = next()?;
        let l = next()?;
        map.push((o, l));
    }
    Some((map, (pos as u64).next_multiple_of(header::BLOCK as u64)))
}

/// A member's mtime: PAX `mtime` over the header's. i64::MIN marks directories no member
/// named (`TreeBuilder`); no file system stores a time 292 billion years back, so a member's
/// is moved one second later.
fn mtime(m: &Member) -> (i64, u32) {
    let (secs, nsec) = pax::lookup(&m.pax, "mtime")
        .and_then(parse_time)
        .unwrap_or((m.mtime, 0));
    (secs.max(i64::MIN + 1), nsec)
}

/// The effective attributes of a member. `content` is its payload's chunk list (files only).
/// What of the member the tree leaves out is said through `warn`.
pub fn action(
    m: &Member,
    content: Option<Content>,
    real_size: Option<u64>,
    warn: &mut dyn FnMut(String),
) -> Action {
    let kind = match m.typeflag {
        b'1' => return Action::Link(m.link.clone(), mtime(m).0),
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        // A volume label: no file. (GNU's old list of names to rename, `N`, is a file of
        // unknown type, as GNU tar extracts it.)
        b'V' => return Action::Skip,
        // The rest of a file begun in an earlier volume: not a file of its own. GNU tar
        // reading this volume alone refuses it too ("file is continued from another volume").
        b'M' => {
            warn(format!(
                "{}: continued from an earlier volume of a multi-volume archive; left out \
                 of the tree",
                m.display_path()
            ));
            return Action::Skip;
        }
        _ if slash_dir(m) => Kind::Dir,
        // Regular files, contiguous files, sparse files and (as GNU tar does) unknown types.
        _ => Kind::File,
    };
    let mut n = Node::new(kind);
    // Linux gives every symlink mode 777, whatever the header says (lchmod does not exist).
    n.mode = if kind == Kind::Symlink {
        0o777
    } else {
        (m.mode & 0o7777) as u32
    };
    // As GNU tar does, a PAX owner past what Linux can hold is ignored for the header's, and
    // a header's (GNU base-256) is not used: the member is owned by whoever extracts it, which
    // cellar records as 0, rather than a value that a mount or a restore would have to wrap.
    let mut owner = |key: &str, header: i64| {
        let out_of_range = |what: String| {
            format!(
                "{}: {what} is out of range (0 to {})",
                m.display_path(),
                u32::MAX
            )
        };
        let pax = pax::lookup(&m.pax, key);
        // `-0` (`-00`…) is 0, as GNU tar reads it: a minus sign alone is no reason to warn.
        let unsigned = |v: &'_ [u8]| match v.strip_prefix(b"-") {
            Some(zeros) if !zeros.is_empty() && zeros.iter().all(|&b| b == b'0') => Some(0),
            _ => pax::parse_decimal(v),
        };
        let linux = pax.and_then(unsigned).map(u32::try_from);
        if let Some(Ok(v)) = linux {
            return u64::from(v);
        }
        let header = u32::try_from(header).map(u64::from).unwrap_or_else(|_| {
            warn(out_of_range(format!("the header's {key} {header}")) + "; 0 is recorded");
            0
        });
        if let Some(v) = pax {
            let kept = format!("; the header's {header} is kept");
            let v = String::from_utf8_lossy(v);
            warn(out_of_range(format!("PAX {key}={v}")) + &kept);
        }
        header
    };
    n.uid = owner("uid", m.uid);
    n.gid = owner("gid", m.gid);
    (n.mtime, n.mtime_nsec) = mtime(m);
    let Xattrs {
        kept,
        left_out,
        bad_acls,
        text_acl_mode,
    } = xattrs(&m.pax);
    n.xattrs = kept;
    if kind == Kind::Symlink {
        // Linux has no ACLs on symlinks: GNU tar and bsdtar set none, and say nothing.
        n.xattrs
            .retain(|(name, _)| !name.starts_with(b"system.posix_acl_"));
    }
    // Extraction sets the ACL after the mode, and the kernel makes the mode's permission bits
    // the ACL's (bsdtar writes the owning group's bits into the header's mode where an ACL has
    // a mask; the extracted mode's group bits are the mask's).
    if let (Some(bits), false) = (text_acl_mode, kind == Kind::Symlink) {
        n.mode = (n.mode & !0o777) | bits;
    }
    if bad_acls > 0 {
        warn(format!(
            "{}: {bad_acls} ACL record(s) (SCHILY.acl.*) that cannot be set whole (a user or \
             group named without its number, or not a valid ACL) left out of the tree",
            m.display_path()
        ));
    }
    if left_out > 0 {
        warn(format!(
            "{}: {left_out} extended attribute(s) over Linux's limits (a name over \
             {XATTR_NAME_MAX} bytes, a value over {XATTR_SIZE_MAX} bytes, or names past the \
             {XATTR_LIST_MAX} bytes a file's list may hold) left out of the tree",
            m.display_path()
        ));
    }
    match kind {
        Kind::File => {
            n.size = real_size.unwrap_or(m.payload_len);
            n.content = Some(content.unwrap_or(Content {
                chunks: ListRef::Inline(Vec::new()),
                data_offset: 0,
                segments: None,
            }));
        }
        Kind::Symlink => {
            n.link = m.link.clone();
            n.size = n.link.len() as u64;
        }
        Kind::Char | Kind::Block => {
            n.rdev_major = m.devmajor;
            n.rdev_minor = m.devminor;
        }
        _ => {}
    }
    Action::Put(Box::new(n))
}

/// An extended attribute: name, value.
type Xattr = (Vec<u8>, Vec<u8>);

/// Linux's limits on extended attributes (`XATTR_NAME_MAX`, `XATTR_SIZE_MAX`): the kernel
/// refuses larger ones, so no extraction sets them.
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 64 << 10;
/// Linux's limit on one file's list of names (`XATTR_LIST_MAX`: each name and its NUL):
/// `listxattr` fails on a file with more, so neither a restore's reader nor the mount could
/// list them. Values have no limit in all but the file system's; the stream's own (its PAX
/// header, at most 16 MiB) bounds what a node holds.
const XATTR_LIST_MAX: usize = 64 << 10;

/// A directory named again keeps the xattrs of its earlier member that the later one does not
/// name: an extractor sets the later member's on the directory already there and removes
/// none (GNU tar and bsdtar alike; `tar -r` appends a directory again). Within
/// `XATTR_LIST_MAX` of names, the later member's first.
pub(super) fn keep_earlier_xattrs(dir: &mut Node, earlier: Vec<Xattr>) {
    let listed = |(k, _): &Xattr| k.len() + 1;
    let mut total: usize = dir.xattrs.iter().map(listed).sum();
    for x in earlier {
        if total + listed(&x) <= XATTR_LIST_MAX && !dir.xattrs.iter().any(|(k, _)| *k == x.0) {
            total += listed(&x);
            dir.xattrs.push(x);
        }
    }
    dir.xattrs.sort();
}

/// xattrs from GNU/star (`SCHILY.xattr.NAME`, raw value) and libarchive
/// (`LIBARCHIVE.xattr.NAME`, name %-encoded, value base64) records, and ACLs from their text
/// (`SCHILY.acl.access`/`default`, unless the xattr itself is there); the last one for a name
/// wins. libarchive writes each xattr twice, `SCHILY.xattr.` beside its own record under the
/// same encoded NAME: that copy is left for the exact one, or a name with a space would come
/// back as both `user.a b` and `user.a%20b` (bsdtar itself restores both). Those over
/// Linux's limits are left out, and so is what comes past `XATTR_LIST_MAX` of names, in name
/// order.
fn xattrs(recs: &[PaxRecord]) -> Xattrs {
    // None: a value too large to set, which still replaces an earlier one of the name.
    let value = |v: &[u8]| (v.len() <= XATTR_SIZE_MAX).then(|| v.to_vec());
    let libarchive: HashSet<&[u8]> = recs
        .iter()
        .filter(|r| base64_decode(&r.value).is_some())
        .filter_map(|r| r.key.strip_prefix(b"LIBARCHIVE.xattr."))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for r in recs {
        if let Some(name) = r.key.strip_prefix(b"SCHILY.xattr.") {
            if !libarchive.contains(name) {
                out.insert(gnu_xattr_name(name), value(&r.value));
            }
        } else if let Some(name) = r.key.strip_prefix(b"LIBARCHIVE.xattr.") {
            if let Some(decoded) = base64_decode(&r.value) {
                out.insert(percent_decode(name), value(&decoded));
            }
        }
    }
    let (mut bad_acls, mut text_acl_mode) = (0, None);
    // ACLs as text (see `acl.rs`), over an xattr of the same name: GNU tar and bsdtar set the
    // ACL after the xattrs.
    for (key, name) in [
        (&b"SCHILY.acl.access"[..], &b"system.posix_acl_access"[..]),
        (b"SCHILY.acl.default", b"system.posix_acl_default"),
    ] {
        let Some(text) = recs.iter().rev().find(|r| r.key == key) else {
            continue;
        };
        match acl_xattr(&text.value) {
            Some(value) => {
                if key == b"SCHILY.acl.access" {
                    let (bits, minimal) = acl_mode(&value);
                    text_acl_mode = Some(bits);
                    if minimal {
                        // The mode says it all: Linux keeps no such ACL.
                        out.remove(name);
                        continue;
                    }
                }
                out.insert(name.to_vec(), Some(value));
            }
            None => bad_acls += 1,
        }
    }
    let mut left_out = 0;
    let mut total = 0;
    let mut kept = Vec::new();
    for (name, value) in out {
        match value {
            Some(v) if name.len() <= XATTR_NAME_MAX && total + name.len() < XATTR_LIST_MAX => {
                total += name.len() + 1;
                kept.push((name, v));
            }
            _ => left_out += 1,
        }
    }
    Xattrs {
        kept,
        left_out,
        bad_acls,
        text_acl_mode,
    }
}

/// A member's xattrs as the tree keeps them (see [`xattrs`]).
struct Xattrs {
    kept: Vec<Xattr>,
    /// Over Linux's limits.
    left_out: usize,
    /// ACL text records that are not an ACL that can be set.
    bad_acls: usize,
    /// The permission bits an access ACL read from its text gives the mode (`acl_mode`).
    text_acl_mode: Option<u32>,
}

/// A `SCHILY.xattr.` name as GNU tar reads it: it writes `%` and `=` as `%25` and `%3D` and
/// decodes those two only, so `%41` stays three bytes.
fn gnu_xattr_name(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s.get(i..i + 3) {
            Some(b"%25") => out.push(b'%'),
            Some(b"%3D") => out.push(b'='),
            _ => {
                out.push(s[i]);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    out
}

/// A `LIBARCHIVE.xattr.` name: every `%XX` is a byte.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(Ok(b))) = (s[i], hex.map(|h| u8::from_str_radix(h, 16))) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Standard base64, padding optional (libarchive writes it without).
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s.iter().copied().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for group in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capture keeps the map and stops there, however the payload is chunked.
    #[test]
    fn a_map_capture_keeps_the_map_and_no_more() {
        let map = b"3\n0\n10\n4096\n5\n9000\n1\n";
        let mut payload = map.to_vec();
        payload.resize(512, 0);
        payload.extend([7u8; 100_000]);
        for step in [1, 7, 512, 100_000] {
            let mut c = MapCapture::default();
            payload.chunks(step).for_each(|part| c.take(part));
            assert_eq!(c.bytes, map, "step {step}");
            let (segs, data_at) = parse_payload_map(&c.bytes).unwrap();
            assert_eq!((segs.len(), data_at), (3, 512), "step {step}");
        }
        // A count past what the payload holds: it stops at the limit, and does not parse.
        let mut c = MapCapture::default();
        c.take(b"99999999999999999999\n1\n2\n");
        c.take(&vec![b'1'; MAX_PAYLOAD_MAP]);
        assert_eq!(c.bytes.len(), MAX_PAYLOAD_MAP);
        assert!(parse_payload_map(&c.bytes).is_none());
    }

    #[test]
    fn times_and_encodings() {
        assert_eq!(
            parse_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        // Past nine digits: toward minus infinity, as GNU tar; positive ones are cut.
        assert_eq!(parse_time(b"1.9999999999"), Some((1, 999_999_999)));
        assert_eq!(parse_time(b"-1.0000000001"), Some((-2, 999_999_999)));
        assert_eq!(parse_time(b"-1.9999999991"), Some((-2, 0)));
        assert_eq!(parse_time(b"-1.2500000000"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"12"), Some((12, 0)));
        assert_eq!(parse_time(b"x"), None);
        // What follows the number is ignored, as GNU tar ignores it.
        assert_eq!(parse_time(b"1e-05"), Some((1, 0)));
        assert_eq!(parse_time(b"12abc"), Some((12, 0)));
        assert_eq!(parse_time(b"1.5.5"), Some((1, 500_000_000)));
        assert_eq!(parse_time(b"-7.25x"), Some((-8, 750_000_000)));
        assert_eq!(parse_time(b" 5"), None);
        assert_eq!(parse_time(b".5"), None);
        assert_eq!(parse_time(b"-"), None);
        // One sign, digits only, and no overflow on the way to a negative time.
        assert_eq!(parse_time(b"--5"), None);
        assert_eq!(parse_time(b"-+5"), None);
        assert_eq!(parse_time(b"+5"), None);
        assert_eq!(parse_time(b"-.5"), None);
        // GNU tar's range is an i64's: its least value is read, one nanosecond below is not.
        assert_eq!(parse_time(b"-9223372036854775808"), Some((i64::MIN, 0)));
        assert_eq!(parse_time(b"-9223372036854775808.5"), None);
        assert_eq!(parse_time(b"9223372036854775808"), None);
        assert_eq!(parse_time(b"--9223372036854775808.5"), None);
        assert_eq!(
            parse_time(b"-9223372036854775807.5"),
            Some((i64::MIN, 500_000_000))
        );
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(percent_decode(b"user.a%3Db%41"), b"user.a=bA");
        assert_eq!(
            gnu_xattr_name(b"user.a%3Db%25%41%3d%2"),
            b"user.a=b%%41%3d%2"
        );
        let (map, data) = parse_payload_map(b"2\n0\n10\n4096\n5\n").unwrap();
        assert_eq!(map, vec![(0, 10), (4096, 5)]);
        assert_eq!(data, 512);
        assert!(parse_payload_map(b"2\n0\n10\n").is_none());
    }

    fn xattr(name: &str, len: usize) -> PaxRecord {
        PaxRecord {
            key: format!("SCHILY.xattr.{name}").into_bytes(),
            value: vec![b'v'; len],
        }
    }

    /// A name over 255 bytes or a value over 64 KiB (which also drops an earlier value of the
    /// name) is left out, and so are names past the 64 KiB a file's list holds, in name order;
    /// values have no limit in all.
    #[test]
    fn xattrs_over_linux_limits_are_left_out() {
        let long = format!("user.{}", "n".repeat(251));
        let recs = [
            xattr("user.a", 10),
            xattr("user.big", 100),
            xattr("user.big", XATTR_SIZE_MAX + 1),
            xattr(&long, 1),
            xattr("user.b", XATTR_SIZE_MAX),
            xattr("user.c", XATTR_SIZE_MAX),
            xattr("user.d", 20_000),
        ];
        let Xattrs { kept, left_out, .. } = xattrs(&recs);
        let names: Vec<&[u8]> = kept.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.b", b"user.c", b"user.d"]);
        assert_eq!(left_out, 2, "user.big and the long name");
        let Xattrs { kept, left_out, .. } = xattrs(&[xattr(&long[1..], XATTR_SIZE_MAX)]);
        assert_eq!((kept.len(), left_out), (1, 0), "at the limits is kept");
        // 255-byte names, 256 bytes listed each: 256 of them fill the list.
        let names: Vec<String> = (0..300)
            .map(|i| format!("user.{i:03}{}", "x".repeat(247)))
            .collect();
        let recs: Vec<PaxRecord> = names.iter().map(|n| xattr(n, 1)).collect();
        let Xattrs { kept, left_out, .. } = xattrs(&recs);
        assert_eq!((kept.len(), left_out), (256, 44));
    }
}
