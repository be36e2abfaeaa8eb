//! `cellar find`: paths matching patterns, snapshot by snapshot, against GNU find over the
//! trees the snapshots were taken of.

use std::path::Path;

use crate::common::*;
use crate::trees::portable_tree;

/// What `find DIR ARGS -print` names in `dir`, as cellar shows paths (`/` + the path), in the
/// order cellar walks (depth first, by name: bytewise in the C locale).
fn gnu_find(dir: &Path, args: &str) -> Vec<String> {
    let out = sh(&format!(
        "cd '{}' && find . -mindepth 1 {args} -print",
        dir.display()
    ));
    let mut paths: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l[1..].to_string())
        .collect();
    // A depth-first walk by name puts a directory's contents right after it ("a", "a/b",
    // "a-c"): sorted by components, bytewise.
    paths.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    paths
}

/// `portable_tree` and a few more names at several depths.
fn tree(store: &TestStore) -> std::path::PathBuf {
    let root = store.scratch("tree");
    portable_tree(&root);
    write_file(&root.join("etc/apt/sources.list"), b"deb\n");
    write_file(&root.join("etc/apt/sources.list.d/extra.list"), b"deb\n");
    write_file(&root.join("usr/share/doc/tool/copyright.txt"), b"c\n");
    write_file(&root.join("srv/etc/hostname"), b"not the host's\n");
    write_file(&root.join("a-c"), b"after a/ by name\n");
    write_file(&root.join("a/b"), b"b\n");
    root
}

/// `cellar find` lines of one snapshot: its paths.
fn found(out: &str, id: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{id} ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn find_matches_what_gnu_find_finds_in_each_snapshot() {
    let store = TestStore::new();
    let root = tree(&store);
    let first = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let before = store.scratch("before");
    sh(&format!(
        "cp -a '{}' '{}'",
        root.display(),
        before.display()
    ));
    write_file(&root.join("etc/new.conf"), b"new\n");
    write_file(&root.join("usr/share/doc/other.txt"), b"doc\n");
    std::fs::remove_file(root.join("etc/hostname.hard")).unwrap();
    let second = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let db = store.snapshot_bytes(&tar_of_dir(&before), "db");

    for (pattern, gnu) in [
        ("*.txt", "-name '*.txt'"),
        ("host*", "-name 'host*'"),
        ("doc", "-name doc"),
        // find's `-path` lets `*` match `/`; a pattern's component does not.
        ("/etc/*", "-path './etc/*' ! -path './etc/*/*'"),
        (
            "share/doc/*",
            "-path '*/share/doc/*' ! -path '*/share/doc/*/*'",
        ),
        ("apt/*.list", "-path '*/apt/*.list' ! -path '*/apt/*/*'"),
        ("/etc/hostname", "-path ./etc/hostname"),
        ("*", ""),
    ] {
        let out = store.ok(&["find", pattern]);
        for (id, dir) in [(&first, &before), (&second, &root), (&db, &before)] {
            assert_eq!(
                found(&out, id),
                gnu_find(dir, gnu),
                "{pattern} in {id}:\n{out}"
            );
        }
        // A lineage, or snapshots by name, search those only.
        let out = store.ok(&["find", pattern, "--name", "db"]);
        assert!(found(&out, &first).is_empty() && found(&out, &second).is_empty());
        assert_eq!(found(&out, &db), gnu_find(&before, gnu), "{pattern}");
        let out = store.ok(&["find", pattern, "-s", "vm", "-s", &first]);
        assert!(found(&out, &db).is_empty(), "{out}");
        assert_eq!(found(&out, &second), gnu_find(&root, gnu), "{pattern}");
    }
    // Several patterns: what any of them matches, once.
    let out = store.ok(&["find", "*.conf", "hostname", "*.conf"]);
    assert_eq!(
        found(&out, &second),
        ["/etc/hostname", "/etc/new.conf", "/srv/etc/hostname"]
    );
    assert_eq!(found(&out, &first), ["/etc/hostname", "/srv/etc/hostname"]);
}

#[test]
fn find_reports_entries_as_ls_does() {
    let store = TestStore::new();
    let root = tree(&store);
    let id = store.snapshot_bytes(&tar_of_dir(&root), "vm");

    let json = store.json(&["find", "tool*", "--json"]);
    assert_eq!(
        json[0]["matches"][2]["path"], "/usr/share/doc/tool",
        "{json}"
    );
    let snaps = json.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{json}");
    assert_eq!(snaps[0]["short_id"], id.as_str());
    assert_eq!(snaps[0]["name"], "vm");
    assert_eq!(snaps[0]["hits"], 3, "tool, tool-link and doc/tool: {json}");
    for m in snaps[0]["matches"].as_array().unwrap() {
        let path = m["path"].as_str().unwrap();
        let parent = &path[..path.rfind('/').unwrap().max(1)];
        let listed = store.json(&["ls", &id, parent, "--json"]);
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path);
        assert_eq!(Some(m), entry, "{path}");
    }
    let long = store.ok(&["find", "bin/tool", "-l"]);
    let ls = store.ok(&["ls", &id, "-l", "/usr/bin/tool"]);
    assert_eq!(long, format!("{id} {ls}"));

    // Nothing found is no error; the count goes to stderr.
    let out = store.run(&["find", "no-such-name"]);
    assert_success(&out, &["find", "no-such-name"]);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("0 matches in 1 snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        store.json(&["find", "no-such-name", "--json"]),
        serde_json::json!([])
    );

    // Usage errors search nothing.
    for args in [
        &["find"][..],
        &["find", ""],
        &["find", "x", "-s", "nosuch"],
        &["find", "x", "-s", &id, "-s", "nosuch"],
        &["find", "x", "--name", "vm", "-s", &id],
        &["find", "x", "--name", "Bad"],
    ] {
        let out = store.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Patterns as tar lists members (`./etc/...`), directories only (`NAME/`), and what names
/// nothing refused; `--name` of no lineage says so.
#[test]
fn find_takes_tar_names_and_directory_patterns() {
    let store = TestStore::new();
    let root = tree(&store);
    write_file(&root.join("filedir/etc"), b"a file named etc\n");
    let id = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let out = store.ok(&["find", "./etc/apt", "etc/"]);
    assert_eq!(found(&out, &id), ["/etc", "/etc/apt", "/srv/etc"]);
    assert_eq!(
        found(&store.ok(&["find", "etc"]), &id),
        ["/etc", "/filedir/etc", "/srv/etc"]
    );
    assert_eq!(
        found(&store.ok(&["find", "/etc/./apt/"]), &id),
        ["/etc/apt"]
    );
    for bad in ["/etc/../etc", "..", "./"] {
        let out = store.run(&["find", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    let out = store.run(&["find", "x", "--name", "nosuch"]);
    assert_success(&out, &["find", "--name nosuch"]);
    assert!(
        stderr(&out).contains("no snapshots named nosuch"),
        "{}",
        stderr(&out)
    );
}

/// Patterns are bytes, as names are: one that is not UTF-8 finds the name of those bytes
/// (shown escaped, as `ls` shows it), and `?` stands for such a byte as for a character.
#[test]
fn find_takes_patterns_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1\n");
    write_file(&root.join("café"), b"utf-8\n");
    let id = store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let find = |pattern: &[u8]| {
        let out = store
            .cmd(&["find"])
            .arg(OsStr::from_bytes(pattern))
            .output()
            .unwrap();
        assert_success(&out, &["find", &String::from_utf8_lossy(pattern)]);
        found(&String::from_utf8(out.stdout).unwrap(), &id)
    };
    assert_eq!(find(b"caf\xe9"), ["/caf\\351"]);
    assert_eq!(find("café".as_bytes()), ["/café"]);
    assert_eq!(find(b"caf?"), ["/café", "/caf\\351"]);
    assert_eq!(find(b"*\xe9"), ["/caf\\351"]);
}
