//! Phase 1 of `verify`: the index against itself and the pack files, and every snapshot's
//! recipe and tree against the index. Also the notes about leftovers.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use super::{reason, Bad, Verifier};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::layout;
use crate::list::ListRef;
use crate::object::{Object, ObjectSource};
use crate::pack::format::PACK_HEADER_LEN;
use crate::pack::{ChunkKind, Codec};
use crate::piece;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::Node;

/// An indexed pack.
pub(super) struct PackRow {
    pub row: i64,
    pub id: PackId,
    pub size: u64,
    /// The file's length, if it is there.
    pub on_disk: Option<u64>,
}

/// Smallest header a record can have: the fixed part and the check.
const MIN_RECORD_HEADER: u64 = 28;

/// `packs/ab/ab….pack` for messages.
pub(super) fn pack_name(root: &Path, id: &PackId) -> String {
    let path = layout::pack_path(root, id);
    path.strip_prefix(root)
        .unwrap_or(&path)
        .display()
        .to_string()
}

/// The packs, frames and chunks tables: every indexed pack file exists with its size, every
/// frame lies in an indexed pack, every chunk in an indexed frame, every delta's base is
/// indexed. Chunks that cannot be read because of what is wrong become bad.
pub(super) fn check_tables(v: &mut Verifier) -> Result<Vec<PackRow>> {
    let store = v.store;
    let root = store.root().to_path_buf();
    let rows: Vec<(i64, Vec<u8>, i64)> = {
        let db = store.db();
        let mut stmt = db
            .conn()
            .prepare("SELECT id, name, size FROM packs ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut packs = Vec::with_capacity(rows.len());
    for (row, name, size) in rows {
        let Some(id) = PackId::from_slice(&name) else {
            v.problem(format!(
                "packs row {row} has a malformed name ({} bytes, not 32)",
                name.len()
            ));
            continue;
        };
        let path = layout::pack_path(&root, &id);
        let on_disk = match fs::metadata(&path) {
            Ok(m) => {
                if m.len() != size as u64 {
                    v.problem_at(
                        format!(
                            "pack file {} is {} bytes; the index says {size}",
                            pack_name(&root, &id),
                            m.len()
                        ),
                        id,
                        None,
                    );
                }
                Some(m.len())
            }
            Err(e) => {
                v.problem_at(
                    format!(
                        "indexed pack file {} cannot be found: {e}",
                        pack_name(&root, &id)
                    ),
                    id,
                    None,
                );
                None
            }
        };
        packs.push(PackRow {
            row,
            id,
            size: size as u64,
            on_disk,
        });
    }
    let by_row: HashMap<i64, &PackRow> = packs.iter().map(|p| (p.row, p)).collect();

    // Frames: in an indexed pack, inside its file, with a sensible codec and base.
    let mut bad_frames: HashMap<i64, Bad> = HashMap::new();
    {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT id, pack, offset, stored_len, raw_len, codec, base FROM frames ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let fid: i64 = r.get(0)?;
            let pack: i64 = r.get(1)?;
            let offset: i64 = r.get(2)?;
            let stored: i64 = r.get(3)?;
            let raw: i64 = r.get(4)?;
            let codec: i64 = r.get(5)?;
            let base: Option<Vec<u8>> = r.get(6)?;
            let Some(p) = by_row.get(&pack) else {
                bad_frames.insert(
                    fid,
                    Bad::new(format!(
                        "its record (frame {fid}) names pack row {pack}, which is not in the index"
                    )),
                );
                continue;
            };
            let at = |what: String| Bad::new(what).at(p.id, offset.max(0) as u64, None);
            let Some(file_len) = p.on_disk else {
                bad_frames.insert(fid, at("its pack file is missing".into()));
                continue;
            };
            let limit = file_len.min(p.size);
            let why = if offset < 0 || stored < 0 || raw < 0 {
                Some("the index gives its record a negative offset or length".to_string())
            } else if (offset as u64) < PACK_HEADER_LEN + MIN_RECORD_HEADER
                || offset as u64 + stored as u64 > limit
            {
                Some(format!(
                    "its record ({stored} bytes at offset {offset}) lies outside the pack file \
                     ({limit} bytes)"
                ))
            } else {
                match u8::try_from(codec).ok().and_then(Codec::from_u8) {
                    None => Some(format!("its record has an unknown codec {codec}")),
                    Some(Codec::ZstdDelta) if base.as_ref().is_none_or(|b| b.len() != 32) => {
                        Some("its delta record has no valid base".into())
                    }
                    Some(Codec::None) if stored != raw => Some(format!(
                        "its uncompressed record is stored as {stored} bytes but decodes to {raw}"
                    )),
                    _ => None,
                }
            };
            if let Some(why) = why {
                bad_frames.insert(fid, at(why));
            }
        }
    }
    // Delta bases must be indexed, or the frame cannot be decoded.
    {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT f.id, f.base, f.pack, f.offset FROM frames f
             WHERE f.codec = 2 AND f.base IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = f.base)
               AND NOT EXISTS (SELECT 1 FROM condemned c WHERE c.id = f.base)
               -- a record no row uses may outlive its base (gc swept it): harmless
               AND (EXISTS (SELECT 1 FROM chunks c WHERE c.frame = f.id)
                    OR EXISTS (SELECT 1 FROM condemned c WHERE c.frame = f.id))",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let fid: i64 = r.get(0)?;
            let base: Vec<u8> = r.get(1)?;
            let pack: i64 = r.get(2)?;
            let offset: i64 = r.get(3)?;
            let base = hex::encode(&base);
            let mut bad = Bad::new(format!(
                "its delta base {} is not in the index",
                &base[..base.len().min(12)]
            ));
            if let Some(p) = by_row.get(&pack) {
                bad = bad.at(p.id, offset.max(0) as u64, None);
            }
            bad_frames.entry(fid).or_insert(bad);
        }
    }
    // The chunks of bad frames are bad; a bad frame no chunk uses is a problem of its own
    // (unless its pack is missing, which is reported already).
    if !bad_frames.is_empty() {
        let mut used: HashSet<i64> = HashSet::new();
        let found: Vec<(Vec<u8>, i64, i64)> = {
            let db = store.db();
            let mut stmt = db.conn().prepare("SELECT id, frame, kind FROM chunks")?;
            let mut rows = stmt.query([])?;
            let mut found = Vec::new();
            while let Some(r) = rows.next()? {
                let frame: i64 = r.get(1)?;
                if bad_frames.contains_key(&frame) {
                    found.push((r.get(0)?, frame, r.get(2)?));
                }
            }
            found
        };
        for (id, frame, kind) in found {
            used.insert(frame);
            if let Some(id) = ChunkId::from_slice(&id) {
                let mut bad = bad_frames[&frame].clone();
                bad.kind = u8::try_from(kind).ok().and_then(ChunkKind::from_u8);
                v.bad_chunk(id, bad);
            }
        }
        let mut unused: Vec<(i64, Bad)> = bad_frames
            .into_iter()
            .filter(|(f, b)| {
                !used.contains(f)
                    && b.pack
                        .is_none_or(|p| packs.iter().any(|r| r.id == p && r.on_disk.is_some()))
            })
            .collect();
        unused.sort_by_key(|(f, _)| *f);
        for (frame, bad) in unused {
            let what = format!("record of frame {frame} (used by no chunk): {}", bad.what);
            match bad.pack {
                Some(p) => v.problem_at(what, p, bad.offset),
                None => v.problem(what),
            }
        }
    }
    // Chunk rows: a frame that exists, a range inside it, a known kind.
    /// id, frame, offset, len, kind; the frame's raw_len, pack and offset if it exists.
    type ChunkRow = (
        Vec<u8>,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<ChunkRow> = {
        let db = store.db();
        let mut stmt = db.conn().prepare(
            "SELECT c.id, c.frame, c.offset, c.len, c.kind, f.raw_len, f.pack, f.offset
             FROM chunks c LEFT JOIN frames f ON f.id = c.frame
             WHERE f.id IS NULL OR c.offset < 0 OR c.len < 0 OR c.offset + c.len > f.raw_len
                OR c.kind NOT IN (0, 1, 2, 4) OR length(c.id) != 32",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, frame, offset, len, kind, raw, pack, foffset) in rows {
        let Some(id) = ChunkId::from_slice(&id) else {
            v.problem(format!(
                "chunks row {} has a malformed id ({} bytes, not 32)",
                hex::encode(&id),
                id.len()
            ));
            continue;
        };
        let ckind = u8::try_from(kind).ok().and_then(ChunkKind::from_u8);
        let mut bad = match raw {
            None => Bad::new(format!("its frame {frame} is not in the index")),
            Some(_) if ckind.is_none() || kind == ChunkKind::Snapshot as i64 => {
                Bad::new(format!("the index gives it an invalid kind {kind}"))
            }
            Some(raw) => Bad::new(format!(
                "the index places it at {offset}..{} of a record of {raw} bytes",
                offset + len
            )),
        };
        if let (Some(p), Some(o)) = (pack.and_then(|p| by_row.get(&p)), foffset) {
            bad = bad.at(p.id, o.max(0) as u64, ckind);
        }
        v.bad_chunk(id, bad);
    }
    // Records whose chunks are all indexed elsewhere: harmless, reclaimable.
    let (dups, dup_bytes): (i64, i64) = store.db().conn().query_row(
        "SELECT COUNT(*), COALESCE(SUM(stored_len), 0) FROM frames
         WHERE id NOT IN (SELECT frame FROM chunks)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if dups > 0 {
        v.notes.push(format!(
            "{dups} record(s) ({dup_bytes} bytes) in indexed packs hold only copies of chunks \
             indexed elsewhere (written twice by concurrent ingests); reclaimable by gc"
        ));
    }
    Ok(packs)
}

/// Every snapshot row, in commit order. A row that does not parse is a problem and is left
/// out of the walks.
pub(super) fn load_snapshots(v: &mut Verifier) -> Result<Vec<Snapshot>> {
    type Parsed = std::result::Result<Snapshot, (String, String)>;
    let parsed: Vec<Parsed> = {
        let db = v.store.db();
        let mut stmt = db.conn().prepare(
            "SELECT id, name, parent, created, stream_len, stream_sha256, members, added_bytes,
                    labels, root, tree
             FROM snapshots ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let id: String = r.get(0)?;
            let parent: Option<String> = r.get(2)?;
            let labels: String = r.get(8)?;
            let root: Vec<u8> = r.get(9)?;
            let tree: Option<Vec<u8>> = r.get(10)?;
            let fail = |what: String| (id.clone(), what);
            let parse = || -> Parsed {
                Ok(Snapshot {
                    id: SnapshotId::from_hex(&id).ok_or_else(|| fail("malformed id".into()))?,
                    name: r.get(1).map_err(|e| fail(e.to_string()))?,
                    parent: match &parent {
                        Some(p) => Some(
                            SnapshotId::from_hex(p)
                                .ok_or_else(|| fail("malformed parent".into()))?,
                        ),
                        None => None,
                    },
                    created: r.get(3).map_err(|e| fail(e.to_string()))?,
                    stream_len: r.get::<_, i64>(4).map_err(|e| fail(e.to_string()))? as u64,
                    stream_sha256: r.get(5).map_err(|e| fail(e.to_string()))?,
                    members: r.get::<_, i64>(6).map_err(|e| fail(e.to_string()))? as u64,
                    added_bytes: r.get::<_, i64>(7).map_err(|e| fail(e.to_string()))? as u64,
                    labels: serde_json::from_str(&labels)
                        .map_err(|e| fail(format!("malformed labels: {e}")))?,
                    root: ListRef::from_bytes(&root)
                        .map_err(|e| fail(format!("malformed recipe: {}", reason(&e))))?,
                    tree: tree
                        .map(|t| Node::from_bytes(&t))
                        .transpose()
                        .map_err(|e| fail(format!("malformed tree: {}", reason(&e))))?,
                })
            };
            Ok(parse())
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut snaps = Vec::with_capacity(parsed.len());
    for p in parsed {
        match p {
            Ok(s) => snaps.push(s),
            Err((id, what)) => v.problem(format!("snapshot row {id}: {what}")),
        }
    }
    Ok(snaps)
}

/// An `ObjectSource` that remembers the last object asked for, so an error in a list walk can
/// be pinned on a chunk, and that refuses (without reading) the chunks `refuse` names.
pub(super) struct Probe<'a> {
    store: &'a Store,
    refuse: Option<&'a dyn Fn(&ChunkId) -> bool>,
    last: Cell<Option<ChunkId>>,
}

impl<'a> Probe<'a> {
    pub fn new(store: &'a Store, refuse: Option<&'a dyn Fn(&ChunkId) -> bool>) -> Self {
        Probe {
            store,
            refuse,
            last: Cell::new(None),
        }
    }

    /// The chunk an error of a walk through this probe is about, with the error. Index errors
    /// are not about a chunk: they end the check.
    pub fn culprit(&self, e: Error, fallback: ChunkId) -> Result<(ChunkId, Error)> {
        if let Error::Db(_) = e {
            return Err(e);
        }
        Ok((self.last.get().unwrap_or(fallback), e))
    }
}

impl ObjectSource for Probe<'_> {
    fn object(&self, id: &ChunkId) -> Result<Object> {
        self.last.set(Some(*id));
        if self.refuse.is_some_and(|f| f(id)) {
            return Err(Error::corrupt(format!("chunk {} is damaged", id.short())));
        }
        self.store.object(id)
    }
}

fn indexed(store: &Store, id: &ChunkId) -> Result<bool> {
    let db = store.db();
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
    Ok(stmt.exists([&id.0[..]])?)
}

/// What the walks have checked already (objects are shared between snapshots).
#[derive(Default)]
struct Seen {
    pieces: HashSet<ChunkId>,
    lists: HashSet<ChunkId>,
    dirs: HashSet<ChunkId>,
}

/// A chunk list: its nodes are read (verified), its data chunks must be indexed.
fn check_list(v: &mut Verifier, list: &ListRef, seen: &mut Seen) -> Result<()> {
    let store = v.store;
    match list {
        ListRef::Inline(entries) => {
            for e in entries {
                if !indexed(store, &e.id)? {
                    v.bad_chunk(e.id, Bad::new("not in the index"));
                }
            }
        }
        ListRef::Tree { root, .. } => {
            if !seen.lists.insert(root.id) {
                return Ok(());
            }
            let probe = Probe::new(store, None);
            let mut missing = Vec::new();
            let walked = list.for_each(&probe, &mut |e| {
                if !indexed(store, &e.id)? {
                    missing.push(e.id);
                }
                Ok(())
            });
            for id in missing {
                v.bad_chunk(id, Bad::new("not in the index"));
            }
            if let Err(e) = walked {
                let (id, e) = probe.culprit(e, root.id)?;
                v.bad_chunk(id, Bad::new(reason(&e)));
            }
        }
    }
    Ok(())
}

/// Every snapshot's recipe and tree name only indexed chunks, and their metadata objects read
/// back (verified).
pub(super) fn check_snapshots(v: &mut Verifier, snaps: &[Snapshot]) -> Result<()> {
    let store = v.store;
    let mut seen = Seen::default();
    for s in snaps {
        let label = format!("snapshot {} ({})", s.short_id(), s.name);
        if s.root.total_len() != s.stream_len {
            v.problem(format!(
                "{label}: its recipe adds up to {} bytes, but its stream is {}",
                s.root.total_len(),
                s.stream_len
            ));
        }
        // The recipe: piece list → pieces → items → chunk lists.
        let probe = Probe::new(store, None);
        let mut pieces = Vec::new();
        let walked = s.root.for_each(&probe, &mut |e| {
            pieces.push(e.id);
            Ok(())
        });
        if let Err(e) = walked {
            let fallback = match &s.root {
                ListRef::Tree { root, .. } => root.id,
                ListRef::Inline(_) => ChunkId([0; 32]),
            };
            let (id, e) = probe.culprit(e, fallback)?;
            v.bad_chunk(id, Bad::new(reason(&e)));
        }
        for p in pieces {
            if !seen.pieces.insert(p) {
                continue;
            }
            match store.object(&p).and_then(|o| piece::decode(&o)) {
                Ok(items) => {
                    for item in &items {
                        check_list(v, &item.chunks, &mut seen)?;
                    }
                }
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => v.bad_chunk(p, Bad::new(reason(&e))),
            }
        }
        // The tree: directory records → file chunk lists and subdirectories.
        let Some(root) = &s.tree else {
            continue;
        };
        if root.child.is_none() {
            v.problem(format!("{label}: the root of its tree is not a directory"));
            continue;
        }
        let tree = store.tree(s)?;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let id = dir.child.expect("only directories are stacked");
            if !seen.dirs.insert(id) {
                continue;
            }
            let nodes = match tree.readdir(&dir) {
                Ok(n) => n,
                Err(Error::Db(e)) => return Err(Error::Db(e)),
                Err(e) => {
                    v.bad_chunk(id, Bad::new(reason(&e)));
                    continue;
                }
            };
            for n in nodes.iter() {
                if let Some(c) = &n.content {
                    check_list(v, &c.chunks, &mut seen)?;
                }
                if n.child.is_some() {
                    stack.push(n.clone());
                }
            }
        }
    }
    Ok(())
}

/// Is a process with this pid running (as far as this host can tell)?
pub(super) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn sorted_dir(path: &Path) -> Vec<fs::DirEntry> {
    let mut v: Vec<_> = fs::read_dir(path)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    v.sort_by_key(|e| e.file_name());
    v
}

/// Notes about files no index row names: unindexed pack files and `tmp/` files.
pub(super) fn leftovers(v: &mut Verifier, packs: &[PackRow]) -> Result<()> {
    let root = v.store.root().to_path_buf();
    let indexed: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    for dir in sorted_dir(&root.join(layout::PACKS_DIR)) {
        let dname = dir.file_name().to_string_lossy().into_owned();
        if !dir.path().is_dir() {
            v.notes.push(format!(
                "{}/{dname}: not a pack directory",
                layout::PACKS_DIR
            ));
            continue;
        }
        for f in sorted_dir(&dir.path()) {
            let fname = f.file_name().to_string_lossy().into_owned();
            let rel = format!("{}/{dname}/{fname}", layout::PACKS_DIR);
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let id = fname
                .strip_suffix(".pack")
                .and_then(PackId::from_hex)
                .filter(|id| id.hex()[..2] == dname);
            match id {
                Some(id) if indexed.contains(&id) => {}
                Some(_) => v.notes.push(format!(
                    "{rel}: not in the index ({size} bytes): left by an ingest that did not \
                     commit, or one still running; reclaimable by gc"
                )),
                None => v
                    .notes
                    .push(format!("{rel}: not a pack file name ({size} bytes)")),
            }
        }
    }
    for f in sorted_dir(&root) {
        let fname = f.file_name().to_string_lossy().into_owned();
        if fname.starts_with(&format!("{}.broken-", layout::DB_FILE)) {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            v.notes.push(format!(
                "{fname}: an index moved aside by repair-index ({size} bytes); delete it when \
                 it is no longer wanted"
            ));
        }
    }
    for f in sorted_dir(&root.join(layout::TMP_DIR)) {
        let fname = f.file_name().to_string_lossy().into_owned();
        let rel = format!("{}/{fname}", layout::TMP_DIR);
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        match fname.split('-').next().and_then(|p| p.parse::<i32>().ok()) {
            Some(pid) if pid_alive(pid) => v.notes.push(format!(
                "{rel}: being written by process {pid} ({size} bytes): an ingest in progress"
            )),
            Some(pid) => v.notes.push(format!(
                "{rel}: left by process {pid}, which is gone ({size} bytes); reclaimable by gc"
            )),
            None => v
                .notes
                .push(format!("{rel}: not a cellar temp file ({size} bytes)")),
        }
    }
    Ok(())
}
