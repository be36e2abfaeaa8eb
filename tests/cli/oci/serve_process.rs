//! The `serve` process itself: where it says it listens, how it stops, how it bounds downloads.

use std::io::{BufRead, Write};
use std::process::{Child, Stdio};

use super::*;
use crate::common::*;

/// `serve --listen 127.0.0.1:0 --json` over a store holding one snapshot named `vm`: the
/// child (stderr piped) and what its JSON line said.
fn serve_json(store: &TestStore) -> (Child, serde_json::Value) {
    let root = store.scratch("tree");
    write_file(&root.join("f"), b"f\n");
    store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let mut child = store
        .cmd(&["serve", "--listen", "127.0.0.1:0", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let said = serde_json::from_str(&line).expect(&line);
    (child, said)
}

/// `serve --json` says on stdout, once it listens, where: the port `--listen HOST:0` picked,
/// for a script that starts it and then pulls.
#[test]
fn serve_json_says_where_it_listens() {
    let store = TestStore::new();
    let (mut child, said) = serve_json(&store);
    let addr = said["listen"].as_str().expect("listen").to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{said}"
    );
    assert_eq!(said["url"], format!("http://{addr}/v2/"), "{said}");
    let r = http_get(&addr, "/v2/vm/tags/list", &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "vm", "{}", r.text());
}

/// A stop signal ends `serve` even while a client holds a request open (its header never
/// finished): open requests get a few seconds, then are cut off. It kept running until the
/// client left.
#[test]
fn serve_stops_on_sigterm_with_a_request_held_open() {
    let store = TestStore::new();
    let (child, said) = serve_json(&store);
    let addr = said["listen"].as_str().expect("listen").to_string();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = output_within_a_minute(child, "serve after SIGTERM");
    drop(half);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("cut off"), "{err}");
}

/// A client that stops reading is cut off after `--send-timeout`, and its download's slot is
/// given back: with `--max-downloads 1`, a second download waits its turn behind the stalled
/// one, then gets every byte. Before, the stalled one held its thread for as long as the
/// client kept the connection, and a few hundred such clients starved every request.
#[test]
fn a_stalled_download_is_cut_off_and_its_slot_given_back() {
    use std::io::Read;

    let store = TestStore::new();
    let dir = store.scratch("tree");
    // Far more than the socket buffers and the server's queue hold.
    write_file(&dir.join("big.bin"), &noise(48_000_000, 7));
    let stream = tar_of_dir(&dir);
    store.snapshot_bytes(&stream, "vm");
    let served = Served::start(&store, &["--max-downloads", "1", "--send-timeout", "1"]);
    let path = format!("/v2/vm/blobs/sha256:{}", sha256_hex(&stream));

    let mut stalled = std::net::TcpStream::connect(served.addr()).unwrap();
    write!(stalled, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    stalled
        .read_exact(&mut first)
        .expect("the download started");
    // ...and is never read again while the second one runs.
    let r = http_get(served.addr(), &path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == stream, "the second download's bytes");
    assert!(
        served.log_line("took nothing for 1 s").is_some(),
        "{:?}",
        served.log()
    );
    drop(stalled);
}

/// A connection that sends half a request's header, or none, or nothing more after one, is
/// closed after `--header-timeout`; other clients are served meanwhile. Before, each was held
/// for as long as its client liked, and enough of them used up the process's descriptors.
#[test]
fn a_connection_that_sends_no_whole_header_is_closed() {
    use std::io::Read;

    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("f"), b"f\n");
    store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let served = Served::start(&store, &["--header-timeout", "1"]);
    let connect = || {
        let c = std::net::TcpStream::connect(served.addr()).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        c
    };
    let mut half = connect();
    write!(half, "GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut silent = connect();
    let mut idle = connect();
    write!(idle, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Served meanwhile.
    assert_eq!(http_get(served.addr(), "/v2/", &[]).status, 200);
    for (what, conn) in [("half", &mut half), ("silent", &mut silent)] {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{what}: still open ({e})"));
        assert!(
            rest.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The one that asked was answered, then closed once it said nothing more.
    let mut answered = Vec::new();
    idle.read_to_end(&mut answered)
        .expect("idle after a request: still open");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
}
