//! Hostile and odd streams: names that try to leave the tree, a path named by two members (the
//! last one wins), and parent directories the stream never names.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::errors::assert_usage_error;
use super::oracle::*;
use crate::common::*;

#[test]
fn hostile_names_stay_inside_the_tree() {
    let store = TestStore::new();
    let mut s = Vec::new();
    member(&mut s, b"/abs/file", b'0', b"abs\n", b"", 0o644);
    member(&mut s, b"../evil", b'0', b"evil\n", b"", 0o644);
    member(&mut s, b"a/../../b", b'0', b"b\n", b"", 0o644);
    member(&mut s, b"link", b'2', b"", b"/etc", 0o777);
    member(
        &mut s,
        b"link/passwd",
        b'0',
        b"root::0:0::/:/bin/sh\n",
        b"",
        0o644,
    );
    member(&mut s, b"ok", b'0', b"ok\n", b"", 0o600);
    end_of_archive(&mut s);

    let out = store.run_stdin(&["snapshot", "--name", "vm", "-"], &s);
    assert_success(&out, &["snapshot", "(hostile names)"]);
    let id = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    let err = stderr(&out);
    for name in [
        "../evil",
        "a/../../b",
        "/abs/file: names beginning with '/'",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains("warning") && l.contains(name)),
            "snapshot should warn about {name:?}:\n{err}"
        );
    }
    assert!(store.export(&id) == s, "export is still bit-exact");

    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R"])),
        vec!["/abs", "/abs/file", "/link", "/ok"],
        "'..' members are left out; nothing is reachable through the symlink"
    );
    assert_eq!(store.run(&["cat", &id, "/abs/file"]).stdout, b"abs\n");
    assert_eq!(store.run(&["cat", &id, "abs/file"]).stdout, b"abs\n");
    let link = &ls_json(&store, &[&id, "/link"])[0];
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link_target"], "/etc");
    assert!(store
        .ok(&["ls", &id, "-l", "/link"])
        .trim_end()
        .ends_with(" /link -> /etc"));

    let out = store.run(&["ls", &id, "/link/passwd"]);
    assert_usage_error(&out, "ls /link/passwd", &["/link"]);
    let out = store.run(&["cat", &id, "/link/passwd"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "cat /link/passwd: {}",
        stderr(&out)
    );
    for p in ["/evil", "/b", "/a", "/../evil"] {
        let out = store.run(&["ls", &id, p]);
        assert_eq!(out.status.code(), Some(2), "ls {p}: {}", stderr(&out));
    }
}

/// `tar -rf` appends a second `f`: the last member for a path wins, as extraction has it.
#[test]
fn the_last_member_for_a_path_wins() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("d/f"), b"first version\n");
    write_file(&root.join("g"), b"g\n");
    let archive = store.scratch("appended.tar");
    let (r, a) = (root.display(), archive.display());
    sh(&format!("tar -cf '{a}' -C '{r}' d g"));
    std::fs::write(root.join("d/f"), b"second, longer version\n").unwrap();
    std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    sh(&format!("tar -rf '{a}' -C '{r}' d/f"));
    let stream = std::fs::read(&archive).unwrap();
    let id = store.snapshot_bytes(&stream, "vm");

    let out = store.run(&["cat", &id, "/d/f"]);
    assert_success(&out, &["cat", "/d/f"]);
    assert_eq!(out.stdout, b"second, longer version\n");
    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R"])),
        vec!["/d", "/d/f", "/g"]
    );
    let f = &ls_json(&store, &[&id, "/d/f"])[0];
    assert_eq!(f["size"], 23);
    assert_eq!(f["mode"], 0o640);
    assert_eq!(f["nlink"], 1);

    let dir = store.scratch("extracted");
    extract(&store, &stream, &dir);
    assert_eq!(
        std::fs::read(dir.join("d/f")).unwrap(),
        b"second, longer version\n"
    );
    assert_eq!(json_meta(f), disk_meta(&dir.join("d/f")));
    assert!(store.export(&id) == stream);
}

/// A member whose parent directories the stream never names: they exist, 0755, root-owned.
#[test]
fn implicit_parent_directories() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("usr/bin/tool"), b"#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::lchown(root.join("usr/bin/tool"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(root.join("usr"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(root.join("usr"), Some(42), Some(42)).unwrap();
    let stream = tar_of_names(&root, &["usr/bin/tool"]);
    let id = store.snapshot_bytes(&stream, "vm");

    let all = ls_json(&store, &[&id, "-R", "/"]);
    let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/usr", "/usr/bin", "/usr/bin/tool"]);
    for e in &all[..2] {
        assert_eq!(e["type"], "dir", "{e}");
        assert_eq!(e["mode"], 0o755, "{e}");
        assert_eq!(e["uid"], 0, "{e}");
        assert_eq!(e["gid"], 0, "{e}");
    }
    let tool = &all[2];
    assert_eq!(tool["mode"], 0o700);
    assert_eq!(
        (tool["uid"].clone(), tool["gid"].clone()),
        (json!(1234), json!(5678))
    );
    assert_eq!(
        store.run(&["cat", &id, "/usr/bin/tool"]).stdout,
        b"#!/bin/sh\n"
    );
    let long = store.ok(&["ls", &id, "-l"]);
    assert!(long.starts_with("drwxr-xr-x "), "{long}");
    assert!(long.trim_end().ends_with(" /usr"), "{long}");

    // The same stream snapshotted again (a second later) is the same tree: what the implicit
    // directories get does not depend on when the snapshot was taken.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = store.snapshot_bytes(&stream, "vm");
    assert_eq!(
        store.ok(&["diff", &id, &again]),
        "",
        "diff of two snapshots of one stream"
    );
}

/// An implicit directory's mtime is the newest of every member's, a hardlink's included.
#[test]
fn an_implicit_directory_takes_the_newest_mtime_a_hardlink_s_too() {
    let store = TestStore::new();
    let mut t = Vec::new();
    // A member whose header starts at `h` gets mtime `secs`.
    let dated = |t: &mut Vec<u8>, h: usize, secs: u64| {
        t[h + 136..h + 148].copy_from_slice(format!("{secs:011o}\0").as_bytes());
        set_checksum(&mut t[h..h + 512]);
    };
    member(&mut t, b"d/f", b'0', b"x", b"", 0o644);
    dated(&mut t, 0, 1000);
    let h = t.len();
    member(&mut t, b"d/h", b'1', b"", b"d/f", 0o644);
    dated(&mut t, h, 2000);
    end_of_archive(&mut t);
    let id = store.snapshot_bytes(&t, "vm");
    let d = &ls_json(&store, &[&id, "/"])[0];
    assert_eq!(d["path"], "/d");
    assert_eq!(d["mtime"], "1970-01-01T00:33:20Z", "{d}");
}
