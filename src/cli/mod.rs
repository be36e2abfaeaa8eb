//! The command line, as clap derives it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand};

mod image;
use image::parse_label;
pub use image::{ImageArgs, LayersArg, PackArgs, PushArgs, ServeArgs};

pub use crate::exit::{Incomplete, Interrupted, UsageError};
use cellar_store::DataCheck;

#[derive(Parser, Debug)]
#[command(
    name = "cellar",
    version,
    about = "Content-addressed snapshots of machine root filesystems"
)]
pub struct Cli {
    /// The store directory [default: $XDG_DATA_HOME/cellar, else ~/.local/share/cellar]
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
    /// Find paths matching patterns in every snapshot (or some), restic's `find`
    Find(FindArgs),
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
    /// Salvage what damaged pack files still hold into a new pack, and set them aside
    RepairPacks(RepairPacksArgs),
    /// Reclaim what no snapshot references: delete dead packs, repack mostly-dead ones
    Gc(GcArgs),
    /// Serve snapshots read-only over the OCI distribution API (repository = NAME)
    Serve(ServeArgs),
    /// Push a snapshot's image to a registry
    Push(PushArgs),
    /// Serve a snapshot and run `smolvm pack create` on its image
    Pack(PackArgs),
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
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every record of every pack and check every chunk's hash, naming the
    /// snapshots and paths each damaged chunk hurts
    #[arg(long)]
    pub data: bool,
    /// As --data, for subset N of T of the packs (split by pack id; subsets 1/T to T/T read
    /// every pack once between them)
    #[arg(long, value_name = "N/T", value_parser = parse_subset, conflicts_with = "data")]
    pub data_subset: Option<DataCheck>,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

impl VerifyArgs {
    pub fn scope(&self) -> DataCheck {
        match self.data_subset {
            Some(subset) => subset,
            None if self.data => DataCheck::All,
            None => DataCheck::Index,
        }
    }
}

/// `N/T`, 1 <= N <= T <= 2^32 - 1, in plain digits: subset N of T.
fn parse_subset(s: &str) -> Result<DataCheck, String> {
    let bad = || format!("expected N/T with 1 <= N <= T, e.g. 2/7, got {s:?}");
    let number = |d: &str| -> Result<u32, String> {
        if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) || d.starts_with('0') {
            return Err(bad());
        }
        d.parse()
            .map_err(|_| format!("{s:?}: N and T are at most {}", u32::MAX))
    };
    let (n, of) = s.split_once('/').ok_or_else(bad)?;
    let (n, of) = (number(n)?, number(of)?);
    if n > of {
        return Err(bad());
    }
    Ok(DataCheck::Subset { n, of })
}

#[derive(Args, Debug)]
pub struct RepairIndexArgs {
    /// Replace a readable index even when damaged packs had to be skipped (the rebuilt one
    /// then lacks what only they hold)
    #[arg(long)]
    pub force: bool,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RepairPacksArgs {
    /// Packs to salvage (id prefixes), even if their contents hash to their names; default:
    /// every pack file whose contents do not
    #[arg(value_name = "PACK")]
    pub packs: Vec<String>,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Snapshots: ids, unique id prefixes, NAME or NAME~N
    #[arg(required = true)]
    pub snaps: Vec<String>,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Only this lineage [default: every lineage, each on its own]
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the newest N snapshots (-1: all of them, as for every --keep-* count)
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the newest N hours that have one
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N days that have one
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the newest N ISO weeks that have one
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N months that have one
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N years that have one
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within SPAN (1y6m7d12h: years, months, days, hours) before
    /// the lineage's newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<cellar_store::Within>,
    /// Keep the newest snapshot of each hour that has one within SPAN before the newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_hourly: Option<cellar_store::Within>,
    /// Keep the newest snapshot of each day that has one within SPAN before the newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_daily: Option<cellar_store::Within>,
    /// Keep the newest snapshot of each ISO week that has one within SPAN before the newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_weekly: Option<cellar_store::Within>,
    /// Keep the newest snapshot of each month that has one within SPAN before the newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_monthly: Option<cellar_store::Within>,
    /// Keep the newest snapshot of each year that has one within SPAN before the newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_yearly: Option<cellar_store::Within>,
    /// Keep every snapshot carrying this label: KEY (any value) or KEY=VALUE (repeatable)
    #[arg(long = "keep-label", value_name = "KEY[=VALUE]")]
    pub keep_labels: Vec<cellar_store::LabelMatch>,
    /// Show what would be kept and forgotten, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON document on stdout
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
    /// Return once the mount answers; the mount keeps running in the background, as the process
    /// it names, and logs to a file it names
    #[arg(long)]
    pub daemon: bool,
    /// With --daemon: print {"mountpoint", "pid", "log"} on stdout once the mount answers
    #[arg(long, requires = "daemon")]
    pub json: bool,
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
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Wildcards per component (`*`, `?`, `[...]`, none matching `/`): a pattern matches a path
    /// whose last components match its own (`*.conf`, `apt/sources.list`), or, starting with
    /// `/`, the whole path (`/etc/*`); ending in `/`, directories only
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<OsString>,
    /// Only snapshots of this name
    #[arg(long, conflicts_with = "snapshots")]
    pub name: Option<String>,
    /// Only this snapshot (repeatable): id, unique id prefix, NAME or NAME~N
    #[arg(long = "snapshot", short = 's', value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// Long listing, like `ls -l` with numeric owners
    #[arg(short = 'l')]
    pub long: bool,
    /// Print the result as one JSON document on stdout
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
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(
    group(ArgGroup::new("input").required(true).args(["source", "command", "dir"])),
    override_usage = "cellar snapshot [OPTIONS] <SOURCE | -- CMD [ARGS]... | --dir DIR>"
)]
pub struct SnapshotArgs {
    /// Lineage name: lowercase letters and digits joined by '.', '_', '__' or dashes
    #[arg(long, default_value = cellar_store::DEFAULT_NAME)]
    pub name: String,
    /// A label to record with the snapshot (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// An exit code of CMD (0 to 255) that still records the snapshot, with a warning
    /// (repeatable)
    #[arg(long = "allow-exit", value_name = "CODE", value_parser = clap::value_parser!(i32).range(0..=255))]
    pub allow_exit: Vec<i32>,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Archive a local directory natively (no external tar), in cellar's deterministic dialect
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With --dir: leave out paths matching this glob (repeatable; `*.log`, `var/cache/*`)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<OsString>,
    /// With --dir: do not descend into other filesystems
    #[arg(long)]
    pub one_file_system: bool,
    #[command(flatten)]
    pub image: ImageArgs,
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
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Write to FILE (a directory for --format oci) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// tar: the exact ingested stream; oci: an OCI image layout; docker-archive: `docker save`
    #[arg(long, value_enum, default_value_t = ExportFormat::Tar)]
    pub format: ExportFormat,
    /// tar only: instead of the stream, a tar of this path and all below it, made from the
    /// snapshot's tree (members named from its root: ./etc/apt/...)
    #[arg(long, value_name = "P")]
    pub path: Option<OsString>,
    /// The image's tag (oci, docker-archive) [default: latest]
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    /// Report as JSON on stdout (needs -o): the image, or for tar the stream's size and sha256
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub layers: LayersArg,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Tar,
    Oci,
    DockerArchive,
}

impl ExportArgs {
    /// Whether what is exported goes to stdout: no `-o`, `-o -`, or a name of descriptor 1.
    pub fn to_stdout(&self) -> bool {
        self.output
            .as_deref()
            .is_none_or(|p| p == Path::new("-") || inherited_fd(p) == Some(1))
    }
}

/// The descriptor `path` names as it is, if it names one: `/dev/stdout`, `/dev/stderr`,
/// `/dev/fd/N`, `/proc/self/fd/N`.
pub fn inherited_fd(path: &Path) -> Option<i32> {
    let p = path.to_str()?;
    match p {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        // Digits as the kernel reads them: no sign, no leading 0 (`/dev/fd/01` is no name).
        _ => p
            .strip_prefix("/dev/fd/")
            .or_else(|| p.strip_prefix("/proc/self/fd/"))
            .filter(|n| {
                n.bytes().all(|b| b.is_ascii_digit()) && (n == &"0" || !n.starts_with('0'))
            })?
            .parse()
            .ok(),
    }
}

#[derive(Args, Debug)]
pub struct JsonArg {
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

/// A `--keep-*` count: N, or -1 for no limit (restic's spelling), taken as `u32::MAX`.
fn parse_count(s: &str) -> Result<u32, String> {
    match s {
        "-1" => Ok(u32::MAX),
        _ => s
            .parse()
            .map_err(|_| "expected a count (0 or more) or -1 (no limit)".to_string()),
    }
}
