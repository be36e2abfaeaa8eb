//! `snapshot --dir`: a local directory archived natively, deterministically, and faithfully.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::trees::varied_tree;

/// Everything `tar -xpf` is expected to restore about one path.
#[derive(Debug, PartialEq, Eq)]
struct Attrs {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    link: Option<PathBuf>,
    content: Option<String>,
    rdev: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every path under `root` (relative), with its attributes; plus hardlink groups.
fn snapshot_of(root: &Path) -> (BTreeMap<PathBuf, Attrs>, BTreeSet<Vec<PathBuf>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else {
                "fifo"
            };
            if (ft.is_file() || ft.is_symlink()) && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            out.insert(
                rel,
                Attrs {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: if ft.is_dir() {
                        (0, 0)
                    } else {
                        (m.mtime(), m.mtime_nsec())
                    },
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                    content: ft
                        .is_file()
                        .then(|| sha256_hex(&std::fs::read(&p).unwrap())),
                    rdev: m.rdev(),
                    xattrs: xattrs_of(&p),
                },
            );
        }
    }
    let groups = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (out, groups)
}

fn snapshot_dir(store: &TestStore, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["snapshot", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    store.ok(&args).trim().to_string()
}

#[test]
fn a_directory_snapshot_is_deterministic_and_extracts_to_the_same_tree() {
    let store = TestStore::new();
    let src = store.scratch("src");
    varied_tree(&src);
    // A symlink's second name is a hard link to it, as GNU tar archives it.
    let symlink = src.join("long/long-target-link");
    std::fs::hard_link(&symlink, src.join("long/link-again")).unwrap();
    let a = snapshot_dir(&store, &src, &[]);
    let b = snapshot_dir(&store, &src, &[]);
    let (sa, sb) = (
        store.json(&["show", &a, "--json"]),
        store.json(&["show", &b, "--json"]),
    );
    assert_eq!(
        sa["sha256"], sb["sha256"],
        "same directory, different streams"
    );
    assert!(sb["added_bytes"].as_u64().unwrap() < 4096, "{sb}");

    // tar -xpf of the export reproduces the directory.
    let stream = store.export(&a);
    let out = store.scratch("out");
    std::fs::create_dir(&out).unwrap();
    let tarball = store.scratch("a.tar");
    std::fs::write(&tarball, &stream).unwrap();
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf {} -C {}",
        tarball.display(),
        out.display()
    ));
    let (want, want_links) = snapshot_of(&src);
    let (got, got_links) = snapshot_of(&out);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{}", path.display());
    }
    assert_eq!(want_links, got_links, "hardlink groups");
    assert!(want_links
        .iter()
        .any(|g| g.contains(&PathBuf::from("long/link-again"))));
    // The sparse file went in sparse and came out sparse.
    let m = std::fs::metadata(out.join("sparse/disk.img")).unwrap();
    assert!(
        m.blocks() * 512 < m.len() / 2,
        "extracted sparse file is not sparse"
    );
    // A change shows up, and only it (both names of a hardlinked file).
    write_file(&src.join("etc/hostname"), b"vm2\n");
    let c = snapshot_dir(&store, &src, &[]);
    assert_eq!(
        store.ok(&["diff", &a, &c]),
        "M /etc/hostname\nM /etc/hostname.hard\n"
    );
}

#[test]
fn excludes_and_bad_directories() {
    let store = TestStore::new();
    let src = store.scratch("src");
    varied_tree(&src);
    let id = snapshot_dir(
        &store,
        &src,
        &[
            "--exclude",
            "*.bin",
            "--exclude",
            "dev",
            "--exclude",
            "usr/share/*",
        ],
    );
    let listing = store.ok(&["ls", &id, "-R"]);
    assert!(!listing.contains(".bin\n"), "{listing}");
    assert!(!listing.contains("/dev"), "{listing}");
    assert!(
        listing.contains("/usr/share\n") && !listing.contains("/usr/share/doc"),
        "{listing}"
    );
    assert!(listing.contains("/usr/bin/tool\n"), "{listing}");
    // `./` names a member from the top, as `tar -C DIR --exclude=./proc .` does.
    let rooted = snapshot_dir(&store, &src, &["--exclude", "./usr/bin"]);
    let listing = store.ok(&["ls", &rooted, "-R"]);
    assert!(!listing.contains("/usr/bin"), "{listing}");
    assert!(listing.contains("/usr/share/"), "{listing}");

    // A pattern that is not UTF-8 excludes the names of those bytes.
    {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        write_file(&src.join(OsStr::from_bytes(b"junk\xff.tmp")), b"x\n");
        write_file(&src.join("junk-\u{ff}.tmp"), b"y\n");
        let out = store
            .cmd(&["snapshot", "--dir", src.to_str().unwrap(), "--exclude"])
            .arg(OsStr::from_bytes(b"junk\xff*"))
            .output()
            .unwrap();
        assert_success(&out, &["snapshot", "--exclude junk\\xff*"]);
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let top = store.ok(&["ls", &id]);
        assert!(!top.contains("/junk\\377.tmp"), "{top}");
        assert!(top.contains("/junk-\u{ff}.tmp"), "{top}");
    }

    let missing = store.scratch("missing");
    let out = store.run(&["snapshot", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("--dir {}: does not exist", missing.display())),
        "{}",
        stderr(&out)
    );
    // Refused before a store is made.
    let fresh = store.scratch("fresh-store");
    let out = cellar_at(&fresh, &["snapshot", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!fresh.exists(), "a refused snapshot made a store");
    // A directory as SOURCE: refused up front, pointing at --dir.
    let out = store.run(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("use --dir {}", src.display())),
        "{}",
        stderr(&out)
    );
    // And on stdin (`snapshot - < DIR`), before a store is made.
    let out = std::process::Command::new(cellar_bin())
        .arg("--store")
        .arg(&fresh)
        .args(["snapshot", "-"])
        .stdin(std::fs::File::open(&src).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stdin is a directory"),
        "{}",
        stderr(&out)
    );
    assert!(!fresh.exists(), "a refused snapshot made a store");
    let out = store.run(&["snapshot", "--exclude", "x", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A directory holding the store is archived without it, as GNU tar leaves out its own
/// archive: the store's packs grow while they would be read, and each snapshot would hold
/// the last. A directory inside the store is refused.
#[test]
fn the_store_itself_is_left_out() {
    let store = TestStore::new();
    // The store is `DIR/store`; DIR also holds the data.
    let dir = store.dir.path();
    write_file(&dir.join("data/a"), b"a\n");
    for _ in 0..2 {
        let out = store.run(&["snapshot", "--dir", dir.to_str().unwrap(), "--json"]);
        assert_success(&out, &["snapshot", "--dir"]);
        let err = stderr(&out);
        assert!(
            err.contains("/store: is the store being written to; not dumped"),
            "{err}"
        );
    }
    let listing = store.ok(&["ls", "default", "-R"]);
    assert!(listing.contains("/data/a\n"), "{listing}");
    assert!(!listing.contains("/store"), "{listing}");
    let packs = store.path().join("packs");
    let out = store.run(&["snapshot", "--dir", packs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("inside the store"),
        "{}",
        stderr(&out)
    );
}

/// Unmounts on drop, even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_stops_at_mount_points() {
    let store = TestStore::new();
    let src = store.scratch("src");
    write_file(&src.join("here.txt"), b"on the root fs\n");
    let mnt = src.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount -t tmpfs cellar-test {}", mnt.display()));
    let _guard = Mount(mnt.clone());
    write_file(&mnt.join("elsewhere.txt"), b"on another fs\n");

    let all = snapshot_dir(&store, &src, &[]);
    assert!(store
        .ok(&["ls", &all, "/mnt"])
        .contains("/mnt/elsewhere.txt"));
    let one = snapshot_dir(&store, &src, &["--one-file-system"]);
    assert_eq!(store.ok(&["ls", &one, "/mnt"]), "");
    assert!(store.ok(&["ls", &one]).contains("/here.txt\n"));
}

/// An entry is archived by its name inside DIR, wherever DIR is: a file 3,900 bytes deep in a
/// DIR whose own path is long (past PATH_MAX together) goes in, and DIR given by its long path
/// or as `.` from inside gives the same stream.
#[test]
fn entries_past_path_max_from_a_long_dir_path_are_archived() {
    let store = TestStore::new();
    let dir = store
        .scratch(&"q".repeat(200))
        .join("r".repeat(200))
        .join("s".repeat(200));
    // Made from inside DIR: the whole path is too long for one call.
    let chain = vec!["e".repeat(99); 39].join("/");
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!(
        "cd '{}' && mkdir -p {chain} && echo deep > {chain}/file",
        dir.display()
    ));
    let deep = dir.join(&chain);
    assert!(deep.join("file").as_os_str().len() > 4096);

    let out = store.run(&["snapshot", "--name", "long", "--dir", dir.to_str().unwrap()]);
    assert_success(&out, &["snapshot", "--dir", "long path"]);
    assert_eq!(stderr(&out), "", "warnings");
    let out = store
        .cmd(&["snapshot", "--name", "dot", "--dir", "."])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success(&out, &["snapshot", "--dir", "."]);
    let sha = |name: &str| store.json(&["show", name, "--json"])["sha256"].clone();
    assert_eq!(sha("long"), sha("dot"), "the same tree, two streams");
    let listed = store.ok(&["ls", "-R", "long", "/"]);
    assert_eq!(
        listed.lines().filter(|l| l.ends_with("/file")).count(),
        1,
        "{listed}"
    );
}

/// The walk holds a descriptor for every directory level it is inside: a tree deeper than the
/// soft open-files limit goes in (cellar raises it to the hard one); one deeper than the hard
/// limit is an error saying so, and nothing is recorded.
#[test]
fn a_tree_deeper_than_the_open_files_limit_is_an_error_not_a_partial_snapshot() {
    use std::os::unix::process::CommandExt;
    let store = TestStore::new();
    let dir = store.scratch("deep");
    let chain = dir.join(vec!["d"; 200].join("/"));
    std::fs::create_dir_all(&chain).unwrap();
    std::fs::write(chain.join("file"), "deep\n").unwrap();
    let limited = |name: &str, soft: u64, hard: u64| {
        let mut cmd = store.cmd(&["snapshot", "--name", name, "--dir", dir.to_str().unwrap()]);
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only the struct copied here.
        unsafe {
            cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        cmd.output().unwrap()
    };
    let out = limited("raised", 100, 1000);
    assert_success(&out, &["snapshot", "--dir", "200 deep, soft limit 100"]);
    assert!(store
        .ok(&["ls", "-R", "raised", "/"])
        .contains(&format!("{}/file\n", "/d".repeat(200))));

    let out = limited("short", 100, 100);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("levels it is inside") && err.contains("ulimit -n"),
        "{err}"
    );
    assert_eq!(
        store.ok(&["list"]).lines().count(),
        2,
        "a heading and the first"
    );
}

/// Run `script` with `sh -c` in a command line, `cellar` and `store` given as $1 and $2.
fn sh_with_cellar(wrapper: &[&str], script: &str, store: &Path) -> std::process::Output {
    std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args(["sh", "-c", script, "sh", cellar_bin()])
        .arg(store)
        .env_remove("CELLAR_STORE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A directory that can be read but not searched (mode 0644, met by a user other than root)
/// is archived, with a warning for each entry it holds, as GNU tar does: its listing is read
/// from its descriptor, which needs no search permission. The snapshot is recorded, and the
/// exit status (3, restic's) says it lacks what could not be read, as GNU tar's (2) does.
#[test]
fn a_directory_readable_but_not_searchable_is_archived_without_its_contents() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    write_file(&dir.join("ronly/f"), b"f\n");
    write_file(&dir.join("ok"), b"ok\n");
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    for (path, mode) in [
        (tmp.path(), 0o755),
        (&dir.join("ronly"), 0o644),
        (&store, 0o777),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let script = format!(
        "exec \"$1\" --store \"$2\" snapshot --name r --dir '{}' --json",
        dir.display()
    );
    let out = sh_with_cellar(&nobody, &script, &store);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("/t/ronly/f: Permission denied"), "{err}");
    assert!(
        err.contains("recorded without 1 path(s) it could not read"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unreadable"], 1, "{report}");
    let listed = String::from_utf8(cellar_at(&store, &["ls", "-R", "r", "/"]).stdout).unwrap();
    assert_eq!(listed, "/ok\n/ronly\n");
}

/// Without /proc (a bare chroot) entries are reached by their paths from DIR: the snapshot
/// is the same stream, with a warning saying what that gives up.
#[test]
fn without_proc_a_directory_is_archived_by_paths_with_a_warning() {
    let store = TestStore::new();
    let src = store.scratch("src");
    varied_tree(&src);
    let with_proc = snapshot_dir(&store, &src, &["--name", "with"]);
    let script = format!(
        "umount -l /proc && exec \"$1\" --store \"$2\" snapshot --name without --dir '{}'",
        src.display()
    );
    let out = sh_with_cellar(&["unshare", "--mount"], &script, &store.path());
    assert_success(&out, &["snapshot", "--dir", "without /proc"]);
    assert!(
        stderr(&out).contains("/proc is not mounted"),
        "{}",
        stderr(&out)
    );
    let sha = |name: &str| store.json(&["show", name, "--json"])["sha256"].clone();
    assert_eq!(
        sha(&with_proc),
        sha("without"),
        "the same tree, the same stream"
    );
}
