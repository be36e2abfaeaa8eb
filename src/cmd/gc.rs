//! `cellar gc [--dry-run] [--grace SECONDS] [--json]`.

use anyhow::bail;
use cellar_store::{GcOptions, GcReport, Store};
use serde::Serialize;

use crate::cli::GcArgs;
use crate::output::{errln, human_bytes, outln, print_json, rfc3339};

#[derive(Serialize)]
struct GcJson {
    dry_run: bool,
    packs_deleted: u64,
    packs_repacked: u64,
    bytes_freed: u64,
    chunks_condemned: u64,
    chunks_deleted: u64,
    chunks_waiting: u64,
    orphans_deleted: u64,
    stale_leases: u64,
    /// Live ingests and readers holding leases when gc finished.
    leases: Vec<LeaseJson>,
    /// Damaged packs, left as they are (gc then exits 1).
    damaged_packs: Vec<String>,
}

#[derive(Serialize)]
struct LeaseJson {
    pid: i64,
    holder: String,
    started: String,
    /// Forgotten snapshots the lease pins (gc keeps them until it ends).
    keeps_forgotten: u64,
}

impl From<&GcReport> for GcJson {
    fn from(r: &GcReport) -> Self {
        GcJson {
            dry_run: r.dry_run,
            packs_deleted: r.packs_deleted,
            packs_repacked: r.packs_repacked,
            bytes_freed: r.bytes_freed,
            chunks_condemned: r.chunks_condemned,
            chunks_deleted: r.chunks_deleted,
            chunks_waiting: r.chunks_waiting,
            orphans_deleted: r.orphans_deleted,
            stale_leases: r.stale_leases,
            leases: r
                .leases
                .iter()
                .map(|l| LeaseJson {
                    pid: l.pid,
                    holder: l.holder.clone(),
                    started: rfc3339(l.started, 0),
                    keeps_forgotten: l.keeps_forgotten,
                })
                .collect(),
            damaged_packs: r.damaged_packs.clone(),
        }
    }
}

pub fn run(store: &Store, args: GcArgs) -> anyhow::Result<()> {
    let opts = GcOptions {
        dry_run: args.dry_run,
        grace_secs: args.grace,
    };
    let r = store.gc(&opts, &|msg| errln!("cellar: {msg}"))?;
    if args.json {
        print_json(&GcJson::from(&r))?;
    } else {
        print_human(&r)?;
    }
    // Everything else was reclaimed; what the damage hurts is verify's to say.
    match r.damaged_packs.as_slice() {
        [] => Ok(()),
        damaged => {
            for why in damaged {
                errln!("cellar: damaged pack left as it is: {why}");
            }
            bail!(
                "{} damaged pack(s) were left as they are; `cellar verify --data` names what \
                 the damage hurts",
                damaged.len()
            )
        }
    }
}

fn print_human(r: &GcReport) -> anyhow::Result<()> {
    // A dry run says what a run now would do, in the same order.
    let label = |done: &str, would: &str| if r.dry_run { would } else { done }.to_string();
    if r.dry_run {
        outln!("dry run: nothing was changed; gc now would:");
    }
    let rows = [
        (
            label("packs deleted", "packs to delete"),
            r.packs_deleted.to_string(),
        ),
        (
            label("packs repacked", "packs to repack"),
            r.packs_repacked.to_string(),
        ),
        (
            label("bytes freed", "bytes to free"),
            format!("{} ({})", r.bytes_freed, human_bytes(r.bytes_freed)),
        ),
        (
            label("chunks condemned", "chunks to condemn"),
            r.chunks_condemned.to_string(),
        ),
        (
            label("chunks deleted", "chunks to delete"),
            r.chunks_deleted.to_string(),
        ),
    ];
    for (what, n) in &rows {
        outln!("{:<25}{n}", format!("{what}:"));
    }
    if r.chunks_waiting > 0 {
        outln!(
            "{:<25}{} (within --grace, or kept for a running ingest or reader; a later gc \
             deletes them)",
            label("chunks waiting:", "chunks to keep:"),
            r.chunks_waiting
        );
    }
    if r.stale_leases > 0 {
        outln!(
            "{:<25}{} (of processes that are gone)",
            label("stale leases removed:", "stale leases to drop:"),
            r.stale_leases
        );
    }
    for l in &r.leases {
        let keeps = match l.keeps_forgotten {
            0 => String::new(),
            1 => ", keeping 1 forgotten snapshot".into(),
            n => format!(", keeping {n} forgotten snapshots"),
        };
        outln!(
            "{:<25}{} (pid {}) since {}{keeps}",
            "lease held:",
            l.holder,
            l.pid,
            rfc3339(l.started, 0)
        );
    }
    outln!(
        "{:<25}{}",
        label("orphan files deleted:", "orphan files to delete:"),
        r.orphans_deleted
    );
    Ok(())
}
