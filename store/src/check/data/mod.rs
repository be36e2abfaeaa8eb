//! Phase 2 of `verify --data`: read every record of every indexed pack (or of a subset of
//! them), decode it and hash each chunk; hash each pack file against its name; check snapshot and forget records against
//! the snapshot rows.
//!
//! `pack` reads one pack from end to end (through `pack_file`, which hashes it on the way) and
//! `records` checks each record; this module runs the packs on a few threads and compares the
//! snapshot records found with the snapshot rows.

mod pack;
mod pack_file;
mod records;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::index::{pack_name, PackRow};
use super::{Bad, DataCheck, Problem, Verifier};
use crate::error::Result;
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::pack::{ChunkKind, RecordHeader};
use crate::snapshot::{Snapshot, SnapshotRecord};

/// Packs are read by this many threads at most.
const MAX_THREADS: usize = 4;

/// A `frames` row of the pack being read.
#[derive(Clone)]
struct FrameRow {
    id: i64,
    offset: u64,
    stored_len: u64,
    raw_len: u64,
    codec: i64,
    base: Option<Vec<u8>>,
}

impl FrameRow {
    fn matches(&self, h: &RecordHeader) -> bool {
        self.stored_len == h.stored_len as u64
            && self.raw_len == h.raw_len as u64
            && self.codec == h.codec as i64
            && self.base.as_deref() == h.base.as_ref().map(|b| &b.0[..])
    }
}

/// The `chunks` rows of one frame: id → (offset, len, kind).
type FrameChunks = HashMap<ChunkId, (u64, u64, Option<ChunkKind>)>;

/// A snapshot record found in an indexed pack.
struct SnapRec {
    id: SnapshotId,
    pack: PackId,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct PackOutcome {
    problems: Vec<Problem>,
    bad: Vec<(ChunkId, Bad)>,
    records: Vec<SnapRec>,
    forgets: Vec<(SnapshotId, PackId)>,
}

impl PackOutcome {
    fn problem(&mut self, what: String, pack: PackId, offset: Option<u64>) {
        self.problems.push(Problem::new(what, Some(pack), offset));
    }

    /// Every indexed chunk of `frame` is bad for `what`.
    fn bad_frame(
        &mut self,
        pack: PackId,
        frame: &FrameRow,
        chunks: Option<FrameChunks>,
        what: &str,
    ) {
        match chunks {
            Some(c) if !c.is_empty() => {
                for (id, (_, _, kind)) in c {
                    self.bad
                        .push((id, Bad::new(what).at(pack, frame.offset, kind)));
                }
            }
            _ => self.problem(
                format!(
                    "record at offset {} (no chunk uses it): {what}",
                    frame.offset
                ),
                pack,
                Some(frame.offset),
            ),
        }
    }
}

/// The snapshot row's fields that differ from its record.
fn differences(s: &Snapshot, r: &SnapshotRecord) -> Vec<&'static str> {
    let mut d = Vec::new();
    if s.name != r.name {
        d.push("name");
    }
    if s.parent.map(|p| p.hex()) != r.parent {
        d.push("parent");
    }
    if s.created != r.created {
        d.push("created");
    }
    if s.stream_len != r.stream_len || s.stream_sha256 != r.stream_sha256 {
        d.push("stream");
    }
    if s.members != r.members || s.added_bytes != r.added_bytes || s.labels != r.labels {
        d.push("figures or labels");
    }
    if hex::encode(s.root.to_bytes()) != r.root {
        d.push("root");
    }
    if s.tree.as_ref().map(|t| hex::encode(t.to_bytes())) != r.tree {
        d.push("tree");
    }
    if s.image != r.image || s.exact_layer != r.exact_layer {
        d.push("image settings");
    }
    d
}

/// Read the packs `scope` takes; returns how many were read.
pub(in crate::check) fn check_packs(
    v: &mut Verifier,
    packs: &[PackRow],
    snaps: &[Snapshot],
    scope: DataCheck,
) -> Result<u64> {
    let store = v.store;
    // The chunks of each frame, found by frame (the index has no such index).
    store.db().conn().execute_batch(
        "DROP TABLE IF EXISTS temp.verify_chunks;
         CREATE TEMP TABLE verify_chunks (
             frame INTEGER NOT NULL, offset INTEGER NOT NULL, len INTEGER NOT NULL,
             kind INTEGER NOT NULL, id BLOB NOT NULL,
             PRIMARY KEY (frame, offset, id)) WITHOUT ROWID;
         INSERT OR IGNORE INTO temp.verify_chunks
             SELECT frame, offset, len, kind, id FROM main.chunks;",
    )?;
    let todo: Vec<&PackRow> = packs
        .iter()
        .filter(|p| p.on_disk.is_some() && scope.reads(&p.id))
        .collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(todo.len().max(1));
    let mut results: Vec<(usize, Result<PackOutcome>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = todo.get(i) else { break };
                        done.push((i, pack::check_pack(store, p)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a verify worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut records: HashMap<SnapshotId, SnapRec> = HashMap::new();
    let mut forgotten: HashMap<SnapshotId, PackId> = HashMap::new();
    let mut bad: HashMap<ChunkId, Bad> = HashMap::new();
    for (_, r) in results {
        let out = r?;
        v.problems.extend(out.problems);
        for (id, b) in out.bad {
            bad.entry(id).or_insert(b);
        }
        for rec in out.records {
            records.entry(rec.id).or_insert(rec);
        }
        for (id, pack) in out.forgets {
            forgotten.entry(id).or_insert(pack);
        }
    }
    // What reading the packs found replaces what reading through the index found: it says
    // more precisely what is wrong.
    v.bad.extend(bad);
    // Snapshot rows against the records in the packs: an index rebuilt from the packs must
    // come out the same.
    let root = store.root();
    let mut listed = HashSet::new();
    for s in snaps {
        listed.insert(s.id);
        let label = format!("snapshot {} ({})", s.short_id(), s.name);
        if let Some(pack) = forgotten.get(&s.id) {
            v.problem_at(
                format!(
                    "{label} is in the index, but a forget record in {} names it; \
                     repair-index would drop it",
                    pack_name(root, pack)
                ),
                *pack,
                None,
            );
        }
        let Some(rec) = records.get(&s.id) else {
            // A subset's packs hold only some of the records.
            if scope.reads_all() {
                v.problem(format!(
                    "{label}: no indexed pack holds its record; repair-index would lose it"
                ));
            }
            continue;
        };
        match serde_json::from_slice::<SnapshotRecord>(&rec.bytes) {
            Err(e) => v.problem_at(
                format!(
                    "{label}: its record in {} does not parse: {e}",
                    pack_name(root, &rec.pack)
                ),
                rec.pack,
                None,
            ),
            Ok(r) => {
                let d = differences(s, &r);
                if !d.is_empty() {
                    v.problem_at(
                        format!(
                            "{label}: its index row differs from its record in {} ({})",
                            pack_name(root, &rec.pack),
                            d.join(", ")
                        ),
                        rec.pack,
                        None,
                    );
                }
            }
        }
    }
    // A record is unlisted only if no forget record names it, anywhere.
    let mut unlisted: Vec<&SnapRec> = records
        .values()
        .filter(|r| scope.reads_all() && !listed.contains(&r.id) && !forgotten.contains_key(&r.id))
        .collect();
    unlisted.sort_by_key(|r| r.id);
    for r in unlisted {
        v.notes.push(format!(
            "{} holds a record of snapshot {} that the index does not list; repair-index would \
             restore it",
            pack_name(root, &r.pack),
            r.id.short()
        ));
    }
    Ok(todo.len() as u64)
}
