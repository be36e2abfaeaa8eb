//! Where stored objects (chunks and metadata) are put and got, as seen by the code that
//! builds and walks the metadata structures.

use std::ops::Deref;
use std::sync::Arc;

use crate::error::Result;
use crate::ids::ChunkId;
use crate::pack::ChunkKind;

/// An object's bytes: a shared slice of a decoded frame, no copy.
#[derive(Clone)]
pub struct Object {
    frame: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Object {
    pub fn new(frame: Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Self {
        Object { frame, range }
    }

    pub fn owned(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Object {
            frame: Arc::new(bytes),
            range: 0..len,
        }
    }
}

impl Deref for Object {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.frame[self.range.clone()]
    }
}

pub trait ObjectSource {
    /// The verified bytes of an object.
    fn object(&self, id: &ChunkId) -> Result<Object>;

    /// Whether the store has no row for `id` any longer: an object `repair-packs` could not
    /// salvage, which is no fault of the reader's (a source without an index has none).
    fn lost(&self, _id: &ChunkId) -> Result<bool> {
        Ok(false)
    }
}

pub trait ObjectSink {
    /// Store an object (if it is not stored already) and return its id.
    fn put(&mut self, kind: ChunkKind, bytes: &[u8]) -> Result<ChunkId>;
}

/// Objects in memory: for tests of the metadata structures.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryObjects(std::collections::HashMap<ChunkId, Vec<u8>>);

#[cfg(test)]
impl MemoryObjects {
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
impl ObjectSource for MemoryObjects {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        self.0
            .get(id)
            .map(|b| Object::owned(b.clone()))
            .ok_or_else(|| crate::Error::corrupt(format!("object {} missing", id.short())))
    }
}

#[cfg(test)]
impl ObjectSink for MemoryObjects {
    fn put(&mut self, _kind: ChunkKind, bytes: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        self.0.entry(id).or_insert_with(|| bytes.to_vec());
        Ok(id)
    }
}
