//! Reading an object back: where the index puts it (learned a frame at a time, cached),
//! its frame read from the pack and decoded (a delta frame from its base first), and the
//! object checked against its id before it is handed out.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rusqlite::OptionalExtension;

use super::Store;
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::layout;
use crate::object::{Object, ObjectSource};
use crate::pack::Codec;

thread_local! {
    /// A zstd context per reading thread, made once: making one costs about as much as
    /// decoding a small frame.
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };

    /// A compressed frame as read from its pack, before it is decoded, per reading thread: a
    /// buffer made per frame came as new pages for the kernel to zero (6% of the CPU of
    /// sending a layer). Grown, never cleared, so it is not zeroed again either.
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Past this, a thread's [`STORED`] buffer is let go after the frame it held: frames are
/// written up to 2 MiB (`pack::compress::FRAME_TARGET`), so only an odd pack's would be.
const STORED_KEPT: usize = 8 << 20;

/// A pack file held open, with its length read once when it was opened: a sealed pack is
/// never written again, and a frame the index places past its end is damage.
pub(crate) struct OpenPack {
    file: File,
    len: u64,
}

/// Where an object's bytes are.
#[derive(Clone)]
pub(super) struct Location {
    /// The `frames` row.
    frame: i64,
    offset: usize,
    len: usize,
    pub(super) pack: PackId,
    payload_offset: u64,
    stored_len: usize,
    raw_len: usize,
    codec: Codec,
    base: Option<ChunkId>,
}

impl Store {
    /// Where `id`'s bytes are stored, as a key that puts the objects of one frame together
    /// (its `frames` row, then the object's offset in it); `None` if the index does not know
    /// it. For readers choosing an order in which each frame is decoded about once.
    pub(crate) fn storage_order(&self, id: &ChunkId) -> Option<(i64, usize)> {
        let loc = self.known_location(id).ok()?;
        Some((loc.frame, loc.offset))
    }

    /// Where `id` is: as last learned, or from the index. Unchecked, for readers that only
    /// plan (the object read later is checked against its id).
    fn known_location(&self, id: &ChunkId) -> Result<Location> {
        match self.cached_location(id) {
            Some(loc) => Ok(loc),
            None => self.locate(id),
        }
    }

    pub(super) fn locate(&self, id: &ChunkId) -> Result<Location> {
        let db = self.db();
        // A chunk gc condemned is still readable until swept (FORMAT §15): readers of a
        // just-forgotten snapshot keep working.
        let mut stmt = db.conn().prepare_cached(
            "SELECT c.offset, c.len, f.id, p.name, f.offset, f.stored_len, f.raw_len, f.codec, f.base
             FROM (SELECT frame, offset, len, 0 AS o FROM chunks WHERE id = ?1
                   UNION ALL SELECT frame, offset, len, 1 FROM condemned WHERE id = ?1) c
             JOIN frames f ON f.id = c.frame JOIN packs p ON p.id = f.pack
             ORDER BY c.o LIMIT 1",
        )?;
        let loc = stmt
            .query_row([&id.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, u8>(7)?,
                    r.get::<_, Option<Vec<u8>>>(8)?,
                ))
            })
            .optional()?
            .ok_or_else(|| Error::corrupt(format!("chunk {} is not in the index", id.short())))?;
        let (offset, len, frame, pack, payload_offset, stored_len, raw_len, codec, base) = loc;
        let bad = || Error::corrupt(format!("chunk {} has a malformed index entry", id.short()));
        // Rows carry no checksum of their own: a damaged page can hold any number, and each is
        // checked before it sizes a buffer or an addition. A pack record's lengths are 32-bit.
        let length = |v: i64| u32::try_from(v).map(|v| v as usize).map_err(|_| bad());
        let (offset, len) = (length(offset)?, length(len)?);
        let (stored_len, raw_len) = (length(stored_len)?, length(raw_len)?);
        if offset + len > raw_len {
            return Err(Error::corrupt(format!(
                "chunk {} lies outside its frame",
                id.short()
            )));
        }
        Ok(Location {
            frame,
            offset,
            len,
            pack: PackId::from_slice(&pack).ok_or_else(bad)?,
            payload_offset: u64::try_from(payload_offset).map_err(|_| bad())?,
            stored_len,
            raw_len,
            codec: Codec::from_u8(codec).ok_or_else(bad)?,
            base: base
                .map(|b| ChunkId::from_slice(&b).ok_or_else(bad))
                .transpose()?,
        })
    }

    fn pack_file(&self, id: &PackId) -> Result<Arc<OpenPack>> {
        let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = packs.get(id) {
            return Ok(f.clone());
        }
        let path = layout::pack_path(&self.root, id);
        let f = match File::open(&path).and_then(|file| {
            let len = file.metadata()?.len();
            Ok(OpenPack { file, len })
        }) {
            Ok(f) => Arc::new(f),
            // The index lists the pack, so either its file was lost or the index is damaged.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupt(format!(
                    "pack {} is in the index but {} is missing (`cellar verify` lists what \
                     it hurts; bring the file back, or give up what it held with `cellar \
                     repair-packs {}`; if the index is what is wrong, `cellar repair-index` \
                     rebuilds it from the packs)",
                    id.short(),
                    path.display(),
                    &id.hex()[..16]
                )))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        packs.put(*id, f.clone());
        Ok(f)
    }

    fn frame(&self, loc: &Location) -> Result<Arc<Vec<u8>>> {
        let (frame, decoded) = self
            .frames
            .get_or_decode((loc.pack, loc.payload_offset), |buf| self.decode(loc, buf))?;
        if decoded {
            self.learn_frame(loc)?;
        }
        Ok(frame)
    }

    /// Read the frame at `loc` from its pack and decompress it (into `buf` where the codec
    /// allows).
    fn decode(&self, loc: &Location, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let pack = self.pack_file(&loc.pack)?;
        // A length the pack cannot hold is damage, found before it sizes a buffer.
        if loc.payload_offset.saturating_add(loc.stored_len as u64) > pack.len {
            return Err(Error::corrupt(format!(
                "pack {} is {} bytes, short of the frame the index puts at offset {} \
                 ({} bytes)",
                loc.pack.short(),
                pack.len,
                loc.payload_offset,
                loc.stored_len
            )));
        }
        let too_large = |_| {
            Error::corrupt(format!(
                "frame at offset {} of pack {} is said to decode to {} bytes, more than can be \
                 held",
                loc.payload_offset,
                loc.pack.short(),
                loc.raw_len
            ))
        };
        let read = |stored: &mut [u8]| {
            pack.file
                .read_exact_at(stored, loc.payload_offset)
                .map_err(|e| {
                    Error::corrupt(format!(
                        "pack {} cannot be read at offset {}: {e}",
                        loc.pack.short(),
                        loc.payload_offset
                    ))
                })
        };
        let damaged = |e: std::io::Error| {
            Error::corrupt(format!(
                "frame at offset {} of pack {} does not decompress: {e}",
                loc.payload_offset,
                loc.pack.short()
            ))
        };
        let raw = match loc.codec {
            Codec::None => {
                let mut stored = vec![0u8; loc.stored_len];
                read(&mut stored)?;
                stored
            }
            Codec::Zstd => {
                // A spare buffer of a much larger frame would count at its size in the cache.
                if buf.capacity() > 2 * loc.raw_len {
                    buf = Vec::new();
                }
                buf.clear();
                buf.try_reserve_exact(loc.raw_len).map_err(too_large)?;
                with_stored(loc.stored_len, |stored| {
                    read(stored)?;
                    DCTX.with_borrow_mut(|dctx| {
                        let dctx = match dctx {
                            Some(d) => d,
                            None => dctx.insert(zstd::bulk::Decompressor::new()?),
                        };
                        dctx.decompress_to_buffer(stored, &mut buf)
                    })
                    .map_err(damaged)
                })?;
                buf
            }
            Codec::ZstdDelta => {
                let base_id = loc
                    .base
                    .ok_or_else(|| Error::corrupt("delta frame without a base"))?;
                // Read first: the base may be decoded on this thread, through the same buffer.
                let base = self.object(&base_id)?;
                let mut out = Vec::new();
                out.try_reserve_exact(loc.raw_len).map_err(too_large)?;
                with_stored(loc.stored_len, |stored| {
                    read(stored)?;
                    crate::pack::compress::decompress_delta(&base, stored, out).map_err(damaged)
                })?
            }
        };
        if raw.len() != loc.raw_len {
            return Err(Error::corrupt(format!(
                "frame at offset {} of pack {} decodes to {} bytes, expected {}",
                loc.payload_offset,
                loc.pack.short(),
                raw.len(),
                loc.raw_len
            )));
        }
        Ok(raw)
    }

    /// Remember where every chunk of the frame at `loc` is.
    fn learn_frame(&self, loc: &Location) -> Result<()> {
        let rows = {
            let db = self.db();
            let mut stmt = db
                .conn()
                .prepare_cached("SELECT id, offset, len FROM chunks WHERE frame = ?1")?;
            let rows = stmt.query_map([loc.frame], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut cache = self.locations.lock().unwrap_or_else(|e| e.into_inner());
        for (id, offset, len) in rows {
            if let Some(id) = ChunkId::from_slice(&id) {
                let mut l = loc.clone();
                l.offset = offset as usize;
                l.len = len as usize;
                cache.put(id, l);
            }
        }
        Ok(())
    }

    fn cached_location(&self, id: &ChunkId) -> Option<Location> {
        self.locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn forget_location(&self, id: &ChunkId) {
        self.locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop(id);
    }

    /// Decode the frame holding `id` into the frame cache ahead of a reader that will ask for
    /// it (nothing is checked here: the reader checks what it gets). Errors are left for that
    /// reader to meet.
    pub(crate) fn warm(&self, id: &ChunkId) {
        if let Ok(loc) = self.known_location(id) {
            let _ = self.frame(&loc);
        }
    }

    /// The object, found through the index (not the location cache).
    fn object_from_index(&self, id: &ChunkId) -> Result<Object> {
        self.object_at(id, self.locate(id)?)
    }

    /// The object at `loc`, which the index gave for `id` a moment ago.
    pub(super) fn object_at(&self, id: &ChunkId, mut loc: Location) -> Result<Object> {
        let frame = match self.frame(&loc) {
            // gc may have repacked the pack meanwhile (its file is gone, which `pack_file`
            // reports as damage): look the chunk up once more.
            Err(Error::Io { .. } | Error::Corrupt(_))
                if !layout::pack_path(&self.root, &loc.pack).exists() =>
            {
                loc = self.locate(id)?;
                self.frame(&loc)?
            }
            other => other?,
        };
        check_object(id, &loc, frame)
    }
}

/// The object at `loc` in its decoded `frame`, if it is what `id` names.
fn check_object(id: &ChunkId, loc: &Location, frame: Arc<Vec<u8>>) -> Result<Object> {
    let range = loc.offset..loc.offset + loc.len;
    if range.end > frame.len() {
        return Err(Error::corrupt(format!(
            "chunk {} lies outside its frame",
            id.short()
        )));
    }
    let obj = Object::new(frame, range);
    if ChunkId::of(&obj) != *id {
        return Err(Error::corrupt(format!(
            "chunk {} (pack {}, offset {}) fails its checksum",
            id.short(),
            loc.pack.short(),
            loc.payload_offset
        )));
    }
    Ok(obj)
}

impl ObjectSource for Store {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        if let Some(loc) = self.cached_location(id) {
            // A location gc moved fails here; the index then says where the chunk is now.
            match self.frame(&loc).and_then(|f| check_object(id, &loc, f)) {
                Ok(obj) => return Ok(obj),
                Err(_) => self.forget_location(id),
            }
        }
        self.object_from_index(id)
    }

    fn lost(&self, id: &ChunkId) -> Result<bool> {
        let db = self.db();
        let mut stmt = db.conn().prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM chunks WHERE id = ?1)
                AND NOT EXISTS (SELECT 1 FROM condemned WHERE id = ?1)",
        )?;
        Ok(stmt.query_row([&id.0[..]], |r| r.get(0))?)
    }
}

/// Run `f` on this thread's [`STORED`] buffer, `len` bytes long.
fn with_stored<T>(len: usize, f: impl FnOnce(&mut [u8]) -> Result<T>) -> Result<T> {
    STORED.with_borrow_mut(|stored| {
        if stored.len() < len {
            stored.resize(len, 0);
        }
        let result = f(&mut stored[..len]);
        if stored.len() > STORED_KEPT {
            *stored = Vec::new();
        }
        result
    })
}
