//! Pack files: where chunk bytes live.

pub mod format;
mod writer;

pub use format::{ChunkKind, Codec, RecordHeader, RecordKind};
pub use writer::{PackWriter, SealedPack, WrittenRecord};
