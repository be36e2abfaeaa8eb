//! The input side of an ingest: a thread that reads the source and unwraps gzip or zstd, and
//! one that hashes the tar stream (sha256, length), handing it on in blocks.

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tar::ByteSource;

const BLOCK: usize = 1 << 20;
const QUEUE: usize = 2;

/// From the reader to the hasher.
enum Raw {
    Data(Vec<u8>),
    End,
    Failed(Error),
}

/// From the hasher to the parser.
enum Msg {
    Data(Vec<u8>),
    End { len: u64, sha256: [u8; 32] },
    Failed(Error),
}

/// The receiving end: a byte source for the tar reader.
pub struct ChannelSource {
    rx: Receiver<Msg>,
    /// Spent blocks go back to the input thread for reuse.
    recycle: Sender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    end: Option<(u64, [u8; 32])>,
}

impl ChannelSource {
    /// Length and sha256 of the whole stream, once it has been read to its end.
    pub fn digest(&self) -> Option<(u64, [u8; 32])> {
        self.end
    }
}

impl ByteSource for ChannelSource {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        while self.pos == self.block.len() {
            if self.end.is_some() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(b)) => {
                    let spent = std::mem::replace(&mut self.block, b);
                    let _ = self.recycle.try_send(spent);
                    self.pos = 0;
                }
                Ok(Msg::End { len, sha256 }) => self.end = Some((len, sha256)),
                Ok(Msg::Failed(e)) => return Err(e),
                Err(_) => return Err(Error::Input(std::io::Error::other("input reader stopped"))),
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Start reading `input` on a thread of its own, and hashing it on another. The threads are not
/// joined: if the ingest stops early they are left to finish when the source ends (or their
/// reader is dropped).
pub fn spawn(input: Box<dyn Read + Send>) -> ChannelSource {
    let (raw_tx, raw_rx) = bounded(QUEUE);
    let (tx, rx) = bounded(QUEUE);
    let (recycle, free) = bounded(2 * QUEUE + 2);
    thread::Builder::new()
        .name("cellar-input".into())
        .spawn(move || pump(input, raw_tx, free))
        .expect("spawn input thread");
    // sha256 runs at about the speed of reading, so it gets a thread of its own.
    thread::Builder::new()
        .name("cellar-sha256".into())
        .spawn(move || hash(raw_rx, tx))
        .expect("spawn hashing thread");
    ChannelSource {
        rx,
        recycle,
        block: Vec::new(),
        pos: 0,
        end: None,
    }
}

fn hash(rx: Receiver<Raw>, tx: Sender<Msg>) {
    let mut sha = Sha256::new();
    let mut len = 0u64;
    for raw in rx {
        let msg = match raw {
            Raw::Data(block) => {
                sha.update(&block);
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

fn pump(input: Box<dyn Read + Send>, tx: Sender<Raw>, free: Receiver<Vec<u8>>) {
    let consumed = Arc::new(AtomicU64::new(0));
    let mut input: Box<dyn Read + Send> = Box::new(Counting {
        inner: input,
        count: consumed.clone(),
    });
    let (mut reader, codec) = match unwrap_compression(&mut input) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Raw::Failed(e));
            return;
        }
    };
    loop {
        let mut block = free.try_recv().unwrap_or_default();
        block.resize(BLOCK, 0);
        let mut n = 0;
        let mut eof = false;
        while n < BLOCK {
            match reader.read(&mut block[n..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
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
        block.truncate(n);
        if n > 0 && tx.send(Raw::Data(block)).is_err() {
            return;
        }
        if eof {
            let _ = tx.send(Raw::End);
            return;
        }
    }
}

type Unwrapped<'a> = (Box<dyn Read + 'a>, Option<&'static str>);

/// Look at the first bytes: gzip and zstd streams are decompressed, anything else is taken as
/// it is.
fn unwrap_compression(input: &mut Box<dyn Read + Send>) -> Result<Unwrapped<'_>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Input(e)),
        }
    }
    let chained = Cursor::new(magic[..n].to_vec()).chain(input);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => (
            Box::new(flate2::read::MultiGzDecoder::new(chained)),
            Some("gzip"),
        ),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            let d =
                zstd::stream::read::Decoder::new(chained).map_err(|err| Error::BadCompression {
                    codec: "zstd",
                    offset: 0,
                    err,
                })?;
            (Box::new(d), Some("zstd"))
        }
        _ => (Box::new(chained), None),
    })
}

/// Counts the raw (compressed) bytes read, so a decoder's failure can say where.
struct Counting {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
