//! `cellar serve --compression gzip|zstd`: compressed layers, made once when their manifest is
//! asked for, and sent from what that made.

use std::fs;

use super::cellar::*;
use super::*;
use crate::common::*;

fn manifest_of(served: &Served, repo_tag: &str) -> serde_json::Value {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let r = http_get(
        served.addr(),
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", OCI_MANIFEST)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn making_lines(served: &Served) -> usize {
    served
        .log()
        .iter()
        .filter(|l| l.contains("to learn its digest"))
        .count()
}

/// skopeo pulls each codec's full and incremental images; their layers have the codec's media
/// type, decompress to their diff_ids, and unpack to the snapshot's tree.
#[test]
fn skopeo_pulls_compressed_images_that_unpack_to_the_tree() {
    let store = TestStore::new();
    let (s1, s2) = two_snapshots(&store);

    for (codec, suffix) in [("zstd", "+zstd"), ("gzip", "+gzip")] {
        for mode in ["full", "incremental"] {
            let label = format!("{codec}-{mode}");
            let served = Served::start(&store, &["--compression", codec, "--layers", mode]);
            let layout = store.scratch(&format!("pulled-{label}"));
            for (tag, snap) in [("latest", &s2), (s1.id.as_str(), &s1)] {
                let src = served.docker_ref(&format!("vm:{tag}"));
                skopeo_copy(&src, &format!("oci:{}:{tag}", layout.display()), &[]);
                let img = oci_image(&layout, tag);
                img.assert_diff_ids();
                for layer in &img.layers {
                    assert!(layer.media_type.ends_with(suffix), "{label}: {layer:?}");
                }
                // umoci reads gzip layers only: the zstd image goes through skopeo's gzip.
                let unpackable = if codec == "zstd" {
                    let gz = store.scratch(&format!("gz-{label}-{tag}"));
                    let dst = format!("oci:{}:{tag}", gz.display());
                    skopeo_copy(&src, &dst, &["--dest-compress-format", "gzip"]);
                    gz
                } else {
                    layout.clone()
                };
                let bundle = store.scratch(&format!("b-{label}-{tag}"));
                assert_same_tree(&snap.extraction, &umoci_unpack(&unpackable, tag, &bundle));
            }
        }
    }
}

/// The pass that learns a compressed layer's digest keeps its bytes, and downloads are sent
/// those: whole, or any range of them, even once the store could no longer make them. Two
/// requests for the same manifest make the layer once.
#[test]
fn a_compressed_layer_is_made_once_and_sent_from_what_that_made() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    snap_dir(&store, &root, "vm", "1");
    let served = Served::start(&store, &["--compression", "zstd"]);

    let both: Vec<_> = (0..2)
        .map(|_| {
            let addr = served.addr().to_string();
            std::thread::spawn(move || {
                let r = http_get(
                    &addr,
                    "/v2/vm/manifests/latest",
                    &[("Accept", OCI_MANIFEST)],
                );
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(both[0], both[1]);
    assert_eq!(making_lines(&served), 1, "{:?}", served.log());
    let layer = &both[0]["layers"][0];
    assert_eq!(
        layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{layer}"
    );
    let digest = layer["digest"].as_str().unwrap().to_string();
    let size = layer["size"].as_u64().unwrap();

    // Without its packs the store cannot make the layer again: what comes is the kept bytes.
    fs::remove_dir_all(store.path().join("packs")).unwrap();
    let path = format!("/v2/vm/blobs/{digest}");
    let whole = http_get(served.addr(), &path, &[]);
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.body.len() as u64, size);
    assert_eq!(format!("sha256:{}", sha256_hex(&whole.body)), digest);
    let part = http_get(served.addr(), &path, &[("Range", "bytes=10-99")]);
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, whole.body[10..100]);
    assert_eq!(manifest_of(&served, "vm:latest"), both[0]);
    assert_eq!(making_lines(&served), 1, "{:?}", served.log());
}

/// A server started later knows the digest from the index and makes the layer as it sends it,
/// checked against that digest: the same bytes. It keeps them as they go, so the next
/// download is sent them (even once the store could no longer make them).
#[test]
fn a_later_server_makes_the_same_compressed_layer() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    snap_dir(&store, &root, "vm", "1");
    let first = Served::start(&store, &["--compression", "gzip"]);
    let manifest = manifest_of(&first, "vm:latest");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v2/vm/blobs/{digest}");
    let kept = http_get(first.addr(), &path, &[]);
    drop(first);

    let second = Served::start(&store, &["--compression", "gzip"]);
    assert_eq!(manifest_of(&second, "vm:latest"), manifest);
    assert_eq!(making_lines(&second), 0, "{:?}", second.log());
    let made = http_get(second.addr(), &path, &[]);
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(made.body, kept.body);

    fs::remove_dir_all(store.path().join("packs")).unwrap();
    let again = http_get(second.addr(), &path, &[("Range", "bytes=5-")]);
    assert_eq!(again.status, 206, "{}", again.text());
    assert_eq!(again.body, kept.body[5..]);
}
