//! Streaming a layer as a response body: synthesized on a blocking thread, handed over in
//! bounded pieces, and checked before it completes.
//!
//! The layer's bytes are hashed as they are made and must match the digest the manifest
//! promised; the last piece is held back until they do, so a mismatch (or a damaged chunk)
//! ends the response short of its Content-Length and the client sees a failed download,
//! never a complete blob with wrong bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use cellar_store::oci::{Codec, LayerKey, LayerSpec};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;

use super::spool::{Spooled, Tee};
use super::Shared;
use crate::output::errln;

/// Pieces handed to the connection: with a queue of `QUEUE`, at most ~1 MiB in flight per
/// download. Small, because `--send-timeout` is timed per piece (a send waits for the
/// client to take the one before): a client reading steadily at 3 KB/s took over 60 s per
/// 256 KiB piece and was cut off; 64 KiB is cut off only below about 1 KiB/s.
const PIECE: usize = 64 * 1024;
const QUEUE: usize = 16;

type Piece = Result<Bytes, io::Error>;

struct ChannelWriter {
    tx: mpsc::Sender<Piece>,
    /// The runtime the connection is on: sends wait on it, with a time limit.
    rt: tokio::runtime::Handle,
    /// How long a piece may wait for the client to take the one before it.
    send_timeout: Duration,
    buf: Vec<u8>,
    held: Option<Bytes>,
    /// Offset in the whole blob of the next byte written.
    pos: u64,
    /// Inclusive byte range wanted.
    range: (u64, u64),
}

impl ChannelWriter {
    fn send(&mut self, piece: Piece) -> io::Result<()> {
        let limit = self.send_timeout;
        match self
            .rt
            .block_on(tokio::time::timeout(limit, self.tx.send(piece)))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            // A client that stopped reading would otherwise hold this thread for good.
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {} s", limit.as_secs()),
            )),
        }
    }

    /// Move the filled buffer to the held slot, sending what was held before.
    fn rotate(&mut self) -> io::Result<()> {
        let full = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        if let Some(prev) = self.held.replace(full) {
            self.send(Ok(prev))?;
        }
        Ok(())
    }

    fn finish(mut self) {
        let _ = self.rotate();
        if let Some(last) = self.held.take() {
            let _ = self.send(Ok(last));
        }
    }

    fn fail(self, e: impl std::fmt::Display) {
        errln!("cellar serve: aborting a download: {e}");
        // Without waiting: the client may be the trouble. Unsent, the error still shows, as
        // a body that ends short of its length once the sender is dropped.
        let _ = self.tx.try_send(Err(io::Error::other(e.to_string())));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (start, end) = self.range;
        let at = self.pos;
        self.pos += data.len() as u64;
        if self.pos <= start || at > end {
            // Bytes made only to be skipped (or hashed) meet no send that would notice a
            // client gone: ask, or a tail range nobody waits for is made whole regardless.
            if self.tx.is_closed() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client went away",
                ));
            }
            return Ok(data.len());
        }
        let from = start.saturating_sub(at) as usize;
        let to = ((end + 1 - at) as usize).min(data.len());
        let mut part = &data[from..to];
        while !part.is_empty() {
            let n = (PIECE - self.buf.len()).min(part.len());
            self.buf.extend_from_slice(&part[..n]);
            part = &part[n..];
            if self.buf.len() == PIECE {
                self.rotate()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A download's writer and the body it feeds, once one of the download slots is free: waiting
/// for it holds no thread. The permit goes with the download's thread and is given back when
/// it ends.
async fn download(
    shared: &Shared,
    range: (u64, u64),
) -> cellar_store::Result<(OwnedSemaphorePermit, ChannelWriter, Body)> {
    let permit = (shared.downloads.slots.clone().acquire_owned().await)
        .map_err(|_| cellar_store::Error::Output(io::Error::other("the server is stopping")))?;
    let (tx, rx) = mpsc::channel::<Piece>(QUEUE);
    let w = ChannelWriter {
        tx,
        rt: tokio::runtime::Handle::current(),
        send_timeout: shared.downloads.send_timeout,
        buf: Vec::with_capacity(PIECE),
        held: None,
        pos: 0,
        range,
    };
    Ok((permit, w, Body::from_stream(ReceiverStream::new(rx))))
}

/// The bytes `range` (inclusive) of the layer `key` as a streaming body, once the snapshots it
/// is made of are pinned: a snapshot forgotten before that is an error here, for the caller to
/// answer with a status, not a 200 whose body breaks off at once.
pub async fn layer_body(
    shared: Arc<Shared>,
    key: LayerKey,
    range: (u64, u64),
) -> cellar_store::Result<Body> {
    let (permit, mut w, body) = download(&shared, range).await?;
    let (pinned_tx, pinned) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // For the download's length: a snapshot forgotten meanwhile is served to the end.
        let lease = shared.store.read_lease("serve");
        if let Err(e) = lease.pin_layer(&key.spec) {
            let _ = pinned_tx.send(Err(e));
            return;
        }
        let _ = pinned_tx.send(Ok(()));
        // An exact stream's export is as fast as reading a spool would be.
        let cheap = matches!((key.spec, key.codec), (LayerSpec::Exact(_), Codec::None));
        let spool = if cheap {
            None
        } else {
            shared.store.spool().ok()
        };
        let mut tee = Tee::new(&mut w, spool);
        let written = shared.store.write_layer(&key, &mut tee);
        let spool = tee.into_spool();
        // Every byte is read: end the lease before the client can see the last of them.
        drop(lease);
        match written {
            Ok(layer) => {
                shared.log_left_out(&layer.digest.digest, &layer.left_out);
                if let Some(file) = spool {
                    let size = layer.digest.size;
                    shared.spools.keep(layer.digest.digest, size, file);
                }
                w.finish()
            }
            Err(e) => w.fail(e),
        }
    });
    pinned.await.map_err(|_| {
        cellar_store::Error::Output(io::Error::other("the layer's thread ended early"))
    })??;
    Ok(body)
}

/// The bytes `range` (inclusive) of a layer kept in a spool file, as a streaming body. They
/// were hashed into the layer's digest as they were made; the store is not read again.
pub async fn spool_body(
    shared: Arc<Shared>,
    spooled: Spooled,
    range: (u64, u64),
) -> cellar_store::Result<Body> {
    let (permit, mut w, body) = download(&shared, range).await?;
    w.pos = range.0;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match copy_range(&spooled.file, range, &mut w) {
            Ok(()) => w.finish(),
            Err(e) => w.fail(format!("reading a spooled layer: {e}")),
        }
    });
    Ok(body)
}

fn copy_range(file: &File, (start, end): (u64, u64), w: &mut ChannelWriter) -> io::Result<()> {
    let mut buf = vec![0u8; PIECE];
    let mut at = start;
    while at <= end {
        let want = usize::try_from(end - at + 1).map_or(PIECE, |n| n.min(PIECE));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends early",
            ));
        }
        w.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}
