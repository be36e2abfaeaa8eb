//! Members the restore cannot write fail on their own: a directory on disk that refuses
//! them (EACCES), a device the process may not make (EPERM). Everything else is written and
//! the restore exits 1 naming them, as GNU tar (exit 2) does under the same limits.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// `argv` run without the capabilities that let root write into any directory and make
/// devices, as an unprivileged user's restore would run.
fn unprivileged(argv: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set=-dac_override,-dac_read_search,-mknod", "--"])
        .args(argv)
        .env_remove("CELLAR_STORE");
    c
}

/// A directory `DIR/ro` that lets nobody but a privileged process write in it.
fn read_only_ro(dir: &Path) {
    fs::create_dir_all(dir.join("ro")).unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
}

/// `stream` snapshotted, then restored unprivileged (`--force --json`) into `out` with a
/// read-only `out/ro`: exit 1, what failed said.
fn restore_failing(store: &TestStore, stream: &[u8]) -> (Output, PathBuf) {
    let id = store.snapshot_bytes(stream, "vm");
    let out = store.scratch("out");
    read_only_ro(&out);
    let store_dir = store.path();
    let argv = [
        cellar_bin(),
        "--store",
        s(&store_dir),
        "restore",
        &id,
        s(&out),
    ];
    let r = unprivileged(&[&argv[..], &["--force", "--json"]].concat())
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    (r, out)
}

#[test]
fn members_that_cannot_be_written_fail_after_the_rest_is_written() {
    let store = TestStore::new();
    // By hand, in name order, so the walk meets the names in the stream's order.
    let mut t = Vec::new();
    member(&mut t, b"a/ok", b'0', b"ok\n", b"", 0o644);
    member(&mut t, b"dev/c0", b'3', b"", b"", 0o600);
    // 1, 3 (/dev/null's numbers): 0, 0 would be a whiteout, which anyone may make.
    let header = t.len() - 512;
    t[header + 329..header + 337].copy_from_slice(b"0000001\0");
    t[header + 337..header + 345].copy_from_slice(b"0000003\0");
    set_checksum(&mut t[header..]);
    member(&mut t, b"dev/c0-hard", b'1', b"", b"dev/c0", 0o600);
    member(&mut t, b"ro/", b'5', b"", b"", 0o755);
    member(&mut t, b"ro/f1", b'0', b"one\n", b"", 0o644);
    member(&mut t, b"ro/f2", b'0', b"two\n", b"", 0o644);
    // A directory that cannot be made: what is below it fails with it, and so does a
    // hardlink elsewhere to a file below it.
    member(&mut t, b"ro/sub/", b'5', b"", b"", 0o755);
    member(&mut t, b"ro/sub/deep", b'0', b"deep\n", b"", 0o644);
    member(&mut t, b"z/deep-hard", b'1', b"", b"ro/sub/deep", 0o644);
    member(&mut t, b"z/ok", b'0', b"z\n", b"", 0o644);
    end_of_archive(&mut t);
    let (r, out) = restore_failing(&store, &t);
    let err = stderr(&r);
    assert!(
        err.contains("7 members could not be restored:")
            && err.contains(&format!(
                "/dev/c0: {}: cannot create a char device (Operation not permitted",
                s(&out.join("dev/c0"))
            ))
            && err.contains("/dev/c0-hard: a hardlink to /dev/c0, which could not be restored")
            && err.contains(&format!(
                "/ro/f1: {}: Permission denied",
                s(&out.join("ro/f1"))
            ))
            && err.contains("/ro/f2: "),
        "{err}"
    );
    let (failed, mut paths) = failures(&r);
    paths.sort();
    assert_eq!(failed, 7);
    assert_eq!(
        paths,
        [
            "/dev/c0",
            "/dev/c0-hard",
            "/ro/f1",
            "/ro/f2",
            "/ro/sub",
            "/ro/sub/deep",
            "/z/deep-hard"
        ]
        .map(String::from)
        .to_vec()
    );
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let reason = |path: &str| {
        report["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| f["reason"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(
        reason("/ro/sub/deep"),
        "in /ro/sub, which could not be restored"
    );
    assert_eq!(
        reason("/z/deep-hard"),
        "a hardlink to /ro/sub/deep, which could not be restored"
    );
    assert_eq!(fs::read(out.join("a/ok")).unwrap(), b"ok\n");
    assert_eq!(fs::read(out.join("z/ok")).unwrap(), b"z\n");

    // GNU tar under the same limits leaves the same names.
    let ex = store.scratch("extract");
    read_only_ro(&ex);
    let file = store.scratch("stream.tar");
    fs::write(&file, &t).unwrap();
    let tar = unprivileged(&["tar", "--numeric-owner", "-xpf", s(&file), "-C", s(&ex)])
        .output()
        .unwrap();
    assert_eq!(tar.status.code(), Some(2), "{}", stderr(&tar));
    assert_eq!(listing(&out), listing(&ex), "not what GNU tar leaves");
}

/// A device number Linux cannot hold (a major past 12 bits, a minor past 20) cannot be made:
/// a failure like any member mknod refuses (GNU tar: "Cannot mknod"), whichever part is too
/// wide.
#[test]
fn device_numbers_linux_cannot_hold_fail() {
    let store = TestStore::new();
    let id = store.snapshot_bytes(&devices_linux_cannot_hold(), "vm");
    let out = store.scratch("out");
    let r = restore(&store, &[&id, s(&out), "--json"]);
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/major4096: device number 4096, 0 cannot be made on Linux")
            && err.contains("/minor2e40: device number 1, 1099511627776 cannot be made"),
        "{err}"
    );
    assert_eq!(
        failures(&r),
        (2, ["/major4096", "/minor2e40"].map(String::from).to_vec())
    );
    let null = fs::symlink_metadata(out.join("null")).unwrap();
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
}

/// Failed members are named one way each: in messages escaped as `ls -b` escapes (a
/// backslash doubled, so `x\ny` and a newline differ), in `--json` as the path itself, with
/// `path_bytes` when it is not UTF-8.
#[test]
fn failed_names_are_told_apart_in_messages_and_json() {
    let store = TestStore::new();
    let mut t = Vec::new();
    member(&mut t, b"ro/", b'5', b"", b"", 0o755);
    for name in [&b"ro/x\ny"[..], b"ro/x\\ny", b"ro/\xff"] {
        member(&mut t, name, b'0', b"", b"", 0o644);
    }
    end_of_archive(&mut t);
    let (r, _) = restore_failing(&store, &t);
    let err = stderr(&r);
    for shown in ["\n  /ro/x\\ny: ", "\n  /ro/x\\\\ny: ", "\n  /ro/\\377: "] {
        assert!(err.contains(shown), "{shown:?} not in {err}");
    }
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let mut named: Vec<(String, Option<String>)> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let bytes = f.get("path_bytes").map(|b| b.as_str().unwrap().to_string());
            (f["path"].as_str().unwrap().to_string(), bytes)
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("/ro/x\ny".to_string(), None),
            ("/ro/x\\ny".to_string(), None),
            ("/ro/\u{fffd}".to_string(), Some("L3JvL/8=".to_string())),
        ]
    );
}
