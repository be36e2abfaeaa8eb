//! blake3 of each chunk, as ingest names chunks (and as every read verifies them).

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("hashing");
    let (label, tar) = common::tar();
    for (name, data) in [("mixed", common::mixed()), (label.as_str(), &tar[..])] {
        let chunks = common::chunks(data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("blake3 chunks/{name}"), |b| {
            b.iter(|| {
                let mut x = 0u8;
                for chunk in &chunks {
                    x ^= blake3::hash(chunk).as_bytes()[0];
                }
                black_box(x)
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = hashing }
criterion_main!(benches);
