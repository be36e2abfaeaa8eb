//! What FUSE cannot carry and what `df` reads: a symlink target past a page is ENAMETOOLONG
//! (not EIO) and the rest reads on, and `statfs` gives the snapshot's size, members and name
//! limit.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::fixtures::*;
use super::guard::*;
use crate::common::*;

fn statvfs(path: &Path) -> libc::statvfs {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    libc_result(unsafe { libc::statvfs(c.as_ptr(), &mut st) }).expect("statvfs");
    st
}

/// A snapshot's `(stream bytes, members)` as `list --json` reports them.
fn size_and_members(store: &TestStore, id: &str) -> (u64, u64) {
    let list = store.json(&["list", "--json"]);
    let s = list
        .as_array()
        .expect("list --json is an array")
        .iter()
        .find(|s| s["id"].as_str().is_some_and(|i| i.starts_with(id)))
        .unwrap_or_else(|| panic!("{id} in {list}"));
    (
        s["size"].as_u64().expect("size"),
        s["members"].as_u64().expect("members"),
    )
}

#[test]
fn what_fuse_cannot_carry_fails_alone_and_statfs_tells_the_snapshot() {
    require("fusermount3");
    let store = TestStore::new();
    let mut stream = Vec::new();
    member(&mut stream, b"ok", b'0', b"fine\n", b"", 0o644);
    let far = "t/".repeat(2500);
    pax(&mut stream, &[("linkpath", far.as_bytes())]);
    member(&mut stream, b"far", b'2', b"", b"x", 0o777);
    pax(&mut stream, &[("linkpath", &[b'n'; 4095][..])]);
    member(&mut stream, b"near", b'2', b"", b"x", 0o777);
    member(&mut stream, b"zz", b'0', b"last\n", b"", 0o644);
    end_of_archive(&mut stream);
    let id = store.snapshot_bytes(&stream, "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some("vm"));
    assert_eq!(
        errno_of(fs::read_link(m.path("far"))),
        Some(libc::ENAMETOOLONG),
        "a target of {} bytes",
        far.len()
    );
    assert_eq!(
        fs::read_link(m.path("near")).unwrap().as_os_str().len(),
        4095
    );
    // The rest of the directory lists, and reads.
    assert_eq!(names_in(&m.path("")), set(&["far", "near", "ok", "zz"]));
    assert_eq!(fs::read(m.path("zz")).unwrap(), b"last\n");

    let (size, members) = size_and_members(&store, &id);
    let st = statvfs(&m.path(""));
    assert_eq!(st.f_frsize, 4096);
    assert_eq!(st.f_blocks, size.div_ceil(4096), "the snapshot's size");
    assert_eq!((st.f_bfree, st.f_bavail, st.f_ffree), (0, 0, 0), "all used");
    assert_eq!(st.f_files, members);
    assert_eq!(st.f_namemax, 4095);
    drop(m);

    // Every snapshot's, in the all-snapshots view.
    let mut two = Vec::new();
    member(&mut two, b"other", b'0', &noise(100_000, 1), b"", 0o644);
    end_of_archive(&mut two);
    let id2 = store.snapshot_bytes(&two, "db");
    let (size2, members2) = size_and_members(&store, &id2);
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);
    let st = statvfs(&all.path(""));
    assert_eq!(st.f_blocks, (size + size2).div_ceil(4096));
    assert_eq!(st.f_files, members + members2);
}
