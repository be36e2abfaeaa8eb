//! `cellar find`: paths matching patterns, snapshot by snapshot (restic's `find`).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::Context;

use cellar_store::{Finder, Node, ReadLease, Snapshot};
use serde::Serialize;

use super::tree::{entry_json, shown, written, Columns, EntryJson};
use crate::cli::FindArgs;
use crate::output::{errln, write_indented, JsonArray};

/// A snapshot's element of `--json`, but its `matches`, which follow `hits`.
#[derive(Serialize)]
struct Found {
    id: String,
    short_id: String,
    name: String,
    created: String,
    hits: u64,
}

/// One snapshot's matches as `--json` lays them out (inside its element), spooled to an
/// unnamed temporary file: a snapshot can match millions of paths, and `hits`, which comes
/// first, is known only once they are all found.
#[derive(Default)]
struct Spool {
    file: Option<BufWriter<File>>,
}

impl Spool {
    fn push(&mut self, entry: &EntryJson) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(entry)?;
        let file = match &mut self.file {
            Some(f) => {
                f.write_all(b",\n")?;
                f
            }
            None => self.file.insert(BufWriter::new(
                tempfile::tempfile().context("spooling matches")?,
            )),
        };
        write_indented(file, &text, 6).context("spooling matches")
    }

    /// The element of `found`, its matches copied from the spool.
    fn write(self, out: &mut dyn Write, found: &Found) -> anyhow::Result<()> {
        let head = serde_json::to_string_pretty(found)?;
        let head = head.strip_suffix("\n}").expect("an object");
        write_indented(out, head, 2)?;
        written(out.write_all(b",\n    \"matches\": [\n"))?;
        if let Some(file) = self.file {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            let mut file = std::io::BufReader::with_capacity(1 << 20, file);
            written(std::io::copy(&mut file, out).map(drop))?;
        }
        written(out.write_all(b"\n    ]\n  }"))
    }
}

pub fn run(lease: &ReadLease, args: FindArgs) -> anyhow::Result<()> {
    let store = lease.store();
    let patterns: Vec<&[u8]> = args.patterns.iter().map(|p| p.as_bytes()).collect();
    let mut finder = Finder::new(&patterns)?;
    // Every snapshot is resolved (and pinned) before any is searched: a bad SNAP searches
    // nothing.
    let snaps = if args.snapshots.is_empty() {
        if let Some(name) = &args.name {
            cellar_store::validate_lookup_name(name)?;
        }
        store.list(args.name.as_deref())?
    } else {
        let mut snaps: Vec<Snapshot> = Vec::new();
        for spec in &args.snapshots {
            let s = lease.resolve(spec)?;
            if !snaps.iter().any(|x| x.id == s.id) {
                snaps.push(s);
            }
        }
        snaps
    };
    if let (Some(name), true) = (&args.name, snaps.is_empty()) {
        errln!("cellar: no snapshots named {name}");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut columns = Columns::default();
    // `--json` is one array, written a snapshot at a time, each snapshot's matches spooled
    // to a temporary file until its count is known.
    let mut json = args.json.then(JsonArray::default);
    let (mut searched, mut hits) = (0, 0);
    for snap in &snaps {
        match lease.pin(&snap.id) {
            // Forgotten since it was listed: nothing to search.
            Err(cellar_store::Error::NotFound(_)) => continue,
            other => other?,
        }
        let tree = match store.tree(snap) {
            Ok(tree) => tree,
            Err(cellar_store::Error::InvalidArgument(why)) => {
                errln!("cellar: warning: {why}: not searched");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut matches = Spool::default();
        let id = snap.short_id();
        let n = finder.find_in(&tree, |path: &[u8], node: &Node| -> anyhow::Result<()> {
            if args.json {
                matches.push(&entry_json(path, node))?;
            } else if args.long {
                written(writeln!(out, "{id} {}", columns.line(path, node)))?;
            } else {
                written(writeln!(out, "{id} {}", shown(path)))?;
            }
            Ok(())
        })?;
        lease.unpin(&snap.id);
        searched += 1;
        hits += n;
        if let (Some(json), true) = (&mut json, n > 0) {
            let found = Found {
                id: snap.id.hex(),
                short_id: id,
                name: snap.name.clone(),
                created: snap.created.clone(),
                hits: n,
            };
            json.push_with(&mut out, |out| matches.write(out, &found))?;
        }
    }
    if let Some(json) = json {
        json.end(&mut out)?;
    }
    written(out.flush())?;
    errln!(
        "cellar: {hits} match{} in {searched} snapshot{}",
        if hits == 1 { "" } else { "es" },
        if searched == 1 { "" } else { "s" }
    );
    Ok(())
}
