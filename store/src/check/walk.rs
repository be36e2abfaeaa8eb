//! Walking chunk lists for the checks: through a `Probe`, so that when a walk cannot go on,
//! the chunk it stopped at is known.

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::list::{Entry, ListRef};
use crate::object::{Object, ObjectSource};
use crate::store::Store;

/// An `ObjectSource` that remembers the last object asked for, so an error in a list walk can
/// be pinned on a chunk, and that refuses (without reading) the chunks `refuse` names.
pub(super) struct Probe<'a> {
    store: &'a Store,
    refuse: Option<&'a dyn Fn(&ChunkId) -> bool>,
    last: Cell<Option<ChunkId>>,
}

impl<'a> Probe<'a> {
    pub fn new(store: &'a Store, refuse: Option<&'a dyn Fn(&ChunkId) -> bool>) -> Self {
        Probe {
            store,
            refuse,
            last: Cell::new(None),
        }
    }

    /// Visit every entry of `list`, reading its nodes through this probe. Ok(Some) when the
    /// walk stopped: the chunk it is about (the last object asked for, else the list's root)
    /// and the error. Index errors are not about a chunk: they end the check.
    pub fn walk(
        &self,
        list: &ListRef,
        f: &mut dyn FnMut(&Entry) -> Result<()>,
    ) -> Result<Option<(ChunkId, Error)>> {
        match list.for_each(self, f) {
            Ok(()) => Ok(None),
            Err(e) => self.culprit(e, root_id(list)).map(Some),
        }
    }

    /// The chunk an error of a walk through this probe is about, with the error. Index errors
    /// are not about a chunk: they end the check.
    fn culprit(&self, e: Error, fallback: ChunkId) -> Result<(ChunkId, Error)> {
        if let Error::Db(_) = e {
            return Err(e);
        }
        Ok((self.last.get().unwrap_or(fallback), e))
    }
}

impl ObjectSource for Probe<'_> {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        self.last.set(Some(*id));
        if self.refuse.is_some_and(|f| f(id)) {
            return Err(Error::corrupt(format!("chunk {} is damaged", id.short())));
        }
        self.store.object(id)
    }
}

/// The chunk a walk of `list` is blamed on when no object was read: its root node (all zeros
/// for an inline list, which has none).
fn root_id(list: &ListRef) -> ChunkId {
    match list {
        ListRef::Tree { root, .. } => root.id,
        ListRef::Inline(_) => ChunkId([0; 32]),
    }
}
