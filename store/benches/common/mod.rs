//! Inputs shared by the benches, generated deterministically in-process.
//!
//! - `mixed`: 32 MiB of a seeded pseudo-random + repetitive mix (incompressible blocks, text-like
//!   lines that compress about 4x, and repeats of earlier blocks that dedup).
//! - `tar`: a real tar stream of a directory, written by the engine's own `--dir` archiver:
//!   `CELLAR_BENCH_DIR` if set, else `/usr/share/doc` when present, else a generated tree of
//!   about 32 MiB (files cut from `mixed`) in a temporary directory.
//!
//! Each bench binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cellar_store::tar::{write_dir, DirOptions};
use cellar_store::{Chunker, IngestOptions, Snapshot, Store};
use criterion::Criterion;

pub const MIXED_LEN: usize = 32 << 20;
/// Ingest compresses new chunks together in frames of about this many raw bytes.
pub use cellar_store::pack::compress::FRAME_TARGET;

/// Short runs: the inputs are tens of MiB, so a handful of samples is already stable.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args()
}

/// xorshift64*: tiny, seeded, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        while out.len() < end {
            let n = (end - out.len()).min(8);
            out.extend_from_slice(&self.next().to_le_bytes()[..n]);
        }
    }
}

const WORDS: &[&str] = &[
    "usr",
    "lib",
    "share",
    "config",
    "value",
    "enabled",
    "true",
    "false",
    "path",
    "module",
    "version",
    "package",
    "depends",
    "license",
    "copyright",
    "the",
    "of",
    "and",
    "to",
    "in",
];

fn text(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let words = 2 + rng.below(8);
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
        out.extend_from_slice(format!(" = {}\n", rng.below(1000)).as_bytes());
    }
    out.truncate(end);
}

fn generate(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + (256 << 10));
    while out.len() < len {
        let block = (16 << 10) + rng.below(240 << 10) as usize;
        match rng.below(10) {
            0..=3 => rng.fill(&mut out, block),
            4..=7 => text(&mut rng, &mut out, block),
            _ if out.len() > block => {
                // A repeat of an earlier stretch (a copied file, a duplicated library).
                let from = rng.below((out.len() - block) as u64) as usize;
                out.extend_from_within(from..from + block);
            }
            _ => rng.fill(&mut out, block),
        }
    }
    out.truncate(len);
    out
}

/// 32 MiB of the seeded mix.
pub fn mixed() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| generate(MIXED_LEN, 42))
}

/// A real tar stream (see the module documentation), with a label naming its source.
pub fn tar() -> &'static (String, Vec<u8>) {
    static DATA: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = std::env::var_os("CELLAR_BENCH_DIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/usr/share/doc")).filter(|d| d.is_dir()));
        let mut out = Vec::new();
        let label = match dir {
            Some(d) => {
                write_dir(&d, &DirOptions::default(), &mut out).expect("archive the bench dir");
                format!("tar {}", d.display())
            }
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                generated_tree(tmp.path());
                write_dir(tmp.path(), &DirOptions::default(), &mut out)
                    .expect("archive the generated tree");
                "tar generated-tree".to_string()
            }
        };
        eprintln!("bench input: {label}, {} bytes", out.len());
        (label, out)
    })
}

/// About 32 MiB in 2,000 files of 0..64 KiB plus a few large ones, in 40 directories.
fn generated_tree(root: &Path) {
    let data = mixed();
    let mut rng = Rng::new(7);
    let mut pos = 0usize;
    let mut take = |len: usize| {
        if pos + len > data.len() {
            pos = 0;
        }
        pos += len;
        &data[pos - len..pos]
    };
    for d in 0..40 {
        let dir = root.join(format!("pkg{d:02}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..50 {
            let len = if f == 0 {
                512 << 10
            } else {
                rng.below(64 << 10) as usize
            };
            std::fs::write(dir.join(format!("file{f:03}")), take(len)).expect("write");
        }
    }
}

/// The chunks ingest would cut from `data` (as one payload).
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut lens = Vec::new();
    let mut pos = 0;
    Chunker::default()
        .chunk(
            |buf| {
                let n = buf.len().min(data.len() - pos);
                buf[..n].copy_from_slice(&data[pos..pos + n]);
                pos += n;
                Ok(n)
            },
            |c| {
                lens.push(c.len());
                Ok(())
            },
        )
        .expect("chunking");
    let mut at = 0;
    lens.into_iter()
        .map(|l| {
            at += l;
            &data[at - l..at]
        })
        .collect()
}

/// Chunks grouped into frames of about `FRAME_TARGET` raw bytes, as the sink groups them.
pub fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(FRAME_TARGET + (64 << 10));
    for c in chunks(data) {
        cur.extend_from_slice(c);
        if cur.len() >= FRAME_TARGET {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A fresh store in a temporary directory holding `stream` as snapshot `bench`.
pub fn store_with(stream: &[u8]) -> (tempfile::TempDir, Store, Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::create(&dir.path().join("store")).expect("create store");
    let input: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(stream.to_vec()));
    let report = store
        .ingest(input, IngestOptions::new("bench"), || Ok(()))
        .expect("ingest");
    (dir, store, report.snapshot)
}
