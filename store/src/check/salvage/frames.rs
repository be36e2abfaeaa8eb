//! What a damaged pack holds: its frames (where the index places them, and where a walk over
//! its records finds them), as much of each as decodes, and the snapshot and forget records
//! that can be trusted.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use std::collections::HashSet;
use std::path::Path;

use crate::error::Result;
use crate::ids::{ChunkId, PackId};
use crate::pack::compress::decompress_delta;
use crate::pack::{intact_records, ChunkKind, Codec, RecordHeader, RecordKind, Skipped};
use crate::store::Store;

/// A frame longer than this (stored or decoded) is not a frame cellar wrote: it is left out
/// rather than allocated.
const FRAME_MAX: u64 = 1 << 28;

/// A frame of the damaged pack to read objects from.
#[derive(Default)]
pub(super) struct Frame {
    pub(super) stored_len: u64,
    pub(super) raw_len: u64,
    pub(super) codec: Option<Codec>,
    pub(super) base: Option<ChunkId>,
    /// (id, kind, offset in the decoded frame, length).
    pub(super) objects: Vec<(ChunkId, ChunkKind, u64, u32)>,
}

/// What a damaged pack holds, as far as can be told.
pub(super) struct Contents {
    /// By payload offset.
    pub(super) frames: BTreeMap<u64, Frame>,
    /// Snapshot and forget records whose headers check out and that are not taken for bytes
    /// inside another record's payload (see `contents`), with their payload offsets.
    pub(super) records: Vec<(RecordHeader, u64)>,
    pub(super) skipped: Skipped,
}

/// The frames of pack `id` (the file at `path`): the index's, and those the walk finds.
///
/// A pack stored in this store as data holds real record headers. A record the walk finds
/// inside a payload the index places is left out; of the others, a snapshot or forget record
/// is taken only in the first run of records (from the pack header on, before any damage) or
/// the last (up to the last record found), where a pack's own are written: one inside stored
/// data of a pack the index does not name sits in a run in between, cut off by the outer
/// record after it. (Chunk records found in such data add objects, each checked against its
/// id: the right bytes, whatever they came with.)
pub(super) fn contents(store: &Store, id: &PackId, file: &File, path: &Path) -> Result<Contents> {
    let mut frames = indexed_frames(store, id)?;
    // Where the index puts payloads: a record found starting inside one is in its bytes.
    let payloads: Vec<(u64, u64)> = frames
        .iter()
        .map(|(&at, f)| (at, at + f.stored_len))
        .collect();
    let inside = |start: u64| {
        let i = payloads.partition_point(|&(at, _)| at <= start);
        i > 0 && start < payloads[i - 1].1
    };
    // (start, end, header, payload offset) of every record found.
    let mut found = Vec::new();
    let skipped = intact_records(file, path, |rec| {
        let start = rec.payload_offset - rec.header.encoded_len() as u64;
        let end = rec.payload_offset + rec.header.stored_len as u64;
        if !inside(start) {
            found.push((start, end, rec.header, rec.payload_offset));
        }
        Ok(())
    })?;
    let first_run = found
        .iter()
        .scan(crate::pack::format::PACK_HEADER_LEN, |at, r| {
            (r.0 == *at).then(|| *at = r.1)
        })
        .count();
    let mut last_run = found.len().saturating_sub(1);
    while last_run > 0 && found[last_run - 1].1 == found[last_run].0 {
        last_run -= 1;
    }
    let mut records = Vec::new();
    for (i, (_, _, h, payload_offset)) in found.into_iter().enumerate() {
        match h.kind {
            RecordKind::Chunks => add_entries(&mut frames, &h, payload_offset),
            RecordKind::Snapshot | RecordKind::Forget if i < first_run || i >= last_run => {
                records.push((h, payload_offset))
            }
            RecordKind::Snapshot | RecordKind::Forget => {}
        }
    }
    Ok(Contents {
        frames,
        records,
        skipped,
    })
}

/// A chunk record's frame and the entries the index has no row for.
fn add_entries(frames: &mut BTreeMap<u64, Frame>, h: &RecordHeader, payload_offset: u64) {
    let f = frames.entry(payload_offset).or_insert_with(|| Frame {
        stored_len: h.stored_len as u64,
        raw_len: h.raw_len as u64,
        codec: Some(h.codec),
        base: h.base,
        objects: Vec::new(),
    });
    let known: HashSet<(ChunkId, u64)> = f.objects.iter().map(|&(i, _, at, _)| (i, at)).collect();
    let mut at = 0u64;
    for e in &h.entries {
        if !known.contains(&(e.id, at)) {
            f.objects.push((e.id, e.kind, at, e.len));
        }
        at += e.len as u64;
    }
}

/// The frames the index places in pack `id`, by offset, with the chunks it has in each.
fn indexed_frames(store: &Store, id: &PackId) -> Result<BTreeMap<u64, Frame>> {
    let db = store.db();
    let mut frames: BTreeMap<u64, Frame> = BTreeMap::new();
    let mut by_row = HashMap::new();
    let mut stmt = db.conn().prepare(
        "SELECT f.id, f.offset, f.stored_len, f.raw_len, f.codec, f.base
         FROM frames f JOIN packs p ON p.id = f.pack WHERE p.name = ?1",
    )?;
    let mut rows = stmt.query([&id.0[..]])?;
    while let Some(r) = rows.next()? {
        let offset = r.get::<_, i64>(1)? as u64;
        by_row.insert(r.get::<_, i64>(0)?, offset);
        frames.insert(
            offset,
            Frame {
                stored_len: r.get::<_, i64>(2)? as u64,
                raw_len: r.get::<_, i64>(3)? as u64,
                codec: Codec::from_u8(r.get(4)?),
                base: r
                    .get::<_, Option<Vec<u8>>>(5)?
                    .and_then(|b| ChunkId::from_slice(&b)),
                objects: Vec::new(),
            },
        );
    }
    for table in ["chunks", "condemned"] {
        let mut stmt = db.conn().prepare(&format!(
            "SELECT c.id, c.kind, c.frame, c.offset, c.len FROM {table} c
             JOIN frames f ON f.id = c.frame JOIN packs p ON p.id = f.pack WHERE p.name = ?1"
        ))?;
        let mut rows = stmt.query([&id.0[..]])?;
        while let Some(r) = rows.next()? {
            let cid = r.get::<_, Vec<u8>>(0)?;
            let (Some(cid), Some(kind)) =
                (ChunkId::from_slice(&cid), ChunkKind::from_u8(r.get(1)?))
            else {
                continue;
            };
            let offset = by_row[&r.get::<_, i64>(2)?];
            let frame = frames.get_mut(&offset).expect("its frame was read");
            frame
                .objects
                .push((cid, kind, r.get::<_, i64>(3)? as u64, r.get(4)?));
        }
    }
    Ok(frames)
}

/// As much of a frame's decoded bytes as can be had: all of them, the part before the damage
/// in a zstd frame, or nothing. A delta frame's base comes from `base`.
pub(super) fn decode_with(
    file: &File,
    offset: u64,
    frame: &Frame,
    base: &dyn Fn(&ChunkId) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let Some(codec) = frame.codec else {
        return Vec::new();
    };
    if frame.stored_len > FRAME_MAX || frame.raw_len > FRAME_MAX {
        return Vec::new();
    }
    let mut stored = vec![0u8; frame.stored_len as usize];
    // What lies past the end of a cut-off file is not there: read what is.
    let got = read_at_most(file, &mut stored, offset);
    stored.truncate(got);
    match codec {
        Codec::None => stored,
        Codec::Zstd => {
            let mut raw = Vec::new();
            if let Ok(d) = zstd::stream::read::Decoder::with_buffer(&stored[..]) {
                // Blocks before a damaged one come out before the error does.
                let _ = d.take(frame.raw_len).read_to_end(&mut raw);
            }
            raw
        }
        Codec::ZstdDelta => {
            let base = frame.base.and_then(|b| base(&b));
            base.and_then(|base| {
                decompress_delta(&base, &stored, Vec::with_capacity(frame.raw_len as usize)).ok()
            })
            .unwrap_or_default()
        }
    }
}

/// Fill `buf` from `offset` as far as the file goes; the count read.
pub(super) fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}
