//! Freeing large in-memory structures off the thread that is done with them.

/// Drop `value` on a short-lived thread of its own.
///
/// A cache of decoded directories, or the tree builder's map of members, is thousands of
/// small allocations. Freeing each took about 5 ms at the end of an incremental ingest, on
/// the thread the whole command waits for, after its work was done. When the process exits
/// first (the CLI's does right after), its memory goes with it and nothing is lost.
///
/// Only for plain memory: nothing whose drop must have happened when the caller goes on.
pub(crate) fn dispose<T: Send + 'static>(value: T) {
    // If no thread can be started, the closure and the value with it are dropped here.
    let _ = std::thread::Builder::new()
        .name("cellar-free".into())
        .spawn(move || drop(value));
}
