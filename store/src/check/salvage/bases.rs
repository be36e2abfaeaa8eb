//! Delta bases for a salvage: from the index, or from another damaged pack of the same run.
//! A delta and its base given up together (both packs on a disk that was not mounted) and put
//! back together are salvaged in one run, before either is in the index again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use super::frames::{contents, decode_with, Frame};
use super::Chosen;
use crate::error::{IoContext, Result};
use crate::ids::ChunkId;
use crate::object::ObjectSource;
use crate::pack::ChunkKind;
use crate::store::Store;

/// How deep a chain of deltas, each on a base only this run's packs hold, is followed.
const CHAIN_MAX: u32 = 16;

/// The metadata frames of the run's damaged packs (a delta's base is metadata: a piece or a
/// directory record), and which frame holds each such object. Data frames are not kept, so
/// what this holds grows with the packs' metadata, not their data.
#[derive(Default)]
pub(super) struct RunBases {
    files: Vec<File>,
    frames: Vec<BTreeMap<u64, Frame>>,
    at: HashMap<ChunkId, (usize, u64)>,
}

impl RunBases {
    pub(super) fn new(store: &Store, damaged: &[Chosen]) -> Result<Self> {
        let mut run = RunBases::default();
        for (id, path, _) in damaged {
            let Some(path) = path else { continue };
            let file = File::open(path).at(path)?;
            let meta: BTreeMap<u64, Frame> = contents(store, id, &file, path)?
                .frames
                .into_iter()
                .filter(|(_, f)| f.objects.iter().any(|o| o.1 != ChunkKind::Data))
                .collect();
            let n = run.files.len();
            for (&offset, frame) in &meta {
                for o in &frame.objects {
                    run.at.entry(o.0).or_insert((n, offset));
                }
            }
            run.files.push(file);
            run.frames.push(meta);
        }
        Ok(run)
    }

    /// The bytes of object `id`: from the store, else decoded from this run's packs (checked
    /// against its id).
    pub(super) fn base(&self, store: &Store, id: &ChunkId) -> Option<Vec<u8>> {
        self.find(store, id, CHAIN_MAX)
    }

    fn find(&self, store: &Store, id: &ChunkId, depth: u32) -> Option<Vec<u8>> {
        if let Ok(o) = store.object(id) {
            return Some(o.to_vec());
        }
        let &(n, offset) = self.at.get(id)?;
        let frame = &self.frames[n][&offset];
        let raw = decode_with(&self.files[n], offset, frame, &|b| {
            depth
                .checked_sub(1)
                .and_then(|depth| self.find(store, b, depth))
        });
        frame
            .objects
            .iter()
            .filter(|o| o.0 == *id)
            .find_map(|&(_, _, at, len)| {
                raw.get(at as usize..(at + len as u64) as usize)
                    .filter(|b| ChunkId::of(b) == *id)
                    .map(<[u8]>::to_vec)
            })
    }
}
