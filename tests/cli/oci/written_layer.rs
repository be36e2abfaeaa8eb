//! Streams that layer extractors would read otherwise than cellar and GNU tar do get a layer
//! written anew from the tree, which umoci unpacks to what GNU tar extracts.

use std::path::PathBuf;

use super::export::export_oci;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

/// Snapshot `stream`, export its image, require a written layer (not the stream itself), and
/// return the snapshot and where umoci unpacked the image.
fn written_layer_unpacked(store: &TestStore, stream: &[u8], what: &str) -> (String, PathBuf) {
    let id = store.snapshot_bytes(stream, "odd");
    let layout = store.scratch("layout");
    export_oci(store, &id, &layout, &[]);
    let img = oci_image(&layout, "latest");
    assert_ne!(
        img.layers[0].digest,
        format!("sha256:{}", sha256_hex(stream)),
        "{what}: the stream went in as its own layer"
    );
    let rootfs = umoci_unpack(&layout, "latest", &store.scratch("bundle"));
    (id, rootfs)
}

/// The stream's image has a written layer, which umoci unpacks to the tree GNU tar extracts
/// from the stream.
fn assert_written_layer_unpacks(store: &TestStore, stream: &[u8]) {
    let extraction = store.scratch("extracted");
    crate::browse::oracle::extract(store, stream, &extraction);
    let (_, rootfs) = written_layer_unpacked(store, stream, "");
    assert_same_tree(&extraction, &rootfs);
}

/// The same, for streams GNU tar extracts otherwise than cellar reads them (odd sparse
/// records): umoci unpacks the image to the tree `cellar restore` writes, whatever it is.
fn assert_written_layer_unpacks_as_restored(store: &TestStore, stream: &[u8], what: &str) {
    let (id, rootfs) = written_layer_unpacked(store, stream, what);
    let restored = store.scratch("restored");
    store.ok(&["restore", &id, restored.to_str().unwrap()]);
    assert_same_tree_with(&restored, &rootfs, Compare::default(), what);
}

/// Old GNU sparse members (typeflag `S`) are not read by every extractor (umoci refuses
/// them), so their stream gets a written layer, with the files as PAX sparse 1.0.
#[test]
fn old_gnu_sparse_members_give_a_written_layer() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    crate::trees::sparse_file(&root.join("disk.img"), 8 << 20, &[0, 4 << 20]);
    let stream = tar_stream(&[
        "tar",
        "--sparse",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    assert_written_layer_unpacks(&store, &stream);
}

/// A stream's start: its root directory, so that both extractions take its times from it.
fn root_dir() -> Vec<u8> {
    let mut stream = Vec::new();
    member(&mut stream, b"./", b'5', b"", b"", 0o755);
    stream
}

/// GNU tar's incremental dumps (`-g`: directories as dumpdirs, typeflag `D`) and volume labels
/// (`-V`: typeflag `V`): umoci refuses both types.
#[test]
fn gnu_dumpdirs_and_volume_labels_give_a_written_layer() {
    for extra in [&["-g", "snar"][..], &["-V", "LABEL"][..]] {
        let store = TestStore::new();
        let root = store.scratch("tree");
        portable_tree(&root);
        let mut argv = vec!["tar", "-cf", "-"];
        argv.extend_from_slice(extra);
        let snar = store.scratch("snar");
        let snar = snar.to_str().unwrap();
        let argv: Vec<&str> = argv
            .into_iter()
            .map(|a| if a == "snar" { snar } else { a })
            .chain(["-C", root.to_str().unwrap(), "."])
            .collect();
        let stream = tar_stream(&argv);
        assert_written_layer_unpacks(&store, &stream);
    }
}

/// A GNU long name and a PAX path for one member: GNU tar and bsdtar (and cellar) take the PAX
/// one, Go's archive/tar (umoci) the GNU one.
#[test]
fn a_gnu_long_name_beside_a_pax_path_gives_a_written_layer() {
    let store = TestStore::new();
    let mut stream = root_dir();
    member(
        &mut stream,
        b"././@LongLink",
        b'L',
        b"from_gnu\0",
        b"",
        0o644,
    );
    member(
        &mut stream,
        b"PaxHeaders/f",
        b'x',
        b"17 path=from_pax\n",
        b"",
        0o644,
    );
    member(&mut stream, b"short", b'0', b"hello\n", b"", 0o644);
    end_of_archive(&mut stream);
    assert_written_layer_unpacks(&store, &stream);
}

/// One zero block and then more headers: GNU tar and cellar stop at the zero block (what
/// follows is kept, as the stream's trailer), Go's archive/tar fails on what follows it.
#[test]
fn a_lone_zero_block_before_more_members_gives_a_written_layer() {
    let store = TestStore::new();
    let mut stream = root_dir();
    member(&mut stream, b"kept", b'0', b"in the tree\n", b"", 0o644);
    stream.extend_from_slice(&[0u8; 512]);
    member(&mut stream, b"after", b'0', b"past the end\n", b"", 0o644);
    end_of_archive(&mut stream);
    assert_written_layer_unpacks(&store, &stream);
}

/// A `GNU.sparse.name` record on a member that is not sparse: GNU tar, bsdtar and cellar take
/// it as the member's name, Go's archive/tar only for a sparse member.
#[test]
fn a_sparse_name_on_a_plain_member_gives_a_written_layer() {
    let store = TestStore::new();
    let mut stream = root_dir();
    pax(&mut stream, &[("GNU.sparse.name", b"renamed")]);
    member(&mut stream, b"header_name", b'0', b"data\n", b"", 0o644);
    end_of_archive(&mut stream);
    assert_written_layer_unpacks(&store, &stream);
}

/// A global header with no record that applies to members (`git archive` writes one holding
/// the commit id as its `comment`): Go's archive/tar hands it to umoci as a member of its own,
/// which umoci refuses. And a contiguous file (`7`), which umoci refuses too.
#[test]
fn a_global_header_or_a_contiguous_file_gives_a_written_layer() {
    let store = TestStore::new();
    let mut stream = root_dir();
    pax_header(&mut stream, b'g', &[("comment", b"0123456789abcdef")]);
    member(&mut stream, b"a", b'0', b"a\n", b"", 0o644);
    end_of_archive(&mut stream);
    assert_written_layer_unpacks(&store, &stream);

    let store = TestStore::new();
    let mut stream = root_dir();
    member(&mut stream, b"c", b'7', b"contiguous\n", b"", 0o644);
    end_of_archive(&mut stream);
    assert_written_layer_unpacks(&store, &stream);
}

/// PAX sparse records Go's archive/tar reads otherwise than cellar, or refuses: a version
/// with no map, a map of another length than `GNU.sparse.numblocks` says, sparse records on a
/// symlink, `GNU.sparse.size` and `GNU.sparse.realsize` that disagree, an empty
/// `GNU.sparse.name`. Each stream's image unpacks to the tree cellar restores.
#[test]
fn sparse_records_go_reads_otherwise_give_a_written_layer() {
    let data = [b'A'; 150];
    let file = |records: &[(&str, &[u8])], typeflag: u8, data: &[u8]| {
        let mut stream = root_dir();
        pax(&mut stream, records);
        let link: &[u8] = if typeflag == b'2' { b"t" } else { b"" };
        member(&mut stream, b"f", typeflag, data, link, 0o644);
        member(&mut stream, b"z", b'0', b"z\n", b"", 0o644);
        end_of_archive(&mut stream);
        stream
    };
    let map: [(&str, &[u8]); 3] = [
        ("GNU.sparse.numblocks", b"2"),
        ("GNU.sparse.map", b"0,100,9000,50"),
        ("GNU.sparse.realsize", b"10000"),
    ];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "version 0.1, no map",
            file(
                &[("GNU.sparse.major", b"0"), ("GNU.sparse.minor", b"1")],
                b'0',
                &data,
            ),
        ),
        (
            "numblocks short of the map",
            file(
                &[
                    ("GNU.sparse.numblocks", b"1"),
                    ("GNU.sparse.map", b"0,100,9000,50"),
                    ("GNU.sparse.realsize", b"10000"),
                ],
                b'0',
                &data,
            ),
        ),
        (
            "sparse records on a symlink",
            file(
                &[
                    ("GNU.sparse.numblocks", b"1"),
                    ("GNU.sparse.map", b"0,0"),
                    ("GNU.sparse.realsize", b"0"),
                ],
                b'2',
                b"",
            ),
        ),
        (
            "size and realsize disagree",
            file(
                &[map[0], map[1], map[2], ("GNU.sparse.size", b"20000")],
                b'0',
                &data,
            ),
        ),
        (
            "an empty sparse name",
            file(
                &[map[0], map[1], map[2], ("GNU.sparse.name", b"")],
                b'0',
                &data,
            ),
        ),
    ];
    for (what, stream) in cases {
        let store = TestStore::new();
        assert_written_layer_unpacks_as_restored(&store, &stream, what);
    }
}

/// A hard link to its own name, as GNU tar writes for a file named twice (`tar -c f f g`):
/// extraction keeps the file, but umoci removes the name before it links and then fails.
#[test]
fn a_hard_link_to_its_own_name_gives_a_written_layer() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("f"), b"data\n");
    std::fs::hard_link(root.join("f"), root.join("g")).unwrap();
    // `.` first, so that both extractions take the root's times from the stream; by name, so
    // that f is the file and the last ./f a link to itself (in readdir order g may come
    // first, and then ./f is a link to g: tmpfs lists it so).
    let stream = tar_stream(&[
        "tar",
        "--sort=name",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
        "./f",
    ]);
    assert_written_layer_unpacks(&store, &stream);
}

/// A file (or a symlink) named `.`: GNU tar fails it, umoci refuses to change the root's
/// type. It is left out of the tree, with a warning, and the layer is written from the tree.
#[test]
fn a_file_named_as_the_root_is_left_out_with_a_warning() {
    for (typeflag, data, link) in [
        (b'0', &b"dot data\n"[..], &b""[..]),
        (b'2', &b""[..], &b"elsewhere"[..]),
    ] {
        let store = TestStore::new();
        let mut stream = root_dir();
        member(&mut stream, b"a", b'0', b"x\n", b"", 0o644);
        member(&mut stream, b".", typeflag, data, link, 0o644);
        end_of_archive(&mut stream);
        let out = store.run_stdin(&["snapshot", "--name", "odd", "-"], &stream);
        assert_success(&out, &["snapshot"]);
        assert!(
            stderr(&out).contains("named as the root directory is left out"),
            "{}",
            stderr(&out)
        );
        assert_written_layer_unpacks_as_restored(&store, &stream, "a member named .");
    }
}
