//! Damaged gzip and zstd wrappers, damaged tar inside good compression, and compressions
//! that are not unwrapped.

use super::*;

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

/// After the last gzip member, zeros are tape padding and ignored, as gzip ignores them; any
/// other byte is trailing garbage, refused where it starts (not as a broken next member).
#[test]
fn what_follows_the_last_gzip_member() {
    require("gzip");
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let gz = gzip(&tar, &ts);
    let mut padded = gz.clone();
    padded.extend([0; 10240]);
    let id = ts.snapshot_bytes(&padded, "padded");
    assert_eq!(ts.export(&id), tar);
    for (what, tail) in [
        ("a newline after the member", &b"\n"[..]),
        ("padding, then text", &b"\0\0\0\0junk"[..]),
    ] {
        let mut bytes = gz.clone();
        bytes.extend(tail);
        let garbage_at = gz.len() + tail.iter().take_while(|&&b| b == 0).count();
        for err in [
            refuse_stdin(&bytes, what),
            refuse_file(&bytes, "in.tar.gz", what),
        ] {
            assert_mentions(&err, "trailing garbage", what);
            assert_offset(&err, garbage_at, what);
        }
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
        let inside = format!("of the tar stream inside the {what} input");
        let err = refuse_stdin(&bytes, what);
        assert_offset(&err, C_DATA + 700, what);
        assert_member(&err, "c.bin", what);
        assert_mentions(&err, &inside, what);
        let err = refuse_file(&bytes, "cut.tar.z", what);
        assert_offset(&err, C_DATA + 700, what);
        assert_member(&err, "c.bin", what);
        assert_mentions(&err, &inside, what);
    }
    // A plain stream's offsets are the input's own: no such note.
    let err = refuse_stdin(cut, "plain");
    assert!(!err.contains("of the tar stream inside"), "{err}");
}

/// A stream in a compression cellar does not unwrap is refused as a bad tar stream that says
/// what it looks like and how to decompress it, from stdin and from a file, short or long.
#[test]
fn other_compressions_are_named() {
    for (magic, name, cmd) in [
        (&b"\xfd7zXZ\x00"[..], "xz", "xz -dc"),
        (b"BZh91AY&SY", "bzip2", "bzip2 -dc"),
        (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
        (b"LZIP\x01", "lzip", "lzip -dc"),
        (b"\x1f\x9d\x90", "compress (.Z)", "gzip -dc"),
    ] {
        for len in [200, 4096] {
            let mut s = magic.to_vec();
            s.extend_from_slice(&noise(len - magic.len(), 5));
            let what = format!("{name}, {len} bytes");
            for err in [refuse_stdin(&s, &what), refuse_file(&s, "in.tar.x", &what)] {
                assert_offset(&err, 0, &what);
                assert!(
                    err.contains(&format!("starts like {name}-compressed data"))
                        && err.contains(&format!("`{cmd} FILE | cellar snapshot -`")),
                    "{what}: {err}"
                );
            }
        }
    }
    // Garbage that starts like nothing known gets no such hint.
    let err = refuse_stdin(&noise(4096, 6), "noise");
    assert!(!err.contains("compressed"), "{err}");
}

/// A tar compressed twice: unwrapped once, it starts like compressed data again, and the
/// refusal says so.
#[test]
fn a_stream_compressed_twice_is_named() {
    let ts = TestStore::new();
    let (_, tar) = fixture(&ts);
    let twice = [
        ("gzip", gzip(&gzip(&tar, &ts), &ts)),
        ("zstd", zstd(&zstd(&tar, &ts), &ts)),
    ];
    for (name, bytes) in twice {
        let err = refuse_stdin(&bytes, name);
        assert_offset(&err, 0, name);
        assert!(
            err.contains(&format!("starts like {name}-compressed data again"))
                && err.contains("compressed twice?"),
            "{name}: {err}"
        );
    }
}

/// A tar whose first member's name starts like gzip or zstd is tar, from stdin and from a
/// file: its first block is a valid header, which no compressed stream's is.
#[test]
fn a_first_name_that_starts_like_a_wrapper_is_tar() {
    let ts = TestStore::new();
    for name in [&b"\x1f\x8b-gz"[..], b"(\xb5/\xfd-zst", b"P*M\x18-skippable"] {
        let mut tar = ustar_header(name, 3, b'0');
        tar.extend_from_slice(b"hi\n");
        tar.resize(4 * 512, 0);
        let file = ts.scratch("first.tar");
        write_file(&file, &tar);
        let from_stdin = ts.snapshot_bytes(&tar, "default");
        let from_file = ts.ok(&["snapshot", file.to_str().unwrap()]);
        for id in [from_stdin.as_str(), from_file.trim_end()] {
            assert!(ts.export(id) == tar, "{name:?}: export of {id} differs");
        }
    }
}
