//! The cache of decoded directory records, bounded by the memory they take rather than by
//! their number: a root filesystem has directories of a few entries and directories of
//! thousands, and a walk of its tree (a mount's `find`, a layer's synthesis) passes through
//! all of them. A decoded node takes several times its encoding.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::ids::ChunkId;
use crate::tree::Dir;

/// What a cached record costs beyond its own footprint: the LRU's entry and the `Arc`.
const ENTRY_OVERHEAD: usize = 128;

pub(crate) struct DirCache {
    inner: Mutex<Inner>,
    budget: usize,
}

struct Inner {
    lru: LruCache<ChunkId, (Arc<Dir>, usize)>,
    bytes: usize,
}

impl DirCache {
    /// A cache keeping records of at most `budget` bytes in all (but always the newest).
    pub(crate) fn new(budget: usize) -> Self {
        DirCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &ChunkId) -> Option<Arc<Dir>> {
        self.inner().lru.get(id).map(|(d, _)| d.clone())
    }

    /// Keep `dir` as the most recently used record, evicting the least recently used ones
    /// past the budget.
    pub(crate) fn put(&self, id: ChunkId, dir: Arc<Dir>) {
        let cost = ENTRY_OVERHEAD + dir.footprint();
        let mut inner = self.inner();
        if let Some((_, old)) = inner.lru.put(id, (dir, cost)) {
            inner.bytes -= old;
        }
        inner.bytes += cost;
        while inner.bytes > self.budget && inner.lru.len() > 1 {
            let Some((_, (_, evicted))) = inner.lru.pop_lru() else {
                break;
            };
            inner.bytes -= evicted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Kind, Node};

    fn record(entries: usize, name_len: usize) -> Arc<Dir> {
        Arc::new(Dir::by_name(
            (0..entries)
                .map(|i| {
                    let mut n = Node::new(Kind::File);
                    n.name = format!("{i:0name_len$}").into_bytes();
                    n
                })
                .collect(),
        ))
    }

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn records_are_kept_by_bytes_not_by_count() {
        let big = record(1000, 100);
        let big_cost = ENTRY_OVERHEAD + big.footprint();
        let cache = DirCache::new(2 * big_cost + big_cost / 2);
        for n in 0..3 {
            cache.put(id(n), big.clone());
        }
        assert!(
            cache.get(&id(0)).is_none(),
            "the oldest went past the budget"
        );
        assert!(cache.get(&id(1)).is_some() && cache.get(&id(2)).is_some());
        // Many small records fit where two large ones did.
        for n in 10..200 {
            cache.put(id(n), record(2, 8));
        }
        assert!(
            cache.get(&id(10)).is_some(),
            "small records are not counted as large"
        );
    }

    #[test]
    fn the_newest_record_is_kept_even_past_the_budget_and_use_refreshes() {
        let cache = DirCache::new(1);
        cache.put(id(1), record(10, 8));
        assert!(cache.get(&id(1)).is_some(), "alone, kept whatever its size");
        cache.put(id(2), record(10, 8));
        assert!(cache.get(&id(1)).is_none() && cache.get(&id(2)).is_some());

        let small = ENTRY_OVERHEAD + record(1, 8).footprint();
        let cache = DirCache::new(2 * small);
        cache.put(id(1), record(1, 8));
        cache.put(id(2), record(1, 8));
        cache.get(&id(1));
        cache.put(id(3), record(1, 8));
        assert!(cache.get(&id(1)).is_some(), "used last, so kept");
        assert!(
            cache.get(&id(2)).is_none(),
            "least recently used, so evicted"
        );
    }
}
