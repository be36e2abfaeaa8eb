//! `cellar repair-index` (a new index from the packs) and `cellar repair-packs` (what damaged
//! packs still hold, salvaged into a new one).

use std::path::Path;

use anyhow::bail;
use cellar_store::{DataCheck, Store};
use serde::Serialize;

use super::verify::{print_human, problem_json, ProblemJson};
use crate::cli::{RepairIndexArgs, RepairPacksArgs};
use crate::output::{errln, outln};

#[derive(Serialize)]
struct RepairJson {
    /// Where the old index files went, relative to the store.
    moved: Vec<String>,
    packs: u64,
    skipped_packs: u64,
    records: u64,
    chunks: u64,
    duplicates: u64,
    snapshots: u64,
    forgotten: u64,
    warnings: Vec<String>,
    /// Whether the rebuilt index verifies (index level), and what it found if not.
    verified: bool,
    problems: Vec<ProblemJson>,
}

pub fn repair_index(root: &Path, args: RepairIndexArgs) -> anyhow::Result<()> {
    let report = cellar_store::repair_index(root, args.force, &|msg| errln!("cellar: {msg}"))?;
    for w in &report.warnings {
        crate::output::warn(w);
    }
    let moved: Vec<String> = report
        .moved
        .iter()
        .map(|db| db.strip_prefix(root).unwrap_or(db).display().to_string())
        .collect();
    // The rebuilt index must stand on its own: check it (index level; `verify --data` reads
    // everything).
    let check = Store::open(root)?.verify(DataCheck::Index)?;
    if args.json {
        crate::output::print_json(&RepairJson {
            moved: moved.clone(),
            packs: report.packs,
            skipped_packs: report.skipped_packs,
            records: report.frames,
            chunks: report.chunks,
            duplicates: report.duplicates,
            snapshots: report.snapshots,
            forgotten: report.forgotten,
            warnings: report.warnings.clone(),
            verified: check.ok(),
            problems: check.problems.iter().map(problem_json).collect(),
        })?;
    } else {
        match moved.first() {
            Some(db) => outln!("moved the old index aside to {db}"),
            None => outln!("no old index to move aside"),
        }
        outln!(
            "indexed {} packs ({} skipped): {} records, {} chunks ({} duplicate copies left \
             unindexed)",
            report.packs,
            report.skipped_packs,
            report.frames,
            report.chunks,
            report.duplicates
        );
        outln!(
            "restored {} snapshots ({} forgotten ones left out)",
            report.snapshots,
            report.forgotten
        );
        if !check.ok() {
            print_human(&check)?;
        }
    }
    if !check.ok() {
        bail!(
            "the rebuilt index has {} problem(s); see above (the old index is kept as {})",
            check.problems.len(),
            moved
                .first()
                .map_or("nothing: there was none", String::as_str)
        );
    }
    if report.skipped_packs > 0 {
        bail!(
            "{} damaged or unreadable pack(s) were skipped; their contents are not indexed",
            report.skipped_packs
        );
    }
    if !args.json {
        outln!("the rebuilt index verifies");
    }
    Ok(())
}

#[derive(Serialize)]
struct SalvageJson {
    checked: u64,
    packs: Vec<SalvagedJson>,
    new_packs: Vec<String>,
    rewritten_records: Vec<String>,
    rewritten_tombstones: Vec<String>,
    /// Indexed packs whose files are missing and that were not named, so not given up.
    missing: Vec<String>,
    /// Packs an earlier, killed run had set aside, whose names in packs/ were removed.
    finished: Vec<String>,
    /// Chunks no damaged pack could give back, with their kinds.
    lost: Vec<LostJson>,
    /// Whether the index verifies (index level) after the salvage, and what it found if not.
    verified: bool,
    problems: Vec<ProblemJson>,
}

#[derive(Serialize)]
struct SalvagedJson {
    pack: String,
    damage: String,
    /// Relative to the store; null for a pack whose file was missing.
    moved_to: Option<String>,
    objects: u64,
    records: u64,
    skipped_bytes: u64,
}

#[derive(Serialize)]
struct LostJson {
    chunk: String,
    kind: &'static str,
}

pub fn repair_packs(root: &Path, args: RepairPacksArgs) -> anyhow::Result<()> {
    let store = super::open(root)?;
    let report = cellar_store::repair_packs(&store, &args.packs, &|msg| errln!("cellar: {msg}"))?;
    let relative = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let hex = |ids: &[cellar_store::SnapshotId]| ids.iter().map(|s| s.hex()).collect::<Vec<_>>();
    // Lost chunks are no longer indexed: the check names what they hurt.
    let check = store.verify(DataCheck::Index)?;
    if args.json {
        crate::output::print_json(&SalvageJson {
            checked: report.checked,
            packs: report
                .packs
                .iter()
                .map(|p| SalvagedJson {
                    pack: p.pack.hex(),
                    damage: p.damage.clone(),
                    moved_to: p.moved_to.as_deref().map(relative),
                    objects: p.objects,
                    records: p.records,
                    skipped_bytes: p.skipped.bytes,
                })
                .collect(),
            new_packs: report.new_packs.iter().map(|p| p.hex()).collect(),
            rewritten_records: hex(&report.rewritten),
            rewritten_tombstones: hex(&report.tombstones),
            missing: report.missing.iter().map(|p| p.hex()).collect(),
            finished: report.finished.iter().map(|p| p.hex()).collect(),
            lost: report
                .lost
                .iter()
                .map(|(id, kind)| LostJson {
                    chunk: id.hex(),
                    kind: cellar_store::kind_name(Some(*kind)),
                })
                .collect(),
            verified: check.ok(),
            problems: check.problems.iter().map(problem_json).collect(),
        })?;
    } else {
        for p in &report.finished {
            outln!(
                "pack {}: removed from packs/ (an earlier run set it aside in damaged/ and \
                 switched the index, then stopped)",
                p.hex()
            );
        }
        if report.packs.is_empty() && report.missing.is_empty() && report.finished.is_empty() {
            outln!(
                "no damaged packs: all {} pack files hash to their names",
                report.checked
            );
        }
        for p in &report.packs {
            outln!("pack {}: {}", p.pack.hex(), p.damage);
            if let Some(at) = p.skipped.first {
                outln!(
                    "  {} bytes from offset {at} on are in no record that checks out",
                    p.skipped.bytes
                );
            }
            let Some(moved) = &p.moved_to else {
                continue;
            };
            outln!(
                "  salvaged {} objects and {} snapshot and forget records",
                p.objects,
                p.records
            );
            outln!("  moved the damaged file to {}", relative(moved));
        }
        for s in &report.rewritten {
            outln!(
                "wrote the record of snapshot {} again from the index",
                s.hex()
            );
        }
        for s in &report.tombstones {
            outln!(
                "wrote the tombstone of forgotten snapshot {} again",
                s.hex()
            );
        }
        for new in &report.new_packs {
            outln!("new pack {}", new.hex());
        }
        if !report.lost.is_empty() && check.ok() {
            outln!(
                "{} chunks could not be salvaged; no listed snapshot needs them",
                report.lost.len()
            );
        } else if !report.lost.is_empty() {
            outln!(
                "{} chunks could not be salvaged; they are no longer indexed, and a new \
                 snapshot of the same data stores them again",
                report.lost.len()
            );
        }
        if !check.ok() {
            print_human(&check)?;
        }
    }
    for p in &report.missing {
        errln!(
            "cellar: pack {} is in the index but its file is missing; bring the file back if \
             it can come back (a disk not mounted), or give up what only it held with \
             `cellar repair-packs {}`",
            p.hex(),
            &p.hex()[..16]
        );
    }
    // What is lost matters as far as a listed snapshot needs it: the check says.
    if !check.ok() {
        let lost = match report.lost.len() {
            0 => String::new(),
            n => format!("{n} chunk(s) were lost; "),
        };
        bail!(
            "{lost}the index has {} problem(s), above",
            check.problems.len()
        );
    }
    if !report.missing.is_empty() {
        bail!("{} indexed pack file(s) are missing", report.missing.len());
    }
    Ok(())
}
