//! Header conventions every reader follows and no field states: a v7 directory is a name
//! ending in `/`, a link, device or fifo carries no data whatever its size field says, a
//! symlink's mode
//! is 777, only the last of two local PAX headers applies, and a PAX owner Linux cannot hold
//! is ignored. Each against GNU tar's extraction.

use serde_json::Value;

use super::oracle::{assert_matches_extraction, lossy, ls_json};
use crate::common::*;
use crate::tar_bytes::{end_of_archive, member, set_checksum};
use crate::trees::set_mtime;

/// `bsdtar --format=v7` writes directories as regular-file members named `dir/`.
#[test]
fn v7_directories_are_names_ending_in_a_slash() {
    require("bsdtar");
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("a/b/f"), b"f\n");
    write_file(&root.join("a/g"), b"g\n");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("a/g", root.join("link")).unwrap();
    // v7 headers hold whole seconds.
    for p in ["a/b/f", "a/g", "a/b", "a", "empty", ""] {
        set_mtime(&root.join(p), 1_700_000_000);
    }
    let stream = tar_stream(&[
        "bsdtar",
        "--format",
        "v7",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    assert!(
        stream.windows(3).any(|w| w == b"a/\0"),
        "bsdtar wrote no v7 directory member"
    );
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot v7"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // bsdtar lists a directory's subdirectories before their contents, so GNU tar's
    // extraction leaves their mtimes at the time of extraction: take those from the tree.
    let (paths, listed) = assert_matches_extraction(&store, &id, &stream, "v7", Some(&root));
    let kind = |p: &str| -> &Value {
        let i = paths.iter().position(|q| q == p.as_bytes()).unwrap();
        &listed[i]["type"]
    };
    for dir in ["/a", "/a/b", "/empty"] {
        assert_eq!(kind(dir), "dir", "{dir}");
    }
    assert!(store.export(&id) == stream);
}

#[test]
fn hard_links_symlink_modes_and_local_pax_headers_read_as_gnu_tar_reads_them() {
    let store = TestStore::new();
    let mut stream = Vec::new();
    member(&mut stream, b"target", b'0', &[b'T'; 3000], b"", 0o644);
    // A hard link whose header gives its target's size, with no data after it.
    stream.extend_from_slice(&ustar_header(b"link", b'1', 3000, b"target", 0o644));
    member(&mut stream, b"after", b'0', b"after\n", b"", 0o644);
    // A symlink whose header says 644: Linux has it 777.
    member(&mut stream, b"sym", b'2', b"", b"target", 0o644);
    // Two local PAX headers: the second alone names and describes the member.
    pax(
        &mut stream,
        &[
            ("path", b"first"),
            ("uid", b"5"),
            ("SCHILY.xattr.user.one", b"1"),
        ],
    );
    pax(&mut stream, &[("path", b"second")]);
    member(&mut stream, b"placeholder", b'0', b"2\n", b"", 0o644);
    // A regular-file member named with a slash: a directory, and a file below it.
    member(&mut stream, b"dir/", b'0', b"", b"", 0o755);
    member(&mut stream, b"dir/f", b'0', b"in dir\n", b"", 0o644);
    end_of_archive(&mut stream);

    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (paths, listed) = assert_matches_extraction(&store, &id, &stream, "hand-made", None);
    let names: Vec<String> = paths.iter().map(|p| lossy(p)).collect();
    assert_eq!(
        names,
        ["/after", "/dir", "/dir/f", "/link", "/second", "/sym", "/target"]
    );
    let get = |p: &str| &listed[names.iter().position(|n| n == p).unwrap()];
    assert_eq!(get("/link")["nlink"], 2);
    assert_eq!(get("/sym")["mode"], 0o777);
    assert_eq!(get("/second")["uid"], 0);
    assert!(store.export(&id) == stream);
}

/// A symlink, device or fifo header with a size: the blocks after it are the next members, as
/// GNU tar extracts them and bsdtar and Go's archive/tar read them (only GNU tar's listing
/// skips them as data). The tree holds what every extractor makes, and the stream, read by
/// Go the same way, is still its own image layer.
#[test]
fn a_size_on_a_symlink_device_or_fifo_is_no_data() {
    for typeflag in [b'2', b'3', b'4', b'6'] {
        let store = TestStore::new();
        let mut next = Vec::new();
        member(
            &mut next,
            b"next",
            b'0',
            b"a member, not data\n",
            b"",
            0o644,
        );
        let mut stream = Vec::new();
        let link: &[u8] = if typeflag == b'2' { b"next" } else { b"" };
        let size = next.len() as u64;
        stream.extend_from_slice(&ustar_header(b"odd", typeflag, size, link, 0o644));
        stream.extend_from_slice(&next);
        end_of_archive(&mut stream);

        let out = store.run_stdin(&["snapshot", "-"], &stream);
        assert_success(&out, &["snapshot"]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let what = format!("typeflag {}", typeflag as char);
        let (paths, _) = assert_matches_extraction(&store, &id, &stream, &what, None);
        let names: Vec<String> = paths.iter().map(|p| lossy(p)).collect();
        assert_eq!(names, ["/next", "/odd"], "{what}");
        assert!(store.export(&id) == stream, "{what}: export differs");
        let shown: Value = serde_json::from_str(&store.ok(&["show", &id, "--json"])).unwrap();
        let layout = store.scratch("layout");
        store.ok(&[
            "export",
            &id,
            "--format",
            "oci",
            "-o",
            layout.to_str().unwrap(),
        ]);
        let layer = &crate::oci::oci_image(&layout, "latest").layers[0].digest;
        assert_eq!(
            *layer,
            format!("sha256:{}", shown["sha256"].as_str().unwrap()),
            "{what}: the stream is not its own layer"
        );
    }
}

/// GNU tar ignores a PAX uid or gid past 32 bits ("out of range") for the header's; so does
/// the tree, with a warning, rather than show an owner the mount would cut to 32 bits.
#[test]
fn a_pax_owner_past_32_bits_or_negative_is_ignored_for_the_headers() {
    let mut stream = Vec::new();
    pax(
        &mut stream,
        &[("uid", b"5000000000"), ("gid", b"4294967296")],
    );
    let (err, f) = owned_file(stream, *b"0000007\0", *b"0000010\0");
    assert!(
        err.contains("PAX uid=5000000000 is out of range") && err.contains("PAX gid=4294967296"),
        "{err}"
    );
    assert_eq!((&f["uid"], &f["gid"]), (&7.into(), &8.into()), "{f}");
    // Negative, which GNU tar reads (and ignores) the same way.
    let mut stream = Vec::new();
    pax(
        &mut stream,
        &[("uid", b"-1"), ("gid", b"-99999999999999999999")],
    );
    let (err, f) = owned_file(stream, *b"0000007\0", *b"0000010\0");
    assert!(
        err.contains("PAX uid=-1 is out of range")
            && err.contains("PAX gid=-99999999999999999999 is out of range"),
        "{err}"
    );
    assert_eq!((&f["uid"], &f["gid"]), (&7.into(), &8.into()), "{f}");
    // `-0` is 0, no warning: GNU tar reads it as 0 too.
    let mut stream = Vec::new();
    pax(&mut stream, &[("uid", b"-0"), ("gid", b"-000")]);
    let (err, f) = owned_file(stream, *b"0000007\0", *b"0000010\0");
    assert!(!err.contains("out of range"), "{err}");
    assert_eq!((&f["uid"], &f["gid"]), (&0.into(), &0.into()), "{f}");
}

/// A header's own owner past 32 bits (GNU base-256) is not used, as GNU tar does not use it
/// ("out of uid_t range"): the tree records 0, with a warning, where a mount would have cut
/// it to 32 bits (2^32 + 65534 shown as 65534, another user's file).
#[test]
fn a_header_owner_past_32_bits_or_negative_is_recorded_as_0() {
    let uid = [0x80, 0, 0, 1, 0, 0, 0xff, 0xfe];
    let (err, f) = owned_file(Vec::new(), uid, *b"0000010\0");
    assert!(
        err.contains("the header's uid 4295032830 is out of range") && !err.contains("gid"),
        "{err}"
    );
    assert_eq!((&f["uid"], &f["gid"]), (&0.into(), &8.into()), "{f}");
    // Negative (base-256 two's complement), which GNU tar warns about and goes on.
    let (err, f) = owned_file(Vec::new(), [0xff; 8], *b"0000010\0");
    assert!(err.contains("the header's uid -1 is out of range"), "{err}");
    assert_eq!((&f["uid"], &f["gid"]), (&0.into(), &8.into()), "{f}");
}

/// `stream` (extension headers, say) then a file `f` with these header uid and gid fields,
/// snapshot: the snapshot's warnings and `f` as `ls --json` lists it. Its export is the
/// stream.
fn owned_file(mut stream: Vec<u8>, uid: [u8; 8], gid: [u8; 8]) -> (String, serde_json::Value) {
    let store = TestStore::new();
    let mut h = ustar_header(b"f", b'0', 2, b"", 0o600);
    h[108..116].copy_from_slice(&uid);
    h[116..124].copy_from_slice(&gid);
    set_checksum(&mut h);
    stream.extend_from_slice(&h);
    stream.extend_from_slice(b"f\n");
    stream.resize(stream.len().next_multiple_of(512), 0);
    end_of_archive(&mut stream);
    let out = store.run_stdin(&["snapshot", "-"], &stream);
    assert_success(&out, &["snapshot"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(store.export(&id) == stream);
    let f = ls_json(&store, &[&id, "/f"])[0].clone();
    (stderr(&out), f)
}

/// Fields GNU tar does not read where they stand, read as it reads them (each found by
/// mutating real streams): a non-device's device numbers, which may hold anything; a
/// typeflag `N` (GNU's old list of names), a file of unknown type; and a header whose magic
/// is `ustar ` without GNU's version, a v7 header, whose prefix is no part of its name and
/// whose typeflag `S` is no sparse member.
#[test]
fn fields_gnu_tar_does_not_read_are_not_read() {
    let with = |name: &[u8], typeflag: u8, data: &[u8], patch: &dyn Fn(&mut [u8])| {
        let mut stream = Vec::new();
        member(&mut stream, name, typeflag, data, b"", 0o644);
        patch(&mut stream[..512]);
        set_checksum(&mut stream[..512]);
        member(&mut stream, b"after", b'0', b"after\n", b"", 0o644);
        end_of_archive(&mut stream);
        stream
    };
    let not_gnu = |h: &mut [u8]| h[257..265].copy_from_slice(b"ustar \x01\x02");
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "a file's device numbers",
            with(b"f", b'0', b"data\n", &|h| {
                h[329..337].copy_from_slice(b"zz\0\0\0\0\0\0")
            }),
            &["/after", "/f"],
        ),
        (
            "typeflag N",
            with(b"names", b'N', b"a file all the same\n", &|_| {}),
            &["/after", "/names"],
        ),
        (
            "a prefix in a v7 header",
            with(b"f", b'0', b"data\n", &|h| {
                not_gnu(h);
                h[345..348].copy_from_slice(b"dir");
            }),
            &["/after", "/f"],
        ),
        (
            "typeflag S in a v7 header",
            with(b"s", b'S', b"packed bytes, no holes\n", &|h| {
                not_gnu(h);
                // A map an old-GNU reader would expand: 300 KiB, holes but for the data.
                h[386..398].copy_from_slice(b"00000000000\0");
                h[398..410].copy_from_slice(b"00000000027\0");
                h[483..495].copy_from_slice(b"00001130000\0");
            }),
            &["/after", "/s"],
        ),
    ];
    for (what, stream, paths) in cases {
        let store = TestStore::new();
        let out = store.run_stdin(&["snapshot", "-"], &stream);
        assert_success(&out, &["snapshot", what]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (listed, _) = assert_matches_extraction(&store, &id, &stream, what, None);
        let names: Vec<String> = listed.iter().map(|p| lossy(p)).collect();
        assert_eq!(names, paths, "{what}");
        assert!(store.export(&id) == stream, "{what}: export differs");
    }
}
