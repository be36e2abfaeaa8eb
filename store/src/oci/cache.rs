//! Cached digests of layers and the small blobs (configs, manifests) images are made of, so a
//! layer is synthesized and hashed once, and a registry client asking for a blob by digest
//! finds what to produce. Everything here can be recomputed from the snapshots: losing it costs
//! time, not data.

use rusqlite::{params, OptionalExtension};

use super::digest::Digest;
use super::layer::{Codec, LayerDigest, LayerKey, LayerSpec};
use crate::error::Result;
use crate::ids::SnapshotId;
use crate::store::Store;

/// A blob an image refers to, found by digest.
pub enum Blob {
    Layer { key: LayerKey, size: u64 },
    Small { media_type: String, bytes: Vec<u8> },
}

impl Store {
    pub fn cached_layer_digest(&self, key: &LayerKey) -> Result<Option<LayerDigest>> {
        let db = self.db();
        let row: Option<(String, i64, String)> = db
            .conn()
            .query_row(
                "SELECT digest, size, diff_id FROM layer_digests WHERE key = ?1",
                [key.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(d, size, diff)| {
            Ok(LayerDigest {
                digest: Digest::parse(&d)?,
                size: size as u64,
                diff_id: Digest::parse(&diff)?,
            })
        })
        .transpose()
    }

    pub(super) fn cache_layer(&self, key: &LayerKey, d: &LayerDigest) -> Result<()> {
        self.db().immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO layer_digests (key, digest, size, diff_id)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    key.to_string(),
                    d.digest.as_str(),
                    d.size as i64,
                    d.diff_id.as_str()
                ],
            )?;
            Ok(())
        })
    }

    /// Remember a config or manifest of an image of `snap` (dropped when `snap` is gone).
    pub(super) fn cache_small_blob(
        &self,
        snap: &SnapshotId,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        self.db().immediate(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO image_blobs (digest, media_type, bytes, snapshot)
                 VALUES (?1, ?2, ?3, ?4)",
                params![digest.as_str(), media_type, bytes, snap.hex()],
            )?;
            Ok(())
        })
    }

    /// What produces the blob with this digest, if an image made so far of snapshots that
    /// `in_repo` admits (all of a layer's) refers to it: a registry's blobs are its
    /// repository's own. A config or manifest names its snapshot and lineage (its history
    /// does), so it belongs to the one snapshot it is cached for.
    pub fn find_blob(
        &self,
        digest: &Digest,
        in_repo: &dyn Fn(&SnapshotId) -> bool,
    ) -> Result<Option<Blob>> {
        let db = self.db();
        let small: Option<(String, Vec<u8>, String)> = db
            .conn()
            .query_row(
                "SELECT media_type, bytes, snapshot FROM image_blobs WHERE digest = ?1",
                [digest.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((media_type, bytes, snap)) = small {
            if SnapshotId::from_hex(&snap).is_some_and(|id| in_repo(&id)) {
                return Ok(Some(Blob::Small { media_type, bytes }));
            }
            return Ok(None);
        }
        let mut stmt = db
            .conn()
            .prepare("SELECT key, size FROM layer_digests WHERE digest = ?1")?;
        let rows = stmt.query_map([digest.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (key, size) = row?;
            if let Some(key) = LayerKey::parse(&key) {
                if key.spec.snapshots().iter().all(in_repo) {
                    return Ok(Some(Blob::Layer {
                        key,
                        size: size as u64,
                    }));
                }
            }
        }
        // A snapshot's own stream is a layer before any image was asked for.
        let mut stmt = db.conn().prepare(
            "SELECT id, stream_len FROM snapshots WHERE stream_sha256 = ?1 AND exact_layer",
        )?;
        let rows = stmt.query_map([digest.hex()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (id, len) = row?;
            if let Some(id) = SnapshotId::from_hex(&id).filter(|id| in_repo(id)) {
                return Ok(Some(Blob::Layer {
                    key: LayerKey {
                        spec: LayerSpec::Exact(id),
                        codec: Codec::None,
                    },
                    size: len as u64,
                }));
            }
        }
        Ok(None)
    }
}

impl Store {
    /// Drop cached digests and image blobs that name a snapshot no longer in the index (gc
    /// runs this): the cache never grows past what live snapshots can ask for.
    pub(crate) fn prune_image_cache(&self) -> Result<usize> {
        let live: std::collections::HashSet<String> =
            self.list(None)?.into_iter().map(|s| s.id.hex()).collect();
        let mut db = self.db();
        db.immediate(|tx| {
            let dead_keys: Vec<String> = {
                let mut stmt = tx.prepare("SELECT key FROM layer_digests")?;
                let keys = stmt.query_map([], |r| r.get::<_, String>(0))?;
                let mut dead = Vec::new();
                for key in keys {
                    let key = key?;
                    let gone = match LayerKey::parse(&key) {
                        None => true, // an older synthesis version: never asked for again
                        Some(k) => k.snapshots().iter().any(|id| !live.contains(&id.hex())),
                    };
                    if gone {
                        dead.push(key);
                    }
                }
                dead
            };
            let dead_blobs: Vec<String> = {
                let mut stmt = tx.prepare("SELECT digest, snapshot FROM image_blobs")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                let mut dead = Vec::new();
                for row in rows {
                    let (digest, snap) = row?;
                    if !live.contains(&snap) {
                        dead.push(digest);
                    }
                }
                dead
            };
            for k in &dead_keys {
                tx.execute("DELETE FROM layer_digests WHERE key = ?1", [k])?;
            }
            for d in &dead_blobs {
                tx.execute("DELETE FROM image_blobs WHERE digest = ?1", [d])?;
            }
            Ok(dead_keys.len() + dead_blobs.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;
    use std::io::Read;

    /// A digest cached for another deflate implementation's bytes (`gzip-6`, miniz_oxide's) is
    /// not the one a gzip layer is checked against now: the layer is made and cached anew,
    /// and gc drops the old row.
    #[test]
    fn gzip_digests_of_the_old_deflate_are_not_used() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"data\n".repeat(1000)).unwrap();
        let root = tempfile::tempdir().unwrap();
        let snap = crate::fuzzing::snapshot_of_tar(root.path(), src.path(), &["f".to_string()]);
        let store = Store::open(root.path()).unwrap();
        let key = LayerKey {
            spec: LayerSpec::Exact(snap.id),
            codec: Codec::Gzip,
        };
        let old_key = key.to_string().replace("gzip-6-zlibrs", "gzip-6");
        assert_ne!(old_key, key.to_string());
        let bogus = format!("sha256:{}", "ab".repeat(32));
        store
            .db()
            .immediate(|tx| {
                tx.execute(
                    "INSERT INTO layer_digests (key, digest, size, diff_id) VALUES (?1, ?2, 1, ?2)",
                    params![old_key, bogus],
                )?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.cached_layer_digest(&key).unwrap(), None);

        let mut out = Vec::new();
        let made = store.write_layer(&key, &mut out).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&tar)), snap.stream_sha256);
        assert_eq!(store.cached_layer_digest(&key).unwrap(), Some(made.digest));

        store.prune_image_cache().unwrap();
        let rows: i64 = store
            .db()
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM layer_digests WHERE key = ?1",
                [&old_key],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
    }
}
