//! Pack files: where chunk bytes live.

pub mod compress;
pub mod format;
mod scan;
mod writer;

pub use format::{ChunkKind, Codec, RecordHeader, RecordKind};
pub use scan::{scan, scan_file, Found};
pub use writer::{PackWriter, SealedPack};
