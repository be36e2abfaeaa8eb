//! The command line contract: what `snapshot`, `list`, `show`, `export` and `stats` print,
//! how SNAP arguments resolve, lineages, labels, compressed input, exit codes.

use std::path::PathBuf;
use std::process::Output;

use super::common::*;

mod broken_output;
mod descriptors;
mod lineages;
mod output;
mod progress;
mod store_dir;

/// `cellar --store STORE ARGS` (ARGS as shell words) run by script(1), which gives it a
/// terminal on stdin, stdout and stderr: its exit code (-e passes it on) and everything the
/// terminal showed.
pub(super) fn on_a_terminal(ts: &TestStore, args: &str) -> (Option<i32>, String) {
    require("script");
    let cmd = format!("{} --store '{}' {args}", cellar_bin(), ts.path().display());
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), said)
}

/// A small tree beside the store; `version` changes one file so streams differ.
pub(super) fn tree(ts: &TestStore, version: u64) -> PathBuf {
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
pub(super) fn tar_of(dir: &std::path::Path) -> Vec<u8> {
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

pub(super) fn is_short_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub(super) fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (or `+00:00`): RFC 3339 in UTC.
pub(super) fn is_rfc3339_utc(s: &str) -> bool {
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
pub(super) fn fails(ts: &TestStore, args: &[&str], code: i32) -> String {
    let out = ts.run(args);
    exits(&out, args, code)
}

pub(super) fn exits(out: &Output, args: &[&str], code: i32) -> String {
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
pub(super) fn resolves_to(ts: &TestStore, snap: &str) -> String {
    ts.json(&["show", snap, "--json"])["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub(super) const SHOW_KEYS: [&str; 10] = [
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
