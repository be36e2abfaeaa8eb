//! Content-defined chunking of one payload with FastCDC, streaming through a fixed buffer.
//!
//! Cut points depend only on the payload's bytes, never on how they arrived: a cut found at the
//! very end of the buffer is not trusted until more data (or the payload's end) confirms it.

use std::ops::Range;

use fastcdc::v2020::FastCDC;

use crate::error::Result;
use crate::ids::ChunkId;

pub const MIN_CHUNK: usize = 4 << 10;
pub const AVG_CHUNK: usize = 16 << 10;
pub const MAX_CHUNK: usize = 64 << 10;

/// Buffer size: large enough to amortize refills, a multiple of the largest chunk.
const BUFFER: usize = 16 * MAX_CHUNK;

pub struct Chunker {
    /// Bytes `..used` are spoken for: chunks already emitted, then the current payload's bytes
    /// that wait for a cut. A payload is appended after the ones before it, so many small
    /// payloads share one buffer and the buffer is handed on only when it is full.
    buf: Box<[u8]>,
    used: usize,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            buf: Self::buffer(),
            used: 0,
        }
    }
}

impl Chunker {
    /// A buffer of the size the chunker works in.
    pub fn buffer() -> Box<[u8]> {
        vec![0u8; BUFFER].into_boxed_slice()
    }

    /// Split the bytes `fill` produces (it writes into the slice it is given and returns how
    /// many bytes it wrote, 0 at the end) into chunks, calling `emit` for each in order.
    pub fn chunk(
        &mut self,
        fill: impl FnMut(&mut [u8]) -> Result<usize>,
        emit: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        /// One buffer, reused: the waiting bytes move to its start.
        struct InPlace<F>(F);
        impl<F: FnMut(&[u8]) -> Result<()>> ChunkSink for InPlace<F> {
            fn chunk(&mut self, buf: &[u8], at: Range<usize>, _: Option<ChunkId>) -> Result<()> {
                (self.0)(&buf[at])
            }
            fn full(&mut self, buf: &mut Box<[u8]>, waiting: Range<usize>) -> Result<()> {
                buf.copy_within(waiting, 0);
                Ok(())
            }
        }
        self.used = 0;
        self.chunk_into(fill, &mut InPlace(emit), &[])
    }

    /// Chunk one payload into the shared buffer, after the payloads before it; `sink` gets
    /// each chunk, and the buffer whenever it is full.
    ///
    /// `hints` are the chunks (length and id) of an earlier payload of the same length, all of
    /// them or the first ones. While the bytes still hash to them, their cuts are taken
    /// without scanning for cut points: the same bytes from the same start give the same cuts
    /// (the last chunk was cut by the payload's end, which the same length keeps). From the
    /// first chunk that differs on, cuts are found as usual. Hints from elsewhere cannot make
    /// the chunks wrong, only different.
    pub fn chunk_into(
        &mut self,
        mut fill: impl FnMut(&mut [u8]) -> Result<usize>,
        sink: &mut impl ChunkSink,
        mut hints: &[(u32, ChunkId)],
    ) -> Result<()> {
        let mut start = self.used;
        let mut finished = false;
        loop {
            // Top the buffer up.
            while !finished && self.used < self.buf.len() {
                let n = fill(&mut self.buf[self.used..])?;
                self.used += n;
                finished = n == 0;
            }
            let end = self.used;
            let cdc = FastCDC::new(
                &self.buf[..end],
                MIN_CHUNK as u32,
                AVG_CHUNK as u32,
                MAX_CHUNK as u32,
            );
            while start < end {
                if let Some(&(len, id)) = hints.first() {
                    let cut = start + len as usize;
                    if cut > end && !finished {
                        break; // the hinted chunk is not all here yet
                    }
                    if cut <= end && ChunkId::of(&self.buf[start..cut]) == id {
                        sink.chunk(&self.buf, start..cut, Some(id))?;
                        start = cut;
                        hints = &hints[1..];
                        continue;
                    }
                    hints = &[]; // the payload changed here
                }
                // Offsets from `cut` are absolute; only the bytes from `start` are read.
                let (_, cut) = cdc.cut(start, end - start);
                if cut == end && !finished {
                    break; // may move once more data is here
                }
                sink.chunk(&self.buf, start..cut, None)?;
                start = cut;
            }
            if finished && start == end {
                return Ok(());
            }
            // The buffer is full and `start..end` (less than a chunk) waits for more bytes.
            sink.full(&mut self.buf, start..end)?;
            debug_assert_eq!(self.buf.len(), BUFFER);
            self.used = end - start;
            start = 0;
        }
    }

    /// Hand the buffer on between payloads, putting `fresh` in its place.
    pub fn take(&mut self, fresh: Box<[u8]>) -> Box<[u8]> {
        debug_assert_eq!(fresh.len(), BUFFER);
        self.used = 0;
        std::mem::replace(&mut self.buf, fresh)
    }

    /// The buffer, with the chunks of the last payloads in it.
    pub fn into_buffer(self) -> Box<[u8]> {
        self.buf
    }
}

/// Where [`Chunker::chunk_into`] puts what it finds.
pub trait ChunkSink {
    /// A chunk: the range `at` of the buffer, with its id when the chunker has hashed it
    /// (to check it against a hint).
    fn chunk(&mut self, buf: &[u8], at: Range<usize>, id: Option<ChunkId>) -> Result<()>;
    /// The buffer is full. Leave a buffer of the same size in its place (say, a fresh one,
    /// handing the full one on with the chunks found in it), with the bytes `waiting` (the
    /// start of a chunk not cut yet) moved to its start.
    fn full(&mut self, buf: &mut Box<[u8]>, waiting: Range<usize>) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks_of(data: &[u8], read_size: usize) -> Vec<Vec<u8>> {
        let mut pos = 0;
        let mut out = Vec::new();
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
            len in 0usize..3_000_000, seed: u64, read_size in 1usize..400_000
        ) {
            let data = pseudo_random(len, seed);
            let a = chunks_of(&data, read_size);
            let b = chunks_of(&data, usize::MAX);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.concat(), data);
            for (i, c) in a.iter().enumerate() {
                prop_assert!(c.len() <= MAX_CHUNK);
                prop_assert!(c.len() >= MIN_CHUNK || i == a.len() - 1);
            }
        }
    }

    /// Collects chunks the way the ingest's parse stage does: payloads share a buffer, and a
    /// full buffer is swapped for a fresh one.
    #[derive(Default)]
    struct Collect {
        chunks: Vec<Vec<u8>>,
        /// Chunks whose cut came from a hint.
        hinted: usize,
        swaps: usize,
    }

    impl ChunkSink for Collect {
        fn chunk(&mut self, buf: &[u8], at: Range<usize>, id: Option<ChunkId>) -> Result<()> {
            if let Some(id) = id {
                assert_eq!(id, ChunkId::of(&buf[at.clone()]));
                self.hinted += 1;
            }
            self.chunks.push(buf[at].to_vec());
            Ok(())
        }
        fn full(&mut self, buf: &mut Box<[u8]>, waiting: Range<usize>) -> Result<()> {
            let mut fresh = vec![0xa5; BUFFER].into_boxed_slice();
            fresh[..waiting.len()].copy_from_slice(&buf[waiting]);
            *buf = fresh;
            self.swaps += 1;
            Ok(())
        }
    }

    type Hints = Vec<(u32, ChunkId)>;

    /// Chunk payloads one after another into one chunker, each with its hints.
    fn chunk_payloads(payloads: &[(&[u8], Hints)], read_size: usize) -> Collect {
        let mut chunker = Chunker::default();
        let mut sink = Collect::default();
        for (data, hints) in payloads {
            let mut pos = 0;
            let fill = |buf: &mut [u8]| {
                let n = buf.len().min(read_size).min(data.len() - pos);
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                Ok(n)
            };
            chunker.chunk_into(fill, &mut sink, hints).unwrap();
        }
        sink
    }

    fn hints(chunks: &[Vec<u8>]) -> Hints {
        chunks
            .iter()
            .map(|c| (c.len() as u32, ChunkId::of(c)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Payloads sharing a swapped buffer are cut as each would be alone.
        #[test]
        fn payloads_sharing_a_buffer_are_cut_as_alone(
            lens in proptest::collection::vec(0usize..300_000, 1..12),
            seed: u64,
            read_size in 1usize..200_000,
        ) {
            let data: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| pseudo_random(n, seed.wrapping_add(i as u64)))
                .collect();
            let payloads: Vec<_> = data.iter().map(|d| (d.as_slice(), Vec::new())).collect();
            let shared = chunk_payloads(&payloads, read_size);
            let alone: Vec<Vec<u8>> = data.iter().flat_map(|d| chunks_of(d, usize::MAX)).collect();
            prop_assert_eq!(shared.chunks, alone);
            let total: usize = lens.iter().sum();
            prop_assert!(shared.swaps >= total / BUFFER);
        }

        /// With the chunks of an earlier version as hints, a payload is cut exactly as without
        /// them, whatever changed: the hints are taken while they hold, then cuts are found.
        #[test]
        fn hints_never_change_the_cuts(
            len in 0usize..1_500_000,
            seed: u64,
            edit_at in 0.0f64..1.0,
            edit in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            read_size in 1usize..400_000,
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
            let hinted = chunk_payloads(&[(&after, hints(&chunks_of(&before, usize::MAX)))], read_size);
            prop_assert_eq!(&hinted.chunks, &plain);
            if edit.is_none() || at >= len {
                prop_assert_eq!(hinted.hinted, plain.len(), "every cut of an unchanged payload comes from its hints");
            }
        }
    }

    #[test]
    fn hints_from_other_cuts_still_give_the_payload() {
        // Hints that are not the cuts this chunker would make (another version's, say) are
        // taken while the bytes match them: the chunks differ, the bytes never do.
        let data = pseudo_random(500_000, 3);
        let odd: Vec<Vec<u8>> = data.chunks(10_000).map(|c| c.to_vec()).collect();
        let got = chunk_payloads(&[(&data, hints(&odd))], 1 << 20);
        assert_eq!(got.chunks, odd);
        assert_eq!(got.hinted, odd.len());
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
