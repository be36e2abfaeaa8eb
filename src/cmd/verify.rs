//! `cellar verify [--data | --data-subset N/T] [--json]`, and the problem report the repair commands print too.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use cellar_store::{DataCheck, Error, Hurt, Problem, Store, VerifyReport};
use serde::Serialize;

use crate::cli::VerifyArgs;
use crate::output::{escape_name, json_path};

/// How many of a problem's hurts the human report lists (`--json` lists all).
const SHOWN_HURTS: usize = 20;
/// How many bad chunks in a row that are `alike` the human report lists (`--json` lists all).
const SHOWN_ALIKE: usize = 5;

#[derive(Serialize)]
struct VerifyJson {
    ok: bool,
    packs: u64,
    /// Packs read whole: only with --data or --data-subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    packs_read: Option<u64>,
    chunks: u64,
    snapshots: u64,
    problems: Vec<ProblemJson>,
    notes: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct ProblemJson {
    what: String,
    /// `what` without the chunk it names, the same for chunks damaged the same way.
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<String>,
    hurts: Vec<HurtJson>,
    /// Only for a bad chunk that no snapshot uses (as far as the metadata can be read).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unreferenced: bool,
}

#[derive(Serialize)]
struct HurtJson {
    snapshot: String,
    name: String,
    /// Absent: the snapshot's stream (export).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// Only when the path is not UTF-8: its exact bytes, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
}

fn hurt_json(h: &Hurt) -> HurtJson {
    let (path, path_bytes) = match h.path.as_deref().map(json_path) {
        None => (None, None),
        Some((path, bytes)) => (Some(path), bytes),
    };
    HurtJson {
        snapshot: h.snapshot.hex(),
        name: h.name.clone(),
        path,
        path_bytes,
    }
}

pub(super) fn problem_json(p: &Problem) -> ProblemJson {
    ProblemJson {
        what: p.what.clone(),
        reason: p.reason.clone(),
        pack: p.pack.map(|p| p.hex()),
        offset: p.offset,
        chunk: p.chunk.map(|c| c.hex()),
        hurts: p.hurts.iter().map(hurt_json).collect(),
        unreferenced: p.unreferenced,
    }
}

/// `snapshot ID (NAME): /path` or `snapshot ID: stream (export)`.
fn hurt_line(h: &Hurt) -> String {
    match &h.path {
        Some(p) => format!(
            "snapshot {} ({}): {}",
            h.snapshot.short(),
            h.name,
            escape_name(p)
        ),
        None => format!("snapshot {}: stream (export)", h.snapshot.short()),
    }
}

pub(super) fn print_human(r: &VerifyReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write_human(&mut out, r).map_err(cellar_store::Error::Output)?;
    Ok(())
}

fn write_human(out: &mut dyn Write, r: &VerifyReport) -> std::io::Result<()> {
    let scope = match r.data {
        DataCheck::Index => "the index".to_string(),
        DataCheck::All => "the index and every stored byte".to_string(),
        DataCheck::Subset { n, of } => format!(
            "the index and the stored bytes of subset {n}/{of} of the packs ({} read)",
            r.packs_read
        ),
    };
    writeln!(
        out,
        "checked {scope}: {} packs, {} chunks, {} snapshots",
        r.packs, r.chunks, r.snapshots
    )?;
    let mut rest = &r.problems[..];
    while let Some(first) = rest.first() {
        let alike = 1 + rest[1..].iter().take_while(|q| alike(first, q)).count();
        for p in &rest[..alike.min(SHOWN_ALIKE)] {
            write_problem(out, p)?;
        }
        if let (Some(more), Some(pack)) = (alike.checked_sub(SHOWN_ALIKE), first.pack) {
            if more > 0 {
                writeln!(
                    out,
                    "... and {more} more chunks in pack {} with the same problem and the same \
                     hurts (see --json)",
                    pack.short()
                )?;
            }
        }
        rest = &rest[alike..];
    }
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    if r.ok() {
        writeln!(out, "ok: no problems found")?;
    }
    out.flush()
}

/// Two bad chunks of one pack, damaged the same way, hurting the same things: a lost pack or
/// a damaged frame makes runs of these, which the human report counts instead of listing.
fn alike(a: &Problem, b: &Problem) -> bool {
    a.chunk.is_some()
        && b.chunk.is_some()
        && a.pack == b.pack
        && a.unreferenced == b.unreferenced
        && a.hurts == b.hurts
        && a.reason == b.reason
}

fn write_problem(out: &mut dyn Write, p: &Problem) -> std::io::Result<()> {
    write!(out, "problem: {}", p.what)?;
    if let Some(pack) = p.pack {
        write!(out, " [pack {}", pack.short())?;
        if let Some(o) = p.offset {
            write!(out, ", offset {o}")?;
        }
        write!(out, "]")?;
    }
    writeln!(out)?;
    if p.unreferenced {
        writeln!(out, "  unreferenced: no snapshot uses it")?;
    } else if p.chunk.is_some() && p.hurts.is_empty() {
        writeln!(
            out,
            "  hurts: unknown (the metadata that would name its users is damaged too)"
        )?;
    }
    for h in p.hurts.iter().take(SHOWN_HURTS) {
        writeln!(out, "  hurts {}", hurt_line(h))?;
    }
    if p.hurts.len() > SHOWN_HURTS {
        writeln!(
            out,
            "  ... and {} more (see --json)",
            p.hurts.len() - SHOWN_HURTS
        )?;
    }
    Ok(())
}

pub fn verify(root: &Path, args: VerifyArgs) -> anyhow::Result<()> {
    let report = match Store::open(root) {
        Ok(store) => store.verify(args.scope())?,
        // Not damage: a permission, which a rebuilt index would not change.
        Err(Error::Db(_)) if super::write_denied(root) => {
            super::open(root)?.verify(args.scope())?
        }
        // The damage is the finding, reported as any other.
        Err(e) if e.index_damaged() => VerifyReport::index_unreadable(args.scope(), &e),
        Err(e @ Error::Db(_)) => {
            return Err(e).context(
                "the index (cellar.db) cannot be read; `cellar repair-index` rebuilds it from \
                 the packs",
            )
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        let json = VerifyJson {
            ok: report.ok(),
            packs: report.packs,
            packs_read: report.data.reads_data().then_some(report.packs_read),
            chunks: report.chunks,
            snapshots: report.snapshots,
            problems: report.problems.iter().map(problem_json).collect(),
            notes: report.notes.clone(),
        };
        serde_json::to_writer_pretty(&mut out, &json)
            .map_err(|e| cellar_store::Error::Output(e.into()))?;
        writeln!(out)
            .and_then(|()| out.flush())
            .map_err(cellar_store::Error::Output)?;
    } else {
        print_human(&report)?;
    }
    match report.problems.len() {
        0 => Ok(()),
        1 => bail!("verify found 1 problem"),
        n => bail!("verify found {n} problems"),
    }
}
