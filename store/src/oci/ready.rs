//! Layers about to be written out whole (pushed, or into a docker archive), which need their
//! digests first. A layer whose digests are known streams from the store; one never made in
//! its codec is made once into a spool file (`Store::spool`: in the store's `tmp/`, else the
//! system's temporary directory), which gives its digests and then its bytes, so it is not
//! synthesized twice. Where the spool runs out of room, the layer is made twice instead.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};

use super::image::Layer;
use super::layer::{LayerDigest, LayerKey};
use super::synth::LeftOut;
use crate::error::{Error, Result};
use crate::store::Store;

pub struct ReadyLayer {
    pub layer: Layer,
    /// What the layer left out, when it was made to learn its digests (else not looked for).
    pub left_out: LeftOut,
    /// The layer's bytes, if they had to be made to learn its digests.
    spool: Option<File>,
}

impl ReadyLayer {
    /// Whether its bytes wait in a spool file (they were made to learn its digests).
    pub fn spooled(&self) -> bool {
        self.spool.is_some()
    }

    /// The spool file holding the layer's bytes, if they had to be made.
    pub fn into_spool(self) -> Option<File> {
        self.spool
    }
}

impl Store {
    /// `key` with its digests. `making` is told when they are not known, before the layer is
    /// made into a spool file to learn them.
    pub fn ready_layer(&self, key: LayerKey, making: impl FnOnce()) -> Result<ReadyLayer> {
        if let Some(digest) = self.known_layer_digest(&key)? {
            return Ok(ReadyLayer {
                layer: Layer { key, digest },
                left_out: LeftOut::default(),
                spool: None,
            });
        }
        making();
        let spooled = (|| {
            let mut out = BufWriter::new(self.spool()?);
            let made = self.write_layer(&key, &mut out)?;
            let spool = out
                .into_inner()
                .map_err(|e| Error::Output(e.into_error()))?;
            Ok((made.digest, made.left_out, Some(spool)))
        })();
        let (digest, left_out, spool) = match spooled {
            Ok(made) => made,
            // No room for it: made once to learn its digest, and again to be written out, as
            // it would be without a spool.
            Err(Error::Output(e)) if is_out_of_space(&e) => {
                let made = self.write_layer(&key, &mut std::io::sink())?;
                (made.digest, made.left_out, None)
            }
            Err(e) => return Err(e),
        };
        Ok(ReadyLayer {
            layer: Layer { key, digest },
            left_out,
            spool,
        })
    }

    /// Write a ready layer's bytes to `out`, from its start each time (a registry that refused
    /// an upload gets it again): from its spool, or made from the store and checked against
    /// its digests on the way.
    pub fn write_ready(&self, ready: &mut ReadyLayer, out: &mut dyn Write) -> Result<LayerDigest> {
        let Some(spool) = ready.spool.as_mut() else {
            return Ok(self.write_layer(&ready.layer.key, out)?.digest);
        };
        let tmp = self.root().join(crate::layout::TMP_DIR);
        spool.rewind().map_err(|e| Error::io(&tmp, e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match spool.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&tmp, e)),
            };
            out.write_all(&buf[..n]).map_err(Error::Output)?;
        }
        Ok(ready.layer.digest.clone())
    }
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Codec, LayerSpec};
    use sha2::{Digest as _, Sha256};

    /// A layer made to learn its digest is not made again: its bytes come from the spool,
    /// even when the store could no longer make them.
    #[test]
    fn a_spooled_layer_is_written_from_its_spool() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"data\n").unwrap();
        // A name no layer can carry: the full layer is the tree written out, not the stream.
        std::fs::write(src.path().join(".wh.x"), b"").unwrap();
        let root = tempfile::tempdir().unwrap();
        let names = ["f".to_string(), ".wh.x".to_string()];
        let snap = crate::fuzzing::snapshot_of_tar(root.path(), src.path(), &names);
        assert!(!snap.exact_layer);
        let store = Store::open(root.path()).unwrap();
        let key = LayerKey {
            spec: LayerSpec::Tree(snap.id),
            codec: Codec::None,
        };
        let mut told = false;
        let mut ready = store.ready_layer(key, || told = true).unwrap();
        assert!(told && ready.spooled());

        std::fs::remove_dir_all(root.path().join(crate::layout::PACKS_DIR)).unwrap();
        let fresh = Store::open(root.path()).unwrap();
        for _ in 0..2 {
            let mut out = Vec::new();
            let digest = fresh.write_ready(&mut ready, &mut out).unwrap();
            assert_eq!(digest, ready.layer.digest);
            assert_eq!(out.len() as u64, digest.size);
            assert_eq!(hex::encode(Sha256::digest(&out)), digest.digest.hex());
        }
        // Known now (cached): not made again, and nothing to spool.
        let again = store.ready_layer(key, || panic!("made again")).unwrap();
        assert!(!again.spooled());
    }
}
