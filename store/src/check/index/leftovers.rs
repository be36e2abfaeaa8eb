//! Notes about files no index row names: unindexed pack files, indexes moved aside and
//! `tmp/` files.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::PackRow;
use crate::check::Verifier;
use crate::error::Result;
use crate::ids::PackId;
use crate::layout;
use crate::process::Owner;

fn sorted_dir(path: &Path) -> Vec<fs::DirEntry> {
    let mut v: Vec<_> = fs::read_dir(path)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    v.sort_by_key(|e| e.file_name());
    v
}

/// Notes about files no index row names: unindexed pack files, indexes and packs set aside
/// by the repairs, and `tmp/` files.
pub(in crate::check) fn leftovers(v: &mut Verifier, packs: &[PackRow]) -> Result<()> {
    let root = v.store.root().to_path_buf();
    let indexed: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    let mut unindexed = Vec::new();
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
                Some(id) if layout::is_retired(&root, &id) => v.notes.push(format!(
                    "{rel}: a pack repair-packs retired ({size} bytes), found here again: it \
                     counts for nothing; `cellar repair-packs` takes back the chunks it holds \
                     and sets it aside"
                )),
                Some(_) => unindexed.push((f.path(), rel, size)),
                None => v
                    .notes
                    .push(format!("{rel}: not a pack file name ({size} bytes)")),
            }
        }
    }
    let paths: Vec<_> = unindexed.iter().map(|(p, _, _)| p.clone()).collect();
    let unlisted = crate::gc::unlisted_in(v.store, &paths)?;
    for (path, rel, size) in unindexed {
        let held: Vec<String> = unlisted
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, id)| id.short())
            .collect();
        if held.is_empty() {
            v.notes.push(format!(
                "{rel}: not in the index ({size} bytes): left by an ingest that did not \
                 commit, or one still running; reclaimable by gc"
            ));
        } else {
            // An ingest killed between sealing and committing, or an index that lost its
            // last commits (gc refuses to run until the index lists the snapshot again), or
            // an ingest committing now: told apart once the run's transaction is over.
            v.unlisted.push((path, rel));
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
    for f in sorted_dir(&root.join(layout::DAMAGED_DIR)) {
        let fname = f.file_name().to_string_lossy().into_owned();
        if let Some(stem) = fname.strip_suffix(".retired") {
            // A mark, not a pack: kept for good. One of a pack the index names (a copy of
            // the index from before the retirement, put back) is said to be overruled.
            if PackId::from_hex(stem).is_some_and(|id| indexed.contains(&id)) {
                v.notes.push(format!(
                    "{}/{fname}: marks a pack retired that the index names (a copy of the \
                     index from before repair-packs retired it?): the index is followed",
                    layout::DAMAGED_DIR
                ));
            }
            continue;
        }
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        v.notes.push(format!(
            "{}/{fname}: a damaged pack set aside by repair-packs ({size} bytes); delete it \
             when nothing more is to be had from it, but keep the ID.retired marks beside it \
             (without them a copy of a retired pack put back could bring back snapshots \
             forgotten since)",
            layout::DAMAGED_DIR
        ));
    }
    for f in sorted_dir(&root.join(layout::TMP_DIR)) {
        let fname = f.file_name().to_string_lossy().into_owned();
        let rel = format!("{}/{fname}", layout::TMP_DIR);
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        match Owner::of_file_name(&fname) {
            Some(owner) if owner.alive() => v.notes.push(format!(
                "{rel}: being written by process {} ({size} bytes): an ingest in progress",
                owner.pid
            )),
            Some(owner) => v.notes.push(format!(
                "{rel}: left by process {}, which is gone ({size} bytes); reclaimable by gc",
                owner.pid
            )),
            None => v
                .notes
                .push(format!("{rel}: not a cellar temp file ({size} bytes)")),
        }
    }
    Ok(())
}
