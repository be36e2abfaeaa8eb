//! The snapshots the all-snapshots view shows, read from the index once per change to it.
//!
//! A path through `NAME/latest/...` makes the kernel look `NAME` and `latest` up again every
//! time (their entries live no time at all, since snapshots come and go while mounted), and a
//! listing of the index for each of those lookups made `ls -l` of a 20,000-file directory
//! through `latest` twenty times slower than the same listing from inside the snapshot. SQLite's
//! `data_version` changes when another connection commits, so the list is read again only
//! then, and a snapshot still shows the moment it is committed (or forgotten).

use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::snapshot::Snapshot;
use crate::store::Store;

#[derive(Default)]
pub(super) struct Listing {
    /// The snapshots in commit order, and the `data_version` they were read at.
    cached: Mutex<Option<(i64, Arc<Vec<Snapshot>>)>>,
}

impl Listing {
    /// Every snapshot, in commit order (`Store::list`).
    pub(super) fn all(&self, store: &Store) -> Result<Arc<Vec<Snapshot>>> {
        // Read before the list: a commit in between makes the next call read it again.
        let version = store.data_version()?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, snaps)) = &*cached {
            if *v == version {
                return Ok(snaps.clone());
            }
        }
        let snaps = Arc::new(store.list(None)?);
        *cached = Some((version, snaps.clone()));
        Ok(snaps)
    }

    /// The snapshots of `lineage`, in commit order.
    pub(super) fn of(&self, store: &Store, lineage: &str) -> Result<Vec<Snapshot>> {
        Ok(self
            .all(store)?
            .iter()
            .filter(|s| s.name == lineage)
            .cloned()
            .collect())
    }
}
