//! One indexed pack read from end to end: every record its headers chain to, each checked
//! against the index's rows for the pack; then the rows no record matched, and the hash of the
//! whole file against its name.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::pack_file::PackFile;
use super::{records, FrameChunks, FrameRow, PackOutcome};
use crate::check::index::{pack_name, PackRow};
use crate::check::{chunk_kind, reason};
use crate::error::Result;
use crate::ids::ChunkId;
use crate::layout;
use crate::pack::format::RecordHeader;
use crate::pack::format::{check_pack_header, PACK_HEADER_LEN};
use crate::pack::{Codec, RecordKind};
use crate::store::Store;

/// The index's `frames` rows of pack `p` by offset, and the `chunks` rows of each of them.
fn index_rows(
    store: &Store,
    p: &PackRow,
) -> Result<(BTreeMap<u64, FrameRow>, HashMap<i64, FrameChunks>)> {
    let mut frames: BTreeMap<u64, FrameRow> = BTreeMap::new();
    let mut chunks: HashMap<i64, FrameChunks> = HashMap::new();
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
        let kind = chunk_kind(r.get::<_, i64>(3)?);
        chunks.entry(r.get(0)?).or_default().insert(
            id,
            (
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
                kind,
            ),
        );
    }
    Ok((frames, chunks))
}

/// Whether the frame's payload, read and decoded as its index row says, holds each of its
/// chunks where their rows place them: what a reader sees, whatever the record's header.
fn intact_where_indexed(
    store: &Store,
    pf: &mut PackFile,
    f: &FrameRow,
    rows: &FrameChunks,
) -> bool {
    let Some(codec) = u8::try_from(f.codec).ok().and_then(Codec::from_u8) else {
        return false;
    };
    let header = RecordHeader {
        kind: RecordKind::Chunks,
        codec,
        raw_len: f.raw_len as u32,
        stored_len: f.stored_len as u32,
        base: f.base.as_deref().and_then(ChunkId::from_slice),
        entries: Vec::new(),
    };
    let Ok(Ok(raw)) = pf
        .read_at(f.offset, f.stored_len)
        .map(|stored| records::decode(store, &header, stored))
    else {
        return false;
    };
    !rows.is_empty()
        && rows.iter().all(|(id, &(o, l, _))| {
            raw.get(o as usize..(o + l) as usize)
                .is_some_and(|bytes| ChunkId::of(bytes) == *id)
        })
}

/// Read one indexed pack from end to end.
pub(super) fn check_pack(store: &Store, p: &PackRow) -> Result<PackOutcome> {
    let mut out = PackOutcome::default();
    let (mut frames, mut chunks) = index_rows(store, p)?;
    let path = layout::pack_path(store.root(), &p.id);
    let name = pack_name(store.root(), &p.id);
    let mut pf = match PackFile::open(&path) {
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
                let rows = chunks.remove(&f.id).unwrap_or_default();
                let why =
                    format!("the header of its record (at offset {start}) is damaged: {what}");
                if intact_where_indexed(store, &mut pf, &f, &rows) {
                    // Readers go by the index, not the header: only what reads headers (a
                    // pack scan: repair-index, gc's repack) is hurt.
                    out.problem(
                        format!(
                            "{name}: {why}; its {} chunk(s) are intact where the index places \
                             them, so readers are not hurt, but repair-index and gc's repack, \
                             which read record headers, cannot read this record",
                            rows.len()
                        ),
                        p.id,
                        Some(start),
                    );
                } else {
                    out.bad_frame(p.id, &f, Some(rows), &why);
                }
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
                let raw = payload.and_then(|b| records::decode(store, &h, b));
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
                records::check_entries(
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
                records::snapshot(&mut out, p.id, &name, start, &h, payload);
            }
            RecordKind::Forget => {
                records::forget(&mut out, p.id, &name, start, &h, payload);
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
