//! Content-defined chunking of one payload with FastCDC, over the slices a [`Feed`] lends.
//!
//! Chunks are cut where the bytes already are: only a chunk that begins in one slice and ends
//! in a later one is copied, into a carry buffer of at most one chunk, and only as much of the
//! later slice as that chunk needs. Cut points depend only on the payload's bytes, never on
//! how they arrived: a cut found at the very end of a slice is not trusted until more data (or
//! the payload's end) confirms it. An incremental ingest passes the chunks a file had in the
//! parent snapshot as hints, which spare the scan for cut points while the bytes still match
//! them.

use fastcdc::v2020::FastCDC;

use crate::error::Result;
use crate::ids::ChunkId;

pub const MIN_CHUNK: usize = 4 << 10;
pub const AVG_CHUNK: usize = 16 << 10;
pub const MAX_CHUNK: usize = 64 << 10;

/// Where the chunker gets one payload's bytes: slices in order, borrowed where the source
/// holds them already.
pub trait Feed {
    /// The next bytes, and whether the payload ends with them; `(&[], true)` once it has
    /// ended. A slice is the chunker's until its next call.
    fn next(&mut self) -> Result<(&[u8], bool)>;
}

/// A [`Feed`] from `fill`, which writes into the slice it is given and returns how many bytes
/// it wrote, 0 at the end: read into a buffer of its own.
pub struct FillFeed<F> {
    fill: F,
    buf: Box<[u8]>,
    ended: bool,
}

impl<F: FnMut(&mut [u8]) -> Result<usize>> FillFeed<F> {
    /// Reads of up to 1 MiB: large enough to amortize the calls.
    pub fn new(fill: F) -> Self {
        FillFeed {
            fill,
            buf: vec![0u8; 16 * MAX_CHUNK].into_boxed_slice(),
            ended: false,
        }
    }
}

impl<F: FnMut(&mut [u8]) -> Result<usize>> Feed for FillFeed<F> {
    fn next(&mut self) -> Result<(&[u8], bool)> {
        let mut n = 0;
        while !self.ended && n < self.buf.len() {
            match (self.fill)(&mut self.buf[n..])? {
                0 => self.ended = true,
                k => n += k,
            }
        }
        Ok((&self.buf[..n], self.ended))
    }
}

pub struct Chunker {
    /// A chunk begun in one slice and ended in a later one, made whole here.
    carry: Vec<u8>,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            carry: Vec::with_capacity(MAX_CHUNK),
        }
    }
}

impl Chunker {
    /// Split the bytes `fill` produces (it writes into the slice it is given and returns how
    /// many bytes it wrote, 0 at the end) into chunks, calling `emit` for each in order.
    pub fn chunk(
        &mut self,
        fill: impl FnMut(&mut [u8]) -> Result<usize>,
        mut emit: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.chunk_hinted(&mut FillFeed::new(fill), &[], |c, _| emit(c))
    }

    /// Split the payload `feed` lends into chunks, calling `emit` for each in order, with
    /// `hints`: the chunks (length and id) of an earlier payload of the same length, all of
    /// them or the first ones. While the bytes still hash to them, their cuts are taken
    /// without scanning for cut points (the same bytes from the same start give the same
    /// cuts, and the last chunk was cut by the payload's end, which the same length keeps),
    /// and `emit` gets the id too. From the first chunk that differs on, cuts are found as
    /// usual. Hints from elsewhere cannot make the chunks wrong, only different.
    pub fn chunk_hinted(
        &mut self,
        feed: &mut impl Feed,
        hints: &[(u32, ChunkId)],
        mut emit: impl FnMut(&[u8], Option<ChunkId>) -> Result<()>,
    ) -> Result<()> {
        // A hint no chunk can match (empty, or longer than any chunk) ends the usable ones.
        let usable = hints
            .iter()
            .position(|&(len, _)| len == 0 || len as usize > MAX_CHUNK)
            .unwrap_or(hints.len());
        let mut hints = &hints[..usable];
        let carry = &mut self.carry;
        carry.clear();
        loop {
            let (slice, last) = feed.next()?;
            let mut pos = 0;
            // Bytes at the end of `carry` that were copied from this slice: they can be
            // given back to it.
            let mut copied = 0;
            // A chunk begun in an earlier slice, made whole in `carry` with no more of this
            // slice than it needs.
            while !carry.is_empty() {
                let need = hints.first().map_or(MAX_CHUNK, |h| h.0 as usize);
                let take = need.saturating_sub(carry.len()).min(slice.len() - pos);
                carry.extend_from_slice(&slice[pos..pos + take]);
                (pos, copied) = (pos + take, copied + take);
                let finished = last && pos == slice.len();
                if carry.len() < need && !finished {
                    break; // the rest of it is in the next slice
                }
                let cut = match hints.first() {
                    Some(&(len, id)) => {
                        let len = len as usize;
                        if len > carry.len() || ChunkId::of(&carry[..len]) != id {
                            // The payload changed here (or ends before the hint does).
                            hints = &[];
                            continue;
                        }
                        hints = &hints[1..];
                        emit(&carry[..len], Some(id))?;
                        len
                    }
                    None => {
                        let cdc = FastCDC::new(
                            carry,
                            MIN_CHUNK as u32,
                            AVG_CHUNK as u32,
                            MAX_CHUNK as u32,
                        );
                        let (_, cut) = cdc.cut(0, carry.len());
                        emit(&carry[..cut], None)?;
                        cut
                    }
                };
                let rest = carry.len() - cut;
                if rest <= copied {
                    pos -= rest;
                    carry.clear();
                } else {
                    carry.drain(..cut);
                }
            }
            if !carry.is_empty() {
                continue;
            }
            // Whole chunks within the slice, cut and hashed where they lie.
            let end = slice.len();
            let mut start = pos;
            while let Some(&(len, id)) = hints.first() {
                let cut = start + len as usize;
                if cut > end {
                    break; // not all here yet
                }
                if ChunkId::of(&slice[start..cut]) != id {
                    hints = &[]; // the payload changed here
                    break;
                }
                emit(&slice[start..cut], Some(id))?;
                start = cut;
                hints = &hints[1..];
            }
            if last {
                hints = &[]; // hints longer than the payload are wrong
            }
            if hints.is_empty() {
                let cdc = FastCDC::new(slice, MIN_CHUNK as u32, AVG_CHUNK as u32, MAX_CHUNK as u32);
                while start < end {
                    let (_, cut) = cdc.cut(start, end - start);
                    if cut == end && !last {
                        break; // may move once more data is here
                    }
                    emit(&slice[start..cut], None)?;
                    start = cut;
                }
            }
            if last {
                return Ok(());
            }
            carry.extend_from_slice(&slice[start..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks_of(data: &[u8], read_size: usize) -> Vec<Vec<u8>> {
        chunk_hinted(data, &[], read_size).0
    }

    /// A payload lent in slices of `size` bytes (the last one shorter), as the tar reader
    /// lends a member's bytes block by block. With `late_end` the end is only told by an
    /// empty slice, as the reader tells the end of a stream's trailer.
    struct Slices<'a> {
        data: &'a [u8],
        size: usize,
        late_end: bool,
    }

    impl Feed for Slices<'_> {
        fn next(&mut self) -> Result<(&[u8], bool)> {
            let (now, rest) = self.data.split_at(self.size.min(self.data.len()));
            self.data = rest;
            let last = if self.late_end {
                now.is_empty()
            } else {
                rest.is_empty()
            };
            Ok((now, last))
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Chunks reassemble the input, respect the size bounds, and do not depend on how
        /// the bytes were delivered.
        #[test]
        fn chunking_is_exact_bounded_and_delivery_independent(
            len in 0usize..3_000_000, seed: u64, read_size in 1usize..400_000, late_end: bool
        ) {
            let data = pseudo_random(len, seed);
            let a = chunks_of(&data, read_size);
            let b = chunks_of(&data, usize::MAX);
            prop_assert_eq!(&a, &b);
            let late = chunk_lent(&data, &[], read_size, late_end).0;
            prop_assert_eq!(&late, &b);
            prop_assert_eq!(&chunks_filled(&data, read_size), &b);
            prop_assert_eq!(a.concat(), data);
            for (i, c) in a.iter().enumerate() {
                prop_assert!(c.len() <= MAX_CHUNK);
                prop_assert!(c.len() >= MIN_CHUNK || i == a.len() - 1);
            }
        }
    }

    /// The chunks of `data` read (not lent) in reads of at most `read_size`, as the benches
    /// chunk.
    fn chunks_filled(data: &[u8], read_size: usize) -> Vec<Vec<u8>> {
        let (mut pos, mut out) = (0, Vec::new());
        Chunker::default()
            .chunk(
                |buf| {
                    let n = buf.len().min(read_size).min(data.len() - pos);
                    buf[..n].copy_from_slice(&data[pos..pos + n]);
                    pos += n;
                    Ok(n)
                },
                |c| {
                    out.push(c.to_vec());
                    Ok(())
                },
            )
            .unwrap();
        out
    }

    type Hints = Vec<(u32, ChunkId)>;

    /// Chunk `data` with hints, lent in slices of `read_size`; the chunks, and how many cuts
    /// came from hints.
    fn chunk_hinted(
        data: &[u8],
        hints: &[(u32, ChunkId)],
        read_size: usize,
    ) -> (Vec<Vec<u8>>, usize) {
        chunk_lent(data, hints, read_size, false)
    }

    fn chunk_lent(
        data: &[u8],
        hints: &[(u32, ChunkId)],
        read_size: usize,
        late_end: bool,
    ) -> (Vec<Vec<u8>>, usize) {
        let (mut out, mut hinted) = (Vec::new(), 0);
        let mut feed = Slices {
            data,
            size: read_size,
            late_end,
        };
        Chunker::default()
            .chunk_hinted(&mut feed, hints, |c, id| {
                if let Some(id) = id {
                    assert_eq!(id, ChunkId::of(c));
                    hinted += 1;
                }
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        (out, hinted)
    }

    fn hints(chunks: &[Vec<u8>]) -> Hints {
        chunks
            .iter()
            .map(|c| (c.len() as u32, ChunkId::of(c)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// With the chunks of an earlier version as hints, a payload is cut exactly as without
        /// them, whatever changed: the hints are taken while they hold, then cuts are found.
        #[test]
        fn hints_never_change_the_cuts(
            len in 0usize..1_500_000,
            seed: u64,
            edit_at in 0.0f64..1.0,
            edit in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            read_size in 1usize..400_000,
            late_end: bool,
        ) {
            let before = pseudo_random(len, seed);
            let mut after = before.clone();
            let at = (len as f64 * edit_at) as usize;
            if let Some(e) = &edit {
                // Overwrite in place, so the length (and so the hints' use) stays.
                for (i, b) in e.iter().enumerate() {
                    if let Some(x) = after.get_mut(at + i) {
                        *x ^= b | 1;
                    }
                }
            }
            let plain = chunks_of(&after, usize::MAX);
            let (cut, hinted) = chunk_lent(&after, &hints(&chunks_of(&before, usize::MAX)), read_size, late_end);
            prop_assert_eq!(&cut, &plain);
            if edit.is_none() || at >= len {
                prop_assert_eq!(hinted, plain.len(), "every cut of an unchanged payload comes from its hints");
            }
        }
    }

    #[test]
    fn hints_from_other_cuts_still_give_the_payload() {
        // Hints that are not the cuts this chunker would make (another version's, say) are
        // taken while the bytes match them: the chunks differ, the bytes never do.
        let data = pseudo_random(500_000, 3);
        let odd: Vec<Vec<u8>> = data.chunks(10_000).map(|c| c.to_vec()).collect();
        let (cut, hinted) = chunk_hinted(&data, &hints(&odd), 1 << 20);
        assert_eq!(cut, odd);
        assert_eq!(hinted, odd.len());
    }

    #[test]
    fn an_insertion_disturbs_only_nearby_chunks() {
        let data = pseudo_random(2_000_000, 7);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, b"inserted".iter().copied());
        let a: std::collections::HashSet<_> = chunks_of(&data, 1 << 20).into_iter().collect();
        let b = chunks_of(&edited, 1 << 20);
        let shared = b.iter().filter(|c| a.contains(*c)).count();
        assert!(
            shared + 3 >= b.len(),
            "{shared} of {} chunks shared",
            b.len()
        );
    }
}
