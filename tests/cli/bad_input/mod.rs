//! Damaged input: every kind of bad stream is refused with exit 1 and an error naming the byte
//! offset (and the member, when one was being read), records nothing, leaves no pack behind and
//! never panics. Streams are real GNU tar output, cut or corrupted at known offsets.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::common::*;

mod compression;
mod left_running;
mod sources;
mod streams;

/// Layout of the fixture stream (`tar --format=gnu -cf - a.bin c.bin sub/b.txt`):
/// a.bin (3000 bytes) header at 0, data 512..3512; c.bin (1500 bytes) header at 3584, data
/// 4096..5596; sub/b.txt (6 bytes) header at 5632, data 6144..6150; end-of-archive blocks at
/// 6656 and 7168; blocking padding up to 10240.
pub(super) const A_HDR: usize = 0;
pub(super) const C_HDR: usize = 3584;
pub(super) const C_DATA: usize = 4096;
pub(super) const B_HDR: usize = 5632;
pub(super) const B_DATA: usize = 6144;
pub(super) const END: usize = 6656;
pub(super) const STREAM_LEN: usize = 10240;

/// Build the fixture tree beside the store and return (tree dir, tar stream).
pub(super) fn fixture(ts: &TestStore) -> (PathBuf, Vec<u8>) {
    let dir = ts.scratch("tree");
    write_file(&dir.join("a.bin"), &noise(3000, 1));
    write_file(&dir.join("c.bin"), &noise(1500, 2));
    write_file(&dir.join("sub/b.txt"), b"hello\n");
    let d = dir.to_str().expect("utf-8 path");
    let tar = tar_stream(&[
        "tar",
        "--format=gnu",
        "-cf",
        "-",
        "-C",
        d,
        "a.bin",
        "c.bin",
        "sub/b.txt",
    ]);
    // The offsets the tests name depend on this layout; check it rather than assume it.
    assert_eq!(tar.len(), STREAM_LEN, "unexpected GNU tar stream length");
    for (at, name) in [(A_HDR, "a.bin"), (C_HDR, "c.bin"), (B_HDR, "sub/b.txt")] {
        assert_eq!(
            &tar[at..at + name.len() + 1],
            format!("{name}\0").as_bytes(),
            "GNU tar put no {name} header at {at}"
        );
    }
    assert!(
        tar[END..].iter().all(|&b| b == 0),
        "no end-of-archive blocks at {END}"
    );
    (dir, tar)
}

/// A 512-byte ustar header with a correct checksum.
pub(super) fn ustar_header(name: &[u8], size: u64, typeflag: u8) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

/// An `x` (PAX local) header carrying `payload`, padded to whole blocks, followed by `rest`.
pub(super) fn with_pax(payload: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut s = ustar_header(b"PaxHeaders/a.bin", payload.len() as u64, b'x');
    s.extend_from_slice(payload);
    s.resize(s.len().next_multiple_of(512), 0);
    s.extend_from_slice(rest);
    s
}

/// One PAX record, `"%d %s=%s\n"`, its length counting itself.
pub(super) fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// Every file in the store whose name ends in `.pack`, sealed or temporary.
pub(super) fn pack_like_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(pack_like_files(&p));
        } else if p.extension().is_some_and(|x| x == "pack") {
            out.push(p);
        }
    }
    out
}

/// The common verdict on bad input: exit 1, an error on stderr, no panic, nothing recorded,
/// no pack left. Returns stderr.
pub(super) fn refused(ts: &TestStore, out: &Output, what: &str) -> String {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{what}: cellar panicked:\n{err}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: want exit 1; stderr:\n{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("error"), "{what}: no error message:\n{err}");
    assert_eq!(ts.snapshot_count(), 0, "{what}: a snapshot was recorded");
    assert!(
        ts.pack_files().is_empty(),
        "{what}: packs left: {:?}",
        ts.pack_files()
    );
    let left = pack_like_files(&ts.path());
    assert!(left.is_empty(), "{what}: pack files left: {left:?}");
    err
}

/// Feed `bytes` on stdin to a fresh store and require refusal.
pub(super) fn refuse_stdin(bytes: &[u8], what: &str) -> String {
    let ts = TestStore::new();
    let out = ts.run_stdin(&["snapshot", "-"], bytes);
    refused(&ts, &out, what)
}

/// Write `bytes` to a file and snapshot it (SOURCE = FILE) in a fresh store; require refusal.
pub(super) fn refuse_file(bytes: &[u8], file_name: &str, what: &str) -> String {
    let ts = TestStore::new();
    let path = ts.scratch(file_name);
    write_file(&path, bytes);
    let out = ts.run(&["snapshot", path.to_str().expect("utf-8 path")]);
    let err = refused(&ts, &out, what);
    assert!(
        err.contains(&format!("{}: ", path.display())),
        "{what}: no file named: {err}"
    );
    err
}

/// The offset named by the first "at byte N" in `err`.
pub(super) fn named_offset(err: &str, what: &str) -> u64 {
    let at = err
        .find("at byte ")
        .unwrap_or_else(|| panic!("{what}: error names no offset (\"at byte N\"):\n{err}"));
    let digits: String = err[at + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{what}: \"at byte\" without a number:\n{err}"))
}

pub(super) fn assert_offset(err: &str, offset: usize, what: &str) {
    assert_eq!(
        named_offset(err, what),
        offset as u64,
        "{what}: wrong offset in:\n{err}"
    );
}

pub(super) fn assert_member(err: &str, path: &str, what: &str) {
    assert!(
        err.contains(&format!("(member {path})")),
        "{what}: error does not name member {path}:\n{err}"
    );
}

/// The problem is in the headers of the member after `path`, and the error says so rather
/// than blaming `path` or trusting a damaged header's name; `None`: before the first member,
/// so no member is named.
pub(super) fn assert_after(err: &str, path: Option<&str>, what: &str) {
    match path {
        Some(path) => assert!(
            err.contains(&format!("(the header after member {path})")),
            "{what}: error does not say the header after {path}:\n{err}"
        ),
        None => assert!(!err.contains("member"), "{what}: names a member:\n{err}"),
    }
}

pub(super) fn assert_mentions(err: &str, word: &str, what: &str) {
    assert!(
        err.to_lowercase().contains(&word.to_lowercase()),
        "{what}: error does not mention {word:?}:\n{err}"
    );
}

pub(super) fn gzip(data: &[u8], ts: &TestStore) -> Vec<u8> {
    let raw = ts.scratch("raw.tar");
    write_file(&raw, data);
    sh(&format!("gzip -c '{}'", raw.display()))
}

pub(super) fn zstd(data: &[u8], ts: &TestStore) -> Vec<u8> {
    let raw = ts.scratch("raw.tar");
    write_file(&raw, data);
    sh(&format!("zstd -q -c '{}'", raw.display()))
}
