//! Outputs that fail: a reader that went away, a full disk, a closed stdout or stdin, a
//! stderr nobody reads. Each is an error that says so, or quiet where coreutils are quiet.

use super::*;

#[test]
fn a_reader_that_went_away_ends_every_report_quietly() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    for args in [
        &["show", id.as_str()][..],
        &["show", id.as_str(), "--json"],
        &["list"],
        &["list", "--json"],
        &["stats"],
        &["ls", id.as_str(), "/"],
        &["export", id.as_str()],
        &["verify"],
        &["gc", "--dry-run"],
    ] {
        // stdout is a pipe nobody reads: every write fails with EPIPE (SIGPIPE is ignored).
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = ts.cmd(args).stdout(writer).output().expect("run cellar");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("error"), "{args:?} is not quiet: {err}");
    }
}

/// A full disk under stdout is an error that says it is the output's, for every report,
/// help and version included (coreutils' `--help >/dev/full` fails too).
#[test]
fn a_full_stdout_is_an_output_error() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let other = ts.snapshot_bytes(&tar_of(&tree(&ts, 2)), "web");
    for args in [
        &["--help"][..],
        &["--version"],
        &["ls", "--help"],
        &["list"],
        &["ls", id.as_str(), "-R", "-l"],
        &["diff", id.as_str(), other.as_str()],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = ts.cmd(args).stdout(full).output().expect("run cellar");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("writing the output: "), "{args:?}: {err}");
    }
}

#[test]
fn a_stderr_that_went_away_costs_the_messages_not_the_exit_status() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    for (args, code) in [
        (&["show", "nosuch"][..], 2),              // an error message
        (&["snapshot", "/nonexistent.tar"], 1),    // another
        (&["restore", id.as_str(), "/proc/x"], 1), // an error after warnings
        (&["list"], 0),                            // a report on stdout only
        (&["prune", "--keep-last", "1"], 0),       // messages on a success
    ] {
        // stderr is a pipe nobody reads: every message fails with EPIPE (SIGPIPE is ignored).
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = ts.cmd(args).stderr(writer).output().expect("run cellar");
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
}

/// Started with stdout closed (`>&-`), a command that writes there fails before doing
/// anything, rather than write into the /dev/null Rust's runtime puts there and exit 0 (an
/// export would vanish, a snapshot's id be lost); one that does not write there runs. A
/// snapshot of stdin with stdin closed (`<&-`) is refused the same way, not read as empty.
#[test]
fn a_closed_stdout_or_stdin_is_an_error_for_the_commands_that_need_it() {
    let ts = TestStore::new();
    let tar = tar_of(&tree(&ts, 1));
    let id = ts.snapshot_bytes(&tar, "web");
    let file = ts.scratch("in.tar");
    std::fs::write(&file, &tar).unwrap();
    let run = |args: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec '{}' {args}", cellar_bin()))
            .env("CELLAR_STORE", ts.path())
            .output()
            .unwrap()
    };
    for (args, closed) in [
        (format!("export {id} >&-"), "stdout"),
        (
            format!("snapshot --name other '{}' >&-", file.display()),
            "stdout",
        ),
        ("snapshot --name other - <&-".to_string(), "stdin"),
        ("--help >&-".to_string(), "stdout"),
        ("--version >&-".to_string(), "stdout"),
    ] {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args}: {err}");
        assert!(
            err.contains(&format!("{closed} is closed")),
            "{args}: {err}"
        );
    }
    let listed = ts.json(&["list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let to = ts.scratch("out.tar");
    let restored = ts.scratch("restored");
    for args in [
        format!("export {id} -o '{}' >&-", to.display()),
        format!("restore {id} '{}' >&-", restored.display()),
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args}: {}", stderr(&out));
    }
    assert!(std::fs::read(&to).unwrap() == tar);
}
