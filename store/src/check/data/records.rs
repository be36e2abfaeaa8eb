//! The records of a pack, each checked on its own: a chunks record is decoded and each of its
//! chunks hashed and compared with the index's rows; a snapshot record is kept for comparing
//! with the snapshot rows; a forget record is kept for the snapshots it names.

use super::{Bad, FrameChunks, FrameRow, PackOutcome, SnapRec};
use crate::check::{kind_name, reason, Problem};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::object::ObjectSource;
use crate::pack::{ChunkKind, Codec, RecordHeader};
use crate::store::Store;

/// A chunks record's decoded payload, or why it cannot be decoded.
pub(super) fn decode(
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
            let mut out = Vec::new();
            out.try_reserve(raw_len)
                .map_err(|_| format!("its delta record of {raw_len} bytes cannot be held"))?;
            crate::pack::compress::decompress_delta(&base, &stored, out)
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

/// Hash each entry of a chunks record and compare the record with the index.
pub(super) fn check_entries(
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
                reason: why,
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

/// A snapshot record (header at `start` of pack `name`) and its payload, or why it cannot be
/// read: a well-formed one is kept for the snapshot rows, anything else is a problem.
pub(super) fn snapshot(
    out: &mut PackOutcome,
    pack: PackId,
    name: &str,
    start: u64,
    h: &RecordHeader,
    payload: std::result::Result<Vec<u8>, String>,
) {
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
                pack,
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
            pack,
            Some(start),
        );
    }
}

/// A forget record (header at `start` of pack `name`) and its payload, or why it cannot be
/// read: the snapshots it names are kept (even if it is damaged), and damage is a problem.
pub(super) fn forget(
    out: &mut PackOutcome,
    pack: PackId,
    name: &str,
    start: u64,
    h: &RecordHeader,
    payload: std::result::Result<Vec<u8>, String>,
) {
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
            pack,
            Some(start),
        );
    }
    out.forgets
        .extend(h.entries.iter().map(|e| (SnapshotId(e.id.0), pack)));
}
