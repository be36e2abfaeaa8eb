//! Inputs at the edges: absurdly deep paths, crafted sparse maps, xattr names with escapes,
//! global PAX headers.

use super::oracle::{assert_matches_dir, assert_matches_extraction};

use crate::common::*;

#[test]
fn absurdly_deep_paths_are_left_out_not_fatal() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    member(&mut stream, b"ok.txt", b'0', b"fine\n", b"", 0o644);
    for depth in [300usize, 3000] {
        let path = "d/".repeat(depth) + "f";
        pax(&mut stream, &[("path", path.as_bytes())]);
        member(&mut stream, b"placeholder", b'0', b"deep\n", b"", 0o644);
    }
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot deep"]);
    assert!(
        stderr(&out).contains("left out of the tree"),
        "{}",
        stderr(&out)
    );
    assert_eq!(store.ok(&["ls", "default"]), "/ok.txt\n");
    assert!(store.export("default") == stream);
}

/// A name in a message cannot break its line or forge another message: its control
/// characters are escaped in warnings (a member left out) and in errors (a bad tar stream),
/// and its bytes that are not UTF-8 are kept as octal escapes.
#[test]
fn names_in_messages_have_their_control_characters_escaped() {
    let store = TestStore::new();
    let forged = b"x\ncellar: error: forged\x1b[2J\xff/../y";
    let mut stream = Vec::new();
    member(&mut stream, b"ok.txt", b'0', b"fine\n", b"", 0o644);
    member(&mut stream, b"two\nlines.txt", b'0', b"kept\n", b"", 0o644);
    pax(&mut stream, &[("path", forged)]);
    member(&mut stream, b"placeholder", b'0', b"left out\n", b"", 0o644);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("x\\ncellar: error: forged\\033[2J\\377/../y") && err.contains("left out"),
        "{err}"
    );

    // restore's summary names the path it restored.
    let dir = store.scratch("out");
    let out = store.run(&[
        "restore",
        "default",
        dir.to_str().unwrap(),
        "--path",
        "two\nlines.txt",
    ]);
    assert_success(&out, &["restore"]);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(":/two\\nlines.txt into"), "{err}");

    // The same name on the member before a damaged header.
    let mut bad = Vec::new();
    pax(&mut bad, &[("path", b"a\nb\xfe")]);
    member(&mut bad, b"placeholder", b'0', b"data\n", b"", 0o644);
    let at = bad.len();
    member(&mut bad, b"next", b'0', b"", b"", 0o644);
    bad[at + 148] ^= 1; // its checksum
    end_of_archive(&mut bad);
    let out = store.run_stdin(&["snapshot", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("after member a\\nb\\376)"), "{err}");
}

#[test]
fn a_sparse_map_out_of_order_is_refused() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    pax(
        &mut stream,
        &[
            ("GNU.sparse.size", b"200"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.map", b"100,10,50,10"),
        ],
    );
    member(&mut stream, b"sparse.img", b'0', &[7u8; 20], b"", 0o644);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sparse map"), "{}", stderr(&out));
    assert!(stderr(&out).contains("sparse.img"), "{}", stderr(&out));
    assert_eq!(store.snapshot_count(), 0);
}

/// A PAX 1.0 sparse map is read whole however long it is (GNU tar writes one of 80,000
/// segments in over 1 MiB, which was refused as malformed): the file is GNU tar's.
#[test]
fn a_long_sparse_map_in_the_payload_is_read_whole() {
    let store = TestStore::new();
    // Numbers zero-padded, as any decimal may be, for a long map of a smaller file; segments
    // of whole blocks, as GNU tar (which reads data in blocks) extracts them.
    let segments = 27_000u64;
    // The last entry is where the file ends, as GNU tar writes a file ending in a hole.
    let mut data = format!("{}\n", segments + 1);
    for i in 0..segments {
        data += &format!("{:019}\n{:019}\n", i * 1024, 512);
    }
    data += &format!("{}\n0\n", segments * 1024);
    assert!(data.len() > 1 << 20);
    let mut payload = data.into_bytes();
    payload.resize(payload.len().next_multiple_of(512), 0);
    payload.extend((0..segments * 512).map(|i| b'a' + (i % 26) as u8));
    let mut stream = Vec::new();
    let real = (segments * 1024).to_string();
    pax(
        &mut stream,
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"holey"),
            ("GNU.sparse.realsize", real.as_bytes()),
        ],
    );
    member(
        &mut stream,
        b"GNUSparseFile.0/holey",
        b'0',
        &payload,
        b"",
        0o644,
    );
    end_of_archive(&mut stream);
    let id = store.snapshot_bytes(&stream, "vm");
    assert!(store.export(&id) == stream);
    assert_matches_extraction(&store, &id, &stream, "a long sparse map", None);
}

/// Names with characters the writers escape come back as they were on disk, from GNU tar
/// and from bsdtar, which writes each xattr twice (its own `LIBARCHIVE.xattr.` record and a
/// `SCHILY.xattr.` one under the same escaped name): once each.
#[test]
fn xattr_names_with_escaped_characters_decode() {
    require("bsdtar");
    let store = TestStore::new();
    let root = store.scratch("tree");
    let f = root.join("file");
    write_file(&f, b"x\n");
    crate::trees::set_xattr(&f, "user.a=b%c", b"v");
    crate::trees::set_xattr(&f, "user.sp ace", b"w");
    crate::trees::set_xattr(&f, "user.plain", b"p");
    let root = root.to_str().unwrap();
    for argv in [
        &["tar", "--format=posix", "--xattrs", "--xattrs-include=*"][..],
        &["bsdtar", "--format=pax", "--xattrs"],
    ] {
        let stream = tar_stream(&[argv, &["-cf", "-", "-C", root, "file"]].concat());
        let id = store.snapshot_bytes(&stream, "vm");
        let listing = store.json(&["ls", &id, "/file", "--json"]);
        assert_eq!(
            listing[0]["xattrs"],
            serde_json::json!(["user.a=b%c", "user.plain", "user.sp ace"]),
            "{}: {listing}",
            argv[0]
        );
    }
}

/// A directory appended again (`tar -r`) is the same directory to an extractor: the later
/// member's xattrs are set on it and the earlier ones stay, as GNU tar's extraction shows.
#[test]
fn a_directory_named_again_keeps_its_earlier_xattrs() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    let d = root.join("d");
    write_file(&d.join("f"), b"x\n");
    crate::trees::set_xattr(&d, "user.first", b"1");
    crate::trees::set_xattr(&d, "user.both", b"old");
    let archive = store.scratch("appended.tar");
    let (a, r) = (archive.to_str().unwrap(), root.to_str().unwrap());
    let tar = |op: &str| {
        sh(&format!(
            "tar --format=posix --xattrs --xattrs-include='*' {op} '{a}' -C '{r}' \
             --no-recursion d ."
        ))
    };
    tar("-cf");
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::create_dir(&d).unwrap();
    crate::trees::set_xattr(&d, "user.both", b"new");
    crate::trees::set_xattr(&d, "user.second", b"2");
    tar("-rf");
    let stream = std::fs::read(&archive).unwrap();
    let id = store.snapshot_bytes(&stream, "vm");
    assert_matches_extraction(&store, &id, &stream, "a directory appended again", None);
    let listing = store.json(&["ls", &id, "/", "--json"]);
    crate::readme_json::assert_readme_order(&listing, "`ls --json` prints an array");
    assert_eq!(listing[0]["path"], "/d", "{listing}");
    assert_eq!(
        listing[0]["xattrs"],
        serde_json::json!(["user.both", "user.first", "user.second"]),
        "{listing}"
    );
}

/// GNU tar decodes `%25` and `%3D` in a `SCHILY.xattr.` name and nothing else: another `%XX`
/// (which no tar writes, but a stream may carry) is kept as written, as its extraction shows.
#[test]
fn xattr_names_keep_other_percent_escapes_as_gnu_tar_does() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    pax(
        &mut stream,
        &[
            ("SCHILY.xattr.user.x%41y", b"1"),
            ("SCHILY.xattr.user.e%2f", b"2"),
            ("SCHILY.xattr.user.p%25q%3Dr%3d", b"3"),
        ],
    );
    member(&mut stream, b"f", b'0', b"x", b"", 0o644);
    end_of_archive(&mut stream);
    let id = store.snapshot_bytes(&stream, "vm");
    assert_matches_extraction(&store, &id, &stream, "percent escapes", None);
    let listing = store.json(&["ls", &id, "/f", "--json"]);
    assert_eq!(
        listing[0]["xattrs"],
        serde_json::json!(["user.e%2f", "user.p%q=r%3d", "user.x%41y"]),
        "{listing}"
    );
}

/// Global PAX headers apply to every later member, under its local records, until the next
/// global header replaces them: the tree has what GNU tar extracts (times, owners), and the
/// stream exports unchanged. (Global xattrs are left out of the stream: GNU tar fails on them;
/// the engine's reader tests cover them.)
#[test]
fn global_pax_records_apply_as_gnu_tar_applies_them() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    pax_header(
        &mut stream,
        b'g',
        &[
            ("comment", b"made by hand"),
            ("mtime", b"1000000000.25"),
            ("uid", b"4242"),
            ("gid", b"4343"),
        ],
    );
    member(&mut stream, b"d/", b'5', b"", b"", 0o755);
    member(&mut stream, b"d/a.txt", b'0', b"alpha\n", b"", 0o644);
    pax(
        &mut stream,
        &[("mtime", b"1500000000"), ("SCHILY.xattr.user.local", b"x")],
    );
    member(&mut stream, b"d/b.txt", b'0', b"beta\n", b"", 0o644);
    pax_header(&mut stream, b'g', &[("uid", b"5000")]);
    member(&mut stream, b"d/c.txt", b'0', b"gamma\n", b"", 0o600);
    end_of_archive(&mut stream);

    let out = store.run_stdin(&["snapshot", "--name", "g", "-"], &stream);
    assert_success(&out, &["snapshot", "g"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_matches_extraction(&store, &id, &stream, "global PAX headers", None);
    let c = store.json(&["ls", "g", "/d/c.txt", "--json"]);
    assert_eq!(
        c[0]["uid"], 5000,
        "the second global header replaced the first: {c}"
    );
    assert_eq!(c[0]["gid"], 0, "{c}");
    assert!(store.export("g") == stream);
    // Extractors disagree about global records, so an image's layer is written from the tree.
    let layout = store.scratch("layout");
    let image = store.json(&[
        "export",
        "g",
        "--format",
        "oci",
        "-o",
        layout.to_str().unwrap(),
        "--json",
    ]);
    assert_ne!(
        image["layers"][0]["digest"],
        format!("sha256:{}", sha256_hex(&stream)),
        "the stream itself served as the layer: {image}"
    );
}

/// A later member for a path replaces the earlier one, as extraction does, except where GNU
/// tar cannot: a file where a non-empty directory stands is left out (with a warning; GNU tar
/// fails that member and exits 2). A file replaces an empty directory, a directory replaces a
/// file, and a directory over a directory keeps its contents and takes the new attributes.
#[test]
fn later_members_replace_earlier_ones_as_gnu_tar_extracts_them() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    member(&mut stream, b"d/", b'5', b"", b"", 0o755);
    member(&mut stream, b"d/x", b'0', b"x\n", b"", 0o644);
    member(&mut stream, b"d", b'0', b"over d\n", b"", 0o644);
    member(&mut stream, b"e/", b'5', b"", b"", 0o755);
    member(&mut stream, b"e", b'0', b"over e\n", b"", 0o644);
    member(&mut stream, b"f", b'0', b"f\n", b"", 0o644);
    member(&mut stream, b"f/", b'5', b"", b"", 0o755);
    member(&mut stream, b"f/y", b'0', b"y\n", b"", 0o644);
    member(&mut stream, b"g/", b'5', b"", b"", 0o755);
    member(&mut stream, b"g/z", b'0', b"z\n", b"", 0o644);
    member(&mut stream, b"g/", b'5', b"", b"", 0o700);
    end_of_archive(&mut stream);

    let out = store.run_stdin(&["snapshot", "--name", "r", "-"], &stream);
    assert_success(&out, &["snapshot", "r"]);
    assert!(
        stderr(&out).contains("/d: a file where a non-empty directory stands is left out"),
        "{}",
        stderr(&out)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let file = store.scratch("r.tar");
    std::fs::write(&file, &stream).unwrap();
    let dir = store.scratch("extracted");
    std::fs::create_dir_all(&dir).unwrap();
    let gnu = std::process::Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&file)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(gnu.status.code(), Some(2), "{}", stderr(&gnu));
    assert!(
        stderr(&gnu).contains("d: Cannot open: File exists"),
        "{}",
        stderr(&gnu)
    );
    assert_matches_dir(&store, &id, &dir, "replaced members", None);
    assert!(store.export("r") == stream);
}

/// A warning per member could be millions: the first thousand are kept and the rest counted,
/// on stderr and in `--json`. The stream is stored whole all the same.
#[test]
fn warnings_stop_at_a_thousand_and_count_the_rest() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    for i in 0..1500 {
        member(
            &mut stream,
            format!("../x{i}").as_bytes(),
            b'0',
            b"",
            b"",
            0o644,
        );
    }
    member(&mut stream, b"kept", b'0', b"k\n", b"", 0o644);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    let err = stderr(&out);
    assert_eq!(
        err.matches("is left out of the tree").count(),
        1000,
        "{err}"
    );
    assert!(
        err.contains("cellar: warning: and 500 more warnings like these"),
        "{err}"
    );
    let out = store.run_stdin(&["snapshot", "--json", "-"], &stream);
    assert_success(&out, &["snapshot", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1001, "{report}");
    assert_eq!(warnings[1000], "and 500 more warnings like these");
    assert_eq!(store.ok(&["ls", "default"]), "/kept\n");
    assert!(store.export("default") == stream);
}

/// xattrs Linux would refuse to set (a value over 64 KiB, a name over 255 bytes) are left out
/// of the tree with a warning that names the member; the rest are kept, a value of exactly
/// 64 KiB too, and the stream exports unchanged. Past the 64 KiB a file's list of names may
/// hold, names are left out too (listxattr fails past it); values have no limit in all, as
/// GNU tar sets them all.
#[test]
fn xattrs_over_linux_limits_are_left_out_with_a_warning() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    let big = vec![b'v'; 70_000];
    let long = format!("SCHILY.xattr.user.{}", "n".repeat(260));
    pax(
        &mut stream,
        &[
            ("SCHILY.xattr.user.small", b"s"),
            ("SCHILY.xattr.user.big", &big),
            (&long, b"l"),
        ],
    );
    member(&mut stream, b"f", b'0', b"data\n", b"", 0o644);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    assert!(
        stderr(&out).contains("f: 2 extended attribute(s) over Linux's limits"),
        "{}",
        stderr(&out)
    );
    let f = store.json(&["ls", "default", "/f", "--json"]);
    assert_eq!(f[0]["xattrs"], serde_json::json!(["user.small"]), "{f}");
    assert!(store.export("default") == stream);

    let store = TestStore::new();
    let mut stream = Vec::new();
    let whole = vec![b'w'; 65_536];
    let names: Vec<String> = (0..1000)
        .map(|i| format!("SCHILY.xattr.user.k{i:04}"))
        .collect();
    let mut records: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.user.a", &whole)];
    records.extend(names.iter().map(|n| (n.as_str(), &b"v"[..])));
    pax(&mut stream, &records);
    member(&mut stream, b"g", b'0', b"data\n", b"", 0o644);
    // Names past the list's 64 KiB: 300 names of 250 bytes.
    let long: Vec<String> = (0..300)
        .map(|i| format!("SCHILY.xattr.user.{i:03}{}", "x".repeat(242)))
        .collect();
    let records: Vec<(&str, &[u8])> = long.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
    pax(&mut stream, &records);
    member(&mut stream, b"h", b'0', b"data\n", b"", 0o644);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    let err = stderr(&out);
    assert!(!err.contains("warning: g:"), "{err}");
    let g = store.json(&["ls", "default", "/g", "--json"]);
    assert_eq!(g[0]["xattrs"].as_array().unwrap().len(), 1001, "{g}");
    // 251 bytes listed each: 261 fit in 65,536.
    assert!(
        err.contains("h: 39 extended attribute(s) over Linux's limits"),
        "{err}"
    );
    assert!(store.export("default") == stream);
}

/// A member may carry the earliest time a tar header holds (i64::MIN seconds, GNU base-256).
/// The tree used that value to mark directories no member named, and gave the member the
/// snapshot's time; it now keeps a time one second later, its own.
#[test]
fn the_earliest_time_a_header_holds_stays_the_members() {
    let store = TestStore::new();
    let mut old = ustar_header(b"old", b'0', 0, b"", 0o644);
    old[136..148].fill(0xff); // base-256, two's complement
    old[140..148].copy_from_slice(&i64::MIN.to_be_bytes());
    old[136] = 0xff;
    set_checksum(&mut old);
    let mut stream = old.to_vec();
    member(&mut stream, b"new", b'0', b"", b"", 0o644);
    end_of_archive(&mut stream);
    store.snapshot_bytes(&stream, "default");
    let ls = store.json(&["ls", "default", "--json"]);
    let mtime = |path: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {ls}"))["mtime"]
            .clone()
    };
    // i64::MIN + 1 seconds, in ISO 8601's expanded years.
    assert_eq!(mtime("/old"), "-292277022657-01-27T08:29:53Z", "{ls}");
    assert_ne!(mtime("/old"), mtime("/new"), "{ls}");
    assert!(store.export("default") == stream);
}

/// A later volume of a GNU multi-volume archive opens with the rest of a file begun in the
/// volume before (an `M` member): left out of the tree with a warning, as GNU tar refuses to
/// extract it, and the stream kept whole.
#[test]
fn a_file_continued_from_an_earlier_volume_is_left_out_with_a_warning() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("big"), &noise(30_000, 5));
    write_file(&dir.join("after"), b"after\n");
    let (one, two) = (store.scratch("v1.tar"), store.scratch("v2.tar"));
    // Volumes of 20 KiB: `big` goes on in the second.
    let out = std::process::Command::new("tar")
        .args([
            "--create",
            "--multi-volume",
            "--tape-length=20",
            "--format=gnu",
        ])
        .arg(format!("--file={}", one.display()))
        .arg(format!("--file={}", two.display()))
        .arg("--directory")
        .arg(&dir)
        .args(["big", "after"])
        .output()
        .expect("run GNU tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stream = std::fs::read(&two).unwrap();

    let out = store.run_stdin(&["snapshot", "--json", "-"], &stream);
    assert_success(&out, &["snapshot", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["warnings"],
        serde_json::json!([
            "big: continued from an earlier volume of a multi-volume archive; left out of the tree"
        ]),
        "{report}"
    );
    assert_eq!(store.ok(&["ls", "default"]), "/after\n");
    assert!(store.export("default") == stream);
}
