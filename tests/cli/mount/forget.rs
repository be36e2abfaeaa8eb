//! The mount gives back what the kernel forgets: inode numbers live while the kernel holds
//! lookups of them (LOOKUP and READDIRPLUS replies, less FORGETs), so a long-lived mount that
//! browses much holds what the kernel caches, not everything it ever showed. After the kernel
//! drops its caches, the same paths are looked up again, under the same numbers, and read
//! exactly.

use std::fs;
use std::io::Write;
use std::time::Duration;

use super::fixtures::*;
use super::guard::*;
use super::oracle::extract;
use crate::common::*;

#[test]
fn the_mount_gives_back_what_the_kernel_forgets() {
    require("fusermount3");
    let caches = kernel_caches();
    let store = TestStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| {
            (
                format!("d{}/f{i}.txt", i % 30),
                format!("file {i}\n").into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let stream = small_stream(&store, "t", &refs);
    let id = store.snapshot_bytes(&stream, "vm");
    let want = store.scratch("extracted");
    extract(&store, &stream, &want);

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, None);
    let root = m.path(&format!("vm/{id}"));

    assert_reads_like(&root, &want, "first pass");
    let numbers = inode_numbers(&root);
    let (held, pinned) = m.report();
    assert_eq!(pinned, 1, "the view went into one snapshot");
    assert!(held > 3000, "{held} inodes after reading 3030 paths");

    drop_kernel_caches(&caches);
    let mut after = held;
    assert!(
        wait_for(Duration::from_secs(10), || {
            after = m.report().0;
            after < held / 4
        }),
        "the mount still holds {after} of {held} inodes after the kernel dropped its caches"
    );
    assert_reads_like(&root, &want, "after the kernel forgot");
    assert_eq!(m.report().1, 1, "pinned again");
    assert!(
        inode_numbers(&root) == numbers,
        "every path keeps its inode number for the life of the mount"
    );
}

/// Every path below `root` (itself included) with its inode number, as `lstat` gives it.
fn inode_numbers(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            todo.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.insert(p, meta.ino());
    }
    out
}

/// A walked tree leaves the kernel holding an inode per entry, and the mount its record of
/// each. That record is the node as encoded (a few hundred bytes with its table entries, not
/// the decoded node's struct, name and chunk list), and the decoded directories kept for
/// reuse are bounded by bytes: a walk of 80,000 small files grows the mount by well under a
/// KiB per entry.
#[test]
fn a_walked_mount_holds_little_per_entry() {
    require("fusermount3");
    const DIRS: usize = 80;
    const PER_DIR: usize = 1000;
    let store = TestStore::new();
    let stream_path = store.scratch("wide.tar");
    {
        let mut out = std::io::BufWriter::new(fs::File::create(&stream_path).unwrap());
        let mut block = [0u8; 512];
        for d in 0..DIRS {
            let dir = format!("dir{d:02}/");
            out.write_all(&ustar_header(dir.as_bytes(), b'5', 0, b"", 0o755))
                .unwrap();
            for f in 0..PER_DIR {
                let data = format!("file {d} {f}\n");
                let name = format!("{dir}config-file-{f:04}.conf");
                out.write_all(&ustar_header(
                    name.as_bytes(),
                    b'0',
                    data.len() as u64,
                    b"",
                    0o644,
                ))
                .unwrap();
                block.fill(0);
                block[..data.len()].copy_from_slice(data.as_bytes());
                out.write_all(&block).unwrap();
            }
        }
        out.write_all(&[0u8; 1024]).unwrap();
    }
    store.ok(&["snapshot", "--name", "wide", stream_path.to_str().unwrap()]);

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some("wide"));
    let pid = m.daemon.expect("a background mount");
    let _caches = kernel_caches();
    let rss_kib = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss_kib();

    // `ls -lR`: every directory listed, every entry's attributes read.
    let mut entries = 0;
    let mut dirs = vec![m.path("")];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            entries += 1;
            if meta.is_dir() {
                dirs.push(e.path());
            }
        }
    }
    assert_eq!(entries, DIRS * (PER_DIR + 1));

    let (held, _) = m.report();
    assert!(held > DIRS * PER_DIR, "{held} inodes held after the walk");
    let grown = (rss_kib().saturating_sub(before) * 1024) as usize;
    eprintln!(
        "mount grew by {} KiB for {held} inodes: {} bytes each",
        grown / 1024,
        grown / held
    );
    assert!(
        grown / held < 1000,
        "the mount grew by {} bytes per inode held ({held} inodes)",
        grown / held
    );
}
