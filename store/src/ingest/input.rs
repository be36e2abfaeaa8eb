//! The input side of an ingest: a thread that reads the source and unwraps gzip or zstd, and
//! one that hashes the tar stream (sha256, length), handing it on in blocks. A plain tar file
//! is mapped rather than read (`mapped.rs`).
//!
//! A file that changes while it is read is refused at its end (`Stamp`). Mapped, it is read
//! more than once: the hasher, the parser and the frame it is copied into each see the pages
//! as they are then, so a write in between would record chunks that fail their own ids, and a
//! stream whose sha256 is not that of its bytes. Read, it would be a file that never existed.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use sha2::{Digest, Sha256};

use super::gzip::{GzipMembers, Tally};
use super::mapped::{Block, MappedRange, Mapping};
use super::pipe::{set_nonblocking, stalled, Idle, Shared, Waited, WriterExited};
use super::wrapper::{codec_of, SNIFF};
use crate::error::{Error, Result};
use crate::tar::ByteSource;

const BLOCK: usize = 1 << 20;
/// How often an input that stalls looks whether the ingest is to stop.
const STALL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);
/// Blocks read ahead of the hashing thread.
const QUEUE: usize = 2;
/// Blocks hashed ahead of the parser. sha256's work per byte is the same everywhere; the
/// parser's rises and falls with the stream's contents (large files already stored are quick
/// to parse, small files slow). A deep queue lets the hasher run ahead through the slow parts,
/// so the parser does not wait on it through the quick ones.
const HASHED_AHEAD: usize = 8;

/// What an ingest reads: any stream, or a file, which is mapped when it is a plain tar file
/// (a named pipe or a device given as a file is read as a stream).
pub enum IngestInput {
    Stream(Box<dyn Read + Send>),
    /// A stream from a pipe (a command's stdout, stdin), read as a stream; the descriptor
    /// (a duplicate) tells when the writer has nothing more for now, and, for a command's
    /// pipe, whether its stream is over though the pipe stays open (`pipe.rs`).
    Pipe(Box<dyn Read + Send>, OwnedFd, Option<WriterExited>),
    File(File),
}

impl IngestInput {
    /// Any reader, read as a stream.
    pub fn stream(r: impl Read + Send + 'static) -> Self {
        IngestInput::Stream(Box::new(r))
    }

    /// A pipe (or anything with a descriptor poll(2) answers for), read as a stream. What has
    /// come is handed to the parser whenever the writer pauses, not only by the MiB, so a
    /// stream that goes wrong early is refused then, not when its writer ends (a command that
    /// prints something else and waits on a prompt would otherwise hang the snapshot).
    pub fn pipe(r: impl Read + AsFd + Send + 'static) -> std::io::Result<Self> {
        let fd = r.as_fd().try_clone_to_owned()?;
        Ok(IngestInput::Pipe(Box::new(r), fd, None))
    }

    /// The stdout of a command cellar started, read as [`IngestInput::pipe`] is. Once
    /// `exited` is set, a plain tar stream whose end-of-archive marker has come ends when the
    /// pipe goes quiet, though something the command left running holds it open (`pipe.rs`);
    /// the report warns of it.
    pub fn command_pipe(
        r: impl Read + AsFd + Send + 'static,
        exited: WriterExited,
    ) -> std::io::Result<Self> {
        let fd = r.as_fd().try_clone_to_owned()?;
        Ok(IngestInput::Pipe(Box::new(r), fd, Some(exited)))
    }
}

impl From<Box<dyn Read + Send>> for IngestInput {
    fn from(r: Box<dyn Read + Send>) -> Self {
        IngestInput::Stream(r)
    }
}

impl From<File> for IngestInput {
    fn from(f: File) -> Self {
        IngestInput::File(f)
    }
}

/// From the reader to the hasher.
enum Raw {
    Data(Block),
    End,
    Failed(Error),
}

/// From the hasher to the parser.
enum Msg {
    Data(Block),
    End { len: u64, sha256: [u8; 32] },
    Failed(Error),
}

/// The receiving end: a byte source for the tar reader.
pub struct ChannelSource {
    rx: Receiver<Msg>,
    /// Spent blocks go back to the input thread: read ones for reuse, mapped ones to be
    /// released there (`MADV_DONTNEED` is not free, and this thread is the busiest).
    recycle: Sender<Block>,
    block: Block,
    pos: usize,
    end: Option<(u64, [u8; 32])>,
    /// A file source as it was before its first byte was read.
    stamp: Option<Stamp>,
    /// Set to stop the ingest: looked at while the input stalls (`IngestOptions::cancel`).
    cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

/// What a write to a file changes: its size, its modification time and (whatever sets the
/// times back) its change time; and which file it is. GNU tar's "file changed as we read it"
/// looks at the same. A change within the clock's granularity of the one before the first
/// look could pass unseen on kernels before 6.13; from 6.13 on, a change after a look at the
/// times gets a time of its own.
struct Stamp {
    file: File,
    was: [i64; 7],
}

impl Stamp {
    /// A regular file's stamp. A named pipe or a device is a stream: writes into a pipe move
    /// its times while it is read, as they should, and a device has none worth watching.
    fn take(file: &File) -> Option<Stamp> {
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let file = file.try_clone().ok()?;
        let was = Stamp::now(&file).ok()?;
        Some(Stamp { file, was })
    }

    fn now(file: &File) -> std::io::Result<[i64; 7]> {
        let m = file.metadata()?;
        Ok([
            m.dev() as i64,
            m.ino() as i64,
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ])
    }

    /// An error if the file is not as it was.
    fn check(&self) -> Result<()> {
        let now = Stamp::now(&self.file).map_err(Error::Input)?;
        if now == self.was {
            return Ok(());
        }
        let how = match (self.was[2], now[2]) {
            (was, is) if was != is => format!("it was {was} bytes and is {is} now"),
            _ => "its modification or change time moved".to_string(),
        };
        Err(Error::Input(std::io::Error::other(format!(
            "the file changed while it was being read ({how}): nothing was recorded; snapshot \
             it once nothing writes to it"
        ))))
    }
}

impl ChannelSource {
    /// Length and sha256 of the whole stream, once it has been read to its end.
    pub fn digest(&self) -> Option<(u64, [u8; 32])> {
        self.end
    }

    /// Says the end-of-archive marker has been read, for the thread reading a command's pipe.
    pub fn marker_read(&self) -> impl Fn() + use<> {
        let shared = self.shared.clone();
        move || shared.trailer.store(true, Ordering::SeqCst)
    }

    /// Says, once the input has been read (or failed), what it was unwrapped from: `gzip`,
    /// `zstd`, or nothing for a plain tar stream.
    pub fn unwrapped(&self) -> impl Fn() -> Option<&'static str> + use<> {
        let shared = self.shared.clone();
        move || shared.codec.get().copied()
    }

    /// Whether the stream was taken to end with its pipe still open (`pipe.rs`).
    pub fn cut_open(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl ByteSource for ChannelSource {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        while self.pos == self.block.len() {
            if self.end.is_some() {
                return Ok(&[]);
            }
            let msg = match self.rx.recv_timeout(STALL_CHECK) {
                Err(RecvTimeoutError::Timeout) if self.cancel.load(Ordering::Relaxed) => {
                    return Err(Error::Interrupted)
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => Err(()),
                Ok(msg) => Ok(msg),
            };
            match msg {
                Ok(Msg::Data(b)) => {
                    // With the input thread gone (or behind), the block is dropped here.
                    let _ = self.recycle.try_send(std::mem::replace(&mut self.block, b));
                    self.pos = 0;
                }
                Ok(Msg::End { len, sha256 }) => {
                    // Every byte has been consumed, after every read of it.
                    if let Some(stamp) = &self.stamp {
                        stamp.check()?;
                    }
                    self.end = Some((len, sha256));
                }
                Ok(Msg::Failed(e)) => return Err(e),
                Err(_) => return Err(Error::Input(std::io::Error::other("input reader stopped"))),
            }
        }
        Ok(&self.block[self.pos..])
    }

    fn consume(&mut self, n: usize) -> Result<()> {
        self.pos += n;
        // After use: bytes of a file cut under them were read as zeros. The ingest fails here,
        // before anything made of them is committed.
        self.block.check()
    }
}

/// A bad tar stream's offset counts the tar stream, not the file it was unwrapped from: said
/// so when it was unwrapped.
pub(super) fn counted_unwrapped(e: Error, codec: Option<&str>) -> Error {
    match (e, codec) {
        (
            Error::BadTar {
                offset,
                member,
                what,
            },
            Some(codec),
        ) => Error::BadTar {
            offset,
            member,
            what: format!("{what} (byte {offset} of the tar stream inside the {codec} input)"),
        },
        (e, _) => e,
    }
}

/// Start reading `input` on a thread of its own, and hashing it on another. The threads are not
/// joined: if the ingest stops early they are left to finish when the source ends (or their
/// reader is dropped).
pub fn spawn(input: IngestInput, cancel: Arc<AtomicBool>) -> ChannelSource {
    let stamp = match &input {
        IngestInput::File(file) => Stamp::take(file),
        IngestInput::Stream(_) | IngestInput::Pipe(..) => None,
    };
    let shared = Arc::new(Shared::default());
    let (end, stop) = (shared.clone(), cancel.clone());
    let (raw_tx, raw_rx) = bounded(QUEUE);
    let (tx, rx) = bounded(HASHED_AHEAD);
    let (recycle, free) = bounded(QUEUE + HASHED_AHEAD + 2);
    thread::Builder::new()
        .name("cellar-input".into())
        .spawn(move || pump(input, raw_tx, free, &end, &stop))
        .expect("spawn input thread");
    // sha256 runs at about the speed of reading, so it gets a thread of its own.
    thread::Builder::new()
        .name("cellar-sha256".into())
        .spawn(move || hash(raw_rx, tx))
        .expect("spawn hashing thread");
    ChannelSource {
        rx,
        recycle,
        block: Block::default(),
        pos: 0,
        end: None,
        stamp,
        cancel,
        shared,
    }
}

fn hash(rx: Receiver<Raw>, tx: Sender<Msg>) {
    let mut sha = Sha256::new();
    let mut len = 0u64;
    for raw in rx {
        let msg = match raw {
            Raw::Data(block) => {
                sha.update(&block[..]);
                len += block.len() as u64;
                Msg::Data(block)
            }
            Raw::End => Msg::End {
                len,
                sha256: std::mem::take(&mut sha).finalize().into(),
            },
            Raw::Failed(e) => Msg::Failed(e),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Read `input` into `tx`. `end` is what the parse tells a pipe's reader (and is told of the
/// input); `cancel` is the ingest's.
fn pump(
    input: IngestInput,
    tx: Sender<Raw>,
    free: Receiver<Block>,
    end: &Shared,
    cancel: &AtomicBool,
) {
    let (input, pipe, exited) = match input {
        IngestInput::Stream(r) => (r, None, None),
        IngestInput::Pipe(r, fd, exited) => (r, Some(fd), exited),
        IngestInput::File(file) => match Mapping::new(&file) {
            Some(map) if codec_of(map.bytes()).is_none() => {
                // Whatever was appended to the file since is not read: the file changed, which
                // its stamp finds at the end.
                if send_mapped(map, &tx, &free) {
                    let _ = tx.send(Raw::End);
                }
                return;
            }
            _ => (Box::new(file) as Box<dyn Read + Send>, None, None),
        },
    };
    let consumed = Arc::new(AtomicU64::new(0));
    let (reader, codec) = match unwrap_compression(input, &consumed) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Raw::Failed(e));
            return;
        }
    };
    if let Some(codec) = codec {
        let _ = end.codec.set(codec);
    }
    // Only a plain stream's reads are the pipe's: a decoder may hold bytes it has not given
    // out, and is not made to meet `WouldBlock`.
    let exited = exited.filter(|_| codec.is_none());
    if let (Some(fd), Some(_)) = (&pipe, &exited) {
        if let Err(e) = set_nonblocking(fd) {
            let _ = tx.send(Raw::Failed(Error::Input(e)));
            return;
        }
    }
    let idle = pipe.as_ref().map(|fd| Idle {
        fd,
        exited: exited.as_ref(),
        end,
        cancel,
        gone_since: Default::default(),
    });
    read_blocks(reader, codec, consumed, idle, &tx, &free)
}

/// Hand the mapped file on in blocks, each populated first; false if the ingest stopped
/// listening or the file shrank (which has been reported).
fn send_mapped(map: Mapping, tx: &Sender<Raw>, free: &Receiver<Block>) -> bool {
    let map = Arc::new(map);
    let mut at = 0;
    while at < map.len() {
        // Release the blocks the parser is done with.
        while free.try_recv().is_ok() {}
        let end = map.len().min(at + BLOCK);
        if let Err(e) = map.populate(at..end) {
            let e = std::io::Error::new(
                e.kind(),
                format!("the file could not be read at byte {at} (was it cut short while it was being read?): {e}"),
            );
            let _ = tx.send(Raw::Failed(Error::Input(e)));
            return false;
        }
        if tx
            .send(Raw::Data(Block::Mapped(MappedRange::new(
                map.clone(),
                at..end,
            ))))
            .is_err()
        {
            return false;
        }
        at = end;
    }
    true
}

/// A buffer for the next read block: a spent read one if one came back (mapped ones coming
/// back are released by dropping them), else a new one.
fn spare(free: &Receiver<Block>) -> Vec<u8> {
    while let Ok(block) = free.try_recv() {
        if let Block::Owned(v) = block {
            return v;
        }
    }
    Vec::new()
}

/// Read `reader` to its end in blocks (reusing read ones from `free`), then send the end. A
/// block is sent when full, or, from a `pipe` whose writer has stalled, with the whole
/// tar blocks read so far (the bytes past them start the next one): blocks stay 512-aligned
/// in the stream, so no header is split between two.
fn read_blocks(
    mut reader: Box<dyn Read + '_>,
    codec: Option<&'static str>,
    consumed: Arc<AtomicU64>,
    pipe: Option<Idle>,
    tx: &Sender<Raw>,
    free: &Receiver<Block>,
) {
    const TAR_BLOCK: usize = crate::tar::header::BLOCK;
    let mut carry = Vec::with_capacity(TAR_BLOCK);
    loop {
        let mut block = spare(free);
        block.resize(BLOCK, 0);
        let mut n = carry.len();
        block[..n].copy_from_slice(&carry);
        carry.clear();
        let mut eof = false;
        while n < BLOCK {
            if n >= TAR_BLOCK && pipe.as_ref().is_some_and(|p| stalled(p.fd)) {
                break;
            }
            match reader.read(&mut block[n..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match pipe.as_ref().map(Idle::wait) {
                        Some(Waited::Ready) => {}
                        Some(Waited::Over) => {
                            eof = true;
                            break;
                        }
                        Some(Waited::Stopped) => {
                            let _ = tx.send(Raw::Failed(Error::Interrupted));
                            return;
                        }
                        None => {
                            let _ = tx.send(Raw::Failed(Error::Input(e)));
                            return;
                        }
                    }
                }
                Err(e) => {
                    let err = match codec {
                        Some(codec) => Error::BadCompression {
                            codec,
                            offset: consumed.load(Ordering::Relaxed),
                            err: e,
                        },
                        None => Error::Input(e),
                    };
                    let _ = tx.send(Raw::Failed(err));
                    return;
                }
            }
        }
        let whole = match eof || n == BLOCK {
            true => n,
            false => n / TAR_BLOCK * TAR_BLOCK,
        };
        carry.extend_from_slice(&block[whole..n]);
        block.truncate(whole);
        if whole > 0 && tx.send(Raw::Data(Block::Owned(block))).is_err() {
            return;
        }
        if eof {
            let _ = tx.send(Raw::End);
            return;
        }
    }
}

type Unwrapped = (Box<dyn Read>, Option<&'static str>);

/// Look at the first bytes: gzip and zstd streams are decompressed, anything else is taken as
/// it is. A decoder's input counts into `consumed` what it took, so its failure says where.
fn unwrap_compression(
    mut input: Box<dyn Read + Send>,
    consumed: &Arc<AtomicU64>,
) -> Result<Unwrapped> {
    let mut start = vec![0u8; SNIFF];
    let mut n = 0;
    while n < start.len() {
        match input.read(&mut start[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Input(e)),
        }
    }
    start.truncate(n);
    let codec = codec_of(&start);
    let chained = Cursor::new(start).chain(input);
    Ok(match codec {
        Some("gzip") => {
            let buffered = BufReader::with_capacity(1 << 16, chained);
            let tallied = Tally::new(buffered, consumed.clone());
            (Box::new(GzipMembers::new(tallied)), codec)
        }
        Some(codec) => {
            let counted = Tally::new(chained, consumed.clone());
            let d =
                zstd::stream::read::Decoder::new(counted).map_err(|err| Error::BadCompression {
                    codec,
                    offset: 0,
                    err,
                })?;
            (Box::new(d), Some(codec))
        }
        None => (Box::new(chained), None),
    })
}
