//! Layers: which ones make a snapshot's image, and writing one out (compressed, hashed and
//! checked against what the cache says it hashes to).

use std::fmt;
use std::io::Write;

use super::digest::{Digest, Hashing};
use super::synth::LeftOut;
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// A new base layer every this many snapshots of a lineage, so an incremental chain stays short.
pub const CHAIN_LEN: usize = 16;

/// What a layer holds (before compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerSpec {
    /// The snapshot's own ingested stream, byte for byte.
    Exact(SnapshotId),
    /// The snapshot's tree, written by cellar (names sanitized).
    Tree(SnapshotId),
    /// What changed from one snapshot to the next, with OCI whiteouts.
    Diff { from: SnapshotId, to: SnapshotId },
}

impl LayerSpec {
    /// The snapshots whose data the layer is made of.
    pub fn snapshots(&self) -> Vec<SnapshotId> {
        match *self {
            LayerSpec::Exact(id) | LayerSpec::Tree(id) => vec![id],
            LayerSpec::Diff { from, to } => vec![from, to],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    #[default]
    None,
    Gzip,
    Zstd,
}

const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

impl Codec {
    pub fn parse(s: &str) -> Option<Codec> {
        match s {
            "none" => Some(Codec::None),
            "gzip" => Some(Codec::Gzip),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Codec::None => "application/vnd.oci.image.layer.v1.tar",
            Codec::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Codec::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The codec and every setting that shapes its output: part of a cached digest's key.
    /// The deflate implementation shapes gzip's bytes too: `gzip-6` was miniz_oxide's, whose
    /// cached digests zlib-rs's bytes would not match.
    fn key(self) -> String {
        match self {
            Codec::None => "none".into(),
            Codec::Gzip => format!("gzip-{GZIP_LEVEL}-zlibrs"),
            Codec::Zstd => format!("zstd-{ZSTD_LEVEL}"),
        }
    }
}

/// A layer as stored bytes: its content and codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerKey {
    pub spec: LayerSpec,
    pub codec: Codec,
}

/// Bump when the synthesized bytes change for the same snapshots (the writer's dialect, the
/// whiteout rules), so cached digests of the old bytes are not used.
const SYNTH_VERSION: &str = "l1";

impl fmt::Display for LayerKey {
    /// The cache key: everything that shapes the layer's bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codec = self.codec.key();
        match self.spec {
            LayerSpec::Exact(s) => write!(f, "{SYNTH_VERSION} exact {s} {codec}"),
            LayerSpec::Tree(s) => write!(f, "{SYNTH_VERSION} tree {s} {codec}"),
            LayerSpec::Diff { from, to } => {
                write!(f, "{SYNTH_VERSION} diff {from} {to} {codec}")
            }
        }
    }
}

impl LayerKey {
    /// The snapshots the layer is made of.
    pub fn snapshots(&self) -> Vec<SnapshotId> {
        match self.spec {
            LayerSpec::Exact(s) | LayerSpec::Tree(s) => vec![s],
            LayerSpec::Diff { from, to } => vec![from, to],
        }
    }

    /// Parse a cache key back (None for keys of another synthesis version or codec setting).
    pub fn parse(key: &str) -> Option<LayerKey> {
        let words: Vec<&str> = key.split(' ').collect();
        let id = |s: &str| SnapshotId::from_hex(s);
        let (spec, codec) = match words[..] {
            [SYNTH_VERSION, "exact", s, c] => (LayerSpec::Exact(id(s)?), c),
            [SYNTH_VERSION, "tree", s, c] => (LayerSpec::Tree(id(s)?), c),
            [SYNTH_VERSION, "diff", a, b, c] => (
                LayerSpec::Diff {
                    from: id(a)?,
                    to: id(b)?,
                },
                c,
            ),
            _ => return None,
        };
        let codec = [Codec::None, Codec::Gzip, Codec::Zstd]
            .into_iter()
            .find(|k| k.key() == codec)?;
        Some(LayerKey { spec, codec })
    }
}

/// A layer's digests: of its stored bytes, their length, and of the uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigest {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// A layer written: its digests, and the paths it left out (names starting `.wh.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    pub digest: LayerDigest,
    pub left_out: LeftOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerMode {
    /// One layer holding the whole snapshot.
    #[default]
    Full,
    /// A base layer, then one layer per later snapshot of the lineage.
    Incremental,
}

impl LayerMode {
    pub fn parse(s: &str) -> Option<LayerMode> {
        match s {
            "full" => Some(LayerMode::Full),
            "incremental" => Some(LayerMode::Incremental),
            _ => None,
        }
    }
}

/// A stream that goes nowhere: for computing digests.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn out_err(e: std::io::Error) -> Error {
    Error::Output(e)
}

/// A layer's digests once all of it is in `stored`: `diff_id` is the uncompressed tar's, or
/// None for a layer stored uncompressed, whose bytes are that tar (hashed once, not twice).
fn layer_digests(stored: Hashing<&mut dyn Write>, diff_id: Option<Digest>) -> Result<LayerDigest> {
    let (out, digest, size) = stored.finish();
    out.flush().map_err(out_err)?;
    Ok(LayerDigest {
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size,
    })
}

impl Store {
    /// The layers of `snap`'s image, bottom first. Incremental: a full base every
    /// [`CHAIN_LEN`] snapshots of the lineage, then one diff per snapshot after it.
    pub fn image_layers(&self, snap: &Snapshot, mode: LayerMode) -> Result<Vec<LayerSpec>> {
        let full = |s: &Snapshot| {
            if s.exact_layer {
                LayerSpec::Exact(s.id)
            } else {
                LayerSpec::Tree(s.id)
            }
        };
        if mode == LayerMode::Full {
            return Ok(vec![full(snap)]);
        }
        let lineage = self.list(Some(&snap.name))?;
        let pos = lineage
            .iter()
            .position(|s| s.id == snap.id)
            .ok_or_else(|| Error::NotFound(format!("snapshot {} is gone", snap.short_id())))?;
        let base = pos - pos % CHAIN_LEN;
        let mut layers = vec![full(&lineage[base])];
        for w in lineage[base..=pos].windows(2) {
            layers.push(LayerSpec::Diff {
                from: w[0].id,
                to: w[1].id,
            });
        }
        Ok(layers)
    }

    /// Write a layer to `out`: synthesized, compressed and hashed on the way. If its digest is
    /// cached, the bytes written must hash to it: a mismatch is an error (the caller holds
    /// back its last bytes until this returns, so wrong bytes never complete). Otherwise the
    /// digest is cached for next time.
    pub fn write_layer(&self, key: &LayerKey, out: &mut dyn Write) -> Result<WrittenLayer> {
        if let (LayerSpec::Exact(id), Codec::None) = (key.spec, key.codec) {
            // The stream itself: export checks its length and sha256 against the snapshot's
            // record, which is what the digest is, so it is not hashed twice.
            let snap = self.snapshot_by_id(&id)?;
            self.export(&snap, out)?;
            return Ok(WrittenLayer {
                digest: self.layer_digest(key)?,
                left_out: LeftOut::default(),
            });
        }
        let cached = self.cached_layer_digest(key)?;
        let (got, left_out) = match key.codec {
            Codec::None => {
                let mut stored = Hashing::new(out);
                let left_out = self.write_raw_layer(&key.spec, &mut stored)?;
                (layer_digests(stored, None)?, left_out)
            }
            Codec::Gzip => self.write_compressed(
                &key.spec,
                flate2::write::GzEncoder::new(
                    Hashing::new(out),
                    flate2::Compression::new(GZIP_LEVEL),
                ),
                |enc| enc.finish(),
            )?,
            Codec::Zstd => self.write_compressed(
                &key.spec,
                zstd::stream::write::Encoder::new(Hashing::new(out), ZSTD_LEVEL)
                    .map_err(out_err)?,
                |enc| enc.finish(),
            )?,
        };
        match cached {
            Some(want) if want != got => {
                return Err(Error::corrupt(format!(
                    "layer {key} was {} ({} bytes) when first made, but now gives {} ({} bytes)",
                    want.digest, want.size, got.digest, got.size
                )))
            }
            Some(_) => {}
            None => self.cache_layer(key, &got)?,
        }
        Ok(WrittenLayer {
            digest: got,
            left_out,
        })
    }

    /// A layer's digests: known without a pass over it, or by writing it once to nowhere.
    pub fn layer_digest(&self, key: &LayerKey) -> Result<LayerDigest> {
        match self.known_layer_digest(key)? {
            Some(d) => Ok(d),
            None => Ok(self.write_layer(key, &mut Discard)?.digest),
        }
    }

    /// A layer's digests if they cost no pass over it: cached from an earlier image, or (an
    /// uncompressed exact stream) the sha256 recorded at ingest.
    pub fn known_layer_digest(&self, key: &LayerKey) -> Result<Option<LayerDigest>> {
        if let Some(d) = self.cached_layer_digest(key)? {
            return Ok(Some(d));
        }
        let (LayerSpec::Exact(id), Codec::None) = (key.spec, key.codec) else {
            return Ok(None);
        };
        let snap = self.snapshot_by_id(&id)?;
        let digest = Digest::from_hex_sha256(&snap.stream_sha256)?;
        let d = LayerDigest {
            digest: digest.clone(),
            size: snap.stream_len,
            diff_id: digest,
        };
        self.cache_layer(key, &d)?;
        Ok(Some(d))
    }

    /// The paths of `snap`'s tree that no layer can carry (names starting `.wh.`), so its
    /// image, in any mode, lacks them. Found without writing a layer, and only looked for when
    /// the stream has such names (else its full layer would be the stream itself).
    pub fn image_left_out(&self, snap: &Snapshot) -> Result<LeftOut> {
        if snap.exact_layer {
            return Ok(LeftOut::default());
        }
        super::synth::write_tree(&self.tree(snap)?, None)
    }

    /// A layer through the encoder `enc` (which writes into a hashing output): the tar is made
    /// on a second thread (`pipe`), hashed there for the diff_id, and compressed on this one;
    /// `finish` ends the encoder and gives that output back. An exact stream's diff_id is the
    /// sha256 its export checks the bytes against, so it is not hashed again.
    fn write_compressed<'a, E: Write>(
        &self,
        spec: &LayerSpec,
        mut enc: E,
        finish: impl FnOnce(E) -> std::io::Result<Hashing<&'a mut dyn Write>>,
    ) -> Result<(LayerDigest, LeftOut)> {
        let recorded = match *spec {
            LayerSpec::Exact(id) => Some(Digest::from_hex_sha256(
                &self.snapshot_by_id(&id)?.stream_sha256,
            )?),
            _ => None,
        };
        let (left_out, diff_id) = super::pipe::made_beside(
            |raw| match recorded {
                Some(diff_id) => Ok((self.write_raw_layer(spec, raw)?, diff_id)),
                None => {
                    let mut hashed = Hashing::new(raw);
                    let left_out = self.write_raw_layer(spec, &mut hashed)?;
                    Ok((left_out, hashed.finish().1))
                }
            },
            &mut enc,
        )?;
        let stored = finish(enc).map_err(out_err)?;
        Ok((layer_digests(stored, Some(diff_id))?, left_out))
    }

    /// The uncompressed tar of a layer, and what it left out.
    fn write_raw_layer(&self, spec: &LayerSpec, out: &mut dyn Write) -> Result<LeftOut> {
        match *spec {
            LayerSpec::Exact(id) => {
                self.export(&self.snapshot_by_id(&id)?, out)?;
                Ok(LeftOut::default())
            }
            LayerSpec::Tree(id) => {
                let snap = self.snapshot_by_id(&id)?;
                super::synth::write_tree(&self.tree(&snap)?, Some(out))
            }
            LayerSpec::Diff { from, to } => {
                let (a, b) = (self.snapshot_by_id(&from)?, self.snapshot_by_id(&to)?);
                super::synth::write_diff(&self.tree(&a)?, &self.tree(&b)?, out)
            }
        }
    }
}
