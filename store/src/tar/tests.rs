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
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
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
            let data: &[u8] = if *typeflag == b'5' { &[] } else { data };
            stream.extend_from_slice(&header(name.as_bytes(), data.len() as u64, *typeflag, *mtime));
            stream.extend_from_slice(data);
            stream.resize(stream.len().next_multiple_of(BLOCK), 0);
            expected.push((name.clone(), data.len() as u64, *mtime));
        }
        stream.extend_from_slice(&[0u8; 2 * BLOCK]);
        stream.extend_from_slice(&trailer);

        let mut r = TarReader::new(IoSource(&stream[..]));
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
        let mut r = TarReader::new(IoSource(&stream[..]));
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
