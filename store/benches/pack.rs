//! Pack files: writing compressed frame records (`PackWriter::append`, then `seal`: fsync,
//! rename to the content hash, fsync the directory), and reading them back as the read path
//! does (scan the record headers, `pread` each payload, decompress, blake3-verify each chunk).
//! Throughput is raw (uncompressed) bytes.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use cellar_store::pack::format::Entry;
use cellar_store::pack::{scan, ChunkKind, Codec, PackWriter, RecordHeader, RecordKind};
use cellar_store::ChunkId;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Records for `data`: its chunks in ~2 MiB frames, compressed as the writer does unless that does not
/// shrink them, exactly as the compression workers build them.
fn records(data: &[u8]) -> Vec<(RecordHeader, Vec<u8>)> {
    let mut zstd = cellar_store::pack::compress::frame_compressor().expect("zstd");
    let mut out = Vec::new();
    let mut entries = Vec::new();
    let mut raw = Vec::new();
    let chunks = common::chunks(data);
    for (i, chunk) in chunks.iter().enumerate() {
        entries.push(Entry {
            id: ChunkId(*blake3::hash(chunk).as_bytes()),
            kind: ChunkKind::Data,
            len: chunk.len() as u32,
        });
        raw.extend_from_slice(chunk);
        if raw.len() >= common::FRAME_TARGET || i + 1 == chunks.len() {
            let z = zstd.compress(&raw).expect("compress");
            let (codec, payload) = if z.len() < raw.len() {
                (Codec::Zstd, z)
            } else {
                (Codec::None, std::mem::take(&mut raw))
            };
            out.push((
                RecordHeader {
                    kind: RecordKind::Chunks,
                    codec,
                    raw_len: raw.len().max(payload.len()) as u32,
                    stored_len: payload.len() as u32,
                    base: None,
                    entries: std::mem::take(&mut entries),
                },
                payload,
            ));
            raw.clear();
        }
    }
    // raw_len as the workers compute it: the sum of the entries.
    for (h, _) in &mut out {
        h.raw_len = h.entries.iter().map(|e| e.len).sum();
    }
    out
}

fn pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("pack");
    let (label, tar) = common::tar();
    for (name, data) in [("mixed", common::mixed()), (label.as_str(), &tar[..])] {
        let records = records(data);
        let raw: u64 = records.iter().map(|(h, _)| h.raw_len as u64).sum();
        g.throughput(Throughput::Bytes(raw));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        g.bench_function(format!("write+seal/{name}"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    // One pack per 32 MiB of stored bytes, as ingest seals them.
                    let mut sealed = Vec::new();
                    let mut w = PackWriter::create(dir.path()).expect("create pack");
                    for (h, payload) in &records {
                        w.append(h, payload).expect("append");
                        if w.len() >= 32 << 20 {
                            sealed.push(w.seal().expect("seal"));
                            w = PackWriter::create(dir.path()).expect("create pack");
                        }
                    }
                    sealed.push(w.seal().expect("seal"));
                    sealed
                },
                BatchSize::PerIteration,
            )
        });

        // One pack holding every record, read back whole.
        let mut w = PackWriter::create(dir.path()).expect("create pack");
        for (h, payload) in &records {
            w.append(h, payload).expect("append");
        }
        let sealed = w.seal().expect("seal");
        let path = dir
            .path()
            .join("packs")
            .join(&sealed.id.hex()[..2])
            .join(format!("{}.pack", sealed.id.hex()));
        assert!(path.is_file(), "pack at {}", path.display());
        g.bench_function(format!("read+verify/{name}"), |b| {
            let mut unzstd = zstd::bulk::Decompressor::new().expect("zstd");
            b.iter(|| {
                let file = File::open(&path).expect("open pack");
                let mut payload = Vec::new();
                let mut n = 0u64;
                scan(&path, |found| {
                    let h = &found.header;
                    payload.resize(h.stored_len as usize, 0);
                    file.read_exact_at(&mut payload, found.payload_offset)
                        .expect("pread");
                    let raw = match h.codec {
                        Codec::Zstd => unzstd
                            .decompress(&payload, h.raw_len as usize)
                            .expect("decompress"),
                        _ => payload.clone(),
                    };
                    let mut at = 0;
                    for e in &h.entries {
                        let chunk = &raw[at..at + e.len as usize];
                        assert_eq!(blake3::hash(chunk).as_bytes(), &e.id.0);
                        at += e.len as usize;
                    }
                    n += raw.len() as u64;
                    Ok(())
                })
                .expect("scan");
                black_box(n)
            })
        });
        let _ = std::fs::remove_dir_all(dir.path().join("packs"));
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = pack }
criterion_main!(benches);
