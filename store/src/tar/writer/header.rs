//! Header encoding: an entry's ustar header block, and the `x` header with its pax records
//! in front of it when something does not fit the ustar fields.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;

use crate::tar::header::{BLOCK, PAX_LOCAL};

/// Where each field lives in a ustar header block.
mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHECKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
}

pub(super) const NAME_LEN: usize = field::NAME.end - field::NAME.start;
const PREFIX_LEN: usize = field::PREFIX.end - field::PREFIX.start;
/// The largest value of a 12-byte field (11 octal digits): size and mtime.
pub(super) const MAX_OCTAL_11: u64 = 0o77777777777;

pub(super) const REGULAR: u8 = b'0';
pub(super) const HARDLINK: u8 = b'1';
pub(super) const SYMLINK: u8 = b'2';
pub(super) const CHAR_DEVICE: u8 = b'3';
pub(super) const BLOCK_DEVICE: u8 = b'4';
pub(super) const FIFO: u8 = b'6';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp {
    pub(super) secs: i64,
    /// 0..1_000_000_000, as stat returns it (also for negative `secs`).
    pub(super) nsec: u32,
}

/// One member as it is about to be written.
pub(super) struct Entry {
    /// `./`, `./a`, `./dir/`.
    pub(super) name: Vec<u8>,
    pub(super) typeflag: u8,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: Timestamp,
    /// Payload bytes after the header.
    pub(super) size: u64,
    pub(super) link: Vec<u8>,
    pub(super) dev: (u64, u64),
    /// Records that go in the `x` header whatever the fields (xattrs, sparse); `encode` adds
    /// those for values that do not fit.
    pub(super) pax: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sparse files: the ustar name, the real one being in `GNU.sparse.name`.
    pub(super) sparse_name: Option<Vec<u8>>,
}

impl Entry {
    pub(super) fn new(name: Vec<u8>, typeflag: u8, md: &Metadata) -> Entry {
        Entry {
            name,
            typeflag,
            mode: md.mode() & 0o7777,
            uid: md.uid().into(),
            gid: md.gid().into(),
            mtime: Timestamp {
                secs: md.mtime(),
                // stat guarantees 0..1e9; clamp rather than trust it blindly.
                nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
            },
            size: 0,
            link: Vec::new(),
            dev: (0, 0),
            pax: BTreeMap::new(),
            sparse_name: None,
        }
    }

    /// The member's header blocks: an `x` header when needed, then the ustar header. Err says
    /// why the member cannot be represented at all.
    pub(super) fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        let mut pax = self.pax.clone();
        let mut b = Block::new(self.typeflag);
        self.put_names(&mut b, &mut pax);
        b.octal(field::MODE, self.mode.into());
        b.number(field::UID, self.uid, "uid", &mut pax);
        b.number(field::GID, self.gid, "gid", &mut pax);
        b.number(field::SIZE, self.size, "size", &mut pax);
        let mtime = mtime_field(self.mtime);
        b.octal(field::MTIME, mtime);
        if self.mtime.nsec != 0 || self.mtime.secs != mtime as i64 {
            pax.insert(b"mtime".to_vec(), pax_time(self.mtime).into_bytes());
        }
        if !(b.octal(field::DEVMAJOR, self.dev.0) && b.octal(field::DEVMINOR, self.dev.1)) {
            return Err("device number too large for a tar header".into());
        }
        let mut out = Vec::with_capacity(3 * BLOCK);
        if !pax.is_empty() {
            out.extend_from_slice(&pax_header(&self.name, mtime, &pax)?);
        }
        out.extend_from_slice(&b.finish());
        Ok(out)
    }

    /// Name, prefix and linkname fields, with `path`/`linkpath` records when they do not fit.
    fn put_names(&self, b: &mut Block, pax: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        if let Some(sparse_name) = &self.sparse_name {
            b.bytes(field::NAME, sparse_name);
        } else if let Some((prefix, name)) = split_name(&self.name) {
            b.bytes(field::NAME, name);
            b.bytes(field::PREFIX, prefix);
        } else {
            b.bytes(field::NAME, &self.name);
            pax.insert(b"path".to_vec(), self.name.clone());
        }
        b.bytes(field::LINKNAME, &self.link);
        if self.link.len() > field::LINKNAME.len() {
            pax.insert(b"linkpath".to_vec(), self.link.clone());
        }
    }
}

/// The mtime header field: the whole seconds, or 0 when they do not fit (negative, or past
/// 11 octal digits) and a `mtime` record carries them.
fn mtime_field(t: Timestamp) -> u64 {
    u64::try_from(t.secs)
        .ok()
        .filter(|&s| s <= MAX_OCTAL_11)
        .unwrap_or(0)
}

/// A pax time: `SECS` or `SECS.FRACTION` without trailing zeros; negative times count down
/// from zero (`-1.5` is 1.5 s before the epoch, stat's secs -2 + nsec 500000000).
pub(super) fn pax_time(t: Timestamp) -> String {
    if t.nsec == 0 {
        return t.secs.to_string();
    }
    let (sign, whole, frac) = if t.secs < 0 {
        ("-", (t.secs + 1).unsigned_abs(), 1_000_000_000 - t.nsec)
    } else {
        ("", t.secs.unsigned_abs(), t.nsec)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Split a name for ustar: all of it in the name field when it fits, else at the first `/`
/// that leaves a name part of 1..=100 bytes, with a prefix part of at most 155 bytes. None
/// when no split works.
pub(super) fn split_name(full: &[u8]) -> Option<(&[u8], &[u8])> {
    if full.len() <= NAME_LEN {
        return Some((&[], full));
    }
    let i = (0..full.len()).find(|&i| full[i] == b'/' && full.len() - i - 1 <= NAME_LEN)?;
    let (prefix, name) = (&full[..i], &full[i + 1..]);
    (prefix.len() <= PREFIX_LEN && !name.is_empty() && !prefix.is_empty()).then_some((prefix, name))
}

/// `./PaxHeaders/<basename>` for the `x` header in front of `name` (basename `.` for `./`).
pub(super) fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let base = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    let mut out = b"./PaxHeaders/".to_vec();
    out.extend_from_slice(base);
    out.truncate(NAME_LEN);
    out
}

/// The `x` header block and its records, padded to a block.
fn pax_header(
    member_name: &[u8],
    mtime: u64,
    records: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> std::result::Result<Vec<u8>, String> {
    let mut data = Vec::new();
    for (key, value) in records {
        data.extend_from_slice(&pax_record(key, value));
    }
    let mut b = Block::new(PAX_LOCAL);
    b.bytes(field::NAME, &pax_header_name(member_name));
    b.octal(field::MODE, 0o644);
    b.octal(field::UID, 0);
    b.octal(field::GID, 0);
    b.octal(field::MTIME, mtime);
    if !b.octal(field::SIZE, data.len() as u64) {
        return Err("extended header too large".into());
    }
    // GNU tar leaves devmajor/devminor of `x` headers empty.
    b.0[field::DEVMAJOR.start..field::DEVMINOR.end].fill(0);
    let mut out = b.finish().to_vec();
    out.extend_from_slice(&data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    Ok(out)
}

/// `"%d %s=%s\n"`, the length counting itself.
pub(super) fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // the space, `=` and newline
    let digits = |n: usize| n.to_string().len();
    // Adding the length's digits can add a digit to the length: iterate to the fixed point.
    let mut len = body + digits(body);
    while len != body + digits(len) {
        len = body + digits(len);
    }
    let mut record = Vec::with_capacity(len);
    record.extend_from_slice(format!("{len} ").as_bytes());
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A ustar header block being filled in.
struct Block([u8; BLOCK]);

impl Block {
    fn new(typeflag: u8) -> Block {
        let mut b = Block([0; BLOCK]);
        b.0[field::TYPEFLAG] = typeflag;
        b.bytes(field::MAGIC, b"ustar\0");
        b.bytes(field::VERSION, b"00");
        // Every ustar number GNU tar writes, device numbers included, is present.
        b.octal(field::DEVMAJOR, 0);
        b.octal(field::DEVMINOR, 0);
        b
    }

    /// Copy `value` into the field, cut to its width (NUL-terminated only when shorter).
    fn bytes(&mut self, range: Range<usize>, value: &[u8]) {
        let f = &mut self.0[range];
        let n = value.len().min(f.len());
        f[..n].copy_from_slice(&value[..n]);
        f[n..].fill(0);
    }

    /// Zero-padded octal filling all but the last byte, which is NUL. False (field untouched)
    /// when `v` needs more digits.
    fn octal(&mut self, range: Range<usize>, v: u64) -> bool {
        let f = &mut self.0[range];
        let digits = f.len() - 1;
        if v >> (3 * digits) != 0 {
            return false;
        }
        for (k, d) in f[..digits].iter_mut().rev().enumerate() {
            *d = b'0' + ((v >> (3 * k)) & 7) as u8;
        }
        f[digits] = 0;
        true
    }

    /// A number that goes to a pax record (the field holding 0) when it does not fit.
    fn number(
        &mut self,
        range: Range<usize>,
        v: u64,
        key: &str,
        pax: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) {
        if !self.octal(range.clone(), v) {
            self.octal(range, 0);
            pax.insert(key.as_bytes().to_vec(), v.to_string().into_bytes());
        }
    }

    /// Fill in the checksum, `%06o\0 ` as GNU tar writes it.
    fn finish(mut self) -> [u8; BLOCK] {
        self.0[field::CHECKSUM].fill(b' ');
        let sum: u64 = self.0.iter().map(|&b| u64::from(b)).sum();
        let at = field::CHECKSUM.start;
        self.octal(at..at + 7, sum);
        self.0
    }
}
