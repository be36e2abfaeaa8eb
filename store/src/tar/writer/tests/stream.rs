//! The stream of a tree with every kind of member, read back with the crate's own reader.

use super::tree::{long_odd_name, noise, varied_tree, MIB};
use super::{expected_names, no_opts, read_back, write, Read};
use crate::tar::pax;
use crate::tar::writer::header::{HARDLINK, REGULAR};
use crate::tar::writer::member_name;
use crate::tar::writer::output::RECORD;
use crate::tar::writer::sparse::sparse_map;

#[test]
fn same_tree_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    varied_tree(&src);
    let (first, report) = write(&src, &no_opts());
    let (second, _) = write(&src, &no_opts());
    assert!(first == second, "two runs over an unchanged tree differ");
    assert_eq!(first.len() % RECORD as usize, 0);
    assert_eq!(
        report.warnings,
        vec![format!(
            "{}: socket ignored",
            src.join("special/sock").display()
        )]
    );
}

#[test]
fn own_reader_parses_every_member() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let sparse = varied_tree(&src);
    let (stream, report) = write(&src, &no_opts());
    let members = read_back(&stream);
    assert_eq!(members.len() as u64, report.members);
    let names: Vec<Vec<u8>> = members.iter().map(Read::name).collect();
    assert_eq!(names, expected_names(&src), "members and their order");

    let by_name = |name: &[u8]| members.iter().find(|m| m.name() == name).unwrap();
    // Plain file contents come through verbatim.
    assert_eq!(by_name(b"./sizes/100k").payload, noise(100_000, 4));
    // Long names: split into prefix/name when possible, else a `path` record.
    let split = [&b"./long/"[..], &[b'p'; 90], b"/", &[b'q'; 60]].concat();
    assert_eq!(
        pax::lookup(&by_name(&split).pax, "path"),
        None,
        "split, not a record"
    );
    assert_eq!(
        by_name(&[b"./".as_slice(), &long_odd_name()].concat()).typeflag,
        REGULAR
    );
    // Hard links point at the first name, in sorted order.
    for link in [&b"./hard/b"[..], b"./hard2/c"] {
        let m = by_name(link);
        assert_eq!(
            (m.typeflag, m.link.as_slice()),
            (HARDLINK, &b"./hard/a"[..])
        );
        assert!(m.payload.is_empty());
    }
    assert_eq!(by_name(b"./links/long").link, b"t".repeat(300));
    // Sparse members: the GNU 1.0 map, then the data.
    let holey = by_name(&member_name(&sparse[0], false));
    assert_eq!(holey.path, b"./sparse/GNUSparseFile.0/holey");
    assert_eq!(
        pax::lookup(&holey.pax, "GNU.sparse.realsize"),
        Some(&b"4194304"[..])
    );
    assert!(
        holey.payload.starts_with(b"3\n1048576\n"),
        "{:?}",
        &holey.payload[..20]
    );
    let allholes = by_name(&member_name(&sparse[1], false));
    assert_eq!(allholes.payload, sparse_map(&[(MIB, 0)]));
    // Records: xattrs, big owners, times.
    let x = by_name(b"./xattr/file");
    assert_eq!(
        pax::lookup(&x.pax, "SCHILY.xattr.user.bin"),
        Some(&b"\0\n=\xff binary"[..])
    );
    assert_eq!(
        pax::lookup(&x.pax, "SCHILY.xattr.user.empty"),
        Some(&b""[..])
    );
    let big = by_name(b"./own/big");
    assert_eq!(pax::lookup(&big.pax, "uid"), Some(&b"3000000"[..]));
    let mtime = |name: &[u8]| pax::lookup(&by_name(name).pax, "mtime").map(<[u8]>::to_vec);
    assert_eq!(mtime(b"./time/ns"), Some(b"1600000000.123456789".to_vec()));
    assert_eq!(mtime(b"./time/neg"), Some(b"-1.5".to_vec()));
    assert_eq!(mtime(b"./time/old"), Some(b"-100000".to_vec()));
    assert_eq!(mtime(b"./time/zero"), None);
    assert_eq!(mtime(b"./time/future"), Some(b"8589934601".to_vec()));
    assert!(
        by_name(b"./one").pax.is_empty(),
        "no x header when nothing needs one"
    );
}
