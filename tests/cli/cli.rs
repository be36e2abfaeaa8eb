//! The command line contract: what `snapshot`, `list`, `show`, `export` and `stats` print,
//! how SNAP arguments resolve, lineages, labels, compressed input, exit codes.

use std::path::PathBuf;
use std::process::Output;

use super::common::*;

/// A small tree beside the store; `version` changes one file so streams differ.
fn tree(ts: &TestStore, version: u64) -> PathBuf {
    let dir = ts.scratch(&format!("tree{version}"));
    write_file(
        &dir.join("etc/hostname"),
        format!("host-{version}\n").as_bytes(),
    );
    write_file(&dir.join("usr/lib/libx.so"), &noise(20_000, 5));
    write_file(&dir.join("usr/share/doc.txt"), &text(8_000, version));
    dir
}

/// GNU tar of the tree, members in a fixed order: 3 files.
fn tar_of(dir: &std::path::Path) -> Vec<u8> {
    tar_stream(&[
        "tar",
        "--format=gnu",
        "-cf",
        "-",
        "-C",
        dir.to_str().expect("utf-8 path"),
        "etc/hostname",
        "usr/lib/libx.so",
        "usr/share/doc.txt",
    ])
}

fn is_short_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (or `+00:00`): RFC 3339 in UTC.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && digits(5..7) && digits(8..10))
        || !(digits(11..13) && digits(14..16) && digits(17..19))
        || (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b'T', b':', b':')
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || rest == "+00:00"
}

/// Run and require exit `code`; returns stderr.
fn fails(ts: &TestStore, args: &[&str], code: i32) -> String {
    let out = ts.run(args);
    exits(&out, args, code)
}

fn exits(out: &Output, args: &[&str], code: i32) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "cellar {args:?}: want exit {code}; stdout {:?}; stderr:\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !err.contains("panicked"),
        "cellar {args:?} panicked:\n{err}"
    );
    assert!(
        !err.trim().is_empty(),
        "cellar {args:?}: no message on stderr"
    );
    err
}

/// `show SNAP --json`'s id.
fn resolves_to(ts: &TestStore, snap: &str) -> String {
    ts.json(&["show", snap, "--json"])["id"]
        .as_str()
        .expect("id")
        .to_string()
}

const SHOW_KEYS: [&str; 10] = [
    "id",
    "short_id",
    "name",
    "parent",
    "created",
    "size",
    "added_bytes",
    "members",
    "sha256",
    "labels",
];

#[test]
fn snapshot_prints_short_id_and_show_json_has_the_contract_keys() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let out = ts.run_stdin(&["snapshot", "-"], &tar);
    assert_success(&out, &["snapshot", "-"]);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let id = stdout.strip_suffix('\n').expect("a line");
    assert!(
        is_short_id(id),
        "stdout is {stdout:?}, not one short-id line"
    );

    let show = ts.json(&["show", id, "--json"]);
    let obj = show.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = SHOW_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "show --json keys");

    let full = show["id"].as_str().expect("id");
    assert!(is_full_id(full), "id {full:?}");
    assert!(full.starts_with(id));
    assert_eq!(show["short_id"], id);
    assert_eq!(show["name"], "default");
    assert!(show["parent"].is_null(), "first of a lineage has no parent");
    let created = show["created"].as_str().expect("created");
    assert!(
        is_rfc3339_utc(created),
        "created {created:?} is not RFC 3339 UTC"
    );
    assert_eq!(show["size"], tar.len());
    assert_eq!(show["sha256"], sha256_hex(&tar));
    assert_eq!(show["members"], 3);
    assert!(show["added_bytes"].as_u64().expect("added_bytes") > 0);
    assert_eq!(show["labels"], serde_json::json!({}));

    // The human form names the same snapshot.
    let human = ts.ok(&["show", id]);
    assert!(human.contains(full), "{human}");
    assert!(human.contains(&sha256_hex(&tar)), "{human}");
}

#[test]
fn snapshot_json_is_one_object_describing_the_snapshot() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let out = ts.run_stdin(&["snapshot", "--name", "web", "--json", "-"], &tar);
    assert_success(&out, &["snapshot", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON value");
    assert!(report.is_object(), "{report}");
    let show = ts.json(&["show", "web", "--json"]);
    for key in SHOW_KEYS {
        assert_eq!(
            report[key], show[key],
            "snapshot --json {key} differs from show --json"
        );
    }
    assert_eq!(report["size"], tar.len());
}

#[test]
fn export_is_the_exact_stream_from_stdin_or_file() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let from_stdin = ts.snapshot_bytes(&tar, "web");
    let file = ts.scratch("in.tar");
    write_file(&file, &tar);
    let from_file = ts.ok(&["snapshot", "--name", "web", file.to_str().unwrap()]);
    let from_file = from_file.trim_end();
    assert!(is_short_id(from_file));
    assert_ne!(from_stdin, from_file, "two snapshots, two ids");

    for id in [from_stdin.as_str(), from_file] {
        assert_eq!(ts.export(id), tar, "export {id}");
        let show = ts.json(&["show", id, "--json"]);
        assert_eq!(show["sha256"], sha256_hex(&tar));
        assert_eq!(show["size"], tar.len());
    }

    // -o FILE writes the same bytes and nothing to stdout.
    let dest = ts.scratch("out.tar");
    let out = ts.run(&["export", from_file, "-o", dest.to_str().unwrap()]);
    assert_success(&out, &["export", "-o"]);
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&dest).expect("exported file"), tar);
}

#[test]
fn compressed_input_is_stored_as_the_tar_inside() {
    require("gzip");
    require("zstd");
    let ts = TestStore::new();
    let dir = tree(&ts, 1);
    let d = dir.to_str().unwrap();
    let files = "etc/hostname usr/lib/libx.so usr/share/doc.txt";
    let gz = ts.scratch("t.tar.gz");
    let zst = ts.scratch("t.tar.zst");
    sh(&format!(
        "tar --format=gnu -czf '{}' -C '{d}' {files}",
        gz.display()
    ));
    sh(&format!(
        "tar --format=gnu --zstd -cf '{}' -C '{d}' {files}",
        zst.display()
    ));
    for (path, unpack) in [(&gz, "gzip -dc"), (&zst, "zstd -dc")] {
        let compressed = std::fs::read(path).expect("compressed tar");
        let tar = sh(&format!("{unpack} '{}'", path.display()));
        assert_ne!(compressed, tar);
        assert!(tar.len().is_multiple_of(512));
        let from_file = ts.ok(&["snapshot", path.to_str().unwrap()]);
        let from_stdin = ts.snapshot_bytes(&compressed, "default");
        for id in [from_file.trim_end(), from_stdin.as_str()] {
            let show = ts.json(&["show", id, "--json"]);
            assert_eq!(show["sha256"], sha256_hex(&tar), "{unpack}: sha256 of {id}");
            assert_eq!(show["size"], tar.len(), "{unpack}: size of {id}");
            assert_eq!(show["members"], 3);
            assert!(
                ts.export(id) == tar,
                "{unpack}: export of {id} is not the tar inside"
            );
        }
    }
}

#[test]
fn snapshot_from_command_output() {
    let ts = TestStore::new();
    let dir = tree(&ts, 1);
    let tar = tar_of(&dir);
    let d = dir.to_str().unwrap();
    let out = ts.run(&[
        "snapshot",
        "--name",
        "cmd",
        "--",
        "tar",
        "--format=gnu",
        "-cf",
        "-",
        "-C",
        d,
        "etc/hostname",
        "usr/lib/libx.so",
        "usr/share/doc.txt",
    ]);
    assert_success(&out, &["snapshot", "--", "tar"]);
    let err = stderr(&out);
    assert!(!err.contains("warning"), "{err}");
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(is_short_id(id.trim_end()), "{id:?}");
    // GNU tar writes the same bytes for the same unchanged files.
    assert_eq!(ts.export("cmd"), tar);
}

#[test]
fn labels_are_recorded_and_malformed_ones_are_usage_errors() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let args = [
        "snapshot",
        "--label",
        "k=v",
        "--label",
        "team=infra",
        "--label",
        "eq=a=b",
        "-",
    ];
    let out = ts.run_stdin(&args, &tar);
    assert_success(&out, &args);
    let id = String::from_utf8(out.stdout).unwrap();
    let show = ts.json(&["show", id.trim_end(), "--json"]);
    assert_eq!(
        show["labels"],
        serde_json::json!({"k": "v", "team": "infra", "eq": "a=b"})
    );

    let args = ["snapshot", "--label", "bad", "-"];
    let out = ts.run_stdin(&args, &tar);
    let err = exits(&out, &args, 2);
    assert!(err.contains("bad"), "{err}");
    assert_eq!(
        ts.snapshot_count(),
        1,
        "a snapshot was recorded despite the bad label"
    );
}

#[test]
fn names_are_validated_at_snapshot() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    for bad in ["Web", "_web", ".web", "-web", "web/1", "we b", "wéb", ""] {
        let name_arg = format!("--name={bad}");
        let args = ["snapshot", name_arg.as_str(), "-"];
        let out = ts.run_stdin(&args, &tar);
        exits(&out, &args, 2);
        assert_eq!(ts.snapshot_count(), 0, "name {bad:?} was accepted");
    }
    for good in ["web", "0", "web-1.2_x", "9lives", "a.b-c_d"] {
        ts.snapshot_bytes(&tar, good);
        assert_eq!(ts.json(&["show", good, "--json"])["name"], good);
    }
    // Without --name: `default`.
    let out = ts.run_stdin(&["snapshot", "-"], &tar);
    assert_success(&out, &["snapshot", "-"]);
    let id = String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string();
    assert_eq!(ts.json(&["show", &id, "--json"])["name"], "default");
    assert_eq!(resolves_to(&ts, "default")[..12], id);
}

#[test]
fn lineages_parents_and_relative_refs() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let t2 = tar_of(&tree(&ts, 2));
    let t3 = tar_of(&tree(&ts, 3));
    let web1 = ts.snapshot_bytes(&t1, "web");
    let db1 = ts.snapshot_bytes(&t2, "db");
    let web2 = ts.snapshot_bytes(&t2, "web");
    let web3 = ts.snapshot_bytes(&t3, "web");
    let full = |s: &str| resolves_to(&ts, s);

    let show = |s: &str| ts.json(&["show", s, "--json"]);
    assert!(show(&web1)["parent"].is_null());
    assert!(
        show(&db1)["parent"].is_null(),
        "another name's snapshot is not a parent"
    );
    assert_eq!(show(&web2)["parent"], full(&web1));
    assert_eq!(show(&web3)["parent"], full(&web2));

    assert_eq!(full("web"), full(&web3));
    assert_eq!(full("web~0"), full(&web3));
    assert_eq!(full("web~1"), full(&web2));
    assert_eq!(full("web~2"), full(&web1));
    assert_eq!(full("db"), full(&db1));
    assert_eq!(ts.export("web~2"), t1);
    assert_eq!(ts.export("web~1"), t2);

    for bad in [
        "web~3", "web~5", "db~1", "nosuch", "nosuch~1", "web~x", "web~-1",
    ] {
        let err = fails(&ts, &["show", bad], 2);
        assert!(err.contains("error"), "{err}");
        fails(&ts, &["export", bad], 2);
    }
}

#[test]
fn list_is_commit_order_and_filters_by_name() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let t2 = tar_of(&tree(&ts, 2));
    let ids = [
        ts.snapshot_bytes(&t1, "web"),
        ts.snapshot_bytes(&t1, "db"),
        ts.snapshot_bytes(&t2, "web"),
        ts.snapshot_bytes(&t2, "app"),
        ts.snapshot_bytes(&t2, "db"),
    ];
    let all = ts.json(&["list", "--json"]);
    let all = all.as_array().expect("array");
    let listed: Vec<&str> = all
        .iter()
        .map(|s| s["short_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "list is not in commit order");
    // Each entry is what show --json prints.
    for entry in all {
        let show = ts.json(&["show", entry["id"].as_str().unwrap(), "--json"]);
        assert_eq!(*entry, show);
    }

    let web = ts.json(&["list", "--name", "web", "--json"]);
    let web: Vec<&str> = web
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap())
        .collect();
    assert_eq!(web, [ids[0].as_str(), ids[2].as_str()]);
    let db = ts.json(&["list", "--name", "db", "--json"]);
    assert_eq!(db.as_array().unwrap().len(), 2);
    assert!(db.as_array().unwrap().iter().all(|s| s["name"] == "db"));
    assert_eq!(
        ts.json(&["list", "--name", "nosuch", "--json"]),
        serde_json::json!([])
    );

    // The human listing shows them in the same order.
    let human = ts.ok(&["list"]);
    let pos: Vec<usize> = ids
        .iter()
        .map(|id| {
            human
                .find(id.as_str())
                .unwrap_or_else(|| panic!("{id} not in:\n{human}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "human list order:\n{human}"
    );
    let human = ts.ok(&["list", "--name", "app"]);
    assert!(
        human.contains(&ids[3]) && !human.contains(&ids[0]),
        "{human}"
    );
}

#[test]
fn snap_accepts_ids_prefixes_and_names() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let id = ts.snapshot_bytes(&t1, "web");
    let full = resolves_to(&ts, &id);
    for spec in [
        &id[..4],
        &id[..5],
        &id[..8],
        &id,
        &full[..20],
        &full,
        "web",
        "web~0",
    ] {
        assert_eq!(resolves_to(&ts, spec), full, "SNAP {spec:?}");
    }
    assert_eq!(ts.export(&id[..4]), t1);
    // Too short to be a prefix, or matching nothing: exit 2.
    fails(&ts, &["show", &id[..3]], 2);
    fails(&ts, &["export", &id[..3]], 2);
    let other = if id.starts_with('0') { "1111" } else { "0000" };
    let err = fails(&ts, &["show", other], 2);
    assert!(err.contains(other), "{err}");
    let mut wrong_full = full.clone();
    wrong_full.replace_range(63.., if full.ends_with('0') { "1" } else { "0" });
    fails(&ts, &["show", &wrong_full], 2);
}

#[test]
fn exact_name_wins_over_id_prefix() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let t2 = tar_of(&tree(&ts, 2));
    let a = ts.snapshot_bytes(&t1, "default");
    // A lineage named like a prefix of a's id (hex digits are a valid name).
    let name = &a[..6];
    let b = ts.snapshot_bytes(&t2, name);
    assert!(!b.starts_with(name));
    assert_eq!(resolves_to(&ts, name)[..12], b, "the name {name} must win");
    assert_eq!(ts.export(name), t2);
    // Longer prefixes are not names: they find a.
    assert_eq!(resolves_to(&ts, &a[..7])[..12], a);
    assert_eq!(resolves_to(&ts, &a)[..12], a);
    assert_eq!(resolves_to(&ts, &format!("{name}~0"))[..12], b);
}

#[test]
fn ambiguous_prefix_lists_the_candidates() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let id = ts.snapshot_bytes(&t1, "web");
    let full = resolves_to(&ts, &id);
    // Two snapshots whose ids share 10 hex digits cannot be made through the CLI in a test's
    // time, so add a twin index row (same recipe, another id) next to the real one.
    let c = full.as_bytes()[10];
    let twin_digit = if c == b'0' { '1' } else { '0' };
    let twin = format!("{}{twin_digit}{}", &full[..10], &full[11..]);
    {
        let db = rusqlite::Connection::open(ts.path().join("cellar.db")).expect("open index");
        let n = db
            .execute(
                "INSERT INTO snapshots (id, name, parent, created, stream_len, stream_sha256,
                                        members, added_bytes, root, labels)
                 SELECT ?1, 'twin', NULL, created, stream_len, stream_sha256, members,
                        added_bytes, root, labels
                 FROM snapshots WHERE id = ?2",
                [&twin, &full],
            )
            .expect("insert twin row");
        assert_eq!(n, 1);
    }
    assert_eq!(ts.snapshot_count(), 2);
    for prefix in [&full[..4], &full[..8], &full[..10]] {
        let err = fails(&ts, &["show", prefix], 2);
        assert!(err.contains(&full[..12]), "candidates not listed:\n{err}");
        assert!(err.contains(&twin[..12]), "candidates not listed:\n{err}");
        fails(&ts, &["export", prefix], 2);
    }
    // One more digit tells them apart.
    assert_eq!(resolves_to(&ts, &full[..11]), full);
    assert_eq!(resolves_to(&ts, &twin[..11]), twin);
    assert_eq!(resolves_to(&ts, "twin"), twin);
}

#[test]
fn commands_on_a_missing_store_fail_and_snapshot_creates_it() {
    let ts = TestStore::new();
    let store = ts.path();
    assert!(!store.exists());
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["show", "default"],
        &["show", "abcd", "--json"],
        &["export", "default"],
        &["stats"],
        &["stats", "--json"],
    ] {
        let err = fails(&ts, args, 1);
        assert!(err.contains("no store"), "cellar {args:?}: {err}");
        assert!(
            err.contains(store.to_str().unwrap()),
            "cellar {args:?} names no path: {err}"
        );
        assert!(!store.exists(), "cellar {args:?} created the store");
    }

    // A directory that holds no store is no store either.
    std::fs::create_dir_all(&store).unwrap();
    let err = fails(&ts, &["list"], 1);
    assert!(err.contains("no store"), "{err}");

    let tar = tar_of(&tree(&ts, 1));
    let id = ts.snapshot_bytes(&tar, "default");
    assert!(store.join("cellar.db").is_file());
    assert_eq!(ts.snapshot_count(), 1);
    assert_eq!(ts.export(&id), tar);
}

#[test]
fn stats_json_has_the_contract_keys() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let t2 = tar_of(&tree(&ts, 2));
    ts.snapshot_bytes(&t1, "web");
    ts.snapshot_bytes(&t1, "web");
    ts.snapshot_bytes(&t2, "db");
    let stats = ts.json(&["stats", "--json"]);
    let mut keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "chunks",
            "dedup_ratio",
            "logical_bytes",
            "packs",
            "snapshots",
            "stored_bytes"
        ]
    );
    assert_eq!(stats["snapshots"], 3);
    let logical = (2 * t1.len() + t2.len()) as u64;
    assert_eq!(stats["logical_bytes"], logical);
    let packs = ts.pack_files();
    assert_eq!(stats["packs"], packs.len());
    let on_disk: u64 = packs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(stats["stored_bytes"], on_disk);
    assert!(stats["chunks"].as_u64().unwrap() > 0);
    let ratio = stats["dedup_ratio"].as_f64().unwrap();
    let want = logical as f64 / on_disk as f64;
    assert!(
        (ratio - want).abs() < 0.01,
        "dedup_ratio {ratio}, logical/stored {want}"
    );
    assert!(ratio > 1.0, "the repeated stream should dedup: {ratio}");
    ts.ok(&["stats"]);
}

#[test]
fn usage_errors_exit_2() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    ts.snapshot_bytes(&tar, "web");
    for args in [
        &[][..],
        &["frobnicate"],
        &["snapshot"],
        &["snapshot", "--bogus", "-"],
        &["snapshot", "--allow-exit", "x", "--", "true"],
        &["show"],
        &["export"],
        &["list", "--bogus"],
    ] {
        fails(&ts, args, 2);
    }
    assert_eq!(ts.snapshot_count(), 1);
}
