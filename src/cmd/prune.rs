//! `cellar rm` and `cellar prune`: forget snapshots by name or by retention policy.

use cellar_store::{apply_policy, Policy, Store};
use serde::Serialize;

use crate::cli::{PruneArgs, RmArgs, UsageError};
use crate::output::{errln, outln, print_json};

#[derive(Serialize)]
struct Forgotten {
    id: String,
    short_id: String,
    name: String,
    created: String,
    reasons: Vec<String>,
}

pub fn rm(store: &Store, args: RmArgs) -> anyhow::Result<()> {
    // Resolve everything first: one bad argument forgets nothing.
    let mut snaps = Vec::new();
    for spec in &args.snaps {
        let s = store.resolve(spec)?;
        if !snaps.iter().any(|x: &cellar_store::Snapshot| x.id == s.id) {
            snaps.push(s);
        }
    }
    let ids: Vec<_> = snaps.iter().map(|s| s.id).collect();
    store.forget(&ids, &|m| errln!("cellar: {m}"))?;
    if args.json {
        let out: Vec<Forgotten> = snaps
            .iter()
            .map(|s| Forgotten {
                id: s.id.hex(),
                short_id: s.short_id(),
                name: s.name.clone(),
                created: s.created.clone(),
                reasons: Vec::new(),
            })
            .collect();
        return print_json(&out);
    }
    for s in &snaps {
        errln!("cellar: forgot {} ({})", s.short_id(), s.name);
    }
    Ok(())
}

#[derive(Serialize)]
struct PruneReport {
    dry_run: bool,
    keep: Vec<Forgotten>,
    drop: Vec<Forgotten>,
}

pub fn prune(store: &Store, args: PruneArgs) -> anyhow::Result<()> {
    let policy = Policy {
        last: args.keep_last.unwrap_or(0),
        hourly: args.keep_hourly.unwrap_or(0),
        daily: args.keep_daily.unwrap_or(0),
        weekly: args.keep_weekly.unwrap_or(0),
        monthly: args.keep_monthly.unwrap_or(0),
        yearly: args.keep_yearly.unwrap_or(0),
        within: args.keep_within.unwrap_or_default(),
        within_hourly: args.keep_within_hourly.unwrap_or_default(),
        within_daily: args.keep_within_daily.unwrap_or_default(),
        within_weekly: args.keep_within_weekly.unwrap_or_default(),
        within_monthly: args.keep_within_monthly.unwrap_or_default(),
        within_yearly: args.keep_within_yearly.unwrap_or_default(),
        labels: args.keep_labels,
    };
    if policy.is_empty() {
        // 0 is no rule, as for restic; with no rule at all, nothing would be kept.
        return Err(UsageError(
            "prune needs a policy: --keep-last, --keep-hourly, --keep-daily, --keep-weekly, \
             --keep-monthly or --keep-yearly of at least 1, or --keep-within or \
             --keep-within-{hourly,daily,weekly,monthly,yearly} of a span over 0, or \
             --keep-label"
                .into(),
        )
        .into());
    }
    if let Some(name) = &args.name {
        cellar_store::validate_lookup_name(name)?;
    }
    let snaps = store.list(args.name.as_deref())?;
    if let (Some(name), true) = (&args.name, snaps.is_empty()) {
        // A typo forgets nothing either way, but should not look like a prune that ran.
        errln!("cellar: no snapshots named {name}");
    }
    let decisions = apply_policy(&policy, snaps)?;
    // Every rule but a label keeps each lineage's newest snapshot, so only a label no snapshot
    // of a lineage carries (a typo) can leave it none. As restic's `forget` does since 0.17,
    // that is refused: `rm` forgets a whole lineage when that is meant.
    let mut emptied: Vec<&str> = decisions
        .iter()
        .map(|d| d.snapshot.name.as_str())
        .filter(|name| {
            decisions
                .iter()
                .all(|d| d.snapshot.name != *name || !d.keep())
        })
        .collect();
    emptied.dedup();
    if !emptied.is_empty() {
        anyhow::bail!(
            "prune would forget every snapshot of {}: no rule keeps any of them (a label none \
             carries?); nothing was forgotten (--name prunes one lineage; `cellar rm` forgets a \
             whole lineage)",
            emptied.join(", ")
        );
    }
    let mut report = PruneReport {
        dry_run: args.dry_run,
        keep: Vec::new(),
        drop: Vec::new(),
    };
    for d in &decisions {
        let entry = Forgotten {
            id: d.snapshot.id.hex(),
            short_id: d.snapshot.short_id(),
            name: d.snapshot.name.clone(),
            created: d.snapshot.created.clone(),
            reasons: d.reasons.clone(),
        };
        if d.keep() {
            report.keep.push(entry);
        } else {
            report.drop.push(entry);
        }
    }
    if !args.dry_run {
        let ids: Vec<_> = decisions
            .iter()
            .filter(|d| !d.keep())
            .map(|d| d.snapshot.id)
            .collect();
        store.forget(&ids, &|m| errln!("cellar: {m}"))?;
    }
    if args.json {
        return print_json(&report);
    }
    for (verb, list) in [("keep", &report.keep), ("drop", &report.drop)] {
        for e in list.iter() {
            let when = e.created.get(..19).unwrap_or(&e.created).replace('T', " ");
            let why = if e.reasons.is_empty() {
                "no rule keeps it".to_string()
            } else {
                e.reasons.join(", ")
            };
            outln!("{verb} {} {} {when} ({why})", e.short_id, e.name);
        }
    }
    errln!(
        "cellar: {} kept, {} {}",
        report.keep.len(),
        report.drop.len(),
        if args.dry_run {
            "would be forgotten (dry run)"
        } else if report.drop.is_empty() {
            "forgotten"
        } else {
            "forgotten; run `cellar gc` to reclaim space"
        }
    );
    Ok(())
}
