//! Content-defined chunking of one payload with FastCDC, streaming through a fixed buffer.
//!
//! Cut points depend only on the payload's bytes, never on how they arrived: a cut found at the
//! very end of the buffer is not trusted until more data (or the payload's end) confirms it.
//! An incremental ingest passes the chunks a file had in the parent snapshot as hints, which
//! spare the scan for cut points while the bytes still match them.

use fastcdc::v2020::FastCDC;

use crate::error::Result;
use crate::ids::ChunkId;

pub const MIN_CHUNK: usize = 4 << 10;
pub const AVG_CHUNK: usize = 16 << 10;
pub const MAX_CHUNK: usize = 64 << 10;

/// Buffer size: large enough to amortize refills, a multiple of the largest chunk.
const BUFFER: usize = 16 * MAX_CHUNK;

pub struct Chunker {
    /// Allocated once; bytes `start..end` are waiting to be chunked.
    buf: Box<[u8]>,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            buf: vec![0u8; BUFFER].into_boxed_slice(),
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
        self.chunk_hinted(fill, &[], |c, _| emit(c))
    }

    /// [`Chunker::chunk`] with `hints`: the chunks (length and id) of an earlier payload of
    /// the same length, all of them or the first ones. While the bytes still hash to them,
    /// their cuts are taken without scanning for cut points (the same bytes from the same
    /// start give the same cuts, and the last chunk was cut by the payload's end, which the
    /// same length keeps), and `emit` gets the id too. From the first chunk that differs on,
    /// cuts are found as usual. Hints from elsewhere cannot make the chunks wrong, only
    /// different.
    pub fn chunk_hinted(
        &mut self,
        mut fill: impl FnMut(&mut [u8]) -> Result<usize>,
        mut hints: &[(u32, ChunkId)],
        mut emit: impl FnMut(&[u8], Option<ChunkId>) -> Result<()>,
    ) -> Result<()> {
        let mut end = 0;
        let mut finished = false;
        loop {
            // Top the buffer up.
            while !finished && end < BUFFER {
                let n = fill(&mut self.buf[end..])?;
                end += n;
                finished = n == 0;
            }
            if end == 0 {
                return Ok(());
            }
            let data = &self.buf[..end];
            let cdc = FastCDC::new(data, MIN_CHUNK as u32, AVG_CHUNK as u32, MAX_CHUNK as u32);
            let mut start = 0;
            while start < end {
                if let Some(&(len, id)) = hints.first() {
                    let cut = start + len as usize;
                    if cut > end && !finished {
                        break; // the hinted chunk is not all here yet
                    }
                    if cut <= end && ChunkId::of(&data[start..cut]) == id {
                        emit(&data[start..cut], Some(id))?;
                        start = cut;
                        hints = &hints[1..];
                        continue;
                    }
                    hints = &[]; // the payload changed here
                }
                let (_, cut) = cdc.cut(start, end - start);
                if cut == end && !finished {
                    break; // may move once more data is here
                }
                emit(&data[start..cut], None)?;
                start = cut;
            }
            if finished && start == end {
                return Ok(());
            }
            self.buf.copy_within(start..end, 0);
            end -= start;
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

    type Hints = Vec<(u32, ChunkId)>;

    /// Chunk `data` with hints, in reads of `read_size`; the chunks, and how many cuts came
    /// from hints.
    fn chunk_hinted(
        data: &[u8],
        hints: &[(u32, ChunkId)],
        read_size: usize,
    ) -> (Vec<Vec<u8>>, usize) {
        let mut pos = 0;
        let (mut out, mut hinted) = (Vec::new(), 0);
        Chunker::default()
            .chunk_hinted(
                |buf| {
                    let n = buf.len().min(read_size).min(data.len() - pos);
                    buf[..n].copy_from_slice(&data[pos..pos + n]);
                    pos += n;
                    Ok(n)
                },
                hints,
                |c, id| {
                    if let Some(id) = id {
                        assert_eq!(id, ChunkId::of(c));
                        hinted += 1;
                    }
                    out.push(c.to_vec());
                    Ok(())
                },
            )
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
            let (cut, hinted) = chunk_hinted(&after, &hints(&chunks_of(&before, usize::MAX)), read_size);
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
