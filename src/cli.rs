//! The command line, as clap derives it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cellar",
    version,
    about = "Content-addressed snapshots of machine root filesystems"
)]
pub struct Cli {
    /// The store directory [default: $XDG_DATA_HOME/cellar]
    #[arg(long, env = "CELLAR_STORE", global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ingest a tar stream as a new snapshot
    Snapshot(SnapshotArgs),
    /// List snapshots in commit order
    List(ListArgs),
    /// Show one snapshot in detail
    Show(ShowArgs),
    /// Write a snapshot's exact tar stream
    Export(ExportArgs),
    /// Store-wide figures: logical and stored bytes, chunks, packs, dedup ratio
    Stats(JsonArg),
    /// List a directory (or one entry) inside a snapshot
    Ls(LsArgs),
    /// Write one file of a snapshot to stdout
    Cat(CatArgs),
    /// What changed between two snapshots, one line per path
    Diff(DiffArgs),
    /// Browse snapshots as a read-only FUSE filesystem
    Mount(MountArgs),
    /// Write a snapshot (or one path in it) into a directory
    Restore(RestoreArgs),
    /// Forget snapshots (their data stays until `gc`)
    Rm(RmArgs),
    /// Forget snapshots by a retention policy, per lineage (restic's rules, in UTC)
    Prune(PruneArgs),
    /// Check the index against the packs (--data: every stored byte); exit 1 on any problem
    Verify(VerifyArgs),
    /// Rebuild the index (cellar.db) from the packs alone, after losing or damaging it
    RepairIndex(RepairIndexArgs),
    /// Reclaim what no snapshot references: delete dead packs, repack mostly-dead ones
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Report what would be reclaimed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds that unreferenced chunks stay readable (for running readers), and that files
    /// no index row names are left alone
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub grace: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every record of every pack and check every chunk's hash, naming the
    /// snapshots and paths each damaged chunk hurts
    #[arg(long)]
    pub data: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RepairIndexArgs {}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Snapshots: ids, unique id prefixes, NAME or NAME~N
    #[arg(required = true)]
    pub snaps: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Only this lineage [default: every lineage, each on its own]
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the newest N snapshots
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the newest N hours that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N days that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the newest N ISO weeks that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N months that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// Show what would be kept and forgotten, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// The directory to write into (created if missing; must be empty unless --force)
    pub dir: PathBuf,
    /// Restore only this path of the snapshot: a directory's contents go directly into DIR,
    /// anything else is written as DIR/NAME [default: /]
    #[arg(long, value_name = "P")]
    pub path: Option<OsString>,
    /// Restore into a non-empty DIR: existing directories are reused, other things in the
    /// way are replaced
    #[arg(long)]
    pub force: bool,
    /// Print the report (files, bytes, warnings) as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Where to mount
    pub mountpoint: PathBuf,
    /// One snapshot at the mount's root [default: every snapshot, as NAME/ID/... and NAME/latest]
    pub snap: Option<String>,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root)
    #[arg(long)]
    pub allow_other: bool,
    /// Return once the mount answers; the mount keeps running in the background and logs to a
    /// file it names
    #[arg(long)]
    pub daemon: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Path inside the snapshot [default: /]
    pub path: Option<OsString>,
    /// Long listing, like `ls -l` with numeric owners
    #[arg(short = 'l')]
    pub long: bool,
    /// Everything below the directory, depth first
    #[arg(short = 'R')]
    pub recursive: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Path of a file inside the snapshot
    pub path: OsString,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot
    pub a: String,
    /// The newer snapshot
    pub b: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["source", "command", "dir"])))]
pub struct SnapshotArgs {
    /// Lineage name: lowercase [a-z0-9][a-z0-9._-]*
    #[arg(long, default_value = cellar_store::DEFAULT_NAME)]
    pub name: String,
    /// A label to record with the snapshot (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// An exit code of CMD that still records the snapshot, with a warning (repeatable)
    #[arg(long = "allow-exit", value_name = "CODE")]
    pub allow_exit: Vec<i32>,
    #[arg(long)]
    pub json: bool,
    /// Archive a local directory natively (no external tar), in cellar's deterministic dialect
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With --dir: leave out paths matching this glob (repeatable; `*.log`, `var/cache/*`)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// With --dir: do not descend into other filesystems
    #[arg(long)]
    pub one_file_system: bool,
    /// `-` for a tar stream on stdin, or a tar file (gzip or zstd compressed is fine)
    #[arg(value_name = "SOURCE")]
    pub source: Option<PathBuf>,
    /// After `--`: a command whose stdout is the tar stream
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only snapshots of this name
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Write to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct JsonArg {
    #[arg(long)]
    pub json: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// An error in how cellar was called, found after parsing (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
