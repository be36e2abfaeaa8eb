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
    let (code, said) = on_a_terminal(&ts, &format!("export {id} -o /dev/stderr >/dev/null"));
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("refusing to write a tar stream to a terminal"),
        "{said}"
    );
    assert!(
        !said.contains("ustar"),
        "tar bytes reached the terminal: {said}"
    );
}
