//! Export: replay a snapshot's recipe as the exact tar stream it was made from.

use std::io::Write;

use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::list::ListRef;
use crate::object::ObjectSource;
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// How far the read-ahead may run in front of the replay, in chunks (about 16 KiB each): a few
/// frames, well inside the frame cache, so what it decoded is still there when needed.
const READ_AHEAD_CHUNKS: usize = 512;

impl Store {
    /// Write the snapshot's stream to `out`. Every chunk is checked against its id on the way,
    /// and the whole stream against the sha256 recorded at ingest. A second thread walks the
    /// recipe ahead and decompresses the frames the replay is about to need, so decompression
    /// overlaps checking and writing.
    pub fn export(&self, snap: &Snapshot, out: &mut dyn Write) -> Result<()> {
        std::thread::scope(|s| {
            let (ahead, behind) = bounded::<()>(READ_AHEAD_CHUNKS);
            s.spawn(move || self.read_ahead(&snap.root, &ahead));
            // Dropping `behind` when the replay ends (or fails) stops the read-ahead.
            self.replay(snap, out, behind)
        })
    }

    /// Warm the frames of every chunk of the recipe, in order, at most `READ_AHEAD_CHUNKS`
    /// in front of the replay (each send waits for the replay to take one). Stops at the first
    /// error: the replay meets it and reports it.
    fn read_ahead(&self, root: &ListRef, ahead: &Sender<()>) {
        let _ = root.for_each(self, &mut |p| {
            for item in piece::decode(&self.object(&p.id)?)? {
                item.chunks.for_each(self, &mut |c| {
                    ahead
                        .send(())
                        .map_err(|_| Error::Output(std::io::Error::other("replay ended")))?;
                    self.warm(&c.id);
                    Ok(())
                })?;
            }
            Ok(())
        });
    }

    fn replay(&self, snap: &Snapshot, out: &mut dyn Write, behind: Receiver<()>) -> Result<()> {
        let mut sha = Sha256::new();
        let mut len = 0u64;
        let mut emit = |bytes: &[u8]| -> Result<()> {
            sha.update(bytes);
            len += bytes.len() as u64;
            out.write_all(bytes).map_err(Error::Output)
        };
        snap.root.for_each(self, &mut |p| {
            for item in piece::decode(&self.object(&p.id)?)? {
                emit(&item.head)?;
                item.chunks.for_each(self, &mut |c| {
                    let _ = behind.try_recv();
                    emit(&self.object(&c.id)?)
                })?;
            }
            Ok(())
        })?;
        out.flush().map_err(Error::Output)?;
        let digest = hex::encode(sha.finalize());
        if len != snap.stream_len || digest != snap.stream_sha256 {
            return Err(Error::corrupt(format!(
                "snapshot {} replays as {len} bytes with sha256 {digest}, but {} bytes with \
                 sha256 {} were ingested",
                snap.short_id(),
                snap.stream_len,
                snap.stream_sha256
            )));
        }
        Ok(())
    }
}
