//! Header and record encoding details.

use std::fs;

use super::tree::T0;
use crate::tar::header::{self, BLOCK};
use crate::tar::pax::{self, PaxRecord};
use crate::tar::writer::header::{
    pax_header_name, pax_record, pax_time, split_name, Entry, Timestamp, CHAR_DEVICE, MAX_OCTAL_11,
    REGULAR,
};
use crate::tar::writer::sparse::sparse_ustar_name;

#[test]
fn pax_record_lengths_count_themselves() {
    for value_len in 0..1100 {
        let value = vec![b'v'; value_len];
        let record = pax_record(b"path", &value);
        let parsed = pax::parse_records(&record, 0).expect("well-formed");
        assert_eq!(
            parsed,
            vec![PaxRecord {
                key: b"path".to_vec(),
                value
            }]
        );
    }
    assert_eq!(pax_record(b"a", b"1234"), b"9 a=1234\n");
    // 9 bytes of body: a 1-digit length would make 10, which has 2 digits: 11.
    assert_eq!(pax_record(b"a", b"12345"), b"11 a=12345\n");
    // Bodies of 97, 98 and 99 bytes: 99 fits in 2 digits, 100 and 101 take 3.
    assert_eq!(pax_record(b"a", &[b'v'; 93]).len(), 99);
    assert_eq!(pax_record(b"a", &[b'v'; 94]).len(), 101);
    assert_eq!(pax_record(b"a", &[b'v'; 95]).len(), 102);
}

#[test]
fn pax_times() {
    let t = |secs, nsec| pax_time(Timestamp { secs, nsec });
    assert_eq!(t(0, 0), "0");
    assert_eq!(t(T0, 100_000_000), "1600000000.1");
    assert_eq!(t(T0, 1), "1600000000.000000001");
    assert_eq!(t(-2, 500_000_000), "-1.5");
    assert_eq!(t(-1, 999_999_999), "-0.000000001");
    assert_eq!(t(-7, 0), "-7");
    assert_eq!(t(i64::MIN, 1), format!("-{}.999999999", i64::MAX));
}

#[test]
fn ustar_name_splits() {
    assert_eq!(split_name(b"./a"), Some((&b""[..], &b"./a"[..])));
    let exactly_100 = [b'n'; 100];
    assert_eq!(split_name(&exactly_100), Some((&b""[..], &exactly_100[..])));
    let name = [&b"./"[..], &[b'p'; 120], b"/", &[b'n'; 100]].concat();
    let (prefix, rest) = split_name(&name).unwrap();
    assert_eq!((prefix.len(), rest.len()), (122, 100));
    // A directory's trailing slash cannot be the split point.
    let dir = [&b"./"[..], &[b'd'; 120], b"/"].concat();
    assert_eq!(split_name(&dir), None);
    let dir = [&b"./"[..], &[b'p'; 60], b"/", &[b'd'; 60], b"/"].concat();
    assert_eq!(
        split_name(&dir).map(|(p, n)| (p.len(), n.len())),
        Some((62, 61))
    );
    let too_long_prefix = [&b"./"[..], &[b'p'; 160], b"/n"].concat();
    assert_eq!(split_name(&too_long_prefix), None);
    let too_long_name = [&b"./"[..], &[b'n'; 101]].concat();
    assert_eq!(split_name(&too_long_name), None);
}

#[test]
fn helper_header_names() {
    assert_eq!(pax_header_name(b"./"), b"./PaxHeaders/.");
    assert_eq!(pax_header_name(b"./a/bc/"), b"./PaxHeaders/bc");
    assert_eq!(pax_header_name(b"./a/f"), b"./PaxHeaders/f");
    assert_eq!(pax_header_name(&[b'x'; 300]).len(), 100);
    assert_eq!(sparse_ustar_name(b"./f"), b"./GNUSparseFile.0/f");
    assert_eq!(sparse_ustar_name(b"./a/b/f"), b"./a/b/GNUSparseFile.0/f");
    assert_eq!(
        sparse_ustar_name(&[&b"./"[..], &[b'x'; 200]].concat()).len(),
        100
    );
}

#[test]
fn header_blocks_are_valid_ustar() {
    let tmp = tempfile::tempdir().unwrap();
    let md = fs::metadata(tmp.path()).unwrap();
    let mut e = Entry::new([&b"./"[..], &[b'n'; 300]].concat(), REGULAR, &md);
    e.uid = 1 << 40;
    e.size = MAX_OCTAL_11 + 1;
    e.mtime = Timestamp { secs: -1, nsec: 0 };
    let blocks = e.encode().unwrap();
    assert_eq!(blocks.len() % BLOCK, 0);
    let last: &[u8; BLOCK] = blocks[blocks.len() - BLOCK..].try_into().unwrap();
    let h = header::Header(last);
    h.checksum_ok().unwrap();
    assert_eq!(h.dialect(), header::Dialect::Ustar);
    assert_eq!((h.uid(), h.size(), h.mtime()), (Ok(0), Ok(0), Ok(0)));
    let x: &[u8; BLOCK] = blocks[..BLOCK].try_into().unwrap();
    header::Header(x).checksum_ok().unwrap();
    let data = &blocks[BLOCK..blocks.len() - BLOCK];
    let records = pax::parse_records(data, 0).unwrap();
    let keys: Vec<&[u8]> = records.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(
        keys,
        [&b"mtime"[..], b"path", b"size", b"uid"],
        "sorted by key"
    );
    assert_eq!(pax::lookup(&records, "size"), Some(&b"8589934592"[..]));
    let mut dev = Entry::new(b"./d".to_vec(), CHAR_DEVICE, &md);
    dev.dev = (1 << 21, 0);
    assert!(dev.encode().is_err());
}
