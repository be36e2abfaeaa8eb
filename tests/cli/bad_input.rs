//! Damaged input: every kind of bad stream is refused with exit 1 and an error naming the byte
//! offset (and the member, when one was being read), records nothing, leaves no pack behind and
//! never panics. Streams are real GNU tar output, cut or corrupted at known offsets.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::common::*;

/// Layout of the fixture stream (`tar --format=gnu -cf - a.bin c.bin sub/b.txt`):
/// a.bin (3000 bytes) header at 0, data 512..3512; c.bin (1500 bytes) header at 3584, data
/// 4096..5596; sub/b.txt (6 bytes) header at 5632, data 6144..6150; end-of-archive blocks at
/// 6656 and 7168; blocking padding up to 10240.
const A_HDR: usize = 0;
const C_HDR: usize = 3584;
const C_DATA: usize = 4096;
const B_HDR: usize = 5632;
const B_DATA: usize = 6144;
const END: usize = 6656;
const STREAM_LEN: usize = 10240;

/// Build the fixture tree beside the store and return (tree dir, tar stream).
fn fixture(ts: &TestStore) -> (PathBuf, Vec<u8>) {
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

/// Recompute a header block's checksum (unsigned sum, checksum field counted as spaces).
fn set_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&b| b as u32).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A 512-byte ustar header with a correct checksum.
fn ustar_header(name: &[u8], size: u64, typeflag: u8) -> Vec<u8> {
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
fn with_pax(payload: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut s = ustar_header(b"PaxHeaders/a.bin", payload.len() as u64, b'x');
    s.extend_from_slice(payload);
    s.resize(s.len().next_multiple_of(512), 0);
    s.extend_from_slice(rest);
    s
}

/// One PAX record, `"%d %s=%s\n"`, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// Every file in the store whose name ends in `.pack`, sealed or temporary.
fn pack_like_files(dir: &Path) -> Vec<PathBuf> {
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
fn refused(ts: &TestStore, out: &Output, what: &str) -> String {
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
fn refuse_stdin(bytes: &[u8], what: &str) -> String {
    let ts = TestStore::new();
    let out = ts.run_stdin(&["snapshot", "-"], bytes);
    refused(&ts, &out, what)
}

/// Write `bytes` to a file and snapshot it (SOURCE = FILE) in a fresh store; require refusal.
fn refuse_file(bytes: &[u8], file_name: &str, what: &str) -> String {
    let ts = TestStore::new();
    let path = ts.scratch(file_name);
    write_file(&path, bytes);
    let out = ts.run(&["snapshot", path.to_str().expect("utf-8 path")]);
    refused(&ts, &out, what)
}

/// The offset named by the first "at byte N" in `err`.
fn named_offset(err: &str, what: &str) -> u64 {
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

fn assert_offset(err: &str, offset: usize, what: &str) {
    assert_eq!(
        named_offset(err, what),
        offset as u64,
        "{what}: wrong offset in:\n{err}"
    );
}

fn assert_member(err: &str, path: &str, what: &str) {
    assert!(
        err.contains(path),
        "{what}: error does not name member {path}:\n{err}"
    );
}

fn assert_mentions(err: &str, word: &str, what: &str) {
    assert!(
        err.to_lowercase().contains(&word.to_lowercase()),
        "{what}: error does not mention {word:?}:\n{err}"
    );
}

fn gzip(data: &[u8], ts: &TestStore) -> Vec<u8> {
    let raw = ts.scratch("raw.tar");
    write_file(&raw, data);
    sh(&format!("gzip -c '{}'", raw.display()))
}

fn zstd(data: &[u8], ts: &TestStore) -> Vec<u8> {
    let raw = ts.scratch("raw.tar");
    write_file(&raw, data);
    sh(&format!("zstd -q -c '{}'", raw.display()))
}

#[test]
fn fixture_is_accepted_whole() {
    // The control for everything below: the undamaged stream and its PAX-prefixed variant
    // (built with this file's header helper) are accepted and exported bit for bit.
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let id = ts.snapshot_bytes(&tar, "plain");
    assert_eq!(ts.export(&id), tar);
    assert_eq!(pax_record("path", "a/b/c.t"), b"16 path=a/b/c.t\n");
    assert_eq!(pax_record("k", "v"), b"6 k=v\n");
    assert_eq!(pax_record("k", "12345"), b"11 k=12345\n");
    let pax = with_pax(b"16 path=a/b/c.t\n", &tar);
    let id = ts.snapshot_bytes(&pax, "pax");
    assert_eq!(ts.export(&id), pax);
    let show = ts.json(&["show", &id, "--json"]);
    assert_eq!(show["members"], 3);
    assert_eq!(show["size"], pax.len());
}

#[test]
fn truncated_inside_member_data() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    for cut in [C_DATA + 700, C_DATA + 1] {
        let what = format!("cut at {cut} (inside c.bin's data)");
        let err = refuse_stdin(&tar[..cut], &what);
        assert_offset(&err, cut, &what);
        assert_member(&err, "c.bin", &what);
        // A file source says the same.
        let err = refuse_file(&tar[..cut], "cut.tar", &what);
        assert_offset(&err, cut, &what);
        assert_member(&err, "c.bin", &what);
    }
    // Inside the first member's data.
    let err = refuse_stdin(&tar[..2000], "cut at 2000");
    assert_offset(&err, 2000, "cut at 2000");
    assert_member(&err, "a.bin", "cut at 2000");
    // Inside the last member's data.
    let err = refuse_stdin(&tar[..B_DATA + 3], "cut inside sub/b.txt");
    assert_offset(&err, B_DATA + 3, "cut inside sub/b.txt");
    assert_member(&err, "sub/b.txt", "cut inside sub/b.txt");
}

#[test]
fn truncated_inside_header_block() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // The error names the header block that could not be read whole.
    for (cut, header) in [
        (C_HDR + 100, C_HDR),
        (C_HDR + 511, C_HDR),
        (B_HDR + 1, B_HDR),
        (100, 0),
    ] {
        let what = format!("cut at {cut} (inside the header at {header})");
        let err = refuse_stdin(&tar[..cut], &what);
        assert_offset(&err, header, &what);
    }
}

#[test]
fn truncated_after_member_without_end_marker() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // Right after the last member (data and padding), no zero blocks.
    let err = refuse_stdin(&tar[..END], "no end-of-archive blocks");
    assert_offset(&err, END, "no end-of-archive blocks");
    // Right after an earlier member.
    let err = refuse_stdin(&tar[..C_HDR], "cut after a.bin");
    assert_offset(&err, C_HDR, "cut after a.bin");
    // Right after the last member's data, before its block padding.
    let err = refuse_stdin(&tar[..B_DATA + 6], "cut before padding");
    assert_offset(&err, B_DATA + 6, "cut before padding");
    assert_member(&err, "sub/b.txt", "cut before padding");
}

#[test]
fn random_garbage() {
    let junk = noise(4096, 7);
    assert!(!junk.starts_with(&[0x1f, 0x8b]) && !junk.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    let err = refuse_stdin(&junk, "random bytes");
    assert_offset(&err, 0, "random bytes");
    let err = refuse_stdin(&text(3000, 3), "text");
    assert_offset(&err, 0, "text");
    // Less than one block of garbage.
    let err = refuse_stdin(b"not a tar stream\n", "short text");
    assert_offset(&err, 0, "short text");

    // Garbage after a good first member: the offset is where the garbage starts.
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let mut s = tar[..C_HDR].to_vec();
    s.extend_from_slice(&noise(2048, 9));
    let err = refuse_stdin(&s, "garbage after a.bin");
    assert_offset(&err, C_HDR, "garbage after a.bin");
}

#[test]
fn corrupted_header_checksum() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // A flipped byte in the 2nd member's header (in its name field, then in its mode field),
    // and in the 3rd member's header.
    for (header, byte) in [(C_HDR, 20), (C_HDR, 102), (B_HDR, 3), (A_HDR, 60)] {
        let mut s = tar.clone();
        s[header + byte] ^= 0xff;
        let what = format!("byte {} flipped (header at {header})", header + byte);
        let err = refuse_stdin(&s, &what);
        assert_offset(&err, header, &what);
        assert_mentions(&err, "checksum", &what);
    }
}

#[test]
fn size_field_past_end_of_stream() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // sub/b.txt claims 100000 bytes: its data runs to the end of the stream and beyond.
    let mut s = tar.clone();
    s[B_HDR + 124..B_HDR + 136].copy_from_slice(format!("{:011o}\0", 100_000).as_bytes());
    set_checksum(&mut s[B_HDR..B_HDR + 512]);
    let err = refuse_stdin(&s, "sub/b.txt size 100000");
    assert_offset(&err, STREAM_LEN, "sub/b.txt size 100000");
    assert_member(&err, "sub/b.txt", "sub/b.txt size 100000");

    // c.bin claims the largest octal size the field holds.
    let mut s = tar.clone();
    s[C_HDR + 124..C_HDR + 136].copy_from_slice(b"77777777777\0");
    set_checksum(&mut s[C_HDR..C_HDR + 512]);
    let err = refuse_stdin(&s, "c.bin size 8 GiB");
    assert_offset(&err, STREAM_LEN, "c.bin size 8 GiB");
    assert_member(&err, "c.bin", "c.bin size 8 GiB");

    // a.bin claims i64::MAX bytes in GNU base-256.
    let mut s = tar.clone();
    let mut field = [0xffu8; 12];
    field[..5].copy_from_slice(&[0x80, 0, 0, 0, 0x7f]);
    s[124..136].copy_from_slice(&field);
    set_checksum(&mut s[..512]);
    let err = refuse_stdin(&s, "a.bin size i64::MAX");
    assert_offset(&err, STREAM_LEN, "a.bin size i64::MAX");
    assert_member(&err, "a.bin", "a.bin size i64::MAX");
}

#[test]
fn pax_size_record_past_end_of_stream() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // A PAX `size` record overrides a.bin's header size.
    let s = with_pax(&pax_record("size", "100000000"), &tar);
    let err = refuse_stdin(&s, "PAX size 100000000");
    assert_offset(&err, 1024 + STREAM_LEN, "PAX size 100000000");
    assert_member(&err, "a.bin", "PAX size 100000000");

    // The largest size a record can hold: no arithmetic may overflow on it.
    for size in [u64::MAX, u64::MAX - 100, i64::MAX as u64 + 1] {
        let s = with_pax(&pax_record("size", &size.to_string()), &tar);
        let what = format!("PAX size {size}");
        let err = refuse_stdin(&s, &what);
        named_offset(&err, &what);
    }
}

#[test]
fn malformed_pax_records() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // A good record (16 bytes, at 512) and then a bad one, at 528.
    let good = b"16 path=a/b/c.t\n";
    let cases: [(&str, &[u8]); 6] = [
        ("length past the header's data", b"99 path=x\n"),
        ("length not a number", b"1x path=ab\n"),
        ("no length", b"path=abc\n"),
        ("length too short for the key", b"2 path=abc\n"),
        ("no '='", b"11 pathabc\n"),
        ("no newline", b"9 path=ab"),
    ];
    for (what, bad) in cases {
        let payload = [&good[..], bad].concat();
        let err = refuse_stdin(&with_pax(&payload, &tar), what);
        assert_offset(&err, 512 + good.len(), what);
        assert_mentions(&err, "pax", what);
        // The bad record first: its offset is the start of the data block.
        let err = refuse_stdin(&with_pax(bad, &tar), what);
        assert_offset(&err, 512, what);
    }
}

#[test]
fn empty_stream() {
    let err = refuse_stdin(b"", "empty stdin");
    assert_offset(&err, 0, "empty stdin");
    let err = refuse_file(b"", "empty.tar", "empty file");
    assert_offset(&err, 0, "empty file");
}

#[test]
fn damaged_gzip_wrapper() {
    require("gzip");
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let gz = gzip(&tar, &ts);
    let mut flipped = gz.clone();
    flipped[gz.len() / 2] ^= 0xff;
    let mut bad_crc = gz.clone();
    let crc_at = gz.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    for (what, bytes) in [
        ("gzip cut in half", &gz[..gz.len() / 2]),
        ("gzip cut before its trailer", &gz[..gz.len() - 8]),
        ("gzip with a flipped byte", &flipped[..]),
        ("gzip with a bad crc", &bad_crc[..]),
        ("gzip magic alone", &gz[..2]),
    ] {
        let err = refuse_stdin(bytes, what);
        assert_mentions(&err, "gzip", what);
        named_offset(&err, what);
        let err = refuse_file(bytes, "in.tar.gz", what);
        assert_mentions(&err, "gzip", what);
        named_offset(&err, what);
    }
}

#[test]
fn damaged_zstd_wrapper() {
    require("zstd");
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let zst = zstd(&tar, &ts);
    let mut flipped = zst.clone();
    flipped[zst.len() / 2] ^= 0xff;
    for (what, bytes) in [
        ("zstd cut in half", &zst[..zst.len() / 2]),
        ("zstd cut before its checksum", &zst[..zst.len() - 4]),
        ("zstd with a flipped byte", &flipped[..]),
        ("zstd magic alone", &zst[..4]),
    ] {
        let err = refuse_stdin(bytes, what);
        assert_mentions(&err, "zstd", what);
        named_offset(&err, what);
        let err = refuse_file(bytes, "in.tar.zst", what);
        assert_mentions(&err, "zstd", what);
        named_offset(&err, what);
    }
}

#[test]
fn damaged_tar_inside_good_compression() {
    // The wrapper is fine, the tar inside is cut: offsets are in the decompressed stream.
    require("gzip");
    require("zstd");
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let cut = &tar[..C_DATA + 700];
    for (what, bytes) in [("gzip", gzip(cut, &ts)), ("zstd", zstd(cut, &ts))] {
        let err = refuse_stdin(&bytes, what);
        assert_offset(&err, C_DATA + 700, what);
        assert_member(&err, "c.bin", what);
        let err = refuse_file(&bytes, "cut.tar.z", what);
        assert_offset(&err, C_DATA + 700, what);
        assert_member(&err, "c.bin", what);
    }
}

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
    }
}

#[test]
fn allowed_exit_code_records_with_warning() {
    let ts = TestStore::new();
    let (dir, _) = fixture(&ts);
    let copy = ts.scratch("as-written.tar");
    // tee keeps exactly what tar wrote, to compare the export with.
    let script = format!(
        "tar --format=gnu -cf - -C '{}' a.bin c.bin sub/b.txt | tee '{}'; echo oops >&2; exit 3",
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
    assert!(
        err.contains("oops"),
        "the warning lacks the command's stderr:\n{err}"
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
