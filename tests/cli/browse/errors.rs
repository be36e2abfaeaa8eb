//! Bad arguments: paths that do not exist, lead through a file or a symlink, or name the wrong
//! kind of entry, and snapshots that do not exist: exit status 2 and a message that says which.

use std::process::Output;

use super::oracle::*;
use crate::common::*;
use crate::trees::*;

/// Require exit status 2, nothing on stdout, and a message with every one of `needles`.
pub(super) fn assert_usage_error(out: &Output, what: &str, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status; stderr:\n{err}"
    );
    assert!(out.stdout.is_empty(), "{what}: wrote to stdout");
    for n in needles {
        assert!(err.contains(n), "{what}: message should name {n:?}:\n{err}");
    }
}

#[test]
fn bad_paths_and_snapshots_exit_2() {
    let store = TestStore::new();
    let id = snapshot_tree(&store, portable_tree, GNU_TAR).id;

    let out = store.run(&["ls", &id, "/no/such"]);
    assert_usage_error(&out, "ls /no/such", &["/no", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/nosuch"]);
    assert_usage_error(&out, "ls /etc/nosuch", &["/etc/nosuch", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/hostname/x"]);
    assert_usage_error(
        &out,
        "ls /etc/hostname/x",
        &["/etc/hostname", "not a directory"],
    );
    let out = store.run(&["cat", &id, "/etc/hostname/x"]);
    assert_usage_error(
        &out,
        "cat /etc/hostname/x",
        &["/etc/hostname", "not a directory"],
    );
    let out = store.run(&["cat", &id, "/etc"]);
    assert_usage_error(&out, "cat /etc", &["/etc", "directory"]);
    let out = store.run(&["cat", &id, "/"]);
    assert_usage_error(&out, "cat /", &["directory"]);
    let out = store.run(&["cat", &id, "/etc/tool-link"]);
    assert_usage_error(&out, "cat /etc/tool-link", &["symlink", "../usr/bin/tool"]);
    let out = store.run(&["cat", &id, "/etc/missing"]);
    assert_usage_error(&out, "cat /etc/missing", &["/etc/missing", "no such file"]);
    let out = store.run(&["ls", &id, "/etc/../etc"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "'..' in a path: {}",
        stderr(&out)
    );

    let out = store.run(&["ls", "nosuch-snap"]);
    assert_usage_error(&out, "ls nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["cat", "nosuch-snap", "/etc/hostname"]);
    assert_usage_error(&out, "cat nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["diff", &id, "nosuch-snap"]);
    assert_usage_error(&out, "diff SNAP nosuch-snap", &["nosuch-snap"]);
    let out = store.run(&["cat", &id]);
    assert_eq!(out.status.code(), Some(2), "cat without a path");
}

/// Every path error names the whole path from the root, in one form (`PATH: ...`), with the
/// kind spelled out.
#[test]
fn path_errors_name_the_whole_path_and_the_kind() {
    let store = TestStore::new();
    let id = snapshot_tree(&store, varied_tree, GNU_TAR).id;
    let cases: &[(&[&str], &str)] = &[
        (&["cat", "/dev/null"], "/dev/null: is a character device"),
        (&["cat", "dev/loop9"], "/dev/loop9: is a block device"),
        (&["cat", "/dev/fifo"], "/dev/fifo: is a fifo"),
        (
            &["cat", "/etc/tool-link"],
            "/etc/tool-link: is a symlink to ../usr/bin/tool",
        ),
        (&["cat", "/etc/"], "/etc: is a directory"),
        (
            &["ls", "/etc/.."],
            "/etc/..: '..' is not allowed in snapshot paths",
        ),
        (
            &["ls", "etc/../x"],
            "/etc/../x: '..' is not allowed in snapshot paths",
        ),
        (
            &["ls", "/dev/null/x"],
            "/dev/null: not a directory (it is a character device)",
        ),
        // A trailing slash names a directory, as it does to open(2).
        (
            &["cat", "/etc/hostname/"],
            "/etc/hostname/: not a directory (it is a file)",
        ),
        (
            &["ls", "/etc/tool-link/."],
            "/etc/tool-link/: not a directory (it is a symlink)",
        ),
    ];
    for (args, message) in cases {
        let argv = [&[args[0], id.as_str()][..], &args[1..]].concat();
        let out = store.run(&argv);
        let what = argv.join(" ");
        assert_usage_error(&out, &what, &[]);
        assert_eq!(
            stderr(&out),
            format!("cellar: error: {message}\n"),
            "{what}"
        );
    }
}

/// A path in a message is escaped as every message escapes it (spaces as they are), whichever
/// command and error names it: not as a listing line (`ls -b`'s `a\ b`).
#[test]
fn path_errors_leave_spaces_as_they_are() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    member(&mut stream, b"a b/", b'5', b"", b"", 0o755);
    member(&mut stream, b"a b/c d", b'0', b"x\n", b"", 0o644);
    member(&mut stream, b"a b/l", b'2', b"", b"to e", 0o777);
    end_of_archive(&mut stream);
    let id = store.snapshot_bytes(&stream, "spaces");
    for (args, message) in [
        (&["cat", "/a b"][..], "/a b: is a directory"),
        (&["cat", "/a b/l"], "/a b/l: is a symlink to to e"),
        (
            &["cat", "/a b/nosuch"],
            "/a b/nosuch: no such file or directory",
        ),
        (
            &["ls", "/a b/c d/"],
            "/a b/c d/: not a directory (it is a file)",
        ),
    ] {
        let argv = [&[args[0], id.as_str()][..], &args[1..]].concat();
        let out = store.run(&argv);
        assert_eq!(
            stderr(&out),
            format!("cellar: error: {message}\n"),
            "{argv:?}"
        );
    }
}
