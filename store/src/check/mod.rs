//! Checking a store (`verify`) and rebuilding its index from the packs alone (`repair_index`).
//!
//! `Store::verify` runs in one read transaction, so a commit that lands meanwhile is either
//! wholly seen or not at all. Its phases:
//!
//! 1. `index`: the index against itself and the pack files' sizes (every frame's pack, every
//!    chunk's frame and range, every delta's base), then every snapshot's recipe (piece list →
//!    pieces → items → chunk lists) and tree (directory records → file chunk lists). Metadata
//!    objects are read, which verifies them; data chunks only need an index row. Objects shared
//!    by snapshots are checked once.
//! 2. `data` (with `--data`, or a subset of the packs with `--data-subset`): every record of
//!    every indexed pack is read, decoded and each of its chunks hashed; the pack file is
//!    hashed against its name; snapshot and forget records are checked against the snapshot
//!    rows.
//! 3. `hurts`: if any chunk is bad, every snapshot's recipe and tree is walked again to name
//!    what each bad chunk damages (a file path, or the exported stream).
//!
//! Leftovers (pack files no row names, `tmp/` files) are notes, not problems.
//!
//! Phases 1 and 3 walk chunk lists through `walk::Probe`, which names the chunk a walk stopped
//! at.

mod copies;
mod data;
mod hurts;
mod index;
mod rebuild_packs;
mod repair;
mod replaced;
mod salvage;
mod settle;
mod walk;

use std::collections::HashMap;

pub(crate) use repair::finish_swap;
pub use repair::{repair_index, RepairReport};
pub use salvage::{repair_packs, SalvageReport, SalvagedPack};

use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::pack::ChunkKind;
use crate::store::Store;

/// Runs of `verify` at most, while a gc changes packs under it.
const VERIFY_RUNS: u32 = 3;

/// How much of the packs' bytes `Store::verify` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataCheck {
    /// None: the index is checked against itself and the pack files' sizes.
    #[default]
    Index,
    /// Every pack (`--data`).
    All,
    /// Subset `n` of `of` (1-based), split by pack id (`--data-subset N/T`, restic's
    /// `--read-data-subset`): subsets 1 to `of` read every pack once between them, so a
    /// store too large to read at once is read over `of` runs.
    Subset { n: u32, of: u32 },
}

impl DataCheck {
    pub fn reads_data(self) -> bool {
        self != DataCheck::Index
    }

    /// Whether every pack is read (`1/1` is `--data`): only then can records be missed or be
    /// judged unlisted, which takes every snapshot and forget record.
    pub(crate) fn reads_all(self) -> bool {
        matches!(self, DataCheck::All | DataCheck::Subset { of: 1, .. })
    }

    /// Whether this check reads pack `id`. Pack ids are hashes, so the subsets are of about
    /// equal numbers of packs.
    pub(crate) fn reads(self, id: &PackId) -> bool {
        match self {
            DataCheck::Index => false,
            DataCheck::All => true,
            DataCheck::Subset { n, of } => {
                let bucket = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
                bucket % u64::from(of) == u64::from(n) - 1
            }
        }
    }
}

/// What `Store::verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// How much of the packs' bytes was read.
    pub data: DataCheck,
    /// Packs read whole (all of them for `DataCheck::All`, but missing ones).
    pub packs_read: u64,
    /// Rows in the index.
    pub packs: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not damage (unindexed leftovers, reclaimable by gc).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report of a check SQLite stopped, finding the index file damaged (`e`): that is
    /// the problem, and nothing behind it could be counted or checked.
    pub fn index_unreadable(data: DataCheck, e: &Error) -> Self {
        VerifyReport {
            data,
            packs_read: 0,
            packs: 0,
            chunks: 0,
            snapshots: 0,
            problems: vec![Problem::new(
                format!("the index file cannot be read, so nothing else was checked: {e}"),
                None,
                None,
            )],
            notes: Vec::new(),
        }
    }
}

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    /// Why, without the chunk `what` names: problems of many chunks damaged the same way
    /// (a lost pack, a damaged frame) share it.
    pub reason: String,
    pub pack: Option<PackId>,
    /// A byte offset in `pack`: of the record's payload for chunks, else of what is damaged.
    pub offset: Option<u64>,
    /// Set for a bad chunk; `hurts` then lists what uses it, as far as the snapshots'
    /// metadata can be read.
    pub chunk: Option<ChunkId>,
    pub hurts: Vec<Hurt>,
    /// A bad chunk no snapshot uses. Only claimed when every snapshot's metadata could be
    /// read: if some is damaged too, what a chunk hurts may be unknowable.
    pub unreferenced: bool,
}

/// Something a bad chunk damages: a path in a snapshot's tree, or (no path) its stream, i.e.
/// `export`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hurt {
    pub snapshot: SnapshotId,
    pub name: String,
    /// From the root, with a leading `/`: a file whose content uses the chunk, or a directory
    /// whose record is the chunk.
    pub path: Option<Vec<u8>>,
}

impl Problem {
    /// A problem that is not about one chunk, at `pack` and `offset` if known.
    fn new(what: String, pack: Option<PackId>, offset: Option<u64>) -> Self {
        Problem {
            reason: what.clone(),
            what,
            pack,
            offset,
            chunk: None,
            hurts: Vec::new(),
            unreferenced: false,
        }
    }
}

/// A chunk found bad, and why.
#[derive(Debug, Clone)]
struct Bad {
    what: String,
    pack: Option<PackId>,
    offset: Option<u64>,
    kind: Option<ChunkKind>,
}

impl Bad {
    fn new(what: impl Into<String>) -> Self {
        Bad {
            what: what.into(),
            pack: None,
            offset: None,
            kind: None,
        }
    }

    fn at(mut self, pack: PackId, offset: u64, kind: Option<ChunkKind>) -> Self {
        self.pack = Some(pack);
        self.offset = Some(offset);
        self.kind = kind;
        self
    }
}

/// The state of one `verify` run.
struct Verifier<'s> {
    store: &'s Store,
    problems: Vec<Problem>,
    notes: Vec<String>,
    /// Indexed chunks that cannot be read as the index says (first reason wins).
    bad: HashMap<ChunkId, Bad>,
    /// Unindexed pack files (path, name under the store) holding a snapshot the index does
    /// not list: `settle` decides what they are.
    unlisted: Vec<(std::path::PathBuf, String)>,
    /// The pack each problem is in, as the run's transaction saw it (`settle`).
    seen_in: Vec<Option<PackId>>,
}

impl Verifier<'_> {
    fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(Problem::new(what.into(), None, None));
    }

    fn problem_at(&mut self, what: impl Into<String>, pack: PackId, offset: Option<u64>) {
        self.problems
            .push(Problem::new(what.into(), Some(pack), offset));
    }

    fn bad_chunk(&mut self, id: ChunkId, bad: Bad) {
        self.bad.entry(id).or_insert(bad);
    }
}

/// What a problem about chunk `id` says: `KIND ID: REASON`, naming the chunk once. A reason
/// from a read of the chunk itself names it already, as its subject ("chunk ID is not in the
/// index", "list node ID is at level 2, expected 1"): that subject is dropped, and with it a
/// "(pack P, offset O)" right after it, which the problem carries as fields.
fn chunk_problem(kind: Option<ChunkKind>, id: &ChunkId, reason: &str) -> String {
    let short = id.short();
    let rest = ["chunk", "list node"]
        .iter()
        .find_map(|subject| reason.strip_prefix(&format!("{subject} {short}")));
    let reason = match rest {
        Some(rest) => {
            let rest = match rest.strip_prefix(" (").and_then(|r| r.split_once(") ")) {
                Some((_where, r)) => r,
                None => rest.trim_start(),
            };
            rest.strip_prefix("is ").unwrap_or(rest)
        }
        None => reason,
    };
    format!("{} {short}: {reason}", kind_name(kind))
}

/// What reports call a chunk of `kind` (`None`: of a kind not known).
pub fn kind_name(kind: Option<ChunkKind>) -> &'static str {
    match kind {
        Some(ChunkKind::Data) => "data chunk",
        Some(ChunkKind::Piece) => "piece",
        Some(ChunkKind::Node) => "list node",
        Some(ChunkKind::Snapshot) => "snapshot record",
        Some(ChunkKind::Dir) => "directory record",
        None => "chunk",
    }
}

/// A `chunks.kind` value as a kind; None if it is no kind.
fn chunk_kind(kind: i64) -> Option<ChunkKind> {
    u8::try_from(kind).ok().and_then(ChunkKind::from_u8)
}

/// An error's message without the "store damaged:" prefix.
fn reason(e: &Error) -> String {
    match e {
        Error::Corrupt(s) => s.clone(),
        e => e.to_string(),
    }
}

/// A read transaction on the store's connection for the whole run (rolled back at the end:
/// verify writes nothing but its own temp table).
struct ReadTx<'s>(&'s Store);

impl<'s> ReadTx<'s> {
    fn begin(store: &'s Store) -> Result<Self> {
        let db = store.db();
        db.conn().execute_batch("BEGIN")?;
        // The snapshot is taken by the first read.
        db.conn()
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
        Ok(ReadTx(store))
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        let db = self.0.db();
        let _ = db.conn().execute_batch("ROLLBACK");
    }
}

impl Store {
    /// Check the index (and with `data`, every byte of every indexed pack). Damage is
    /// reported, not returned as an error; `Err` means the check itself could not run.
    pub fn verify(&self, data: DataCheck) -> Result<VerifyReport> {
        // gc deletes and repacks packs beside a run: one whose transaction saw packs go
        // (`settle`) and still has findings is made again, so what it reports is damage.
        let mut runs = 1;
        loop {
            let (mut report, packs_went) = match self.verify_once(data) {
                Err(e) if e.index_damaged() => return Ok(VerifyReport::index_unreadable(data, &e)),
                r => r?,
            };
            if report.ok() || !packs_went || runs == VERIFY_RUNS {
                if runs > 1 {
                    report.notes.push(format!(
                        "checked {runs} times: a gc deleted or repacked packs while it ran"
                    ));
                }
                return Ok(report);
            }
            runs += 1;
        }
    }

    /// One run; true if packs it saw indexed were gone from the index when it ended.
    fn verify_once(&self, data: DataCheck) -> Result<(VerifyReport, bool)> {
        let mut v = Verifier {
            store: self,
            problems: Vec::new(),
            notes: Vec::new(),
            bad: HashMap::new(),
            unlisted: Vec::new(),
            seen_in: Vec::new(),
        };
        let count = |sql: &str| -> Result<u64> {
            Ok(self
                .db()
                .conn()
                .query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        let (counts, packs_read, seen) = {
            let _tx = ReadTx::begin(self)?;
            crate::failpoint::hit("verify:in-transaction");
            for line in self.db().integrity_problems(100)? {
                v.problem(format!("the index file is damaged (SQLite: {line})"));
            }
            let packs = index::check_tables(&mut v)?;
            let snaps = index::load_snapshots(&mut v)?;
            index::check_snapshots(&mut v, &snaps)?;
            let packs_read = if data.reads_data() {
                data::check_packs(&mut v, &packs, &snaps, data)?
            } else {
                0
            };
            index::leftovers(&mut v, &packs)?;
            hurts::report_bad(&mut v, &snaps)?;
            settle::note_packs(&mut v)?;
            let counts = [
                count("SELECT COUNT(*) FROM packs")?,
                count("SELECT COUNT(*) FROM chunks")?,
                count("SELECT COUNT(*) FROM snapshots")?,
            ];
            (counts, packs_read, packs.iter().map(|p| p.id).collect())
        };
        let packs_went = settle::settle(&mut v, &seen)?;
        let report = VerifyReport {
            data,
            packs_read,
            packs: counts[0],
            chunks: counts[1],
            snapshots: counts[2],
            problems: v.problems,
            notes: v.notes,
        };
        Ok((report, packs_went))
    }
}
