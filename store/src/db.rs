//! The SQLite index: schema, migrations and the one way to write (an immediate transaction).
//!
//! The index is a cache of what the packs hold: every row can be rebuilt by scanning packs.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u32 = 5;

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
];

pub struct Db {
    conn: Connection,
}

impl Db {
    /// Open (and with `create`, create) the index, migrating it to the current schema.
    pub fn open(path: &Path, create: bool) -> Result<Db> {
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
        let mut db = Db { conn };
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

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction: it holds the write lock from the start, so
    /// it never fails half-way on a lock upgrade. Commits if `f` succeeds.
    pub fn immediate<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}
