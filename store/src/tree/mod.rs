//! The browsable tree of a snapshot: content-addressed directory records built at ingest, and
//! a filesystem-agnostic read API over them.

mod build;
mod diff;
mod members;
pub mod meta;
mod node;
mod record;
mod vfs;

pub(crate) use build::TreeBuilder;
pub use diff::{changed_fields, Change, ChangeKind};
pub use node::{linux_dev, Content, Kind, Node, Segments, MAX_MAJOR, MAX_MINOR};
pub use record::Dir;
pub(crate) use vfs::normalize_path_into;
pub use vfs::{normalize_path, Tree};
