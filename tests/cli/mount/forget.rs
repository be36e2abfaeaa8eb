//! The mount gives back what the kernel forgets: inode numbers live while the kernel holds
//! lookups of them (LOOKUP and READDIRPLUS replies, less FORGETs), so a long-lived mount that
//! browses much holds what the kernel caches, not everything it ever showed. After the kernel
//! drops its caches, the same paths are looked up again (new numbers) and read exactly.

use std::fs;
use std::time::Duration;

use super::fixtures::*;
use super::guard::*;
use super::oracle::extract;
use crate::common::*;

#[test]
fn the_mount_gives_back_what_the_kernel_forgets() {
    require("fusermount3");
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
    let (held, pinned) = m.report();
    assert_eq!(pinned, 1, "the view went into one snapshot");
    assert!(held > 3000, "{held} inodes after reading 3030 paths");

    // Make the kernel evict what it can (nothing is open): it sends FORGET for each inode.
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop the kernel's caches (root)");
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
}
