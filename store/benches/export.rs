//! Tar replay: `Store::export` of a snapshot (every chunk read from its pack, decompressed,
//! verified, and the stream's sha256 checked), and for comparison a cold ingest of the same
//! stream into a fresh store (`Store::ingest`: parse, chunk, hash, compress, pack, index), and
//! the stream as a compressed image layer (`Store::write_layer`: the export, compressed and
//! hashed; gzip-6 and zstd-3, as `push` and `serve --compression` make them). Throughput is
//! stream bytes.

mod common;

use std::io::Cursor;

use cellar_store::oci::{Codec, LayerKey, LayerSpec};
use cellar_store::{IngestOptions, Store};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn export(c: &mut Criterion) {
    let mut g = c.benchmark_group("export");
    let (label, tar) = common::tar();
    g.throughput(Throughput::Bytes(tar.len() as u64));
    let (_dir, store, snap) = common::store_with(tar);
    g.bench_function(format!("export/{label}"), |b| {
        b.iter(|| {
            let mut out = std::io::sink();
            store.export(&snap, &mut out).expect("export");
        })
    });
    for codec in [Codec::Zstd, Codec::Gzip] {
        let key = LayerKey {
            spec: LayerSpec::Exact(snap.id),
            codec,
        };
        g.bench_function(format!("layer {codec:?}/{label}"), |b| {
            b.iter(|| {
                let mut out = std::io::sink();
                black_box(store.write_layer(&key, &mut out).expect("layer"));
            })
        });
    }
    g.bench_function(format!("ingest cold/{label}"), |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let store = Store::create(&dir.path().join("s")).expect("create store");
                let input: Box<dyn std::io::Read + Send> = Box::new(Cursor::new(tar.clone()));
                let report = store
                    .ingest(input, IngestOptions::new("bench"), || Ok(()))
                    .expect("ingest");
                black_box(report.new_bytes);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function(format!("ingest unchanged/{label}"), |b| {
        b.iter(|| {
            let input: Box<dyn std::io::Read + Send> = Box::new(Cursor::new(tar.clone()));
            let report = store
                .ingest(input, IngestOptions::new("bench"), || Ok(()))
                .expect("ingest");
            black_box(report.new_bytes)
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = export }
criterion_main!(benches);
