//! Snapshots as OCI images. Layers are synthesized from the store when asked for, never
//! stored: a full layer is the ingested stream itself when its names are safe to extract as
//! a layer (its digest is the sha256 recorded at ingest, so a manifest is ready the moment the
//! snapshot is), otherwise the tree written out; an incremental image adds one diff layer per
//! later snapshot of the lineage. Digests of what had to be synthesized are cached in the index.

mod cache;
mod digest;
mod image;
mod layer;
mod layout;
mod pipe;
mod ready;
mod settings;
mod synth;

pub use cache::Blob;
pub use digest::Digest;
pub(crate) use digest::Hashing;
pub use image::{
    Image, ImageOptions, Layer, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
pub use layer::{Codec, LayerDigest, LayerKey, LayerMode, LayerSpec, WrittenLayer, CHAIN_LEN};
pub use layout::validate_tag;
pub use ready::ReadyLayer;
pub use settings::{ImageSettings, Platform};
pub use synth::LeftOut;
