//! Fuzz the tar ingest: any byte stream given to `Store::ingest` (as `cellar snapshot FILE`
//! gives it) must either be refused with an error that records nothing, or be stored so that
//! `export` gives back exactly the (decompressed) stream. Never a panic, a hang or a huge
//! allocation.
//!
//! One store per process (recreated every RESET inputs so it stays small). Each input is
//! ingested under a fresh name; when that succeeds it is ingested a second time under the same
//! name, so the second ingest has a parent (cut hints, delta-compressed pieces and directory
//! records), and both snapshots are exported and compared. The tree is walked too.
#![no_main]

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cellar_store::{Error, IngestOptions, Store};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const RESET: u64 = 500;

struct State {
    dir: Option<tempfile::TempDir>,
    store: Option<Store>,
    n: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    dir: None,
    store: None,
    n: 0,
});

/// What the engine is promised to hand back: the stream after any gzip/zstd wrapper.
fn expected_stream(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match data {
        [0x1f, 0x8b, ..] => {
            flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
        _ => out.extend_from_slice(data),
    }
    Ok(out)
}

/// Every file under `dir` (the packs), to check that a failed ingest leaves none behind.
fn files(dir: &Path) -> Vec<PathBuf> {
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

/// Walk the tree the way `cellar tree`/`ls` and FUSE would: every directory record, and the
/// first bytes of every file.
fn walk(store: &Store, snap: &cellar_store::Snapshot) {
    let tree = store.tree(snap).expect("a fresh snapshot has a tree");
    let mut stack = vec![tree.root().clone()];
    let mut buf = [0u8; 512];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let nodes = tree.readdir(&dir).expect("readdir of a fresh snapshot");
        for n in nodes.iter() {
            seen += 1;
            match n.kind {
                cellar_store::Kind::Dir => stack.push(n.clone()),
                cellar_store::Kind::File => {
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

fn ingest_once(
    store: &Store,
    name: &str,
    data: &[u8],
) -> Result<cellar_store::IngestReport, Error> {
    store.ingest(
        Box::new(Cursor::new(data.to_vec())),
        IngestOptions::new(name),
        || Ok(()),
    )
}

fn check_exported(store: &Store, snap: &cellar_store::Snapshot, want: &[u8]) {
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

fuzz_target!(|data: &[u8]| {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if st.store.is_none() || st.n % RESET == 0 {
        st.store = None;
        let dir = tempfile::Builder::new()
            .prefix("cellar-fuzz-")
            .tempdir()
            .expect("tempdir");
        st.store = Some(Store::create(dir.path()).expect("create store"));
        st.dir = Some(dir);
    }
    st.n += 1;
    let name = format!("f{}", st.n);
    let root = st.dir.as_ref().unwrap().path().to_path_buf();
    let store = st.store.as_ref().unwrap();
    let packs_before = files(&root.join("packs"));

    match ingest_once(store, &name, data) {
        Err(e) => {
            // Refused: nothing recorded, no pack left behind, and the message says something.
            assert!(!e.to_string().is_empty());
            let listed = store.list(Some(&name)).expect("list");
            assert!(listed.is_empty(), "failed ingest recorded a snapshot: {e}");
            assert_eq!(
                files(&root.join("packs")),
                packs_before,
                "failed ingest left packs behind: {e}"
            );
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
        }
    }
});
