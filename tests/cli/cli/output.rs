//! What `snapshot`, `show`, `export` and `stats` print (the JSON contracts), inputs, exit codes.

use super::*;

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
    crate::readme_json::assert_readme_order(&show, "`show --json` prints one snapshot object");
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
    // Made as any new file is: 0666 less the umask (the tests' is 022), not a temp file's 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666 & !umask(), "{mode:o}");
    // Written over, a file keeps its mode and owner, as with a shell's `>`.
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).unwrap();
    let out = ts.run(&["export", from_file, "-o", dest.to_str().unwrap()]);
    assert_success(&out, &["export", "-o"]);
    let meta = std::fs::metadata(&dest).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, 65534, 65534)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), tar);
    // -o - is stdout, as for tar.
    let cwd = ts.scratch("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let args = ["export", from_file, "-o", "-"];
    let out = ts.cmd(&args).current_dir(&cwd).output().unwrap();
    assert_success(&out, &args);
    assert!(out.stdout == tar);
    assert!(!cwd.join("-").exists());
    // --json reports the file written; with the stream on stdout there is no room for it.
    let report = ts.json(&["export", from_file, "-o", dest.to_str().unwrap(), "--json"]);
    assert_eq!(report["sha256"], sha256_hex(&tar));
    assert_eq!(report["size"], tar.len());
    assert_eq!(report["output"], dest.to_str().unwrap());
    for args in [
        &["export", from_file, "--json"][..],
        &["export", from_file, "-o", "-", "--json"],
    ] {
        assert_eq!(ts.run(args).status.code(), Some(2), "{args:?}");
    }
}

/// `-o` into what is not a regular file: a device or a FIFO is written through (renaming a
/// file over it would replace `/dev/null` itself), a symlink is written at its target, which
/// stays a link, and a directory behind a link is refused.
#[test]
fn export_writes_through_devices_fifos_and_symlinks() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let id = ts.snapshot_bytes(&tar, "web");
    let dir = ts.scratch("targets");
    std::fs::create_dir(&dir).unwrap();
    let at = |name: &str| dir.join(name).to_str().unwrap().to_string();
    use std::os::unix::fs::{symlink, FileTypeExt};
    // A device node of its own (a copy of /dev/null's) in /dev, where devices open whatever
    // the scratch directory's filesystem allows (a `nodev` /tmp would refuse it).
    let null = tempfile::Builder::new()
        .prefix("cellar-test-null.")
        .tempfile_in("/dev")
        .unwrap()
        .into_temp_path();
    std::fs::remove_file(&null).unwrap();
    sh(&format!("mknod -m 666 '{}' c 1 3", null.display()));
    sh(&format!("mkfifo '{}'", at("fifo")));
    std::fs::write(at("real"), b"old").unwrap();
    symlink("real", at("link")).unwrap();
    symlink("sub/new.tar", at("dangling")).unwrap();
    std::fs::create_dir(at("sub")).unwrap();
    symlink("sub", at("dirlink")).unwrap();

    for format in ["tar", "docker-archive"] {
        let out = ts.run(&[
            "export",
            &id,
            "--format",
            format,
            "-o",
            null.to_str().unwrap(),
        ]);
        assert_success(&out, &["export", format, "-o", "null"]);
        let kind = std::fs::symlink_metadata(&null).unwrap().file_type();
        assert!(kind.is_char_device(), "{format}: the device was replaced");
    }

    let reader = std::thread::spawn({
        let fifo = at("fifo");
        move || std::fs::read(fifo).unwrap()
    });
    let out = ts.run(&["export", &id, "-o", &at("fifo")]);
    assert_success(&out, &["export", "-o", "fifo"]);
    assert!(
        reader.join().unwrap() == tar,
        "the FIFO's reader got the stream"
    );
    assert!(std::fs::symlink_metadata(at("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // /dev/stdout when stdout is a pipe: a link whose text (`pipe:[N]`) is no path.
    for o in ["/dev/stdout", "/dev/fd/1"] {
        let out = ts.run(&["export", &id, "-o", o]);
        assert_success(&out, &["export", "-o", o]);
        assert!(out.stdout == tar, "{o}: the pipe did not get the stream");
    }
    // A descriptor of the process is written as it is: a file opened for appending (`>>`)
    // is appended to, not replaced.
    let log = at("log");
    for o in ["/dev/stdout", "/dev/fd/7", "/proc/self/fd/7"] {
        std::fs::write(&log, b"header\n").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' export {id} -o {o} >>'{log}' 7>>'{log}' && echo trailer >>'{log}'",
                cellar_bin()
            ))
            .env("CELLAR_STORE", ts.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{o}: {}", stderr(&out));
        let got = std::fs::read(&log).unwrap();
        assert!(
            got == [&b"header\n"[..], &tar, b"trailer\n"].concat(),
            "{o}: not appended ({} bytes)",
            got.len()
        );
    }

    for (link, target) in [("link", "real"), ("dangling", "sub/new.tar")] {
        let out = ts.run(&["export", &id, "-o", &at(link)]);
        assert_success(&out, &["export", "-o", link]);
        assert!(std::fs::symlink_metadata(at(link))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            std::fs::read(at(target)).unwrap() == tar,
            "{link}: not written at {target}"
        );
    }
    let out = ts.run(&["export", &id, "-o", &at("dirlink")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    let left: Vec<_> = entries(&dir)
        .into_iter()
        .chain(entries(&dir.join("sub")))
        .filter(|p| p.to_string_lossy().contains("cellar-tmp"))
        .collect();
    assert!(left.is_empty(), "left {left:?}");
}

/// The process's umask.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn an_interrupted_export_to_a_file_leaves_no_file_behind() {
    let ts = TestStore::new();
    snapshot_big(&ts, "big");
    let out_dir = ts.scratch("out");
    std::fs::create_dir(&out_dir).unwrap();
    for (format, signal) in [
        ("tar", libc::SIGINT),
        ("tar", libc::SIGTERM),
        ("docker-archive", libc::SIGINT),
    ] {
        let child = ts
            .cmd(&[
                "export",
                "big",
                "--format",
                format,
                "-o",
                out_dir.join("big.tar").to_str().unwrap(),
            ])
            .spawn()
            .unwrap();
        // As soon as its file exists.
        let status = interrupt_when(child, signal, || {
            std::fs::read_dir(&out_dir).unwrap().next().is_some()
        });
        let left = entries(&out_dir);
        assert!(left.is_empty(), "{format}, signal {signal}: left {left:?}");
        assert_eq!(status.code(), Some(128 + signal), "{status}");
    }
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
    // pzstd starts with a skippable frame.
    require("pzstd");
    let pzst = ts.scratch("t.tar.pzst");
    sh(&format!(
        "tar --format=gnu -cf - -C '{d}' {files} | pzstd -q -c > '{}'",
        pzst.display()
    ));
    for (path, unpack) in [(&gz, "gzip -dc"), (&zst, "zstd -dc"), (&pzst, "zstd -dc")] {
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
fn stats_json_has_the_contract_keys() {
    let ts = TestStore::new();
    let t1 = tar_of(&tree(&ts, 1));
    let t2 = tar_of(&tree(&ts, 2));
    ts.snapshot_bytes(&t1, "web");
    ts.snapshot_bytes(&t1, "web");
    ts.snapshot_bytes(&t2, "db");
    let stats = ts.json(&["stats", "--json"]);
    crate::readme_json::assert_readme_order(&stats, "`stats --json`:");
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
        &["snapshot", "--allow-exit", "1", "-"],
        &["export", "web", "--tag", "v9", "-o", "x.tar"],
        &["export", "web", "--layers", "incremental", "-o", "x.tar"],
        &[
            "export",
            "web",
            "--format",
            "tar",
            "--image-user",
            "bob",
            "-o",
            "x.tar",
        ],
        &["serve", "--listen", "bogus"],
        &["serve", "--listen", "127.0.0.1:99999"],
        &["serve", "--listen", "::1:5000"],
        &["pack", "web", "-o", "x", "--listen", ":80"],
        &["show"],
        &["export"],
        &["list", "--bogus"],
    ] {
        fails(&ts, args, 2);
    }
    assert_eq!(ts.snapshot_count(), 1);
}

/// `-`, or a terminal by name (`/dev/stdin` on one, `/dev/tty`).
#[test]
fn a_terminal_on_stdin_is_refused_not_waited_on() {
    let ts = TestStore::new();
    for source in ["-", "/dev/stdin", "/dev/tty"] {
        let (code, said) = on_a_terminal(&ts, &format!("snapshot {source}"));
        assert_eq!(code, Some(2), "{source}: {said}");
        assert!(
            said.contains("refusing to read a tar stream from a terminal"),
            "{source}: {said}"
        );
        assert!(
            !ts.path().exists(),
            "{source}: a refused snapshot made a store"
        );
    }
}

#[test]
fn show_quotes_a_label_key_or_value_that_has_spaces() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let args = [
        "snapshot",
        "-",
        "--label",
        "owner=ci",
        "--label",
        "k=v with space",
        "--label",
        "sp ace=new\nline",
    ];
    let out = ts.run_stdin(&args, &tar);
    assert_success(&out, &args);
    let text = ts.ok(&["show", "default"]);
    assert!(
        text.contains("labels:   k=\"v with space\" owner=ci \"sp ace\"=\"new\\nline\"\n"),
        "{text}"
    );
}

/// Where a command writes, a file standing where the path needs a directory (above the
/// target, or the target given with a trailing /) is a usage error that says so, as a file
/// given for a directory is.
#[test]
fn a_file_where_an_output_path_needs_a_directory_is_a_usage_error() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let file = ts.scratch("afile");
    write_file(&file, b"x");
    let at = |p: &str| ts.scratch(p).to_str().unwrap().to_string();
    for (args, says) in [
        (
            vec!["restore", &id, &at("afile/x")][..].to_vec(),
            "part of the path is not a directory",
        ),
        (
            vec!["export", &id, "-o", &at("afile/x.tar")],
            "part of the path is not a directory",
        ),
        (
            vec!["export", &id, "-o", &at("new.tar/")],
            "a trailing / names a directory",
        ),
    ] {
        let err = fails(&ts, &args, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    assert!(!ts.scratch("new.tar").exists());
}
