//! Where things live inside a store directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};
use crate::ids::PackId;
use crate::process::Owner;

pub const DB_FILE: &str = "cellar.db";
/// A rebuilt index, whole and synced, on its way to `DB_FILE` (`repair-index`): where there is
/// no `DB_FILE`, opening the store puts it in place (`Store::open`).
pub const DB_NEW: &str = "cellar.db.new";
pub const LOCK_FILE: &str = "lock";
pub const PACKS_DIR: &str = "packs";
/// Files being written; a name starts with the writer's `Owner::file_tag` (its pid, start
/// time and pid namespace) so `gc` can tell the dead.
pub const TMP_DIR: &str = "tmp";
/// Damaged pack files `repair-packs` salvaged, set aside under their names: no command reads
/// or deletes them.
pub const DAMAGED_DIR: &str = "damaged";

/// `damaged/ID.retired`: left by `repair-packs` for each pack it switched the index away from
/// (FORMAT §14.1). A file of that name found in `packs/` again (a disk that was not mounted, a
/// backup put back) counts for nothing but its chunks: its snapshot records may be of
/// snapshots forgotten since, whose tombstones gc dropped once no pack held those records.
/// Outside the index, so `repair-index` sees it too.
pub fn retired_mark(root: &Path, id: &PackId) -> PathBuf {
    root.join(DAMAGED_DIR).join(format!("{}.retired", id.hex()))
}

/// Whether `repair-packs` retired pack `id` (its index may name it again only if an old copy
/// of the index was put back; callers that have an index ask it first).
pub fn is_retired(root: &Path, id: &PackId) -> bool {
    retired_mark(root, id).exists()
}

pub fn pack_path(root: &Path, id: &PackId) -> PathBuf {
    let hex = id.hex();
    root.join(PACKS_DIR)
        .join(&hex[..2])
        .join(format!("{hex}.pack"))
}

/// `tmp/PID-committing-PACKID`: made by an ingest just before it seals its last pack (the one
/// holding its snapshot record), removed (`tmp/` synced) just before its COMMIT. A marker
/// whose process is gone is of an ingest killed while committing, whose commit never began:
/// the pack it names is that ingest's leftover (FORMAT §15.3). Outside the index, so a copy
/// of the index put back cannot bring back one that was removed.
pub fn committing_marker(root: &Path, pack: &PackId) -> PathBuf {
    root.join(TMP_DIR).join(format!(
        "{}-committing-{}",
        Owner::me().file_tag(),
        pack.hex()
    ))
}

/// The process and the pack of a `committing_marker` file name.
pub(crate) fn parse_committing_marker(name: &str) -> Option<(Owner, PackId)> {
    let (_, pack) = name.split_once("-committing-")?;
    Some((Owner::of_file_name(name)?, PackId::from_hex(pack)?))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn new_temp_path(root: &Path, ext: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    root.join(TMP_DIR).join(format!(
        "{}-{:x}-{n}.{ext}",
        Owner::me().file_tag(),
        now_nanos()
    ))
}

/// 16 bytes no other writer (process, thread, moment) will pick.
pub fn nonce() -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&now_nanos().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    h.update(&(&h as *const _ as usize).to_le_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// fsync a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
