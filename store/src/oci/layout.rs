//! Writing an image out: as an OCI image layout directory, or as a `docker save` archive.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Value};

use super::digest::Digest;
use super::image::{Image, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tar::MemberWriter;
use crate::tree::{Kind, Node};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Tags as OCI and docker allow them.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid tag {tag:?}: use letters, digits, '_', '.' and '-' (at most 128, not \
             starting with '.' or '-')"
        )))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

impl Store {
    /// Write `image` into the OCI layout at `dir` (created if missing), tagged `tag`. Blobs
    /// already there with the right size are kept, so exporting a lineage into one layout
    /// writes each shared layer once; index entries for other tags are kept.
    pub fn write_oci_layout(&self, image: &Image, dir: &Path, tag: &str) -> Result<()> {
        validate_tag(tag)?;
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        write_file(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        for layer in &image.layers {
            let path = blobs.join(layer.digest.digest.hex());
            if fs::metadata(&path).is_ok_and(|m| m.len() == layer.digest.size) {
                continue;
            }
            let tmp = path.with_extension("tmp");
            let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let written = self.write_layer(&layer.key, &mut out);
            let synced = out
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all());
            match (written, synced) {
                (Ok(_), Ok(())) => fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?,
                (Err(e), _) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                (_, Err(e)) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::io(&tmp, e));
                }
            }
        }
        write_file(&blobs.join(image.config_digest.hex()), &image.config)?;
        write_file(&blobs.join(image.manifest_digest.hex()), &image.manifest)?;

        let index_path = dir.join("index.json");
        let mut manifests: Vec<Value> = match fs::read(&index_path) {
            Ok(bytes) => {
                let index: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{}: not an OCI index: {e}",
                        index_path.display()
                    ))
                })?;
                index["manifests"].as_array().cloned().unwrap_or_default()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&index_path, e)),
        };
        manifests.retain(|m| m["annotations"][REF_NAME] != tag);
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": image.manifest_digest.as_str(),
            "size": image.manifest.len(),
            "annotations": { REF_NAME: tag },
        }));
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": manifests,
        });
        write_file(&index_path, &serde_json::to_vec(&index).expect("json"))
    }

    /// Write `image` as a `docker save` archive (docker's `manifest.json` format, which
    /// `docker load`, `skopeo` and `smolvm` read), tagged `repo:tag`. Layers are streamed.
    pub fn write_docker_archive(
        &self,
        image: &Image,
        repo_tag: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut tar = MemberWriter::plain(out);
        let file = |size: u64| {
            let mut n = Node::new(Kind::File);
            n.mode = 0o644;
            n.size = size;
            n
        };
        let mut dir = Node::new(Kind::Dir);
        dir.mode = 0o755;
        let config_name = format!("{}.json", image.config_digest.hex());
        let small = |tar: &mut MemberWriter, name: &str, bytes: &[u8]| {
            tar.node(name.as_bytes(), &file(bytes.len() as u64), &mut |o| {
                o.write_all(bytes).map_err(Error::Output)
            })
        };
        small(&mut tar, &config_name, &image.config)?;
        let mut layer_names = Vec::new();
        for layer in &image.layers {
            let d: &Digest = &layer.digest.digest;
            tar.node(d.hex().as_bytes(), &dir, &mut |_| Ok(()))?;
            let name = format!("{}/layer.tar", d.hex());
            let key = layer.key;
            tar.node(name.as_bytes(), &file(layer.digest.size), &mut |o| {
                self.write_layer(&key, o).map(|_| ())
            })?;
            layer_names.push(name);
        }
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]);
        small(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        )?;
        tar.finish()
    }
}
