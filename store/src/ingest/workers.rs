//! Compression workers and the pack writer thread.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::progress::Progress;
use super::sink::Job;
use crate::error::{Error, Result};
use crate::pack::compress::{compress_delta, frame_compressor};
use crate::pack::{Codec, PackWriter, RecordHeader, RecordKind, SealedPack};

/// Packs are sealed once they reach this size.
pub const PACK_TARGET: u64 = 32 << 20;

pub type Record = (RecordHeader, Vec<u8>);

/// Compress jobs until the job queue closes or the writer hangs up.
/// Frame buffers whose bytes went out compressed go back on `spare` for the next frame.
pub fn compress(jobs: Receiver<Job>, out: Sender<Record>, spare: Sender<Vec<u8>>) -> Result<()> {
    // One context per worker, reused: allocating one per frame costs time and churns memory.
    let mut zstd = frame_compressor().map_err(Error::Output)?;
    for job in jobs {
        let record = match job {
            Job::Frame { entries, raw } => {
                let z = zstd.compress(&raw).map_err(Error::Output)?;
                // Incompressible frames (already compressed files) are stored as they are.
                let (codec, payload) = if z.len() < raw.len() {
                    let _ = spare.try_send(raw);
                    (Codec::Zstd, z)
                } else {
                    (Codec::None, raw)
                };
                (
                    RecordHeader {
                        kind: RecordKind::Chunks,
                        codec,
                        raw_len: entries.iter().map(|e| e.len).sum(),
                        stored_len: payload.len() as u32,
                        base: None,
                        entries,
                    },
                    payload,
                )
            }
            Job::Delta {
                entry,
                raw,
                base,
                dict,
            } => {
                let z = compress_delta(&dict, &raw).map_err(Error::Output)?;
                (
                    RecordHeader {
                        kind: RecordKind::Chunks,
                        codec: Codec::ZstdDelta,
                        raw_len: entry.len,
                        stored_len: z.len() as u32,
                        base: Some(base),
                        entries: vec![entry],
                    },
                    z,
                )
            }
        };
        if out.send(record).is_err() {
            break;
        }
    }
    Ok(())
}

/// What the writer thread leaves: sealed packs, the last pack still open (the snapshot record
/// goes there at commit), and the error that stopped it, if one did.
pub struct Written {
    pub sealed: Vec<SealedPack>,
    pub open: Option<PackWriter>,
    pub error: Option<Error>,
}

impl Written {
    /// Remove everything written (the ingest failed; no index row names these packs).
    pub fn discard(self, root: &Path) {
        for p in self.sealed {
            let _ = std::fs::remove_file(crate::layout::pack_path(root, &p.id));
        }
        if let Some(w) = self.open {
            w.discard();
        }
    }
}

pub fn write(root: &Path, records: Receiver<Record>, progress: Arc<Progress>) -> Written {
    let mut out = Written {
        sealed: Vec::new(),
        open: None,
        error: None,
    };
    let result = (|| {
        for (header, payload) in records {
            let w = match &mut out.open {
                Some(w) => w,
                None => out.open.insert(PackWriter::create(root)?),
            };
            let before = w.len();
            w.append(&header, &payload)?;
            progress
                .stored_bytes
                .fetch_add(w.len() - before, Ordering::Relaxed);
            if w.len() >= PACK_TARGET {
                out.sealed.push(out.open.take().expect("open pack").seal()?);
            }
        }
        Ok(())
    })();
    out.error = result.err();
    out
}
