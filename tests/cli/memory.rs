//! Bounded memory: a multi-GiB stream, generated on the fly, ingests and exports in a small,
//! fixed amount of memory. (Peak RSS is a bound, not a timing.)

use std::io::{BufRead, Read, Write};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::common::*;

const FILE_SIZE: u64 = 256 << 20;
const FILES: u64 = 20; // 5 GiB of payload
const RSS_LIMIT_KIB: i64 = 200 << 10;

/// A plain file's header, 0644.
fn file_header(name: &str, size: u64) -> [u8; 512] {
    ustar_header(name.as_bytes(), b'0', size, b"", 0o644)
}

/// Write the stream: every 4 KiB block is distinct (so nothing dedups) but compresses well
/// (so the test stays quick and small on disk). Returns its sha256.
fn generate(out: &mut dyn Write) -> String {
    let mut sha = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut n: u64 = 0;
    let mut emit = |bytes: &[u8], sha: &mut Sha256| {
        sha.update(bytes);
        out.write_all(bytes).unwrap();
    };
    for f in 0..FILES {
        emit(&file_header(&format!("data/file{f}"), FILE_SIZE), &mut sha);
        for _ in 0..FILE_SIZE / block.len() as u64 {
            for small in block.chunks_mut(4096) {
                n += 1;
                for w in small.chunks_mut(8) {
                    w.copy_from_slice(&n.to_le_bytes());
                }
            }
            emit(&block, &mut sha);
        }
    }
    emit(&[0u8; 1024], &mut sha);
    hex::encode(sha.finalize())
}

/// Wait for a child started by [`measured`]; returns its peak RSS in KiB and whether it
/// succeeded.
///
/// The peak is taken by GNU time, not by our own wait4: a child forked from this (large,
/// multi-threaded) test process starts with the parent's RSS as its high-water mark.
fn peak_rss(child: std::process::Child, report: &std::path::Path) -> (i64, bool) {
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    let kib = text
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("GNU time wrote {text:?}"));
    (kib, out.status.success())
}

/// `cellar ARGS` run under GNU time, which writes the peak RSS to `report`.
fn measured(store: &TestStore, args: &[&str], report: &std::path::Path) -> std::process::Command {
    assert!(
        std::path::Path::new("/usr/bin/time").exists(),
        "GNU time is missing; run scripts/test"
    );
    let mut c = std::process::Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report)
        .arg(cellar_bin())
        .arg("--store")
        .arg(store.path())
        .args(args);
    c
}

/// `cellar snapshot --name NAME -` under GNU time, its stdin written by `feed` on a thread:
/// the peak RSS (the snapshot must succeed) and what `feed` returned.
fn snapshot_fed<T: Send + 'static>(
    store: &TestStore,
    name: &str,
    report: &std::path::Path,
    feed: impl FnOnce(&mut dyn Write) -> T + Send + 'static,
) -> (i64, T) {
    let mut child = measured(store, &["snapshot", "--name", name, "-"], report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        let fed = feed(&mut out);
        out.flush().unwrap();
        fed
    });
    let (rss, ok) = peak_rss(child, report);
    let fed = feeder.join().unwrap();
    assert!(ok, "snapshot {name} failed");
    (rss, fed)
}

/// A tar file is mapped rather than read: its pages must leave the process as the ingest goes
/// past them, or the peak RSS would be the file's size. The file is sparse (one member of
/// zeros, a hole on disk), so it costs no disk space; its pages still count when mapped.
#[test]
fn a_mapped_1_gib_file_ingests_in_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let store = TestStore::new();
    let file = store.scratch("sparse.tar");
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(&file_header("zeros", SIZE)).unwrap();
    f.set_len(512 + SIZE + 1024).unwrap();
    drop(f);
    let report = store.scratch("rss");
    let child = measured(&store, &["snapshot", file.to_str().unwrap()], &report)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (rss, ok) = peak_rss(child, &report);
    assert!(ok, "snapshot failed");
    eprintln!("ingest of a mapped 1 GiB file: peak RSS {} MiB", rss >> 10);
    assert!(rss < RSS_LIMIT_KIB, "ingest peak RSS {} MiB", rss >> 10);
}

#[test]
fn a_5_gib_stream_ingests_and_exports_in_bounded_memory() {
    let store = TestStore::new();
    let report = store.scratch("rss");
    let (rss, sha) = snapshot_fed(&store, "big", &report, generate);
    eprintln!(
        "ingest of {} GiB: peak RSS {} MiB",
        (FILES * FILE_SIZE) >> 30,
        rss >> 10
    );
    assert!(rss < RSS_LIMIT_KIB, "ingest peak RSS {} MiB", rss >> 10);
    let shown = store.json(&["show", "big", "--json"]);
    assert_eq!(shown["sha256"], sha);
    assert_eq!(shown["size"], FILES * (FILE_SIZE + 512) + 1024);

    let mut child = measured(&store, &["export", "big"], &report)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        hex::encode(sha.finalize())
    });
    let (rss, ok) = peak_rss(child, &report);
    assert!(ok, "export failed");
    eprintln!("export: peak RSS {} MiB", rss >> 10);
    assert_eq!(reader.join().unwrap(), sha);
    assert!(rss < RSS_LIMIT_KIB, "export peak RSS {} MiB", rss >> 10);

    // Served as an OCI layer (the stream itself), streamed to a client that hashes it.
    let mut child = measured(&store, &["serve", "--listen", "127.0.0.1:0"], &report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve ended").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let (len, served) = stream_get(&addr, &format!("/v2/big/blobs/sha256:{sha}"));
    // The signal goes to cellar itself: GNU time, killed, would report nothing.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let cellar: i32 = std::fs::read_to_string(&children)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(cellar, libc::SIGTERM) };
    let (rss, ok) = peak_rss(child, &report);
    assert!(ok, "serve did not stop cleanly on SIGTERM");
    eprintln!("serve: peak RSS {} MiB", rss >> 10);
    assert_eq!(len, FILES * (FILE_SIZE + 512) + 1024);
    assert_eq!(served, sha);
    assert!(rss < RSS_LIMIT_KIB, "serve peak RSS {} MiB", rss >> 10);
}

/// GET `path` and hash the body as it arrives (never held whole): its length and sha256.
fn stream_get(addr: &str, path: &str) -> (u64, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = std::io::BufReader::with_capacity(1 << 20, conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        len += n as u64;
    }
    (len, hex::encode(sha.finalize()))
}

/// A million small members: the tree and the new-chunk ids spill to the ingest's scratch
/// table instead of growing the heap. The same stream again, with the first as its parent (a
/// walk of a million members' pieces to find delta bases), stays in the same bound.
#[test]
fn a_million_members_ingest_in_bounded_memory() {
    const DIRS: u64 = 1000;
    const PER_DIR: u64 = 1000;
    let store = TestStore::new();
    let report = store.scratch("rss");
    let ingest = || {
        let feed = |out: &mut dyn Write| {
            let mut block = [0u8; 512];
            for d in 0..DIRS {
                for f in 0..PER_DIR {
                    let data = format!("file {d} {f}\n");
                    out.write_all(&file_header(&format!("d{d:04}/f{f:04}"), data.len() as u64))
                        .unwrap();
                    block.fill(0);
                    block[..data.len()].copy_from_slice(data.as_bytes());
                    out.write_all(&block).unwrap();
                }
            }
            out.write_all(&[0u8; 1024]).unwrap();
        };
        snapshot_fed(&store, "many", &report, feed).0
    };
    // Again: the parent's metadata is read through the 32 MiB frame cache, and what waits for
    // its piece anchors is bounded (it grew with the stream: 191 MiB here before, 228 MiB for
    // 3,000,000 empty members in a release build).
    for (run, bound) in [("first", 128), ("again", 176)] {
        let rss = ingest();
        eprintln!(
            "ingest of {} members ({run}): peak RSS {} MiB",
            DIRS * PER_DIR,
            rss >> 10
        );
        assert!(
            rss < bound << 10,
            "ingest ({run}) peak RSS {} MiB",
            rss >> 10
        );
    }
    assert_eq!(
        store.json(&["show", "many", "--json"])["members"],
        DIRS * PER_DIR
    );
    assert_eq!(
        store.ok(&["ls", "many", "/d0500"]).lines().count() as u64,
        PER_DIR
    );
    assert_eq!(store.ok(&["cat", "many", "/d0999/f0999"]), "file 999 999\n");
}
