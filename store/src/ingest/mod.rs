//! Ingest: turn a tar stream into a snapshot.
//!
//! Threads: the input thread (decompress) → the hashing thread (sha256) → this thread (parse,
//! chunk, hash, dedup, build pieces) → compression workers → the pack writer; at the start, a
//! helper reads the parent's piece anchors (`anchors.rs`). Queues between them are bounded, so
//! memory is too. Nothing is visible until the commit step: in one immediate transaction the
//! snapshot record is appended to the last pack, which is sealed (fsynced, renamed) while
//! every pack is indexed, and the transaction commits once the seal is done.

mod anchors;
mod commit;
mod exact;
pub(crate) mod gzip;
mod hints;
mod index;
mod input;
pub use input::IngestInput;
pub use pipe::WriterExited;
mod mapped;
mod pipe;
mod progress;
mod scratch;
pub(crate) mod sink;
mod workers;
pub(crate) mod wrapper;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::bounded;

use anchors::Anchors;
pub(crate) use hints::distrust_all;
pub(crate) use index::{index_pack, index_pack_file};
pub use progress::Progress;
pub(crate) use scratch::Scratch;
pub(crate) use sink::Sink;

use crate::chunker::{Chunker, Feed};
use crate::error::{Error, Result, TarPlace};
use crate::ids::{ChunkId, SnapshotId};
use crate::list::{Entry, ListBuilder, ListRef};
use crate::object::{ObjectSink, ObjectSource};
use crate::oci::{ImageSettings, Platform};
use crate::pack::ChunkKind;
use crate::piece::{Cut, Item, PieceBuffer};
use crate::snapshot::{validate_name, Snapshot};
use crate::store::Store;
use crate::tar::{ByteSource, Member, TarReader};
use crate::tree::meta::{self, Action, Sparse};
use crate::tree::{Content, Node, Tree, TreeBuilder};
use crate::{layout, tar};

pub struct IngestOptions {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Settings for images of this snapshot (the platform defaults to the host's).
    pub image: ImageSettings,
    pub progress: Arc<Progress>,
    /// Called with a message when the ingest has to wait for another writer.
    pub on_wait: Box<dyn Fn(&str) + Send>,
    /// Set to stop the ingest while it reads the stream (an interrupt): it then fails with
    /// `Error::Interrupted`, discarding what it wrote. Once the stream is read, it commits.
    pub cancel: Arc<AtomicBool>,
}

impl IngestOptions {
    pub fn new(name: &str) -> Self {
        IngestOptions {
            name: name.to_string(),
            labels: BTreeMap::new(),
            image: ImageSettings::default(),
            progress: Arc::default(),
            on_wait: Box::new(|_| {}),
            cancel: Arc::default(),
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub snapshot: Snapshot,
    /// Raw bytes of objects (data and metadata) that were new to the store.
    pub new_bytes: u64,
    /// Payload bytes that were already stored.
    pub known_bytes: u64,
    /// Members left out of the tree, and why.
    pub warnings: Vec<String>,
}

/// What an ingest builds on: the parent snapshot's pieces and tree (delta bases), and the
/// snapshot's time.
struct Base {
    /// The parent's piece list, whose anchors are the delta bases (`anchors`).
    pieces: Option<ListRef>,
    tree: Option<Node>,
    /// Chunks that hash to the parent's hints are taken as stored (`hints::trusted`).
    trusted: bool,
    time: i64,
}

/// Everything parsed out of the stream, before commit.
struct Parsed {
    root: ListRef,
    members: u64,
    stream_len: u64,
    sha256: [u8; 32],
    /// Delta chain lengths of the delta-compressed objects written.
    depths: HashMap<ChunkId, u32>,
    tree: Node,
    exact_layer: bool,
    warnings: Vec<String>,
}

impl Store {
    /// Ingest a tar stream (optionally gzip- or zstd-compressed) as a new snapshot of
    /// `opts.name`. `before_commit` runs once the stream is fully stored, before anything is
    /// made visible; an error from it (say, the producing command failed) records nothing.
    pub fn ingest(
        &self,
        input: impl Into<IngestInput>,
        opts: IngestOptions,
        before_commit: impl FnOnce() -> Result<()>,
    ) -> Result<IngestReport> {
        crate::failpoint::hit("ingest:start");
        validate_name(&opts.name)?;
        let mut opts = opts;
        opts.image.validate()?;
        // Recorded, so the snapshot's images are the same on any machine.
        opts.image.platform.get_or_insert_with(Platform::host);
        let (now, created) = clock_time()?;
        // The lease comes before the first index read, so gc keeps what this ingest may find.
        let lease = self.take_lease()?;
        // Chunks found in a pack the index names whose file is gone would be named by this
        // snapshot and read by no one.
        if let Some(path) = crate::gc::missing_pack(self)? {
            return Err(Error::corrupt(format!(
                "indexed pack file {} is missing, so a snapshot now could name chunks that are \
                 gone; bring the file back, or give up what it held with `cellar repair-packs \
                 {}`",
                path.display(),
                crate::gc::pack_prefix(&path)
            )));
        }
        let parent = self.latest(&opts.name, 0)?;
        // Dedup lookups run inside one read transaction: no lock calls per chunk. Chunks other
        // ingests commit meanwhile are not seen, and at worst stored twice.
        let lookups = self.open_connection()?;
        lookups.conn().execute_batch("BEGIN")?;
        let base = Base {
            pieces: parent.as_ref().map(|p| p.root.clone()),
            tree: parent.as_ref().and_then(|p| p.tree.clone()),
            trusted: match &parent {
                Some(p) => hints::trusted(lookups.conn(), &p.id)?,
                None => false,
            },
            time: now.unix_timestamp(),
        };
        let source = input::spawn(input.into(), opts.cancel.clone());
        let scratch = Scratch::new(&self.root().join(layout::TMP_DIR));
        let progress = opts.progress.clone();

        let (parsed, mut written) = std::thread::scope(|s| {
            let (job_tx, job_rx) = bounded(4);
            let (rec_tx, rec_rx) = bounded(4);
            let (spare_tx, spare_rx) = bounded(2);
            let workers: Vec<_> = (0..worker_count())
                .map(|_| {
                    let (jobs, out, spare) = (job_rx.clone(), rec_tx.clone(), spare_tx.clone());
                    std::thread::Builder::new()
                        .name("cellar-zstd".into())
                        .spawn_scoped(s, move || workers::compress(jobs, out, spare))
                        .expect("spawn compression worker")
                })
                .collect();
            drop((job_rx, rec_tx, spare_tx));
            let p = progress.clone();
            let writer = std::thread::Builder::new()
                .name("cellar-packs".into())
                .spawn_scoped(s, move || workers::write(self.root(), rec_rx, p))
                .expect("spawn pack writer");

            let mut sink = Sink::new(&lookups, &scratch, job_tx, spare_rx, progress.clone());
            let anchors = Anchors::of_parent(s, self, base.pieces.as_ref());
            let reading = Reading {
                progress: &progress,
                cancel: &opts.cancel,
            };
            let unwrapped = source.unwrapped();
            let parsed = self
                .parse(source, &mut sink, &scratch, &base, anchors, reading)
                .map_err(|e| input::counted_unwrapped(e, unwrapped()));
            drop(sink);
            let mut error = None;
            for w in workers {
                if let Err(e) = w.join().expect("compression worker panicked") {
                    error.get_or_insert(e);
                }
            }
            let mut written = writer.join().expect("pack writer panicked");
            if let Some(e) = error {
                written.error.get_or_insert(e);
            }
            (parsed, written)
        });

        // A writer failure explains a parse-side "writer stopped", so it comes first.
        let parsed = match (written.error.take(), parsed) {
            (None, Ok(p)) => p,
            (Some(e), _) | (None, Err(e)) => {
                written.discard(self.root());
                return Err(e);
            }
        };
        if let Err(e) = before_commit() {
            written.discard(self.root());
            return Err(e);
        }
        let snapshot = Snapshot {
            id: SnapshotId([0; 32]),
            name: opts.name,
            parent: None,
            created,
            stream_len: parsed.stream_len,
            stream_sha256: hex::encode(parsed.sha256),
            members: parsed.members,
            added_bytes: progress.stored_bytes.load(Ordering::Relaxed),
            labels: opts.labels,
            root: parsed.root,
            tree: Some(parsed.tree),
            image: opts.image,
            exact_layer: parsed.exact_layer,
        };
        let snapshot = self.commit(
            snapshot,
            written,
            &parsed.depths,
            &*opts.on_wait,
            &opts.cancel,
            &lease,
        )?;
        lease.committed();
        Ok(IngestReport {
            snapshot,
            new_bytes: progress.new_bytes.load(Ordering::Relaxed),
            known_bytes: progress.known_bytes.load(Ordering::Relaxed),
            warnings: parsed.warnings,
        })
    }

    fn parse(
        &self,
        source: input::ChannelSource,
        sink: &mut Sink,
        scratch: &Scratch,
        base: &Base,
        mut anchors: Anchors,
        reading: Reading,
    ) -> Result<Parsed> {
        let Base {
            pieces: _,
            tree: parent_tree,
            trusted,
            time,
        } = base;
        let (parent_tree, time) = (parent_tree.as_ref(), *time);
        // The parent's files give cut hints for the same paths.
        let mut parent =
            parent_tree.map(|root| hints::ParentFiles::new(Tree::from_root(self, root.clone())));
        let mut hints = Vec::new();
        let marker_read = source.marker_read();
        let mut tar = TarReader::new(source);
        let mut chunker = Chunker::default();
        let mut pieces = PieceBuffer::default();
        let mut piece_list = ListBuilder::default();
        let mut members = 0u64;
        let mut tree = TreeBuilder::new(scratch, time)?;
        let after_end;
        // Pieces are stored in order; those cut before the parent's anchors are read wait.
        let mut store_piece =
            |cut: Option<Cut>, last: bool, sink: &mut Sink, list: &mut ListBuilder| -> Result<()> {
                let Some((cuts, anchors)) = anchors.release(cut, last)? else {
                    return Ok(());
                };
                for cut in cuts {
                    let id = match anchors.get(&cut.anchor) {
                        Some(base) => {
                            sink.put_delta(ChunkKind::Piece, &cut.encoded, *base, || {
                                self.object(base)
                            })?
                        }
                        None => sink.put(ChunkKind::Piece, &cut.encoded)?,
                    };
                    let entry = Entry {
                        id,
                        len: cut.stream_len,
                        aux: cut.anchor,
                    };
                    list.push(entry, sink)?;
                }
                Ok(())
            };
        loop {
            reading.go_on()?;
            match tar.next_member()? {
                Ok(mut m) => {
                    members += 1;
                    let sparse = meta::sparse_layout(&m);
                    let mut map = meta::MapCapture::default();
                    let mut take_map = |c: &[u8]| map.take(c);
                    let capture =
                        matches!(sparse, Sparse::InPayload).then_some(&mut take_map as Capture);
                    hints.clear();
                    if let Some(parent) = &mut parent {
                        parent.hints_for(&m, &mut hints);
                    }
                    let (chunks, payload_len) = chunk_payload(
                        &mut chunker,
                        sink,
                        &mut Payload(&mut tar, TarReader::payload_slice, reading),
                        capture,
                        &hints,
                        *trusted,
                    )?;
                    reading.progress.read.store(tar.offset(), Ordering::Relaxed);
                    if !exact::layer_reads_member(&m) {
                        tree.not_exact();
                    }
                    tree_member(&mut tree, &m, chunks.clone(), sparse, &map.bytes)?;
                    let item = Item {
                        head: std::mem::take(&mut m.head),
                        payload_len,
                        chunks,
                    };
                    if let Some(cut) = pieces.push(item, &m.path) {
                        store_piece(Some(cut), false, sink, &mut piece_list)?;
                    }
                }
                Err(end) => {
                    marker_read();
                    let rest_at = tar.offset();
                    // The trailer: everything from the end-of-archive block on.
                    let mut rest = Payload(&mut tar, TarReader::rest_slice, reading);
                    // Its first block, which says whether Go's archive/tar reads the end too,
                    // and where it first holds something other than zeros.
                    let mut start = Vec::new();
                    let (mut seen, mut stray) = (0u64, None);
                    let mut take_start = |c: &[u8]| {
                        let room = 512usize.saturating_sub(start.len()).min(c.len());
                        start.extend_from_slice(&c[..room]);
                        if stray.is_none() {
                            stray = c.iter().position(|&b| b != 0).map(|i| seen + i as u64);
                        }
                        seen += c.len() as u64;
                    };
                    let (chunks, payload_len) = chunk_payload(
                        &mut chunker,
                        sink,
                        &mut rest,
                        Some(&mut take_start),
                        &[],
                        false,
                    )?;
                    if !exact::layer_reads_end(&start) || tar.saw_global_header() {
                        tree.not_exact();
                    }
                    after_end = stray.map(|at| (rest_at - 512, rest_at + at));
                    let item = Item {
                        head: end.head,
                        payload_len,
                        chunks,
                    };
                    let cut = pieces.push(item, b"");
                    store_piece(cut, false, sink, &mut piece_list)?;
                    break;
                }
            }
        }
        store_piece(pieces.finish(), true, sink, &mut piece_list)?;
        let root = piece_list.finish(sink)?;
        let exact_layer = tree.exact_layer();
        let mut warnings = tree.take_warnings();
        if let Some((marker, at)) = after_end {
            // GNU tar stops at the marker too ("A lone zero block"), unless --ignore-zeros.
            warnings.push(format!(
                "the stream goes on after its end-of-archive marker at byte {marker} (byte {at} \
                 is not zero: archives joined end to end?): what follows is kept, and export \
                 gives it back, but no member of it is in the tree"
            ));
        }
        let tree = tree.finish(sink, self, parent_tree)?;
        sink.finish()?;
        let source = tar.into_source()?;
        let (stream_len, sha256) = source
            .digest()
            .ok_or_else(|| Error::Input(std::io::Error::other("input ended without a digest")))?;
        if source.cut_open() {
            warnings.push(format!(
                "the stream is taken to end at byte {stream_len}, where its pipe went quiet: \
                 its command has exited, but something it left running holds its output open \
                 (what that writes from then on is not kept)"
            ));
        }
        Ok(Parsed {
            root,
            members,
            stream_len,
            sha256,
            depths: sink.delta_depths()?,
            tree,
            exact_layer,
            warnings,
        })
    }
}

/// Told each chunk of a payload as it is cut, in order: what keeps its start.
type Capture<'a> = &'a mut dyn FnMut(&[u8]);

/// How the tar reader lends a payload: [`TarReader::payload_slice`] or
/// [`TarReader::rest_slice`].
type Lend<S> = fn(&mut TarReader<S>) -> Result<(&[u8], bool)>;

/// A member's payload (or the trailer), lent by the tar reader to the chunker: chunks are cut
/// and hashed in the input's own blocks, not copied out of them first.
/// What the parse reports as it reads, and whether it is to stop.
#[derive(Clone, Copy)]
struct Reading<'a> {
    progress: &'a Progress,
    cancel: &'a AtomicBool,
}

impl Reading<'_> {
    fn go_on(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }
}

/// A member's payload (or the trailer) as the chunker reads it. Each slice moves the progress
/// count on, so a large member (a disk image) is not one jump at its end, and may stop it.
struct Payload<'a, S>(&'a mut TarReader<S>, Lend<S>, Reading<'a>);

impl<S: ByteSource> Feed for Payload<'_, S> {
    fn next(&mut self) -> Result<(&[u8], bool)> {
        self.2.go_on()?;
        self.2
            .progress
            .read
            .store(self.0.offset(), Ordering::Relaxed);
        (self.1)(self.0)
    }
}

/// Chunk one payload (or the trailer), storing its chunks; returns its chunk list and length.
/// With `trusted`, a chunk that hashes to one of `hints` is taken as stored without a lookup
/// (`hints::trusted`).
fn chunk_payload(
    chunker: &mut Chunker,
    sink: &mut Sink,
    feed: &mut impl Feed,
    mut capture: Option<Capture>,
    hints: &[(u32, ChunkId)],
    trusted: bool,
) -> Result<(ListRef, u64)> {
    let mut list = ListBuilder::default();
    let mut len = 0u64;
    chunker.chunk_hinted(feed, hints, |c, id| {
        len += c.len() as u64;
        if let Some(take) = capture.as_mut() {
            take(c);
        }
        // A chunk cut from a hint was hashed to check it.
        let id = match id {
            Some(id) if trusted => sink.put_stored(id, c.len()),
            Some(id) => sink.put_hashed(ChunkKind::Data, id, c)?,
            None => sink.put_hashed(ChunkKind::Data, ChunkId::of(c), c)?,
        };
        list.push(
            Entry {
                id,
                len: c.len() as u64,
                aux: 0,
            },
            sink,
        )
    })?;
    Ok((list.finish(sink)?, len))
}

/// Put one member into the tree being built.
fn tree_member(
    tree: &mut TreeBuilder,
    m: &Member,
    chunks: ListRef,
    sparse: Sparse,
    prefix: &[u8],
) -> Result<()> {
    let bad = |what: &str| Error::BadTar {
        offset: m.offset,
        member: Some(TarPlace::In(m.display_path())),
        what: what.to_string(),
    };
    let (segments, data_offset) = match sparse {
        Sparse::None => (None, 0),
        Sparse::Map(map) => (Some(map), 0),
        Sparse::InPayload => {
            let (map, off) =
                meta::parse_payload_map(prefix).ok_or_else(|| bad("malformed sparse map"))?;
            (Some(map), off)
        }
    };
    let mut real_size = None;
    if let Some(segs) = &segments {
        let size = m
            .gnu_realsize
            .or_else(|| {
                tar::pax::lookup(&m.pax, "GNU.sparse.realsize").and_then(tar::pax::parse_decimal)
            })
            .or_else(|| {
                tar::pax::lookup(&m.pax, "GNU.sparse.size").and_then(tar::pax::parse_decimal)
            })
            .ok_or_else(|| bad("sparse member without its real size"))?;
        // As GNU tar reads it (an off_t): a larger file could be neither stat'ed nor written.
        if i64::try_from(size).is_err() {
            return Err(bad("sparse real size out of range (0 to 2^63-1)"));
        }
        // The map must describe exactly the data that follows it, within the file.
        let data = segs.iter().try_fold(0u64, |sum, s| sum.checked_add(s.1));
        // ...in file order, without overlaps.
        let mut end_of_previous = 0;
        let fits = segs.iter().all(|&(o, l)| {
            let ok = o >= end_of_previous && o.checked_add(l).is_some_and(|end| end <= size);
            end_of_previous = o.saturating_add(l);
            ok
        });
        if !fits {
            return Err(bad(
                "sparse map segments overlap, are out of order, or pass the real size",
            ));
        }
        if data.is_none() || data != m.payload_len.checked_sub(data_offset) {
            return Err(bad("sparse map does not match the member's data"));
        }
        real_size = Some(size);
    }
    let content = Content {
        chunks,
        data_offset,
        segments: segments.map(crate::tree::Segments::new),
    };
    if meta::slash_dir(m) {
        // Go's archive/tar (what most layer extractors use) takes only typeflag NUL so.
        tree.not_exact();
    }
    match meta::action(m, Some(content), real_size, &mut |w| tree.warn(w)) {
        Action::Put(node) => tree.put_member(m.real_path(), *node),
        Action::Link(target, mtime) => tree.put_link(m.real_path(), &target, mtime),
        Action::Skip => Ok(()),
    }
}

fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// The time a snapshot is taken, as recorded (RFC 3339, UTC): refused rather than
/// recorded wrong when the system clock reads a year RFC 3339 cannot hold.
fn clock_time() -> Result<(time::OffsetDateTime, String)> {
    let since_epoch = |d: std::time::Duration| d.as_nanos() as i128;
    let nanos = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => since_epoch(d),
        Err(before) => -since_epoch(before.duration()),
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            let text = t.format(&time::format_description::well_known::Rfc3339);
            Some((t, text.ok()?))
        })
        .ok_or_else(|| {
            Error::Refused(format!(
                "the system clock reads {} seconds from 1970, outside the years 0 to 9999 a \
                 snapshot's time is recorded in: set the clock, then snapshot again",
                nanos / 1_000_000_000
            ))
        })
}
