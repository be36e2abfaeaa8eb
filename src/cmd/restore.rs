//! `cellar restore`: write a snapshot's tree (or one path in it) into a directory.

use std::os::unix::ffi::OsStrExt;

use cellar_store::error::{path_text, printable};
use cellar_store::restore::{restore, RestoreFailure, RestoreOptions};
use cellar_store::{ReadLease, Snapshot};
use serde::Serialize;

use crate::cli::{RestoreArgs, UsageError};
use crate::output::{errln, human_bytes, json_path, print_json};

#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot: String,
    path: String,
    /// Only when the path is not UTF-8: its exact bytes, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    dir: String,
    files: u64,
    bytes: u64,
    warnings: &'a [String],
    failed: u64,
    failures: Vec<FailureJson<'a>>,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    path: String,
    /// Only when the path is not UTF-8: its exact bytes, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    reason: &'a str,
}

/// Failures named in the error that ends a restore that could not write everything.
const FAILURES_SHOWN: usize = 5;

pub fn run(lease: &ReadLease, args: RestoreArgs) -> anyhow::Result<()> {
    let store = lease.store();
    let shown = args.dir.display().to_string();
    super::outside_store(store.root(), &args.dir, &shown, super::WOULD_DAMAGE)?;
    let snap = lease.resolve(&args.snap)?;
    // Raw bytes (names need not be UTF-8); the engine ignores surrounding slashes.
    let path = args
        .path
        .as_deref()
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    would_write_into_store(lease, &snap, &path, &args)?;
    // An interrupt ends the restore where it is, and says what it leaves: the tree written so
    // far stays (DIR may have held files before, and what was written is worth keeping, as
    // restic's restore keeps it), with its last file perhaps cut short.
    let held = crate::signals::hold_interrupts();
    let dir_text = printable(&shown).to_string();
    crate::signals::end_on_interrupt(held, move |sig| {
        errln!(
            "cellar: signal {sig}: restore stopped; {dir_text} holds what was written so far, \
             the last file perhaps cut short: restore again with --force to complete it"
        );
    });
    let opts = RestoreOptions { force: args.force };
    let report = restore(store, &snap, &path, &args.dir, &opts)?;
    for w in &report.warnings {
        crate::output::warn(w);
    }
    let normal = [b"/", &cellar_store::tree::normalize_path(&path)[..]].concat();
    errln!(
        "cellar: restored {} {} ({}) of {} into {}",
        report.files,
        if report.files == 1 {
            "entry"
        } else {
            "entries"
        },
        human_bytes(report.bytes),
        if normal == b"/" {
            snap.short_id()
        } else {
            format!("{}:{}", snap.short_id(), path_text(&normal))
        },
        printable(&args.dir.display().to_string())
    );
    if args.json {
        let (shown_path, path_bytes) = json_path(&normal);
        print_json(&RestoreJson {
            snapshot: snap.id.hex(),
            path: shown_path,
            path_bytes,
            dir: args.dir.display().to_string(),
            files: report.files,
            bytes: report.bytes,
            warnings: &report.warnings,
            failed: report.failed,
            failures: report
                .failures
                .iter()
                .map(|f| {
                    let (path, path_bytes) = json_path(&f.path);
                    FailureJson {
                        path,
                        path_bytes,
                        reason: &f.reason,
                    }
                })
                .collect(),
        })?;
    }
    if report.failed > 0 {
        return Err(incomplete(report.failed, &report.failures));
    }
    Ok(())
}

/// A usage error if DIR holds the store and the snapshot has a member where the store is:
/// restoring it would write into the index or a pack being read. (A snapshot of the directory
/// the store is in holds the store itself.) Members only above the store are harmless: a
/// restore never replaces a non-empty directory.
fn would_write_into_store(
    lease: &ReadLease,
    snap: &Snapshot,
    path: &[u8],
    args: &RestoreArgs,
) -> anyhow::Result<()> {
    let store = lease.store();
    let Some(below) = super::store_below(store.root(), &args.dir) else {
        return Ok(());
    };
    let mut inside = cellar_store::tree::normalize_path(path);
    inside.push(b'/');
    inside.extend_from_slice(below.as_os_str().as_bytes());
    if store.tree(snap).and_then(|t| t.resolve(&inside)).is_err() {
        return Ok(());
    }
    Err(UsageError(format!(
        "{}: holds the store {}, and {}:/{} is there in the snapshot (restoring it would \
         write into the store)",
        printable(&args.dir.display().to_string()),
        printable(&store.root().display().to_string()),
        snap.short_id(),
        path_text(&cellar_store::tree::normalize_path(&inside))
    ))
    .into())
}

/// The error for a restore that went on past members it could not write: how many, and the
/// first few with the reason. Exit 1 (GNU tar's is 2, which cellar keeps for usage errors).
fn incomplete(failed: u64, failures: &[RestoreFailure]) -> anyhow::Error {
    let mut msg = format!(
        "{failed} {} could not be restored:",
        if failed == 1 { "member" } else { "members" }
    );
    for f in failures.iter().take(FAILURES_SHOWN) {
        msg.push_str(&format!(
            "\n  {}: {}",
            path_text(&f.path),
            printable(&f.reason)
        ));
    }
    let more = failed.saturating_sub(FAILURES_SHOWN.min(failures.len()) as u64);
    if more > 0 {
        msg.push_str(&format!("\n  ... and {more} more (--json lists them)"));
    }
    anyhow::anyhow!(msg)
}
