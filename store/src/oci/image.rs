//! An image of a snapshot: its layers' digests, its config and its manifest, as JSON written
//! with sorted keys so the same snapshot and settings give the same digests anywhere.

use std::collections::BTreeMap;

use serde::Serialize;

use super::digest::Digest;
use super::layer::{Codec, LayerDigest, LayerKey, LayerMode, LayerSpec};
use super::settings::{ImageSettings, Platform};
use crate::error::Result;
use crate::gc::ReadLease;
use crate::snapshot::Snapshot;
use crate::store::Store;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// How to make an image of a snapshot.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    pub mode: LayerMode,
    pub codec: Codec,
    /// On top of the settings the snapshot was taken with.
    pub settings: ImageSettings,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub key: LayerKey,
    pub digest: LayerDigest,
}

impl Layer {
    pub fn media_type(&self) -> &'static str {
        self.key.codec.media_type()
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct Config<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RunConfig<'a>,
    rootfs: RootFs<'a>,
    history: Vec<History>,
}

impl Store {
    /// The settings an image of `snap` gets: the snapshot's own, its labels as image labels,
    /// then `over` on top.
    pub fn image_settings(&self, snap: &Snapshot, over: &ImageSettings) -> ImageSettings {
        let mut base = snap.image.clone();
        let mut labels = snap.labels.clone();
        labels.extend(base.labels);
        base.labels = labels;
        base.overlay(over)
    }

    /// The image of `snap`: every layer's digest (synthesizing a layer the first time it is
    /// asked for), then config and manifest, which are remembered so they can be served by
    /// digest.
    pub fn image(&self, snap: &Snapshot, opts: &ImageOptions) -> Result<Image> {
        self.image_of(snap, self.image_layers(snap, opts.mode)?, opts)
    }

    /// The image of `snap` made of `specs` (its `image_layers`).
    fn image_of(
        &self,
        snap: &Snapshot,
        specs: Vec<LayerSpec>,
        opts: &ImageOptions,
    ) -> Result<Image> {
        let mut layers = Vec::new();
        for spec in specs {
            let key = LayerKey {
                spec,
                codec: opts.codec,
            };
            layers.push(Layer {
                digest: self.layer_digest(&key)?,
                key,
            });
        }
        self.assemble(snap, &opts.settings, layers)
    }

    /// Config and manifest around layers whose digests are known.
    pub fn assemble(
        &self,
        snap: &Snapshot,
        over: &ImageSettings,
        layers: Vec<Layer>,
    ) -> Result<Image> {
        let settings = self.image_settings(snap, over);
        let platform = Platform::parse(&settings.platform.clone().unwrap_or_else(Platform::host))?;
        let mut history = Vec::new();
        for layer in &layers {
            let (id, what) = match layer.key.spec {
                LayerSpec::Exact(id) => (id, "the stream of"),
                LayerSpec::Tree(id) => (id, "the tree of"),
                LayerSpec::Diff { to, .. } => (to, "the changes in"),
            };
            let s = self.snapshot_by_id(&id)?;
            history.push(History {
                created: s.created.clone(),
                created_by: format!("cellar: {what} snapshot {} of {}", s.short_id(), s.name),
            });
        }
        let config = Config {
            created: &snap.created,
            architecture: &platform.arch,
            os: &platform.os,
            variant: platform.variant.as_deref(),
            config: RunConfig {
                user: settings.user.as_deref(),
                env: &settings.env,
                entrypoint: settings.entrypoint.as_deref(),
                cmd: settings.cmd.as_deref(),
                working_dir: settings.workdir.as_deref(),
                labels: &settings.labels,
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.digest.diff_id.as_str()).collect(),
            },
            history,
        };
        let config = serde_json::to_vec(&config).expect("configs serialize");
        let config_digest = Digest::of(&config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE,
                digest: config_digest.as_str(),
                size: config.len() as u64,
            },
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type(),
                    digest: l.digest.digest.as_str(),
                    size: l.digest.size,
                })
                .collect(),
        };
        let manifest = serde_json::to_vec(&manifest).expect("manifests serialize");
        let manifest_digest = Digest::of(&manifest);
        self.cache_small_blob(&snap.id, &config_digest, CONFIG_MEDIA_TYPE, &config)?;
        self.cache_small_blob(&snap.id, &manifest_digest, MANIFEST_MEDIA_TYPE, &manifest)?;
        Ok(Image {
            layers,
            config,
            config_digest,
            manifest,
            manifest_digest,
        })
    }
}

impl ReadLease {
    /// `Store::image`, with every snapshot its layers are made of pinned before any is read.
    pub fn image(&self, snap: &Snapshot, opts: &ImageOptions) -> Result<Image> {
        let specs = self.image_layers(snap, opts.mode)?;
        self.store().image_of(snap, specs, opts)
    }

    /// `Store::image_layers`, with the snapshots of every layer pinned.
    pub fn image_layers(&self, snap: &Snapshot, mode: LayerMode) -> Result<Vec<LayerSpec>> {
        let specs = self.store().image_layers(snap, mode)?;
        specs.iter().try_for_each(|spec| self.pin_layer(spec))?;
        Ok(specs)
    }

    /// Pin the snapshots a layer is made of.
    pub fn pin_layer(&self, spec: &LayerSpec) -> Result<()> {
        crate::failpoint::hit("pin-layer");
        spec.snapshots().iter().try_for_each(|id| self.pin(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cellar writes parses as the OCI types of the oci-spec crate.
    #[test]
    fn config_and_manifest_are_valid_oci() {
        let layers = [Descriptor {
            media_type: Codec::Gzip.media_type(),
            digest: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            size: 3,
        }];
        let manifest = serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE,
                digest: layers[0].digest,
                size: 3,
            },
            layers: vec![Descriptor { ..layers[0] }],
        })
        .unwrap();
        let m: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m.layers().len(), 1);
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let env = vec!["PATH=/bin".to_string()];
        let cmd = vec!["sh".to_string()];
        let config = serde_json::to_vec(&Config {
            created: "2026-01-01T00:00:00Z",
            architecture: "amd64",
            os: "linux",
            variant: None,
            config: RunConfig {
                user: Some("node"),
                env: &env,
                entrypoint: None,
                cmd: Some(&cmd),
                working_dir: Some("/home/node"),
                labels: &labels,
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: vec![layers[0].digest],
            },
            history: vec![],
        })
        .unwrap();
        let c: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config).unwrap();
        let run = c.config().as_ref().unwrap();
        assert_eq!(run.user().as_deref(), Some("node"));
        assert_eq!(run.working_dir().as_deref(), Some("/home/node"));
        assert_eq!(run.cmd().as_ref().unwrap(), &cmd);
        assert_eq!(c.rootfs().diff_ids().len(), 1);
    }
}
