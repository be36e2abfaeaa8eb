//! Content-defined chunking of one payload with FastCDC, streaming through a fixed buffer.
//!
//! Cut points depend only on the payload's bytes, never on how they arrived: a cut found at the
//! very end of the buffer is not trusted until more data (or the payload's end) confirms it.

use fastcdc::v2020::FastCDC;

use crate::error::Result;

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
        mut fill: impl FnMut(&mut [u8]) -> Result<usize>,
        mut emit: impl FnMut(&[u8]) -> Result<()>,
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
                let (_, cut) = cdc.cut(start, end - start);
                if cut == end && !finished {
                    break; // may move once more data is here
                }
                emit(&data[start..cut])?;
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
