//! Property tests for the header-level reader: every well-formed stream splits into heads and
//! payloads that replay it exactly, numbers decode as encoded, and no input makes it panic.

use proptest::prelude::*;

use super::header::{parse_number, BLOCK};
use super::{IoSource, TarReader};
use crate::error::Error;

/// A ustar header with a correct checksum.
fn header(name: &[u8], size: u64, typeflag: u8, mtime: i64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0001750\0");
    h[116..124].copy_from_slice(b"0001750\0");
    put_number(&mut h[124..136], size as i64);
    put_number(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

/// Recompute a header's checksum (the field counted as spaces).
fn set_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Octal when it fits, else GNU base-256 (two's complement for negatives).
fn put_number(field: &mut [u8], v: i64) {
    let digits = field.len() - 1;
    if v >= 0 && (v as u64) < 8u64.pow(digits as u32) {
        field.copy_from_slice(format!("{v:0digits$o}\0").as_bytes());
    } else {
        let bytes = v.to_be_bytes();
        let fill = if v < 0 { 0xff } else { 0 };
        field.fill(fill);
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

fn members() -> impl Strategy<Value = Vec<(String, Vec<u8>, u8, i64)>> {
    proptest::collection::vec(
        (
            "[a-z]{1,20}(/[a-z0-9._-]{1,20}){0,3}",
            proptest::collection::vec(any::<u8>(), 0..3000),
            prop_oneof![Just(b'0'), Just(b'5'), Just(b'2'), Just(b'6')],
            any::<i64>(),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn streams_split_and_replay_exactly(members in members(), trailer in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (name, data, typeflag, mtime) in &members {
            // Only regular files carry data (a size on the others is not followed by any).
            let data: &[u8] = if *typeflag == b'0' { data } else { &[] };
            stream.extend_from_slice(&header(name.as_bytes(), data.len() as u64, *typeflag, *mtime));
            stream.extend_from_slice(data);
            stream.resize(stream.len().next_multiple_of(BLOCK), 0);
            expected.push((name.clone(), data.len() as u64, *mtime));
        }
        stream.extend_from_slice(&[0u8; 2 * BLOCK]);
        stream.extend_from_slice(&trailer);

        let mut r = TarReader::new(IoSource::new(&stream[..]));
        let mut replay = Vec::new();
        let mut seen = Vec::new();
        loop {
            match r.next_member().unwrap() {
                Ok(m) => {
                    replay.extend_from_slice(&m.head);
                    let mut buf = vec![0u8; m.payload_len as usize];
                    let mut got = 0;
                    while got < buf.len() {
                        got += r.read_payload(&mut buf[got..]).unwrap();
                    }
                    replay.extend_from_slice(&buf);
                    seen.push((String::from_utf8(m.path).unwrap(), m.payload_len, m.mtime));
                }
                Err(end) => {
                    replay.extend_from_slice(&end.head);
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = r.read_rest(&mut buf).unwrap();
                        if n == 0 { break; }
                        replay.extend_from_slice(&buf[..n]);
                    }
                    break;
                }
            }
        }
        prop_assert_eq!(seen, expected);
        prop_assert!(replay == stream, "replay differs");
    }

    #[test]
    fn numbers_decode_as_encoded(v in any::<i64>()) {
        let mut field = [0u8; 12];
        put_number(&mut field, v);
        prop_assert_eq!(parse_number(&field), Some(v));
    }

    /// Garbage and damaged streams give errors with offsets, never panics.
    #[test]
    fn no_input_panics(prefix in members(), noise in proptest::collection::vec(any::<u8>(), 0..4000), cut in 0usize..6000) {
        let mut stream = Vec::new();
        for (name, data, _, mtime) in &prefix {
            stream.extend_from_slice(&header(name.as_bytes(), data.len() as u64, b'0', *mtime));
            stream.extend_from_slice(data);
            stream.resize(stream.len().next_multiple_of(BLOCK), 0);
        }
        stream.extend_from_slice(&noise);
        stream.truncate(cut.min(stream.len()));
        let mut r = TarReader::new(IoSource::new(&stream[..]));
        let mut buf = [0u8; 4096];
        let outcome: Result<(), Error> = (|| loop {
            match r.next_member()? {
                Ok(_) => while r.read_payload(&mut buf)? > 0 {},
                Err(_) => {
                    while r.read_rest(&mut buf)? > 0 {}
                    return Ok(());
                }
            }
        })();
        if let Err(e) = outcome {
            prop_assert!(matches!(e, Error::BadTar { .. }), "{e}");
        }
    }
}

/// A member: its header, then its data padded to a block.
fn push_member(stream: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
    stream.extend_from_slice(&header(name, data.len() as u64, typeflag, 0));
    stream.extend_from_slice(data);
    stream.resize(stream.len().next_multiple_of(BLOCK), 0);
}

/// PAX records as a header's data.
fn records(recs: &[(&str, &str)]) -> Vec<u8> {
    recs.iter()
        .flat_map(|(k, v)| {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits.
            let digits = (body.len() + 1).to_string().len();
            let len = body.len() + (body.len() + digits).to_string().len();
            format!("{len}{body}").into_bytes()
        })
        .collect()
}

/// The last global header's records that apply come first in every later member's `pax`, its
/// own local records after them (so they win a lookup); only the last owner and time record
/// of each key is applied (not layout, name, xattr, comment or other records); a new global
/// header replaces the last.
#[test]
fn global_records_apply_to_later_members() {
    use super::pax::lookup;
    let mut stream = Vec::new();
    push_member(&mut stream, b"before", b'0', b"1");
    let global = records(&[
        ("mtime", "1000000000"),
        ("uid", "1"),
        ("uid", "4242"),
        ("LIBARCHIVE.creationtime", "5"),
        ("size", "99"),
        ("path", "xx"),
        ("comment", "cc"),
        ("SCHILY.xattr.user.g", "gv"),
    ]);
    push_member(&mut stream, b"g", b'g', &global);
    push_member(&mut stream, b"a", b'0', b"22");
    push_member(&mut stream, b"x", b'x', &records(&[("uid", "7")]));
    push_member(&mut stream, b"b", b'0', b"333");
    push_member(&mut stream, b"g", b'g', &records(&[("gid", "55")]));
    push_member(&mut stream, b"c", b'0', b"4444");
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);

    let mut r = TarReader::new(IoSource::new(&stream[..]));
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(m) = r.next_member().unwrap() {
        let mut data = Vec::new();
        loop {
            let n = r.read_payload(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        seen.push((m, data));
    }
    let names: Vec<&[u8]> = seen.iter().map(|(m, _)| &m.path[..]).collect();
    assert_eq!(names, [&b"before"[..], b"a", b"b", b"c"], "no global path");
    let lens: Vec<usize> = seen.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, [1, 2, 3, 4], "no global size");
    let (before, a, b, c) = (&seen[0].0, &seen[1].0, &seen[2].0, &seen[3].0);
    assert!(before.pax.is_empty() && before.global_records == 0);
    assert_eq!(
        a.global_records, 2,
        "the last uid and mtime only: {:?}",
        a.pax
    );
    assert_eq!(lookup(&a.pax, "mtime"), Some(&b"1000000000"[..]));
    assert_eq!(lookup(&a.pax, "uid"), Some(&b"4242"[..]));
    assert_eq!(lookup(&a.pax, "SCHILY.xattr.user.g"), None);
    assert_eq!(lookup(&a.pax, "comment"), None);
    assert_eq!(
        lookup(&b.pax, "uid"),
        Some(&b"7"[..]),
        "the local record wins"
    );
    assert_eq!(lookup(&b.pax, "mtime"), Some(&b"1000000000"[..]));
    assert_eq!(c.global_records, 1);
    assert_eq!(
        lookup(&c.pax, "uid"),
        None,
        "the second global header replaced the first"
    );
    assert_eq!(lookup(&c.pax, "gid"), Some(&b"55"[..]));
}

/// Reads as `head`, then `block` `times` times, then zeros without end: a large stream in
/// no memory.
struct Repeated {
    head: Vec<u8>,
    block: [u8; BLOCK],
    times: usize,
    at: usize,
}

impl std::io::Read for Repeated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let repeated_end = self.head.len() + self.times * BLOCK;
        let n = if self.at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.at);
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            n
        } else if self.at < repeated_end {
            let off = (self.at - self.head.len()) % BLOCK;
            let n = buf.len().min(BLOCK - off);
            buf[..n].copy_from_slice(&self.block[off..off + n]);
            n
        } else {
            buf.fill(0);
            buf.len()
        };
        self.at += n;
        Ok(n)
    }
}

fn first_member_error(src: impl std::io::Read) -> (u64, String) {
    let mut r = TarReader::new(IoSource::new(src));
    match r.next_member() {
        Err(Error::BadTar { offset, what, .. }) => (offset, what),
        Err(e) => panic!("expected a bad stream, got {e}"),
        Ok(m) => panic!(
            "expected a bad stream, got {:?}",
            m.ok().map(|m| m.display_path())
        ),
    }
}

/// An old GNU sparse member whose extension blocks hold no entry and each say another follows
/// is cut off at the header limit. Its headers were read into memory without end, and a run
/// of them ended after 4 GiB was stored as a record whose 32-bit length wrapped.
#[test]
fn long_runs_of_sparse_extension_blocks_are_refused_at_the_header_limit() {
    let mut h = header(b"sparse", 0, b'S', 0);
    h[257..265].copy_from_slice(b"ustar  \0"); // a GNU header, where `S` is sparse
    h[482] = 1; // the map continues in extension blocks
    set_checksum(&mut h);
    let mut block = [0u8; BLOCK];
    block[504] = 1; // another follows
                    // 80 MiB of them, then a block that ends the map.
    let (offset, what) = first_member_error(Repeated {
        head: h.to_vec(),
        block,
        times: 80 << 11,
        at: 0,
    });
    assert!(what.contains("MiB of extension headers"), "{what}");
    assert_eq!(offset, 64 << 20, "{what}");
}

/// A PAX header of more records than any member has is refused where the record past the
/// limit starts: records cost far more memory than their bytes in the stream.
#[test]
fn pax_headers_of_too_many_records_are_refused() {
    let recs = vec![("a", "b"); super::pax::MAX_RECORDS + 1];
    let data = records(&recs);
    let mut stream = Vec::new();
    push_member(&mut stream, b"x", b'x', &data);
    push_member(&mut stream, b"f", b'0', b"1");
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);
    let (offset, what) = first_member_error(&stream[..]);
    assert!(what.contains("more than 65536 PAX records"), "{what}");
    assert_eq!(offset, (BLOCK + 6 * super::pax::MAX_RECORDS) as u64);

    // Split over two headers of one member: only the last applies, so neither is too many.
    let half = records(&recs[..recs.len() / 2 + 1]);
    let mut stream = Vec::new();
    push_member(&mut stream, b"x", b'x', &half);
    push_member(&mut stream, b"x", b'x', &half);
    push_member(&mut stream, b"f", b'0', b"1");
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);
    let m = first_member(&stream);
    assert_eq!(m.pax.len(), recs.len() / 2 + 1);
}

fn first_member(stream: &[u8]) -> super::Member {
    match TarReader::new(IoSource::new(stream)).next_member().unwrap() {
        Ok(m) => m,
        Err(_) => panic!("no member"),
    }
}

/// Of two local PAX headers before one member, only the last applies (GNU tar and bsdtar):
/// no record of the first leaks into the member.
#[test]
fn of_two_local_pax_headers_the_last_applies() {
    let mut stream = Vec::new();
    let first = records(&[("path", "p1"), ("uid", "5"), ("SCHILY.xattr.user.one", "1")]);
    push_member(&mut stream, b"x", b'x', &first);
    push_member(&mut stream, b"x", b'x', &records(&[("path", "p2")]));
    push_member(&mut stream, b"f", b'0', b"1");
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);
    let m = first_member(&stream);
    assert_eq!(m.path, b"p2");
    assert_eq!(super::pax::lookup(&m.pax, "uid"), None);
    assert_eq!(super::pax::lookup(&m.pax, "SCHILY.xattr.user.one"), None);
}

/// A hard link's header may carry its target's size with no data after it (GNU tar: "links 0
/// size on tape"): the next header follows at once, and the stream still replays exactly.
#[test]
fn a_hard_link_carries_no_data_whatever_its_size_field_says() {
    let mut stream = Vec::new();
    push_member(&mut stream, b"target", b'0', &[b'X'; 3000]);
    let mut link = header(b"link", 3000, b'1', 0);
    link[157..163].copy_from_slice(b"target");
    set_checksum(&mut link);
    stream.extend_from_slice(&link);
    push_member(&mut stream, b"after", b'0', b"after");
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);
    let mut r = TarReader::new(IoSource::new(&stream[..]));
    let mut seen = Vec::new();
    let mut replay = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.next_member().unwrap() {
            Ok(m) => {
                replay.extend_from_slice(&m.head);
                seen.push((m.path.clone(), m.payload_len));
                loop {
                    let n = r.read_payload(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    replay.extend_from_slice(&buf[..n]);
                }
            }
            Err(end) => {
                replay.extend_from_slice(&end.head);
                loop {
                    let n = r.read_rest(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    replay.extend_from_slice(&buf[..n]);
                }
                break;
            }
        }
    }
    assert!(replay == stream, "the stream replays exactly");
    assert_eq!(
        seen,
        [
            (b"target".to_vec(), 3000),
            (b"link".to_vec(), 0),
            (b"after".to_vec(), 5)
        ]
    );
}

/// Checksums summed as unsigned bytes (POSIX) and as signed chars (old writers) are both
/// taken; one that is neither is refused at the header's offset, naming both values.
#[test]
fn header_checksums_are_summed_unsigned_or_signed() {
    let mut h = header("caf\u{e9}-\u{fc}ber".as_bytes(), 0, b'0', 0);
    let read = |h: &[u8; BLOCK]| {
        let mut stream = h.to_vec();
        stream.extend_from_slice(&[0u8; 2 * BLOCK]);
        match TarReader::new(IoSource::new(&stream[..])).next_member() {
            Ok(Ok(m)) => m.path.clone(),
            Ok(Err(_)) => panic!("no member"),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(read(&h), "caf\u{e9}-\u{fc}ber".as_bytes());
    // The same header, its checksum as a signed-char writer sums it (bytes over 0x7f count
    // as negative): four such bytes here.
    h[148..156].copy_from_slice(b"        ");
    let signed: i64 = h.iter().map(|&b| b as i8 as i64).sum();
    h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    assert_eq!(read(&h), "caf\u{e9}-\u{fc}ber".as_bytes());
    h[148..156].copy_from_slice(format!("{:06o}\0 ", signed + 1).as_bytes());
    let mut stream = h.to_vec();
    stream.extend_from_slice(&[0u8; 2 * BLOCK]);
    let (offset, what) = first_member_error(&stream[..]);
    assert_eq!(offset, 0, "{what}");
    assert!(what.contains("header checksum mismatch"), "{what}");
}

/// Base-256 is marked by a first byte of 0x80 or 0xff, as GNU tar reads it; another byte with
/// its high bit set (a flipped octal digit, say) is no number.
#[test]
fn base_256_takes_only_gnu_marks() {
    let mut field = [0u8; 8];
    field[7] = 5;
    for (first, want) in [(0x80, Some(5)), (0xff, Some(-(1i64 << 56) + 5))] {
        field[0] = first;
        assert_eq!(parse_number(&field), want, "{first:#x}");
    }
    for first in [0x81, 0xbf, 0xc0, 0xfe] {
        field[0] = first;
        assert_eq!(parse_number(&field), None, "{first:#x}");
    }
}
