//! The commit lock (`STORE/lock`, `flock`): the one lock writers share, held while a commit,
//! a forget, a gc step or a repair changes what the index names (FORMAT §11). Readers never
//! take it.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::layout;
use crate::store::Store;

impl Store {
    /// Take the store's commit lock, the only lock writers share. Readers never take it.
    pub(crate) fn commit_lock(&self, waiting: &dyn Fn(&str)) -> Result<File> {
        self.take_commit_lock(waiting, None)
    }

    /// `commit_lock` for a writer that an interrupt may stop while it waits: `Interrupted`
    /// once `cancel` is set, so a snapshot interrupted while another process commits is not
    /// committed when that one is done.
    pub(crate) fn commit_lock_unless(
        &self,
        waiting: &dyn Fn(&str),
        cancel: &AtomicBool,
    ) -> Result<File> {
        self.take_commit_lock(waiting, Some(cancel))
    }

    fn take_commit_lock(
        &self,
        waiting: &dyn Fn(&str),
        cancel: Option<&AtomicBool>,
    ) -> Result<File> {
        self.db().writable()?;
        let lock = lock_file(self.root(), waiting, cancel)?;
        self.index_in_place()?;
        Ok(lock)
    }

    /// With the lock held: whether the index this store has open is still the one in place.
    /// `repair-index` swaps in a rebuilt index under the lock, so a writer that opened the old
    /// one before (or while waiting for the lock) would commit into the file set aside, and
    /// its decisions (which chunks are stored, which packs are garbage) were made on an index
    /// no longer in use. It stops instead; once it holds the lock, no swap can follow.
    fn index_in_place(&self) -> Result<()> {
        let now = crate::db::file_id(&self.root().join(layout::DB_FILE));
        if now.is_some() && now == self.db().file() {
            Ok(())
        } else {
            Err(Error::IndexReplaced)
        }
    }
}

/// Take the store's lock file (blocking), telling `waiting` when another process holds it.
pub(crate) fn lock_file(
    root: &Path,
    waiting: &dyn Fn(&str),
    cancel: Option<&AtomicBool>,
) -> Result<File> {
    let interrupted = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let path = root.join(layout::LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    if interrupted() {
        return Err(Error::Interrupted);
    }
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(fs::TryLockError::WouldBlock) => {}
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    waiting("waiting for another cellar process to finish committing to the store");
    if cancel.is_none() {
        file.lock().at(&path)?;
        return Ok(file);
    }
    // A blocking flock is woken the moment the lock is free (trying again now and then
    // would lose it to a holder that takes it back at once, as gc's sweep does pack after
    // pack), but not by an interrupt: it waits on a thread of its own, which hands the locked
    // file over. Given up on, it unlocks what it gets (the file is dropped).
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(file.lock().map(|()| file));
    });
    loop {
        match rx.recv_timeout(LOCK_POLL) {
            Ok(locked) => {
                let file = locked.at(&path)?;
                return if interrupted() {
                    Err(Error::Interrupted)
                } else {
                    Ok(file)
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !interrupted() => {}
            Err(_) => return Err(Error::Interrupted),
        }
    }
}

/// How often a writer waiting for the commit lock looks for an interrupt.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);
