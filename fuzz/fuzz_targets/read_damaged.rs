//! Fuzz the read side against damaged packs: a store holding three real GNU tar snapshots is
//! made once per process; each input is a list of damage operations on its pack files (flip or
//! set bytes, truncate). The store is then opened fresh and every read path is run:
//! `export` of every snapshot, a walk of every tree (readdir, every file read whole with
//! `read_at`), `restore` of every snapshot, and `verify` (index only and with data).
//!
//! Each must give exactly the pristine bytes or fail with `Error::Corrupt`; never a panic, a
//! hang or a huge allocation. `verify --data` must report a problem whenever the pack bytes
//! differ from the pristine ones (it hashes every pack against its name), and in particular
//! whenever any read failed.
//!
//! Input: 5-byte operations `[sel, a, b, c, v]`; `sel & 0x0f` picks the pack (mod count),
//! `sel >> 4` the kind:
//!   0..=9   xor `v` into the byte at u24(a,b,c) mod len
//!   10..=12 xor `v` into the byte at (start of record a mod records) + u16(b,c) mod 4096
//!   13      set the byte at (start of record a) + u16(b,c) mod 4096 to `v`
//!   14      truncate the pack to u24(a,b,c) mod len
//!   15      xor `v` into the byte at (payload start of record a) + u16(b,c) mod 4096
#![no_main]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use cellar_store::restore::{restore, RestoreOptions};
use cellar_store::{Error, IngestOptions, Kind, Snapshot, Store};
use libfuzzer_sys::fuzz_target;

struct Pack {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Starts of record headers and of their payloads.
    records: Vec<(u64, u64)>,
}

struct Snap {
    snap: Snapshot,
    stream: Vec<u8>,
    /// Path → kind, size, content (files).
    files: BTreeMap<Vec<u8>, (Kind, u64, Option<Vec<u8>>)>,
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    packs: Vec<Pack>,
    snaps: Vec<Snap>,
    /// Packs left as the last input damaged them.
    dirty: bool,
    restore_dir: PathBuf,
}

static STATE: Mutex<Option<Setup>> = Mutex::new(None);

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
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
        use std::os::unix::fs::FileExt;
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
fn contents(store: &Store, snap: &Snapshot) -> BTreeMap<Vec<u8>, (Kind, u64, Option<Vec<u8>>)> {
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

fn pack_files(root: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut stack = vec![root.join("packs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                paths.push(p)
            }
        }
    }
    paths.sort();
    paths
}

fn ingest_all(root: &Path, src: &Path) -> (Store, Vec<(Snapshot, Vec<u8>)>, Vec<PathBuf>) {
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
        for p in pack_files(root) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    (store, streams, paths)
}

fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("cellar-readfuzz-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("store");
    let src = dir.path().join("src");
    // READFUZZ_PRISTINE=DIR: a pristine store made once (DIR/store, DIR/stream*.tar,
    // DIR/packs.txt) is reused, so that an input means exactly the same damage in every
    // process (pack names, record order and timestamps differ from one ingest to the next).
    let saved = std::env::var_os("READFUZZ_PRISTINE").map(PathBuf::from);
    let (store, streams, paths) = match &saved {
        Some(sv) if sv.join("packs.txt").is_file() => {
            let ok = Command::new("cp")
                .arg("-a")
                .arg(sv.join("store"))
                .arg(&root)
                .status()
                .unwrap();
            assert!(ok.success());
            let store = Store::open(&root).unwrap();
            let mut snaps = store.list(Some("s")).unwrap();
            snaps.sort_by(|a, b| {
                a.created
                    .cmp(&b.created)
                    .then(a.stream_len.cmp(&b.stream_len))
            });
            let order: Vec<String> = std::fs::read_to_string(sv.join("snaps.txt"))
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            let streams = order
                .iter()
                .enumerate()
                .map(|(k, id)| {
                    let snap = snaps.iter().find(|s| s.id.hex() == *id).unwrap().clone();
                    (
                        snap,
                        std::fs::read(sv.join(format!("stream{k}.tar"))).unwrap(),
                    )
                })
                .collect::<Vec<_>>();
            let paths = std::fs::read_to_string(sv.join("packs.txt"))
                .unwrap()
                .lines()
                .map(|l| root.join(l))
                .collect();
            (store, streams, paths)
        }
        _ => {
            let (store, streams, paths) = ingest_all(&root, &src);
            if let Some(sv) = &saved {
                let _ = std::fs::remove_dir_all(sv);
                std::fs::create_dir_all(sv).unwrap();
                let ok = Command::new("cp")
                    .arg("-a")
                    .arg(&root)
                    .arg(sv.join("store"))
                    .status()
                    .unwrap();
                assert!(ok.success());
                let mut ids = String::new();
                for (k, (snap, stream)) in streams.iter().enumerate() {
                    std::fs::write(sv.join(format!("stream{k}.tar")), stream).unwrap();
                    ids.push_str(&format!("{}\n", snap.id.hex()));
                }
                std::fs::write(sv.join("snaps.txt"), ids).unwrap();
                let rel: Vec<String> = paths
                    .iter()
                    .map(|p: &PathBuf| p.strip_prefix(&root).unwrap().display().to_string())
                    .collect();
                std::fs::write(sv.join("packs.txt"), rel.join("\n") + "\n").unwrap();
            }
            (store, streams, paths)
        }
    };
    let mut snaps = Vec::new();
    for (snap, stream) in streams {
        let mut out = Vec::new();
        store.export(&snap, &mut out).unwrap();
        assert!(out == stream);
        let files = contents(&store, &snap);
        snaps.push(Snap {
            snap,
            stream,
            files,
        });
    }
    drop(store);
    assert_eq!(paths.len(), pack_files(&root).len());
    let mut packs = Vec::new();
    let mut summary = String::new();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let mut records = Vec::new();
        cellar_store::pack::scan(&path, |f| {
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
    Setup {
        _dir: dir,
        root,
        packs,
        snaps,
        dirty: true,
        restore_dir,
    }
}

fn check_err(what: &str, e: &Error) {
    assert!(
        matches!(e, Error::Corrupt(_)),
        "{what} failed with an error that is not Error::Corrupt: {e:?}"
    );
    assert!(!e.to_string().is_empty());
}

/// Compare a restored directory with the snapshot's files; `Err` describes the difference.
fn check_restored(dir: &Path, files: &BTreeMap<Vec<u8>, (Kind, u64, Option<Vec<u8>>)>) {
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

fuzz_target!(|data: &[u8]| {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let st = guard.get_or_insert_with(setup);

    // Restore the pristine packs, then damage them.
    let mut files: Vec<Vec<u8>> = st.packs.iter().map(|p| p.bytes.clone()).collect();
    for op in data.chunks_exact(5) {
        let (sel, a, b, c, v) = (op[0], op[1], op[2], op[3], op[4]);
        let i = (sel & 0x0f) as usize % files.len();
        let f = &mut files[i];
        if f.is_empty() {
            continue;
        }
        let recs = &st.packs[i].records;
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
    let damaged: Vec<bool> = files
        .iter()
        .zip(&st.packs)
        .map(|(f, p)| *f != p.bytes)
        .collect();
    for (f, p) in files.iter().zip(&st.packs) {
        std::fs::write(&p.path, f).unwrap();
    }
    st.dirty = damaged.iter().any(|&d| d);
    if let Some(to) = std::env::var_os("READFUZZ_DUMP") {
        // Keep the damaged store, for the CLI (`cellar --store DIR export s` etc.).
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&st.root)
            .arg(&to)
            .status()
            .unwrap();
        assert!(ok.success());
        eprintln!("damaged store copied to {}", Path::new(&to).display());
    }

    let store = Store::open(&st.root).expect("open");
    let mut failed = Vec::new();
    for (k, s) in st.snaps.iter().enumerate() {
        // Export.
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
        // The tree.
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
        // Restore.
        let _ = std::fs::remove_dir_all(&st.restore_dir);
        match restore(
            &store,
            &s.snap,
            b"/",
            &st.restore_dir,
            &RestoreOptions::default(),
        ) {
            Ok(_) => check_restored(&st.restore_dir, &s.files),
            Err(e) => {
                check_err("restore", &e);
                failed.push(format!("restore {k}: {e}"));
            }
        }
    }
    drop(store);
    // Verify on a fresh store: caches must not hide anything.
    let store = Store::open(&st.root).expect("open");
    let _ = store.verify(false).expect("verify (index) could not run");
    let report = store.verify(true).expect("verify --data could not run");
    if st.dirty {
        assert!(
            !report.ok(),
            "verify --data found nothing wrong with damaged packs {damaged:?}; reads failed: {failed:?}"
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
});
