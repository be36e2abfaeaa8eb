//! A gzip-wrapped stream read as gzip(1) reads one: members one after another, and after the
//! last, zero bytes ignored (tape-block padding, which `tar -z -b N` writes to a device).
//! Anything else after the last member is refused where it starts, rather than decoded as a
//! broken next member (which would blame a header or the end of the file).

use std::io::{BufRead, Error, ErrorKind, Read, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::bufread::GzDecoder;

pub(crate) struct GzipMembers<R: BufRead> {
    /// The member being read; None once the stream has ended.
    member: Option<GzDecoder<R>>,
}

impl<R: BufRead> GzipMembers<R> {
    pub(crate) fn new(input: R) -> Self {
        GzipMembers {
            member: Some(GzDecoder::new(input)),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        while let Some(member) = &mut self.member {
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member ended, its trailer read and nothing after it consumed.
            let mut rest = self.member.take().expect("matched above").into_inner();
            if another_member(&mut rest)? {
                self.member = Some(GzDecoder::new(rest));
            }
        }
        Ok(0)
    }
}

/// After a member: true if another starts here, false at the end (after nothing or zeros);
/// an error at the first byte that is neither.
fn another_member(r: &mut impl BufRead) -> Result<bool> {
    match r.fill_buf()?.first() {
        None => return Ok(false),
        // A header that is not quite gzip's is the decoder's to report.
        Some(0x1f) => return Ok(true),
        Some(_) => {}
    }
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            r.consume(i);
            return Err(Error::new(
                ErrorKind::InvalidData,
                "bytes after the last gzip member that are neither another member nor zero \
                 padding (gzip calls them trailing garbage)",
            ));
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// A buffered reader that counts the bytes its reader consumed: where a decoder was when it
/// failed, to the byte.
pub(super) struct Tally<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Tally<R> {
    pub(super) fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        Tally { inner, count }
    }
}

impl<R: BufRead> BufRead for Tally<R> {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<R: BufRead> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read(input: &[u8]) -> (Result<Vec<u8>>, u64) {
        let count = Arc::new(AtomicU64::new(0));
        let mut r = GzipMembers::new(Tally::new(std::io::BufReader::new(input), count.clone()));
        let mut out = Vec::new();
        let got = r.read_to_end(&mut out).map(|_| out);
        (got, count.load(Ordering::Relaxed))
    }

    #[test]
    fn members_follow_each_other_and_zeros_end_the_stream() {
        let mut input = gz(b"one ");
        input.extend(gz(b"two"));
        assert_eq!(read(&input).0.unwrap(), b"one two");
        input.extend([0; 10_000]);
        assert_eq!(read(&input).0.unwrap(), b"one two");
    }

    #[test]
    fn trailing_garbage_is_refused_where_it_starts() {
        let mut input = gz(b"data");
        let end = input.len() as u64;
        input.extend([0, 0, b'\n']);
        let (got, at) = read(&input);
        let err = got.unwrap_err();
        assert!(err.to_string().contains("trailing garbage"), "{err}");
        assert_eq!(at, end + 2);
        // One stray byte after the member: not "unexpected end of file".
        let mut input = gz(b"data");
        input.push(b'\n');
        let err = read(&input).0.unwrap_err();
        assert!(err.to_string().contains("trailing garbage"), "{err}");
    }
}
