//! The properties the fuzz targets in `fuzz/` check, as harnesses that the targets and the
//! test suite share. libFuzzer explores inputs at length off-line; `tests` here runs the same
//! checks on every `cargo test` over real tar streams (the fuzz seeds) and a fixed series of
//! damaged ones, so a regression shows up in CI and not only in a campaign.
//!
//! Compiled for tests and with the `fuzzing` feature; not part of the engine's API.

pub mod damage;
pub mod ingest;
mod pristine;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// Every file below `dir`, sorted (a missing `dir` has none).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// GNU tar's stream (`--format=gnu`) of `names` below `dir`, in that order (a directory
/// without its contents: `--no-recursion`), as a snapshot in a new store at `root`.
#[cfg(test)]
pub(crate) fn snapshot_of_tar(root: &Path, dir: &Path, names: &[String]) -> crate::Snapshot {
    use crate::ingest::{IngestInput, IngestOptions};
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--format=gnu", "--no-recursion", "-cf", "-"])
        .args(names)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::Store::create(root)
        .unwrap()
        .ingest(
            IngestInput::stream(std::io::Cursor::new(out.stdout)),
            IngestOptions::new("vm"),
            || Ok(()),
        )
        .unwrap()
        .snapshot
}

/// A small repeatable generator (xorshift64): the same seed gives the same series everywhere.
pub(crate) fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}
