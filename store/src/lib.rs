//! cellar-store: the engine behind `cellar`. A content-addressed store of tar streams:
//! FastCDC chunks named by blake3, compressed with zstd into pack files, indexed in SQLite,
//! replayed byte for byte.
//!
//! No CLI, HTTP or FUSE code lives here; those are adapters in the binary.

mod check;
mod chunker;
mod commit_lock;
mod db;
mod dirs;
mod dispose;
mod encoding;
pub mod error;
mod export;
mod failpoint;
mod forget;
mod frames;
pub mod fsview;
/// The fuzz targets' harnesses (`fuzz/`), which the tests run too; not the engine's API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod gc;
pub mod ids;
mod ingest;
mod layout;
mod list;
mod object;
pub mod oci;
pub mod pack;
mod piece;
mod policy;
mod process;
pub mod restore;
mod snapshot;
mod stats;
mod store;
pub mod tar;
pub mod tree;

pub use check::{
    kind_name, repair_index, repair_packs, DataCheck, Hurt, Problem, RepairReport, SalvageReport,
    SalvagedPack, VerifyReport,
};
/// The content-defined chunker ingest uses (and what it reads from), exposed for the benches.
pub use chunker::{Chunker, Feed, FillFeed, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
pub use error::{Error, Result};
pub use gc::{GcOptions, GcReport, LeaseInfo, ReadLease};
pub use ids::{ChunkId, PackId, SnapshotId, SHORT_ID_LEN};
pub use ingest::{IngestInput, IngestOptions, IngestReport, Progress, WriterExited};
pub use policy::{apply as apply_policy, Decision, LabelMatch, Policy, Within};
pub use snapshot::{validate_lookup_name, validate_name, Snapshot, DEFAULT_NAME};
pub use stats::Stats;
pub use store::Store;
pub use tree::{Change, ChangeKind, Finder, Kind, Node, Tree};
