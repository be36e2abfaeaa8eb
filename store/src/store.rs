//! A store directory: the index, the packs, and reading objects back (verified, cached).

use std::cell::RefCell;
use std::fs::{self, File};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use rusqlite::OptionalExtension;

use crate::commit_lock::lock_file;
use crate::db::Db;
use crate::dirs::DirCache;
use crate::dispose::dispose;
use crate::error::{Error, IoContext, Result};
use crate::frames::Frames;
use crate::ids::{ChunkId, PackId};
use crate::layout;
use crate::object::{Object, ObjectSource};
use crate::pack::Codec;
use crate::tree::Dir;

/// Decoded frame bytes kept for reuse: 16 frames as ingest writes them now (about 2 MiB each,
/// `pack::compress::FRAME_TARGET`), 32 of the 1 MiB frames written before.
const FRAME_CACHE: usize = 32 << 20;
const OPEN_PACKS: usize = 64;
/// Decoded directory records kept for reuse, in bytes of nodes. A walk needs the records of
/// the directories it is in; the cache was 1,024 records before, which a walk of /usr (134,000
/// entries) filled with about 10 MiB, and a tree of large directories could fill without
/// bound.
const DIR_CACHE: usize = 8 << 20;
/// Chunk locations learned a frame at a time (about 100 bytes each).
const LOCATION_CACHE: usize = 1 << 16;

thread_local! {
    /// A zstd context per reading thread, made once: making one costs about as much as
    /// decoding a small frame.
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

pub struct Store {
    root: PathBuf,
    db: Mutex<Db>,
    /// Keyed by (pack, payload offset): gc frees `frames` row ids for reuse.
    frames: Frames,
    packs: Mutex<LruCache<PackId, Arc<File>>>,
    dirs: DirCache,
    /// Where chunks are, learned whenever a frame is read from its pack: one query gives the
    /// locations of all the frame's chunks, so reading a stream back costs a query per frame
    /// rather than per chunk. A location gc has since moved can only fail (every object is
    /// checked against its id), and is then looked up afresh.
    locations: Mutex<LruCache<ChunkId, Location>>,
}

/// Where an object's bytes are.
#[derive(Clone)]
struct Location {
    /// The `frames` row.
    frame: i64,
    offset: usize,
    len: usize,
    pack: PackId,
    payload_offset: u64,
    stored_len: usize,
    raw_len: usize,
    codec: Codec,
    base: Option<ChunkId>,
}

impl Store {
    /// Open an existing store.
    pub fn open(root: &Path) -> Result<Store> {
        if !has_index(root) {
            // A repair killed between moving the old index aside and putting the new one in
            // place left it beside; one still running is waited for.
            crate::check::finish_swap(root)?;
        }
        if !has_index(root) {
            if has_pack_files(root) {
                return Err(Error::NoIndex(root.to_path_buf()));
            }
            return Err(Error::NoStore(root.to_path_buf()));
        }
        Self::open_db(root, false)
    }

    /// Open a store, creating it if needed.
    pub fn create(root: &Path) -> Result<Store> {
        for dir in [layout::PACKS_DIR, layout::TMP_DIR] {
            fs::create_dir_all(root.join(dir)).at(root.join(dir))?;
        }
        if !has_index(root) {
            crate::check::finish_swap(root)?;
        }
        if has_index(root) {
            return Self::open_db(root, true);
        }
        // Creating the database and switching it to WAL cannot wait on a busy handler the way
        // transactions do, so writers that start on a new store at once take turns here.
        let _lock = lock_file(root, &|_| {}, None)?;
        // A store whose index was lost keeps its packs: a new, empty index beside them would
        // make them all look like leftovers of failed ingests, which gc deletes.
        if !has_index(root) && has_pack_files(root) {
            return Err(Error::NoIndex(root.to_path_buf()));
        }
        Self::open_db(root, true)
    }

    fn open_db(root: &Path, create: bool) -> Result<Store> {
        let db = Db::open(&root.join(layout::DB_FILE), create)?;
        Ok(Store {
            root: root.to_path_buf(),
            db: Mutex::new(db),
            frames: Frames::new(FRAME_CACHE),
            packs: Mutex::new(LruCache::new(
                NonZeroUsize::new(OPEN_PACKS).expect("nonzero"),
            )),
            dirs: DirCache::new(DIR_CACHE),
            locations: Mutex::new(LruCache::new(
                NonZeroUsize::new(LOCATION_CACHE).expect("nonzero"),
            )),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An unnamed file to stage bytes in on their way out, gone once closed: in the store's
    /// `tmp/` (on its disk, which a large layer fits better than a memory-backed /tmp), or
    /// in the system's temporary directory where the store cannot be written.
    pub fn spool(&self) -> Result<File> {
        tempfile::tempfile_in(self.root.join(layout::TMP_DIR))
            .or_else(|_| tempfile::tempfile())
            .at(std::env::temp_dir())
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reopen the index if `repair-index` has put a new one in its place since this `Store`
    /// opened it; true if it did. For long-running readers that hold no lease between
    /// requests (`serve`): a lease makes `repair-index` refuse, so a mount or an export never
    /// sees its index replaced. Packs are not touched by a repair, so only the cache of chunk
    /// locations (which names `frames` rows of the old index) is dropped.
    pub fn follow_index(&self) -> Result<bool> {
        let path = self.root.join(layout::DB_FILE);
        // Missing: the swap is under way (or the index is lost); the old one serves meanwhile.
        let Some(now) = crate::db::file_id(&path) else {
            return Ok(false);
        };
        let mut db = self.db();
        if db.file() == Some(now) {
            return Ok(false);
        }
        *db = Db::open(&path, false)?;
        drop(db);
        self.locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(true)
    }

    /// `Error::Full` if the store could be opened only for reading because its filesystem is
    /// full: long-running readers (mount, serve) refuse to start so (`Db::not_full`).
    pub fn not_full(&self) -> Result<()> {
        self.db().not_full()
    }

    /// A second connection, for work that runs beside readers of this `Store`.
    pub(crate) fn open_connection(&self) -> Result<Db> {
        Db::open(&self.root.join(layout::DB_FILE), false)
    }

    /// A decoded directory record, from the cache or from `load`.
    pub(crate) fn dir_record(
        &self,
        id: &ChunkId,
        load: impl FnOnce() -> Result<Dir>,
    ) -> Result<Arc<Dir>> {
        if let Some(d) = self.dirs.get(id) {
            return Ok(d);
        }
        let d = Arc::new(load()?);
        self.dirs.put(*id, d.clone());
        Ok(d)
    }

    /// Frames decoded into the cache so far.
    #[cfg(test)]
    pub(crate) fn frames_decoded(&self) -> usize {
        self.frames.decoded()
    }

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

    fn locate(&self, id: &ChunkId) -> Result<Location> {
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

    fn pack_file(&self, id: &PackId) -> Result<Arc<File>> {
        let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = packs.get(id) {
            return Ok(f.clone());
        }
        let path = layout::pack_path(&self.root, id);
        let f = match File::open(&path) {
            Ok(f) => Arc::new(f),
            // The index lists the pack, so either its file was lost or the index is damaged.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupt(format!(
                    "pack {} is in the index but {} is missing (`cellar verify` lists what \
                     it hurts; if the index is what is wrong, `cellar repair-index` \
                     rebuilds it from the packs)",
                    id.short(),
                    path.display()
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
        let file = self.pack_file(&loc.pack)?;
        // A length the pack cannot hold is damage, found before it sizes a buffer.
        let pack_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if loc.payload_offset.saturating_add(loc.stored_len as u64) > pack_len {
            return Err(Error::corrupt(format!(
                "pack {} is {pack_len} bytes, short of the frame the index puts at offset {} \
                 ({} bytes)",
                loc.pack.short(),
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
        let mut stored = vec![0u8; loc.stored_len];
        file.read_exact_at(&mut stored, loc.payload_offset)
            .map_err(|e| {
                Error::corrupt(format!(
                    "pack {} cannot be read at offset {}: {e}",
                    loc.pack.short(),
                    loc.payload_offset
                ))
            })?;
        let damaged = |e: std::io::Error| {
            Error::corrupt(format!(
                "frame at offset {} of pack {} does not decompress: {e}",
                loc.payload_offset,
                loc.pack.short()
            ))
        };
        let raw = match loc.codec {
            Codec::None => stored,
            Codec::Zstd => {
                buf.clear();
                buf.try_reserve(loc.raw_len).map_err(too_large)?;
                DCTX.with_borrow_mut(|dctx| {
                    let dctx = match dctx {
                        Some(d) => d,
                        None => dctx.insert(zstd::bulk::Decompressor::new()?),
                    };
                    dctx.decompress_to_buffer(&stored, &mut buf)
                })
                .map_err(damaged)?;
                buf
            }
            Codec::ZstdDelta => {
                let base_id = loc
                    .base
                    .ok_or_else(|| Error::corrupt("delta frame without a base"))?;
                let base = self.object(&base_id)?;
                let mut out = Vec::new();
                out.try_reserve(loc.raw_len).map_err(too_large)?;
                crate::pack::compress::decompress_delta(&base, &stored, out).map_err(damaged)?
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
    fn object_at(&self, id: &ChunkId, mut loc: Location) -> Result<Object> {
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

impl Drop for Store {
    /// The caches are freed on another thread (`dispose`); the index is closed on this one, so
    /// its WAL is checkpointed by the time the store is gone.
    fn drop(&mut self) {
        fn take<K: std::hash::Hash + Eq, V>(m: &mut Mutex<LruCache<K, V>>) -> LruCache<K, V> {
            std::mem::replace(
                m.get_mut().unwrap_or_else(|e| e.into_inner()),
                LruCache::unbounded(),
            )
        }
        let frames = std::mem::replace(&mut self.frames, Frames::new(0));
        let dirs = std::mem::replace(&mut self.dirs, DirCache::new(0));
        dispose((
            frames,
            dirs,
            take(&mut self.locations),
            take(&mut self.packs),
        ));
    }
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
}

/// Whether the store has an index. An empty `cellar.db` with no write-ahead log beside it
/// holds nothing (its first page never reached the disk, or it was cut), and is no index:
/// opened, it would become a new, empty one, which does not know the packs.
fn has_index(root: &Path) -> bool {
    let size = |name: &str| {
        fs::metadata(root.join(name))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    match size(layout::DB_FILE) {
        None => false,
        Some(0) => size(&format!("{}-wal", layout::DB_FILE)).unwrap_or(0) > 0,
        Some(_) => true,
    }
}

/// Whether `packs/` holds any pack file.
fn has_pack_files(root: &Path) -> bool {
    let Ok(dirs) = fs::read_dir(root.join(layout::PACKS_DIR)) else {
        return false;
    };
    dirs.flatten().any(|d| {
        fs::read_dir(d.path()).is_ok_and(|files| {
            files
                .flatten()
                .any(|f| f.file_name().to_string_lossy().ends_with(".pack"))
        })
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::gc::GcOptions;
    use crate::ingest::{IngestInput, IngestOptions};

    /// A GNU tar stream of `files`, written under `dir`.
    fn tar_of(dir: &Path, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = std::process::Command::new("tar");
        tar.arg("-C").arg(dir).args(["--format=gnu", "-cf", "-"]);
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
            tar.arg(name);
        }
        let out = tar.output().expect("run tar");
        assert!(out.status.success(), "tar failed");
        out.stdout
    }

    fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| crate::fuzzing::xorshift(&mut seed) as u8)
            .collect()
    }

    /// The race gc's repack makes with a reader: the reader looks a chunk up, gc moves the
    /// chunk's live objects to a new pack and unlinks the old one, then the reader opens the
    /// old pack. The reader must look the chunk up again, not report damage.
    #[test]
    fn a_read_from_a_pack_gc_just_repacked_finds_the_chunk_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let small = noise(3000, 1); // under the smallest chunk: one chunk
        let big = noise(3 << 20, 2);
        let src = tempfile::tempdir().unwrap();
        let ingest = |name: &str, files: &[(&str, &[u8])]| {
            let stream = tar_of(src.path(), files);
            store
                .ingest(
                    IngestInput::stream(Cursor::new(stream)),
                    IngestOptions::new(name),
                    || Ok(()),
                )
                .unwrap()
                .snapshot
        };
        // `small` and `big` share a pack; then `keep` needs only `small` from it.
        let gone = ingest("gone", &[("small", &small), ("big", &big)]);
        ingest("keep", &[("small", &small)]);
        let id = ChunkId::of(&small);
        let reader = Store::open(dir.path()).unwrap();
        let stale = reader.locate(&id).unwrap();

        store.forget(&[gone.id], &|_| {}).unwrap();
        let report = store
            .gc(
                &GcOptions {
                    dry_run: false,
                    grace_secs: 0,
                },
                &|_| {},
            )
            .unwrap();
        assert!(report.packs_repacked >= 1, "{report:?}");
        assert!(!layout::pack_path(dir.path(), &stale.pack).exists());

        let obj = reader.object_at(&id, stale).unwrap();
        assert!(obj[..] == small[..]);
    }
}
