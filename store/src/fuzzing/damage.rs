//! The read side against damaged packs. A store holding three real GNU tar snapshots (text,
//! random data, a sparse file, links; the later two small changes of the first, so there are
//! deltas) is made once; each input is a list of damage operations on its pack files. The
//! store is then opened afresh and every read path is run: `export` of every snapshot, a walk
//! of every tree (readdir, every file read whole with `read_at`), `restore` of every snapshot,
//! the OCI layers synthesized from it (each snapshot's tree layer and the diff from its
//! parent), and `verify` (index only and with data).
//!
//! Each read must give exactly the pristine bytes or fail with `Error::Corrupt`; never a
//! panic, a hang or a huge allocation. `verify --data` must report a problem whenever the pack
//! bytes differ from the pristine ones (it hashes every pack against its name), and must find
//! nothing when they do not.
//!
//! Input: 5-byte operations `[sel, a, b, c, v]`; `sel & 0x0f` picks the pack (mod count),
//! `sel >> 4` the kind:
//!   0..=9   xor `v` into the byte at u24(a,b,c) mod len
//!   10..=12 xor `v` into the byte at (start of record a mod records) + u16(b,c) mod 4096
//!   13      set the byte at (start of record a) + u16(b,c) mod 4096 to `v`
//!   14      truncate the pack to u24(a,b,c) mod len
//!   15      xor `v` into the byte at (payload start of record a) + u16(b,c) mod 4096
//!
//! Environment, for campaigns: `READFUZZ_PRISTINE=DIR` keeps the pristine store between
//! processes, so an input means the same damage in every one (pack names change from one
//! ingest to the next); `READFUZZ_DUMP=DIR` copies each damaged store there for the CLI;
//! `READFUZZ_SHOW=1` prints the packs' records and the snapshots at start.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{files_under, xorshift};
use crate::error::Error;
use crate::ingest::IngestOptions;
use crate::oci::{Codec, LayerKey, LayerSpec};
use crate::restore::{restore, RestoreOptions};
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tree::Kind;

/// Path → kind, size and (for files) content.
type Files = BTreeMap<Vec<u8>, (Kind, u64, Option<Vec<u8>>)>;

struct Pack {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Starts of record headers and of their payloads.
    records: Vec<(u64, u64)>,
}

struct Snap {
    snap: Snapshot,
    stream: Vec<u8>,
    files: Files,
    /// The uncompressed layers synthesized from the pristine store, with their bytes.
    layers: Vec<(LayerKey, Vec<u8>)>,
}

/// A pristine store and what every read of it gives; panics when an input breaks the property.
pub struct DamageHarness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    packs: Vec<Pack>,
    snaps: Vec<Snap>,
    restore_dir: PathBuf,
}

impl Default for DamageHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl DamageHarness {
    pub fn new() -> Self {
        setup()
    }

    /// How many pack files the pristine store has.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Damage the packs as `ops` says (after putting back the pristine bytes), then run every
    /// read path and check what each gives. Returns how many reads failed (as they must
    /// where the damage is).
    pub fn check(&mut self, ops: &[u8]) -> usize {
        let files = self.damaged(ops);
        let damaged: Vec<bool> = files
            .iter()
            .zip(&self.packs)
            .map(|(f, p)| *f != p.bytes)
            .collect();
        for (f, p) in files.iter().zip(&self.packs) {
            std::fs::write(&p.path, f).unwrap();
        }
        let dirty = damaged.iter().any(|&d| d);
        if let Some(to) = std::env::var_os("READFUZZ_DUMP") {
            copy_tree(&self.root, Path::new(&to));
            eprintln!("damaged store copied to {}", Path::new(&to).display());
        }

        let store = Store::open(&self.root).expect("open");
        let mut failed = Vec::new();
        for (k, s) in self.snaps.iter().enumerate() {
            check_export(&store, s, k, &mut failed);
            check_tree(&store, s, &mut failed);
            check_restore(&store, s, k, &self.restore_dir, &mut failed);
            check_layers(&store, s, &mut failed);
        }
        drop(store);
        // Verify on a fresh store: caches must not hide anything.
        let store = Store::open(&self.root).expect("open");
        let _ = store.verify(false).expect("verify (index) could not run");
        let report = store.verify(true).expect("verify --data could not run");
        if dirty {
            assert!(
                !report.ok(),
                "verify --data found nothing wrong with damaged packs {damaged:?}; reads \
                 failed: {failed:?}"
            );
        } else {
            assert!(
                report.ok(),
                "verify --data of pristine packs: {:?}",
                report.problems
            );
            assert!(
                failed.is_empty(),
                "reads failed on pristine packs: {failed:?}"
            );
        }
        for p in &report.problems {
            assert!(!p.what.is_empty());
        }
        failed.len()
    }

    /// The pack files' bytes after `ops` (see the module doc).
    fn damaged(&self, ops: &[u8]) -> Vec<Vec<u8>> {
        let mut files: Vec<Vec<u8>> = self.packs.iter().map(|p| p.bytes.clone()).collect();
        for op in ops.chunks_exact(5) {
            let (sel, a, b, c, v) = (op[0], op[1], op[2], op[3], op[4]);
            let i = (sel & 0x0f) as usize % files.len();
            let f = &mut files[i];
            if f.is_empty() {
                continue;
            }
            let recs = &self.packs[i].records;
            let u24 = u32::from_be_bytes([0, a, b, c]) as usize;
            let u16 = u16::from_be_bytes([b, c]) as usize % 4096;
            let rec = |payload: bool| {
                let r = recs[a as usize % recs.len()];
                (if payload { r.1 } else { r.0 }) as usize + u16
            };
            match sel >> 4 {
                0..=9 => {
                    let n = f.len();
                    f[u24 % n] ^= v;
                }
                10..=12 => {
                    let o = rec(false);
                    if o < f.len() {
                        f[o] ^= v;
                    }
                }
                13 => {
                    let o = rec(false);
                    if o < f.len() {
                        f[o] = v;
                    }
                }
                14 => {
                    let n = f.len();
                    f.truncate(u24 % n);
                }
                _ => {
                    let o = rec(true);
                    if o < f.len() {
                        f[o] ^= v;
                    }
                }
            }
        }
        files
    }
}

fn check_err(what: &str, e: &Error) {
    assert!(
        matches!(e, Error::Corrupt(_)),
        "{what} failed with an error that is not Error::Corrupt: {e:?}"
    );
    assert!(!e.to_string().is_empty());
}

fn check_export(store: &Store, s: &Snap, k: usize, failed: &mut Vec<String>) {
    let mut out = Vec::new();
    match store.export(&s.snap, &mut out) {
        Ok(()) => assert!(
            out == s.stream,
            "export of snapshot {k} said Ok with wrong bytes"
        ),
        Err(e) => {
            check_err("export", &e);
            failed.push(format!("export {k}: {e}"));
        }
    }
}

/// Every directory read and every file read whole, as a mount would.
fn check_tree(store: &Store, s: &Snap, failed: &mut Vec<String>) {
    let tree = store.tree(&s.snap).expect("tree");
    let mut stack = vec![(Vec::new(), tree.root().clone())];
    let mut buf = vec![0u8; 40_000];
    while let Some((path, dir)) = stack.pop() {
        let nodes = match tree.readdir(&dir) {
            Ok(n) => n,
            Err(e) => {
                check_err("readdir", &e);
                failed.push(format!("readdir: {e}"));
                continue;
            }
        };
        for n in nodes.iter() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&n.name);
            let Some((kind, size, want)) = s.files.get(&p) else {
                panic!("readdir gave a node the pristine tree does not have");
            };
            assert!(
                *kind == n.kind && *size == n.size,
                "readdir gave a different node"
            );
            if n.kind == Kind::Dir {
                stack.push((p.clone(), n.clone()));
            }
            let Some(want) = want else { continue };
            let mut off = 0usize;
            loop {
                match tree.read_at(n, off as u64, &mut buf) {
                    Ok(0) => {
                        assert_eq!(off, want.len(), "read_at ended early");
                        break;
                    }
                    Ok(k) => {
                        assert!(off + k <= want.len(), "read_at read past the end");
                        assert!(
                            buf[..k] == want[off..off + k],
                            "read_at said Ok with wrong bytes"
                        );
                        off += k;
                    }
                    Err(e) => {
                        check_err("read_at", &e);
                        failed.push(format!("read_at: {e}"));
                        // Skip ahead a little: later chunks may still read.
                        off += buf.len();
                        if off >= want.len() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn check_restore(store: &Store, s: &Snap, k: usize, dir: &Path, failed: &mut Vec<String>) {
    let _ = std::fs::remove_dir_all(dir);
    match restore(store, &s.snap, b"/", dir, &RestoreOptions::default()) {
        Ok(_) => check_restored(dir, &s.files),
        Err(e) => {
            check_err("restore", &e);
            failed.push(format!("restore {k}: {e}"));
        }
    }
}

/// Synthesized layers (`serve`, `push`, `export --format`): the pristine bytes, or an error.
fn check_layers(store: &Store, s: &Snap, failed: &mut Vec<String>) {
    for (key, want) in &s.layers {
        let mut out = Vec::new();
        match store.write_layer(key, &mut out) {
            Ok(_) => assert!(out == *want, "layer {key} said Ok with wrong bytes"),
            Err(e) => {
                check_err("write_layer", &e);
                failed.push(format!("layer {key}: {e}"));
            }
        }
    }
}

/// Compare a restored directory with the snapshot's files.
fn check_restored(dir: &Path, files: &Files) {
    use std::os::unix::ffi::OsStrExt;
    for (p, (kind, _size, data)) in files {
        let on_disk = dir.join(std::ffi::OsStr::from_bytes(&p[1..]));
        let md = std::fs::symlink_metadata(&on_disk).unwrap_or_else(|e| {
            panic!("restore said Ok but {} is missing: {e}", on_disk.display())
        });
        match kind {
            Kind::File => {
                assert!(md.is_file());
                let mut got = Vec::new();
                std::fs::File::open(&on_disk)
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                assert!(
                    &got == data.as_ref().unwrap(),
                    "restore said Ok but {} has wrong bytes",
                    on_disk.display()
                );
            }
            Kind::Dir => assert!(md.is_dir()),
            Kind::Symlink => assert!(md.file_type().is_symlink()),
            _ => {}
        }
    }
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

fn copy_tree(from: &Path, to: &Path) {
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
                Box::new(std::io::Cursor::new(stream.clone())),
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

fn setup() -> DamageHarness {
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
    let restore_dir = dir.path().join("restore");
    DamageHarness {
        _dir: dir,
        root,
        packs,
        snaps,
        restore_dir,
    }
}
