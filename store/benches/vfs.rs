//! Browsing a snapshot without extracting it, as `ls`/`cat` and the FUSE mount do:
//! `Tree::resolve` of every path (directory records cached after the first pass, as in a
//! mount), and `Tree::read_at` of every file in 128 KiB reads (FUSE's largest read).

mod common;

use cellar_store::{Kind, Tree};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

/// Every path in the tree (from the root, no leading `/`) with its kind and size.
fn walk(tree: &Tree, dir: &cellar_store::Node, prefix: &[u8], out: &mut Vec<(Vec<u8>, Kind, u64)>) {
    for n in tree.readdir(dir).expect("readdir").iter() {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&n.name);
        out.push((path.clone(), n.kind, n.size));
        if n.kind == Kind::Dir {
            walk(tree, n, &path, out);
        }
    }
}

fn vfs(c: &mut Criterion) {
    let mut g = c.benchmark_group("vfs");
    let (label, tar) = common::tar();
    let (_dir, store, snap) = common::store_with(tar);
    let tree = store.tree(&snap).expect("tree");
    let mut paths = Vec::new();
    walk(&tree, tree.root(), b"", &mut paths);
    let files: Vec<_> = paths.iter().filter(|p| p.1 == Kind::File).collect();
    let file_bytes: u64 = files.iter().map(|p| p.2).sum();
    eprintln!(
        "vfs/{label}: {} paths, {} files, {file_bytes} file bytes",
        paths.len(),
        files.len()
    );

    // Throughput of lookups is the path bytes resolved; the paths per second are
    // paths.len() / time (printed with the results in BENCHMARKS.md).
    let path_bytes: u64 = paths.iter().map(|p| p.0.len() as u64).sum();
    g.throughput(Throughput::Bytes(path_bytes));
    g.bench_function(format!("resolve every path/{label}"), |b| {
        b.iter(|| {
            for (p, _, _) in &paths {
                black_box(tree.resolve(p).expect("resolve"));
            }
        })
    });

    g.throughput(Throughput::Bytes(file_bytes));
    g.bench_function(format!("resolve+read_at every file/{label}"), |b| {
        let mut buf = vec![0u8; 128 << 10];
        b.iter(|| {
            let mut total = 0u64;
            for (p, _, _) in &files {
                let node = tree.resolve(p).expect("resolve");
                let mut off = 0;
                loop {
                    let n = tree.read_at(&node, off, &mut buf).expect("read_at");
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                }
                total += off;
            }
            assert_eq!(total, file_bytes);
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = vfs }
criterion_main!(benches);
