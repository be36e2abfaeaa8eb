//! A regular file read through a memory mapping, so the input thread hands the hasher and the
//! parser pages of the page cache instead of copying the file into buffers first (that copy
//! was 17% of an incremental ingest's CPU).
//!
//! A mapping faults (SIGBUS) where the file has been cut short since it was mapped. Each block
//! is populated with `MADV_POPULATE_READ` before it is handed on, which fails with an error
//! instead; but a block can still be cut between that and its reading. For that moment a
//! SIGBUS handler covers the mappings: a fault in one puts zero pages over the rest of it and
//! marks it, the read goes on over zeros, and the ingest fails with an input error when the
//! stream's end (or any later block) is reached, before anything is committed. Faults
//! anywhere else get the action that was there before.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use crate::error::{Error, Result};

const PAGE: usize = 4096;

/// A read-only private mapping of the first `len` bytes of a file.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    slot: &'static Slot,
}

// The mapping is read-only and lives until the last block that points into it is dropped.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

/// Where a live mapping is, for the SIGBUS handler, which may read only atomics.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    cut: AtomicBool,
    /// Offset of the first page found missing.
    cut_at: AtomicUsize,
}

/// Mappings live at once, at most (ingests in one process); past that a file is read.
const SLOTS: usize = 64;
static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        cut: AtomicBool::new(false),
        cut_at: AtomicUsize::new(0),
    }
}; SLOTS];

impl Mapping {
    /// Map `file` if it is a regular file the kernel can populate ahead of reads; `None`
    /// means read it the usual way (a pipe, an empty file, a kernel before 5.14).
    pub fn new(file: &File) -> Option<Mapping> {
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if !meta.file_type().is_file() || len == 0 {
            return None;
        }
        install_handler();
        let slot = REGISTRY.iter().find(|s| {
            s.start
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: a fresh read-only private mapping of an open file; nothing aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            slot.start.store(0, Ordering::Release);
            return None;
        }
        slot.cut.store(false, Ordering::Relaxed);
        slot.end.store(ptr as usize + len, Ordering::Relaxed);
        slot.start.store(ptr as usize, Ordering::Release);
        let map = Mapping { ptr, len, slot };
        // Without MADV_POPULATE_READ a cut file could only be found by faulting: read it.
        map.populate(0..len.min(PAGE)).ok()?;
        // SAFETY: advice only.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Some(map)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Fault `range` in from the file, or fail if the file no longer has those bytes.
    pub fn populate(&self, range: Range<usize>) -> std::io::Result<()> {
        let start = range.start / PAGE * PAGE;
        // SAFETY: the range lies inside the mapping; MADV_POPULATE_READ only reads it.
        let r = unsafe {
            libc::madvise(
                self.ptr.cast::<u8>().add(start).cast(),
                range.end - start,
                libc::MADV_POPULATE_READ,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// An error if the file was cut short while its bytes were read (they read as zeros).
    pub fn check(&self) -> Result<()> {
        if self.slot.cut.load(Ordering::Acquire) {
            return Err(Error::Input(std::io::Error::other(format!(
                "the file was cut short while it was being read (byte {} is gone)",
                self.slot.cut_at.load(Ordering::Relaxed)
            ))));
        }
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives (pages of a
        // cut file are replaced by zero pages, never left unmapped).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped; no block points into it any more.
        unsafe { libc::munmap(self.ptr, self.len) };
        self.slot.end.store(0, Ordering::Relaxed);
        self.slot.start.store(0, Ordering::Release);
    }
}

/// The SIGBUS action there was before ours, for faults that are not in a mapping.
static mut PREVIOUS: Option<libc::sigaction> = None;

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction on zeroed structs; PREVIOUS is written once, before the handler
        // that reads it can run.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
                PREVIOUS = Some(old);
            }
        }
    });
}

/// Async-signal-safe: atomics, mmap(2) and sigaction(2) only.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &REGISTRY {
        let (start, end) = (
            slot.start.load(Ordering::Acquire),
            slot.end.load(Ordering::Relaxed),
        );
        if start > 1 && (start..end).contains(&addr) {
            let from = addr / PAGE * PAGE;
            // SAFETY: replaces pages inside our own mapping, which stays ours until its drop.
            let zeros = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    end - from,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeros != libc::MAP_FAILED {
                slot.cut_at.store(from - start, Ordering::Relaxed);
                slot.cut.store(true, Ordering::Release);
                return; // the read is retried, over zeros
            }
        }
    }
    // Not ours: put back what was there and retry, which faults into it.
    // SAFETY: PREVIOUS was set before this handler was installed.
    unsafe {
        match &*std::ptr::addr_of!(PREVIOUS) {
            Some(old) => libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut()),
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                0
            }
        };
    }
}

/// A block of the stream: a buffer the input thread filled, or a range of a mapped file.
pub enum Block {
    Owned(Vec<u8>),
    Mapped(MappedRange),
}

/// A range of a mapping, handed over once. Dropping it (the parser is done with it, and has
/// sent it back to the input thread to drop) releases its pages from the process, so a mapped
/// file costs the blocks in flight in memory, not all the file read so far (they stay in the
/// page cache).
pub struct MappedRange {
    map: Arc<Mapping>,
    range: Range<usize>,
}

impl MappedRange {
    pub fn new(map: Arc<Mapping>, range: Range<usize>) -> Self {
        MappedRange { map, range }
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        let start = self.range.start / PAGE * PAGE;
        // SAFETY: advice on pages of our own mapping that nothing will read again (a later
        // read would only fault them back in from the file).
        unsafe {
            libc::madvise(
                self.map.ptr.cast::<u8>().add(start).cast(),
                self.range.end - start,
                libc::MADV_DONTNEED,
            )
        };
    }
}

impl Block {
    /// An error if this block's bytes came from a file that was cut short under them.
    pub fn check(&self) -> Result<()> {
        match self {
            Block::Owned(_) => Ok(()),
            Block::Mapped(m) => m.map.check(),
        }
    }
}

impl Default for Block {
    fn default() -> Self {
        Block::Owned(Vec::new())
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Block::Owned(v) => v,
            Block::Mapped(m) => &m.map.bytes()[m.range.clone()],
        }
    }
}
