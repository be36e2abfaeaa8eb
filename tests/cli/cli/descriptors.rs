//! `export -o` naming a descriptor (`/dev/stdout`, `/dev/stderr`, `/dev/fd/N`): what goes to
//! descriptor 1 is stdout, with stdout's rules; another is written only if cellar was given
//! it, and never to a terminal.

use super::*;

/// Runs `sh -c SCRIPT` with the store in CELLAR_STORE and `$C` the binary.
fn sh(ts: &TestStore, script: &str) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("CELLAR_STORE", ts.path())
        .env("C", cellar_bin())
        .output()
        .unwrap()
}

#[test]
fn descriptor_1_by_any_name_is_stdout() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    for o in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        // --json would go into the data.
        let err = fails(&ts, &["export", &id, "-o", o, "--json"], 2);
        assert!(err.contains("--json needs -o FILE"), "{o}: {err}");
        // A docker archive on stdout gets no report after it.
        let args = ["export", &id, "--format", "docker-archive"];
        let plain = ts.run(&args);
        assert_success(&plain, &args);
        let named = ts.run(&[&args[..], &["-o", o]].concat());
        assert_success(&named, &[o]);
        assert!(named.stdout == plain.stdout, "{o}: the archive differs");
        // Closed, it is refused as stdout is.
        let out = sh(&ts, &format!("exec \"$C\" export {id} -o {o} >&-"));
        assert_eq!(out.status.code(), Some(1), "{o}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("stdout is closed"),
            "{o}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn another_descriptor_must_be_given_and_no_terminal() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    // Not open: the OS's answer, as a shell's redirection would get.
    let out = sh(&ts, &format!("exec \"$C\" export {id} -o /dev/fd/9 9>&-"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-o /dev/fd/9: Bad file descriptor"),
        "{}",
        stderr(&out)
    );
    // A terminal on stderr: refused as one on stdout is.
    refused_as_a_terminal(&ts, &id, "/dev/stderr");
}

/// What would put the stream where cellar's messages go, or a descriptor that was closed
/// when cellar started (the runtime's /dev/null is there now), is refused before any work.
#[test]
fn stderr_and_closed_descriptors_are_refused() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let log = ts.scratch("log");
    let log_s = log.to_str().unwrap();
    for (o, redirect) in [
        ("/dev/stderr", ""),
        ("/dev/fd/3", "3>&2"),
        ("/proc/self/fd/2", ""),
    ] {
        for format in ["tar", "docker-archive"] {
            let script =
                format!("exec \"$C\" export {id} --format {format} -o {o} 2>'{log_s}' {redirect}");
            let out = sh(&ts, &script);
            let said = std::fs::read_to_string(&log).unwrap();
            assert_eq!(out.status.code(), Some(2), "{o} {format}: {said}");
            assert!(said.contains("is also stderr"), "{o} {format}: {said}");
            assert!(
                !said.contains("ustar"),
                "{o} {format}: the stream was written"
            );
        }
    }
    // /dev/null on stderr keeps nothing, so it is no conflict.
    let out = sh(
        &ts,
        &format!("exec \"$C\" export {id} -o /dev/null 2>/dev/null"),
    );
    assert_eq!(out.status.code(), Some(0));

    // Closed at start: the OS's answer, not a write into /dev/null.
    let out = sh(&ts, &format!("exec \"$C\" export {id} -o /dev/fd/0 <&-"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-o /dev/fd/0: Bad file descriptor"),
        "{}",
        stderr(&out)
    );
    let out = sh(&ts, &format!("exec \"$C\" export {id} -o /dev/stderr 2>&-"));
    assert_eq!(out.status.code(), Some(1));
    // An image to a file prints its digest on stdout, so stdout must be open.
    let image = ts.scratch("image.tar");
    let out = sh(
        &ts,
        &format!(
            "exec \"$C\" export {id} --format docker-archive -o '{}' >&-",
            image.display()
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stdout is closed"),
        "{}",
        stderr(&out)
    );
    assert!(!image.exists());
}

/// `export ID -o OUTPUT` run on a terminal is refused before any tar byte is written.
fn refused_as_a_terminal(ts: &TestStore, id: &str, output: &str) {
    let (code, said) = on_a_terminal(ts, &format!("export {id} -o {output} >/dev/null"));
    assert_eq!(code, Some(2), "{output}: {said}");
    assert!(
        said.contains("refusing to write a tar stream to a terminal"),
        "{output}: {said}"
    );
    assert!(
        !said.contains("ustar"),
        "{output}: tar bytes reached the terminal: {said}"
    );
}

/// A terminal opened by name is refused as one on a descriptor is; `/dev/fd/01` is no
/// descriptor's name (the kernel has no such entry).
#[test]
fn a_terminal_by_name_is_refused_and_leading_zeros_name_no_descriptor() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    refused_as_a_terminal(&ts, &id, "/dev/tty");

    let out = sh(&ts, &format!("exec \"$C\" export {id} -o /dev/fd/01"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/dev/fd/01"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "/dev/fd/01 was read as stdout");
}
