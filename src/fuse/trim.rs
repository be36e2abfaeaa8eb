//! Giving the heap back to the system as the kernel forgets inodes. The view frees an inode's
//! entry when the kernel forgets it, but the allocator keeps freed memory for reuse: after a
//! walk of millions of files, the mount would hold its peak for the rest of its life. Once the
//! table has shrunk to half of what it held (and by enough to matter), the heap is trimmed.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Inodes freed, at least, before a trim is worth its walk of the heap.
const TRIM_AFTER: usize = 50_000;

#[derive(Default)]
pub struct Trim {
    /// The most inodes held since the last trim.
    peak: AtomicUsize,
}

impl Trim {
    /// The view holds `held` inodes now, after a forget; whether the heap was trimmed.
    pub fn after_forget(&self, held: usize) -> bool {
        // `held + 1`: the table held at least one more before this forget.
        let peak = self
            .peak
            .fetch_max(held + 1, Ordering::Relaxed)
            .max(held + 1);
        let trim = peak - held >= TRIM_AFTER && held <= peak / 2;
        if trim {
            self.peak.store(held, Ordering::Relaxed);
            release_free_heap();
        }
        trim
    }
}

#[cfg(target_env = "gnu")]
fn release_free_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn release_free_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_the_table_has_halved_by_enough() {
        let t = Trim::default();
        assert!(!t.after_forget(100_000));
        assert!(!t.after_forget(60_000), "not yet half");
        assert!(t.after_forget(50_000));
        assert!(!t.after_forget(30_000), "halved again, but by too little");
        assert!(!t.after_forget(1));
        // A small mount never trims.
        let small = Trim::default();
        assert!((0..40_000).rev().all(|held| !small.after_forget(held)));
    }
}
