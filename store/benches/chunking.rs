//! FastCDC chunking (the engine's `Chunker`, 4/16/64 KiB) of whole inputs.

mod common;

use cellar_store::Chunker;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn chunking(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunking");
    let (label, tar) = common::tar();
    for (name, data) in [("mixed", common::mixed()), (label.as_str(), &tar[..])] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut chunker = Chunker::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut pos = 0;
                let mut count = 0usize;
                chunker
                    .chunk(
                        |buf| {
                            // Reads of 1 MiB, as ingest's reader hands them over.
                            let n = buf.len().min(1 << 20).min(data.len() - pos);
                            buf[..n].copy_from_slice(&data[pos..pos + n]);
                            pos += n;
                            Ok(n)
                        },
                        |chunk| {
                            count += black_box(chunk).len();
                            Ok(())
                        },
                    )
                    .expect("chunking");
                count
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = chunking }
criterion_main!(benches);
