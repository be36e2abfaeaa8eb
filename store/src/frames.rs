//! The cache of decoded frames: an LRU keyed by where a frame is stored, in which a frame
//! being decoded already has its slot, so a second reader of it (the export's read-ahead
//! and its replay, two FUSE threads) waits for that decode instead of doing it again.
//! Buffers of frames that leave the cache are decoded into again: a fresh 1 MiB buffer
//! costs as much in page faults as a sixth of its decompression.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::Result;
use crate::ids::PackId;

/// Where a frame is stored: its pack and payload offset (gc reuses `frames` row ids).
pub(crate) type FrameKey = (PackId, u64);

/// Spare buffers kept for decoding into.
const SPARE: usize = 4;

/// One frame's place in the cache: empty until its first reader has decoded it. That reader
/// holds the lock while decoding; a failed decode leaves it empty for the next to try.
#[derive(Default)]
struct Slot(Mutex<Option<Arc<Vec<u8>>>>);

pub(crate) struct Frames {
    slots: Mutex<LruCache<FrameKey, Arc<Slot>>>,
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Frames {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Frames {
            slots: Mutex::new(LruCache::new(capacity)),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// The decoded frame at `key`, from the cache, or made by `decode` (given an empty buffer
    /// to decode into). The second result says whether `decode` ran.
    pub(crate) fn get_or_decode(
        &self,
        key: FrameKey,
        decode: impl FnOnce(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<(Arc<Vec<u8>>, bool)> {
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
        let mut decoded = slot.0.lock().unwrap_or_else(|e| e.into_inner());
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
        *decoded = Some(frame.clone());
        Ok((frame, true))
    }

    /// Keep an evicted frame's buffer for the next decode, unless something still reads it.
    fn recycle(&self, slot: Arc<Slot>) {
        let Ok(slot) = Arc::try_unwrap(slot) else {
            return;
        };
        let Some(Ok(mut buf)) = slot
            .0
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
