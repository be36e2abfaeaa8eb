//! The parent's piece anchors: the bases for delta-compressing changed pieces.
//!
//! They come from a walk of the parent's piece list, which for a cold parent spans its large
//! metadata frames (about 13 ms of decoding for a Debian root filesystem). The ingest starts
//! parsing meanwhile: the walk runs on a helper thread while the other core would otherwise
//! wait, and pieces cut before it is done wait here, in order, up to `WAITING_MAX` bytes: past
//! that the parse waits for the walk (a parent of millions of members takes most of the parse
//! to walk, and what waited would grow with the stream).

use std::cell::Cell;
use std::collections::HashMap;
use std::thread::{Scope, ScopedJoinHandle};
use std::vec::Drain;

use crate::error::{Error, Result};
use crate::ids::ChunkId;
use crate::list::ListRef;
use crate::object::{Object, ObjectSource};
use crate::piece::Cut;
use crate::store::Store;

type AnchorMap = HashMap<u64, ChunkId>;

/// Encoded bytes of pieces that wait for the anchors, at most.
const WAITING_MAX: usize = 8 << 20;

pub struct Anchors<'scope> {
    arriving: Option<ScopedJoinHandle<'scope, Result<AnchorMap>>>,
    map: AnchorMap,
    waiting: Vec<Cut>,
    /// The encoded bytes of `waiting`.
    waiting_bytes: usize,
}

impl<'scope> Anchors<'scope> {
    /// Start reading the anchors of `parent`'s pieces (none for a first snapshot).
    pub fn of_parent<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'env Store,
        parent: Option<&ListRef>,
    ) -> Self {
        match parent.cloned() {
            Some(root) => Anchors::spawn(scope, move || read(store, &root)),
            None => Anchors::ready(HashMap::new()),
        }
    }

    fn spawn<'env>(
        scope: &'scope Scope<'scope, 'env>,
        read: impl FnOnce() -> Result<AnchorMap> + Send + 'scope,
    ) -> Self {
        let reader = std::thread::Builder::new()
            .name("cellar-anchors".into())
            .spawn_scoped(scope, read)
            .expect("spawn anchor reader");
        Anchors {
            arriving: Some(reader),
            ..Anchors::ready(HashMap::new())
        }
    }

    fn ready(map: AnchorMap) -> Self {
        Anchors {
            arriving: None,
            map,
            waiting: Vec::new(),
            waiting_bytes: 0,
        }
    }

    /// Queue `cut`, and hand back every queued cut, in order, once the anchors are here to
    /// find their bases in. With `wait` (the parse's end), or once `WAITING_MAX` bytes wait,
    /// this waits for them; otherwise, while they are still being read, it hands back nothing.
    pub fn release(
        &mut self,
        cut: Option<Cut>,
        wait: bool,
    ) -> Result<Option<(Drain<'_, Cut>, &AnchorMap)>> {
        if let Some(cut) = cut {
            self.waiting_bytes += cut.encoded.len();
            self.waiting.push(cut);
        }
        let wait = wait || self.waiting_bytes > WAITING_MAX;
        if let Some(reader) = self.arriving.take_if(|r| wait || r.is_finished()) {
            self.map = reader.join().expect("anchor reader panicked")?;
        }
        if self.arriving.is_some() {
            return Ok(None);
        }
        self.waiting_bytes = 0;
        Ok(Some((self.waiting.drain(..), &self.map)))
    }
}

/// Each anchor's first piece in the parent's list. A list with a node `repair-packs` could not
/// salvage gives the anchors read before it: bases are only a saving, and the snapshot being
/// taken may be what stores the lost objects again. (Any other damage stops the ingest, as
/// what it would dedup against may be in a pack that is missing.)
fn read(store: &Store, root: &ListRef) -> Result<AnchorMap> {
    let mut anchors = HashMap::new();
    let noting = Noting {
        store,
        last: Cell::new(None),
    };
    let read = root.for_each(&noting, &mut |e| {
        anchors.entry(e.aux).or_insert(e.id);
        Ok(())
    });
    match (read, noting.last.get()) {
        (Ok(()), _) => Ok(anchors),
        (Err(Error::Corrupt(_)), Some(id)) if store.lost(&id)? => Ok(anchors),
        (Err(e), _) => Err(e),
    }
}

/// The store, remembering the last object asked of it: the one a walk failed at.
struct Noting<'a> {
    store: &'a Store,
    last: Cell<Option<ChunkId>>,
}

impl ObjectSource for Noting<'_> {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        self.last.set(Some(*id));
        self.store.object(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn cut(anchor: u64) -> Cut {
        Cut {
            encoded: anchor.to_le_bytes().to_vec(),
            anchor,
            stream_len: 512,
        }
    }

    fn anchors_of(released: Option<(Drain<'_, Cut>, &AnchorMap)>) -> Option<Vec<(u64, bool)>> {
        released.map(|(cuts, map)| {
            cuts.map(|c| (c.anchor, map.contains_key(&c.anchor)))
                .collect()
        })
    }

    #[test]
    fn cuts_wait_in_order_until_the_anchors_arrive() {
        let (send, recv) = crossbeam_channel::bounded::<AnchorMap>(1);
        std::thread::scope(move |s| {
            // `send` is dropped if an assertion fails, so the reader ends and the scope too.
            let send = send;
            let mut a = Anchors::spawn(s, move || Ok(recv.recv().expect("anchors sent")));
            assert_eq!(anchors_of(a.release(Some(cut(7)), false).unwrap()), None);
            assert_eq!(anchors_of(a.release(Some(cut(9)), false).unwrap()), None);
            assert_eq!(anchors_of(a.release(None, false).unwrap()), None);
            send.send(HashMap::from([(9, ChunkId([1; 32]))])).unwrap();
            let released = anchors_of(a.release(Some(cut(3)), true).unwrap());
            assert_eq!(released, Some(vec![(7, false), (9, true), (3, false)]));
            // Once here, a cut goes straight through.
            let released = anchors_of(a.release(Some(cut(9)), false).unwrap());
            assert_eq!(released, Some(vec![(9, true)]));
        });
    }

    #[test]
    fn the_parse_waits_for_the_anchors_once_enough_waits() {
        let (send, recv) = crossbeam_channel::bounded::<AnchorMap>(1);
        std::thread::scope(move |s| {
            let mut a = Anchors::spawn(s, move || Ok(recv.recv().expect("anchors sent")));
            let big = |anchor| Cut {
                encoded: vec![0; WAITING_MAX / 2],
                anchor,
                stream_len: 512,
            };
            assert!(a.release(Some(big(1)), false).unwrap().is_none());
            assert!(a.release(Some(big(2)), false).unwrap().is_none());
            // The third goes past the bound: the release waits for the walk, which ends a
            // moment later.
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                send.send(HashMap::new()).unwrap();
            });
            let released = anchors_of(a.release(Some(big(3)), false).unwrap());
            assert_eq!(released, Some(vec![(1, false), (2, false), (3, false)]));
        });
    }

    #[test]
    fn a_first_snapshot_has_no_anchors_to_wait_for() {
        let mut a = Anchors::ready(HashMap::new());
        assert_eq!(
            anchors_of(a.release(Some(cut(1)), false).unwrap()),
            Some(vec![(1, false)])
        );
    }

    #[test]
    fn a_failed_read_fails_the_release_that_takes_it() {
        std::thread::scope(|s| {
            let mut a = Anchors::spawn(s, || Err(Error::corrupt("list node at the wrong level")));
            let err = a
                .release(Some(cut(1)), true)
                .err()
                .expect("the read's error");
            assert!(err.to_string().contains("wrong level"), "{err}");
        });
    }
}
