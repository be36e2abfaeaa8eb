//! The harness checked on its own, with an image only real tools made: umoci builds it from a
//! GNU tar stream, skopeo pushes it to the registry and pulls it back, umoci unpacks it, and the
//! rootfs must be GNU tar's extraction of the stream. Once cellar writes images, its tests use
//! the same helpers with cellar in umoci's place.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::browse::oracle::extract;
use crate::common::*;
use crate::trees::{mknod, portable_tree, set_mtime, set_xattr};

/// Small, but every entry type a layer carries: files, a directory with an old mtime, a
/// symlink, a hardlink, a fifo, devices, setuid and sticky modes, another owner.
fn small_tree(root: &Path) {
    portable_tree(root);
    std::fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/fifo"), libc::S_IFIFO | 0o644, 0, 0);
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&root.join("dev/loop9"), libc::S_IFBLK | 0o660, 7, 9);
    let suid = root.join("usr/bin/suid");
    write_file(&suid, b"#!/bin/sh\n");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(root.join("etc/hostname"), Some(1000), Some(100)).unwrap();
    set_mtime(&root.join("var/empty-dir"), 1_000_000_000);
    set_mtime(root, 1_200_000_000);
}

/// GNU tar's stream of `fill`'s tree, as a file beside the store, and its extraction.
fn stream_and_extraction(
    store: &TestStore,
    fill: fn(&Path),
    writer: &[&str],
) -> (Vec<u8>, std::path::PathBuf) {
    let root = store.scratch("tree");
    fill(&root);
    let mut argv = writer.to_vec();
    argv.extend(["-C", root.to_str().unwrap(), "."]);
    let stream = tar_stream(&argv);
    let ex = store.scratch("extracted");
    extract(store, &stream, &ex);
    (stream, ex)
}

#[test]
fn umoci_image_through_registry_unpacks_to_gnu_tar_extraction() {
    let store = TestStore::new();
    let (stream, ex) = stream_and_extraction(&store, small_tree, &["tar", "-cf", "-"]);
    let tar = write_bytes(&store.scratch("layer.tar"), &stream);

    // A layout made by umoci alone: one gzip layer whose diff_id is the stream's sha256.
    let l1 = store.scratch("layout1");
    umoci_image_from_tars(&l1, "t", &[&tar]);
    let img = oci_image(&l1, "t");
    assert_eq!(img.layers.len(), 1);
    assert_eq!(
        layer_compression(&img.layers[0].media_type),
        Compression::Gzip
    );
    assert!(
        img.layer_tar(0) == stream,
        "umoci's layer is not the stream"
    );
    assert_eq!(img.config_desc.media_type, OCI_CONFIG);

    // Pushed to the registry and pulled back into a second layout.
    let reg = Registry::start();
    let src = format!("oci:{}:t", l1.display());
    skopeo_copy(&src, &reg.docker_ref("lab/img:t"), &[]);
    let l2 = store.scratch("layout2");
    let dst = format!("oci:{}:t", l2.display());
    skopeo_copy(&reg.docker_ref("lab/img:t"), &dst, &[]);
    let back = oci_image(&l2, "t");
    assert_eq!(back.manifest_bytes, img.manifest_bytes, "manifest changed");
    assert_eq!(back.config, img.config);
    back.assert_diff_ids();

    // The distribution API, by hand.
    let v2 = http_get(reg.addr(), "/v2/", &[]);
    assert_eq!(v2.status, 200, "{}", v2.text());
    assert_eq!(
        v2.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    let m = http_get(reg.addr(), "/v2/lab/img/manifests/t", &accept);
    assert_eq!(m.status, 200, "{}\n{}", m.text(), reg.log_text());
    let digest = format!("sha256:{}", sha256_hex(&m.body));
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(digest, img.manifest_desc.digest);
    assert_eq!(m.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(skopeo_inspect_raw(&reg.docker_ref("lab/img:t")), m.body);
    assert_eq!(
        skopeo_inspect_config(&reg.docker_ref("lab/img:t")),
        img.config
    );
    let h = http_head(
        reg.addr(),
        &format!("/v2/lab/img/manifests/{digest}"),
        &accept,
    );
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        h.header("content-length"),
        Some(m.body.len().to_string().as_str())
    );
    let layer = &img.layers[0];
    let b = http_get(
        reg.addr(),
        &format!("/v2/lab/img/blobs/{}", layer.digest),
        &[],
    );
    assert_eq!(b.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&b.body)), layer.digest);
    assert_eq!(b.body.len() as u64, layer.size);
    let missing = http_get(reg.addr(), "/v2/lab/img/manifests/nope", &accept);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");

    // As a docker-archive too: one image, its layer the stream itself (uncompressed).
    let archive = store.scratch("image.tar");
    let archive_ref = format!("docker-archive:{}:lab/img:t", archive.display());
    skopeo_copy(&src, &archive_ref, &[]);
    let am = docker_archive_manifest(&archive);
    // skopeo 1.9 writes the reference normalized, with the docker.io/ prefix.
    assert_eq!(am[0]["RepoTags"][0], "docker.io/lab/img:t", "{am}");
    let layer_name = am[0]["Layers"][0].as_str().expect("a layer");
    assert!(tar_member(&archive, layer_name) == stream);

    // Unpacked, it is GNU tar's extraction; and the comparison does see a difference.
    let rootfs = umoci_unpack(&l2, "t", &store.scratch("bundle"));
    assert_same_tree(&ex, &rootfs);
    assert_comparison_catches_changes(&ex, &rootfs);
}

/// xattrs and nanosecond mtimes (pax records) survive umoci, and the comparison checks them.
#[test]
fn umoci_unpack_keeps_xattrs_and_nanoseconds() {
    let store = TestStore::new();
    let fill: fn(&Path) = |root| {
        small_tree(root);
        let f = root.join("etc/attrs");
        write_file(&f, b"has xattrs\n");
        set_xattr(&f, "user.cellar.note", b"hello");
        set_xattr(&root.join("etc"), "user.cellar.dir", &[0, 1, 255]);
        let t = libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 123_456_789,
        };
        let p = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), [t, t].as_ptr(), 0) },
            0
        );
    };
    let writer = [
        "tar",
        "--format=posix",
        "--xattrs",
        "--xattrs-include=*",
        "-cf",
        "-",
    ];
    let (stream, ex) = stream_and_extraction(&store, fill, &writer);
    let tar = write_bytes(&store.scratch("layer.tar"), &stream);
    let l = store.scratch("layout");
    umoci_image_from_tars(&l, "x", &[&tar]);
    oci_image(&l, "x").assert_diff_ids();
    let rootfs = umoci_unpack(&l, "x", &store.scratch("bundle"));
    assert_same_tree(&ex, &rootfs);

    // The comparison sees a lost xattr and a lost fraction of a second.
    if xattrs_supported(store.dir.path()) {
        let f = rootfs.join("etc/attrs");
        let p = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        let n = std::ffi::CString::new("user.cellar.note").unwrap();
        assert_eq!(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }, 0);
        let diffs = tree_differences(&ex, &rootfs, Compare::default());
        assert!(
            diffs
                .iter()
                .any(|l| l.ends_with(" etc/attrs") && l.contains(".x")),
            "a removed xattr went unseen: {diffs:#?}"
        );
        set_xattr(&f, "user.cellar.note", b"hello");
    }
    set_mtime(&rootfs.join("etc/attrs"), 1_500_000_000);
    assert!(
        !tree_differences(&ex, &rootfs, Compare::default()).is_empty(),
        "a lost fraction of a second went unseen"
    );
    let whole_seconds = Compare {
        nanos: false,
        ..Compare::default()
    };
    assert_same_tree_with(&ex, &rootfs, whole_seconds, "whole seconds");
}

/// Serve `responses` (raw bytes) on one loopback port, one per connection; each connection's
/// request is read to its blank line first. `hold`: keep the connection open after writing
/// until the returned sender says (or drops), however slowly the client gets to its check.
fn canned_server(
    responses: Vec<(Vec<u8>, bool)>,
) -> (
    String,
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Sender<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        for (resp, hold) in responses {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap() == 1 {
                req.push(b[0]);
            }
            s.write_all(&resp).unwrap();
            if hold {
                let _ = released.recv();
            }
        }
    });
    (addr, t, release)
}

#[test]
fn http_client_reads_every_framing_and_rejects_bad_ones() {
    let r = |s: &str| (s.as_bytes().to_vec(), false);
    let (addr, server, release) = canned_server(vec![
        r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"),
        r("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
           3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n"),
        r("HTTP/1.0 201 Created\r\n\r\nto the end"),
        r("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        r("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
        r("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            true,
        ),
    ]);
    let a = http_get(&addr, "/a", &[("Accept", "x/y")]);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(a.header("x-a"), Some("1, 2"));
    let b = http_get(&addr, "/b", &[]);
    assert_eq!(b.body, b"abc0123456789abcdef");
    let c = http_get(&addr, "/c", &[]);
    assert_eq!((c.status, c.text().as_str()), (201, "to the end"));
    let d = http_head(&addr, "/d", &[]);
    assert_eq!((d.status, d.header("content-length")), (200, Some("99")));
    assert!(d.body.is_empty());
    let e = try_http_request(&addr, "GET", "/e", &[], b"").unwrap_err();
    assert!(e.to_string().contains("bytes after the response"), "{e}");
    let f = try_http_request(&addr, "GET", "/f", &[], b"").unwrap_err();
    assert!(f.to_string().contains("shorter than Content-Length"), "{f}");
    let g = try_http_request(&addr, "GET", "/g", &[], b"").unwrap_err();
    assert!(g.to_string().contains("kept the connection open"), "{g}");
    drop(release);
    server.join().unwrap();
}

#[test]
fn registries_run_side_by_side_and_die_on_drop() {
    let (a, b) = (Registry::start(), Registry::start());
    assert_ne!(a.addr(), b.addr());
    for r in [&a, &b] {
        assert_eq!(http_get(r.addr(), "/v2/", &[]).status, 200);
        assert!(r.log_text().contains("listening on"));
    }
    let (pid, addr) = (a.pid(), a.addr().to_string());
    drop(a);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry {pid} outlived its guard"
    );
    assert!(try_http_request(&addr, "GET", "/v2/", &[], b"").is_err());
    assert_eq!(http_get(b.addr(), "/v2/", &[]).status, 200);
}
