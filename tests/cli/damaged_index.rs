//! A damaged index (`cellar.db`), as after a bad disk. SQLite keeps no checksums: a flipped
//! byte in one of its own indexes leaves the file readable, with an index entry that
//! disagrees with its row. Readers must never hand out another snapshot than the one asked
//! for, gc must not delete what the damaged entry hides, and a lost index is rebuilt from the
//! packs, never replaced by an empty one that would make every pack look like a leftover.

use std::path::PathBuf;

use crate::common::*;

/// Two snapshots in packs of their own: "vm" (seq 1), then "db" (seq 2). The packs are made
/// old, as in a store in use for a while, so gc's grace period does not protect them.
struct Fixture {
    store: TestStore,
    vm_stream: Vec<u8>,
    db: String,
    db_stream: Vec<u8>,
}

fn fixture() -> Fixture {
    let store = TestStore::new();
    let vm_dir = store.scratch("vm");
    write_file(&vm_dir.join("big.bin"), &noise(2_000_000, 81));
    write_file(&vm_dir.join("etc/hostname"), b"vm\n");
    let vm_stream = tar_of_dir(&vm_dir);
    store.snapshot_bytes(&vm_stream, "vm");
    let db_dir = store.scratch("db");
    write_file(&db_dir.join("data/table.bin"), &noise(1_000_000, 82));
    let db_stream = tar_of_dir(&db_dir);
    let db = store.snapshot_bytes(&db_stream, "db");
    assert_eq!(store.pack_files().len(), 2, "a pack per snapshot");
    let day_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 86_400;
    for p in store.pack_files() {
        set_mtime_ns(&p, day_ago, 0);
    }
    Fixture {
        store,
        vm_stream,
        db,
        db_stream,
    }
}

fn db_file(store: &TestStore) -> PathBuf {
    store.path().join("cellar.db")
}

/// Change one byte of the index file, at `needle`'s first byte plus `at`, where `needle`
/// lies inside the root page of `btree` (a table or index small enough to be one page).
fn damage_in(store: &TestStore, btree: &str, needle: &[u8], at: usize, to: impl Fn(u8) -> u8) {
    let (root, page_size): (i64, i64) = {
        let conn = store.db();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [btree],
                |r| r.get(0),
            )
            .unwrap();
        let size = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (root, size)
    };
    let path = db_file(store);
    let mut bytes = std::fs::read(&path).unwrap();
    let page = ((root - 1) * page_size) as usize..(root * page_size) as usize;
    let found = bytes[page.clone()]
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the root page of {btree}"));
    let i = page.start + found + at;
    bytes[i] = to(bytes[i]);
    std::fs::write(&path, &bytes).unwrap();
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn pack_names(store: &TestStore) -> Vec<PathBuf> {
    let mut p = store.pack_files();
    p.sort();
    p
}

fn snapshots_named(store: &TestStore, name: &str) -> usize {
    store
        .json(&["list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .count()
}

#[test]
fn gc_deletes_nothing_when_the_pack_name_index_disagrees_with_its_rows() {
    let f = fixture();
    let packs = pack_names(&f.store);
    let name: Vec<u8> = f
        .store
        .db()
        .query_row("SELECT name FROM packs ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    // One bit of vm's pack name in `packs`' unique index: the row is intact, so every reader
    // finds the pack, but a scan of the index (gc's orphan sweep) no longer names it.
    damage_in(&f.store, "sqlite_autoindex_packs_1", &name, 31, |b| b ^ 1);

    for args in [&["gc"][..], &["gc", "--dry-run"], &["gc", "--grace", "0"]] {
        let out = f.store.run(args);
        assert_eq!(code(&out), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("damaged") && err.contains("repair-index"),
            "{args:?}: {err}"
        );
        assert_eq!(pack_names(&f.store), packs, "{args:?} deleted a pack");
    }
    let out = f.store.run(&["verify"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the index file is damaged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    f.store.ok(&["repair-index"]);
    f.store.ok(&["gc", "--grace", "0"]);
    assert_eq!(pack_names(&f.store), packs);
    assert!(f.store.export("vm") == f.vm_stream);
    assert!(f.store.export(&f.db) == f.db_stream);
}

#[test]
fn a_damaged_snapshots_index_never_gives_another_snapshot() {
    let f = fixture();
    // The entry ('db', seq 2, rowid 2) of snapshots(name, seq) now leads to vm's row.
    damage_in(
        &f.store,
        "snapshots_name",
        b"\x04\x11\x01\x01db\x02\x02",
        7,
        |_| 1,
    );

    let out = f.store.run(&["export", "db"]);
    assert!(
        out.stdout != f.vm_stream,
        "export db gave vm's stream (exit {:?})",
        code(&out)
    );
    if code(&out) == Some(0) {
        assert!(out.stdout == f.db_stream);
    }
    let listed = f.store.ok(&["list", "--name", "db"]);
    assert!(!listed.contains(" vm "), "{listed}");

    // Forgetting db must not forget vm instead.
    let out = f.store.run(&["rm", "db"]);
    assert!(matches!(code(&out), Some(0) | Some(1)), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    f.store.ok(&["repair-index"]);
    assert_eq!(snapshots_named(&f.store, "vm"), 1, "vm was forgotten");
    assert!(f.store.export("vm") == f.vm_stream);
}

#[test]
fn a_damaged_snapshot_row_is_an_error_not_a_wrong_answer() {
    let f = fixture();
    let created: String = f
        .store
        .db()
        .query_row("SELECT created FROM snapshots WHERE name = 'db'", [], |r| {
            r.get(0)
        })
        .unwrap();
    // The year's last digit: a row that still parses, now a year off.
    damage_in(&f.store, "snapshots", created.as_bytes(), 3, |b| b ^ 1);

    for args in [&["list"][..], &["show", "db"], &["export", "db"]] {
        let out = f.store.run(args);
        assert_eq!(code(&out), Some(1), "{args:?} gave a damaged row");
        let err = stderr(&out);
        assert!(
            err.contains("does not match its id") && err.contains("repair-index"),
            "{args:?}: {err}"
        );
    }
    let out = f.store.run(&["verify"]);
    assert_eq!(code(&out), Some(1), "verify passes a damaged snapshot row");

    f.store.ok(&["repair-index"]);
    assert!(f.store.export("db") == f.db_stream);
    f.store.ok(&["verify"]);
}

#[test]
fn a_lost_index_is_rebuilt_not_replaced_by_an_empty_one() {
    let f = fixture();
    let packs = pack_names(&f.store);
    for n in ["cellar.db", "cellar.db-wal", "cellar.db-shm"] {
        let _ = std::fs::remove_file(f.store.path().join(n));
    }
    let out = f.store.run(&["list"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("repair-index"), "{}", stderr(&out));

    let dir = f.store.scratch("new");
    write_file(&dir.join("new.bin"), &noise(100_000, 83));
    let out = f
        .store
        .run_stdin(&["snapshot", "--name", "new", "-"], &tar_of_dir(&dir));
    assert_eq!(code(&out), Some(1), "a snapshot started a new, empty index");
    assert!(stderr(&out).contains("repair-index"), "{}", stderr(&out));
    assert!(!db_file(&f.store).exists());
    assert_eq!(pack_names(&f.store), packs);

    f.store.ok(&["repair-index"]);
    f.store.ok(&["gc", "--grace", "0"]);
    assert!(f.store.export("vm") == f.vm_stream);
    assert!(f.store.export(&f.db) == f.db_stream);
}

/// A `repair-index` killed at any of its renames leaves an index to open: the old one, or the
/// rebuilt one waiting beside it, which the next command puts in place (moving what is left
/// of the old one aside, as its `-wal` would be read as the new one's).
#[test]
fn a_repair_killed_at_any_rename_leaves_an_index() {
    require("strace");
    let f = fixture();
    for when in 1.. {
        let status = std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=rename", "-e"])
            .arg(format!("inject=rename:signal=SIGKILL:when={when}"))
            .arg(cellar_bin())
            .arg("--store")
            .arg(f.store.path())
            .arg("repair-index")
            .env_remove("CELLAR_STORE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run strace (scripts/test installs it)");
        let listed = f.store.ok(&["list"]);
        assert!(
            listed.contains("vm") && listed.contains("db"),
            "killed at rename {when}: {listed}"
        );
        assert!(f.store.export("vm") == f.vm_stream, "rename {when}");
        assert!(f.store.export(&f.db) == f.db_stream, "rename {when}");
        f.store.ok(&["verify"]);
        if status.success() {
            assert!(when > 4, "repair-index made {} renames", when - 1);
            break;
        }
        assert!(when < 20, "repair-index still killed at rename {when}");
    }
    assert!(!f.store.path().join("cellar.db.new").exists());
}

/// Commit order survives a repair across a forgotten snapshot: A's ingest starts first and
/// commits last (after B, then C, its parent); with C forgotten but its record still in a
/// pack, the rebuilt index still has A as the lineage's latest, not B, whose ingest started
/// later.
#[test]
fn a_repair_keeps_the_commit_order_across_a_forgotten_snapshot() {
    let store = TestStore::new();
    let stream = |n: u64| {
        let dir = store.scratch(&format!("t{n}"));
        write_file(&dir.join("f"), &noise(50_000, n));
        let file = store.scratch(&format!("s{n}.tar"));
        std::fs::write(&file, tar_of_dir(&dir)).unwrap();
        file
    };
    store.ok(&["snapshot", "--name", "vm", stream(1).to_str().unwrap()]);
    let (started, go) = (store.scratch("started"), store.scratch("go"));
    let script = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; cat '{}'",
        started.display(),
        go.display(),
        stream(2).display()
    );
    let a = store
        .cmd(&["snapshot", "--name", "vm", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !started.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let b = store.ok(&["snapshot", "--name", "vm", stream(3).to_str().unwrap()]);
    let c = store.ok(&["snapshot", "--name", "vm", stream(4).to_str().unwrap()]);
    std::fs::write(&go, b"").unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success());
    let a = String::from_utf8(a.stdout).unwrap();
    let latest = |store: &TestStore| store.json(&["show", "vm", "--json"])["short_id"].clone();
    assert_eq!(latest(&store), a.trim());
    store.ok(&["rm", c.trim()]);
    assert_eq!(latest(&store), a.trim());
    let before = store.ok(&["list"]);

    store.ok(&["repair-index"]);
    assert_eq!(latest(&store), a.trim(), "not {}", b.trim());
    assert_eq!(store.ok(&["list"]), before);
}

/// An index SQLite cannot read at all (its header overwritten) or that breaks off (cut in
/// half) is verify's finding, reported as any other: a problem line, `--json` with `ok: false`
/// and the problem, exit 1; not an error with no report.
#[test]
fn an_unreadable_index_is_a_problem_verify_reports() {
    for damage in ["header", "truncated"] {
        let f = fixture();
        let path = db_file(&f.store);
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            "header" => bytes[..16].copy_from_slice(b"not an index at "),
            _ => bytes.truncate(bytes.len() / 2),
        }
        std::fs::write(&path, &bytes).unwrap();

        let out = f.store.run(&["verify", "--json"]);
        assert_eq!(code(&out), Some(1), "{damage}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{damage}: no JSON report ({e}): {}", stderr(&out)));
        assert_eq!(report["ok"], false, "{damage}");
        let what = report["problems"][0]["what"].as_str().unwrap_or_default();
        assert!(
            what.contains("index file cannot be read") && what.contains("repair-index"),
            "{damage}: {report}"
        );

        let out = f.store.run(&["verify"]);
        assert_eq!(code(&out), Some(1), "{damage}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("problem: the index file cannot be read"),
            "{damage}: {said}"
        );
        assert!(stderr(&out).contains("verify found 1 problem"), "{damage}");

        // What the report points at mends it.
        f.store.ok(&["repair-index", "--force"]);
        f.store.ok(&["verify"]);
        assert_eq!(f.store.export(&f.db), f.db_stream, "{damage}");
    }
}

/// Location rows carry no checksum: damaged numbers in `chunks` and `frames` (negative, past
/// 32 bits, past the pack's end, a frame made its own delta base) are damage every reader
/// reports, exit 1, not a panic, an abort on a huge allocation, or a reader waiting on its
/// own lock for good.
#[test]
fn damaged_location_rows_are_reported_not_a_panic_or_a_hang() {
    let cases = [
        "UPDATE chunks SET offset = -1",
        "UPDATE chunks SET len = 5000000000",
        "UPDATE frames SET stored_len = -1",
        "UPDATE frames SET raw_len = -1",
        "UPDATE frames SET stored_len = 200000000000",
        "UPDATE frames SET stored_len = 2000000000",
        "UPDATE frames SET codec = 2, base = (SELECT id FROM chunks WHERE frame = frames.id LIMIT 1)",
    ];
    for sql in cases {
        let store = TestStore::new();
        let dir = store.scratch("tree");
        write_file(&dir.join("f"), &noise(100_000, 7));
        store.snapshot_bytes(&tar_of_dir(&dir), "vm");
        rusqlite::Connection::open(db_file(&store))
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        for args in [&["cat", "vm", "/f"][..], &["export", "vm"], &["verify"]] {
            let child = store
                .cmd(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = output_within_a_minute(child, &format!("{sql}: {args:?}"));
            // verify lists its problems on stdout, the others fail on stderr.
            let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
            assert_eq!(code(&out), Some(1), "{sql}: {args:?}: {err}");
            assert!(
                (err.contains("damaged") || err.contains("problem")) && !err.contains("panicked"),
                "{sql}: {args:?}: {err}"
            );
        }
    }
}

/// A rebuilt index names a copy it can decode: of two copies of a chunk, the one found first
/// (in a pack whose name sorts first) is a delta on a base no pack holds; the other is whole,
/// or a delta on a base that is indexed. Such stale deltas are left in packs gc keeps for the
/// rest they hold, and by `repair-packs`; the rebuild passes over them.
#[test]
fn repair_index_passes_over_a_copy_it_cannot_decode() {
    use cellar_store::pack::format::{pack_header, Entry, RecordHeader};
    use cellar_store::pack::{ChunkKind, Codec, RecordKind};
    // The other copy: whole (a file's data) or a delta (a directory record of a second
    // snapshot, made against the first one's).
    for delta in [false, true] {
        let store = TestStore::new();
        let dir = store.scratch("vm");
        for i in 0..30u64 {
            write_file(&dir.join(format!("d{}/f{i}", i % 3)), &text(3000, i));
        }
        let first = tar_of_dir(&dir);
        store.snapshot_bytes(&first, "vm");
        write_file(&dir.join("d1/new"), b"new\n");
        let stream = tar_of_dir(&dir);
        let id = store.snapshot_bytes(&stream, "vm");
        let query = if delta {
            "SELECT c.id, c.len, c.kind FROM chunks c JOIN frames f ON f.id = c.frame
             WHERE f.base IS NOT NULL ORDER BY c.len DESC LIMIT 1"
        } else {
            "SELECT id, len, kind FROM chunks WHERE kind = 0 ORDER BY len DESC LIMIT 1"
        };
        let (chunk, len, kind): (Vec<u8>, u32, u8) = store
            .db()
            .query_row(query, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        let first_pack = store.pack_files()[0]
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let header = RecordHeader {
            kind: RecordKind::Chunks,
            codec: Codec::ZstdDelta,
            raw_len: len,
            stored_len: 4,
            base: cellar_store::ChunkId::from_slice(&[0xab; 32]),
            entries: vec![Entry {
                id: cellar_store::ChunkId::from_slice(&chunk).unwrap(),
                kind: ChunkKind::from_u8(kind).unwrap(),
                len,
            }],
        };
        // About one name in three sorts first (the lesser of two random names): 256 tries
        // all missed now and then.
        let (name, bytes) = (0u64..)
            .map(|n| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                let mut bytes = pack_header(nonce).to_vec();
                bytes.extend(header.encode());
                bytes.extend(b"junk");
                (blake3::hash(&bytes).to_hex().to_string(), bytes)
            })
            .find(|(name, _)| *name < first_pack)
            .expect("an unbounded search");
        write_file(
            &store
                .path()
                .join("packs")
                .join(&name[..2])
                .join(format!("{name}.pack")),
            &bytes,
        );
        std::fs::remove_file(store.path().join("cellar.db")).unwrap();

        let out = store.run(&["repair-index"]);
        assert_success(&out, &["repair-index"]);
        let err = stderr(&out);
        assert!(
            err.contains("indexed at another copy"),
            "delta {delta}: {err}"
        );
        assert_eq!(sha256_hex(&store.export(&id)), sha256_hex(&stream));
        store.ok(&["verify"]);
    }
}
