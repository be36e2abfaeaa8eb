//! A store on a read-only filesystem (here a read-only bind mount of a store, as a backup disk
//! mounted `ro` would be): every reader works, image caches included; every writer fails with
//! exit 1 and says why, and nothing in the store changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::oci::{http_get, Served};

/// `src` bind-mounted read-only at `dst` until dropped.
pub(crate) struct ReadOnlyView {
    pub(crate) dst: PathBuf,
}

impl ReadOnlyView {
    pub(crate) fn new(src: &Path, dst: &Path) -> ReadOnlyView {
        fs::create_dir_all(dst).unwrap();
        // Two steps: older mount(8)s ignore `ro` on the bind itself.
        sh(&format!(
            "mount --bind '{}' '{}'",
            src.display(),
            dst.display()
        ));
        let view = ReadOnlyView {
            dst: dst.to_path_buf(),
        };
        sh(&format!("mount -o remount,bind,ro '{}'", dst.display()));
        view
    }
}

impl Drop for ReadOnlyView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dst).status();
    }
}

fn ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = cellar_at(dir, args);
    assert_success(&out, args);
    out.stdout
}

/// Every file under the store with its length and mtime.
fn files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_store_on_a_read_only_filesystem_reads_and_refuses_writes() {
    let store = TestStore::new();
    let tree = store.scratch("tree");
    write_file(&tree.join("etc/hostname"), b"vm1\n");
    write_file(&tree.join("usr/lib/big.bin"), &noise(3_000_000, 11));
    let one = tar_of_dir(&tree);
    write_file(&tree.join("etc/hostname"), b"vm2\n");
    let two = tar_of_dir(&tree);
    let first = store.snapshot_bytes(&one, "vm");
    store.snapshot_bytes(&two, "vm");
    let before = files(&store.path());

    let view = ReadOnlyView::new(&store.path(), &store.scratch("ro"));
    let ro = view.dst.clone();
    assert!(
        fs::write(ro.join("probe"), b"x").is_err(),
        "the view should be read-only"
    );

    // Readers.
    let listed = String::from_utf8(ok(&ro, &["list"])).unwrap();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(ok(&ro, &["export", "vm"]) == two);
    assert!(ok(&ro, &["export", &first]) == one);
    assert_eq!(ok(&ro, &["cat", "vm", "/etc/hostname"]), b"vm2\n");
    let diff = String::from_utf8(ok(&ro, &["diff", "vm~1", "vm"])).unwrap();
    assert!(diff.contains("/etc/hostname"), "{diff}");
    let restored = store.scratch("restored");
    ok(&ro, &["restore", "vm", &restored.to_string_lossy()]);
    assert_eq!(
        fs::read(restored.join("usr/lib/big.bin")).unwrap(),
        noise(3_000_000, 11)
    );
    ok(&ro, &["verify", "--data"]);
    // Image caches fill in memory: an OCI export, twice, and a registry download.
    for i in 0..2 {
        let layout = store.scratch(&format!("layout-{i}"));
        ok(
            &ro,
            &[
                "export",
                "vm",
                "--format",
                "oci",
                "-o",
                &layout.to_string_lossy(),
            ],
        );
    }
    let served = Served::start_at(&ro, &[]);
    let blob = http_get(
        served.addr(),
        &format!("/v2/vm/blobs/sha256:{}", sha256_hex(&two)),
        &[],
    );
    assert_eq!(blob.status, 200);
    assert!(blob.body == two);
    drop(served);
    let mnt = store.scratch("mnt");
    fs::create_dir_all(&mnt).unwrap();
    ok(&ro, &["mount", "--daemon", mnt.to_str().unwrap(), "vm"]);
    let read = fs::read(mnt.join("etc/hostname"));
    sh(&format!("umount '{}'", mnt.display()));
    assert_eq!(read.expect("a file through the mount"), b"vm2\n");

    // Writers: refused, saying why.
    let stream_file = store.scratch("one.tar");
    fs::write(&stream_file, &one).unwrap();
    for args in [
        vec!["snapshot", "--name", "other", stream_file.to_str().unwrap()],
        vec!["rm", &first],
        vec!["prune", "--keep-last", "1"],
        // Nothing to forget: still a command that would change the store.
        vec!["prune", "--keep-last", "9"],
        vec!["gc"],
        vec!["repair-index"],
    ] {
        let out = cellar_at(&ro, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("read-only filesystem"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    drop(view);
    assert_eq!(files(&store.path()), before, "the store changed");
    assert_eq!(store.snapshot_count(), 2);
}

/// A store this user may read but not write (another user's, on a writable filesystem):
/// SQLite's write-ahead log needs writes even to read, so every command fails, saying why
/// and what to do rather than SQLite's "attempt to write a readonly database".
#[test]
fn a_store_another_user_owns_says_why_it_cannot_be_opened() {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::new();
    let stream = tar_stream(&["tar", "-cf", "-", "-C", "/etc", "hostname"]);
    store.snapshot_bytes(&stream, "vm");
    for dir in [store.dir.path(), &store.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // verify too: the index is sound, so no word of repairing it.
    for args in [&["list"][..], &["export", "vm"], &["verify"]] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cellar_bin())
            .args(args)
            .env("CELLAR_STORE", store.path())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("this user may not write to the store") && !err.contains("repair"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A copy of a store taken while another process had its index open (a running mount or
/// `serve`) keeps the last commits in `cellar.db-wal`. Read-only, with or without the
/// `-shm` beside it, those snapshots are listed and export, and the copy's files are left as
/// they were.
#[test]
fn a_read_only_store_reads_the_commits_still_in_its_wal() {
    let store = TestStore::new();
    let tree = store.scratch("tree");
    write_file(&tree.join("etc/hostname"), b"vm1\n");
    store.snapshot_bytes(&tar_of_dir(&tree), "old");
    // An open read transaction keeps the next commit from being checkpointed into the file.
    let reader = store.db();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM snapshots;")
        .unwrap();
    write_file(&tree.join("etc/hostname"), b"vm2\n");
    let stream = tar_of_dir(&tree);
    store.snapshot_bytes(&stream, "new");
    let wal = store.path().join("cellar.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the WAL holds the commit"
    );

    for with_shm in [true, false] {
        let copy = store.scratch(&format!("copy-{with_shm}"));
        sh(&format!(
            "cp -a '{}' '{}'",
            store.path().display(),
            copy.display()
        ));
        if !with_shm {
            fs::remove_file(copy.join("cellar.db-shm")).unwrap();
        }
        let before = files(&copy);
        let view = ReadOnlyView::new(&copy, &store.scratch(&format!("ro-{with_shm}")));
        let listed: serde_json::Value =
            serde_json::from_slice(&ok(&view.dst, &["list", "--json"])).unwrap();
        let names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["old", "new"], "with -shm: {with_shm}");
        assert!(ok(&view.dst, &["export", "new"]) == stream);
        assert_success(&cellar_at(&view.dst, &["verify"]), &["verify"]);
        drop(view);
        assert_eq!(files(&copy), before, "the copy changed");
    }
    drop(reader);
}

/// A damaged index on a read-only filesystem is damage, said so (repair-index from a
/// writable copy), not this user's missing permission, which a read-only filesystem does not
/// need.
#[test]
fn a_damaged_index_on_a_read_only_filesystem_is_called_damage() {
    let store = TestStore::new();
    let stream = tar_stream(&["tar", "-cf", "-", "-C", "/etc", "hostname"]);
    store.snapshot_bytes(&stream, "vm");
    let db = store.path().join("cellar.db");
    let mut bytes = fs::read(&db).unwrap();
    bytes[..100].fill(b'x');
    fs::write(&db, bytes).unwrap();
    let view = ReadOnlyView::new(&store.path(), &store.scratch("ro"));
    for args in [&["list"][..], &["verify"]] {
        let out = cellar_at(&view.dst, args);
        // verify reports the damage as its problem, on stdout.
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("repair-index") && !said.contains("may not write"),
            "{args:?}: {said}"
        );
    }
}
