//! The mount is faithful: one snapshot mounted (foreground or --daemon, and in the
//! all-snapshots view) against GNU tar's extraction of the same stream, with rsync both ways
//! and with direct stat/getxattr/readlink/read calls; wide device numbers and old times.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::fixtures::*;
use super::guard::*;
use super::oracle::{
    archive, c_path, extract, lossy, varied_snapshot, walk, xattr_names, VariedSnapshot,
};
use crate::common::*;
use crate::trees::*;

/// Mount one snapshot of `varied_tree` as `writer` archived it; compare with GNU tar's
/// extraction of the same stream, with rsync both ways and with direct calls.
fn check_faithful(what: &str, writer: &[&str], bsdtar_dir_order: bool, foreground: bool) {
    require("fusermount3");
    let store = TestStore::new();
    let VariedSnapshot {
        root,
        stream,
        id,
        ex,
    } = varied_snapshot(&store, writer);
    if bsdtar_dir_order {
        dir_mtimes_from(&root, &ex);
    }

    let mut m = Mounted::new(&store, "mnt");
    if foreground {
        m.foreground(&store, Some(&id));
    } else {
        m.daemon(&store, Some(&id));
    }
    let mnt = m.path("");

    // rsync: content (-c), modes, owners, times, hardlinks (-H), xattrs (-X), devices, specials.
    assert_rsync_same(&mnt, &ex, what);

    // The same snapshot in the all-snapshots view, beside a second snapshot of the same stream:
    // each is faithful, and the two share no inode (else tools would take them for hardlinks).
    let id2 = store.snapshot_bytes(&stream, "vm");
    let mut all = Mounted::new(&store, "all");
    all.daemon(&store, None);
    for i in [&id, &id2] {
        assert_rsync_same(
            &all.path(&format!("vm/{i}")),
            &ex,
            &format!("{what}, all view, {i}"),
        );
    }
    let ino = |i: &str, p: &str| {
        fs::symlink_metadata(all.path(&format!("vm/{i}/{p}")))
            .unwrap()
            .ino()
    };
    assert_eq!(
        ino(&id2, "etc/hostname"),
        ino(&id2, "etc/hostname.hard"),
        "{what}: hardlinks in {id2}"
    );
    for p in ["etc/hostname", "usr/bin/tool", "etc", "etc/tool-link"] {
        assert_ne!(
            ino(&id, p),
            ino(&id2, p),
            "{what}: {p} in two snapshots shares an inode"
        );
    }
    drop(all);

    // The same paths, and each one's stat as the extraction has it.
    let on_mount = walk(&mnt);
    let extracted = walk(&ex);
    let lp: Vec<String> = on_mount.iter().map(|(p, _)| lossy(p)).collect();
    let le: Vec<String> = extracted.iter().map(|(p, _)| lossy(p)).collect();
    assert_eq!(lp, le, "{what}: the mount's paths are the extraction's");
    let mut all = vec![(b"/".to_vec(), mnt.clone(), ex.clone())];
    all.extend(
        on_mount
            .iter()
            .zip(&extracted)
            .map(|((p, a), (_, b))| (p.clone(), a.clone(), b.clone())),
    );
    for (p, a, b) in &all {
        let (ma, mb) = (a.symlink_metadata().unwrap(), b.symlink_metadata().unwrap());
        let shown = |m: &fs::Metadata| {
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                if m.is_dir() { 0 } else { m.size() },
                if m.is_dir() { 0 } else { m.nlink() },
                m.rdev(),
            )
        };
        assert_eq!(
            shown(&ma),
            shown(&mb),
            "{what}: {} (mode, uid, gid, mtime, nsec, size, nlink, rdev): left mount, right extraction",
            lossy(p)
        );
        assert_eq!(
            xattr_names(a),
            xattr_names(b),
            "{what}: xattr names of {}",
            lossy(p)
        );
    }

    // Hardlinks: one inode per group, the right link count, distinct groups distinct inodes.
    let st =
        |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap_or_else(|e| panic!("{what}: {p}: {e}"));
    let hard_long = format!("long/{}-hard", "h".repeat(110));
    let (h1, h2) = (st("etc/hostname"), st("etc/hostname.hard"));
    let (t1, t2) = (st("usr/bin/tool"), st(&hard_long));
    assert_eq!(
        h1.ino(),
        h2.ino(),
        "{what}: etc/hostname and etc/hostname.hard share an inode"
    );
    assert_eq!(
        t1.ino(),
        t2.ino(),
        "{what}: usr/bin/tool and its long-named link share an inode"
    );
    assert_ne!(
        h1.ino(),
        t1.ino(),
        "{what}: two hardlink groups, two inodes"
    );
    assert_eq!(
        (h1.nlink(), h2.nlink(), t1.nlink(), t2.nlink()),
        (2, 2, 2, 2),
        "{what}: link counts"
    );
    assert_ne!(
        st("etc/empty").ino(),
        h1.ino(),
        "{what}: an unlinked file has its own inode"
    );
    assert_eq!(st("etc/empty").nlink(), 1, "{what}");

    // Devices and the fifo.
    let null = st("dev/null");
    assert!(
        null.file_type().is_char_device(),
        "{what}: dev/null is a char device"
    );
    assert_eq!(
        (libc::major(null.rdev()), libc::minor(null.rdev())),
        (1, 3),
        "{what}: dev/null"
    );
    let lp9 = st("dev/loop9");
    assert!(
        lp9.file_type().is_block_device(),
        "{what}: dev/loop9 is a block device"
    );
    assert_eq!(
        (libc::major(lp9.rdev()), libc::minor(lp9.rdev())),
        (7, 9),
        "{what}: dev/loop9"
    );
    assert!(
        st("dev/fifo").file_type().is_fifo(),
        "{what}: dev/fifo is a fifo"
    );

    // xattrs through getxattr: values, a missing name, listxattr.
    let f = mnt.join("attrs/file");
    assert_eq!(
        xattr_get(&f, "user.cellar.note").unwrap(),
        b"hello",
        "{what}"
    );
    assert_eq!(
        xattr_get(&f, "user.cellar.binary").unwrap(),
        [0, 1, 2, 255, b'\n', b'='],
        "{what}"
    );
    assert_eq!(
        errno_of(xattr_get(&f, "user.cellar.nosuch")),
        Some(libc::ENODATA),
        "{what}: a missing xattr"
    );
    assert_eq!(
        xattr_names(&f),
        vec!["user.cellar.binary", "user.cellar.note"],
        "{what}"
    );
    // A buffer too small for the value: ERANGE.
    let mut small = [0u8; 2];
    let n = CString::new("user.cellar.note").unwrap();
    let rc = unsafe {
        libc::lgetxattr(
            c_path(&f).as_ptr(),
            n.as_ptr(),
            small.as_mut_ptr().cast(),
            small.len(),
        )
    };
    assert_eq!(
        (rc, io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ERANGE)),
        "{what}: getxattr into a 2-byte buffer"
    );

    // Sparse files, read fully.
    for p in ["sparse/disk.img", "sparse/holes-only.img"] {
        let got = fs::read(mnt.join(p)).unwrap();
        let want = fs::read(ex.join(p)).unwrap();
        assert!(
            got == want,
            "{what}: {p}: {} bytes (sha256 {}), want {} (sha256 {})",
            got.len(),
            sha256_hex(&got),
            want.len(),
            sha256_hex(&want)
        );
    }
    assert_eq!(st("sparse/disk.img").len(), 20 << 20, "{what}");
    let holes = fs::read(mnt.join("sparse/holes-only.img")).unwrap();
    assert!(
        holes.len() == 3 << 20 && holes.iter().all(|&b| b == 0),
        "{what}: holes-only.img"
    );

    // Symlinks.
    assert_eq!(
        fs::read_link(mnt.join("etc/tool-link")).unwrap(),
        Path::new("../usr/bin/tool"),
        "{what}"
    );
    assert_eq!(
        fs::read_link(mnt.join("long/long-target-link")).unwrap(),
        PathBuf::from(format!("{}/target", "x".repeat(150))),
        "{what}"
    );
    assert_eq!(
        fs::read(mnt.join("etc/tool-link")).unwrap(),
        noise(300_000, 1),
        "{what}: following a symlink inside the mount"
    );

    // mtimes of a directory, a file and a symlink; numbers past 8^11.
    for p in [
        "etc",
        "usr/bin/tool",
        "etc/tool-link",
        "long/long-target-link",
        "ids/far-future",
    ] {
        let (a, b) = (st(p), fs::symlink_metadata(ex.join(p)).unwrap());
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{what}: mtime of {p}"
        );
    }
    if !bsdtar_dir_order {
        // The directory times are the source tree's too (GNU tar wrote them).
        let a = st("etc");
        let b = fs::symlink_metadata(root.join("etc")).unwrap();
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{what}: mtime of etc"
        );
    }
    assert_eq!(st("ids/far-future").mtime(), 10_000_000_000, "{what}");
    assert_eq!(
        (st("ids/big-owner").uid(), st("ids/big-owner").gid()),
        (3_000_000, 4_000_000),
        "{what}"
    );
    assert_eq!(st("modes/setuid").mode() & 0o7777, 0o4755, "{what}");
    assert_eq!(st("modes/sticky").mode() & 0o7777, 0o1777, "{what}");
    let odd = mnt
        .join("names")
        .join(OsStr::from_bytes(b"bad-\xff\xfe-utf8"));
    assert_eq!(
        fs::read(&odd).unwrap(),
        b"not utf-8\n",
        "{what}: a name with odd bytes"
    );

    // Negative controls: rsync does see a changed byte (same size and mtime) and a chmod.
    let victim = ex.join("usr/share/doc/readme.txt");
    let vm = victim.symlink_metadata().unwrap();
    let mut data = fs::read(&victim).unwrap();
    data[1000] ^= 0x20;
    fs::write(&victim, &data).unwrap();
    set_mtime_ns(&victim, vm.mtime(), vm.mtime_nsec());
    let chmodded = ex.join("etc/hostname");
    fs::set_permissions(&chmodded, fs::Permissions::from_mode(0o600)).unwrap();
    for (a, b, dir) in [
        (&mnt, &ex, "mount -> extraction"),
        (&ex, &mnt, "extraction -> mount"),
    ] {
        let (code, out, err) = rsync_dry(a, b);
        assert_eq!(
            code,
            Some(0),
            "{what}: rsync {dir} (control); stderr:\n{err}"
        );
        let line = |p: &str| out.lines().find(|l| l.ends_with(p)).map(str::to_string);
        let content = line("usr/share/doc/readme.txt")
            .unwrap_or_else(|| panic!("{what}: rsync {dir} missed a changed byte:\n{out}"));
        assert!(content.starts_with(">fc"), "{what}: rsync {dir}: {content}");
        let perms = line("etc/hostname")
            .unwrap_or_else(|| panic!("{what}: rsync {dir} missed a chmod:\n{out}"));
        assert_eq!(perms.as_bytes()[5], b'p', "{what}: rsync {dir}: {perms}");
    }
}

#[test]
fn mount_matches_gnu_tar_extraction_of_gnu_posix_stream() {
    check_faithful("gnu posix xattrs sparse", GNU_POSIX_SPARSE, false, true);
}

#[test]
fn mount_matches_gnu_tar_extraction_of_bsdtar_pax_stream() {
    check_faithful("bsdtar pax", BSDTAR_PAX, true, false);
}

/// Device numbers past 8 bits (major) and 8/20 bits (minor), and times before 1970 or with
/// nanoseconds, through FUSE's dev_t and timespec encodings.
#[test]
fn mount_shows_wide_device_numbers_and_old_times() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/nvme"), libc::S_IFBLK | 0o660, 259, 65_537);
    mknod(
        &root.join("dev/wide"),
        libc::S_IFCHR | 0o600,
        4000,
        1_000_000,
    );
    mknod(&root.join("dev/zero"), libc::S_IFCHR | 0o666, 0, 0);
    write_file(&root.join("old/1960"), b"old\n");
    set_mtime(&root.join("old/1960"), -315_619_200);
    write_file(&root.join("old/just-before-epoch"), b"x\n");
    set_mtime_ns(&root.join("old/just-before-epoch"), -2, 500_000_000);
    write_file(&root.join("old/ns"), b"ns\n");
    set_mtime_ns(&root.join("old/ns"), 1_700_000_000, 123_456_789);
    symlink("ns", root.join("old/ns-link")).unwrap();
    set_mtime_ns(&root.join("old/ns-link"), 1_600_000_000, 987_654_321);
    set_mtime_ns(&root.join("old"), 1_000_000_000, 1);
    let stream = archive(GNU_POSIX_SPARSE, &root);
    let id = store.snapshot_bytes(&stream, "vm");
    let ex = store.scratch("extract");
    extract(&store, &stream, &ex);

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let mnt = m.path("");
    let st = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let dev = |p: &str| {
        let r = st(p).rdev();
        (libc::major(r), libc::minor(r))
    };
    assert_eq!(dev("dev/nvme"), (259, 65_537), "dev/nvme");
    assert!(st("dev/nvme").file_type().is_block_device());
    assert_eq!(dev("dev/wide"), (4000, 1_000_000), "dev/wide");
    assert_eq!(dev("dev/zero"), (0, 0), "dev/zero");
    let t = |p: &str| (st(p).mtime(), st(p).mtime_nsec());
    assert_eq!(t("old/1960"), (-315_619_200, 0), "old/1960");
    assert_eq!(
        t("old/just-before-epoch"),
        (-2, 500_000_000),
        "old/just-before-epoch"
    );
    assert_eq!(t("old/ns"), (1_700_000_000, 123_456_789), "old/ns");
    assert_eq!(
        t("old/ns-link"),
        (1_600_000_000, 987_654_321),
        "old/ns-link"
    );
    assert_eq!(t("old"), (1_000_000_000, 1), "old");
    assert_rsync_same(&mnt, &ex, "wide devices and old times");
}

/// A device number Linux's dev_t cannot hold shows as 0, 0 (no device), never cut down to
/// another device's number (4096, 0 was shown as 0, 0's neighbour; 1, 2^40 as 1, 0).
#[test]
fn mount_shows_device_numbers_linux_cannot_hold_as_no_device() {
    require("fusermount3");
    let store = TestStore::new();
    let id = store.snapshot_bytes(&devices_linux_cannot_hold(), "vm");
    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    for (name, want) in [
        ("major4096", (0, 0)),
        ("minor2e40", (0, 0)),
        ("null", (1, 3)),
    ] {
        let st = fs::symlink_metadata(m.path(name)).unwrap();
        assert_eq!(
            (libc::major(st.rdev()), libc::minor(st.rdev())),
            want,
            "{name}"
        );
    }
}

/// A sparse file's blocks are its data, as on the disk it came from: `du` shows the holes,
/// and `lseek`'s SEEK_DATA and SEEK_HOLE find them where the disk's file has them (so `cp`
/// and `tar` through the mount skip them).
#[test]
fn mount_shows_the_holes_of_a_sparse_file_in_its_blocks_and_to_lseek() {
    require("fusermount3");
    let store = TestStore::new();
    let root = store.scratch("tree");
    fs::create_dir_all(&root).unwrap();
    // 8 KiB of data in 10 MiB.
    sparse_file(&root.join("disk.img"), 10 << 20, &[0, 5 << 20]);
    write_file(&root.join("plain"), &noise(100_000, 4));
    let id = store.snapshot_bytes(&archive(GNU_POSIX_SPARSE, &root), "vm");

    let mut m = Mounted::new(&store, "mnt");
    m.daemon(&store, Some(&id));
    let disk = fs::metadata(m.path("disk.img")).unwrap();
    assert_eq!(disk.len(), 10 << 20);
    assert_eq!(disk.blocks(), 8192 / 512, "st_blocks of the sparse file");
    let plain = fs::metadata(m.path("plain")).unwrap();
    assert_eq!(
        plain.blocks(),
        100_000u64.div_ceil(512),
        "st_blocks of a plain file"
    );

    let offsets = [
        0,
        1,
        4095,
        4096,
        5 << 20,
        (5 << 20) + 4095,
        (5 << 20) + 4096,
        (10 << 20) - 1,
    ];
    let disk = seeks(&root.join("disk.img"), &offsets);
    assert_eq!(disk[0], (0, 4096), "the disk's own holes, as written");
    assert_eq!(seeks(&m.path("disk.img"), &offsets), disk);
    let plain = seeks(&m.path("plain"), &[0, 99_999, 100_000]);
    let end = -libc::ENXIO as i64;
    assert_eq!(plain, [(0, 100_000), (99_999, 100_000), (end, end)]);
}

/// `lseek(SEEK_DATA)` and `lseek(SEEK_HOLE)` from each offset: where each lands, or -errno.
fn seeks(path: &Path, offsets: &[i64]) -> Vec<(i64, i64)> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let seek = |offset, whence| {
        // SAFETY: lseek on a descriptor this function owns.
        match unsafe { libc::lseek(f.as_raw_fd(), offset, whence) } {
            -1 => -(io::Error::last_os_error().raw_os_error().unwrap() as i64),
            at => at,
        }
    };
    offsets
        .iter()
        .map(|&o| (seek(o, libc::SEEK_DATA), seek(o, libc::SEEK_HOLE)))
        .collect()
}
