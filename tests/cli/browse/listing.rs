//! `cellar ls` (one directory or entry, `-R`, `--json`, `-l` against GNU `ls -lnd`) and
//! `cellar cat`, including names that are not UTF-8 or hold control characters.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::Output;

use serde_json::{json, Value};

use super::oracle::*;
use crate::common::*;
use crate::trees::*;

// ---------------------------------------------------------------------------------------------
// ls

#[test]
fn ls_lists_one_directory_or_one_entry() {
    let store = TestStore::new();
    let Snapped { root, id, .. } = snapshot_tree(&store, varied_tree, GNU_TAR);

    // The root (default and explicit), and a directory: its entries only, in name order.
    let children = |rel: &str| -> Vec<String> {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("/{rel}")
        };
        names
            .iter()
            .map(|n| format!("{prefix}/{}", ls_b(n)))
            .collect()
    };
    assert_eq!(lines(&store.ok(&["ls", &id])), children(""), "ls SNAP");
    assert_eq!(
        lines(&store.ok(&["ls", &id, "/"])),
        children(""),
        "ls SNAP /"
    );
    assert_eq!(lines(&store.ok(&["ls", &id, "/etc"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "/etc/"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "etc"])), children("etc"));
    assert_eq!(lines(&store.ok(&["ls", &id, "/names"])), children("names"));
    assert_eq!(
        lines(&store.ok(&["ls", &id, "/usr"])),
        vec!["/usr/bin", "/usr/share"],
        "no -R: nothing below the subdirectories"
    );
    assert_eq!(
        store.ok(&["ls", &id, "/var/empty-dir"]),
        "",
        "an empty directory"
    );
    assert_eq!(
        ls_json(&store, &[&id, "/var/empty-dir"]),
        Vec::<Value>::new()
    );

    // -R from a subdirectory: everything below it, depth first.
    assert_eq!(
        lines(&store.ok(&["ls", &id, "-R", "/usr"])),
        vec![
            "/usr/bin",
            "/usr/bin/tool",
            "/usr/share",
            "/usr/share/doc",
            "/usr/share/doc/readme.txt"
        ]
    );

    // A file, a symlink, a device: that entry.
    assert_eq!(store.ok(&["ls", &id, "/etc/hostname"]), "/etc/hostname\n");
    assert_eq!(store.ok(&["ls", &id, "/etc/tool-link"]), "/etc/tool-link\n");
    assert_eq!(store.ok(&["ls", &id, "-R", "/dev/null"]), "/dev/null\n");
    let one = ls_json(&store, &[&id, "/etc/tool-link"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["path"], "/etc/tool-link");
    assert_eq!(one[0]["type"], "symlink");
    assert_eq!(one[0]["link_target"], "../usr/bin/tool");
    assert_eq!(one[0]["size"], "../usr/bin/tool".len());

    let f = &ls_json(&store, &[&id, "/ids/far-future"])[0];
    assert_eq!(f["mtime"], "2286-11-20T17:46:40Z");
    assert_eq!(f["size"], 16);
    assert_eq!(f["type"], "file");
    assert_eq!(f["mode"], 0o644);
    let big = &ls_json(&store, &[&id, "/ids/big-owner"])[0];
    assert_eq!(
        (big["uid"].clone(), big["gid"].clone()),
        (json!(3_000_000), json!(4_000_000))
    );
    let dev = &ls_json(&store, &[&id, "/dev/null"])[0];
    assert_eq!(dev["type"], "char");
    assert_eq!(
        (dev["dev_major"].clone(), dev["dev_minor"].clone()),
        (json!(1), json!(3))
    );
    let null_mode = std::fs::symlink_metadata(root.join("dev/null"))
        .unwrap()
        .mode()
        & 0o7777;
    assert_eq!(dev["mode"], null_mode);
    let blk = &ls_json(&store, &[&id, "/dev/loop9"])[0];
    assert_eq!(blk["type"], "block");
    // A directory PATH lists what is in it, not the directory itself.
    assert_eq!(
        ls_json(&store, &[&id, "/modes/sticky"]),
        Vec::<Value>::new()
    );
    let modes = ls_json(&store, &[&id, "/modes"]);
    let paths: Vec<&str> = modes.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/modes/setuid", "/modes/sticky"]);
    assert_eq!(modes[0]["mode"], 0o4755);
    assert_eq!(modes[1]["type"], "dir");
    assert_eq!(modes[1]["mode"], 0o1777);

    // The non-UTF-8 name: escaped in text, lossy `path` plus exact `path_bytes` in JSON.
    let names = ls_json(&store, &[&id, "/names"]);
    let odd = names
        .iter()
        .find(|e| e.get("path_bytes").is_some())
        .expect("an entry with path_bytes");
    assert_eq!(
        b64decode(odd["path_bytes"].as_str().unwrap()),
        b"/names/bad-\xff\xfe-utf8"
    );
    assert_eq!(odd["path"], "/names/bad-\u{fffd}\u{fffd}-utf8");
    assert_eq!(
        names
            .iter()
            .filter(|e| e.get("path_bytes").is_some())
            .count(),
        1,
        "path_bytes only where the name is not UTF-8"
    );
    let text = store.ok(&["ls", &id, "/names"]);
    for want in [
        "/names/bad-\\377\\376-utf8",
        "/names/tab\\tand\\ space",
        "/names/new\\nline",
        "/names/ünïcødé-日本語.txt",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "ls /names should show {want:?}:\n{text}"
        );
    }
}

/// `.` components and doubled slashes in PATH are ignored, and never echoed: every path `ls`
/// (plain, `-l`, `-R`, `--json`) and `cat` print is the normalized one from the root.
#[test]
fn dot_components_are_not_echoed() {
    let store = TestStore::new();
    let id = snapshot_tree(&store, portable_tree, GNU_TAR).id;

    assert_eq!(store.ok(&["ls", &id, "."]), store.ok(&["ls", &id]));
    assert_eq!(store.ok(&["ls", &id, ".//./"]), store.ok(&["ls", &id]));
    assert_eq!(
        store.ok(&["ls", &id, "./etc", "-l"]),
        store.ok(&["ls", &id, "/etc", "-l"])
    );
    assert_eq!(
        store.ok(&["ls", &id, "-R", "./usr/."]),
        store.ok(&["ls", &id, "-R", "/usr"])
    );
    assert_eq!(store.ok(&["ls", &id, "etc/./hostname"]), "/etc/hostname\n");
    assert!(store
        .ok(&["ls", &id, "etc/./hostname", "-l"])
        .ends_with(" /etc/hostname\n"));
    let paths: Vec<Value> = ls_json(&store, &[&id, "./etc"])
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    let want: Vec<Value> = ls_json(&store, &[&id, "/etc"])
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(paths, want);
    assert_eq!(
        ls_json(&store, &[&id, "./etc//./hostname"])[0]["path"],
        "/etc/hostname"
    );

    let out = store.run(&["cat", &id, "./etc/."]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(" /etc: "), "{}", stderr(&out));
    let out = store.run(&["cat", &id, "./etc/./tool-link"]);
    assert!(
        stderr(&out).contains(" /etc/tool-link:"),
        "{}",
        stderr(&out)
    );
}

/// `ls -l` against GNU `ls -lnd` of the extracted tree: mode string, link count (non
/// directories), numeric owners, size (or device numbers), time, and `-> target`.
#[test]
fn ls_long_looks_like_ls_l() {
    require("ls");
    let store = TestStore::new();
    let Snapped { stream, id, .. } = snapshot_tree(&store, varied_tree, GNU_TAR_POSIX_XATTRS);
    let dir = store.scratch("extracted");
    extract(&store, &stream, &dir);

    let long = store.ok(&["ls", &id, "-R", "-l"]);
    let long: Vec<&str> = long.lines().collect();
    let disk = walk(&dir);
    assert_eq!(
        long.len(),
        disk.len(),
        "one -l line per entry:\n{}",
        long.join("\n")
    );

    for (line, (path, on_disk)) in long.iter().zip(&disk) {
        let meta = disk_meta(on_disk);
        let out = std::process::Command::new("ls")
            .args(["-lnd", "-b", "--time-style=+%Y-%m-%d %H:%M", "--"])
            .arg(on_disk)
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert!(out.status.success(), "ls -lnd {}", on_disk.display());
        let reference = String::from_utf8(out.stdout).unwrap();
        let reference = reference.trim_end();
        // Columns before the name: 7, or 8 for devices ("MAJOR, MINOR").
        let columns = if meta.dev.is_some() { 8 } else { 7 };
        let ours: Vec<&str> = line.split_whitespace().collect();
        let theirs: Vec<&str> = reference.split_whitespace().collect();
        let shown = lossy(path);
        assert!(ours.len() > columns, "{shown}: short line {line:?}");
        // Mode string (GNU ls may mark an SELinux context or ACL with '.'/'+').
        assert_eq!(
            ours[0],
            theirs[0].trim_end_matches(['.', '+']),
            "{shown}: mode string in {line:?} vs {reference:?}"
        );
        if meta.kind != "dir" {
            assert_eq!(
                ours[1], theirs[1],
                "{shown}: link count in {line:?} vs {reference:?}"
            );
            assert_eq!(
                ours[4..columns - 2],
                theirs[4..columns - 2],
                "{shown}: size / device in {line:?} vs {reference:?}"
            );
        }
        assert_eq!(
            ours[2..4],
            theirs[2..4],
            "{shown}: owners in {line:?} vs {reference:?}"
        );
        assert_eq!(
            ours[columns - 2..columns],
            theirs[columns - 2..columns],
            "{shown}: time in {line:?} vs {reference:?}"
        );
        // The name, escaped like `ls -b`, then `-> target` for symlinks.
        let name_and_target = ours[columns..].join(" ");
        let mut want = format!("/{}", ls_b(&path[1..]));
        if let Some((_, target)) = reference.split_once(" -> ") {
            want.push_str(" -> ");
            want.push_str(target);
        }
        assert_eq!(name_and_target, want, "{shown}: name in {line:?}");
    }

    // And literally, the cases the issue names.
    let find = |suffix: &str| -> &str {
        long.iter()
            .find(|l| l.ends_with(suffix))
            .unwrap_or_else(|| panic!("no -l line ends with {suffix:?}"))
    };
    assert!(find(" /modes/setuid").starts_with("-rwsr-xr-x "));
    assert!(find(" /modes/sticky").starts_with("drwxrwxrwt "));
    assert!(find(" /etc/tool-link -> ../usr/bin/tool").starts_with("lrwxrwxrwx "));
    assert!(find(" /dev/null").starts_with('c'));
    assert!(find(" /dev/loop9").starts_with('b'));
    assert!(find(" /dev/fifo").starts_with('p'));
    let big = find(" /ids/big-owner");
    assert!(
        big.contains(" 3000000 ") && big.contains(" 4000000 "),
        "{big}"
    );
    find(" /names/tab\\tand\\ space");
    find(" /names/bad-\\377\\376-utf8");
    let long_target = format!(" /long/long-target-link -> {}/target", "x".repeat(150));
    find(&long_target);

    // Columns line up once their widest values have gone by (a 7-digit owner here), as in
    // `tar -tv`: where the time starts never moves left from one line to the next.
    let time_at = |line: &str| {
        let b = line.as_bytes();
        (0..b.len().saturating_sub(16))
            .find(|&i| b[i + 4] == b'-' && b[i + 7] == b'-' && b[i + 13] == b':')
            .unwrap_or_else(|| panic!("no time in {line:?}"))
    };
    let starts: Vec<usize> = long.iter().map(|l| time_at(l)).collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "columns moved back:\n{}",
        long.join("\n")
    );

    // -l on a single entry.
    let one = store.ok(&["ls", &id, "-l", "/etc/hostname"]);
    assert!(
        one.starts_with("-rw-r--r-- ") && one.trim_end().ends_with(" /etc/hostname"),
        "{one}"
    );
    assert_eq!(one.lines().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// cat

/// Run `cellar ARGS` where some arguments are raw bytes.
fn run_os(store: &TestStore, args: &[&OsStr]) -> Output {
    let mut c = store.cmd(&[]);
    c.args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cellar")
}

/// A path given as raw bytes reaches a file whose name is not UTF-8, as `ls` and `cat` on a
/// filesystem would.
#[test]
fn paths_with_odd_bytes_are_reachable() {
    let store = TestStore::new();
    let id = snapshot_tree(&store, varied_tree, GNU_TAR).id;

    let out = store.run(&["cat", &id, "/names/tab\tand space"]);
    assert_success(&out, &["cat", "tab and space"]);
    assert_eq!(out.stdout, b"tab\n");
    let out = store.run(&["cat", &id, "/names/new\nline"]);
    assert_success(&out, &["cat", "new\\nline"]);
    assert_eq!(out.stdout, b"newline\n");
    let out = store.run(&["cat", &id, "/names/ünïcødé-日本語.txt"]);
    assert_success(&out, &["cat", "unicode"]);
    assert_eq!(out.stdout, b"unicode\n");

    let odd = OsStr::from_bytes(b"/names/bad-\xff\xfe-utf8");
    let out = run_os(&store, &[OsStr::new("cat"), OsStr::new(&id), odd]);
    assert!(
        out.status.success(),
        "cat of a non-UTF-8 path failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(out.stdout, b"not utf-8\n");
    let out = run_os(&store, &[OsStr::new("ls"), OsStr::new(&id), odd]);
    assert!(
        out.status.success(),
        "ls of a non-UTF-8 path failed ({}): {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(out.stdout, b"/names/bad-\\377\\376-utf8\n");
}

#[test]
fn cat_gives_files_and_hardlinks() {
    let store = TestStore::new();
    let id = snapshot_tree(&store, portable_tree, GNU_TAR).id;
    assert_eq!(store.run(&["cat", &id, "/etc/hostname"]).stdout, b"vm1\n");
    assert_eq!(
        store.run(&["cat", &id, "etc/hostname.hard"]).stdout,
        b"vm1\n"
    );
    let empty = store.run(&["cat", &id, "/etc/empty"]);
    assert_success(&empty, &["cat", "/etc/empty"]);
    assert!(empty.stdout.is_empty());
    let tool = store.run(&["cat", &id, "/usr/bin/tool"]);
    assert!(tool.stdout == noise(300_000, 1), "cat /usr/bin/tool");
    let readme = store.run(&["cat", &id, "/usr/share/doc/readme.txt"]);
    assert!(readme.stdout == text(70_000, 2), "cat readme.txt");
}
