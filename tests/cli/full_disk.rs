//! A full disk: a snapshot that runs out of space fails with the path and the reason, records
//! nothing, leaves the store whole, and gives its space back at once (the temp pack it was
//! writing and the pack it had already sealed); gc finds nothing left over, and the next
//! snapshot that fits succeeds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A size-limited tmpfs mounted at `dir` until dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn new(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} cellar-full '{}'",
            dir.display()
        ));
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.to_str().unwrap()).unwrap();
        // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
        let st = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
            st
        };
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A tar stream of one file of `len` incompressible bytes, written to `file`.
fn stream_file(scratch: &TestStore, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let dir = scratch.scratch(name);
    write_file(&dir.join("data.bin"), &noise(len, seed));
    let stream = tar_of_dir(&dir);
    let file = scratch.scratch(&format!("{name}.tar"));
    std::fs::write(&file, &stream).unwrap();
    (file, stream)
}

#[test]
fn a_full_disk_fails_the_snapshot_and_loses_nothing() {
    let scratch = TestStore::new();
    let disk = SmallDisk::new(&scratch.scratch("disk"), "48m");
    let store = disk.dir.join("store");
    let (small, small_stream) = stream_file(&scratch, "small", 2_000_000, 1);
    // Larger than the disk, and than one 32 MiB pack: one pack is sealed before space runs out.
    let (big, _) = stream_file(&scratch, "big", 80_000_000, 2);
    let ok = |args: &[&str]| {
        let out = cellar_at(&store, args);
        assert_success(&out, args);
        out.stdout
    };
    let first = String::from_utf8(ok(&["snapshot", "--name", "a", small.to_str().unwrap()]))
        .unwrap()
        .trim()
        .to_string();
    let before = disk.used();

    let out = cellar_at(
        &store,
        &["snapshot", "--name", "big", big.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device") && stderr(&out).contains("store/"),
        "the reason and the path: {}",
        stderr(&out)
    );
    let listed = String::from_utf8(ok(&["list"])).unwrap();
    assert_eq!(listed.lines().count(), 2, "nothing recorded: {listed}");
    assert!(ok(&["export", &first]) == small_stream);
    ok(&["verify", "--data"]);
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left behind: {tmp:?}");
    assert!(
        disk.used() <= before + 1_000_000,
        "{} bytes in use after the failed snapshot, {before} before it",
        disk.used()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&ok(&["gc", "--grace", "0", "--json"])).unwrap();
    assert_eq!(report["orphans_deleted"], 0, "{report}");
    assert_eq!(report["bytes_freed"], 0, "{report}");
    let (again, again_stream) = stream_file(&scratch, "again", 5_000_000, 3);
    let id = String::from_utf8(ok(&["snapshot", "--name", "b", again.to_str().unwrap()]))
        .unwrap()
        .trim()
        .to_string();
    assert!(ok(&["export", &id]) == again_stream);
    ok(&["verify", "--data"]);
}

/// A store on a disk with no space left at all is read as a read-only one is: a full backup
/// disk is where a restore is needed most. Writers are refused saying the disk is full, and
/// change nothing.
#[test]
fn a_store_on_a_full_disk_can_still_be_read() {
    // SQLite cannot even make its `-shm`.
    read_a_full_store(false);
}

/// The same when the index is open elsewhere as the disk fills, so SQLite's `-shm` and `-wal`
/// are there (as a snapshot that fills the disk leaves them: its checkpoint cannot grow the
/// index): SQLite would open it for writing, and a reader's lease would fail.
#[test]
fn a_full_disk_with_the_index_open_elsewhere_can_still_be_read() {
    read_a_full_store(true);
}

fn read_a_full_store(index_held_open: bool) {
    let scratch = TestStore::new();
    let disk = SmallDisk::new(&scratch.scratch("disk"), "8m");
    let store = disk.dir.join("store");
    let (file, stream) = stream_file(&scratch, "small", 2_000_000, 3);
    let args = ["snapshot", "--name", "a", file.to_str().unwrap()];
    assert_success(&cellar_at(&store, &args), &args);
    let held = index_held_open.then(|| {
        let db = rusqlite::Connection::open(store.join("cellar.db")).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        assert!(store.join("cellar.db-shm").exists());
        db
    });
    // Fill what is left, to the last block.
    let filler = disk.dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 16 << 20]);
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(&filler)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[0u8; 4096]));
    let packs = || std::fs::read_dir(store.join("packs")).unwrap().count();
    let before = packs();

    let read = |args: &[&str]| {
        let out = cellar_at(&store, args);
        assert_success(&out, args);
        out.stdout
    };
    assert!(String::from_utf8(read(&["list"])).unwrap().contains(" a "));
    assert!(read(&["export", "a"]) == stream, "export differs");
    read(&["verify", "--data"]);
    let restored = scratch.scratch("restored");
    read(&["restore", "a", restored.to_str().unwrap()]);
    assert!(std::fs::read(restored.join("data.bin")).unwrap() == noise(2_000_000, 3));

    // Readers that run on keep a lease in the index, which a full disk cannot take.
    let mnt = scratch.scratch("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    for args in [
        &args[..],
        &["rm", "a"][..],
        &["prune", "--keep-last", "1"][..],
        &["gc"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["mount", mnt.to_str().unwrap(), "a"][..],
    ] {
        let out = cellar_at(&store, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is full"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // repair-index says what it needs: room in tmp/ for the index it would build.
    let out = cellar_at(&store, &["repair-index"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("repair-index builds the new index in") && err.contains("nothing was changed"),
        "{err}"
    );
    let tmp_left = std::fs::read_dir(store.join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "repair-index left its build in tmp/");
    drop(held);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(packs(), before);
    assert!(
        read(&["export", "a"]) == stream,
        "export after space came back"
    );
    assert_eq!(
        String::from_utf8(read(&["list"])).unwrap().lines().count(),
        2
    );
}

/// An export that runs out of space names its output (which of several `-o` it was), and
/// leaves nothing of it behind, in every format.
#[test]
fn an_export_onto_a_full_disk_names_its_output_and_leaves_nothing() {
    let store = TestStore::new();
    let (file, _) = stream_file(&store, "big", 400_000, 7);
    let id = store.snapshot_bytes(&std::fs::read(&file).unwrap(), "big");
    let disk = SmallDisk::new(&store.scratch("disk"), "64k");
    for format in ["tar", "docker-archive", "oci"] {
        let target = disk.dir.join(format!("out.{format}"));
        let out = store.run(&[
            "export",
            &id,
            "--format",
            format,
            "-o",
            target.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{format}: {err}");
        assert!(
            err.contains(&format!("-o {}: ", target.display())) && err.contains("No space left"),
            "{format}: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(&disk.dir).unwrap().collect();
        assert!(left.is_empty(), "{format}: left {left:?}");
    }
}

/// A docker archive's layer whose digest is not known is made into a spool in the store's
/// tmp/ to learn it; with no room there, it is made twice instead, and the export succeeds.
#[test]
fn a_docker_archive_export_with_no_room_in_the_stores_tmp_makes_its_layer_twice() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("data.bin"), &noise(3_000_000, 9));
    // A name no layer can carry: the layer is the tree written out, its digest unknown.
    write_file(&dir.join(".wh.x"), b"");
    let id = store.snapshot_bytes(&tar_of_dir(&dir), "vm");
    let tmp = SmallDisk::new(&store.path().join("tmp"), "1m");
    let archive = store.scratch("out.tar");
    let out = store.run(&[
        "export",
        &id,
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert_success(&out, &["export", "--format", "docker-archive"]);
    drop(tmp);
    // The layer's member is named by its digest, which its bytes have.
    let a = archive.display();
    let names = sh(&format!("tar -tf '{a}' | grep /layer.tar"));
    let name = String::from_utf8(names).unwrap().trim().to_string();
    let sum = sh(&format!("tar -xOf '{a}' '{name}' | sha256sum | cut -c1-64"));
    assert_eq!(
        String::from_utf8(sum).unwrap().trim(),
        name.trim_end_matches("/layer.tar")
    );
}
