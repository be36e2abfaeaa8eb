//! A store directory: the index, the packs, and reading objects back (verified, cached).

use std::fs::{self, File};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::commit_lock::lock_file;
use crate::db::Db;
use crate::dirs::DirCache;
use crate::dispose::dispose;
use crate::error::{Error, IoContext, Result};
use crate::frames::Frames;
use crate::ids::{ChunkId, PackId};
use crate::layout;
use crate::tree::Dir;

mod read;
use read::Location;

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

pub struct Store {
    root: PathBuf,
    db: Mutex<Db>,
    /// Keyed by (pack, payload offset): gc frees `frames` row ids for reuse.
    frames: Frames,
    packs: Mutex<LruCache<PackId, Arc<read::OpenPack>>>,
    dirs: DirCache,
    /// Where chunks are, learned whenever a frame is read from its pack: one query gives the
    /// locations of all the frame's chunks, so reading a stream back costs a query per frame
    /// rather than per chunk. A location gc has since moved can only fail (every object is
    /// checked against its id), and is then looked up afresh.
    locations: Mutex<LruCache<ChunkId, Location>>,
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

    /// SQLite's `data_version`: it changes when another connection commits to the index.
    pub(crate) fn data_version(&self) -> Result<i64> {
        Ok(self
            .db()
            .conn()
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
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
