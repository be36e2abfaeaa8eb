//! The parse stage of an ingest, on a thread of its own: tar headers, content-defined cuts and
//! blake3 ids of every chunk. It hands the stream on in batches: a buffer of payload bytes
//! and, in stream order, the members and chunks found in it. The index stage (dedup, pieces,
//! tree) runs beside it on the ingest's own thread, so hashing and indexing overlap.

use std::ops::Range;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};

use super::input::ChannelSource;
use super::progress::Progress;
use crate::chunker::{ChunkSink, Chunker, MAX_CHUNK, MIN_CHUNK};
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::tar::{Member, TarReader};
use crate::tree::meta::{self, Sparse};
use crate::tree::Tree;

/// Events and header bytes per batch at most (members without payload take no buffer space,
/// and a stream of millions of them must not pile up in one batch).
const MAX_EVENTS: usize = 4096;
const MAX_HEAD_BYTES: usize = 1 << 20;

/// A run of the parsed stream.
pub struct Batch {
    /// Payload bytes: chunks are ranges of it.
    pub data: Box<[u8]>,
    pub events: Vec<Event>,
}

pub enum Event {
    /// A member's header; the chunks of its payload follow, then `PayloadEnd`.
    Member(Box<Member>),
    /// The end-of-archive block and everything up to it; the chunks of what follows it
    /// (the rest of the stream) come next, then `PayloadEnd`.
    Trailer(Vec<u8>),
    Chunk {
        id: ChunkId,
        at: Range<u32>,
    },
    PayloadEnd,
}

/// How the parse stage ended.
pub enum Parsed {
    /// The whole stream: its member count, length and sha256.
    Complete {
        members: u64,
        stream_len: u64,
        sha256: [u8; 32],
    },
    /// The index stage hung up (it has the error that made it stop).
    Abandoned,
}

/// Gathers events and hands full buffers on as batches.
struct Batcher {
    tx: Sender<Batch>,
    /// Spent buffers back from the index stage.
    free: Receiver<Box<[u8]>>,
    events: Vec<Event>,
    /// Header bytes in `events`.
    head_bytes: usize,
    /// The index stage stopped reading.
    hung_up: bool,
}

impl Batcher {
    fn buffer(&self) -> Box<[u8]> {
        self.free.try_recv().unwrap_or_else(|_| Chunker::buffer())
    }

    fn send(&mut self, data: Box<[u8]>) {
        let events = std::mem::take(&mut self.events);
        self.head_bytes = 0;
        self.hung_up |= self.tx.send(Batch { data, events }).is_err();
    }

    /// Chunk one payload; its events are recorded, full buffers go on as batches.
    fn payload(
        &mut self,
        chunker: &mut Chunker,
        fill: impl FnMut(&mut [u8]) -> Result<usize>,
        hints: &[(u32, ChunkId)],
    ) -> Result<()> {
        match chunker.chunk_into(fill, self, hints) {
            Err(_) if self.hung_up => Ok(()),
            r => {
                self.events.push(Event::PayloadEnd);
                r
            }
        }
    }
}

impl ChunkSink for Batcher {
    fn chunk(&mut self, buf: &[u8], at: Range<usize>, id: Option<ChunkId>) -> Result<()> {
        let id = id.unwrap_or_else(|| ChunkId::of(&buf[at.clone()]));
        let at = at.start as u32..at.end as u32;
        self.events.push(Event::Chunk { id, at });
        Ok(())
    }

    fn full(&mut self, buf: &mut Box<[u8]>, waiting: Range<usize>) -> Result<()> {
        let mut fresh = self.buffer();
        fresh[..waiting.len()].copy_from_slice(&buf[waiting]);
        let full = std::mem::replace(buf, fresh);
        self.send(full);
        if self.hung_up {
            // Only stops the chunker: `payload` knows why.
            return Err(Error::corrupt("the index stage stopped"));
        }
        Ok(())
    }
}

/// Parse `source` to its end, sending batches to `tx`. `parent` is the tree of the snapshot
/// before: its files' chunks are hints for the same paths' payloads.
pub fn run(
    source: ChannelSource,
    tx: Sender<Batch>,
    free: Receiver<Box<[u8]>>,
    progress: &Progress,
    parent: Option<&Tree>,
) -> Result<Parsed> {
    let mut tar = TarReader::new(source);
    let mut chunker = Chunker::default();
    let mut batcher = Batcher {
        tx,
        free,
        events: Vec::new(),
        head_bytes: 0,
        hung_up: false,
    };
    let mut members = 0u64;
    let mut hints = Vec::new();
    loop {
        match tar.next_member()? {
            Ok(m) => {
                members += 1;
                hints.clear();
                if let Some(parent) = parent {
                    hints_for(&m, parent, &mut hints);
                }
                batcher.head_bytes += m.head.len();
                batcher.events.push(Event::Member(Box::new(m)));
                batcher.payload(&mut chunker, |b| tar.read_payload(b), &hints)?;
                progress.read.store(tar.offset(), Ordering::Relaxed);
                if batcher.events.len() >= MAX_EVENTS || batcher.head_bytes >= MAX_HEAD_BYTES {
                    let full = chunker.take(batcher.buffer());
                    batcher.send(full);
                }
            }
            Err(end) => {
                batcher.events.push(Event::Trailer(end.head));
                batcher.payload(&mut chunker, |b| tar.read_rest(b), &[])?;
                break;
            }
        }
        if batcher.hung_up {
            return Ok(Parsed::Abandoned);
        }
    }
    batcher.send(chunker.into_buffer());
    if batcher.hung_up {
        return Ok(Parsed::Abandoned);
    }
    let (stream_len, sha256) = tar
        .into_source()
        .digest()
        .ok_or_else(|| Error::Input(std::io::Error::other("input ended without a digest")))?;
    Ok(Parsed::Complete {
        members,
        stream_len,
        sha256,
    })
}

/// Hints for one payload at most: 64k chunks, about 1 GiB of payload, 2.3 MiB of memory.
const MAX_HINTS: usize = 1 << 16;
/// Payloads smaller than this are not worth a lookup: they are one chunk or two.
const HINT_MIN: u64 = 4 * MIN_CHUNK as u64;

/// The chunks the file at the member's path had in `parent`, when it is a plain file of the
/// same length. Anything else (no such file, a sparse one, a damaged record) gives no hints:
/// they only save work. An error reading the list gives the hints read before it.
fn hints_for(m: &Member, parent: &Tree, out: &mut Vec<(u32, ChunkId)>) {
    let plain = matches!(m.typeflag, b'0' | b'\0' | b'7');
    if !plain || m.payload_len < HINT_MIN || !matches!(meta::sparse_layout(m), Sparse::None) {
        return;
    }
    let Ok(node) = parent.resolve(meta::member_path(m)) else {
        return;
    };
    let Some(content) = node
        .content
        .filter(|c| c.segments.is_none() && c.data_offset == 0)
    else {
        return;
    };
    if content.chunks.total_len() != m.payload_len {
        return;
    }
    // A prefix of the chunks is as good a hint as all of them, and bounds the memory.
    let mut damaged = false;
    let _ = content.chunks.for_each(parent.store(), &mut |e| {
        if e.len == 0 || e.len > MAX_CHUNK as u64 {
            damaged = true;
        }
        if damaged || out.len() == MAX_HINTS {
            return Err(Error::corrupt("enough hints")); // stops the walk
        }
        out.push((e.len as u32, e.id));
        Ok(())
    });
    if damaged {
        out.clear();
    }
}
