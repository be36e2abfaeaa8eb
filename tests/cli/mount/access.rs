//! Who may do what through a mount: nothing writes (EROFS at every level of both views), other
//! users get in only with --allow-other and file permissions still hold, and bad arguments exit
//! 2 without mounting anything.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use super::fixtures::*;
use super::guard::*;
use super::oracle::{archive, c_path, GNU_TAR};
use crate::common::*;

fn assert_erofs(what: &str, r: io::Result<impl Sized>) {
    match r {
        Ok(_) => panic!("{what}: succeeded on a read-only mount"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
    }
}

#[test]
fn mount_is_read_only() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(
        &store,
        "tree",
        &[
            ("etc/hostname", b"vm1\n".to_vec()),
            ("d/sub/x", b"x\n".to_vec()),
        ],
    );
    let id = store.snapshot_bytes(&stream, "vm");
    let mut one = Mounted::new(&store, "one");
    one.daemon(&store, Some(&id));
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);

    let p = |s: &str| one.path(s);
    let file = p("etc/hostname");
    assert_erofs("create a file", File::create(p("new.txt")));
    assert_erofs(
        "create a file in a subdirectory",
        File::create(p("d/new.txt")),
    );
    assert_erofs("open for writing", File::options().write(true).open(&file));
    assert_erofs(
        "open for appending",
        File::options().append(true).open(&file),
    );
    assert_erofs(
        "open read-write",
        File::options().read(true).write(true).open(&file),
    );
    assert_erofs(
        "open with O_TRUNC",
        File::options().write(true).truncate(true).open(&file),
    );
    assert_erofs("mkdir", fs::create_dir(p("newdir")));
    assert_erofs(
        "touch (utimensat now)",
        libc_result(unsafe {
            libc::utimensat(libc::AT_FDCWD, c_path(&file).as_ptr(), std::ptr::null(), 0)
        }),
    );
    assert_erofs(
        "chmod",
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)),
    );
    assert_erofs(
        "chmod a directory",
        fs::set_permissions(p("d"), fs::Permissions::from_mode(0o700)),
    );
    assert_erofs("chown", std::os::unix::fs::lchown(&file, Some(1), Some(1)));
    let (name, value) = (CString::new("user.x").unwrap(), b"1");
    assert_erofs(
        "setxattr",
        libc_result(unsafe {
            libc::lsetxattr(
                c_path(&file).as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                1,
                0,
            )
        }),
    );
    assert_erofs(
        "removexattr",
        libc_result(unsafe { libc::lremovexattr(c_path(&file).as_ptr(), name.as_ptr()) }),
    );
    assert_erofs(
        "truncate",
        libc_result(unsafe { libc::truncate(c_path(&file).as_ptr(), 0) }),
    );
    assert_erofs("unlink", fs::remove_file(&file));
    assert_erofs("rmdir", fs::remove_dir(p("d/sub")));
    assert_erofs("rename", fs::rename(&file, p("etc/renamed")));
    assert_erofs("symlink", symlink("hostname", p("etc/link")));
    assert_erofs("hardlink", fs::hard_link(&file, p("etc/hard")));
    assert_erofs(
        "mkfifo",
        libc_result(unsafe { libc::mkfifo(c_path(&p("fifo")).as_ptr(), 0o644) }),
    );
    // The shell tools say so too.
    for cmd in ["touch", "rm -f", "chmod 600"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} '{}'", file.display()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} on the mount succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
    // Nothing changed.
    assert_eq!(fs::read(&file).unwrap(), b"vm1\n");
    assert_eq!(names_in(&one.path("")), set(&["d", "etc"]));

    // The all-snapshots view is read-only at every level.
    assert_erofs("mkdir at the top", fs::create_dir(all.path("newlineage")));
    assert_erofs("create in a lineage", File::create(all.path("vm/new")));
    assert_erofs(
        "mkdir in a lineage",
        fs::create_dir(all.path("vm/000000000000")),
    );
    assert_erofs("replace latest", fs::remove_file(all.path("vm/latest")));
    assert_erofs(
        "rename a snapshot",
        fs::rename(all.path(&format!("vm/{id}")), all.path("vm/x")),
    );
    assert_erofs(
        "write in a snapshot",
        File::create(all.path(&format!("vm/{id}/etc/new"))),
    );
    assert_erofs(
        "chmod a lineage",
        fs::set_permissions(all.path("vm"), fs::Permissions::from_mode(0o700)),
    );
    assert_eq!(store.snapshot_count(), 1);
    assert_eq!(store.export(&id), stream);
}

#[test]
fn bad_snapshot_or_mount_point_exits_2() {
    require("fusermount3");
    let store = TestStore::new();
    let stream = small_stream(&store, "tree", &[("a", b"a\n".to_vec())]);
    let id = store.snapshot_bytes(&stream, "vm");
    let m = Mounted::new(&store, "mnt");
    let mnt = m.dir_str().to_string();
    let file = store.scratch("plain-file");
    fs::write(&file, b"not a directory\n").unwrap();
    let file = file.to_str().unwrap().to_string();
    let missing = store.scratch("no-such-dir");
    let missing = missing.to_str().unwrap().to_string();

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["mount", &mnt, "nosuch", "--daemon"],
            "nosuch",
            "unknown SNAP, --daemon",
        ),
        (
            vec!["mount", &mnt, "nosuch"],
            "nosuch",
            "unknown SNAP, foreground",
        ),
        (
            vec!["mount", &file, &id, "--daemon"],
            "plain-file",
            "a file as MOUNTPOINT, --daemon",
        ),
        (
            vec!["mount", &file, &id],
            "plain-file",
            "a file as MOUNTPOINT",
        ),
        (
            vec!["mount", &file, "--daemon"],
            "plain-file",
            "a file as MOUNTPOINT, all snapshots",
        ),
        (
            vec!["mount", &missing, &id, "--daemon"],
            "no-such-dir: does not exist",
            "a missing MOUNTPOINT, --daemon",
        ),
        (
            vec!["mount", &missing],
            "no-such-dir: does not exist",
            "a missing MOUNTPOINT",
        ),
    ];
    for (args, needle, what) in cases {
        let out = run_bounded(&store, &args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit status; stderr:\n{err}"
        );
        assert!(
            err.contains(needle),
            "{what}: the message names {needle:?}:\n{err}"
        );
        assert!(!is_mounted(&m.path("")), "{what}: nothing mounted");
        assert!(
            mount_processes(&m.path("")).is_empty(),
            "{what}: no background process left"
        );
    }
    assert_eq!(fs::read(&file).unwrap(), b"not a directory\n");
    assert!(
        !Path::new(&missing).exists(),
        "a missing mount point is not created"
    );
}

/// Run `argv` as uid/gid 65534 (nobody); (success, stdout, stderr).
fn as_nobody(argv: &[&str]) -> (bool, String, String) {
    require("setpriv");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn allow_other_lets_other_users_in_and_permissions_still_hold() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("pub.txt"), b"public\n");
    write_file(&root.join("secret"), b"root only\n");
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("pub.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let stream = archive(GNU_TAR, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    // Let others reach the mount points below the (0700) temp dir.
    fs::set_permissions(store.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let mut plain = Mounted::new(&store, "plain");
    plain.daemon(&store, Some(&id));
    fs::set_permissions(store.scratch("plain"), fs::Permissions::from_mode(0o755)).ok();
    let p = plain.path("pub.txt");
    assert_eq!(
        fs::read(&p).unwrap(),
        b"public\n",
        "root reads its own mount"
    );
    let (ok, _, err) = as_nobody(&["cat", p.to_str().unwrap()]);
    assert!(!ok, "without --allow-other another user reads the mount");
    assert!(err.contains("Permission denied"), "{err}");

    for (name, daemon) in [("other-fg", false), ("other-daemon", true)] {
        let mut m = Mounted::new(&store, name);
        let dir = m.dir_str().to_string();
        if daemon {
            let out = store.run(&["mount", "--daemon", "--allow-other", &dir, &id]);
            m.daemon = mount_processes(&m.path("")).first().copied();
            assert_success(&out, &["mount", "--daemon", "--allow-other"]);
        } else {
            let mut cmd = store.cmd(&["mount", "--allow-other", &dir, &id]);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&m.log).unwrap())
                .spawn()
                .unwrap();
            m.child = Some(child);
            assert!(
                wait_for(BOUND, || is_mounted(&m.path(""))),
                "{name}: mounted; {}",
                m.log_text()
            );
        }
        let (ok, out, err) = as_nobody(&["cat", m.path("pub.txt").to_str().unwrap()]);
        assert!(
            ok && out == "public\n",
            "{name}: nobody reads pub.txt: {err}"
        );
        let (ok, out, err) = as_nobody(&["ls", m.path("").to_str().unwrap()]);
        assert!(
            ok && out == "pub.txt\nsecret\n",
            "{name}: nobody lists the root: {out} {err}"
        );
        let (ok, _, err) = as_nobody(&["cat", m.path("secret").to_str().unwrap()]);
        assert!(
            !ok && err.contains("Permission denied"),
            "{name}: a 0600 file stays private: {err}"
        );
        assert_eq!(
            fs::read(m.path("secret")).unwrap(),
            b"root only\n",
            "{name}: root reads it"
        );
    }
}

/// A snapshot's setuid programs run as whoever runs them, and its device nodes do not open:
/// the mount is nosuid and nodev, so an old `su` or a disk's node in a snapshot is not live
/// on the host.
#[test]
fn setuid_programs_and_device_nodes_in_a_mount_are_inert() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    fs::create_dir_all(&root).unwrap();
    fs::copy("/usr/bin/id", root.join("id")).unwrap();
    fs::set_permissions(root.join("id"), fs::Permissions::from_mode(0o4755)).unwrap();
    let null = CString::new(root.join("null").to_str().unwrap()).unwrap();
    // SAFETY: a valid path; mknod only reads it.
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod: {}", io::Error::last_os_error());
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let id = store.snapshot_bytes(&archive(GNU_TAR, &root), "vm");
    fs::set_permissions(store.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let mut m = Mounted::new(&store, "mnt");
    let dir = m.dir_str().to_string();
    let out = store.run(&["mount", "--daemon", "--allow-other", &dir, &id]);
    m.daemon = mount_processes(&m.path("")).first().copied();
    assert_success(&out, &["mount", "--daemon", "--allow-other"]);
    let line = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*dir))
        .map(str::to_string)
        .expect("the mount's line");
    let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
    assert!(
        opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{line}"
    );

    let st = fs::metadata(m.path("id")).unwrap();
    assert_eq!(st.permissions().mode() & 0o7777, 0o4755, "the bit is shown");
    let (ok, out, err) = as_nobody(&[m.path("id").to_str().unwrap(), "-u"]);
    assert!(
        ok && out == "65534\n",
        "the setuid program ran as {out:?} {err}"
    );
    let e = File::open(m.path("null")).expect_err("a device node opened through the mount");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
}
