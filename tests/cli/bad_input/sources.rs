//! Input that fails late or comes from a failing command: nothing recorded, no pack left.

use super::*;
use std::io::Write;
use std::process::Stdio;

#[test]
fn large_stream_failing_late_leaves_no_pack() {
    // Several MiB go to pack files before the damage is found: they must all be removed.
    let ts = TestStore::new();
    let dir = ts.scratch("big");
    write_file(&dir.join("big.bin"), &noise(3 << 20, 11));
    write_file(&dir.join("text.txt"), &text(2 << 20, 12));
    write_file(&dir.join("z.txt"), b"last\n");
    let d = dir.to_str().unwrap();
    let tar = tar_stream(&[
        "tar",
        "--format=gnu",
        "-cf",
        "-",
        "-C",
        d,
        "big.bin",
        "text.txt",
        "z.txt",
    ]);
    let z_hdr = 512 + (3 << 20) + 512 + (2 << 20);
    assert_eq!(&tar[z_hdr..z_hdr + 6], b"z.txt\0");

    let what = "cut inside z.txt";
    let err = refuse_stdin(&tar[..z_hdr + 514], what);
    assert_offset(&err, z_hdr + 514, what);
    assert_member(&err, "z.txt", what);

    let mut s = tar.clone();
    s[z_hdr + 1] ^= 0xff;
    let err = refuse_stdin(&s, "z.txt header checksum");
    assert_offset(&err, z_hdr, "z.txt header checksum");

    let err = refuse_stdin(&tar[..z_hdr + 1024], "no end-of-archive blocks");
    assert_offset(&err, z_hdr + 1024, "no end-of-archive blocks");

    // A whole, valid stream from a command that then fails: stored, then thrown away.
    let file = ts.scratch("big.tar");
    write_file(&file, &tar);
    let script = format!("cat '{}'; echo late failure >&2; exit 5", file.display());
    let out = ts.run(&["snapshot", "--", "sh", "-c", &script]);
    let err = refused(&ts, &out, "command failing after a large stream");
    assert!(err.contains("late failure"), "{err}");
}

#[test]
fn failing_command_records_nothing() {
    let ts = TestStore::new();
    let (dir, _) = fixture(&ts);
    let script = format!(
        "tar --format=gnu -cf - -C '{}' a.bin c.bin sub/b.txt; echo oops >&2; exit 3",
        dir.display()
    );
    let out = ts.run(&["snapshot", "--", "sh", "-c", &script]);
    let err = refused(&ts, &out, "command exiting 3");
    assert!(
        err.contains("oops"),
        "the command's stderr is not shown:\n{err}"
    );
    assert!(err.contains('3'), "the exit status is not shown:\n{err}");

    // Another code than the one allowed is still an error.
    let out = ts.run(&["snapshot", "--allow-exit", "4", "--", "sh", "-c", &script]);
    let err = refused(&ts, &out, "command exiting 3, 4 allowed");
    assert!(
        err.contains("oops"),
        "the command's stderr is not shown:\n{err}"
    );

    // Killed by a signal: no exit code to allow.
    let out = ts.run(&[
        "snapshot",
        "--allow-exit",
        "3",
        "--",
        "sh",
        "-c",
        &format!(
            "tar -cf - -C '{}' a.bin; echo dying >&2; kill -9 $$",
            dir.display()
        ),
    ]);
    let err = refused(&ts, &out, "command killed");
    assert!(
        err.contains("dying"),
        "the command's stderr is not shown:\n{err}"
    );

    // An exit status is 0 to 255: anything else is a usage error, before anything runs.
    for code in ["256", "-1", "three"] {
        let out = ts.run(&["snapshot", "--allow-exit", code, "--", "sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(2), "{code}: {}", stderr(&out));
        assert!(!stderr(&out).contains("oops"), "{code}: the command ran");
        assert_eq!(ts.snapshot_count(), 0);
    }
}

#[test]
fn a_command_that_fails_before_writing_a_stream_leads_with_its_exit_status() {
    // What `smolvm machine exec` does when the machine is not running: nothing on stdout, a
    // complaint on stderr, a failing status. The status is the cause, the empty stream only
    // its symptom.
    let ts = TestStore::new();
    let script = "echo \"machine vm1 is not running\" >&2; exit 3";
    let out = ts.run(&["snapshot", "--", "sh", "-c", script]);
    let err = refused(&ts, &out, "command failing before writing");
    // The command as a shell would take it.
    let want =
        format!("cellar: error: `sh -c '{script}'` failed (exit status: 3); nothing was recorded");
    assert!(err.starts_with(&want), "{err}");
    assert!(
        err.contains("its stderr:\nmachine vm1 is not running"),
        "{err}"
    );
    // --allow-exit allows a whole stream from a command that complained, not an empty one.
    let out = ts.run(&["snapshot", "--allow-exit", "3", "--", "sh", "-c", script]);
    let err = refused(
        &ts,
        &out,
        "command failing before writing, its status allowed",
    );
    let allowed = format!(
        "cellar: error: `sh -c '{script}'` ended (exit status: 3, which --allow-exit takes), \
         but what it wrote is no whole stream; nothing was recorded"
    );
    assert!(err.starts_with(&allowed), "{err}");
    assert!(err.contains("machine vm1 is not running"), "{err}");
    let out = ts.run(&["snapshot", "--", "false"]);
    let err = refused(&ts, &out, "false");
    assert!(
        err.starts_with("cellar: error: `false` failed (exit status: 1)"),
        "{err}"
    );
}

#[test]
fn failing_command_with_broken_stream() {
    // The stream error and what the command said both show; --allow-exit does not make a
    // damaged stream acceptable.
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let cut = ts.scratch("cut.tar");
    write_file(&cut, &tar[..C_DATA + 700]);
    let script = format!(
        "cat '{}'; echo broken pipe dream >&2; exit 2",
        cut.display()
    );
    for args in [
        &["snapshot", "--", "sh", "-c", &script][..],
        &["snapshot", "--allow-exit", "2", "--", "sh", "-c", &script][..],
    ] {
        let out = ts.run(args);
        let err = refused(&ts, &out, "command writing a cut stream");
        assert_offset(&err, C_DATA + 700, "command writing a cut stream");
        assert_member(&err, "c.bin", "command writing a cut stream");
        assert!(
            err.contains("broken pipe dream"),
            "the command's stderr is not shown:\n{err}"
        );
        // The allowed status is said to be allowed: the stream is what failed.
        let allowed = args.contains(&"--allow-exit");
        assert_eq!(err.contains("which --allow-exit takes"), allowed, "{err}");
        assert_eq!(err.contains("failed (exit status: 2)"), !allowed, "{err}");
    }
}

#[test]
fn allowed_exit_code_records_with_warning() {
    let ts = TestStore::new();
    let (dir, _) = fixture(&ts);
    let copy = ts.scratch("as-written.tar");
    // tee keeps exactly what tar wrote, to compare the export with.
    let script = format!(
        "tar --format=gnu -cf - -C '{}' a.bin c.bin sub/b.txt | tee '{}'; printf 'oops one\\noops \\033 two\\n' >&2; exit 3",
        dir.display(),
        copy.display()
    );
    let out = ts.run(&[
        "snapshot",
        "--name",
        "cmd",
        "--allow-exit",
        "3",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let id = String::from_utf8(out.stdout).expect("utf-8");
    let id = id.strip_suffix('\n').expect("one line");
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "stdout {id:?}"
    );
    assert_mentions(&err, "warning", "allowed exit");
    // Its stderr as it wrote it: line by line, a control character escaped.
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.contains(&"oops one") && lines.contains(&"oops \\033 two"),
        "the warning lacks the command's stderr, line by line:\n{err}"
    );

    let written = std::fs::read(&copy).expect("tee copy");
    assert_eq!(written.len(), STREAM_LEN);
    assert_eq!(ts.snapshot_count(), 1);
    assert_eq!(ts.export(id), written, "export differs from what tar wrote");
    let show = ts.json(&["show", id, "--json"]);
    assert_eq!(show["sha256"], sha256_hex(&written));
    assert_eq!(show["size"], written.len());
    assert_eq!(show["name"], "cmd");
}

/// A command's stderr past what is kept (64 KiB): the warning says how much of its start is
/// not shown, and shows the end.
#[test]
fn a_long_stderr_says_what_is_not_kept() {
    let ts = TestStore::new();
    let (dir, _) = fixture(&ts);
    let script = format!(
        "head -c 100000 /dev/zero | tr '\\0' e >&2; echo >&2; echo the last line >&2; \
         tar --format=gnu -cf - -C '{}' a.bin; exit 3",
        dir.display()
    );
    let out = ts.run(&["snapshot", "--allow-exit", "3", "--", "sh", "-c", &script]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[its first 34479 bytes are not kept; the last 65536 follow]"),
        "{}",
        &err[..300.min(err.len())]
    );
    assert!(
        err.lines().any(|l| l == "the last line"),
        "the end is shown"
    );
}

/// A 48 MiB GNU tar stream of six files of noise: long enough to act on while it is ingested.
fn big_tar() -> Vec<u8> {
    let source = TestStore::new();
    let dir = source.scratch("big");
    for i in 0..6 {
        write_file(&dir.join(format!("{i}.bin")), &noise(8 << 20, i));
    }
    tar_stream(&["tar", "-cf", "-", "-C", dir.to_str().unwrap(), "."])
}

/// `tar` written to the file NAME, and `cellar snapshot` of it started: the file and the child.
fn snapshot_file_in_background(
    ts: &TestStore,
    name: &str,
    tar: &[u8],
) -> (PathBuf, std::process::Child) {
    let file = ts.scratch(name);
    write_file(&file, tar);
    let child = ts
        .cmd(&["snapshot", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (file, child)
}

/// A tar file is mapped, not read, and a mapping faults where the file has been cut short:
/// cutting the file while it is being ingested must still give exit 1 and a message (the
/// file shrank, the stream ends early, or the file changed, depending on how far the ingest
/// had got), never a bus error, and record nothing.
#[test]
fn a_file_cut_short_while_it_is_ingested_is_refused() {
    let tar = big_tar();
    for delay_ms in [0, 50, 150, 300, 600] {
        let ts = TestStore::new();
        let (file, child) = snapshot_file_in_background(&ts, "cut.tar", &tar);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            continue; // it was all read before the cut: a snapshot of the whole file
        }
        let what = format!("file cut after {delay_ms} ms");
        let err = refused(&ts, &out, &what);
        assert!(
            [
                "cut short",
                "stream ends",
                "changed while it was being read"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{what}: {err}"
        );
    }
}

/// A tar file written while it is ingested is refused, and nothing is recorded. A mapped file
/// is read more than once (by the hasher, the parser and the copy into a frame): a write in
/// between would otherwise record chunks that fail their own ids, and a later snapshot of the
/// untouched file would deduplicate against them. The ingest is stopped once it has mapped
/// the file, one byte of a member's data is changed, and it goes on; the same without the
/// write is the control.
#[test]
fn a_file_written_while_it_is_ingested_is_refused() {
    let tar = big_tar();
    // Inside the last member's data: 8 MiB that end a few blocks before the stream does.
    let at = tar.len() as u64 - (4 << 20);
    for write in [false, true] {
        let ts = TestStore::new();
        let (file, child) = snapshot_file_in_background(&ts, "live.tar", &tar);
        let pid = child.id() as i32;
        let maps = format!("/proc/{pid}/maps");
        let name = file.to_str().unwrap().to_string();
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&name)) {
            assert!(
                start.elapsed().as_secs() < 30,
                "the ingest never mapped its file"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // SAFETY: signals to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        if write {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.write_all_at(&[!tar[at as usize]], at).unwrap();
        }
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let out = child.wait_with_output().unwrap();
        if !write {
            assert_success(&out, &["snapshot", "live.tar (untouched)"]);
            assert_eq!(ts.export("default"), tar);
            continue;
        }
        let err = refused(&ts, &out, "a byte written while the file was read");
        assert!(err.contains("changed while it was being read"), "{err}");
        // The store holds nothing that fails its id, and the file as it is now goes in whole.
        assert_success(&ts.run(&["verify", "--data"]), &["verify", "--data"]);
        let now = std::fs::read(&file).unwrap();
        let id = ts.ok(&["snapshot", file.to_str().unwrap()]);
        assert!(ts.export(id.trim_end()) == now);
    }
}

/// A command that fails at once, leaving something it started running: that is stopped with
/// it, and one holding the command's stderr open does not keep the snapshot waiting.
#[test]
fn a_failed_command_takes_what_it_started_with_it() {
    let ts = TestStore::new();
    for (tag, script) in [
        (
            "64",
            "sleep 64.{pid} >/dev/null 2>&1 & echo garbage; exit 3",
        ),
        ("65", "sleep 65.{pid} >/dev/null & echo garbage"),
    ] {
        let stall = format!("sleep {tag}.{}", std::process::id());
        let script = script.replace("{pid}", &std::process::id().to_string());
        let start = std::time::Instant::now();
        let out = ts.run(&["snapshot", "--name", "x", "--", "sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(1), "{script}: {}", stderr(&out));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{script}: the snapshot waited for what the command left running"
        );
        assert!(
            !running(&stall),
            "{script}: `{stall}` outlived the snapshot"
        );
        assert_eq!(ts.snapshot_count(), 0);
    }
}

/// A system clock past the year 9999 (libfaketime's, here) cannot be recorded as a snapshot's
/// time: the snapshot is refused with what to do, not taken with a wrong time or a panic.
#[test]
fn a_clock_past_year_9999_is_refused() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let stream = ts.scratch("t.tar");
    write_file(&stream, &tar);
    let out = std::process::Command::new("faketime")
        .arg("10000-01-02 00:00:00")
        .arg(cellar_bin())
        .arg("--store")
        .arg(ts.path())
        .arg("snapshot")
        .arg(&stream)
        .env_remove("CELLAR_STORE")
        .output()
        .expect("run faketime (scripts/test installs it)");
    let err = refused(&ts, &out, "clock in year 10000");
    assert_mentions(&err, "system clock", "clock in year 10000");
    assert_mentions(&err, "set the clock", "clock in year 10000");
}

/// A writer that sends something other than tar and then waits (a prompt, a hung exec) is
/// refused as soon as its first header is read, not when 1 MiB has come or the writer ends:
/// from a command, which is stopped, and from a pipe on stdin.
#[test]
fn a_bad_start_is_refused_while_the_writer_waits() {
    let ts = TestStore::new();
    let child = ts
        .cmd(&[
            "snapshot",
            "--",
            "sh",
            "-c",
            "printf '%01024d' 7; exec sleep 600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cellar");
    let out = output_within_a_minute(child, "command");
    let err = refused(&ts, &out, "command");
    assert_offset(&err, 0, "command");

    let ts = TestStore::new();
    let mut child = ts
        .cmd(&["snapshot", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cellar");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&[b'7'; 1024]).expect("write junk");
    // stdin stays open: the writer has stalled, not ended.
    let out = output_within_a_minute(child, "stdin");
    drop(stdin);
    let err = refused(&ts, &out, "stdin");
    assert_offset(&err, 0, "stdin");
}

/// A stdin pipe its parent made non-blocking (a parent's choice cellar inherits): reads that
/// find it empty are waited out, not refused with EAGAIN, and the stream comes back whole.
#[test]
fn a_non_blocking_stdin_pipe_is_waited_on() {
    use std::os::fd::AsRawFd;
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let (reader, mut writer) = std::io::pipe().unwrap();
    // SAFETY: fcntl on a descriptor `reader` holds open.
    unsafe {
        let fd = reader.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
    }
    let child = ts
        .cmd(&["snapshot", "--name", "nb", "-"])
        .stdin(reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Part of it, a pause long enough for cellar to find the pipe empty, then the rest.
    writer.write_all(&tar[..B_HDR]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    writer.write_all(&tar[B_HDR..]).unwrap();
    drop(writer);
    let out = output_within_a_minute(child, "snapshot of a non-blocking stdin");
    assert_success(&out, &["snapshot", "-"]);
    assert_eq!(ts.export("nb"), tar);
}
