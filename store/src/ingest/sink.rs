//! Where an ingest puts objects: dedup against the index and this ingest, group new chunks
//! into frames, and hand frames to the compression workers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;
use rusqlite::OptionalExtension;

use super::progress::Progress;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::object::{Object, ObjectSink};
use crate::pack::format::Entry;
use crate::pack::ChunkKind;

/// New chunks are compressed together in frames of about this many raw bytes.
const FRAME_TARGET: usize = 1 << 20;
const FRAME_MAX_ENTRIES: usize = 4096;
/// Longest chain of deltas behind a piece; past it the piece is stored whole.
pub const MAX_DELTA_DEPTH: u32 = 16;

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

pub struct Sink<'a> {
    db: &'a Db,
    jobs: Sender<Job>,
    /// Objects this ingest has queued, with their delta depth.
    queued: HashMap<ChunkId, u32>,
    data: FrameBuf,
    meta: FrameBuf,
    progress: Arc<Progress>,
}

impl<'a> Sink<'a> {
    pub fn new(db: &'a Db, jobs: Sender<Job>, progress: Arc<Progress>) -> Self {
        Sink {
            db,
            jobs,
            queued: HashMap::new(),
            data: FrameBuf::default(),
            meta: FrameBuf::default(),
            progress,
        }
    }

    /// Delta depth of an object already stored or queued, or None if it is new.
    pub fn known(&self, id: &ChunkId) -> Result<Option<u32>> {
        if let Some(&d) = self.queued.get(id) {
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

    fn flush_buf(&mut self, meta: bool) -> Result<()> {
        let buf = std::mem::take(if meta { &mut self.meta } else { &mut self.data });
        if !buf.entries.is_empty() {
            self.send(Job::Frame {
                entries: buf.entries,
                raw: buf.raw,
            })?;
        }
        Ok(())
    }

    /// Send every pending frame to the workers.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_buf(false)?;
        self.flush_buf(true)
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
        match self.known(&base)? {
            Some(depth) if depth < MAX_DELTA_DEPTH && !self.queued.contains_key(&base) => {
                self.queued.insert(id, depth + 1);
                self.progress
                    .new_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.send(Job::Delta {
                    entry: Entry {
                        id,
                        kind,
                        len: bytes.len() as u32,
                    },
                    raw: bytes.to_vec(),
                    base,
                    dict: dict()?,
                })?;
                Ok(id)
            }
            _ => self.put(kind, bytes),
        }
    }

    /// Delta depths of the delta-compressed objects this ingest wrote.
    pub fn delta_depths(&self) -> impl Iterator<Item = (&ChunkId, u32)> {
        self.queued
            .iter()
            .filter(|(_, &d)| d > 0)
            .map(|(id, &d)| (id, d))
    }
}

impl ObjectSink for Sink<'_> {
    fn put(&mut self, kind: ChunkKind, bytes: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        if self.known(&id)?.is_some() {
            if kind == ChunkKind::Data {
                self.progress
                    .known_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            return Ok(id);
        }
        self.queued.insert(id, 0);
        self.progress
            .new_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let meta = kind != ChunkKind::Data;
        let buf = if meta { &mut self.meta } else { &mut self.data };
        buf.entries.push(Entry {
            id,
            kind,
            len: bytes.len() as u32,
        });
        buf.raw.extend_from_slice(bytes);
        if buf.raw.len() >= FRAME_TARGET || buf.entries.len() >= FRAME_MAX_ENTRIES {
            self.flush_buf(meta)?;
        }
        Ok(id)
    }
}
