//! Phase 2 of `verify --data`: read every record of every indexed pack, decode it and hash
//! each chunk; hash each pack file against its name; check snapshot and forget records against
//! the snapshot rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::index::{pack_name, PackRow};
use super::{kind_name, reason, Bad, Problem, Verifier};
use crate::error::Result;
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::layout;
use crate::object::ObjectSource;
use crate::pack::format::{check_pack_header, PACK_HEADER_LEN};
use crate::pack::{ChunkKind, Codec, RecordHeader, RecordKind};
use crate::snapshot::{Snapshot, SnapshotRecord};
use crate::store::Store;

/// Packs are read by this many threads at most.
const MAX_THREADS: usize = 4;
/// Size of the steps in which bytes no record covers are hashed.
const HASH_STEP: u64 = 1 << 20;

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
        self.problems.push(Problem {
            what,
            pack: Some(pack),
            offset,
            chunk: None,
            hurts: Vec::new(),
            unreferenced: false,
        });
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

/// A pack file read at any offset, hashed (blake3) as a whole along the way: every byte is
/// hashed once, in order, whatever the reads skip.
struct PackFile {
    file: File,
    len: u64,
    hasher: blake3::Hasher,
    hashed: u64,
}

impl PackFile {
    fn read_at(&mut self, offset: u64, n: u64) -> io::Result<Vec<u8>> {
        self.hash_to(offset)?;
        let mut buf = vec![0u8; n as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        let end = offset + n;
        if offset <= self.hashed && end > self.hashed {
            self.hasher.update(&buf[(self.hashed - offset) as usize..]);
            self.hashed = end;
        }
        Ok(buf)
    }

    /// Hash the bytes from where hashing stopped up to `to`.
    fn hash_to(&mut self, to: u64) -> io::Result<()> {
        let to = to.min(self.len);
        let mut buf = Vec::new();
        while self.hashed < to {
            let n = (to - self.hashed).min(HASH_STEP);
            buf.resize(n as usize, 0);
            self.file.read_exact_at(&mut buf, self.hashed)?;
            self.hasher.update(&buf);
            self.hashed += n;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<PackId> {
        self.hash_to(self.len)?;
        Ok(PackId(*self.hasher.finalize().as_bytes()))
    }

    /// The record header at `start` and where its payload starts, or what is wrong with it.
    fn header(&mut self, start: u64) -> std::result::Result<(RecordHeader, u64), String> {
        let left = self.len - start;
        if left < 20 {
            return Err(format!("{left} bytes left, too few for a record"));
        }
        let mut buf = self.read_at(start, 20).map_err(|e| e.to_string())?;
        let need = RecordHeader::needed(&buf)
            .map_err(|e| reason(&e))?
            .expect("the fixed part is read");
        if need as u64 > left {
            return Err("the record header runs past the end of the pack".into());
        }
        buf.extend(
            self.read_at(start + 20, need as u64 - 20)
                .map_err(|e| e.to_string())?,
        );
        let (h, used) = RecordHeader::decode(&buf)
            .map_err(|e| reason(&e))?
            .expect("the whole header is read");
        let payload = start + used as u64;
        if payload + h.stored_len as u64 > self.len {
            return Err("the record runs past the end of the pack".into());
        }
        Ok((h, payload))
    }
}

/// A chunks record's decoded payload, or why it cannot be decoded.
fn decode(
    store: &Store,
    h: &RecordHeader,
    stored: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    let raw_len = h.raw_len as usize;
    let raw = match h.codec {
        Codec::None => stored,
        Codec::Zstd => zstd::bulk::decompress(&stored, raw_len)
            .map_err(|e| format!("its record does not decompress: {e}"))?,
        Codec::ZstdDelta => {
            let base_id = h.base.ok_or("its delta record has no base")?;
            let base = store.object(&base_id).map_err(|e| {
                format!(
                    "the base {} of its delta record cannot be read: {}",
                    base_id.short(),
                    reason(&e)
                )
            })?;
            zstd::bulk::Decompressor::with_dictionary(&base)
                .and_then(|mut d| d.decompress(&stored, raw_len))
                .map_err(|e| format!("its delta record does not decompress: {e}"))?
        }
    };
    if raw.len() != raw_len {
        return Err(format!(
            "its record decodes to {} bytes, not {raw_len}",
            raw.len()
        ));
    }
    Ok(raw)
}

/// Read one indexed pack from end to end.
fn check_pack(store: &Store, p: &PackRow) -> Result<PackOutcome> {
    let mut out = PackOutcome::default();
    let mut frames: BTreeMap<u64, FrameRow> = BTreeMap::new();
    let mut chunks: HashMap<i64, FrameChunks> = HashMap::new();
    {
        let db = store.db();
        let mut stmt = db.conn().prepare_cached(
            "SELECT id, offset, stored_len, raw_len, codec, base FROM frames WHERE pack = ?1",
        )?;
        let mut rows = stmt.query([p.row])?;
        while let Some(r) = rows.next()? {
            let f = FrameRow {
                id: r.get(0)?,
                offset: r.get::<_, i64>(1)?.max(0) as u64,
                stored_len: r.get::<_, i64>(2)?.max(0) as u64,
                raw_len: r.get::<_, i64>(3)?.max(0) as u64,
                codec: r.get(4)?,
                base: r.get(5)?,
            };
            frames.insert(f.offset, f);
        }
        let mut stmt = db.conn().prepare_cached(
            "SELECT v.frame, v.offset, v.len, v.kind, v.id
             FROM main.frames f JOIN temp.verify_chunks v ON v.frame = f.id WHERE f.pack = ?1",
        )?;
        let mut rows = stmt.query([p.row])?;
        while let Some(r) = rows.next()? {
            let Some(id) = ChunkId::from_slice(&r.get::<_, Vec<u8>>(4)?) else {
                continue;
            };
            let kind = u8::try_from(r.get::<_, i64>(3)?)
                .ok()
                .and_then(ChunkKind::from_u8);
            chunks.entry(r.get(0)?).or_default().insert(
                id,
                (
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                    kind,
                ),
            );
        }
    }
    let path = layout::pack_path(store.root(), &p.id);
    let name = pack_name(store.root(), &p.id);
    let opened = File::open(&path).and_then(|f| {
        let len = f.metadata()?.len();
        Ok(PackFile {
            file: f,
            len,
            hasher: blake3::Hasher::new(),
            hashed: 0,
        })
    });
    let mut pf = match opened {
        Ok(f) => f,
        Err(e) => {
            let what = format!("its pack file cannot be read: {e}");
            for f in frames.values() {
                out.bad_frame(p.id, f, chunks.remove(&f.id), &what);
            }
            out.problem(format!("pack file {name} cannot be read: {e}"), p.id, None);
            return Ok(out);
        }
    };
    let damaged_pack = |e: io::Error| format!("reading {name}: {e}");
    match pf.read_at(0, PACK_HEADER_LEN.min(pf.len)) {
        Ok(head) => {
            if let Err(e) = check_pack_header(&head) {
                out.problem(
                    format!("the pack header of {name} is damaged: {}", reason(&e)),
                    p.id,
                    Some(0),
                );
            }
        }
        Err(e) => out.problem(damaged_pack(e), p.id, Some(0)),
    }
    let mut pos = PACK_HEADER_LEN;
    while pos < pf.len {
        let start = pos;
        let (h, payload_offset) = match pf.header(start) {
            Ok(x) => x,
            Err(what) => {
                // Go on after the record the index has next, if it has one.
                let next = frames.range(start + 1..).next().map(|(o, _)| *o);
                let Some(offset) = next else {
                    out.problem(
                        format!(
                            "the record at offset {start} of {name} is damaged ({what}); the \
                             {} bytes from there on cannot be read",
                            pf.len - start
                        ),
                        p.id,
                        Some(start),
                    );
                    break;
                };
                let f = frames.remove(&offset).expect("just found");
                let why =
                    format!("the header of its record (at offset {start}) is damaged: {what}");
                out.bad_frame(p.id, &f, chunks.remove(&f.id), &why);
                pos = f.offset + f.stored_len;
                continue;
            }
        };
        pos = payload_offset + h.stored_len as u64;
        let payload = match pf.read_at(payload_offset, h.stored_len as u64) {
            Ok(b) => Ok(b),
            Err(e) => Err(damaged_pack(e)),
        };
        match h.kind {
            RecordKind::Chunks => {
                let frame = frames.remove(&payload_offset);
                let rows = frame
                    .as_ref()
                    .and_then(|f| chunks.remove(&f.id))
                    .unwrap_or_default();
                let raw = payload.and_then(|b| decode(store, &h, b));
                // A delta record no row uses may outlive its base (gc swept it): harmless.
                if rows.is_empty() && h.codec == Codec::ZstdDelta && raw.is_err() {
                    let base = h.base.map(|b| b.0.to_vec()).unwrap_or_default();
                    if !store
                        .db()
                        .conn()
                        .prepare_cached(
                            "SELECT 1 FROM chunks WHERE id = ?1
                             UNION ALL SELECT 1 FROM condemned WHERE id = ?1",
                        )?
                        .exists([base])?
                    {
                        continue;
                    }
                }
                check_entries(
                    &mut out,
                    p.id,
                    payload_offset,
                    &h,
                    frame.as_ref(),
                    rows,
                    raw,
                );
            }
            RecordKind::Snapshot => {
                let e = &h.entries;
                let why = match payload {
                    Err(why) => Some(why),
                    Ok(_)
                        if e.len() != 1
                            || e[0].kind != ChunkKind::Snapshot
                            || h.codec != Codec::None
                            || e[0].len != h.stored_len =>
                    {
                        Some("malformed".to_string())
                    }
                    Ok(b) if ChunkId::of(&b) != e[0].id => Some("fails its checksum".into()),
                    Ok(b) => {
                        out.records.push(SnapRec {
                            id: SnapshotId(e[0].id.0),
                            pack: p.id,
                            bytes: b,
                        });
                        None
                    }
                };
                if let Some(why) = why {
                    let which = e.first().map(|e| e.id.short()).unwrap_or_default();
                    out.problem(
                        format!(
                            "the snapshot record {which} at offset {start} of {name} is \
                             damaged ({why}); repair-index would lose that snapshot"
                        ),
                        p.id,
                        Some(start),
                    );
                }
            }
            RecordKind::Forget => {
                let ids: Vec<u8> = h.entries.iter().flat_map(|e| e.id.0).collect();
                let well_formed = h
                    .entries
                    .iter()
                    .all(|e| e.kind == ChunkKind::Snapshot && e.len == 32);
                let why = match payload {
                    Err(why) => Some(why),
                    Ok(_) if !well_formed => Some("malformed".to_string()),
                    Ok(b) if b != ids => Some("its payload does not match its entries".into()),
                    Ok(_) => None,
                };
                if let Some(why) = why {
                    out.problem(
                        format!("the forget record at offset {start} of {name} is damaged ({why})"),
                        p.id,
                        Some(start),
                    );
                }
                out.forgets
                    .extend(h.entries.iter().map(|e| (SnapshotId(e.id.0), p.id)));
            }
        }
    }
    for f in frames.into_values() {
        let why = format!(
            "the index places a record at offset {}, where the pack has none",
            f.offset
        );
        out.bad_frame(p.id, &f, chunks.remove(&f.id), &why);
    }
    match pf.finish() {
        Ok(id) if id == p.id => {}
        Ok(_) => out.problem(
            format!(
                "{name} does not hash to its name: it is damaged, and repair-index would skip it"
            ),
            p.id,
            None,
        ),
        Err(e) => out.problem(damaged_pack(e), p.id, None),
    }
    Ok(out)
}

/// Hash each entry of a chunks record and compare the record with the index.
fn check_entries(
    out: &mut PackOutcome,
    pack: PackId,
    offset: u64,
    h: &RecordHeader,
    frame: Option<&FrameRow>,
    mut rows: FrameChunks,
    raw: std::result::Result<Vec<u8>, String>,
) {
    let mismatch = frame
        .filter(|f| !f.matches(h))
        .map(|_| "the index's row for its record does not match the record's header".to_string());
    let mut at = 0u64;
    for e in &h.entries {
        let len = e.len as u64;
        let here = rows
            .get(&e.id)
            .is_some_and(|&(o, l, _)| o == at && l == len);
        if here {
            rows.remove(&e.id);
        }
        let fail = match &raw {
            Err(why) => Some(why.clone()),
            Ok(raw) if ChunkId::of(&raw[at as usize..(at + len) as usize]) != e.id => {
                Some("fails its checksum".to_string())
            }
            Ok(_) => None,
        };
        match (fail, here) {
            (Some(why), true) => out
                .bad
                .push((e.id, Bad::new(why).at(pack, offset, Some(e.kind)))),
            (None, true) => {
                if let Some(why) = &mismatch {
                    out.bad
                        .push((e.id, Bad::new(why.clone()).at(pack, offset, Some(e.kind))));
                }
            }
            (Some(why), false) => out.problems.push(Problem {
                what: format!(
                    "{} {} (a copy the index does not use): {why}",
                    kind_name(Some(e.kind)),
                    e.id.short()
                ),
                pack: Some(pack),
                offset: Some(offset),
                chunk: Some(e.id),
                hurts: Vec::new(),
                unreferenced: true,
            }),
            (None, false) => {}
        }
        at += len;
    }
    for (id, (o, l, kind)) in rows {
        out.bad.push((
            id,
            Bad::new(format!(
                "the index places it at {o}..{} of a record that does not hold it there",
                o + l
            ))
            .at(pack, offset, kind),
        ));
    }
    if frame.is_none() {
        out.problem(
            format!(
                "the record at offset {offset} ({} chunks) is not in the index",
                h.entries.len()
            ),
            pack,
            Some(offset),
        );
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
    d
}

pub(super) fn check_packs(v: &mut Verifier, packs: &[PackRow], snaps: &[Snapshot]) -> Result<()> {
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
    let todo: Vec<&PackRow> = packs.iter().filter(|p| p.on_disk.is_some()).collect();
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
                        done.push((i, check_pack(store, p)));
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
            v.problem(format!(
                "{label}: no indexed pack holds its record; repair-index would lose it"
            ));
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
    let mut unlisted: Vec<&SnapRec> = records
        .values()
        .filter(|r| !listed.contains(&r.id) && !forgotten.contains_key(&r.id))
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
    Ok(())
}
