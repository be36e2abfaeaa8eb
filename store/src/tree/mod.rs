//! The browsable tree of a snapshot: content-addressed directory records built at ingest, and
//! a filesystem-agnostic read API over them.

mod acl;
mod build;
mod diff;
mod dump;
mod find;
mod members;
pub mod meta;
mod node;
mod record;
mod vfs;
mod walk;

pub(crate) use build::TreeBuilder;
pub(crate) use diff::Pair as DirPair;
pub use diff::{changed_fields, Change, ChangeKind};
pub use find::Finder;
pub use node::{linux_dev, Content, Kind, Node, Segments, MAX_MAJOR, MAX_MINOR};
pub use record::Dir;
pub(crate) use vfs::normalize_path_into;
pub use vfs::{normalize_path, Tree};
#[cfg(test)]
pub(crate) use walk::tests as crafted;
pub(crate) use walk::{join as join_path, too_deep};

/// The deepest directory nesting any reader of a tree follows (levels below where its walk
/// starts). Ingest never builds a tree over 256 levels deep (`build.rs`), but a tree is only
/// as trustworthy as the store: a crafted (or damaged yet hash-valid) chain of records can
/// nest without end. Readers that walk a whole tree stop here with `Corrupt` rather than run
/// out of stack, descriptors or time; the margin over 256 keeps every real tree readable.
pub const MAX_TREE_DEPTH: usize = 1024;
