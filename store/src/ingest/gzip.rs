//! A gzip-wrapped stream read as gzip(1) reads one: members one after another, and after the
//! last, zero bytes ignored (tape-block padding, which `tar -z -b N` writes to a device).
//! Anything else after the last member is refused where it starts, rather than decoded as a
//! broken next member (which would blame a header or the end of the file).

use std::io::{BufRead, Error, ErrorKind, Read, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::bufread::GzDecoder;

pub(crate) struct GzipMembers<R: BufRead> {
    state: State<R>,
}

enum State<R: BufRead> {
    /// In a member (boxed: the decoder's state is large, and the state moves on every read).
    Member(Box<GzDecoder<R>>),
    /// After one, not yet known whether another follows (looked at again if the look failed).
    Between(R),
    End,
}

impl<R: BufRead> GzipMembers<R> {
    pub(crate) fn new(input: R) -> Self {
        GzipMembers {
            state: State::Member(Box::new(GzDecoder::new(input))),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            // Taken, and put back unless it moves on: an error leaves it as it was, so a
            // reader that retries (after EINTR) goes on where it stopped.
            match std::mem::replace(&mut self.state, State::End) {
                State::Member(mut member) => match member.read(buf) {
                    Ok(0) if !buf.is_empty() => {
                        // The member ended, its trailer read and nothing after it consumed.
                        self.state = State::Between((*member).into_inner());
                    }
                    read => {
                        self.state = State::Member(member);
                        return read;
                    }
                },
                State::Between(mut rest) => match another_member(&mut rest) {
                    Ok(true) => self.state = State::Member(Box::new(GzDecoder::new(rest))),
                    Ok(false) => return Ok(0),
                    Err(e) => {
                        self.state = State::Between(rest);
                        return Err(e);
                    }
                },
                State::End => return Ok(0),
            }
        }
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

/// A reader that counts the bytes taken from it: as a `BufRead`, those its reader consumed
/// (where gzip's decoder was when it failed, to the byte); as a `Read`, those read (zstd's
/// decoder counts input consumed only once a block decodes, so its failure is placed at the
/// end of what it had read, near the damage, not at the start of its buffer).
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

impl<R: Read> Read for Tally<R> {
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

    /// A reader interrupted once, where the first member ends.
    struct Hiccup<'a> {
        data: &'a [u8],
        at: usize,
        hiccup_at: usize,
    }

    impl std::io::Read for Hiccup<'_> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Hiccup<'_> {
        fn fill_buf(&mut self) -> Result<&[u8]> {
            if self.at == self.hiccup_at {
                self.hiccup_at = usize::MAX;
                return Err(ErrorKind::Interrupted.into());
            }
            let end = if self.at < self.hiccup_at {
                self.hiccup_at
            } else {
                usize::MAX
            };
            let end = end.min(self.data.len());
            Ok(&self.data[self.at..end])
        }

        fn consume(&mut self, n: usize) {
            self.at += n;
        }
    }

    /// Interrupted as it looks for a next member, the reader retried goes on to it, rather
    /// than ending the stream there.
    #[test]
    fn an_interrupted_look_for_the_next_member_is_looked_again() {
        let first = gz(b"one ");
        let input = [first.clone(), gz(b"two")].concat();
        let mut r = GzipMembers::new(Hiccup {
            data: &input,
            at: 0,
            hiccup_at: first.len(),
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"one two");
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
