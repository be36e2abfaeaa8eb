//! zstd frames as the pack writer stores them: chunks grouped into ~2 MiB frames, compressed
//! with the writer's settings and one reused context per worker; and decompressing them back (every read).
//! Throughput is raw (uncompressed) bytes.

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    let (label, tar) = common::tar();
    for (name, data) in [("mixed", common::mixed()), (label.as_str(), &tar[..])] {
        let frames = common::frames(data);
        let raw: usize = frames.iter().map(Vec::len).sum();
        let mut zstd = cellar_store::pack::compress::frame_compressor().expect("zstd");
        let compressed: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| zstd.compress(f).expect("compress"))
            .collect();
        let stored: usize = compressed.iter().map(Vec::len).sum();
        eprintln!(
            "compression/{name}: {raw} raw bytes in {} frames -> {stored} ({:.2}x)",
            frames.len(),
            raw as f64 / stored as f64
        );
        g.throughput(Throughput::Bytes(raw as u64));
        g.bench_function(format!("zstd compress/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                for f in &frames {
                    n += zstd.compress(f).expect("compress").len();
                }
                black_box(n)
            })
        });
        let mut unzstd = zstd::bulk::Decompressor::new().expect("zstd");
        g.bench_function(format!("zstd decompress/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                for (z, f) in compressed.iter().zip(&frames) {
                    n += unzstd.decompress(z, f.len()).expect("decompress").len();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = compression }
criterion_main!(benches);
