//! Phase 1 of `verify`: the index against itself and the pack files (`tables`), and every
//! snapshot's recipe and tree against the index (`snapshots`). Also the notes about
//! leftovers (`leftovers`).

mod leftovers;
mod snapshots;
mod tables;

use std::path::Path;

use crate::ids::PackId;
use crate::layout;

pub(super) use leftovers::leftovers;
pub(super) use snapshots::{check_snapshots, load_snapshots};
pub(super) use tables::check_tables;

/// An indexed pack.
pub(super) struct PackRow {
    pub row: i64,
    pub id: PackId,
    pub size: u64,
    /// The file's length, if it is there.
    pub on_disk: Option<u64>,
}

/// `packs/ab/ab….pack` for messages.
pub(super) fn pack_name(root: &Path, id: &PackId) -> String {
    let path = layout::pack_path(root, id);
    path.strip_prefix(root)
        .unwrap_or(&path)
        .display()
        .to_string()
}
