//! What the store as it is now says about the problems a run found in its read transaction.
//!
//! gc runs beside `verify` and waits for none of it: a pack it deletes or repacks after the
//! run's transaction began is still in the run's view of the index, but its file is gone
//! (or its chunks are elsewhere). An ingest seals its packs before it commits them. Both look
//! like damage from inside the transaction; once it is over, the current index tells them
//! apart from damage.

use std::collections::{HashMap, HashSet};

use super::Verifier;
use crate::error::Result;
use crate::ids::PackId;
use crate::layout;

/// Inside the run's transaction: the pack each problem is about, or its chunk was in.
pub(super) fn note_packs(v: &mut Verifier) -> Result<()> {
    let db = v.store.db();
    let mut stmt = db.conn().prepare(
        "SELECT p.name FROM chunks c JOIN frames f ON f.id = c.frame
         JOIN packs p ON p.id = f.pack WHERE c.id = ?1",
    )?;
    v.seen_in = v
        .problems
        .iter()
        .map(|p| match (p.pack, p.chunk) {
            (Some(pack), _) => Ok(Some(pack)),
            (None, Some(chunk)) => Ok(stmt
                .query_row([&chunk.0[..]], |r| r.get::<_, Vec<u8>>(0))
                .ok()
                .and_then(|n| PackId::from_slice(&n))),
            (None, None) => Ok(None),
        })
        .collect::<Result<_>>()?;
    Ok(())
}

/// Drop the problems the current index explains, with a note saying so, and decide what the
/// unindexed packs holding unlisted snapshots are. Call after the run's transaction ends.
/// `seen`: the packs the run's transaction saw indexed. True if some are gone now.
pub(super) fn settle(v: &mut Verifier, seen: &HashSet<PackId>) -> Result<bool> {
    let indexed: HashSet<PackId> = {
        let db = v.store.db();
        let mut stmt = db.conn().prepare("SELECT name FROM packs")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let names = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        names.iter().filter_map(|n| PackId::from_slice(n)).collect()
    };
    collected_meanwhile(v, &indexed);
    unlisted(v)?;
    Ok(!seen.is_subset(&indexed))
}

/// Problems in packs the index no longer has were a gc's doing: it deleted or repacked them
/// after the run's transaction began, and what they held is elsewhere now, or dead.
fn collected_meanwhile(v: &mut Verifier, indexed: &HashSet<PackId>) {
    let before = v.problems.len();
    let mut seen_in = std::mem::take(&mut v.seen_in).into_iter();
    v.problems.retain(|_| {
        let pack = seen_in.next().flatten();
        pack.is_none_or(|id| indexed.contains(&id))
    });
    let explained = before - v.problems.len();
    if explained > 0 {
        v.notes.push(format!(
            "{explained} finding(s) in packs a gc deleted or repacked while this ran were \
             left out: the index no longer points there"
        ));
    }
}

/// An unindexed pack holding a snapshot the index does not list: committed since (nothing
/// to say), being committed by a running ingest (a note), left by an ingest killed while
/// committing, which its marker says (a note: gc deletes it), or left by a lost commit (a
/// problem: `repair-index` restores it, and gc refuses to run until then).
fn unlisted(v: &mut Verifier) -> Result<()> {
    if v.unlisted.is_empty() {
        return Ok(());
    }
    let found = std::mem::take(&mut v.unlisted);
    let paths: Vec<_> = found.iter().map(|(p, _)| p.clone()).collect();
    // Leases first: an ingest ends its lease in the transaction that lists its snapshot, so
    // one whose lease is gone here has its snapshot listed below. The other way round, an
    // ingest committing between the two looks killed.
    let ingests: Vec<i64> = v
        .store
        .leases()?
        .into_iter()
        .filter(|l| l.holder == crate::gc::INGEST_HOLDER && l.alive())
        .map(|l| l.pid)
        .collect();
    crate::failpoint::hit("verify:settling");
    let still = crate::gc::unlisted_in(v.store, &paths)?;
    // After the look at what is listed: a marker of a process gone is of an ingest that
    // did not commit (one that did is listed above).
    let killed: HashMap<PackId, i64> = crate::gc::abandoned_packs(v.store.root())
        .into_iter()
        .filter_map(|(marker, id)| {
            let name = marker.file_name()?.to_str()?;
            Some((id, layout::parse_committing_marker(name)?.0.pid))
        })
        .collect();
    for (path, rel) in found {
        let held: Vec<String> = still
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, id)| id.short())
            .collect();
        if held.is_empty() {
            continue;
        }
        let pack = path
            .file_name()
            .and_then(|n| n.to_str()?.strip_suffix(".pack"))
            .and_then(PackId::from_hex);
        if let Some(pid) = pack.and_then(|id| killed.get(&id)) {
            v.notes.push(format!(
                "{rel}: holds snapshot {}, never committed: its ingest (process {pid}) was \
                 killed while committing; reclaimable by gc",
                held.join(", ")
            ));
        } else if let Some(pid) = ingests.first() {
            v.notes.push(format!(
                "{rel}: holds snapshot {}, not yet in the index: an ingest (process {pid}) \
                 is running and will commit it",
                held.join(", ")
            ));
        } else {
            v.problem(format!(
                "{rel}: not in the index, and holds snapshot {} that the index does not list \
                 (an ingest killed while committing, or an index that lost its last \
                 commits): `cellar repair-index` restores it",
                held.join(", ")
            ));
        }
    }
    Ok(())
}
