//! What the index `repair-index` replaces still says: whether it is readable, which snapshots
//! it lists, and whether a process is ingesting into it or reading through it (then the
//! repair waits for them, since they would go on with the old index).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::ids::PackId;
use crate::layout;
use crate::process::Owner;
use crate::store::Store;

/// The snapshots (hex id, name) an index file lists, as far as it can be read: none for an
/// index that is gone or too damaged to say.
pub(super) fn listed_snapshots(db: &Path) -> Vec<(String, String)> {
    let read = || -> rusqlite::Result<Vec<(String, String)>> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut stmt = conn.prepare("SELECT id, name FROM snapshots")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    if !db.is_file() {
        return Vec::new();
    }
    read().unwrap_or_default()
}

/// The packs the index at `root` names, as far as it can be read: none for an index that is
/// gone or too damaged to say.
pub(super) fn listed_packs(root: &Path) -> Vec<PackId> {
    let read = || -> rusqlite::Result<Vec<Vec<u8>>> {
        let conn = rusqlite::Connection::open_with_flags(
            root.join(layout::DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut stmt = conn.prepare("SELECT name FROM packs")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    };
    read()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| PackId::from_slice(&name))
        .collect()
}

/// The pack files the index at `root` lists that are not there.
pub(super) fn missing_listed_packs(root: &Path) -> Vec<PathBuf> {
    listed_packs(root)
        .iter()
        .map(|id| layout::pack_path(root, id))
        .filter(|path| matches!(path.try_exists(), Ok(false)))
        .collect()
}

/// Whether `root` has an index SQLite can open and finds no damage in.
pub(super) fn readable_index(root: &Path) -> bool {
    root.join(layout::DB_FILE).is_file()
        && Store::open(root)
            .and_then(|s| s.db().integrity_problems(1))
            .is_ok_and(|problems| problems.is_empty())
}

/// An ingest in progress holds index state the rebuild would not see (and would commit into
/// the old index): its `tmp/PID-…` files name a live process.
pub(super) fn refuse_if_busy(root: &Path, command: &str) -> Result<()> {
    let tmp = root.join(layout::TMP_DIR);
    for f in fs::read_dir(&tmp).at(&tmp)?.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let Some(owner) = Owner::of_file_name(&name) else {
            continue;
        };
        let pid = owner.pid;
        if !owner.is_me() && owner.alive() {
            return Err(Error::io(
                f.path(),
                io::Error::other(format!(
                    "process {pid} is writing to the store (an ingest in progress); let it \
                     finish, then run {command} again (remove this file if process {pid} \
                     is not cellar)"
                )),
            ));
        }
    }
    Ok(())
}

/// A reader (a mount, `serve`, an export) goes on reading through the index it opened, which
/// the rebuild moves aside, and pins what it reads there, which the new index would not know:
/// gc could then take a forgotten snapshot from under it. So the leases of live processes in
/// the old index refuse the rebuild. An index too damaged to tell names no one.
pub(super) fn refuse_if_read(root: &Path, command: &str) -> Result<()> {
    let path = root.join(layout::DB_FILE);
    if !path.exists() {
        return Ok(());
    }
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    };
    let reader = open()
        .and_then(|conn| live_lease(&conn))
        .unwrap_or_default();
    refuse_reader(&path, reader, command)
}

/// The first lease in the index `conn` reads held by a live process other than this one: its
/// pid and what holds it.
pub(super) fn live_lease(conn: &rusqlite::Connection) -> rusqlite::Result<Option<(i64, String)>> {
    // Leases before schema 5 have no holder (only ingests took them), and before schema 6 no
    // process beside the pid.
    let mut query = conn
        .prepare("SELECT pid, holder, process FROM leases")
        .or_else(|_| conn.prepare("SELECT pid, holder, NULL FROM leases"))
        .or_else(|_| conn.prepare("SELECT pid, 'ingest', NULL FROM leases"))?;
    let rows = query.query_map([], |r| {
        let owner = Owner::of_lease(r.get(0)?, r.get::<_, Option<String>>(2)?.as_deref());
        Ok((owner, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (owner, holder) = row?;
        if !owner.is_me() && owner.alive() {
            return Ok(Some((owner.pid, holder)));
        }
    }
    Ok(None)
}

/// The refusal for a process reading (or ingesting) through the index at `path`.
pub(super) fn refuse_reader(
    path: &Path,
    reader: Option<(i64, String)>,
    command: &str,
) -> Result<()> {
    match reader {
        None => Ok(()),
        Some((pid, holder)) => Err(Error::io(
            path,
            io::Error::other(format!(
                "process {pid} ({holder}) is reading the store through this index; end it \
                 (`fusermount3 -u` for a mount), then run {command} again"
            )),
        )),
    }
}
