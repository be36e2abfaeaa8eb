//! Helpers shared by the integration tests: a store in a temp dir, running the binary, making
//! trees and tar streams with real tools.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub fn cellar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cellar")
}

/// A scratch directory holding a store (`DIR/store`) and whatever else a test needs.
pub struct TestStore {
    pub dir: TempDir,
}

impl TestStore {
    pub fn new() -> Self {
        TestStore {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A path for test files beside the store.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cellar_bin());
        c.arg("--store").arg(self.path()).args(args);
        c.env_remove("CELLAR_STORE");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cellar")
    }

    /// Run and require success; returns stdout as text.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cellar");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            // The reader may stop early on bad input; a broken pipe is fine then.
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait cellar");
        writer.join().expect("stdin writer");
        out
    }

    /// Snapshot a tar stream given as bytes on stdin; returns the short id.
    pub fn snapshot_bytes(&self, bytes: &[u8], name: &str) -> String {
        let out = self.run_stdin(&["snapshot", "--name", name, "-"], bytes);
        assert_success(&out, &["snapshot", "--name", name, "-"]);
        let id = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string();
        assert!(
            id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "snapshot printed {id:?}, not a short id"
        );
        id
    }

    pub fn export(&self, snap: &str) -> Vec<u8> {
        let out = self.run(&["export", snap]);
        assert_success(&out, &["export", snap]);
        out.stdout
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("valid JSON")
    }

    pub fn snapshot_count(&self) -> usize {
        if !self.path().join("cellar.db").exists() {
            return 0;
        }
        self.json(&["list", "--json"])
            .as_array()
            .expect("array")
            .len()
    }

    /// Pack files on disk (sealed ones; temp files excluded).
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let packs = self.path().join("packs");
        if let Ok(dirs) = std::fs::read_dir(&packs) {
            for d in dirs.flatten() {
                for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn stored_bytes(&self) -> u64 {
        self.json(&["stats", "--json"])["stored_bytes"]
            .as_u64()
            .expect("stored_bytes")
    }

    /// Open the index directly (read-only) for checks the CLI does not expose.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path().join("cellar.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open index")
    }
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "cellar {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A tool the tests need; `scripts/test` installs them. Missing ones fail loudly, never skip.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; run scripts/test, which installs what tests need"
    );
}

/// Run a shell script (bash, `set -euo pipefail`), panicking with its stderr if it fails.
pub fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run a tar-writing command (argv) and return its stdout. Writers that exit 1 with a warning
/// (e.g. a name too long for the format) still produce a stream the tests can use.
pub fn tar_stream(argv: &[&str]) -> Vec<u8> {
    require(argv[0]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "{argv:?} wrote nothing");
    out.stdout
}

/// Deterministic pseudo-random bytes (xorshift), for file contents that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible text-like bytes.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta ", "eta\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = seed as usize;
    while out.len() < len {
        out.extend_from_slice(words[i % words.len()].as_bytes());
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, data).expect("write file");
}
