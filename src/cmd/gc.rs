//! `cellar gc [--dry-run] [--grace SECONDS] [--json]`.

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
        return print_json(&GcJson::from(&r));
    }
    let (verb, freed) = if r.dry_run {
        ("would delete", "would free")
    } else {
        ("deleted", "freed")
    };
    outln!("packs {verb}:   {}", r.packs_deleted);
    outln!("packs repacked:   {}", r.packs_repacked);
    outln!(
        "bytes {freed}:  {} ({})",
        r.bytes_freed,
        human_bytes(r.bytes_freed)
    );
    outln!("chunks condemned: {}", r.chunks_condemned);
    outln!("chunks deleted:   {}", r.chunks_deleted);
    if r.chunks_waiting > 0 {
        outln!(
            "chunks waiting:   {} (within --grace, or kept for a running ingest or reader; a \
             later gc deletes them)",
            r.chunks_waiting
        );
    }
    for l in &r.leases {
        let keeps = match l.keeps_forgotten {
            0 => String::new(),
            1 => ", keeping 1 forgotten snapshot".into(),
            n => format!(", keeping {n} forgotten snapshots"),
        };
        outln!(
            "lease held:       {} (pid {}) since {}{keeps}",
            l.holder,
            l.pid,
            rfc3339(l.started, 0)
        );
    }
    outln!("orphan files {verb}: {}", r.orphans_deleted);
    Ok(())
}
