//! `cellar restore`: write a snapshot's tree (or one path in it) into a directory.

use std::os::unix::ffi::OsStrExt;

use cellar_store::restore::{restore, RestoreOptions};
use cellar_store::ReadLease;
use serde::Serialize;

use crate::cli::RestoreArgs;
use crate::output::{errln, human_bytes, print_json};

#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot: String,
    path: String,
    dir: String,
    files: u64,
    bytes: u64,
    warnings: &'a [String],
}

pub fn run(lease: &ReadLease, args: RestoreArgs) -> anyhow::Result<()> {
    let store = lease.store();
    let snap = lease.resolve(&args.snap)?;
    // Raw bytes (names need not be UTF-8); the engine ignores surrounding slashes.
    let path = args
        .path
        .as_deref()
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    let opts = RestoreOptions { force: args.force };
    let report = restore(store, &snap, &path, &args.dir, &opts)?;
    for w in &report.warnings {
        errln!("cellar: warning: {w}");
    }
    let normal = cellar_store::tree::normalize_path(&path);
    let shown_path = format!("/{}", String::from_utf8_lossy(&normal));
    errln!(
        "restored {} {} ({}) of {} into {}",
        report.files,
        if report.files == 1 {
            "entry"
        } else {
            "entries"
        },
        human_bytes(report.bytes),
        if normal.is_empty() {
            snap.short_id()
        } else {
            format!("{}:{shown_path}", snap.short_id())
        },
        args.dir.display()
    );
    if args.json {
        print_json(&RestoreJson {
            snapshot: snap.id.hex(),
            path: shown_path,
            dir: args.dir.display().to_string(),
            files: report.files,
            bytes: report.bytes,
            warnings: &report.warnings,
        })?;
    }
    Ok(())
}
