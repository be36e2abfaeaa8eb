//! Bit-exact: `export` gives back exactly the ingested stream, for every writer and format.

use std::path::Path;

use crate::common::*;
use crate::trees::{portable_tree, varied_tree};

/// Ingest `stream` (from a file, which is mapped; from stdin redirected from that file, which
/// is mapped too; and from a pipe), and check the recorded size and sha256 and the exported
/// bytes.
fn assert_round_trip(store: &TestStore, stream: &[u8], what: &str) {
    let file = store.scratch("stream.tar");
    std::fs::write(&file, stream).unwrap();
    let id = store
        .ok(&["snapshot", file.to_str().unwrap()])
        .trim()
        .to_string();
    let shown = store.json(&["show", &id, "--json"]);
    assert_eq!(
        shown["sha256"],
        sha256_hex(stream),
        "{what}: recorded sha256"
    );
    assert_eq!(shown["size"], stream.len() as u64, "{what}: recorded size");
    let back = store.export(&id);
    assert!(
        back == stream,
        "{what}: export differs from the ingested stream ({} vs {} bytes)",
        back.len(),
        stream.len()
    );

    let redirected = store
        .cmd(&["snapshot", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_success(&redirected, &["snapshot", "-", "<", "FILE"]);
    let id_redirected = String::from_utf8(redirected.stdout).unwrap();
    assert!(
        store.export(id_redirected.trim()) == stream,
        "{what}: export after ingest from redirected stdin differs"
    );

    let id2 = store.snapshot_bytes(stream, "stdin");
    assert!(
        store.export(&id2) == stream,
        "{what}: export after stdin ingest differs"
    );
}

/// A named pipe given as the source is a stream, not a file: its writer moving its times while
/// it is read is how a pipe works, not a file changing under the ingest.
#[test]
fn a_named_pipe_as_source_is_read_as_a_stream() {
    let store = TestStore::new();
    let root = tree(&store, false);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", &root, "."]);
    let fifo = store.scratch("stream.fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let writer = {
        let (fifo, stream) = (fifo.clone(), stream.clone());
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            // In pieces, with pauses: each write moves the pipe's times while cellar reads.
            for piece in stream.chunks(stream.len().div_ceil(8)) {
                std::io::Write::write_all(&mut w, piece).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = store.run(&["snapshot", fifo.to_str().unwrap()]);
    writer.join().unwrap();
    assert_success(&out, &["snapshot", "FIFO"]);
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(store.export(id.trim()) == stream, "export differs");
}

/// Standard input redirected from a file that the shell (or a caller) has already read from:
/// the stream is what is left, not the file from its start.
#[test]
fn stdin_from_a_partly_read_file_is_the_rest_of_it() {
    let store = TestStore::new();
    let root = tree(&store, false);
    let stream = tar_stream(&["tar", "-cf", "-", "-C", &root, "."]);
    let file = store.scratch("prefixed.tar");
    let mut prefixed = b"junk before the stream".to_vec();
    prefixed.extend_from_slice(&stream);
    std::fs::write(&file, &prefixed).unwrap();
    let mut input = std::fs::File::open(&file).unwrap();
    std::io::Read::read_exact(&mut input, &mut [0u8; 22]).unwrap();
    let out = store.cmd(&["snapshot", "-"]).stdin(input).output().unwrap();
    assert_success(&out, &["snapshot", "-"]);
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(store.export(id.trim()) == stream, "export differs");
}

fn tree(store: &TestStore, varied: bool) -> String {
    let root = store.scratch("tree");
    if varied {
        varied_tree(&root);
    } else {
        portable_tree(&root);
    }
    root.to_str().unwrap().to_string()
}

fn check_writers(writers: &[(&str, Vec<&str>)], varied: bool) {
    for (what, args) in writers {
        let store = TestStore::new();
        let root = tree(&store, varied);
        let mut argv: Vec<&str> = args.clone();
        argv.extend(["-C", &root, "."]);
        let stream = tar_stream(&argv);
        assert_round_trip(&store, &stream, what);
    }
}

#[test]
fn gnu_tar_formats_round_trip() {
    check_writers(
        &[
            ("gnu default", vec!["tar", "-cf", "-"]),
            ("gnu --format=gnu", vec!["tar", "--format=gnu", "-cf", "-"]),
            (
                "gnu --format=oldgnu",
                vec!["tar", "--format=oldgnu", "-cf", "-"],
            ),
            (
                "gnu posix xattrs",
                vec![
                    "tar",
                    "--format=posix",
                    "--xattrs",
                    "--xattrs-include=*",
                    "-cf",
                    "-",
                ],
            ),
            ("gnu -b 1", vec!["tar", "-b", "1", "-cf", "-"]),
            ("gnu -b 2048", vec!["tar", "-b", "2048", "-cf", "-"]),
            (
                "gnu numeric owner",
                vec!["tar", "--numeric-owner", "-cf", "-"],
            ),
        ],
        true,
    );
}

#[test]
fn gnu_tar_sparse_formats_round_trip() {
    check_writers(
        &[
            (
                "gnu sparse (old GNU)",
                vec!["tar", "--sparse", "--format=gnu", "-cf", "-"],
            ),
            (
                "pax sparse 0.0",
                vec![
                    "tar",
                    "--sparse",
                    "--format=posix",
                    "--sparse-version=0.0",
                    "-cf",
                    "-",
                ],
            ),
            (
                "pax sparse 0.1",
                vec![
                    "tar",
                    "--sparse",
                    "--format=posix",
                    "--sparse-version=0.1",
                    "-cf",
                    "-",
                ],
            ),
            (
                "pax sparse 1.0",
                vec![
                    "tar",
                    "--sparse",
                    "--format=posix",
                    "--sparse-version=1.0",
                    "-cf",
                    "-",
                ],
            ),
        ],
        true,
    );
}

#[test]
fn gnu_tar_portable_formats_round_trip() {
    check_writers(
        &[
            ("gnu ustar", vec!["tar", "--format=ustar", "-cf", "-"]),
            ("gnu v7", vec!["tar", "--format=v7", "-cf", "-"]),
        ],
        false,
    );
}

#[test]
fn bsdtar_formats_round_trip() {
    check_writers(
        &[
            ("bsdtar pax", vec!["bsdtar", "--format", "pax", "-cf", "-"]),
            (
                "bsdtar gnutar",
                vec!["bsdtar", "--format", "gnutar", "-cf", "-"],
            ),
            ("bsdtar default", vec!["bsdtar", "-cf", "-"]),
        ],
        true,
    );
    check_writers(
        &[(
            "bsdtar ustar",
            vec!["bsdtar", "--format", "ustar", "-cf", "-"],
        )],
        false,
    );
}

#[test]
fn busybox_tar_round_trips() {
    check_writers(&[("busybox", vec!["busybox", "tar", "-cf", "-"])], true);
}

/// Whatever a writer leaves between and after members is kept: padding that is not zero,
/// junk after the end-of-archive blocks, a lone zero block, a stream not a multiple of 512.
#[test]
fn odd_padding_and_trailers_round_trip() {
    let store = TestStore::new();
    let root = tree(&store, false);
    let stream = tar_stream(&["tar", "--format=gnu", "-cf", "-", "-C", &root, "."]);

    let mut junk_after = stream.clone();
    junk_after.extend_from_slice(&noise(700, 9));
    assert_round_trip(&store, &junk_after, "junk after the end-of-archive");

    // Make the padding after a file's data non-zero: find etc/hostname's data ("vm1\n").
    let pos = stream
        .windows(4)
        .position(|w| w == b"vm1\n")
        .expect("hostname data");
    let mut dirty_padding = stream.clone();
    for b in &mut dirty_padding[pos + 4..pos + 512 - (pos % 512)] {
        *b = 0xAA;
    }
    assert_round_trip(&store, &dirty_padding, "non-zero padding");

    // Only one zero block at the end (GNU tar reads it with a warning).
    let end = last_member_end(&stream);
    let mut lone = stream[..end].to_vec();
    lone.extend_from_slice(&[0u8; 512]);
    assert_round_trip(&store, &lone, "lone zero block");
}

/// Offset just past the last member's padded data: where the end-of-archive blocks start.
fn last_member_end(stream: &[u8]) -> usize {
    let mut pos = 0;
    let mut end = 0;
    while pos + 512 <= stream.len() && stream[pos..pos + 512].iter().any(|&b| b != 0) {
        let size_field = std::str::from_utf8(&stream[pos + 124..pos + 135])
            .unwrap()
            .trim_matches(|c| c == '\0' || c == ' ');
        let size = u64::from_str_radix(size_field, 8).unwrap_or(0) as usize;
        let typeflag = stream[pos + 156];
        let data = if typeflag == b'5' {
            0
        } else {
            size.div_ceil(512) * 512
        };
        pos += 512 + data;
        end = pos;
    }
    end
}

#[test]
fn compressed_and_uncompressed_copies_of_a_stream_share_everything() {
    let store = TestStore::new();
    let root = tree(&store, true);
    let plain = tar_stream(&["tar", "-cf", "-", "-C", &root, "."]);
    let a = store.snapshot_bytes(&plain, "vm");
    let gz = sh(&format!("tar -czf - -C {root} . "));
    let b = store.snapshot_bytes(&gz, "vm");
    // gzip'd tar of the same tree: identical inner stream, so same sha256 and nothing new.
    let (sa, sb) = (
        store.json(&["show", &a, "--json"]),
        store.json(&["show", &b, "--json"]),
    );
    assert_eq!(sa["sha256"], sb["sha256"]);
    assert!(sb["added_bytes"].as_u64().unwrap() < 4096, "{sb}");
    assert!(store.export(&b) == plain);
    let _ = Path::new(&root);
}
