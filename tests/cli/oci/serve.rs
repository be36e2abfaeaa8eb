//! `cellar serve`: a read-only registry that skopeo pulls from, with the distribution API's
//! answers checked by hand.

use super::cellar::*;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

/// A lineage's tags as `tags/list` gives them: `latest` and each snapshot's short id, in
/// lexical order as the spec says.
fn tag_list(ids: &[&str]) -> serde_json::Value {
    let mut tags = vec!["latest"];
    tags.extend_from_slice(ids);
    tags.sort();
    serde_json::json!(tags)
}

#[test]
fn skopeo_pulls_full_and_incremental_images_that_unpack_to_the_tree() {
    let store = TestStore::new();
    let (s1, s2) = two_snapshots(&store);

    for mode in ["full", "incremental"] {
        let served = Served::start(&store, &["--layers", mode]);
        let layout = store.scratch(&format!("pulled-{mode}"));
        for (tag, snap) in [("latest", &s2), (s1.id.as_str(), &s1)] {
            let dst = format!("oci:{}:{tag}", layout.display());
            skopeo_copy(&served.docker_ref(&format!("vm:{tag}")), &dst, &[]);
            let img = oci_image(&layout, tag);
            img.assert_diff_ids();
            let want_layers = if mode == "full" || tag != "latest" {
                1
            } else {
                2
            };
            assert_eq!(img.layers.len(), want_layers, "{mode} {tag}");
            let rootfs = umoci_unpack(&layout, tag, &store.scratch(&format!("b-{mode}-{tag}")));
            assert_same_tree(&snap.extraction, &rootfs);
        }
    }
}

#[test]
fn distribution_api_answers_as_the_spec_says() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let s1 = snap_dir(&store, &root, "vm", "1");
    let served = Served::start(&store, &[]);
    let addr = served.addr();

    let v2 = http_get(addr, "/v2/", &[]);
    assert_eq!(v2.status, 200);
    assert_eq!(
        v2.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(
        http_get(addr, "/v2/_catalog", &[]).json()["repositories"],
        serde_json::json!(["vm"])
    );
    let tags = http_get(addr, "/v2/vm/tags/list", &[]).json();
    assert_eq!(tags["tags"], tag_list(&[&s1.id]));

    let accept = [("Accept", ACCEPT_MANIFESTS)];
    let m = http_get(addr, "/v2/vm/manifests/latest", &accept);
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.header("content-type"), Some(OCI_MANIFEST));
    let digest = format!("sha256:{}", sha256_hex(&m.body));
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    let by_digest = http_get(addr, &format!("/v2/vm/manifests/{digest}"), &accept);
    assert_eq!(by_digest.body, m.body);
    let head = http_head(addr, "/v2/vm/manifests/latest", &accept);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(m.body.len().to_string().as_str())
    );

    // The manifest is ready without a pass over the data: its layer is the stream.
    let manifest = m.json();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(layer, format!("sha256:{}", sha256_hex(&s1.stream)));
    let blob = http_get(addr, &format!("/v2/vm/blobs/{layer}"), &[]);
    assert_eq!(blob.status, 200);
    assert!(blob.body == s1.stream);
    let head = http_head(addr, &format!("/v2/vm/blobs/{layer}"), &[]);
    assert_eq!(
        head.header("content-length"),
        Some(s1.stream.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    let part = http_get(
        addr,
        &format!("/v2/vm/blobs/{layer}"),
        &[("Range", "bytes=1000-2999")],
    );
    assert_eq!(part.status, 206);
    assert!(part.body == s1.stream[1000..3000]);
    let len = s1.stream.len();
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 1000-2999/{len}").as_str())
    );
    let past = http_get(
        addr,
        &format!("/v2/vm/blobs/{layer}"),
        &[("Range", "bytes=99999999-")],
    );
    assert_eq!(past.status, 416);
    // A range that ends before it starts is no range: the whole blob (RFC 9110 §14.2).
    let reversed = http_get(
        addr,
        &format!("/v2/vm/blobs/{layer}"),
        &[("Range", "bytes=100-50")],
    );
    assert_eq!(reversed.status, 200);
    assert!(reversed.body == s1.stream);
    let config = manifest["config"]["digest"].as_str().unwrap();
    let c = http_get(addr, &format!("/v2/vm/blobs/{config}"), &[]);
    assert_eq!(format!("sha256:{}", sha256_hex(&c.body)), config);
    // A config blob takes a range as a layer does.
    let part = http_get(
        addr,
        &format!("/v2/vm/blobs/{config}"),
        &[("Range", "bytes=-5")],
    );
    assert_eq!(part.status, 206);
    assert!(part.body == c.body[c.body.len() - 5..]);
    let len = c.body.len();
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {}-{}/{len}", len - 5, len - 1).as_str())
    );

    // A repository with no snapshots has nothing, not even what another one holds.
    let nope_manifest = format!("/v2/nope/manifests/{digest}");
    let nope_blob = format!("/v2/nope/blobs/{layer}");
    for (path, status, code) in [
        ("/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        // A name of several components is valid in the spec, and never a lineage's.
        ("/v2/team/vm/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/team/vm/manifests/latest", 404, "NAME_UNKNOWN"),
        (
            &format!("/v2/team/vm/blobs/{layer}") as &str,
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/vm/nothing", 404, "NOT_FOUND"),
        // Paths of no endpoint are not taken for a repository's, though `vm` is one.
        ("/v2/vm/manifests/", 404, "NOT_FOUND"),
        ("/v2/vm/manifests/latest/", 404, "NOT_FOUND"),
        ("/v2/vm/blobs/uploads/", 404, "NOT_FOUND"),
        ("/v2/vm/blobs/", 404, "NOT_FOUND"),
        (&nope_manifest as &str, 404, "NAME_UNKNOWN"),
        (&nope_blob, 404, "NAME_UNKNOWN"),
        ("/v2/vm/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        (
            &format!("/v2/vm/blobs/sha256:{}", "0".repeat(64)) as &str,
            404,
            "BLOB_UNKNOWN",
        ),
        ("/v2/vm/manifests/sha256:xyz", 400, "DIGEST_INVALID"),
        ("/v2/vm/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
        ("/v2/vm/blobs/nodigest", 400, "DIGEST_INVALID"),
        // Segments that decode to no UTF-8: the spec's error shape too, not a text/plain 400.
        ("/v2/vm/blobs/%FF", 400, "DIGEST_INVALID"),
        ("/v2/%FF/tags/list", 400, "NAME_INVALID"),
        ("/v2/%FF/blobs/sha256:xyz", 400, "NAME_INVALID"),
        ("/v2/vm/manifests/%FF%FE", 404, "MANIFEST_UNKNOWN"),
    ] {
        let r = http_get(addr, path, &accept);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.json()["errors"][0]["code"], code, "{path}");
    }
    // Every write is refused, and the refusal names the methods that are taken, on routes
    // that exist for reading and on the upload endpoints that do not.
    for path in [
        "/v2/vm/manifests/latest",
        "/v2/vm/blobs/uploads/",
        "/v2/vm/blobs/uploads/abc",
        &format!("/v2/vm/blobs/{layer}"),
    ] {
        for method in ["PUT", "POST", "DELETE", "PATCH"] {
            let r = http_request(addr, method, path, &[], b"{}");
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
            let allow = r.header("allow").unwrap_or_default().replace(' ', "");
            assert_eq!(allow, "GET,HEAD", "{method} {path}");
        }
    }

    // A new snapshot shows up at once.
    write_file(&root.join("etc/more"), b"more\n");
    let s2 = snap_dir(&store, &root, "vm", "2");
    let tags = http_get(addr, "/v2/vm/tags/list", &[]).json();
    assert_eq!(tags["tags"], tag_list(&[&s1.id, &s2.id]));
    let m2 = http_get(addr, "/v2/vm/manifests/latest", &accept);
    assert_ne!(m2.body, m.body);
}

/// A registry keeps each repository's blobs apart: a lineage's layers, configs and manifests
/// are not another lineage's (404). A forgotten snapshot's are no one's: not found, rather
/// than a download that breaks off when its layer cannot be made.
#[test]
fn a_repository_serves_only_its_own_blobs() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let vm1 = snap_dir(&store, &root, "vm", "1");
    write_file(&root.join("etc/more"), b"more\n");
    snap_dir(&store, &root, "vm", "2");
    let other = store.scratch("other");
    write_file(&other.join("etc/hostname"), b"other\n");
    snap_dir(&store, &other, "db", "1");
    let served = Served::start(&store, &[]);
    let addr = served.addr();
    let accept = [("Accept", ACCEPT_MANIFESTS)];

    let m = http_get(addr, &format!("/v2/vm/manifests/{}", vm1.id), &accept);
    assert_eq!(m.status, 200, "{}", m.text());
    let digest = format!("sha256:{}", sha256_hex(&m.body));
    let manifest = m.json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    for (path, code) in [
        (format!("/v2/db/blobs/{layer}"), "BLOB_UNKNOWN"),
        (format!("/v2/db/blobs/{config}"), "BLOB_UNKNOWN"),
        (format!("/v2/db/manifests/{digest}"), "MANIFEST_UNKNOWN"),
    ] {
        let r = http_get(addr, &path, &accept);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["errors"][0]["code"], code, "{path}");
        let ours = http_get(addr, &path.replacen("/v2/db/", "/v2/vm/", 1), &accept);
        assert_eq!(ours.status, 200, "{path} in vm");
    }

    store.ok(&["rm", &vm1.id]);
    for path in [
        format!("/v2/vm/blobs/{layer}"),
        format!("/v2/vm/blobs/{config}"),
    ] {
        let r = http_get(addr, &path, &[]);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN", "{path}");
    }
}

/// The `Link` header's next page, as a path to ask for.
fn next_page(r: &Response) -> Option<String> {
    let link = r.header("link")?;
    let path = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(path.to_string())
}

/// Every page of a listing, following `Link` from `first`: the entries under `key`, page by
/// page.
fn pages(addr: &str, first: &str, key: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut at = Some(first.to_string());
    while let Some(path) = at {
        let r = http_get(addr, &path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        out.push(r.json()[key].clone());
        at = next_page(&r);
        assert!(out.len() < 20, "{path}: the links go on");
    }
    out
}

/// `tags/list` and `_catalog` page with `?n=` and `?last=` as the spec says, and skopeo still
/// lists every tag.
#[test]
fn tags_and_catalog_page_with_n_and_last() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let mut ids = Vec::new();
    for i in 0..3 {
        write_file(&root.join("etc/step"), format!("{i}\n").as_bytes());
        ids.push(store.snapshot_bytes(&tar_of_dir(&root), "vm"));
    }
    for name in ["db", "app"] {
        store.snapshot_bytes(&tar_of_dir(&root), name);
    }
    let served = Served::start(&store, &[]);
    let addr = served.addr();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let all = tag_list(&ids);
    let tags = all.as_array().unwrap();
    assert_eq!(http_get(addr, "/v2/vm/tags/list", &[]).json()["tags"], all);

    let first = http_get(addr, "/v2/vm/tags/list?n=2", &[]);
    assert_eq!(first.json()["name"], "vm");
    assert_eq!(first.json()["tags"], serde_json::json!(tags[..2]));
    let last = tags[1].as_str().unwrap();
    assert_eq!(
        first.header("link"),
        Some(format!("</v2/vm/tags/list?n=2&last={last}>; rel=\"next\"").as_str())
    );
    let rest = http_get(addr, &next_page(&first).unwrap(), &[]);
    assert_eq!(rest.json()["tags"], serde_json::json!(tags[2..]));
    assert_eq!(rest.header("link"), None, "nothing remains");
    let one_by_one = pages(addr, "/v2/vm/tags/list?n=1", "tags");
    let flat: Vec<_> = one_by_one
        .iter()
        .flat_map(|p| p.as_array().unwrap().clone())
        .collect();
    assert_eq!(
        (one_by_one.len(), serde_json::json!(flat)),
        (4, all.clone())
    );
    let after = http_get(addr, &format!("/v2/vm/tags/list?last={last}"), &[]);
    assert_eq!(after.json()["tags"], serde_json::json!(tags[2..]));
    let none = http_get(addr, "/v2/vm/tags/list?n=0", &[]);
    assert_eq!(none.json()["tags"], serde_json::json!([]));
    assert_eq!(none.header("link"), None);

    assert_eq!(
        pages(addr, "/v2/_catalog?n=2", "repositories"),
        [serde_json::json!(["app", "db"]), serde_json::json!(["vm"])]
    );
    let after_db = http_get(addr, "/v2/_catalog?last=db", &[]);
    assert_eq!(after_db.json()["repositories"], serde_json::json!(["vm"]));

    for path in [
        "/v2/vm/tags/list?n=abc",
        "/v2/vm/tags/list?n=-1",
        "/v2/_catalog?n=2x",
        // A parameter given twice is an invalid set of them, in the spec's shape too.
        "/v2/vm/tags/list?n=1&n=2",
        "/v2/_catalog?last=a&last=b",
    ] {
        let r = http_get(addr, path, &[]);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED", "{path}");
    }

    let listed = run_tool(&[
        "skopeo",
        "list-tags",
        "--tls-verify=false",
        &served.docker_ref("vm"),
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["Tags"], all);
}

/// The OCI manifest, the one cellar has, goes to a client whose `Accept` takes it or that
/// sends none; one that asks only for other types (Docker schema 2) gets 404
/// MANIFEST_UNKNOWN, by tag and by digest, as distribution answers for a representation it
/// cannot give. skopeo, which accepts OCI, still inspects it.
#[test]
fn manifests_go_to_clients_that_accept_oci() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    store.snapshot_bytes(&tar_of_dir(&root), "vm");
    let served = Served::start(&store, &[]);
    let addr = served.addr();
    let m = http_get(addr, "/v2/vm/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(m.status, 200, "{}", m.text());
    let digest = format!("sha256:{}", sha256_hex(&m.body));
    let paths = [
        "/v2/vm/manifests/latest".to_string(),
        format!("/v2/vm/manifests/{digest}"),
    ];

    let both = format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}");
    for accept in [
        None,
        Some("*/*"),
        Some(ACCEPT_MANIFESTS),
        Some(both.as_str()),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        for path in &paths {
            let r = http_get(addr, path, &headers);
            assert_eq!((r.status, &r.body), (200, &m.body), "{accept:?} {path}");
            assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
            assert_eq!(
                http_head(addr, path, &headers).status,
                200,
                "{accept:?} {path}"
            );
        }
    }
    let list = "application/vnd.docker.distribution.manifest.list.v2+json";
    let docker_only = format!("{DOCKER_MANIFEST}, {list}");
    let refused = format!("{OCI_MANIFEST};q=0, {DOCKER_MANIFEST}");
    for accept in [DOCKER_MANIFEST, &docker_only, &refused] {
        for path in &paths {
            let r = http_get(addr, path, &[("Accept", accept)]);
            assert_eq!(r.status, 404, "{accept} {path}: {}", r.text());
            let error = &r.json()["errors"][0];
            assert_eq!(error["code"], "MANIFEST_UNKNOWN", "{accept} {path}");
            assert!(error["message"]
                .as_str()
                .unwrap()
                .contains("OCI manifests only"));
            assert_eq!(http_head(addr, path, &[("Accept", accept)]).status, 404);
        }
    }
    assert_eq!(skopeo_inspect_raw(&served.docker_ref("vm:latest")), m.body);
}

/// Many clients at once, each getting every byte right.
#[test]
fn concurrent_pulls_all_get_the_blob() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let s1 = snap_dir(&store, &root, "vm", "1");
    let served = Served::start(&store, &[]);
    let digest = format!("sha256:{}", sha256_hex(&s1.stream));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let r = http_get(served.addr(), &format!("/v2/vm/blobs/{digest}"), &[]);
                assert_eq!(r.status, 200);
                assert!(r.body == s1.stream);
            });
        }
    });
}

/// A download whose snapshot is forgotten while it streams completes, byte for byte: the
/// download pinned the snapshot, so a gc with `--grace 0` meanwhile keeps it whole and names
/// the server's lease. The layer is far larger than what the server and the socket buffer
/// ahead, so most of it is read from the store after the gc.
#[test]
fn a_download_outlives_the_forgetting_of_its_snapshot() {
    use std::io::{Read, Write};

    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("big.bin"), &noise(48_000_000, 5));
    let stream = tar_of_dir(&dir);
    let id = store.snapshot_bytes(&stream, "vm");
    let served = Served::start(&store, &[]);

    let mut conn = std::net::TcpStream::connect(served.addr()).expect("connect");
    let digest = format!("sha256:{}", sha256_hex(&stream));
    write!(
        conn,
        "GET /v2/vm/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        served.addr()
    )
    .unwrap();
    let mut got = vec![0u8; 200_000];
    conn.read_exact(&mut got).expect("the first bytes");

    store.ok(&["rm", &id]);
    let out = store.run(&["gc", "--grace", "0", "--json"]);
    assert_success(&out, &["gc", "--grace", "0", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["chunks_condemned"], 0, "the download's pin keeps it: {r}");
    assert_eq!(r["leases"][0]["holder"], "serve", "{r}");

    conn.read_to_end(&mut got)
        .expect("the rest of the download");
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers");
    let head = String::from_utf8_lossy(&got[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = &got[split + 4..];
    assert_eq!(body.len(), stream.len(), "{head}");
    assert!(
        body == stream,
        "the downloaded layer differs from the stream"
    );

    // The download done, its lease is gone and the next gc takes the snapshot.
    let out = store.run(&["gc", "--grace", "0", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["chunks_condemned"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["leases"], serde_json::json!([]), "{r}");
}

/// A snapshot forgotten after its blob was looked up but before the download pinned it: the
/// answer is 404, as if it had not been found, not a 200 whose body breaks off at once.
#[test]
fn a_blob_forgotten_before_its_download_pins_it_is_not_found() {
    let store = TestStore::new();
    let dir = store.scratch("tree");
    write_file(&dir.join("f.bin"), &noise(300_000, 6));
    let stream = tar_of_dir(&dir);
    let id = store.snapshot_bytes(&stream, "vm");
    write_file(&dir.join("g.bin"), b"the lineage goes on\n");
    store.snapshot_bytes(&tar_of_dir(&dir), "vm");
    let served = Served::start_with_env(
        &store.path(),
        &[],
        &[("CELLAR_FAILPOINT", "pin-layer:stop")],
    );
    let addr = served.addr().to_string();
    let path = format!("/v2/vm/blobs/sha256:{}", sha256_hex(&stream));
    let get = std::thread::spawn(move || http_get(&addr, &path, &[]));
    wait_stopped(&served.child);
    store.ok(&["rm", &id]);
    resume(&served.child);
    let r = get.join().unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN");
}

/// `repair-index` puts a new index in place while `serve` runs (an idle server holds no
/// lease, so the repair goes ahead). The server's next request reads the new index: a
/// snapshot committed after the repair is listed and pulled, and the old one still is.
#[test]
fn serve_follows_the_index_repair_index_put_in_place() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let s1 = snap_dir(&store, &root, "vm", "1");
    let served = Served::start(&store, &[]);
    let addr = served.addr();
    let tags = || http_get(addr, "/v2/vm/tags/list", &[]).json()["tags"].clone();
    assert_eq!(tags(), tag_list(&[&s1.id]));

    store.ok(&["repair-index"]);
    write_file(&root.join("etc/after-repair"), b"new\n");
    let s2 = snap_dir(&store, &root, "vm", "2");
    assert_eq!(tags(), tag_list(&[&s1.id, &s2.id]));

    for snap in [&s1, &s2] {
        let layout = store.scratch(&format!("pulled-{}", snap.id));
        skopeo_copy(
            &served.docker_ref(&format!("vm:{}", snap.id)),
            &format!("oci:{}:x", layout.display()),
            &[],
        );
        oci_image(&layout, "x").assert_diff_ids();
        let rootfs = umoci_unpack(&layout, "x", &store.scratch(&format!("b-{}", snap.id)));
        assert_same_tree(&snap.extraction, &rootfs);
    }
}
