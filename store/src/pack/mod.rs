//! Pack files: where chunk bytes live.

pub mod compress;
pub mod format;
mod recover;
mod scan;
mod writer;

pub use format::{ChunkKind, Codec, RecordHeader, RecordKind};
pub use recover::{intact_records, Skipped};
pub use scan::{scan, scan_file, Found};
pub use writer::{PackWriter, SealedPack};
