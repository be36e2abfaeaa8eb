//! Tests of the directory writer (they run as root: device nodes, owners, a tmpfs mount), and
//! the helpers they share for writing a tree and reading its stream back.

mod compare;
mod encoding;
mod interop;
mod stream;
mod tree;
mod walk;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use self::tree::p;
use super::{child, list_dir, member_name, write_dir, DirOptions, DirReport};
use crate::tar::pax::{self, PaxRecord};
use crate::tar::{IoSource, TarReader};

fn write(root: &Path, opts: &DirOptions) -> (Vec<u8>, DirReport) {
    let mut out = Vec::new();
    let report = write_dir(root, opts, &mut out).expect("write_dir");
    (out, report)
}

fn no_opts() -> DirOptions {
    DirOptions::default()
}

/// What the crate's own reader sees in one member.
struct Read {
    path: Vec<u8>,
    typeflag: u8,
    link: Vec<u8>,
    pax: Vec<PaxRecord>,
    payload: Vec<u8>,
}

impl Read {
    /// The real name: sparse members carry it in `GNU.sparse.name`.
    fn name(&self) -> Vec<u8> {
        pax::lookup(&self.pax, "GNU.sparse.name")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| self.path.clone())
    }
}

fn read_back(stream: &[u8]) -> Vec<Read> {
    let mut reader = TarReader::new(IoSource::new(stream));
    let mut members = Vec::new();
    while let Ok(m) = reader.next_member().expect("the reader accepts the stream") {
        let mut payload = vec![0; m.payload_len as usize];
        let mut at = 0;
        while at < payload.len() {
            at += reader.read_payload(&mut payload[at..]).expect("payload");
        }
        members.push(Read {
            path: m.path,
            typeflag: m.typeflag,
            link: m.link,
            pax: m.pax,
            payload,
        });
    }
    let mut rest = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match reader.read_rest(&mut buf).unwrap() {
            0 => break,
            n => rest.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        rest.iter().all(|&b| b == 0),
        "only zeros after the end marker"
    );
    members
}

/// The member names a correct walk of `root` gives, in order (sockets left out).
fn expected_names(root: &Path) -> Vec<Vec<u8>> {
    fn walk(root: &Path, rel: &[u8], out: &mut Vec<Vec<u8>>) {
        for name in list_dir(&p(root, rel)).unwrap() {
            let rel = child(rel, &name);
            let ft = fs::symlink_metadata(p(root, &rel)).unwrap().file_type();
            if ft.is_socket() {
                continue;
            }
            out.push(member_name(&rel, ft.is_dir()));
            if ft.is_dir() {
                walk(root, &rel, out);
            }
        }
    }
    let mut names = vec![b"./".to_vec()];
    walk(root, b"", &mut names);
    names
}

fn names_with(root: &Path, opts: &DirOptions) -> Vec<String> {
    let (stream, _) = write(root, opts);
    read_back(&stream)
        .iter()
        .map(|m| String::from_utf8_lossy(&m.name()).into_owned())
        .collect()
}
