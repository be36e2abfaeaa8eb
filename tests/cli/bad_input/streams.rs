//! Bad tar streams: cut, corrupted and malformed at known offsets of a real GNU tar stream.

use super::*;

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
    // The error names the header block that could not be read whole, and the member before it.
    for (cut, header, before) in [
        (C_HDR + 100, C_HDR, Some("a.bin")),
        (C_HDR + 511, C_HDR, Some("a.bin")),
        (B_HDR + 1, B_HDR, Some("c.bin")),
        (100, 0, None),
    ] {
        let what = format!("cut at {cut} (inside the header at {header})");
        let err = refuse_stdin(&tar[..cut], &what);
        assert_offset(&err, header, &what);
        assert_after(&err, before, &what);
    }
}

#[test]
fn truncated_after_member_without_end_marker() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // Right after the last member (data and padding), no zero blocks.
    let err = refuse_stdin(&tar[..END], "no end-of-archive blocks");
    assert_offset(&err, END, "no end-of-archive blocks");
    assert_after(&err, Some("sub/b.txt"), "no end-of-archive blocks");
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
    for (header, byte, before) in [
        (C_HDR, 20, Some("a.bin")),
        (C_HDR, 102, Some("a.bin")),
        (B_HDR, 3, Some("c.bin")),
        (A_HDR, 60, None),
    ] {
        let mut s = tar.clone();
        s[header + byte] ^= 0xff;
        let what = format!("byte {} flipped (header at {header})", header + byte);
        let err = refuse_stdin(&s, &what);
        assert_offset(&err, header, &what);
        assert_mentions(&err, "checksum", &what);
        assert_after(&err, before, &what);
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

/// A PAX number GNU tar cannot read ("Malformed extended header: invalid gid=-5x") fails the
/// member, named with its offset, and nothing is recorded; a well-formed one is read.
/// A PAX 0.0 sparse map's offset and numbytes records come in pairs, in that order, no more
/// of them than numblocks says: one out of its pair is refused as GNU tar refuses it, where
/// cellar would otherwise keep a map with a segment missing (a file of the wrong bytes).
#[test]
fn pax_sparse_records_out_of_their_pairs() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let size = [
        pax_record("GNU.sparse.size", "100"),
        pax_record("GNU.sparse.numblocks", "1"),
    ]
    .concat();
    let offset = |v| pax_record("GNU.sparse.offset", v);
    let numbytes = |v| pax_record("GNU.sparse.numbytes", v);
    for (records, record, what) in [
        (
            [numbytes("10"), offset("50")].concat(),
            "GNU.sparse.numbytes=10",
            "out of its offset/numbytes pair",
        ),
        (
            offset("50"),
            "GNU.sparse.offset=50",
            "has no GNU.sparse.numbytes",
        ),
        (numbytes("10"), "GNU.sparse.numbytes=10", "out of its pair"),
        (
            [offset("0"), numbytes("5"), offset("50"), numbytes("5")].concat(),
            "GNU.sparse.numbytes=5",
            "past the GNU.sparse.numblocks=1",
        ),
    ] {
        let stream = with_pax(&[size.clone(), records].concat(), &tar);
        let err = refuse_stdin(&stream, what);
        assert_offset(&err, 1024, what);
        assert_member(&err, "a.bin", what);
        assert_mentions(&err, &format!("malformed PAX sparse map: {record}"), what);
    }
}

#[test]
fn malformed_pax_numbers() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    for (key, value) in [
        ("uid", "abc"),
        ("gid", "-5x"),
        ("mtime", "garbage"),
        ("mtime", "x.y"),
        ("mtime", ".5"),
        ("GNU.sparse.size", "abcd"),
        ("GNU.sparse.map", "x,y5728,0"),
        ("GNU.sparse.map", "0,10,20"),
    ] {
        let what = format!("PAX {key}={value}");
        let err = refuse_stdin(&with_pax(&pax_record(key, value), &tar), &what);
        assert_offset(&err, 1024, &what);
        assert_member(&err, "a.bin", &what);
        assert_mentions(&err, &format!("malformed PAX {key} record"), &what);
    }
    // What GNU tar reads is read: a time's start (Python's tarfile writes a tiny float as
    // 1e-05, which is 1), and times cellar does not read are not looked at.
    let store = TestStore::new();
    let good = [
        pax_record("uid", "7"),
        pax_record("mtime", "1e-05"),
        pax_record("atime", "1.2.3"),
    ]
    .concat();
    let id = store.snapshot_bytes(&with_pax(&good, &tar), "vm");
    let listed = store.json(&["ls", &id, "/a.bin", "--json"]);
    assert_eq!(listed[0]["uid"], 7, "{listed}");
    assert_eq!(listed[0]["mtime"], "1970-01-01T00:00:01Z", "{listed}");
    // GNU tar's range of times is an i64's, its least value included.
    let least = pax_record("mtime", "-9223372036854775808");
    store.snapshot_bytes(&with_pax(&least, &tar), "vm");
    for past in ["9223372036854775808", "-9223372036854775808.5"] {
        let what = format!("PAX mtime={past}");
        let err = refuse_stdin(&with_pax(&pax_record("mtime", past), &tar), &what);
        assert_mentions(&err, "malformed PAX mtime record", &what);
    }
}

/// A sparse file larger than an off_t holds (GNU tar: "out of range") could be neither
/// stat'ed through a mount nor restored: the stream is refused, naming the member.
#[test]
fn sparse_real_size_past_2_63() {
    let records = [
        pax_record("GNU.sparse.major", "1"),
        pax_record("GNU.sparse.minor", "0"),
        pax_record("GNU.sparse.name", "sp"),
        pax_record("GNU.sparse.realsize", "9223372036854775808"),
    ]
    .concat();
    let mut map = b"1\n9223372036854775807\n0\n".to_vec();
    map.resize(512, 0);
    let mut member = ustar_header(b"GNUSparseFile.0/sp", 512, b'0');
    member.extend_from_slice(&map);
    member.extend_from_slice(&[0; 1024]);
    let stream = with_pax(&records, &member);
    let err = refuse_stdin(&stream, "realsize 2^63");
    assert_mentions(&err, "sparse real size out of range", "realsize 2^63");
    // Named as the file it stands for, not by the placeholder in its header.
    assert_member(&err, "sp", "realsize 2^63");
}

#[test]
fn empty_stream() {
    let err = refuse_stdin(b"", "empty stdin");
    assert_offset(&err, 0, "empty stdin");
    assert_mentions(&err, "the stream is empty", "empty stdin");
    let err = refuse_file(b"", "empty.tar", "empty file");
    assert_offset(&err, 0, "empty file");
    assert_mentions(&err, "the stream is empty", "empty file");
}

/// Two archives joined end to end (`cat a.tar b.tar`), or a lone zero block before more
/// members: GNU tar stops at the first marker (and warns), and so does the tree; the stream
/// is kept whole, and the snapshot warns that the members after the marker are not in it.
#[test]
fn members_after_the_end_of_archive_marker_are_warned_of() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let joined = [&tar[..], &tar[..]].concat();
    let out = ts.run_stdin(&["snapshot", "--name", "joined", "--json", "-"], &joined);
    assert_success(&out, &["snapshot", "-"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "goes on after its end-of-archive marker at byte {END} (byte {STREAM_LEN} is not zero"
        )),
        "{warnings}"
    );
    assert_eq!(report["members"], 3, "the first archive's members");
    assert_eq!(ts.export("joined"), joined, "the stream comes back whole");

    // A stream whose trailer is all zeros, however long, is not warned of.
    let out = ts.run_stdin(&["snapshot", "--name", "one", "--json", "-"], &tar);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["warnings"], serde_json::json!([]));
}

/// A source that goes on past its archive's end (`/dev/zero`, a whole disk) is refused once
/// 64 MiB follow the end-of-archive marker, rather than read without end; a trailer of
/// padding as `tar -b 2048` writes (1 MiB) is kept.
#[test]
fn a_source_that_does_not_end_is_refused_past_the_trailer_bound() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    // The trailer is what follows the marker's block: 64 MiB of it are kept, one more byte
    // is refused there.
    let trailer_at = END + 512;
    let mut long = tar.clone();
    long.resize(trailer_at + (64 << 20), 0);
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&long, "long");
    assert!(ts.export(&id) == long, "a 64 MiB trailer comes back");
    long.push(0);
    let err = refuse_stdin(&long, "64 MiB and a byte after the marker");
    assert_offset(
        &err,
        trailer_at + (64 << 20),
        "64 MiB and a byte after the marker",
    );
    // The marker names the place; the last member has nothing to do with it.
    assert_after(&err, None, "64 MiB and a byte after the marker");
    assert_mentions(&err, "does not end", "64 MiB and a byte after the marker");

    let ts = TestStore::new();
    let out = ts.run(&["snapshot", "/dev/zero"]);
    let err = refused(&ts, &out, "/dev/zero");
    assert_offset(&err, 512 + (64 << 20), "/dev/zero");

    let mut padded = tar;
    padded.resize(1 << 20, 0);
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&padded, "padded");
    assert_eq!(
        ts.export(&id),
        padded,
        "a 1 MiB record's padding comes back"
    );
}

/// A hard link copies its file's node, sparse map and all: a file of a million empty
/// segments (4 MiB of PAX records) and a few 512-byte link headers would cost gigabytes to
/// build, so the tree's segments are bounded in all (2^22), and such a stream is refused.
#[test]
fn hard_links_to_a_vast_sparse_map_are_refused() {
    let pairs = 1 << 20;
    let map = vec!["0,0"; pairs].join(",");
    let count = pairs.to_string();
    let mut stream = Vec::new();
    crate::common::pax(
        &mut stream,
        &[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.numblocks", count.as_bytes()),
            ("GNU.sparse.map", map.as_bytes()),
            ("GNU.sparse.realsize", b"0"),
            ("GNU.sparse.name", b"f"),
        ],
    );
    crate::common::member(&mut stream, b"GNUSparseFile.0/f", b'0', b"", b"", 0o644);
    for i in 0..4 {
        let name = format!("link{i}");
        crate::common::member(&mut stream, name.as_bytes(), b'1', b"", b"f", 0o644);
    }
    stream.extend_from_slice(&[0; 1024]);
    let err = refuse_stdin(&stream, "links to a vast sparse map");
    assert_mentions(&err, "data segments", "links to a vast sparse map");
    assert_mentions(&err, "link3", "links to a vast sparse map");
}
