//! The cache of decoded frames: an LRU keyed by where a frame is stored, in which a frame
//! being decoded already has its slot, so a second reader of it (the export's read-ahead
//! and its replay, two FUSE threads) waits for that decode instead of doing it again. It is
//! bounded by the bytes its buffers hold, not by frames: a store holds frames of different
//! sizes (1 MiB from older writers, 2 MiB now, small metadata frames).
//! Buffers of frames that leave the cache are decoded into again: a fresh buffer costs as
//! much in page faults as a sixth of its decompression.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::ids::PackId;

/// Where a frame is stored: its pack and payload offset (gc reuses `frames` row ids).
pub(crate) type FrameKey = (PackId, u64);

/// Spare buffers kept for decoding into.
const SPARE: usize = 4;
/// Most frames one thread decodes inside one another: a delta frame's base is an object of
/// another frame, decoded first, to a depth of at most 16 as stores are written (FORMAT's
/// delta chains); deeper is a damaged index.
const MAX_NESTED: usize = 64;

std::thread_local! {
    /// The frames this thread is decoding, outermost first. A frame asked for again inside
    /// its own decode (its delta base said to lie in itself, or in a frame whose base lies in
    /// it) would wait on the lock its own decode holds, for good.
    static DECODING: std::cell::RefCell<Vec<FrameKey>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes `key` off this thread's [`DECODING`] when its decode ends, however it ends.
struct Decoding;

impl Decoding {
    fn enter(key: FrameKey) -> Result<Decoding> {
        DECODING.with_borrow_mut(|stack| {
            if stack.contains(&key) {
                return Err(Error::corrupt(format!(
                    "the frame at offset {} of pack {} is its own delta base, through the \
                     index's frames (a damaged index: `cellar repair-index` rebuilds it)",
                    key.1,
                    key.0.short()
                )));
            }
            if stack.len() >= MAX_NESTED {
                return Err(Error::corrupt(format!(
                    "the frame at offset {} of pack {} lies under more than {MAX_NESTED} delta \
                     bases (a damaged index: `cellar repair-index` rebuilds it)",
                    key.1,
                    key.0.short()
                )));
            }
            stack.push(key);
            Ok(Decoding)
        })
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        DECODING.with_borrow_mut(|stack| stack.pop());
    }
}
/// Most frames kept, however small they are.
const MAX_FRAMES: usize = 1024;

/// One frame's place in the cache: empty until its first reader has decoded it. That reader
/// holds the lock while decoding; a failed decode leaves it empty for the next to try.
/// `len` is the decoded length once there is one, readable without that lock.
#[derive(Default)]
struct Slot {
    frame: Mutex<Option<Arc<Vec<u8>>>>,
    len: AtomicUsize,
}

pub(crate) struct Frames {
    slots: Mutex<LruCache<FrameKey, Arc<Slot>>>,
    /// Decoded bytes kept, at most (but always the frame just decoded).
    budget: usize,
    spare: Mutex<Vec<Vec<u8>>>,
    /// Frames decoded so far, for tests of read orders.
    #[cfg(test)]
    decoded: AtomicUsize,
}

impl Frames {
    pub(crate) fn new(budget: usize) -> Self {
        Frames {
            slots: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_FRAMES).expect("nonzero"),
            )),
            budget,
            spare: Mutex::new(Vec::new()),
            #[cfg(test)]
            decoded: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn decoded(&self) -> usize {
        self.decoded.load(Ordering::Relaxed)
    }

    /// The decoded frame at `key`, from the cache, or made by `decode` (given an empty buffer
    /// to decode into). The second result says whether `decode` ran.
    pub(crate) fn get_or_decode(
        &self,
        key: FrameKey,
        decode: impl FnOnce(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<(Arc<Vec<u8>>, bool)> {
        let _decoding = Decoding::enter(key)?;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(&key) {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Arc::new(Slot::default());
                    if let Some((_, evicted)) = slots.push(key, slot.clone()) {
                        self.recycle(evicted);
                    }
                    slot
                }
            }
        };
        let mut decoded = slot.frame.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(frame) = &*decoded {
            return Ok((frame.clone(), false));
        }
        let buf = self
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let frame = Arc::new(decode(buf)?);
        #[cfg(test)]
        self.decoded.fetch_add(1, Ordering::Relaxed);
        // What it holds, not what it uses: a reused buffer may be larger than its frame.
        slot.len.store(frame.capacity(), Ordering::Relaxed);
        *decoded = Some(frame.clone());
        drop(decoded);
        self.trim();
        Ok((frame, true))
    }

    /// Evict least recently used frames until the decoded bytes fit the budget. Only the
    /// slots lock is taken (never a slot's own, which a decoding reader holds while it waits
    /// for this one), and the sum is over at most `MAX_FRAMES` counters.
    fn trim(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept: usize = slots
            .iter()
            .map(|(_, s)| s.len.load(Ordering::Relaxed))
            .sum();
        while kept > self.budget && slots.len() > 1 {
            let Some((_, evicted)) = slots.pop_lru() else {
                break;
            };
            kept -= evicted.len.load(Ordering::Relaxed);
            self.recycle(evicted);
        }
    }

    /// Keep an evicted frame's buffer for the next decode, unless something still reads it.
    fn recycle(&self, slot: Arc<Slot>) {
        let Ok(slot) = Arc::try_unwrap(slot) else {
            return;
        };
        let Some(Ok(mut buf)) = slot
            .frame
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .map(Arc::try_unwrap)
        else {
            return;
        };
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE {
            buf.clear();
            spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> FrameKey {
        (PackId([n; 32]), u64::from(n))
    }

    /// Decode `n` as a frame of `len` bytes; says whether the decode ran.
    fn get(frames: &Frames, n: u8, len: usize) -> bool {
        let (frame, decoded) = frames
            .get_or_decode(key(n), |mut buf| {
                // As the store decodes: into a buffer of the frame's size (a spare buffer
                // may be larger already, and is counted as it is).
                buf.reserve_exact(len);
                buf.resize(len, n);
                Ok(buf)
            })
            .unwrap();
        assert_eq!(frame.len(), len);
        decoded
    }

    #[test]
    fn the_budget_is_in_bytes_held() {
        let frames = Frames::new(10);
        for n in 1..=4 {
            assert!(get(&frames, n, 4));
        }
        // 4 + 4 fit in 10 bytes; the older two were evicted.
        assert!(!get(&frames, 4, 4));
        assert!(!get(&frames, 3, 4));
        assert!(get(&frames, 1, 4));
        // A frame over the budget is still kept, alone.
        assert!(get(&frames, 20, 100));
        assert!(!get(&frames, 20, 100));
        assert!(get(&frames, 4, 4));
        // Small frames, in buffers of their size: more of them fit.
        let small = Frames::new(10);
        for n in 10..15 {
            assert!(get(&small, n, 2));
        }
        assert!(!get(&small, 10, 2));
    }

    #[test]
    fn a_buffer_counts_at_its_capacity() {
        let frames = Frames::new(10);
        // One byte used of eight held.
        let get = |n: u8| {
            let decode = |_| {
                let mut buf = Vec::with_capacity(8);
                buf.push(n);
                Ok(buf)
            };
            frames.get_or_decode(key(n), decode).unwrap().1
        };
        assert!(get(1));
        assert!(get(2));
        // 8 + 8 held is over 10: the first went.
        assert!(get(1));
    }
}
