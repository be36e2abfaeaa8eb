//! The SQLite index: schema, migrations and the one way to write (an immediate transaction).
//!
//! The index is a cache of what the packs hold: every row can be rebuilt by scanning packs.
//!
//! A store on a read-only filesystem (a backup disk mounted `ro`, a snapshot of a volume) is
//! opened read-only: SQLite's `immutable` mode, which needs no `-wal` or `-shm` file, with the
//! caches readers fill (`CACHE_TABLES`) shadowed by temp copies. Readers then work as usual;
//! anything that writes to the store fails with `Error::ReadOnly`. An index whose `-wal` still
//! holds commits (a copy or volume snapshot taken while a mount or `serve` had it open) is
//! read from a private copy of both files, since `immutable` would not see them.
//!
//! A store on a full filesystem is opened the same way when the normal open fails for want of
//! space (SQLite cannot make its `-shm`): the data is all there, and a full backup disk is
//! where a restore is most needed. Writers fail with `Error::Full`. When the `-shm` is there
//! (left by the writer that filled the disk, whose checkpoint could not grow the index, or
//! held by a process that has the index open) the index opens as usual, so its reads take
//! SQLite's locks: a copy made beside a live writer can mix pages of two moments. Writers
//! are then refused as full by `writable` (under 64 KiB free), and a reader whose lease
//! cannot be written reads without one (`ReadLease`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u32 = 6;

/// SQLite's page cache per connection, in KiB (negative: a size, not a page count), taken as
/// pages are read. Readers look chunks up by id, all over the index: with SQLite's 2 MiB
/// default, a full read of a 50,000-file mount read 65,000 pages back from the file.
const CACHE_SIZE: i64 = -16384;

/// The oldest schema a read-only store can be read at, since it cannot be migrated: schema 5
/// adds only what leases use, and a read-only store needs no leases (no gc can run on it).
const READ_ONLY_MIN_SCHEMA: u32 = 4;

/// The schema that added readers' pins.
const PINS_SCHEMA: u32 = 5;

/// Tables that readers write to as caches (OCI digests, configs and manifests).
const CACHE_TABLES: &[&str] = &["layer_digests", "image_blobs"];

/// Schema per version; entry `i` migrates from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE packs (
    id      INTEGER PRIMARY KEY,
    name    BLOB NOT NULL UNIQUE,      -- PackId: blake3 of the file
    size    INTEGER NOT NULL,
    created INTEGER NOT NULL           -- unix seconds
);
-- A frame is one record of a pack: chunks compressed together.
CREATE TABLE frames (
    id         INTEGER PRIMARY KEY,
    pack       INTEGER NOT NULL REFERENCES packs(id),
    offset     INTEGER NOT NULL,       -- of the payload, in the pack file
    stored_len INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    codec      INTEGER NOT NULL,
    base       BLOB                    -- delta frames: the dictionary chunk
);
CREATE INDEX frames_pack ON frames(pack);
CREATE TABLE chunks (
    id     BLOB PRIMARY KEY,           -- ChunkId: blake3 of the raw bytes
    frame  INTEGER NOT NULL,
    offset INTEGER NOT NULL,           -- in the frame's raw bytes
    len    INTEGER NOT NULL,
    kind   INTEGER NOT NULL,
    depth  INTEGER NOT NULL DEFAULT 0  -- length of the delta chain behind it
) WITHOUT ROWID;
CREATE TABLE snapshots (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order
    id            TEXT NOT NULL UNIQUE,               -- hex SnapshotId
    name          TEXT NOT NULL,
    parent        TEXT,
    created       TEXT NOT NULL,                      -- RFC 3339 UTC
    stream_len    INTEGER NOT NULL,
    stream_sha256 TEXT NOT NULL,
    members       INTEGER NOT NULL,
    added_bytes   INTEGER NOT NULL,
    root          BLOB NOT NULL,                      -- encoded list of pieces
    labels        TEXT NOT NULL                       -- JSON object
);
CREATE INDEX snapshots_name ON snapshots(name, seq);
"#,
    r#"
-- The snapshot's tree: its encoded root node (NULL for snapshots made before trees).
ALTER TABLE snapshots ADD COLUMN tree BLOB;
"#,
    r#"
-- gc (FORMAT §15): ingest leases, chunks condemned by gc but still readable, the gc epoch.
CREATE TABLE leases (
    id            INTEGER PRIMARY KEY,
    pid           INTEGER NOT NULL,
    started_epoch INTEGER NOT NULL,    -- gc_epoch when the ingest started
    started       INTEGER NOT NULL     -- unix seconds
);
CREATE TABLE condemned (
    id     BLOB PRIMARY KEY,
    frame  INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    len    INTEGER NOT NULL,
    kind   INTEGER NOT NULL,
    depth  INTEGER NOT NULL DEFAULT 0,
    epoch  INTEGER NOT NULL            -- the gc_epoch of the condemn step that moved it here
) WITHOUT ROWID;
CREATE INDEX condemned_frame ON condemned(frame);
CREATE INDEX chunks_frame ON chunks(frame);
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
INSERT INTO meta (key, value) VALUES ('gc_epoch', 0);
"#,
    r#"
-- OCI images (see the oci module): a snapshot's image settings (JSON, NULL for none), whether
-- its stream can be a layer as it is, and the digests of synthesized layers and of configs and
-- manifests, which can all be recomputed.
ALTER TABLE snapshots ADD COLUMN image TEXT;
ALTER TABLE snapshots ADD COLUMN exact_layer INTEGER NOT NULL DEFAULT 0;
CREATE TABLE layer_digests (
    key     TEXT PRIMARY KEY,          -- LayerKey: synthesis version, snapshots, codec
    digest  TEXT NOT NULL,             -- sha256:... of the stored (compressed) bytes
    size    INTEGER NOT NULL,
    diff_id TEXT NOT NULL              -- sha256:... of the uncompressed tar
);
CREATE INDEX layer_digests_digest ON layer_digests(digest);
CREATE TABLE image_blobs (
    digest     TEXT PRIMARY KEY,       -- configs and manifests
    media_type TEXT NOT NULL,
    bytes      BLOB NOT NULL,
    snapshot   TEXT NOT NULL           -- the image's snapshot: gone with it
);
"#,
    r#"
-- Readers take leases too (FORMAT §15.4): what holds each one, for gc's report, and the
-- snapshots each reader pins, copied whole so that gc can walk them, and readers find them,
-- after they are forgotten.
ALTER TABLE leases ADD COLUMN holder TEXT NOT NULL DEFAULT 'ingest';
CREATE TABLE pins (
    lease         INTEGER NOT NULL,    -- leases.id of the reader
    seq           INTEGER NOT NULL,    -- the snapshot's snapshots.seq
    id            TEXT NOT NULL,       -- the rest as in snapshots
    name          TEXT NOT NULL,
    parent        TEXT,
    created       TEXT NOT NULL,
    stream_len    INTEGER NOT NULL,
    stream_sha256 TEXT NOT NULL,
    members       INTEGER NOT NULL,
    added_bytes   INTEGER NOT NULL,
    root          BLOB NOT NULL,
    labels        TEXT NOT NULL,
    tree          BLOB,
    image         TEXT,
    exact_layer   INTEGER NOT NULL,
    PRIMARY KEY (lease, id)
) WITHOUT ROWID;
"#,
    r#"
-- Who holds a lease beyond its pid, which a later process or one in another pid namespace may
-- have too: `START.NS.BOOT` (process::Owner). NULL in rows of older writers.
ALTER TABLE leases ADD COLUMN process TEXT;
"#,
];

/// Why a store was opened for reading only: writers are refused with the reason.
#[derive(Clone, Debug)]
enum ReadOnly {
    /// The store's directory is on a read-only filesystem.
    Filesystem(PathBuf),
    /// The store's filesystem had no space for SQLite's shared-memory file.
    Full(PathBuf),
}

impl ReadOnly {
    fn error(&self) -> Error {
        match self {
            ReadOnly::Filesystem(dir) => Error::ReadOnly(dir.clone()),
            ReadOnly::Full(dir) => Error::Full(dir.clone()),
        }
    }
}

pub struct Db {
    conn: Connection,
    /// Set when the store could be opened only for reading.
    read_only: Option<ReadOnly>,
    /// The index file's (device, inode) as it was just before it was opened: `repair-index`
    /// puts a new file in its place (`Store::follow_index`).
    file: Option<(u64, u64)>,
    /// The store's directory, whose filesystem `not_full` checks for room.
    dir: PathBuf,
    /// A read-only store's index and WAL, copied where SQLite can read the WAL: removed after
    /// the connection closes (fields drop in order).
    _copy: Option<tempfile::TempDir>,
}

impl Db {
    /// Open (and with `create`, create) the index, migrating it to the current schema; on a
    /// read-only filesystem, open it read-only.
    pub fn open(path: &Path, create: bool) -> Result<Db> {
        // Read before the open: if the file is swapped in between, the next check reopens once
        // more rather than missing the swap.
        let file = file_id(path);
        if let Some(dir) = path.parent().filter(|d| on_read_only_fs(d)) {
            if create {
                return Err(Error::ReadOnly(dir.to_path_buf()));
            }
            return Self::open_read_only(path, ReadOnly::Filesystem(dir.to_path_buf()), file);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        if create && on_full_fs(dir) && path.exists() {
            // A snapshot into a full store (whose `-shm` is there, so the open below would
            // succeed) is refused saying why, not by the first pack it cannot write.
            return Err(Error::Full(dir.to_path_buf()));
        }
        match Self::open_writable(path, create, file) {
            Err(e) if e.is_out_of_space() => {
                match on_full_fs(dir) {
                    false => Err(e),
                    // A writer is refused saying why, not with SQLite's "disk I/O error".
                    true if create => Err(Error::Full(dir.to_path_buf())),
                    true => Self::open_read_only(path, ReadOnly::Full(dir.to_path_buf()), file),
                }
            }
            opened => opened,
        }
    }

    fn open_writable(path: &Path, create: bool, file: Option<(u64, u64)>) -> Result<Db> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)?;
        // Writers queue behind each other's short commits; readers never wait (WAL).
        conn.busy_timeout(std::time::Duration::from_secs(600))?;
        if create {
            let tables: i64 =
                conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables == 0 {
                // Only before the first table: free pages can then be handed back to the
                // filesystem by `PRAGMA incremental_vacuum` (gc, FORMAT §15.3).
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            }
        }
        // Entering WAL mode needs a moment alone with the file and does not wait on the busy
        // handler; a writer creating the store may hold it, so retry briefly.
        let mut tries = 0;
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => break other?,
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)?;
        let mut db = Db {
            conn,
            read_only: None,
            // A new store's file is the one just made.
            file: file.or_else(|| file_id(path)),
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            _copy: None,
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        self.immediate(|tx| {
            // Re-read inside the lock: another process may have migrated meanwhile.
            let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            for sql in &MIGRATIONS[version as usize..] {
                tx.execute_batch(sql)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        })
    }

    /// `immutable`: SQLite takes no locks and keeps no `-shm` (nothing can change the file on a
    /// read-only filesystem). The caches get temp tables of the same shape, which unqualified
    /// names find first, so readers fill them in memory.
    ///
    /// Commits still in the `-wal` are not in the file itself, and `immutable` ignores the WAL;
    /// reading it takes a `-shm` SQLite can write. So such an index is copied with its WAL to
    /// a private directory and read there (the copy is gone when the store is closed).
    fn open_read_only(path: &Path, why: ReadOnly, file: Option<(u64, u64)>) -> Result<Db> {
        let (ReadOnly::Filesystem(dir) | ReadOnly::Full(dir)) = &why;
        let wal = sibling(path, "-wal");
        let copy = if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            let tmp = tempfile::Builder::new()
                .prefix("cellar-index-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let to = tmp.path().join("cellar.db");
            std::fs::copy(path, &to).map_err(|e| Error::io(path, e))?;
            std::fs::copy(&wal, sibling(&to, "-wal")).map_err(|e| Error::io(&wal, e))?;
            Some(tmp)
        } else {
            None
        };
        let uri = match &copy {
            Some(tmp) => format!(
                "file:{}?mode=ro",
                uri_escape(tmp.path().join("cellar.db").as_os_str().as_bytes())
            ),
            None => format!(
                "file:{}?immutable=1",
                uri_escape(path.as_os_str().as_bytes())
            ),
        };
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(Error::UnsupportedVersion {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < READ_ONLY_MIN_SCHEMA {
            return Err(Error::ReadOnlyOldSchema {
                path: dir.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)?;
        if found < PINS_SCHEMA {
            // No pins before schema 5: an empty stand-in, for readers that look there.
            conn.execute_batch(
                "CREATE TEMP TABLE pins AS SELECT 0 AS lease, * FROM main.snapshots WHERE 0",
            )?;
        }
        for table in CACHE_TABLES {
            let sql: String = conn.query_row(
                "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            let temp = sql.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1);
            conn.execute_batch(&format!(
                "{temp}; INSERT INTO temp.{table} SELECT * FROM main.{table};"
            ))?;
        }
        Ok(Db {
            conn,
            dir: dir.clone(),
            read_only: Some(why),
            file,
            _copy: copy,
        })
    }

    /// True when the store was opened for reading only (a read-only or a full filesystem).
    pub fn read_only(&self) -> bool {
        self.read_only.is_some()
    }

    /// `Error::Full` if the store was opened for reading only because its filesystem is full,
    /// or the filesystem is full now (under 64 KiB free): for readers that run on (a mount, a
    /// server), which hold a lease in the index (opened `immutable`, the index would neither
    /// record it nor see what writers commit once space is freed), and for the commands that
    /// change the store (`rm`, `prune`, `gc`, `repair-packs`), to say so before they begin.
    pub fn not_full(&self) -> Result<()> {
        match &self.read_only {
            Some(why @ ReadOnly::Full(_)) => Err(why.error()),
            Some(ReadOnly::Filesystem(_)) => Ok(()),
            None if on_full_fs(&self.dir) => Err(Error::Full(self.dir.clone())),
            None => Ok(()),
        }
    }

    /// `Error::ReadOnly` (or `Error::Full`) if the store was opened for reading only: for
    /// writers to check before they take the commit lock. (An ingest that leaves the disk all
    /// but full still commits: its index rows may fit in the WAL's room.)
    pub fn writable(&self) -> Result<()> {
        match &self.read_only {
            Some(why) => Err(why.error()),
            None => Ok(()),
        }
    }

    /// The (device, inode) of the file this connection opened.
    pub fn file(&self) -> Option<(u64, u64)> {
        self.file
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// SQLite's `integrity_check` (at most `max` findings; empty when the file is sound):
    /// pages, b-trees, and every index against its table. SQLite keeps no checksums, so a
    /// damaged page can read as valid rows; an index that disagrees with its table is how
    /// most such damage shows.
    pub fn integrity_problems(&self, max: u32) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(&format!("PRAGMA main.integrity_check({max})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let lines = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.into_iter().filter(|l| l != "ok").collect())
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction: it holds the write lock from the start, so
    /// it never fails half-way on a lock upgrade. Commits if `f` succeeds.
    /// On a read-only store only the temp caches can be written: a write to the index itself
    /// fails with `Error::ReadOnly` (or `Error::Full`).
    pub fn immediate<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let read_only = self.read_only.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx).and_then(|out| {
            tx.commit()?;
            Ok(out)
        });
        match (out, read_only) {
            (Err(Error::Db(rusqlite::Error::SqliteFailure(e, _))), Some(why))
                if e.code == rusqlite::ErrorCode::ReadOnly =>
            {
                Err(why.error())
            }
            (out, _) => out,
        }
    }

    /// [`Db::immediate`] for rows whose loss in a power failure costs nothing (a lease: its
    /// process would be gone too), committed without waiting for the disk. The next synced
    /// commit syncs them along (the WAL is written in order); other processes see them at once,
    /// as they see any commit.
    pub fn immediate_unsynced<T>(
        &mut self,
        f: impl FnOnce(&Transaction) -> Result<T>,
    ) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = self.immediate(f);
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }
}

/// A file's (device, inode), or None if it is not there.
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Is `dir` on a filesystem mounted read-only?
pub(crate) fn on_read_only_fs(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0
    }
}

/// True when `dir`'s filesystem has no room left for SQLite's `-shm` (32 KiB) for this user.
pub(crate) fn on_full_fs(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0
            && (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 64 << 10
    }
}

/// A path as the path part of an SQLite URI: everything but unreserved bytes %-escaped.
/// `path` with `suffix` added to its file name (`cellar.db-wal`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn uri_escape(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
