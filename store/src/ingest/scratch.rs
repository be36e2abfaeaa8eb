//! An ingest's scratch space: a temporary SQLite file for state that grows with the stream
//! (the tree's nodes, the ids of new chunks), so memory stays bounded whatever its size.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::process::Owner;

pub struct Scratch {
    tmp_dir: PathBuf,
    /// Made on first use: only a stream that outgrows the in-memory budgets needs it, and
    /// making it (a file, two tables) and removing it cost every ingest about 1 ms.
    db: OnceCell<(Connection, tempfile::TempPath)>,
}

impl Scratch {
    /// Scratch space whose file, when there is one, is in `tmp_dir`.
    pub fn new(tmp_dir: &Path) -> Self {
        Scratch {
            tmp_dir: tmp_dir.to_path_buf(),
            db: OnceCell::new(),
        }
    }

    /// The scratch database, made now if it was not yet.
    pub fn conn(&self) -> Result<&Connection> {
        if let Some((conn, _)) = self.db.get() {
            return Ok(conn);
        }
        let made = create(&self.tmp_dir)?;
        Ok(&self.db.get_or_init(|| made).0)
    }
}

fn create(tmp_dir: &Path) -> Result<(Connection, tempfile::TempPath)> {
    let file = tempfile::Builder::new()
        .prefix(&format!("{}-scratch-", Owner::me().file_tag()))
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
                         ino INTEGER NOT NULL, seq INTEGER NOT NULL,
                         PRIMARY KEY (dir, name)) WITHOUT ROWID;
         CREATE TABLE q (id BLOB PRIMARY KEY, depth INTEGER NOT NULL) WITHOUT ROWID;
         BEGIN;",
    )?;
    // The connection is dropped before the path (tuple fields drop in order): the file is
    // closed, then removed.
    Ok((conn, file))
}
