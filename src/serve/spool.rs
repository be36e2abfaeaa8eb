//! Layers made to learn their digests, kept to be sent. A compressed layer's digest (or a
//! synthesized tree or diff layer's) is known only once the layer is made, and the manifest
//! that names it is asked for before any of its bytes: the pull that follows is sent the
//! bytes that pass made, from an unnamed file in the store's `tmp/` (`Store::spool`), rather
//! than the layer made a second time. The last used are kept, up to a budget; a layer not
//! kept (or made by an earlier server, whose digest the index remembers) is made again as it
//! is sent, and checked against its digest on the way.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Mutex};

use cellar_store::oci::{Digest, ImageOptions, LayerKey, LeftOut};
use cellar_store::{Snapshot, Store};

use crate::output::errln;

/// Spool files kept at most, and their bytes at most: the newest is kept whatever its size,
/// since the pull that asked for it comes next.
const KEPT: usize = 16;
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
                let file = Arc::new(file);
                self.keep(digest, Spooled { file, size });
            }
        }
        Ok(())
    }

    fn keep(&self, digest: Digest, spooled: Spooled) {
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
