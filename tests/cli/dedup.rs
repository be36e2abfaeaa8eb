//! Deduplication: repeated and incremental snapshots cost about what changed.

use crate::common::*;
use crate::trees::portable_tree;

fn added(store: &TestStore, id: &str) -> u64 {
    store.json(&["show", id, "--json"])["added_bytes"]
        .as_u64()
        .unwrap()
}

/// A small "root filesystem": text and binaries, a few hundred files.
fn rootfs(root: &std::path::Path) {
    portable_tree(root);
    for i in 0..150u64 {
        write_file(
            &root.join(format!("usr/lib/lib{i}.so")),
            &noise(20_000 + (i as usize * 997) % 90_000, i),
        );
        write_file(
            &root.join(format!("usr/share/doc/pkg{i}/README")),
            &text(3_000 + (i as usize * 131) % 9_000, i),
        );
    }
}

fn tar(root: &std::path::Path, format: &str) -> Vec<u8> {
    tar_stream(&[
        "tar",
        &format!("--format={format}"),
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
    ])
}

#[test]
fn the_same_stream_twice_adds_under_one_percent() {
    let store = TestStore::new();
    let root = store.scratch("root");
    rootfs(&root);
    let stream = tar(&root, "gnu");
    let first = store.snapshot_bytes(&stream, "vm");
    let second = store.snapshot_bytes(&stream, "vm");
    assert!(
        added(&store, &first) > stream.len() as u64 / 3,
        "the first snapshot stores the data"
    );
    let a2 = added(&store, &second);
    assert!(
        a2 * 100 < stream.len() as u64,
        "second identical snapshot added {a2} of {}",
        stream.len()
    );
}

#[test]
fn installing_a_package_costs_about_the_package() {
    let store = TestStore::new();
    let root = store.scratch("root");
    rootfs(&root);
    store.snapshot_bytes(&tar(&root, "gnu"), "vm");
    // "Install a package": new files (incompressible, so their stored size is their size) and
    // an edited file in the middle of the tree.
    let mut package = 0;
    for i in 0..10u64 {
        let data = noise(50_000, 1000 + i);
        package += data.len() as u64;
        write_file(&root.join(format!("usr/lib/newpkg/part{i}.so")), &data);
    }
    write_file(&root.join("etc/hostname"), b"vm2\n");
    let id = store.snapshot_bytes(&tar(&root, "gnu"), "vm");
    let a = added(&store, &id);
    assert!(a >= package, "added {a} < package {package}");
    assert!(
        a < package + package / 10 + 64 * 1024,
        "added {a} for a {package}-byte package"
    );
}

#[test]
fn a_small_edit_inside_a_large_file_adds_a_few_chunks() {
    let store = TestStore::new();
    let root = store.scratch("root");
    rootfs(&root);
    let big = root.join("var/lib/big.db");
    let mut data = noise(8_000_000, 77);
    write_file(&big, &data);
    store.snapshot_bytes(&tar(&root, "gnu"), "vm");
    data[4_000_000..4_000_100].copy_from_slice(&[0x55; 100]);
    data.splice(6_000_000..6_000_000, b"inserted bytes".iter().copied());
    write_file(&big, &data);
    let id = store.snapshot_bytes(&tar(&root, "gnu"), "vm");
    let a = added(&store, &id);
    assert!(a < 400_000, "a 2-spot edit of an 8 MB file added {a} bytes");
}

#[test]
fn every_file_changed_a_little_still_dedups_the_rest() {
    let store = TestStore::new();
    let root = store.scratch("root");
    let mut files = Vec::new();
    for i in 0..40u64 {
        let data = noise(400_000, 500 + i);
        write_file(&root.join(format!("data/{i}.bin")), &data);
        files.push(data);
    }
    let s1 = tar(&root, "gnu");
    store.snapshot_bytes(&s1, "vm");
    for (i, mut data) in files.into_iter().enumerate() {
        let at = 1000 + i * 9000;
        data[at..at + 8].copy_from_slice(b"CHANGED!");
        write_file(&root.join(format!("data/{i}.bin")), &data);
    }
    let s2 = tar(&root, "gnu");
    let id = store.snapshot_bytes(&s2, "vm");
    let a = added(&store, &id);
    assert!(
        a * 4 < s2.len() as u64,
        "changing 8 bytes per file added {a} of {}",
        s2.len()
    );
    assert!(store.export(&id) == s2);
}

/// `--format=posix` writes atime and ctime into every header; a tree whose times moved must
/// not cost a copy of its headers.
#[test]
fn fresh_pax_times_cost_bytes_not_a_copy_of_the_headers() {
    let store = TestStore::new();
    let root = store.scratch("root");
    crate::trees::small_files(&root, 2000);
    let s1 = tar(&root, "posix");
    store.snapshot_bytes(&s1, "vm");
    let pieces_before = pieces(&store, "");
    sh(&format!(
        "find {} -type f -exec touch -a -d '2031-02-03 04:05:06.789' {{}} +",
        root.display()
    ));
    let s2 = tar(&root, "posix");
    assert!(s1 != s2, "the headers should differ (atime)");
    let id = store.snapshot_bytes(&s2, "vm");
    let a = added(&store, &id);
    // Headers are ~1.5 KiB per member here; a copy would be ~3 MB.
    assert!(
        a < 2000 * 64 + 32 * 1024,
        "fresh atimes added {a} bytes for 2000 members"
    );
    // Every piece the new times changed is stored as a delta against its parent's piece
    // (the same paths, so the same anchors), not compressed on its own.
    let changed = pieces(&store, "") - pieces_before;
    assert!(changed > 0, "the headers changed, so pieces did");
    assert_eq!(
        pieces(&store, "AND depth > 0"),
        changed,
        "changed pieces stored whole"
    );
    assert!(store.export(&id) == s2);
}

/// How many pieces (runs of stream items, `ChunkKind::Piece`) the index holds, of those that
/// match `and` (an SQL condition on the chunk row).
fn pieces(store: &TestStore, and: &str) -> i64 {
    store
        .db()
        .query_row(
            &format!("SELECT count(*) FROM chunks WHERE kind = 1 {and}"),
            [],
            |r| r.get(0),
        )
        .expect("count pieces")
}

/// Two fresh stores ingesting the same stream hold the same chunk ids and export the same bytes.
#[test]
fn ingest_is_reproducible_across_stores() {
    let a = TestStore::new();
    let b = TestStore::new();
    let root = a.scratch("root");
    rootfs(&root);
    let stream = tar(&root, "posix");
    a.snapshot_bytes(&stream, "vm");
    b.snapshot_bytes(&stream, "vm");
    let ids = |s: &TestStore| -> Vec<String> {
        let db = s.db();
        let mut stmt = db
            .prepare("SELECT hex(id) FROM chunks ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(ia.len() > 100, "only {} chunks", ia.len());
    assert_eq!(ia, ib);
    assert!(a.export("vm") == b.export("vm"));
    assert!(a.export("vm") == stream);
}

#[test]
fn an_incremental_snapshot_is_cut_as_a_fresh_one_would_be() {
    // The second ingest takes the first one's cuts as hints for files of the same length:
    // wherever the bytes changed, it must find the very cuts a store without a parent finds.
    let (incremental, fresh) = (TestStore::new(), TestStore::new());
    let root = incremental.scratch("root");
    rootfs(&root);
    let big = root.join("var/lib/big.db");
    let mut data = noise(3_000_000, 5);
    write_file(&big, &data);
    incremental.snapshot_bytes(&tar(&root, "gnu"), "vm");
    // New bytes in place (the length stays), long enough to move cuts: at the start, in the
    // middle and in the last chunk.
    for (i, at) in [0, 1_500_000, 2_980_000].into_iter().enumerate() {
        data[at..at + 20_000].copy_from_slice(&noise(20_000, 900 + i as u64));
    }
    write_file(&big, &data);
    write_file(
        &root.join("usr/lib/lib7.so"),
        &noise(20_000 + 7 * 997, 1007),
    );
    let stream = tar(&root, "gnu");
    incremental.snapshot_bytes(&stream, "vm");
    fresh.snapshot_bytes(&stream, "vm");
    let ids = |s: &TestStore| -> std::collections::BTreeSet<String> {
        let db = s.db();
        let mut stmt = db.prepare("SELECT hex(id) FROM chunks").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (have, want) = (ids(&incremental), ids(&fresh));
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{} chunks cut differently, such as {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(incremental.export("vm") == stream);
}

#[test]
fn small_files_changed_in_place_are_stored_again() {
    // Files of one small chunk get the parent's chunk as a hint too, and a trusted hint is not
    // looked up: a file whose bytes changed but whose length did not must hash away from its
    // hint and be stored again, whichever directory the stream lists it in.
    let store = TestStore::new();
    let root = store.scratch("root");
    rootfs(&root);
    store.snapshot_bytes(&tar(&root, "gnu"), "vm");
    for i in [3u64, 77, 149] {
        let readme = root.join(format!("usr/share/doc/pkg{i}/README"));
        let len = std::fs::metadata(&readme).unwrap().len() as usize;
        write_file(&readme, &text(len, 1_000 + i));
    }
    for format in ["gnu", "pax"] {
        let stream = tar(&root, format);
        store.snapshot_bytes(&stream, "vm");
        assert!(store.export("vm") == stream, "{format}");
    }
    let tree = store.scratch("restored");
    store.ok(&["restore", "vm", tree.to_str().unwrap()]);
    for i in [3u64, 77, 149] {
        let rel = format!("usr/share/doc/pkg{i}/README");
        assert_eq!(
            std::fs::read(tree.join(&rel)).unwrap(),
            std::fs::read(root.join(&rel)).unwrap(),
            "{rel}"
        );
    }
}

/// A directory of 100,000 files (a record of some megabytes) with one file's mode changed:
/// the new record is stored as a delta that costs about the change, not a copy.
#[test]
fn one_change_in_a_huge_directory_costs_about_the_change() {
    let stream = |changed: usize| {
        let mut t = Vec::new();
        member(&mut t, b"big/", b'5', b"", b"", 0o755);
        for i in 0..100_000usize {
            // Names unlike their neighbours, so the record does not compress away by itself.
            let name = format!("big/{}", &sha256_hex(&i.to_le_bytes())[..24]);
            let mode = if i == changed { 0o600 } else { 0o644 };
            t.extend_from_slice(&ustar_header(name.as_bytes(), b'0', 0, b"", mode));
        }
        end_of_archive(&mut t);
        t
    };
    let store = TestStore::new();
    let first = store.snapshot_bytes(&stream(usize::MAX), "vm");
    let second = store.snapshot_bytes(&stream(60_000), "vm");
    let (a1, a2) = (added(&store, &first), added(&store, &second));
    assert!(a1 > 2 << 20, "the first snapshot stores the record: {a1}");
    assert!(
        a2 < 128 << 10,
        "one changed entry added {a2} bytes (first: {a1})"
    );
    let listed = store.ok(&["ls", &second, "/big", "--json"]);
    assert!(
        listed.contains("\"mode\": 384") || listed.contains("\"mode\":384"),
        "the change is there"
    );
}
