//! Any byte stream given to `Store::ingest` (as `cellar snapshot FILE` gives it) must either
//! be refused with an error that records nothing and leaves no pack behind, or be stored so
//! that `export` gives back exactly the stream (after a gzip or zstd wrapper, which the engine
//! undoes). Never a panic, a hang or a huge allocation.
//!
//! Each accepted input is ingested a second time under the same name, so the second ingest has
//! a parent (cut hints, delta-compressed pieces and directory records); both snapshots are
//! exported and compared, and both trees are walked.

use std::io::{Cursor, Read};

use sha2::{Digest, Sha256};

use super::files_under;
use crate::error::Result;
use crate::ingest::{IngestInput, IngestOptions, IngestReport};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::Kind;

/// A fresh store every this many inputs, so it stays small.
const RESET: u64 = 500;

/// What became of an input that kept the property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, and given back exactly.
    Stored,
    /// Refused with an error, nothing recorded.
    Refused,
}

/// One store, reused across inputs; panics when an input breaks the property.
pub struct IngestHarness {
    dir: Option<tempfile::TempDir>,
    store: Option<Store>,
    n: u64,
}

impl Default for IngestHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestHarness {
    pub fn new() -> Self {
        IngestHarness {
            dir: None,
            store: None,
            n: 0,
        }
    }

    /// Ingest `data` and check what came of it.
    pub fn check(&mut self, data: &[u8]) -> Outcome {
        if self.store.is_none() || self.n.is_multiple_of(RESET) {
            self.store = None;
            let dir = tempfile::Builder::new()
                .prefix("cellar-fuzz-")
                .tempdir()
                .expect("tempdir");
            self.store = Some(Store::create(dir.path()).expect("create store"));
            self.dir = Some(dir);
        }
        self.n += 1;
        let name = format!("f{}", self.n);
        let packs = self.dir.as_ref().expect("a store").path().join("packs");
        let store = self.store.as_ref().expect("a store");
        let packs_before = files_under(&packs);

        match ingest_once(store, &name, data) {
            Err(e) => {
                // Refused: nothing recorded, no pack left behind, and the message says something.
                assert!(!e.to_string().is_empty());
                let listed = store.list(Some(&name)).expect("list");
                assert!(listed.is_empty(), "failed ingest recorded a snapshot: {e}");
                assert_eq!(
                    files_under(&packs),
                    packs_before,
                    "failed ingest left packs behind: {e}"
                );
                Outcome::Refused
            }
            Ok(report) => {
                let want = expected_stream(data)
                    .expect("ingest accepted a stream the harness cannot decompress");
                check_exported(store, &report.snapshot, &want);
                walk(store, &report.snapshot);
                // Again, now with a parent: hints, deltas against the parent's pieces and records.
                let again = ingest_once(store, &name, data)
                    .unwrap_or_else(|e| panic!("second ingest of an accepted stream failed: {e}"));
                assert_eq!(again.snapshot.parent, Some(report.snapshot.id));
                check_exported(store, &again.snapshot, &want);
                assert_eq!(
                    again.snapshot.tree.as_ref().map(|t| t.child),
                    report.snapshot.tree.as_ref().map(|t| t.child),
                    "the same stream gave a different tree"
                );
                walk(store, &again.snapshot);
                Outcome::Stored
            }
        }
    }
}

/// What the engine is promised to hand back: the stream after any gzip/zstd wrapper.
fn expected_stream(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match crate::ingest::wrapper::codec_of(data) {
        Some("gzip") => {
            crate::ingest::gzip::GzipMembers::new(data).read_to_end(&mut out)?;
        }
        Some(_) => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
        None => out.extend_from_slice(data),
    }
    Ok(out)
}

/// Walk the tree the way `cellar tree`/`ls` and FUSE would: every directory record, and reads
/// of every file at its start, middle and end.
fn walk(store: &Store, snap: &Snapshot) {
    let tree = store.tree(snap).expect("a fresh snapshot has a tree");
    let mut stack = vec![tree.root().clone()];
    let mut buf = [0u8; 512];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let nodes = tree.readdir(&dir).expect("readdir of a fresh snapshot");
        for n in nodes.iter() {
            seen += 1;
            match n.kind {
                Kind::Dir => stack.push(n.clone()),
                Kind::File => {
                    // A read must succeed (sparse holes read as zeros) wherever it starts.
                    for off in [0, n.size / 2, n.size.saturating_sub(1)] {
                        tree.read_at(n, off, &mut buf)
                            .unwrap_or_else(|e| panic!("read_at({off}) of a file: {e}"));
                    }
                }
                _ => {}
            }
        }
        assert!(seen < 1_000_000);
    }
}

fn ingest_once(store: &Store, name: &str, data: &[u8]) -> Result<IngestReport> {
    store.ingest(
        IngestInput::stream(Cursor::new(data.to_vec())),
        IngestOptions::new(name),
        || Ok(()),
    )
}

fn check_exported(store: &Store, snap: &Snapshot, want: &[u8]) {
    let mut out = Vec::new();
    store
        .export(snap, &mut out)
        .unwrap_or_else(|e| panic!("export of a fresh snapshot failed: {e}"));
    assert_eq!(
        out.len(),
        want.len(),
        "exported length differs from the input"
    );
    assert!(out == want, "exported bytes differ from the input");
    assert_eq!(snap.stream_len, want.len() as u64);
    assert_eq!(snap.stream_sha256, hex::encode(Sha256::digest(want)));
}
