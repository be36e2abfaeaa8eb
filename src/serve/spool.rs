//! Layers made to learn their digests, kept to be sent. A compressed layer's digest (or a
//! synthesized tree or diff layer's) is known only once the layer is made, and the manifest
//! that names it is asked for before any of its bytes: the pull that follows is sent the
//! bytes that pass made, from an unnamed file in the store's `tmp/` (`Store::spool`), rather
//! than the layer made a second time. The last used are kept, up to a budget. A layer not
//! kept (or made by an earlier server, whose digest the index remembers) is made again as it
//! is sent, checked against its digest on the way, and kept as it goes (`Tee`): a server
//! gzips a layer once, however many clients pull it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex};

use cellar_store::oci::{Digest, ImageOptions, LayerKey, LeftOut};
use cellar_store::{Snapshot, Store};

use crate::output::errln;

/// Spool files kept at most (several images of up to `CHAIN_LEN` layers each), and their
/// bytes at most: the newest is kept whatever its size, since the pull that asked for it
/// comes next.
const KEPT: usize = 64;
const KEPT_BYTES: u64 = 4 << 30;

#[derive(Clone)]
pub struct Spooled {
    pub file: Arc<File>,
    pub size: u64,
}

#[derive(Default)]
pub struct Spools {
    /// Least recently used first.
    kept: Mutex<VecDeque<(Digest, Spooled)>>,
    /// One layer made at a time: a second request for an image being made waits, then finds
    /// its digests known rather than making it again.
    making: Mutex<()>,
}

impl Spools {
    /// Make each layer of `snap`'s image whose digests are not known yet, keeping its bytes.
    /// The layers' snapshots are pinned while they are read. What each one made left out is
    /// given to `left_out`.
    pub fn make_layers(
        &self,
        store: &Arc<Store>,
        snap: &Snapshot,
        opts: &ImageOptions,
        left_out: impl Fn(&Digest, &LeftOut),
    ) -> cellar_store::Result<()> {
        let lease = store.read_lease("serve");
        for spec in lease.image_layers(snap, opts.mode)? {
            let key = LayerKey {
                spec,
                codec: opts.codec,
            };
            if store.known_layer_digest(&key)?.is_some() {
                continue;
            }
            let _one = self.making.lock().unwrap_or_else(|e| e.into_inner());
            let ready = store.ready_layer(key, || {
                errln!("cellar serve: making layer {key}, to learn its digest")
            })?;
            left_out(&ready.layer.digest.digest, &ready.left_out);
            let (digest, size) = (ready.layer.digest.digest.clone(), ready.layer.digest.size);
            if let Some(file) = ready.into_spool() {
                self.keep(digest, size, file);
            }
        }
        Ok(())
    }

    /// Keep `file`, the `size` bytes of the layer with this digest, as the last to go.
    pub fn keep(&self, digest: Digest, size: u64, file: File) {
        let spooled = Spooled {
            file: Arc::new(file),
            size,
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(d, _)| *d != digest);
        kept.push_back((digest, spooled));
        let mut bytes: u64 = kept.iter().map(|(_, s)| s.size).sum();
        while kept.len() > KEPT || (kept.len() > 1 && bytes > KEPT_BYTES) {
            if let Some((_, gone)) = kept.pop_front() {
                bytes -= gone.size;
            }
        }
    }

    /// The kept bytes of the layer with this digest, now the last to go.
    pub fn get(&self, digest: &Digest) -> Option<Spooled> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let at = kept.iter().position(|(d, _)| d == digest)?;
        let entry = kept.remove(at)?;
        let spooled = entry.1.clone();
        kept.push_back(entry);
        Some(spooled)
    }
}

/// A download's bytes on their way to `out`, also written to a spool file for the downloads
/// after it. A spool that cannot be written is given up; the download goes on.
pub struct Tee<'a, W> {
    out: &'a mut W,
    spool: Option<BufWriter<File>>,
}

impl<'a, W: Write> Tee<'a, W> {
    pub fn new(out: &'a mut W, spool: Option<File>) -> Self {
        Tee {
            out,
            spool: spool.map(|f| BufWriter::with_capacity(1 << 20, f)),
        }
    }

    /// The spool file, whole, if every byte went into it.
    pub fn into_spool(self) -> Option<File> {
        self.spool?.into_inner().ok()
    }
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(spool) = &mut self.spool {
            if spool.write_all(&data[..n]).is_err() {
                self.spool = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
