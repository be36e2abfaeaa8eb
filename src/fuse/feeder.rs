//! Pushing small files into the kernel's page cache ahead of a reader (FUSE_NOTIFY_STORE).

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use cellar_store::fsview::FsView;
use fuser::{INodeNo, Notifier};

/// Files up to this size are pushed into the kernel's cache ahead of a reader (larger ones
/// would take the whole window).
const FEED_MAX_SIZE: u64 = 1 << 20;
/// How far ahead of a reader files are pushed: this many, or this many bytes.
const FEED_FILES: usize = 64;
const FEED_BYTES: u64 = 4 << 20;
/// Files remembered as read or pushed; past this the memory starts over.
const FEED_REMEMBERED: usize = 1 << 18;

/// Pushes small files into the kernel's page cache (FUSE_NOTIFY_STORE) ahead of a reader
/// that goes through the tree as it is listed (in the stream's order, `FsView::list`): each
/// READ from a file's start (the reader has come to a file not pushed yet) pushes the small
/// files that come next (`FsView::files_after`: on through its directory, into subdirectories
/// and up). `tar` and `cp -r` then find them cached and send no READ for them; a READ costs a
/// round trip through the kernel and two context switches, more than a small file's bytes.
/// `rsync` sorts names itself, so it finds many of them cached, not all, and where it jumps
/// the pushes decode the store's frames in order for it. Readers that only list or stat
/// (`ls`, `find`) read nothing and get nothing pushed.
pub struct Feeder {
    tx: SyncSender<u64>,
    /// Files read from their start or pushed, so none is pushed after it was read, or twice.
    seen: Arc<Mutex<HashSet<u64>>>,
}

impl Feeder {
    /// The feeder and its thread, which pushes nothing until `notifier` is set (once
    /// mounted) and ends once the `Feeder` is dropped (with the session's filesystem).
    /// Join it before exiting: it holds the view, and with it the view's lease.
    pub fn start(view: Arc<FsView>, notifier: Arc<OnceLock<Notifier>>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = sync_channel(64);
        let feeder = Feeder {
            tx,
            seen: Arc::default(),
        };
        let seen = feeder.seen.clone();
        let thread = std::thread::Builder::new()
            .name("cellar-feeder".into())
            .spawn(move || feed(&view, &notifier, &seen, rx))
            .expect("spawn feeder thread");
        (feeder, thread)
    }

    /// A reader asked for the start of `ino`. Dropped when the feeder is behind.
    pub(super) fn first_read(&self, ino: u64) {
        if first_sight(&self.seen, ino) {
            let _ = self.tx.try_send(ino);
        }
    }
}

/// Whether `ino` is new to `seen` (now in it).
fn first_sight(seen: &Mutex<HashSet<u64>>, ino: u64) -> bool {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= FEED_REMEMBERED {
        seen.clear();
    }
    seen.insert(ino)
}

fn feed(
    view: &FsView,
    notifier: &OnceLock<Notifier>,
    seen: &Mutex<HashSet<u64>>,
    rx: Receiver<u64>,
) {
    for ino in rx {
        let Some(notifier) = notifier.get() else {
            continue;
        };
        // The window: files after `ino` not read or pushed yet. Chosen first, pushed after,
        // so the view's inode table is not held while files are read.
        let mut window = Vec::new();
        let mut bytes = 0;
        let listed = view.files_after(ino, FEED_MAX_SIZE, |file, size| {
            if first_sight(seen, file) {
                window.push((file, size));
                bytes += size;
            }
            window.len() < FEED_FILES && bytes < FEED_BYTES
        });
        if listed.is_err() {
            continue;
        }
        for (file, size) in window {
            // A file that cannot be read is left for its reader to meet the error.
            if let Ok(data) = view.read(file, 0, size as usize) {
                let _ = notifier.store(INodeNo(file), 0, &data);
            }
        }
    }
}
