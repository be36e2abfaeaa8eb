//! An ingest's scratch space: a temporary SQLite file for state that grows with the stream
//! (the tree's nodes, the ids of new chunks), so memory stays bounded whatever its size.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Error, Result};

pub struct Scratch {
    pub conn: Connection,
    _file: tempfile::TempPath,
}

impl Scratch {
    pub fn new(tmp_dir: &Path) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(&format!("{}-scratch-", std::process::id()))
            .suffix(".db")
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io(tmp_dir, e))?
            .into_temp_path();
        let conn = Connection::open(&file)?;
        // Nothing here outlives the ingest: no journal, no syncs, and one transaction for the
        // whole run (never committed) so statements take no locks.
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384;
             CREATE TABLE m (dir BLOB NOT NULL, name BLOB NOT NULL, node BLOB NOT NULL,
                             ino INTEGER NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID;
             CREATE TABLE q (id BLOB PRIMARY KEY, depth INTEGER NOT NULL) WITHOUT ROWID;
             BEGIN;",
        )?;
        Ok(Scratch { conn, _file: file })
    }
}
