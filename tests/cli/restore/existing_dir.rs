//! Restoring into a DIR that already holds something: refused unless `--force`, which reuses
//! directories, replaces what is in the way, and never follows a symlink already in DIR.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use super::*;

#[test]
fn a_non_empty_dir_is_refused_without_force_and_reused_with_it() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let id = store.snapshot_bytes(&archive(GNU_POSIX_SPARSE, &root), "vm");
    let ex = store.scratch("extract");
    extract(&store, &archive(GNU_POSIX_SPARSE, &root), &ex);

    let out = store.scratch("out");
    write_file(
        &out.join("etc/hostname"),
        b"something else, longer than before\n",
    );
    write_file(&out.join("mine.txt"), b"keep me\n");
    fs::create_dir_all(out.join("usr/bin/tool")).unwrap(); // an empty dir where a file goes
    symlink("nowhere", out.join("var")).unwrap(); // a symlink where a directory goes

    let refused = restore(&store, &[&id, s(&out)]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not empty") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        fs::read(out.join("etc/hostname")).unwrap(),
        b"something else, longer than before\n",
        "a refused restore touched DIR"
    );
    assert!(!out.join("usr/share").exists(), "a refused restore wrote");

    let done = restore_ok(&store, &[&id, s(&out), "--force"]);
    assert_eq!(fs::read(out.join("mine.txt")).unwrap(), b"keep me\n");
    assert!(
        !out.join("var").symlink_metadata().unwrap().is_symlink(),
        "the symlink in the way was kept"
    );
    // `mine.txt` stays, and rsync is told to look past it rather than the file being
    // removed: removing it would set DIR's mtime to now, and rsync compares times in whole
    // seconds, so the comparison would pass or fail by whether a second boundary fell
    // between making the tree and this line.
    let past_mine = ["--exclude=/mine.txt"];
    assert_rsync_same_with(&out, &ex, "--force over an older tree", &past_mine);
    assert!(stderr(&done).contains("restored"), "{}", stderr(&done));

    // Restoring again over the complete result changes nothing.
    restore_ok(&store, &[&id, s(&out), "--force"]);
    assert_rsync_same_with(&out, &ex, "--force twice", &past_mine);
    assert_eq!(fs::read(out.join("mine.txt")).unwrap(), b"keep me\n");

    // DIR itself a symlink (even to an empty directory): refused (exit 2), saying so; a
    // file: refused as not a directory.
    let link = store.scratch("dirlink");
    let target = store.scratch("dirlink-target");
    fs::create_dir(&target).unwrap();
    symlink(&target, &link).unwrap();
    let file = out.join("etc/hostname");
    for (dir, force, says) in [
        (&link, true, "dirlink is a symlink, and DIR must not be one"),
        (
            &link,
            false,
            "dirlink is a symlink, and DIR must not be one",
        ),
        (&file, true, "hostname is not a directory"),
    ] {
        let mut args = vec![id.as_str(), s(dir)];
        if force {
            args.push("--force");
        }
        let r = restore(&store, &args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(says), "{args:?}: {}", stderr(&r));
    }
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);

    // A DIR that cannot be created: the error says what restore was doing (exit 1).
    let r = restore(&store, &[&id, "/proc/nope/x"]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("/proc/nope/x: creating the restore directory: "),
        "{}",
        stderr(&r)
    );
}

#[test]
fn force_never_follows_a_symlink_already_in_dir() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("sub/a"), b"a\n");
    write_file(&root.join("sub/deeper/b"), b"b\n");
    write_file(&root.join("file"), b"file\n");
    write_file(&root.join("dev-less/c"), b"c\n");
    fs::hard_link(root.join("sub/a"), root.join("sub/deeper/a-hard")).unwrap();
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");

    let outside = store.scratch("OUTSIDE");
    fs::create_dir(&outside).unwrap();
    let out = store.scratch("out");
    fs::create_dir(&out).unwrap();
    symlink(&outside, out.join("sub")).unwrap();
    symlink(outside.join("file"), out.join("file")).unwrap();
    fs::create_dir(out.join("dev-less")).unwrap();
    symlink(&outside, out.join("dev-less/c")).unwrap();

    restore_ok(&store, &[&id, s(&out), "--force"]);
    assert!(
        listing(&outside).is_empty(),
        "written outside DIR through a symlink: {:?}",
        listing(&outside)
    );
    assert!(out.join("sub").symlink_metadata().unwrap().is_dir());
    assert!(out.join("file").symlink_metadata().unwrap().is_file());
    assert_eq!(fs::read(out.join("sub/deeper/b")).unwrap(), b"b\n");
    assert_eq!(
        out.join("sub/a").metadata().unwrap().ino(),
        out.join("sub/deeper/a-hard").metadata().unwrap().ino()
    );
    let ex = store.scratch("extract");
    extract(&store, &stream, &ex);
    assert_rsync_same(&out, &ex, "--force over symlinks");
}
