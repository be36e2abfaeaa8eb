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

/// A non-empty directory in the way of a member (with `--force`) is a failure: the restore
/// writes everything else, then exits 1 naming what it could not write, and hardlinks to a
/// member it could not write are not written either. GNU tar leaves out the same names.
#[test]
fn members_blocked_by_a_non_empty_dir_fail_the_restore_after_the_rest() {
    let store = TestStore::new();
    // By hand, in name order, so the walk meets each group's names in the stream's order.
    let mut t = Vec::new();
    member(&mut t, b"a/f", b'0', b"first\n", b"", 0o644);
    member(&mut t, b"b/f-hard", b'1', b"", b"a/f", 0o644);
    member(&mut t, b"c/ok", b'0', b"ok\n", b"", 0o644);
    member(&mut t, b"d/first", b'0', b"d\n", b"", 0o644);
    member(&mut t, b"e/blocked", b'1', b"", b"d/first", 0o644);
    for i in 1..=4 {
        member(
            &mut t,
            format!("m/{i}").as_bytes(),
            b'0',
            b"m\n",
            b"",
            0o644,
        );
    }
    end_of_archive(&mut t);
    let id = store.snapshot_bytes(&t, "vm");
    let in_the_way = ["a/f", "e/blocked", "m/1", "m/2", "m/3", "m/4"];
    let prepare = |dir: &Path| {
        for p in in_the_way {
            write_file(&dir.join(p).join("keep"), b"keep\n");
        }
    };

    let out = store.scratch("out");
    prepare(&out);
    let r = restore(&store, &[&id, s(&out), "--force", "--json"]);
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("7 members could not be restored:")
            && err.contains(&format!(
                "/a/f: a non-empty directory is in the way at {}",
                s(&out.join("a/f"))
            ))
            && err.contains("/b/f-hard: a hardlink to /a/f, which could not be restored")
            && err.contains("/e/blocked: a non-empty directory is in the way")
            && err.contains("... and 2 more (--json lists them)"),
        "{err}"
    );
    assert!(
        !err.contains("/m/3"),
        "more than the first few named:\n{err}"
    );
    let failed = [
        "/a/f",
        "/b/f-hard",
        "/e/blocked",
        "/m/1",
        "/m/2",
        "/m/3",
        "/m/4",
    ];
    assert_eq!(failures(&r), (7, failed.map(String::from).to_vec()));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).expect("--json");
    assert_eq!(
        report["failures"][1]["reason"],
        "a hardlink to /a/f, which could not be restored"
    );

    // Everything else is there; what was in the way is as it was; the failed hardlink was
    // not written as a copy of its own.
    assert_eq!(fs::read(out.join("c/ok")).unwrap(), b"ok\n");
    assert_eq!(fs::read(out.join("d/first")).unwrap(), b"d\n");
    assert_eq!(fs::read(out.join("a/f/keep")).unwrap(), b"keep\n");
    assert!(
        !out.join("b/f-hard").exists(),
        "a hardlink to nothing written"
    );
    let ex = store.scratch("extract");
    prepare(&ex);
    extract_allowing_errors(&store, &t, &ex);
    assert_eq!(listing(&out), listing(&ex), "not what GNU tar leaves");

    // With the obstacles gone, the same restore completes the tree.
    for p in in_the_way {
        fs::remove_dir_all(out.join(p)).unwrap();
    }
    restore_ok(&store, &[&id, s(&out), "--force"]);
    assert_eq!(
        out.join("a/f").metadata().unwrap().ino(),
        out.join("b/f-hard").metadata().unwrap().ino()
    );
    assert_eq!(
        out.join("d/first").metadata().unwrap().ino(),
        out.join("e/blocked").metadata().unwrap().ino()
    );
}

/// A DIR that does not exist yet is made as `mkdir -p` would leave it, without what its `.`
/// and `..` pass through: `new/.` is `new`, and `new/sub/..` is `new`, with no `sub` made
/// (which would make DIR not empty). Through an existing directory, `..` is the kernel's.
#[test]
fn a_new_dir_through_dot_and_dot_dot_is_made_as_named() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("etc/hostname"), b"web\n");
    let id = store.snapshot_bytes(&archive(GNU_POSIX_SPARSE, &root), "vm");
    let listed = |dir: &std::path::Path| {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };

    let dot = store.scratch("dot");
    restore_ok(&store, &[&id, &format!("{}/.", s(&dot))]);
    assert_eq!(fs::read(dot.join("etc/hostname")).unwrap(), b"web\n");

    let up = store.scratch("up");
    restore_ok(&store, &[&id, &format!("{}/sub/..", s(&up))]);
    assert_eq!(listed(&up), ["etc"], "a `sub` was made and left");

    // `existing/missing/..` is `existing`, which is not empty: refused, and nothing made.
    let refused = restore(&store, &[&id, &format!("{}/missing/..", s(&up))]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not empty"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(listed(&up), ["etc"], "a refused restore made `missing`");
}
