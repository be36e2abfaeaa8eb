//! The pack files `repair-index` rebuilds the index from: which there are (and which names
//! are not packs), and what each holds besides chunks (its snapshot and forget records),
//! read whole and checked against its name.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::reason;
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::layout;
use crate::list::ListRef;
use crate::pack::{ChunkKind, Codec, RecordKind};
use crate::snapshot::{Snapshot, SnapshotRecord};
use crate::tree::Node;

/// The newest snapshot record version this build reads (FORMAT §7).
const RECORD_VERSION: u32 = 2;

/// What one pack holds besides chunks.
#[derive(Default)]
pub(super) struct PackContents {
    pub(super) size: u64,
    pub(super) frames: u64,
    pub(super) entries: u64,
    pub(super) snapshots: Vec<Snapshot>,
    pub(super) forgets: Vec<SnapshotId>,
    pub(super) warnings: Vec<String>,
}

/// `packs/xx/ID.pack` files, sorted by id. Anything else there is a warning.
pub(super) fn pack_files(root: &Path, warnings: &mut Vec<String>) -> Vec<(PackId, PathBuf)> {
    let mut out = Vec::new();
    let packs = root.join(layout::PACKS_DIR);
    let mut dirs: Vec<_> = fs::read_dir(&packs)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| d.file_name());
    for d in dirs {
        let dname = d.file_name().to_string_lossy().into_owned();
        if !d.path().is_dir() {
            warnings.push(format!(
                "skipped {}/{dname}: not a pack directory",
                layout::PACKS_DIR
            ));
            continue;
        }
        let mut files: Vec<_> = fs::read_dir(d.path())
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        files.sort_by_key(|f| f.file_name());
        for f in files {
            let fname = f.file_name().to_string_lossy().into_owned();
            let id = fname
                .strip_suffix(".pack")
                .and_then(PackId::from_hex)
                .filter(|id| id.hex()[..2] == dname);
            match id {
                Some(id) => out.push((id, f.path())),
                None => warnings.push(format!(
                    "skipped {}/{dname}/{fname}: not a pack file name",
                    layout::PACKS_DIR
                )),
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

/// Check a pack's id and read its records' headers, and its snapshot and forget records.
pub(super) fn read_pack(path: &Path, id: &PackId) -> std::result::Result<PackContents, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(|e| e.to_string())?;
    if PackId(*hasher.finalize().as_bytes()) != *id {
        return Err("its contents do not hash to its name (the pack is damaged)".into());
    }
    let mut c = PackContents {
        size: file.metadata().map_err(|e| e.to_string())?.len(),
        ..Default::default()
    };
    let mut records = Vec::new();
    crate::pack::scan(path, |rec| {
        match rec.header.kind {
            RecordKind::Chunks => {
                c.frames += 1;
                c.entries += rec.header.entries.len() as u64;
            }
            RecordKind::Snapshot | RecordKind::Forget => records.push(rec),
        }
        Ok(())
    })
    .map_err(|e| reason(&e))?;
    for rec in records {
        let h = &rec.header;
        if h.kind == RecordKind::Forget {
            c.forgets
                .extend(h.entries.iter().map(|e| SnapshotId(e.id.0)));
            continue;
        }
        let mut bytes = vec![0u8; h.stored_len as usize];
        let read = file.read_exact_at(&mut bytes, rec.payload_offset);
        let entry = &h.entries[..];
        let why = match read {
            Err(e) => Some(e.to_string()),
            Ok(())
                if entry.len() != 1
                    || entry[0].kind != ChunkKind::Snapshot
                    || h.codec != Codec::None =>
            {
                Some("malformed".to_string())
            }
            Ok(()) if ChunkId::of(&bytes) != entry[0].id => Some("fails its checksum".into()),
            Ok(()) => match snapshot_from_record(SnapshotId(entry[0].id.0), &bytes) {
                Ok(s) => {
                    c.snapshots.push(s);
                    None
                }
                Err(why) => Some(why),
            },
        };
        if let Some(why) = why {
            c.warnings.push(format!(
                "left out the snapshot record at offset {} of {}: {why}",
                rec.payload_offset,
                path.display()
            ));
        }
    }
    Ok(c)
}

fn snapshot_from_record(id: SnapshotId, bytes: &[u8]) -> std::result::Result<Snapshot, String> {
    let r: SnapshotRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("it does not parse: {e}"))?;
    if r.v > RECORD_VERSION {
        return Err(format!(
            "its version {} is newer than this cellar understands ({RECORD_VERSION})",
            r.v
        ));
    }
    let unhex = |what: &str, s: &str| hex::decode(s).map_err(|_| format!("its {what} is not hex"));
    let root = ListRef::from_bytes(&unhex("root", &r.root)?)
        .map_err(|e| format!("its root: {}", reason(&e)))?;
    let tree = match &r.tree {
        Some(t) => Some(
            Node::from_bytes(&unhex("tree", t)?)
                .map_err(|e| format!("its tree: {}", reason(&e)))?,
        ),
        None => None,
    };
    let parent = match &r.parent {
        Some(p) => Some(SnapshotId::from_hex(p).ok_or("its parent is not an id")?),
        None => None,
    };
    Ok(Snapshot {
        id,
        name: r.name,
        parent,
        created: r.created,
        stream_len: r.stream_len,
        stream_sha256: r.stream_sha256,
        members: r.members,
        added_bytes: r.added_bytes,
        labels: r.labels,
        root,
        tree,
        image: r.image,
        exact_layer: r.exact_layer,
    })
}
