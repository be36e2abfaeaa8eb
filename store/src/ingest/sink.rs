//! Where an ingest puts objects: dedup against the index and this ingest, group new chunks
//! into frames, and hand frames to the compression workers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::OptionalExtension;

use super::progress::Progress;
use super::scratch::Scratch;
use crate::chunker::MAX_CHUNK;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::object::{Object, ObjectSink};
use crate::pack::compress::FRAME_TARGET;
use crate::pack::format::Entry;
use crate::pack::ChunkKind;

const FRAME_MAX_ENTRIES: usize = 4096;
/// The largest object stored: record lengths are 32-bit, and a frame holds an object and up
/// to a frame's worth of others. Only a directory record of a hostile stream comes near it.
pub const MAX_OBJECT: usize = 1 << 30;
/// Longest chain of deltas behind a piece; past it the piece is stored whole.
pub const MAX_DELTA_DEPTH: u32 = 16;
/// Ids of new objects kept in memory (about 64 bytes each) before they move to the scratch
/// table, so a stream of millions of small files does not grow the heap without bound.
const QUEUED_IN_MEMORY: usize = 1 << 18;

/// Work for a compression worker.
pub enum Job {
    Frame {
        entries: Vec<Entry>,
        raw: Vec<u8>,
    },
    /// One object compressed against a base object's bytes.
    Delta {
        entry: Entry,
        raw: Vec<u8>,
        base: ChunkId,
        dict: Object,
    },
}

#[derive(Default)]
struct FrameBuf {
    entries: Vec<Entry>,
    raw: Vec<u8>,
}

impl FrameBuf {
    /// An empty frame, in `spare` if there is one. Either way its buffer is large enough for
    /// a whole frame of data chunks, so it is never copied to grow.
    fn new(spare: Option<Vec<u8>>) -> Self {
        let raw = match spare {
            Some(mut raw) => {
                raw.clear();
                raw
            }
            None => Vec::with_capacity(FRAME_TARGET + MAX_CHUNK),
        };
        FrameBuf {
            entries: Vec::new(),
            raw,
        }
    }
}

pub struct Sink<'a> {
    db: &'a Db,
    scratch: &'a Scratch,
    jobs: Sender<Job>,
    /// Frame buffers the workers are done with. Reusing them spares this thread, the one
    /// every byte passes, a fresh 2 MiB of page faults per frame and the copies of growing
    /// a buffer from empty.
    spare: Receiver<Vec<u8>>,
    /// Objects this ingest has queued, with their delta depth (recent ones; older ones are
    /// in the scratch table once `spilled`).
    queued: HashMap<ChunkId, u32>,
    spilled: bool,
    data: FrameBuf,
    meta: FrameBuf,
    progress: Arc<Progress>,
}

impl<'a> Sink<'a> {
    pub fn new(
        db: &'a Db,
        scratch: &'a Scratch,
        jobs: Sender<Job>,
        spare: Receiver<Vec<u8>>,
        progress: Arc<Progress>,
    ) -> Self {
        Sink {
            db,
            scratch,
            jobs,
            spare,
            queued: HashMap::new(),
            spilled: false,
            data: FrameBuf::new(None),
            meta: FrameBuf::new(None),
            progress,
        }
    }

    /// Delta depth of an object this ingest has queued.
    fn queued_depth(&self, id: &ChunkId) -> Result<Option<u32>> {
        if let Some(&d) = self.queued.get(id) {
            return Ok(Some(d));
        }
        if !self.spilled {
            return Ok(None);
        }
        let mut stmt = self
            .scratch
            .conn()?
            .prepare_cached("SELECT depth FROM q WHERE id = ?1")?;
        Ok(stmt.query_row([&id.0[..]], |r| r.get(0)).optional()?)
    }

    fn remember(&mut self, id: ChunkId, depth: u32) -> Result<()> {
        self.queued.insert(id, depth);
        if self.queued.len() >= QUEUED_IN_MEMORY {
            let mut stmt = self
                .scratch
                .conn()?
                .prepare_cached("INSERT OR IGNORE INTO q (id, depth) VALUES (?1, ?2)")?;
            for (id, depth) in self.queued.drain() {
                stmt.execute(rusqlite::params![&id.0[..], depth])?;
            }
            self.spilled = true;
        }
        Ok(())
    }

    /// Delta depth of an object already stored or queued, or None if it is new.
    pub fn known(&self, id: &ChunkId) -> Result<Option<u32>> {
        if let Some(d) = self.queued_depth(id)? {
            return Ok(Some(d));
        }
        let mut stmt = self
            .db
            .conn()
            .prepare_cached("SELECT depth FROM chunks WHERE id = ?1")?;
        Ok(stmt.query_row([&id.0[..]], |r| r.get(0)).optional()?)
    }

    fn send(&self, job: Job) -> Result<()> {
        // The workers only hang up when the pack writer has failed; its error is reported.
        self.jobs
            .send(job)
            .map_err(|_| Error::corrupt("the pack writer stopped"))
    }

    /// Hand a frame to the workers, unless it is empty.
    fn send_frame(&self, buf: FrameBuf) -> Result<()> {
        if buf.entries.is_empty() {
            return Ok(());
        }
        self.send(Job::Frame {
            entries: buf.entries,
            raw: buf.raw,
        })
    }

    fn flush_buf(&mut self, meta: bool) -> Result<()> {
        // An empty frame keeps its buffer: a spare taken for it would sit unused.
        if (if meta { &self.meta } else { &self.data })
            .entries
            .is_empty()
        {
            return Ok(());
        }
        let next = FrameBuf::new(self.spare.try_recv().ok());
        let buf = std::mem::replace(if meta { &mut self.meta } else { &mut self.data }, next);
        self.send_frame(buf)
    }

    /// Send every pending frame to the workers, at the end of the stream. The buffers are not
    /// replaced: a fresh one would only be freed again.
    pub fn finish(&mut self) -> Result<()> {
        let (data, meta) = (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.meta),
        );
        self.send_frame(data)?;
        self.send_frame(meta)
    }

    /// Store `bytes` compressed against `base` (an object already in the store), unless the
    /// delta chain behind `base` is already long.
    pub fn put_delta(
        &mut self,
        kind: ChunkKind,
        bytes: &[u8],
        base: ChunkId,
        dict: impl FnOnce() -> Result<Object>,
    ) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        if self.known(&id)?.is_some() {
            return Ok(id);
        }
        // The base must be committed (not one of ours) for readers to decode against it.
        let committed = self.queued_depth(&base)?.is_none();
        match self.known(&base)? {
            Some(depth) if depth < MAX_DELTA_DEPTH && committed => {
                let len = object_len(kind, bytes)?;
                self.remember(id, depth + 1)?;
                self.progress
                    .new_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.send(Job::Delta {
                    entry: Entry { id, kind, len },
                    raw: bytes.to_vec(),
                    base,
                    dict: dict()?,
                })?;
                Ok(id)
            }
            _ => self.put(kind, bytes),
        }
    }

    /// Delta depths of the delta-compressed objects this ingest wrote (few: one per changed
    /// piece or directory).
    pub fn delta_depths(&self) -> Result<HashMap<ChunkId, u32>> {
        let mut out: HashMap<ChunkId, u32> = self
            .queued
            .iter()
            .filter(|(_, &d)| d > 0)
            .map(|(id, &d)| (*id, d))
            .collect();
        if self.spilled {
            let mut stmt = self
                .scratch
                .conn()?
                .prepare("SELECT id, depth FROM q WHERE depth > 0")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
            for row in rows {
                let (id, depth) = row?;
                let id =
                    ChunkId::from_slice(&id).ok_or_else(|| Error::corrupt("bad scratch id"))?;
                out.insert(id, depth);
            }
        }
        Ok(out)
    }
}

impl ObjectSink for Sink<'_> {
    fn put(&mut self, kind: ChunkKind, bytes: &[u8]) -> Result<ChunkId> {
        self.put_hashed(kind, ChunkId::of(bytes), bytes)
    }
}

impl Sink<'_> {
    /// A data chunk of `len` bytes known to be stored (it hashed to a trusted hint): nothing
    /// to look up or write.
    pub fn put_stored(&mut self, id: ChunkId, len: usize) -> ChunkId {
        self.progress
            .known_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        id
    }

    /// [`ObjectSink::put`] of bytes whose id is already known (a hinted cut was checked by
    /// hashing it).
    pub fn put_hashed(&mut self, kind: ChunkKind, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        if self.known(&id)?.is_some() {
            if kind == ChunkKind::Data {
                self.progress
                    .known_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            return Ok(id);
        }
        let len = object_len(kind, bytes)?;
        self.remember(id, 0)?;
        self.progress
            .new_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let meta = kind != ChunkKind::Data;
        let buf = if meta { &mut self.meta } else { &mut self.data };
        buf.entries.push(Entry { id, kind, len });
        buf.raw.extend_from_slice(bytes);
        if buf.raw.len() >= FRAME_TARGET || buf.entries.len() >= FRAME_MAX_ENTRIES {
            self.flush_buf(meta)?;
        }
        Ok(id)
    }
}

/// An object's length as a record entry holds it, or `Error::TooLarge`.
fn object_len(kind: ChunkKind, bytes: &[u8]) -> Result<u32> {
    match u32::try_from(bytes.len()) {
        Ok(n) if bytes.len() <= MAX_OBJECT => Ok(n),
        _ => Err(Error::TooLarge(format!(
            "a {kind:?} object of {} bytes is more than cellar stores in one ({} MiB)",
            bytes.len(),
            MAX_OBJECT >> 20
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_over_the_limit_are_refused_by_length() {
        // Zeroed allocations are not touched until written: these cost no memory.
        let at_limit = vec![0u8; MAX_OBJECT];
        assert_eq!(
            object_len(ChunkKind::Data, &at_limit).unwrap(),
            MAX_OBJECT as u32
        );
        drop(at_limit);
        let over = vec![0u8; MAX_OBJECT + 1];
        match object_len(ChunkKind::Dir, &over) {
            Err(Error::TooLarge(m)) => {
                assert!(m.contains("1073741825 bytes"), "{m}");
                assert!(m.contains("1024 MiB"), "{m}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
