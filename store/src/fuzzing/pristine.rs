//! The pristine store `DamageHarness` damages: three real GNU tar snapshots of a small tree
//! (text, random data, a sparse file, links; the later two small changes of the first, so
//! there are deltas), with every read of it done once while it is whole: the streams, every
//! file's bytes, the synthesized layers, and where each pack's records start.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{files_under, xorshift};
use crate::ingest::IngestOptions;
use crate::oci::{Codec, LayerKey, LayerSpec};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::Kind;

/// Path → kind, size and (for files) content.
pub(super) type Files = BTreeMap<Vec<u8>, (Kind, u64, Option<Vec<u8>>)>;

pub(super) struct Pack {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Starts of record headers and of their payloads.
    pub records: Vec<(u64, u64)>,
}

pub(super) struct Snap {
    pub snap: Snapshot,
    pub stream: Vec<u8>,
    pub files: Files,
    /// The uncompressed layers synthesized from the pristine store, with their bytes.
    pub layers: Vec<(LayerKey, Vec<u8>)>,
}

pub(super) struct Pristine {
    /// Holds the store (and the restore target beside it).
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub packs: Vec<Pack>,
    pub snaps: Vec<Snap>,
}

fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n).map(|_| xorshift(&mut seed) as u8).collect()
}

fn text(n: usize, salt: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(
            format!("line {i:06} of the {salt} text, some words to compress: alpha beta gamma\n")
                .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

fn tar_of(src: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args([
            "--format=gnu",
            "-S",
            "--sort=name",
            "--mtime=@1700000000",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(src)
        .args(["-cf", "-", "."])
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar failed");
    out.stdout
}

/// Version 0 of the source tree, or one of its two later edits.
fn write_tree(src: &Path, version: u32) {
    let w = |p: &str, b: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    };
    let mut t = text(150_000, "main");
    if version >= 1 {
        // An edit in the middle of the text, and a line appended to a small file.
        t[70_000..70_020].copy_from_slice(b"EDITED EDITED EDITED");
    }
    w("docs/text.txt", &t);
    w(
        "docs/deep/er/still/small.txt",
        if version >= 1 {
            b"hello\nworld\nagain\n"
        } else {
            b"hello\nworld\n"
        },
    );
    w("docs/deep/empty", b"");
    w(
        "bin/random.bin",
        &random_bytes(100_000, 0x1234_5678_9abc_def1),
    );
    w("bin/tiny", &random_bytes(300, 7));
    w("etc/conf", &text(5_000, "conf"));
    if version >= 2 {
        w(
            "bin/new-random.bin",
            &random_bytes(64 * 1024, 0xdead_beef_cafe_f00d),
        );
    }
    // A sparse file: data at the start, in the middle and at the end of 1 MiB.
    let sp = src.join("var/sparse.img");
    std::fs::create_dir_all(sp.parent().unwrap()).unwrap();
    {
        let f = std::fs::File::create(&sp).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&random_bytes(8192, 99), 0).unwrap();
        f.write_all_at(&text(8192, "sparse"), 512 * 1024).unwrap();
        f.write_all_at(b"the end", (1 << 20) - 7).unwrap();
    }
    let link = src.join("docs/link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("text.txt", &link).unwrap();
    let hard = src.join("etc/conf-hardlink");
    let _ = std::fs::remove_file(&hard);
    std::fs::hard_link(src.join("etc/conf"), &hard).unwrap();
}

/// Every node of the tree, with file contents, read from `store`.
fn contents(store: &Store, snap: &Snapshot) -> Files {
    let tree = store.tree(snap).unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::new(), tree.root().clone())];
    while let Some((path, dir)) = stack.pop() {
        for n in tree.readdir(&dir).unwrap().iter() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&n.name);
            let data = (n.kind == Kind::File).then(|| {
                let mut buf = vec![0u8; n.size as usize];
                let mut off = 0;
                while off < buf.len() {
                    let k = tree.read_at(n, off as u64, &mut buf[off..]).unwrap();
                    assert!(k > 0);
                    off += k;
                }
                buf
            });
            if n.kind == Kind::Dir {
                stack.push((p.clone(), n.clone()));
            }
            out.insert(p, (n.kind, n.size, data));
        }
    }
    out
}

pub(super) fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(ok.success(), "cp -a {} {}", from.display(), to.display());
}

/// The three snapshots (with their streams) and the pack files in the order they were written.
type Ingested = (Store, Vec<(Snapshot, Vec<u8>)>, Vec<PathBuf>);

fn ingest_all(root: &Path, src: &Path) -> Ingested {
    let store = Store::create(root).unwrap();
    let mut streams = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    for v in 0..3 {
        write_tree(src, v);
        let stream = tar_of(src);
        let rep = store
            .ingest(
                crate::ingest::IngestInput::stream(std::io::Cursor::new(stream.clone())),
                IngestOptions::new("s"),
                || Ok(()),
            )
            .unwrap();
        streams.push((rep.snapshot, stream));
        // Packs in the order they were written (their names are random).
        for p in files_under(&root.join("packs")) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    (store, streams, paths)
}

/// The pristine store saved by an earlier process (`READFUZZ_PRISTINE`), copied to `root`.
fn load_saved(saved: &Path, root: &Path) -> Ingested {
    copy_tree(&saved.join("store"), root);
    let store = Store::open(root).unwrap();
    let snaps = store.list(Some("s")).unwrap();
    let streams = std::fs::read_to_string(saved.join("snaps.txt"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(k, id)| {
            let snap = snaps.iter().find(|s| s.id.hex() == id).unwrap().clone();
            let stream = std::fs::read(saved.join(format!("stream{k}.tar"))).unwrap();
            (snap, stream)
        })
        .collect();
    let paths = std::fs::read_to_string(saved.join("packs.txt"))
        .unwrap()
        .lines()
        .map(|l| root.join(l))
        .collect();
    (store, streams, paths)
}

/// Keep the pristine store for later processes (`READFUZZ_PRISTINE`).
fn save(saved: &Path, root: &Path, streams: &[(Snapshot, Vec<u8>)], paths: &[PathBuf]) {
    let _ = std::fs::remove_dir_all(saved);
    std::fs::create_dir_all(saved).unwrap();
    copy_tree(root, &saved.join("store"));
    let mut ids = String::new();
    for (k, (snap, stream)) in streams.iter().enumerate() {
        std::fs::write(saved.join(format!("stream{k}.tar")), stream).unwrap();
        ids.push_str(&format!("{}\n", snap.id.hex()));
    }
    std::fs::write(saved.join("snaps.txt"), ids).unwrap();
    let rel: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    std::fs::write(saved.join("packs.txt"), rel.join("\n") + "\n").unwrap();
}

/// The layers made of snapshot `k`: its tree, and the diff from the one before it.
fn layer_keys(snaps: &[(Snapshot, Vec<u8>)], k: usize) -> Vec<LayerKey> {
    let mut specs = vec![LayerSpec::Tree(snaps[k].0.id)];
    if k > 0 {
        specs.push(LayerSpec::Diff {
            from: snaps[k - 1].0.id,
            to: snaps[k].0.id,
        });
    }
    specs
        .into_iter()
        .map(|spec| LayerKey {
            spec,
            codec: Codec::None,
        })
        .collect()
}

/// Make the pristine store (or copy the saved one) and read everything from it once.
pub(super) fn make() -> Pristine {
    let dir = tempfile::Builder::new()
        .prefix("cellar-readfuzz-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("store");
    let saved = std::env::var_os("READFUZZ_PRISTINE").map(PathBuf::from);
    let (store, streams, paths) = match &saved {
        Some(sv) if sv.join("packs.txt").is_file() => load_saved(sv, &root),
        _ => {
            let made = ingest_all(&root, &dir.path().join("src"));
            if let Some(sv) = &saved {
                save(sv, &root, &made.1, &made.2);
            }
            made
        }
    };
    let mut snaps = Vec::new();
    for (k, (snap, stream)) in streams.iter().enumerate() {
        let mut out = Vec::new();
        store.export(snap, &mut out).unwrap();
        assert!(out == *stream);
        let layers = layer_keys(&streams, k)
            .into_iter()
            .map(|key| {
                let mut bytes = Vec::new();
                store.write_layer(&key, &mut bytes).unwrap();
                (key, bytes)
            })
            .collect();
        snaps.push(Snap {
            files: contents(&store, snap),
            snap: snap.clone(),
            stream: stream.clone(),
            layers,
        });
    }
    drop(store);
    assert_eq!(paths.len(), files_under(&root.join("packs")).len());
    let mut packs = Vec::new();
    let mut summary = String::new();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let mut records = Vec::new();
        crate::pack::scan(&path, |f| {
            let start = f.payload_offset - f.header.encoded_len() as u64;
            summary.push_str(&format!(
                "  record at {start}: {:?} {:?} {} entries raw {} stored {}\n",
                f.header.kind,
                f.header.codec,
                f.header.entries.len(),
                f.header.raw_len,
                f.header.stored_len
            ));
            records.push((start, f.payload_offset));
            Ok(())
        })
        .unwrap();
        summary.push_str(&format!("^ {}: {} bytes\n", path.display(), bytes.len()));
        packs.push(Pack {
            path,
            bytes,
            records,
        });
    }
    if std::env::var_os("READFUZZ_SHOW").is_some() {
        eprintln!("{summary}");
        for s in &snaps {
            eprintln!(
                "snapshot {} stream {} bytes, {} nodes",
                s.snap.short_id(),
                s.stream.len(),
                s.files.len()
            );
        }
    }
    Pristine {
        dir,
        root,
        packs,
        snaps,
    }
}
