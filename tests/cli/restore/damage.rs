//! Damaged pack data: a restore fails loudly, naming the file, and never leaves wrong bytes.

use std::fs;

use super::*;

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn a_damaged_pack_fails_loudly_and_never_writes_wrong_bytes() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("data/blob"), &noise(4_000_000, 9));
    write_file(&root.join("data/text"), &text(600_000, 5));
    write_file(&root.join("small"), b"small\n");
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let good = store.scratch("good");
    restore_ok(&store, &[&id, s(&good)]);
    assert!(fs::read(good.join("data/blob")).unwrap() == noise(4_000_000, 9));

    let packs = store.pack_files();
    let pack = packs
        .iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap()
        .clone();
    let len = pack.metadata().unwrap().len();

    // The middle of the pack is the noise file's data (stored raw, not compressible).
    flip(&pack, len / 2);
    let bad = store.scratch("bad");
    let out = restore(&store, &[&id, s(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/data/blob") && err.contains("damaged"),
        "the error does not name the file: {err}"
    );
    assert!(
        !bad.join("data/blob").exists(),
        "a partly restored file was left behind"
    );
    flip(&pack, len / 2);

    // Anywhere across the pack: a restore either fails (exit 1, with a message) or gives
    // exactly the good tree. Never silently wrong bytes.
    let mut failed = 0;
    for i in 1..=11u64 {
        let at = len * i / 12;
        flip(&pack, at);
        let dir = store.scratch(&format!("try{i}"));
        let out = restore(&store, &[&id, s(&dir)]);
        match out.status.code() {
            Some(1) => {
                assert!(stderr(&out).contains("cellar: error:"), "{}", stderr(&out));
                failed += 1;
                if dir.join("data/blob").exists() {
                    assert!(
                        fs::read(dir.join("data/blob")).unwrap() == noise(4_000_000, 9),
                        "byte {at}: a wrong /data/blob was left"
                    );
                }
            }
            Some(0) => assert_rsync_same(&dir, &good, &format!("pack byte {at} flipped")),
            c => panic!("byte {at}: exit {c:?}: {}", stderr(&out)),
        }
        flip(&pack, at);
    }
    assert!(
        failed >= 5,
        "only {failed} of 11 damaged bytes were noticed"
    );
}
