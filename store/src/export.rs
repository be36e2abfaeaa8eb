//! Export: replay a snapshot's recipe as the exact tar stream it was made from.

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::object::ObjectSource;
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;

impl Store {
    /// Write the snapshot's stream to `out`. Every chunk is checked against its id on the way,
    /// and the whole stream against the sha256 recorded at ingest.
    pub fn export(&self, snap: &Snapshot, out: &mut dyn Write) -> Result<()> {
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
                item.chunks
                    .for_each(self, &mut |c| emit(&self.object(&c.id)?))?;
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
