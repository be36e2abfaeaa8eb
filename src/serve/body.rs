//! Streaming a layer as a response body: synthesized on a blocking thread, handed over in
//! bounded pieces, and checked before it completes.
//!
//! The layer's bytes are hashed as they are made and must match the digest the manifest
//! promised; the last piece is held back until they do, so a mismatch (or a damaged chunk)
//! ends the response short of its Content-Length and the client sees a failed download,
//! never a complete blob with wrong bytes.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use cellar_store::oci::LayerKey;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use crate::output::{errln, left_out_summary};

/// Pieces handed to the connection: with a queue of 4, at most ~1 MiB in flight per download.
const PIECE: usize = 256 * 1024;

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

/// The bytes `range` (inclusive) of the layer `key` as a streaming body, once the snapshots it
/// is made of are pinned: a snapshot forgotten before that is an error here, for the caller to
/// answer with a status, not a 200 whose body breaks off at once.
pub async fn layer_body(
    shared: Arc<Shared>,
    key: LayerKey,
    range: (u64, u64),
) -> cellar_store::Result<Body> {
    // Waiting here holds no thread; the permit goes with the layer's thread and is given
    // back when it ends.
    let permit = (shared.downloads.slots.clone().acquire_owned().await)
        .map_err(|_| cellar_store::Error::Output(io::Error::other("the server is stopping")))?;
    let (tx, rx) = mpsc::channel::<Piece>(4);
    let (pinned_tx, pinned) = oneshot::channel();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx,
            rt,
            send_timeout: shared.downloads.send_timeout,
            buf: Vec::with_capacity(PIECE),
            held: None,
            pos: 0,
            range,
        };
        // For the download's length: a snapshot forgotten meanwhile is served to the end.
        let lease = shared.store.read_lease("serve");
        if let Err(e) = lease.pin_layer(&key.spec) {
            let _ = pinned_tx.send(Err(e));
            return;
        }
        let _ = pinned_tx.send(Ok(()));
        let written = shared.store.write_layer(&key, &mut w);
        // Every byte is read: end the lease before the client can see the last of them.
        drop(lease);
        match written {
            Ok(layer) => {
                let first = || {
                    let mut logged = shared.left_out_logged.lock().expect("log set");
                    logged.insert(layer.digest.digest.to_string())
                };
                if !layer.left_out.is_empty() && first() {
                    errln!(
                        "cellar serve: layer {} leaves out {}",
                        layer.digest.digest,
                        left_out_summary(&layer.left_out)
                    );
                }
                w.finish()
            }
            Err(e) => w.fail(e),
        }
    });
    pinned.await.map_err(|_| {
        cellar_store::Error::Output(io::Error::other("the layer's thread ended early"))
    })??;
    Ok(Body::from_stream(ReceiverStream::new(rx)))
}
