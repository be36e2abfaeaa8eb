//! A whole snapshot restored and compared with GNU tar's extraction of the same stream (GNU
//! posix with sparse files and xattrs, bsdtar pax), and `--path` of a directory, a file and a
//! symlink.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Restore the whole snapshot and compare with the extraction: rsync both ways, sparse files
/// still sparse, hardlinks one inode, the report; then a negative control.
fn check_restore(what: &str, writer: &[&str], bsdtar_dir_order: bool) {
    let Fixture {
        store,
        id,
        ex,
        root,
        ..
    } = fixture(writer, bsdtar_dir_order);
    let out = store.scratch("out");
    let done = restore_ok(&store, &[&id, s(&out), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).expect("JSON report");
    assert_eq!(
        report["warnings"],
        serde_json::json!([]),
        "{what}: {report}"
    );
    assert_eq!(
        report["files"].as_u64().unwrap(),
        walk(&out).len() as u64,
        "{what}: files counts every name created: {report}"
    );
    assert!(
        report["bytes"].as_u64().unwrap() > 4_500_000,
        "{what}: {report}"
    );
    assert!(
        stderr(&done).contains("restored"),
        "{what}: no summary line: {}",
        stderr(&done)
    );

    assert_rsync_same(&out, &ex, what);

    // Sparse files stay sparse: only their data blocks are allocated.
    for (p, data) in [
        ("sparse/disk.img", 3 * 4096u64),
        ("sparse/holes-only.img", 0),
    ] {
        let m = out.join(p).symlink_metadata().unwrap();
        let src = root.join(p).symlink_metadata().unwrap();
        assert_eq!(m.len(), src.len(), "{what}: {p} length");
        assert!(
            m.blocks() * 512 <= data + (256 << 10),
            "{what}: {p} allocates {} bytes for {data} bytes of data",
            m.blocks() * 512
        );
    }
    // Hardlinks share an inode.
    let hard = format!("long/{}-hard", "h".repeat(110));
    for (a, b) in [
        ("etc/hostname", "etc/hostname.hard"),
        ("usr/bin/tool", hard.as_str()),
    ] {
        let (ma, mb) = (
            out.join(a).symlink_metadata().unwrap(),
            out.join(b).symlink_metadata().unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino(), "{what}: {a} and {b} are not one inode");
        assert_eq!(ma.nlink(), 2, "{what}: nlink of {a}");
    }
    // Spot checks rsync also covers, stated plainly.
    let st = |p: &str| out.join(p).symlink_metadata().unwrap();
    assert!(st("dev/null").file_type().is_char_device(), "{what}");
    assert_eq!(st("dev/loop9").rdev(), libc::makedev(7, 9), "{what}");
    assert!(st("dev/fifo").file_type().is_fifo(), "{what}");
    assert_eq!(st("modes/setuid").mode() & 0o7777, 0o4755, "{what}");
    assert_eq!(st("modes/sticky").mode() & 0o7777, 0o1777, "{what}");
    assert_eq!(
        (st("ids/big-owner").uid(), st("ids/big-owner").gid()),
        (3_000_000, 4_000_000),
        "{what}"
    );
    assert_eq!(st("ids/far-future").mtime(), 10_000_000_000, "{what}");
    assert_eq!(
        fs::read_link(out.join("etc/tool-link")).unwrap(),
        Path::new("../usr/bin/tool"),
        "{what}"
    );

    // Negative control: rsync does see a changed byte (same size and mtime) and a chmod.
    let victim = out.join("usr/share/doc/readme.txt");
    let vm = victim.symlink_metadata().unwrap();
    let mut data = fs::read(&victim).unwrap();
    data[1000] ^= 0x20;
    fs::write(&victim, &data).unwrap();
    set_mtime_ns(&victim, vm.mtime(), vm.mtime_nsec());
    fs::set_permissions(out.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, diff, err) = rsync_dry(&out, &ex);
    assert_eq!(code, Some(0), "{what}: control rsync: {err}");
    let line = |p: &str| diff.lines().find(|l| l.ends_with(p)).map(str::to_string);
    let changed = line("usr/share/doc/readme.txt")
        .unwrap_or_else(|| panic!("{what}: rsync missed a changed byte:\n{diff}"));
    assert!(changed.starts_with(">fc"), "{what}: {changed}");
    let perms =
        line("etc/hostname").unwrap_or_else(|| panic!("{what}: rsync missed a chmod:\n{diff}"));
    assert_eq!(perms.as_bytes()[5], b'p', "{what}: {perms}");
}

#[test]
fn restore_matches_gnu_tar_extraction_of_gnu_posix_sparse_stream() {
    check_restore("gnu posix xattrs sparse", GNU_POSIX_SPARSE, false);
}

#[test]
fn restore_matches_gnu_tar_extraction_of_bsdtar_pax_stream() {
    check_restore("bsdtar pax", BSDTAR_PAX, true);
}

#[test]
fn restore_path_of_a_directory_a_file_and_a_symlink() {
    let Fixture { store, id, ex, .. } = fixture(GNU_POSIX_SPARSE, false);

    // A directory: its contents (and its own attributes) go directly into DIR.
    let usr = store.scratch("usr");
    restore_ok(&store, &[&id, s(&usr), "--path", "/usr"]);
    assert_rsync_same(&usr, &ex.join("usr"), "--path /usr");
    let sparse = store.scratch("sparse");
    restore_ok(&store, &[&id, s(&sparse), "--path", "sparse/"]);
    assert_rsync_same(&sparse, &ex.join("sparse"), "--path sparse/");

    // A file (one name of a hardlink pair): DIR/NAME, with its attributes.
    let one = store.scratch("one");
    restore_ok(&store, &[&id, s(&one), "--path", "/usr/bin/tool"]);
    let names: Vec<_> = fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("tool")]);
    let (got, want) = (one.join("tool"), ex.join("usr/bin/tool"));
    assert!(
        fs::read(&got).unwrap() == fs::read(&want).unwrap(),
        "tool bytes"
    );
    let (mg, mw) = (got.metadata().unwrap(), want.metadata().unwrap());
    assert_eq!(
        (
            mg.mode(),
            mg.uid(),
            mg.gid(),
            mg.mtime(),
            mg.mtime_nsec(),
            mg.nlink()
        ),
        (
            mw.mode(),
            mw.uid(),
            mw.gid(),
            mw.mtime(),
            mw.mtime_nsec(),
            1
        ),
        "--path /usr/bin/tool: mode, owner, mtime (a lone name: one link)"
    );

    // A symlink: the link itself, never its target.
    let link = store.scratch("link");
    restore_ok(&store, &[&id, s(&link), "--path", "/etc/tool-link"]);
    let m = link.join("tool-link").symlink_metadata().unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(
        fs::read_link(link.join("tool-link")).unwrap(),
        Path::new("../usr/bin/tool")
    );
    let mw = ex.join("etc/tool-link").symlink_metadata().unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (mw.mtime(), mw.mtime_nsec()));

    // A path not in the snapshot, and an unknown SNAP: exit 2, DIR not even created. The
    // path is named in the snapshot looked in, as the summary line names it (SNAP may be a
    // name: `vm`, `vm~1`).
    let no_such = format!("cellar: error: {id}:/no: no such file or directory\n");
    let not_dir = format!("cellar: error: {id}:/etc/hostname: not a directory (it is a file)\n");
    for (args, says) in [
        (
            vec![id.as_str(), "", "--path", "/no/such"],
            no_such.as_str(),
        ),
        (vec!["vm", "", "--path", "no/such"], &no_such),
        (vec!["nosuchsnap", "", "--path", "/"], "nosuchsnap"),
        (
            vec![id.as_str(), "", "--path", "/etc/hostname/below"],
            &not_dir,
        ),
    ] {
        let dir = store.scratch("never");
        let mut args = args.clone();
        args[1] = s(&dir);
        let out = restore(&store, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!dir.exists(), "{args:?} created DIR");
    }
}

/// An id of 2^32-1 is chown's "unchanged": GNU tar leaves that one as it is and sets the other,
/// and so does restore, with a warning naming the id it left.
#[test]
fn an_owner_id_chown_cannot_set_leaves_the_other_set() {
    use std::os::unix::fs::MetadataExt;
    let store = TestStore::new();
    let mut stream = Vec::new();
    pax(&mut stream, &[("uid", b"4294967295"), ("gid", b"5")]);
    member(&mut stream, b"u", b'0', b"x\n", b"", 0o644);
    pax(&mut stream, &[("uid", b"7"), ("gid", b"4294967295")]);
    member(&mut stream, b"g", b'0', b"y\n", b"", 0o644);
    end_of_archive(&mut stream);
    let id = store.snapshot_bytes(&stream, "owners");
    let ex = store.scratch("ex");
    extract_allowing_errors(&store, &stream, &ex);
    let out = store.scratch("out");
    let done = restore_ok(&store, &[&id, s(&out)]);
    for name in ["u", "g"] {
        let (a, b) = (
            ex.join(name).symlink_metadata().unwrap(),
            out.join(name).symlink_metadata().unwrap(),
        );
        assert_eq!((b.uid(), b.gid()), (a.uid(), a.gid()), "{name}: as tar -x");
    }
    assert_eq!(out.join("u").symlink_metadata().unwrap().gid(), 5);
    assert_eq!(out.join("g").symlink_metadata().unwrap().uid(), 7);
    let err = stderr(&done);
    assert!(err.contains("uid 4294967295 does not fit"), "{err}");
    assert!(err.contains("gid 4294967295 does not fit"), "{err}");
}

/// ACLs as text (`SCHILY.acl.access`/`default`: bsdtar's default, GNU tar's `--acls`) restore as
/// the ACLs bsdtar's extraction sets, byte for byte in the kernel's form, with its modes (the
/// group bits the mask's); they were dropped.
#[test]
fn acls_written_as_text_are_restored() {
    use crate::tar_bytes::{end_of_archive, member, pax};
    let mut stream = Vec::new();
    pax(
        &mut stream,
        &[(
            "SCHILY.acl.access",
            b"user::rw-,group::r--,other::r--,user:bob:rwx:1234,mask::rwx",
        )],
    );
    // bsdtar's header mode: the owning group's bits, not the mask's.
    member(&mut stream, b"f", b'0', b"a", b"", 0o644);
    pax(
        &mut stream,
        &[(
            "SCHILY.acl.default",
            b"user::rwx\ngroup:1000:r-x\t#effective:r-x\ngroup::r-x\nmask::r-x\nother::---\n",
        )],
    );
    member(&mut stream, b"d/", b'5', b"", b"", 0o755);
    // A minimal ACL, its mode other than the header's: the mode is the ACL's, and Linux
    // keeps no ACL that the mode says whole.
    pax(
        &mut stream,
        &[("SCHILY.acl.access", b"user::rwx\ngroup::rwx\nother::r-x\n")],
    );
    member(&mut stream, b"m", b'0', b"m", b"", 0o644);
    // Text and an xattr of the same ACL that disagree: GNU tar and bsdtar set the text's.
    let xattr_acl = |entries: &[(u16, u16)]| -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, perm) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        v
    };
    let stale = xattr_acl(&[(1, 6), (4, 4), (0x10, 6), (0x20, 4)]);
    for (name, text) in [
        (
            &b"both"[..],
            &b"user::rwx,user:5:r--,group::r--,mask::r-x,other::---"[..],
        ),
        (b"both-minimal", b"user::r--,group::r--,other::r--"),
    ] {
        pax(
            &mut stream,
            &[
                ("SCHILY.xattr.system.posix_acl_access", &stale),
                ("SCHILY.acl.access", text),
            ],
        );
        member(&mut stream, name, b'0', b"x", b"", 0o644);
    }
    // No ACL on a symlink: none is set, and nothing is said.
    pax(
        &mut stream,
        &[(
            "SCHILY.acl.access",
            b"user::rwx,group::rwx,other::rwx,user:5:r--,mask::rwx",
        )],
    );
    member(&mut stream, b"link", b'2', b"", b"m", 0o777);
    end_of_archive(&mut stream);
    let store = TestStore::new();
    let id = store.snapshot_bytes(&stream, "acl");
    let out = store.scratch("out");
    let done = restore_ok(&store, &[&id, s(&out)]);
    assert!(!stderr(&done).contains("warning"), "{}", stderr(&done));
    let (bsd, tarball) = (store.scratch("bsd"), store.scratch("acl.tar"));
    fs::create_dir(&bsd).unwrap();
    fs::write(&tarball, &stream).unwrap();
    sh(&format!(
        "bsdtar -xpf '{}' -C '{}'",
        tarball.display(),
        bsd.display()
    ));
    for (name, acl) in [("f", "access"), ("d", "default")] {
        let key = format!("system.posix_acl_{acl}").into_bytes();
        let ours = xattrs_of(&out.join(name));
        assert!(ours.contains_key(&key), "{name}: {ours:?}");
        assert_eq!(
            ours.get(&key),
            xattrs_of(&bsd.join(name)).get(&key),
            "{name}"
        );
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&out.join(name)), mode(&bsd.join(name)), "{name}");
    }
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!((mode(&out.join("m")), mode(&bsd.join("m"))), (0o775, 0o775));
    for name in ["m", "both", "both-minimal", "link"] {
        assert_eq!(
            xattrs_of(&out.join(name)),
            xattrs_of(&bsd.join(name)),
            "{name}"
        );
        assert_eq!(mode(&out.join(name)), mode(&bsd.join(name)), "{name}");
    }
    let listed = store.json(&["ls", &id, "/m", "--json"]);
    assert_eq!(listed[0]["mode"], 0o775, "{listed}");
    assert_eq!(listed[0]["xattrs"], serde_json::json!([]), "{listed}");
    // A user named without a number cannot be set here: that ACL is left out, saying so.
    let mut named = Vec::new();
    pax(
        &mut named,
        &[(
            "SCHILY.acl.access",
            b"user::rw-,user:bob:r--,group::r--,mask::r--,other::---",
        )],
    );
    member(&mut named, b"g", b'0', b"g", b"", 0o640);
    end_of_archive(&mut named);
    let out = store.run_stdin(&["snapshot", "--name", "named", "-"], &named);
    assert_success(&out, &["snapshot", "a named ACL"]);
    assert!(
        stderr(&out).contains("g: 1 ACL record(s)"),
        "{}",
        stderr(&out)
    );
}
