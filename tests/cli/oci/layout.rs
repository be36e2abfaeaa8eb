//! Reading an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`) the way a strict
//! client would: every blob's name is its sha256, every descriptor's size and digest match the
//! blob, and each layer decompresses as its media type says, to the tar its diff_id names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::browse::oracle::walk;
use crate::common::sha256_hex;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation naming a tag in `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    /// `sha256:<64 hex>`.
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Parse one descriptor, checking the fields' types and the digest's form.
    pub(crate) fn from_json(v: &Value) -> Descriptor {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("descriptor {k} is not a string: {v}"))
                .to_string()
        };
        let digest = s("digest");
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("digest {digest:?} is not sha256"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "digest {digest:?} is not 64 lowercase hex digits"
        );
        let annotations = match v.get("annotations") {
            None => BTreeMap::new(),
            Some(a) => a
                .as_object()
                .unwrap_or_else(|| panic!("annotations is not an object: {v}"))
                .iter()
                .map(|(k, x)| {
                    let x = x.as_str().unwrap_or_else(|| panic!("annotation {k}: {x}"));
                    (k.clone(), x.to_string())
                })
                .collect(),
        };
        Descriptor {
            media_type: s("mediaType"),
            size: v["size"]
                .as_u64()
                .unwrap_or_else(|| panic!("descriptor size is not a number: {v}")),
            digest,
            annotations,
        }
    }

    pub(crate) fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }
}

/// One tagged image of a layout, every part checked against its descriptor.
#[derive(Debug, Clone)]
pub(crate) struct OciImage {
    /// The layout the image is in.
    pub(crate) dir: PathBuf,
    /// `index.json`'s entry for the tag.
    pub(crate) manifest_desc: Descriptor,
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) manifest: Value,
    pub(crate) config_desc: Descriptor,
    pub(crate) config: Value,
    pub(crate) layers: Vec<Descriptor>,
}

impl OciImage {
    /// Layer `i` uncompressed (checked against its media type and diff_id).
    pub(crate) fn layer_tar(&self, i: usize) -> Vec<u8> {
        let tar = layer_tar(&self.dir, &self.layers[i]);
        let diff_ids = self.diff_ids();
        assert_eq!(
            diff_ids.len(),
            self.layers.len(),
            "config has {} diff_ids for {} layers",
            diff_ids.len(),
            self.layers.len()
        );
        assert_eq!(
            format!("sha256:{}", sha256_hex(&tar)),
            diff_ids[i],
            "layer {i}: the uncompressed tar's sha256 is not its diff_id"
        );
        tar
    }

    /// `config.rootfs.diff_ids` (and `rootfs.type` is `layers`).
    pub(crate) fn diff_ids(&self) -> Vec<String> {
        assert_eq!(
            self.config["rootfs"]["type"], "layers",
            "config rootfs.type: {}",
            self.config
        );
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("config has no rootfs.diff_ids: {}", self.config))
            .iter()
            .map(|d| d.as_str().expect("diff_id is a string").to_string())
            .collect()
    }

    /// Every layer uncompressed matches its diff_id.
    pub(crate) fn assert_diff_ids(&self) {
        for i in 0..self.layers.len() {
            self.layer_tar(i);
        }
    }
}

pub(crate) fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("digest {digest:?} is not sha256"));
    dir.join("blobs/sha256").join(hex)
}

/// The blob a descriptor names; its size and sha256 must match the descriptor.
pub(crate) fn read_blob(dir: &Path, desc: &Descriptor) -> Vec<u8> {
    let p = blob_path(dir, &desc.digest);
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("blob {}: {e}", p.display()));
    assert_eq!(
        data.len() as u64,
        desc.size,
        "blob {} ({}): size on disk vs descriptor",
        desc.digest,
        desc.media_type
    );
    assert_eq!(
        sha256_hex(&data),
        desc.hex(),
        "blob {} ({}): content does not hash to its digest",
        desc.digest,
        desc.media_type
    );
    data
}

fn parse_json(what: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Every blob in `dir/blobs/sha256`, checked to hash to its name: digest -> size. Only sha256
/// is expected (no other algorithm directory may exist).
pub(crate) fn oci_layout_blobs(dir: &Path) -> BTreeMap<String, u64> {
    let blobs = dir.join("blobs");
    let algs: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap_or_else(|e| panic!("{}: {e}", blobs.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(algs, ["sha256"], "{}: digest algorithms", blobs.display());
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(blobs.join("sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            e.file_type().unwrap().is_file(),
            "blob {name} is not a regular file"
        );
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_hex(&data),
            name,
            "blob {name} does not hash to its name"
        );
        out.insert(format!("sha256:{name}"), data.len() as u64);
    }
    out
}

/// `index.json`, after checking `oci-layout` says version 1.0.0 and the index's schema.
pub(crate) fn oci_index(dir: &Path) -> Value {
    let marker = parse_json(
        "oci-layout",
        &std::fs::read(dir.join("oci-layout"))
            .unwrap_or_else(|e| panic!("{}/oci-layout: {e}", dir.display())),
    );
    assert_eq!(
        marker["imageLayoutVersion"], "1.0.0",
        "oci-layout: {marker}"
    );
    let index = parse_json(
        "index.json",
        &std::fs::read(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("{}/index.json: {e}", dir.display())),
    );
    assert_eq!(index["schemaVersion"], 2, "index.json: {index}");
    assert!(index["manifests"].is_array(), "index.json: {index}");
    index
}

/// The tags `index.json` names (its entries' `org.opencontainers.image.ref.name`).
pub(crate) fn oci_tags(dir: &Path) -> Vec<String> {
    oci_index(dir)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"][REF_NAME].as_str().map(str::to_string))
        .collect()
}

/// The image tagged `tag` in the layout at `dir`: every blob hashes to its name, the tag names
/// exactly one manifest, and the manifest, config and layer descriptors match their blobs.
pub(crate) fn oci_image(dir: &Path, tag: &str) -> OciImage {
    let blobs = oci_layout_blobs(dir);
    let index = oci_index(dir);
    let tagged: Vec<Descriptor> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(Descriptor::from_json)
        .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .collect();
    assert_eq!(
        tagged.len(),
        1,
        "{}: index.json has {} entries tagged {tag:?}: {index}",
        dir.display(),
        tagged.len()
    );
    let manifest_desc = tagged.into_iter().next().unwrap();
    assert_eq!(
        manifest_desc.media_type, OCI_MANIFEST,
        "tag {tag:?}: index entry is not an image manifest (an index is not handled here)"
    );
    let manifest_bytes = read_blob(dir, &manifest_desc);
    let manifest = parse_json("manifest", &manifest_bytes);
    assert_eq!(manifest["schemaVersion"], 2, "manifest: {manifest}");
    if let Some(mt) = manifest.get("mediaType") {
        assert_eq!(mt, OCI_MANIFEST, "manifest mediaType");
    }
    let config_desc = Descriptor::from_json(&manifest["config"]);
    let config = parse_json("config", &read_blob(dir, &config_desc));
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no layers array: {manifest}"))
        .iter()
        .map(Descriptor::from_json)
        .collect();
    for l in &layers {
        read_blob(dir, l);
    }
    for d in [&manifest_desc, &config_desc].into_iter().chain(&layers) {
        assert_eq!(
            blobs.get(&d.digest),
            Some(&d.size),
            "{} is not among the layout's blobs with that size",
            d.digest
        );
    }
    OciImage {
        dir: dir.to_path_buf(),
        manifest_desc,
        manifest_bytes,
        manifest,
        config_desc,
        config,
        layers,
    }
}

/// How a layer media type says it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names (OCI and Docker forms, nondistributable too).
pub(crate) fn layer_compression(media_type: &str) -> Compression {
    if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Compression::Gzip
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
        Compression::Zstd
    } else if media_type.ends_with(".tar") {
        Compression::None
    } else {
        panic!("not a layer media type: {media_type:?}")
    }
}

/// Pipe `data` through `argv` (a decompressor), returning its stdout.
fn filter(argv: &[&str], data: &[u8]) -> Vec<u8> {
    crate::common::require(argv[0]);
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decompress `data` as `c` says, checking the magic number says the same.
pub(crate) fn decompress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            assert!(data.starts_with(&[0x1f, 0x8b]), "not gzip data");
            filter(&["gzip", "-dc"], data)
        }
        Compression::Zstd => {
            assert!(data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd data");
            filter(&["zstd", "-dcq"], data)
        }
        Compression::None => {
            assert!(
                !data.starts_with(&[0x1f, 0x8b]) && !data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
                "an uncompressed layer is compressed"
            );
            data.to_vec()
        }
    }
}

/// A layer's blob (checked against the descriptor), uncompressed as its media type says.
pub(crate) fn layer_tar(dir: &Path, desc: &Descriptor) -> Vec<u8> {
    decompress(layer_compression(&desc.media_type), &read_blob(dir, desc))
}

/// What a layout holds: every name below it, and `index.json`'s bytes.
pub(crate) struct LayoutState {
    names: Vec<Vec<u8>>,
    index: Vec<u8>,
}

pub(crate) fn layout_state(dir: &Path) -> LayoutState {
    LayoutState {
        names: walk(dir).into_iter().map(|(p, _)| p).collect(),
        index: std::fs::read(dir.join("index.json")).unwrap(),
    }
}

/// `dir` is the layout `before` was, plus at most some whole blobs: what an export into it
/// that did not finish may leave.
pub(crate) fn assert_layout_kept(dir: &Path, before: &LayoutState, what: &str) {
    let now = layout_state(dir);
    assert!(now.index == before.index, "{what}: index.json changed");
    for name in now.names.iter().filter(|n| !before.names.contains(n)) {
        let shown = String::from_utf8_lossy(name);
        let hex = shown
            .strip_prefix("/blobs/sha256/")
            .unwrap_or_else(|| panic!("{what}: left {shown}"));
        let blob = std::fs::read(dir.join(&shown[1..])).unwrap();
        assert_eq!(sha256_hex(&blob), hex, "{what}: a partial blob {shown}");
    }
}
