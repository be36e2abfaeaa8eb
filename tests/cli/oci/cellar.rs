//! What the tests of cellar's own images share: a snapshot with GNU tar's extraction beside
//! it, and `cellar serve` running in the background.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// `cellar serve` on an ephemeral loopback port, killed on drop.
pub(crate) struct Served {
    child: Child,
    addr: String,
}

impl Served {
    pub(crate) fn start(store: &TestStore, args: &[&str]) -> Served {
        Self::start_at(&store.path(), args)
    }

    /// `cellar --store DIR serve ...`: for a store seen at another path.
    pub(crate) fn start_at(dir: &Path, args: &[&str]) -> Served {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let mut child = Command::new(cellar_bin())
            .arg("--store")
            .arg(dir)
            .args(&argv)
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
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, addr }
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
