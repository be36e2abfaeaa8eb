//! Counters an ingest updates as it goes, for progress displays.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct Progress {
    /// Stream bytes parsed so far.
    pub read: AtomicU64,
    /// Raw bytes of objects this ingest had to store.
    pub new_bytes: AtomicU64,
    /// Raw payload bytes found already stored.
    pub known_bytes: AtomicU64,
    /// Bytes written to packs.
    pub stored_bytes: AtomicU64,
}
