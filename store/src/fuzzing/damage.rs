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

use std::io::Read;
use std::path::{Path, PathBuf};

use super::pristine::{self, copy_tree, Files, Pristine, Snap};
use crate::error::Error;
use crate::restore::{restore, RestoreOptions};
use crate::store::Store;
use crate::tree::Kind;

/// A pristine store and what every read of it gives; panics when an input breaks the property.
pub struct DamageHarness {
    pristine: Pristine,
    restore_dir: PathBuf,
}

impl Default for DamageHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl DamageHarness {
    pub fn new() -> Self {
        let pristine = pristine::make();
        let restore_dir = pristine.dir.path().join("restore");
        DamageHarness {
            pristine,
            restore_dir,
        }
    }

    /// How many pack files the pristine store has.
    pub fn pack_count(&self) -> usize {
        self.pristine.packs.len()
    }

    /// Damage the packs as `ops` says (after putting back the pristine bytes), then run every
    /// read path and check what each gives. Returns how many reads failed (as they must
    /// where the damage is).
    pub fn check(&mut self, ops: &[u8]) -> usize {
        let files = self.damaged(ops);
        let damaged: Vec<bool> = files
            .iter()
            .zip(&self.pristine.packs)
            .map(|(f, p)| *f != p.bytes)
            .collect();
        for (f, p) in files.iter().zip(&self.pristine.packs) {
            std::fs::write(&p.path, f).unwrap();
        }
        let dirty = damaged.iter().any(|&d| d);
        if let Some(to) = std::env::var_os("READFUZZ_DUMP") {
            copy_tree(&self.pristine.root, Path::new(&to));
            eprintln!("damaged store copied to {}", Path::new(&to).display());
        }

        let store = Store::open(&self.pristine.root).expect("open");
        let mut failed = Vec::new();
        for (k, s) in self.pristine.snaps.iter().enumerate() {
            check_export(&store, s, k, &mut failed);
            check_tree(&store, s, &mut failed);
            check_restore(&store, s, k, &self.restore_dir, &mut failed);
            check_layers(&store, s, &mut failed);
        }
        drop(store);
        // Verify on a fresh store: caches must not hide anything.
        let store = Store::open(&self.pristine.root).expect("open");
        let _ = store
            .verify(crate::DataCheck::Index)
            .expect("verify (index) could not run");
        let report = store
            .verify(crate::DataCheck::All)
            .expect("verify --data could not run");
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
            if let Some(c) = p.chunk {
                assert_eq!(p.what.matches(&c.short()).count(), 1, "{}", p.what);
            }
        }
        failed.len()
    }

    /// The pack files' bytes after `ops` (see the module doc).
    fn damaged(&self, ops: &[u8]) -> Vec<Vec<u8>> {
        let mut files: Vec<Vec<u8>> = self
            .pristine
            .packs
            .iter()
            .map(|p| p.bytes.clone())
            .collect();
        for op in ops.chunks_exact(5) {
            let (sel, a, b, c, v) = (op[0], op[1], op[2], op[3], op[4]);
            let i = (sel & 0x0f) as usize % files.len();
            let f = &mut files[i];
            if f.is_empty() {
                continue;
            }
            let recs = &self.pristine.packs[i].records;
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
