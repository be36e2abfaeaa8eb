//! What the tests of cellar's own images share: a snapshot with GNU tar's extraction beside
//! it, and `cellar serve` running in the background.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::browse::oracle::extract;
use crate::common::*;

/// `varied_tree` (every entry type, sparse files, xattrs, odd names) without its file dated
/// past 2262: umoci, like all Go programs, cannot set a time past what nanoseconds since 1970
/// fit in an int64, so it could never unpack that one right.
pub(crate) fn image_tree(root: &Path) {
    crate::trees::varied_tree(root);
    std::fs::remove_file(root.join("ids/far-future")).unwrap();
}

/// `portable_tree` with regular files whose names start `.wh.`, which no OCI layer can carry
/// (they would read as whiteouts): `/etc/.wh.keep` and eight in `/many`, nine in all.
pub(crate) fn whiteout_named_tree(root: &Path) {
    crate::trees::portable_tree(root);
    write_file(&root.join("etc/.wh.keep"), b"not a whiteout\n");
    for i in 0..8 {
        write_file(&root.join(format!("many/.wh.{i}")), b"x");
    }
    write_file(&root.join("many/plain"), b"kept\n");
}

/// How a warning names what an image of `whiteout_named_tree` leaves out.
pub(crate) const WHITEOUT_NAMED_LEFT_OUT: &str = "9 paths named .wh.* (OCI reads such names as \
    whiteouts): /etc/.wh.keep, /many/.wh.0, /many/.wh.1, /many/.wh.2, /many/.wh.3 and 4 more";

/// `cellar ARGS --json` (`export`, `push`, `pack`) made an image of snapshot `id` of "vm", a
/// `whiteout_named_tree`: it succeeded, warned of what the image leaves out and reported it.
/// Returns the report.
pub(crate) fn assert_left_out_reported(
    out: &std::process::Output,
    args: &[&str],
    id: &str,
) -> serde_json::Value {
    assert_success(out, args);
    let warning =
        format!("cellar: warning: the image of vm ({id}) leaves out {WHITEOUT_NAMED_LEFT_OUT}");
    assert!(stderr(out).contains(&warning), "{args:?}: {}", stderr(out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut paths = vec!["/etc/.wh.keep".to_string()];
    paths.extend((0..8).map(|i| format!("/many/.wh.{i}")));
    assert_eq!(
        report["left_out"],
        serde_json::json!({ "count": 9, "paths": paths }),
        "{args:?}"
    );
    report
}

/// A snapshot of `fill`'s tree as GNU tar streams it, and GNU tar's extraction of the stream.
pub(crate) struct Snap {
    pub(crate) id: String,
    pub(crate) stream: Vec<u8>,
    pub(crate) extraction: PathBuf,
}

/// Snapshot the tree at `root` (as `tar --xattrs -cf - -C root .` streams it) into lineage
/// `name`; `label` names the extraction's directory.
pub(crate) fn snap_dir(store: &TestStore, root: &Path, name: &str, label: &str) -> Snap {
    let stream = tar_stream(&[
        "tar",
        "--format=posix",
        "--xattrs",
        "--xattrs-include=*",
        "-cf",
        "-",
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    let id = store.snapshot_bytes(&stream, name);
    let extraction = store.scratch(&format!("extracted-{label}"));
    extract(store, &stream, &extraction);
    Snap {
        id,
        stream,
        extraction,
    }
}

/// Two snapshots of lineage `vm`: `image_tree`, then the same with `names/` gone and
/// `etc/new` added.
pub(crate) fn two_snapshots(store: &TestStore) -> (Snap, Snap) {
    let root = store.scratch("tree");
    image_tree(&root);
    let s1 = snap_dir(store, &root, "vm", "1");
    std::fs::remove_dir_all(root.join("names")).unwrap();
    write_file(&root.join("etc/new"), b"new\n");
    (s1, snap_dir(store, &root, "vm", "2"))
}

/// `cellar serve` on an ephemeral loopback port, killed on drop.
pub(crate) struct Served {
    pub(crate) child: Child,
    addr: String,
    /// What it has written on stderr so far, line by line.
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    pub(crate) fn start(store: &TestStore, args: &[&str]) -> Served {
        Self::start_at(&store.path(), args)
    }

    /// `cellar --store DIR serve ...`: for a store seen at another path.
    pub(crate) fn start_at(dir: &Path, args: &[&str]) -> Served {
        Self::start_with_env(dir, args, &[])
    }

    /// The same, with `env` set for the server (a failpoint).
    pub(crate) fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let mut child = Command::new(cellar_bin())
            .arg("--store")
            .arg(dir)
            .args(&argv)
            .envs(env.iter().copied())
            .env_remove("CELLAR_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cellar serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            assert!(Instant::now() < deadline, "cellar serve did not start");
            let line = lines
                .next()
                .expect("cellar serve ended before listening")
                .expect("read stderr");
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .for_each(|l| kept.lock().unwrap().push(l))
        });
        Served { child, addr, log }
    }

    /// Wait (a few seconds at most) for a line of its stderr that contains `needle`.
    pub(crate) fn log_line(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its stderr so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// `docker://ADDR/REPO:TAG` for skopeo.
    pub(crate) fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
