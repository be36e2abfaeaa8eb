//! Writing an image out: as an OCI image layout directory, or as a `docker save` archive.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::digest::Digest;
use super::image::{Image, ImageOptions, Layer, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use super::layer::{LayerDigest, LayerKey, LayerSpec};
use super::ready::ReadyLayer;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
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

/// Write `bytes` as `path`: into a file in `scratch` first, synced, renamed into place. (The
/// directory's entry is made durable by syncing it: see `write_oci_layout`.)
fn write_file(scratch: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = scratch_path(scratch, path);
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The index of the layout at `dir` to add to, or None for a new one (`dir` holds nothing but
/// `scratch`, or a layout without an index yet). A directory that holds anything else and no
/// `oci-layout` file is not a layout, and an `index.json` whose `manifests` is not a list is
/// not an index: writing into either would lose what is there.
fn existing_index(dir: &Path, scratch: &Path) -> Result<Option<serde_json::Map<String, Value>>> {
    let mut entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    // By name: `scratch` may be absolute where `dir` is relative.
    let other = entries.find_map(|e| {
        e.ok()
            .filter(|e| Some(&*e.file_name()) != scratch.file_name())
    });
    if other.is_none() {
        return Ok(None);
    }
    if !dir.join("oci-layout").is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is not an OCI image layout (it has no oci-layout file) and is not empty: give \
             a new or empty directory, or a layout to add to",
            dir.display()
        )));
    }
    let path = dir.join("index.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let not_an_index = |why: String| {
        Error::InvalidArgument(format!("{}: not an OCI index: {why}", path.display()))
    };
    match serde_json::from_slice(&bytes).map_err(|e| not_an_index(e.to_string()))? {
        Value::Object(index) if index.get("manifests").is_some_and(Value::is_array) => {
            Ok(Some(index))
        }
        _ => Err(not_an_index(
            "not an object with a list of manifests".into(),
        )),
    }
}

/// Whether `blobs` holds a blob of this layer's digest and size (a layout exported to before).
fn blob_is(blobs: &Path, d: &LayerDigest) -> bool {
    fs::metadata(blobs.join(d.digest.hex())).is_ok_and(|m| m.len() == d.size)
}

/// Where `path` is written before it is renamed into place: in `scratch`, under its own
/// name with `.tmp` added.
fn scratch_path(scratch: &Path, path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    scratch.join(name)
}

impl Store {
    /// Write the image of `snap` made of `specs` (its `image_layers`, pinned by the caller)
    /// into the OCI layout at `dir` (which must exist), tagged `tag`, and return it. Blobs
    /// already there with the right size are kept, so exporting a lineage into one layout
    /// writes each shared layer once; index entries for other tags are kept. A layer whose
    /// digest is not known yet is made once, into the file that becomes its blob (not once
    /// for the digest and again for the file).
    ///
    /// Every file is written in full in `scratch` (a directory on `dir`'s filesystem, which
    /// may be `dir` itself) and then renamed into place, blobs first, `oci-layout` and
    /// `index.json` last: a write that stops part way leaves a layout that was there as it
    /// was, plus whole blobs, and anything else in `scratch`, for the caller to remove. Neither
    /// `dir` nor `scratch` is ever created here, so a caller that moves one away (to remove
    /// it) while this runs gets errors, not a new directory at the old path.
    pub fn write_oci_layout(
        &self,
        snap: &Snapshot,
        specs: Vec<LayerSpec>,
        opts: &ImageOptions,
        dir: &Path,
        tag: &str,
        scratch: &Path,
    ) -> Result<Image> {
        validate_tag(tag)?;
        // Before anything is written: a directory that is not a layout, or an index that is
        // not one, is refused as it is.
        let old_index = existing_index(dir, scratch)?;
        let blobs = dir.join("blobs").join("sha256");
        for d in [dir.join("blobs"), blobs.clone()] {
            match fs::create_dir(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io(&d, e))
                }
                _ => {}
            }
        }
        let mut layers = Vec::new();
        for spec in specs {
            let key = LayerKey {
                spec,
                codec: opts.codec,
            };
            let digest = match self.known_layer_digest(&key)? {
                Some(d) if blob_is(&blobs, &d) => d,
                _ => self.write_layer_blob(&key, &blobs, scratch)?,
            };
            layers.push(Layer { key, digest });
        }
        let image = self.assemble(snap, &opts.settings, layers)?;
        let blob = |digest: &Digest| blobs.join(digest.hex());
        write_file(scratch, &blob(&image.config_digest), &image.config)?;
        write_file(scratch, &blob(&image.manifest_digest), &image.manifest)?;
        // Every blob the index will name survives a crash before the index names it.
        crate::layout::sync_dir(&blobs)?;
        write_file(
            scratch,
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;

        let index_path = dir.join("index.json");
        // The index as it was (its other tags, and anything else it says, such as its own
        // annotations), with this tag pointing at the new manifest.
        let mut index = old_index.unwrap_or_default();
        let mut manifests = match index.remove("manifests") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        manifests.retain(|m| m["annotations"][REF_NAME] != tag);
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": image.manifest_digest.as_str(),
            "size": image.manifest.len(),
            "annotations": { REF_NAME: tag },
        }));
        index.insert("schemaVersion".into(), json!(2));
        index.insert("mediaType".into(), json!(INDEX_MEDIA_TYPE));
        index.insert("manifests".into(), Value::Array(manifests));
        write_file(
            scratch,
            &index_path,
            &serde_json::to_vec(&index).expect("json"),
        )?;
        crate::layout::sync_dir(dir)?;
        Ok(image)
    }

    /// Write a layer into `scratch`, synced, then rename it to its blob in `blobs`; its digest
    /// is known (and cached) once it is written.
    fn write_layer_blob(
        &self,
        key: &LayerKey,
        blobs: &Path,
        scratch: &Path,
    ) -> Result<LayerDigest> {
        let tmp = scratch.join("layer.tmp");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let written = self.write_layer(key, &mut out);
        let synced = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all());
        let digest = match (written, synced) {
            (Ok(w), Ok(())) => w.digest,
            (Err(e), _) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            (_, Err(e)) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(&tmp, e));
            }
        };
        let path = blobs.join(digest.digest.hex());
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(digest)
    }

    /// Write `image` as a `docker save` archive (docker's `manifest.json` format, which
    /// `docker load`, `skopeo` and `smolvm` read), tagged `repo:tag`. `layers` are the
    /// image's, ready (their digests name their members); they are streamed.
    pub fn write_docker_archive(
        &self,
        image: &Image,
        layers: &mut [ReadyLayer],
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
        for ready in layers {
            let hex = ready.layer.digest.digest.hex();
            tar.node(hex.as_bytes(), &dir, &mut |_| Ok(()))?;
            let name = format!("{hex}/layer.tar");
            let size = ready.layer.digest.size;
            tar.node(name.as_bytes(), &file(size), &mut |o| {
                self.write_ready(ready, o).map(|_| ())
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
