//! Streams that layer extractors would read otherwise than cellar and GNU tar do get a layer
//! written anew from the tree, which umoci unpacks to what GNU tar extracts.

use super::export::export_oci;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

/// The stream's image has a written layer (not the stream itself), and umoci unpacks it to the
/// tree GNU tar extracts from the stream.
fn assert_written_layer_unpacks(store: &TestStore, stream: &[u8]) {
    let id = store.snapshot_bytes(stream, "odd");
    let extraction = store.scratch("extracted");
    crate::browse::oracle::extract(store, stream, &extraction);
    let layout = store.scratch("layout");
    export_oci(store, &id, &layout, &[]);
    let img = oci_image(&layout, "latest");
    assert_ne!(
        img.layers[0].digest,
        format!("sha256:{}", sha256_hex(stream)),
        "the stream went in as its own layer"
    );
    let rootfs = umoci_unpack(&layout, "latest", &store.scratch("bundle"));
    assert_same_tree(&extraction, &rootfs);
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
