//! A streaming tar reader that keeps every byte: each member comes out as the raw bytes before
//! its payload (the previous payload's padding and all its header blocks, verbatim) plus the
//! payload's length, so that head + payload, member after member, then the trailer, replays the
//! stream exactly.

use std::io::Read;

use super::header::{self, Dialect, Header, BLOCK};
use super::member::Member;
use super::pax::{self, PaxRecord};
use crate::error::{path_text, Error, Result, TarPlace};

/// Largest payload of a header-only member (PAX record set, GNU long name) we accept. Real
/// ones are a few KiB; this bound keeps a hostile stream from exhausting memory.
const MAX_META_PAYLOAD: u64 = 16 << 20;
/// Longest sparse map accepted from extension blocks.
const MAX_SPARSE_ENTRIES: usize = 1 << 20;
/// Largest run of header bytes before one payload (all extension headers together).
const MAX_HEAD: usize = 64 << 20;
/// Most bytes accepted after the end-of-archive marker. A writer pads its last record with
/// zeros (10 KiB by default, 1 MiB for `tar -b 2048`); far more than that is not a tar stream
/// ending but an endless source (`/dev/zero`) or a disk read past its archive, which would
/// otherwise be read, kept and replayed without end.
pub const MAX_TRAILER: u64 = 64 << 20;

/// Where the stream's bytes come from, as `io::BufRead` hands them out: borrowed from the
/// source's own buffer, so payloads can be chunked and hashed where they already are. Errors
/// are the engine's own, so a source can report a damaged compressed wrapper or a failed
/// command as what it is.
pub trait ByteSource {
    /// The next bytes of the stream, not yet consumed; empty at the end of the stream.
    fn fill_buf(&mut self) -> Result<&[u8]>;
    /// The first `n` bytes `fill_buf` gave have been used. An error here is about those
    /// bytes (say, a mapped file was cut short under them).
    fn consume(&mut self, n: usize) -> Result<()>;
}

/// Any `io::Read` as a source (tests, plain files), through a buffer of its own.
pub struct IoSource<R>(std::io::BufReader<R>);

impl<R: Read> IoSource<R> {
    pub fn new(inner: R) -> Self {
        IoSource(std::io::BufReader::with_capacity(64 << 10, inner))
    }
}

impl<R: Read> ByteSource for IoSource<R> {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        use std::io::BufRead;
        while let Err(e) = self.0.fill_buf() {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Input(e));
            }
        }
        // Filled: this hands back what the buffer holds.
        self.0.fill_buf().map_err(Error::Input)
    }

    fn consume(&mut self, n: usize) -> Result<()> {
        std::io::BufRead::consume(&mut self.0, n);
        Ok(())
    }
}

/// Counts the bytes read so errors can name offsets.
struct Source<S> {
    inner: S,
    offset: u64,
}

impl<S: ByteSource> Source<S> {
    /// Fill `buf` completely; returns how many bytes were read before the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let got = self.inner.fill_buf()?;
            if got.is_empty() {
                break;
            }
            let k = got.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&got[..k]);
            self.inner.consume(k)?;
            self.offset += k as u64;
            n += k;
        }
        Ok(n)
    }
}

pub struct TarReader<S> {
    src: Source<S>,
    /// Payload bytes of the current member not yet read (or lent).
    remaining: u64,
    /// Bytes lent by [`TarReader::payload_slice`] or [`TarReader::rest_slice`], consumed
    /// from the source at the reader's next call.
    lent: usize,
    /// Padding owed after the current payload.
    pad: u64,
    /// Path of the last member, for errors (bytes, made text only for an error: every member
    /// passes here).
    current: Option<Vec<u8>>,
    /// Reading the header blocks of the member after `current`: an error there is not in
    /// `current`, and the header's own name cannot be trusted.
    in_next_headers: bool,
    done: bool,
    /// Where the end-of-archive block starts, once read.
    end_at: u64,
    /// The records of the last global header that apply to the members after it.
    global: Vec<PaxRecord>,
    /// A global header has been read (one with no record that applies counts too).
    saw_global: bool,
}

/// Whether a global header's record applies to the members after it. GNU tar applies every
/// record of the last global header to each later member, under its local records; that
/// includes `size`, `path` and `linkpath`, which would give every member the same length or
/// name. Those, and the sparse records, which describe one member's layout, are left out:
/// the stream's layout is read from each member's own headers, as bsdtar and Go's archive/tar
/// read it (they ignore global headers entirely). So are xattrs: GNU tar 1.34 fails to set a
/// global one (it asks for an attribute named ""), so no extractor sets them. `comment`
/// changes nothing, and neither do keys the tree does not read. What is left is the owner and
/// the times.
pub fn global_applies(key: &[u8]) -> bool {
    matches!(
        key,
        b"uid" | b"gid" | b"uname" | b"gname" | b"mtime" | b"atime" | b"ctime"
    )
}

/// What follows the last member: the bytes up to and including the first zero block. The rest
/// of the source (the second zero block, blocking padding, anything else) is read with
/// [`TarReader::read_rest`].
pub struct End {
    pub head: Vec<u8>,
}

/// Compressed formats the input does not unwrap (gzip and zstd it does), by their magic, and
/// a command that decompresses each.
const OTHER_COMPRESSIONS: [(&[u8], &str, &str); 5] = [
    (b"\xfd7zXZ\x00", "xz", "xz -dc"),
    (b"BZh", "bzip2", "bzip2 -dc"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
    (b"LZIP", "lzip", "lzip -dc"),
    (b"\x1f\x9d", "compress (.Z)", "gzip -dc"),
];

/// `what` went wrong with the stream's first header: say so plainly when the stream starts
/// like a compressed format that is not unwrapped (a tar header starting the same way is
/// still read as one, and only its failure gets the hint).
fn with_hint(what: String, offset: u64, first: &[u8]) -> String {
    if offset != 0 {
        return what;
    }
    let starts = |(magic, ..): &&(&[u8], &str, &str)| first.starts_with(magic);
    if let Some((_, name, cmd)) = OTHER_COMPRESSIONS.iter().find(starts) {
        return format!(
            "{what}; the stream starts like {name}-compressed data, and cellar unwraps only \
             gzip and zstd: decompress it first (`{cmd} FILE | cellar snapshot -`)"
        );
    }
    // A tar stream that starts so was unwrapped once already (the input is unwrapped when
    // it starts so).
    match UNWRAPPED.iter().find(starts) {
        Some((_, name, cmd)) => format!(
            "{what}; unwrapped, the stream starts like {name}-compressed data again: was it \
             compressed twice? (`{cmd} FILE | cellar snapshot -` takes one layer off)"
        ),
        None => what,
    }
}

/// The compressions the input unwraps, by their magic, and a command that decompresses each.
const UNWRAPPED: [(&[u8], &str, &str); 2] = [
    (b"\x1f\x8b", "gzip", "gzip -dc"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
];

impl<S: ByteSource> TarReader<S> {
    pub fn new(inner: S) -> Self {
        TarReader {
            src: Source { inner, offset: 0 },
            remaining: 0,
            lent: 0,
            pad: 0,
            current: None,
            in_next_headers: false,
            done: false,
            end_at: 0,
            global: Vec::new(),
            saw_global: false,
        }
    }

    /// Whether a PAX global header has been read so far, whatever its records: one in a
    /// stream is a member of its own to Go's archive/tar, which umoci refuses.
    pub fn saw_global_header(&self) -> bool {
        self.saw_global
    }

    /// Bytes of the stream read (or lent) so far.
    pub fn offset(&self) -> u64 {
        self.src.offset + self.lent as u64
    }

    pub fn into_source(mut self) -> Result<S> {
        self.settle()?;
        Ok(self.src.inner)
    }

    /// The bytes lent last are done with: consume them.
    fn settle(&mut self) -> Result<()> {
        if self.lent > 0 {
            let n = std::mem::take(&mut self.lent);
            self.src.inner.consume(n)?;
            self.src.offset += n as u64;
        }
        Ok(())
    }

    fn bad(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::BadTar {
            offset,
            member: self.current.as_deref().map(|p| {
                let p = path_text(p);
                match self.in_next_headers {
                    true => TarPlace::After(p),
                    false => TarPlace::In(p),
                }
            }),
            what: what.into(),
        }
    }

    /// A damaged header of the member named `path` (the name is read before its numbers, so
    /// it can be given: it says more than the member before it).
    fn bad_in(&self, offset: u64, path: &[u8], what: impl Into<String>) -> Error {
        if path.is_empty() {
            return self.bad(offset, what);
        }
        Error::BadTar {
            offset,
            member: Some(TarPlace::In(path_text(path))),
            what: what.into(),
        }
    }

    /// The next member, or `Err(End)` at the end-of-archive marker. The previous member's
    /// payload must have been read completely.
    pub fn next_member(&mut self) -> Result<std::result::Result<Member, End>> {
        self.settle()?;
        assert_eq!(self.remaining, 0, "payload not consumed");
        assert!(!self.done, "read past the end of the archive");
        let mut head = Vec::with_capacity(BLOCK * 3);
        self.read_into(&mut head, self.pad, "padding after the member's data")?;
        self.pad = 0;
        self.in_next_headers = true;

        let mut m = Member::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let start = self.src.offset;
            let at = head.len();
            let n = self.read_block(&mut head)?;
            if n == 0 {
                let what = match start {
                    0 => "the stream is empty: not even a tar stream's end-of-archive marker",
                    _ => "stream ends without an end-of-archive marker (truncated?)",
                };
                return Err(self.bad(start, what));
            }
            if n < BLOCK {
                let what = format!("truncated header: {n} of 512 bytes");
                return Err(self.bad(start, with_hint(what, start, &head[at..])));
            }
            let block: &[u8; BLOCK] = head[at..].try_into().expect("one block");
            let h = Header(block);
            if h.is_zero() {
                self.done = true;
                self.end_at = start;
                return Ok(Err(End { head }));
            }
            h.checksum_ok()
                .map_err(|e| self.bad(start, with_hint(e, start, block)))?;
            let typeflag = h.typeflag();
            let size = h.size().map_err(|e| self.bad(start, e))?;
            match typeflag {
                header::PAX_LOCAL
                | header::PAX_GLOBAL
                | header::SOLARIS_EXT
                | header::GNU_LONGNAME
                | header::GNU_LONGLINK => {
                    if size > MAX_META_PAYLOAD {
                        return Err(self.bad(
                            start,
                            format!(
                                "{} header of {size} bytes is too large",
                                kind_name(typeflag)
                            ),
                        ));
                    }
                    if head.len() as u64 + size > MAX_HEAD as u64 {
                        return Err(self.bad(
                            start,
                            format!("more than {} MiB of extension headers", MAX_HEAD >> 20),
                        ));
                    }
                    let data_at = head.len();
                    let data_offset = self.src.offset;
                    let padded = size.next_multiple_of(BLOCK as u64);
                    self.read_into(&mut head, padded, "extended header data")?;
                    let data = &head[data_at..data_at + size as usize];
                    match typeflag {
                        header::GNU_LONGNAME => long_name = Some(header::cstr(data).to_vec()),
                        header::GNU_LONGLINK => long_link = Some(header::cstr(data).to_vec()),
                        header::PAX_GLOBAL => {
                            // Kept verbatim in the stream. A new global header replaces the
                            // last one's records, as in GNU tar, from the next member on. Only
                            // the last record of each key counts, so every later member is
                            // given a handful of records, not the header's thousands.
                            let recs = pax::parse_records(data, 0)
                                .map_err(|(at, e)| self.bad(data_offset + at as u64, e))?;
                            self.saw_global = true;
                            self.global.clear();
                            for r in recs.into_iter().filter(|r| global_applies(&r.key)) {
                                self.global.retain(|g| g.key != r.key);
                                self.global.push(r);
                            }
                        }
                        _ => {
                            // Of two local headers in a row, only the last applies, as GNU
                            // tar and bsdtar read them.
                            m.pax = pax::parse_records(data, 0)
                                .map_err(|(at, e)| self.bad(data_offset + at as u64, e))?;
                        }
                    }
                }
                _ => {
                    m.offset = start;
                    m.typeflag = typeflag;
                    m.global_records = self.global.len();
                    m.pax.splice(0..0, self.global.iter().cloned());
                    self.fill_member(&mut m, &h, size, long_name, long_link)
                        .map_err(|e| self.bad_in(start, m.real_path(), e))?;
                    let current = self.current.get_or_insert_with(Vec::new);
                    current.clear();
                    current.extend_from_slice(m.real_path());
                    self.in_next_headers = false;
                    if h.gnu_sparse() {
                        let extended = h.gnu_sparse_extended();
                        m.gnu_sparse =
                            sparse_entries(&block[386..482]).map_err(|e| self.bad(start, e))?;
                        if extended {
                            self.read_sparse_extensions(&mut head, &mut m.gnu_sparse)?;
                        }
                    }
                    m.head = head;
                    self.remaining = m.payload_len;
                    self.pad = m.payload_len.next_multiple_of(BLOCK as u64) - m.payload_len;
                    return Ok(Ok(m));
                }
            }
        }
    }

    fn fill_member(
        &self,
        m: &mut Member,
        h: &Header,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> std::result::Result<(), String> {
        m.names_twice = (long_name.is_some() && pax::lookup(&m.pax, "path").is_some())
            || (long_link.is_some() && pax::lookup(&m.pax, "linkpath").is_some());
        m.path = match pax::lookup(&m.pax, "path") {
            Some(p) => p.to_vec(),
            None => long_name.unwrap_or_else(|| h.name()),
        };
        m.link = match pax::lookup(&m.pax, "linkpath") {
            Some(p) => p.to_vec(),
            None => long_link.unwrap_or_else(|| h.linkname()),
        };
        m.mode = h.mode()?;
        m.uid = h.uid()?;
        m.gid = h.gid()?;
        m.mtime = h.mtime()?;
        m.uname = h.uname();
        m.gname = h.gname();
        // Device numbers only of devices, as GNU tar reads them: another member's fields
        // may hold anything.
        if h.dialect() != Dialect::V7 && matches!(m.typeflag, b'3' | b'4') {
            m.devmajor = h.devmajor()?;
            m.devminor = h.devminor()?;
        }
        pax::check_numbers(&m.pax)?;
        pax::check_sparse_pairs(&m.pax)?;
        let size = match pax::lookup(&m.pax, "size") {
            // Capped like header sizes (i64), so padding arithmetic cannot overflow.
            Some(v) => pax::parse_decimal(v)
                .filter(|&s| s <= i64::MAX as u64)
                .ok_or("malformed PAX size record")?,
            None => size,
        };
        if h.gnu_sparse() {
            m.gnu_realsize = Some(h.gnu_realsize()?);
        }
        // Links, devices, fifos and directories carry no data whatever their size says
        // (POSIX: "no data logical records shall be stored"), and the blocks after their
        // header are the next member's, as GNU tar extracts them, and as bsdtar and Go's
        // archive/tar read them. A hard link's header may carry its target's size ("links 0
        // size on tape", GNU tar's list.c). Only GNU tar's listing skips `size` bytes after a
        // symlink, device or fifo; following it would hide from the tree members that every
        // extractor, and an image made of the stream, holds.
        m.payload_len = if header_only(m.typeflag) { 0 } else { size };
        Ok(())
    }

    /// Old GNU sparse maps that do not fit the header continue in extension blocks, each
    /// flagging whether another follows.
    fn read_sparse_extensions(
        &mut self,
        head: &mut Vec<u8>,
        map: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        loop {
            let start = self.src.offset;
            let at = head.len();
            // A block may hold no entry and still say another follows.
            if at + BLOCK > MAX_HEAD {
                return Err(self.bad(
                    start,
                    format!("more than {} MiB of extension headers", MAX_HEAD >> 20),
                ));
            }
            if self.read_block(head)? < BLOCK {
                return Err(self.bad(start, "truncated sparse extension header"));
            }
            let entries = sparse_entries(&head[at..at + 504]).map_err(|e| self.bad(start, e))?;
            map.extend(entries);
            if map.len() > MAX_SPARSE_ENTRIES {
                return Err(self.bad(start, "sparse map too long"));
            }
            if head[at + 504] == 0 {
                return Ok(());
            }
        }
    }

    /// Append up to one block to `buf`; returns how many bytes there were.
    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        let at = buf.len();
        buf.resize(at + BLOCK, 0);
        let n = self.src.fill(&mut buf[at..])?;
        buf.truncate(at + n);
        Ok(n)
    }

    fn read_into(&mut self, buf: &mut Vec<u8>, len: u64, what: &str) -> Result<()> {
        let at = buf.len();
        let start = self.src.offset;
        buf.resize(at + len as usize, 0);
        let n = self.src.fill(&mut buf[at..])?;
        if (n as u64) < len {
            return Err(self.bad(
                start + n as u64,
                format!("stream ends inside the {what} ({n} of {len} bytes)"),
            ));
        }
        Ok(())
    }

    /// Read payload bytes of the current member. Returns 0 once the payload is complete; a
    /// stream that ends early is an error naming the member.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.settle()?;
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.src.fill(&mut buf[..want])?;
        self.remaining -= n as u64;
        if n < want {
            return Err(self.bad(
                self.src.offset,
                format!(
                    "stream ends inside the member's data ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        Ok(n)
    }

    /// After the end-of-archive block: the rest of the source, whatever it holds.
    pub fn read_rest(&mut self, buf: &mut [u8]) -> Result<usize> {
        debug_assert!(self.done);
        self.settle()?;
        self.check_trailer()?;
        self.src.fill(buf)
    }

    /// Refuses a trailer past [`MAX_TRAILER`], where it passes the bound.
    fn check_trailer(&self) -> Result<()> {
        // The trailer is what follows the marker's block.
        let trailer_at = self.end_at + BLOCK as u64;
        if self.src.offset.saturating_sub(trailer_at) <= MAX_TRAILER {
            return Ok(());
        }
        // No member's: the marker names the place.
        Err(Error::BadTar {
            offset: trailer_at + MAX_TRAILER,
            member: None,
            what: format!(
                "more than {} MiB follow the end-of-archive marker at byte {}: a tar stream \
                 ends with its last record's padding, so this source does not end (is it \
                 /dev/zero or a whole disk?); cut it at the marker's record",
                MAX_TRAILER >> 20,
                self.end_at
            ),
        })
    }

    /// [`TarReader::read_payload`] without a copy: the next bytes of the current member's
    /// payload as the source holds them, and whether the payload ends with them; `(&[],
    /// true)` once it has ended. They are the caller's until its next call to the reader.
    pub fn payload_slice(&mut self) -> Result<(&[u8], bool)> {
        self.settle()?;
        if self.remaining == 0 {
            return Ok((&[], true));
        }
        let held = self.src.inner.fill_buf()?.len();
        if held == 0 {
            return Err(self.bad(
                self.src.offset,
                format!(
                    "stream ends inside the member's data ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        let n = held.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.remaining -= n as u64;
        self.lent = n;
        let last = self.remaining == 0;
        Ok((&self.src.inner.fill_buf()?[..n], last))
    }

    /// [`TarReader::read_rest`] without a copy, as [`TarReader::payload_slice`]: `(&[],
    /// true)` at the end of the source.
    pub fn rest_slice(&mut self) -> Result<(&[u8], bool)> {
        debug_assert!(self.done);
        self.settle()?;
        self.check_trailer()?;
        let held = self.src.inner.fill_buf()?.len();
        self.lent = held;
        Ok((&self.src.inner.fill_buf()?[..held], held == 0))
    }
}

/// Member types that never have data after their header.
fn header_only(typeflag: u8) -> bool {
    matches!(
        typeflag,
        header::HARDLINK | b'2' | b'3' | b'4' | header::DIRECTORY | b'6'
    )
}

/// Old GNU sparse map entries: 24-byte (offset, numbytes) pairs of numeric fields; an empty
/// offset ends the list.
fn sparse_entries(area: &[u8]) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    for e in area.chunks_exact(24) {
        if e[0] == 0 {
            break;
        }
        let field = |f: &[u8]| {
            header::parse_number(f)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| "malformed sparse map entry".to_string())
        };
        out.push((field(&e[..12])?, field(&e[12..])?));
    }
    Ok(out)
}

fn kind_name(typeflag: u8) -> &'static str {
    match typeflag {
        header::GNU_LONGNAME => "GNU long name",
        header::GNU_LONGLINK => "GNU long link",
        _ => "PAX",
    }
}
