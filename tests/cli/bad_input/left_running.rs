//! A command that leaves something running with its stdout (a daemon it started): the snapshot
//! does not wait on that process's pipe, whether the command succeeded or failed, and the
//! error of a stream cellar refused is not blamed on the command it stopped.

use std::time::{Duration, Instant};

use super::*;

/// Kills the processes running `words` when dropped, so a failed assertion leaves none.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-f", &format!("^{}$", self.0)])
            .status();
    }
}

/// A unique `sleep` for this test, and what kills it afterwards.
fn daemon(tag: u32) -> (String, Reaper) {
    let words = format!("sleep {tag}.{}", std::process::id());
    (words.clone(), Reaper(words))
}

/// The fixture stream, and a file holding it for a command to write.
fn fixture_file(ts: &TestStore) -> (std::path::PathBuf, Vec<u8>) {
    let (_, tar) = fixture(ts);
    let file = ts.scratch("whole.tar");
    write_file(&file, &tar);
    (file, tar)
}

/// The command's stream is whole and it exits 0, while what it left running holds its stdout
/// open for a minute: the snapshot ends soon after, warns, and keeps the stream to its end.
#[test]
fn a_daemon_holding_the_pipe_does_not_hold_a_whole_stream() {
    let ts = TestStore::new();
    let (file, tar) = fixture_file(&ts);
    let (sleep, _reaper) = daemon(71);
    let script = format!("cat '{}'; {sleep} & exit 0", file.display());
    let start = Instant::now();
    let out = ts.run(&[
        "snapshot", "--name", "vm", "--json", "--", "sh", "-c", &script,
    ]);
    assert_success(&out, &["snapshot", "--", "sh", "-c", &script]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the snapshot waited for the process holding the pipe"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("left running holds its output open"),
        "{warnings}"
    );
    assert_eq!(ts.export("vm"), tar, "the stream as the command wrote it");
    // A command that succeeded may leave things running: they are left alone.
    assert!(running(&sleep), "`{sleep}` was stopped");
}

/// A command that fails, having written part of a stream or all of it, while what it left
/// running holds its stdout (and, the second time, its stderr): the failure is reported soon
/// after, and what it left is stopped.
#[test]
fn a_failing_command_is_not_waited_for_behind_a_daemon() {
    let ts = TestStore::new();
    let (file, _) = fixture_file(&ts);
    let (sleep, _reaper) = daemon(72);
    let file = file.display();
    for script in [
        format!("head -c 5000 '{file}'; {sleep} & exit 4"),
        format!("{sleep} 2>/dev/null & cat '{file}'; exit 4"),
        format!("{sleep} & cat '{file}'; exit 4"),
    ] {
        let start = Instant::now();
        let out = ts.run(&["snapshot", "--", "sh", "-c", &script]);
        let err = refused(&ts, &out, &script);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{script}: the snapshot waited for the process holding the pipe"
        );
        assert!(err.contains("failed (exit status: 4)"), "{script}: {err}");
        wait_until("what the command left to be stopped", || !running(&sleep));
    }
}

/// cellar refuses what `yes` writes and closes the pipe, which kills `yes` with SIGPIPE: the
/// refusal is the error, not the command's death it caused.
#[test]
fn a_command_killed_by_the_refused_pipe_is_not_blamed() {
    let ts = TestStore::new();
    for script in ["exec yes", "yes; exit $?"] {
        let out = ts.run(&["snapshot", "--", "sh", "-c", script]);
        let err = refused(&ts, &out, script);
        assert!(err.contains("bad tar stream at byte 0"), "{script}: {err}");
        assert!(
            !err.contains("failed"),
            "{script}: blamed on the command: {err}"
        );
        assert!(err.contains("(stopped)"), "{script}: {err}");
    }
}
