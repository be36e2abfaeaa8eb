//! `cellar push`: images pushed to a real registry (Debian's docker-registry), pulled back by
//! skopeo, unpacked by umoci and compared with GNU tar's extraction of the snapshot's stream.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::Value;

use super::cellar::*;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

/// `cellar push ARGS`, with an empty docker config so the machine's credentials play no part.
pub(super) fn push(store: &TestStore, args: &[&str]) -> Output {
    push_env(store, args, &[])
}

/// `cellar push ARGS` as `push`, with `env` set too.
pub(super) fn push_env(store: &TestStore, args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let config = store.scratch("docker-config");
    fs::create_dir_all(&config).unwrap();
    let mut argv = vec!["push"];
    argv.extend_from_slice(args);
    store
        .cmd(&argv)
        .env("DOCKER_CONFIG", &config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run cellar push")
}

/// `cellar push ARGS`, which must succeed; returns stdout.
pub(super) fn push_ok(store: &TestStore, registry: &Registry, args: &[&str]) -> String {
    let out = push(store, args);
    assert!(
        out.status.success(),
        "cellar push {args:?} failed ({}):\n{}\nregistry log:\n{}",
        out.status,
        stderr(&out),
        registry.log_text()
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `cellar push ARGS --json`, parsed.
pub(super) fn push_json(store: &TestStore, registry: &Registry, args: &[&str]) -> Value {
    let mut argv = args.to_vec();
    argv.push("--json");
    let out = push_ok(store, registry, &argv);
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {out}"));
    crate::readme_json::assert_readme_order(&report, "`push` prints the pushed manifest digest");
    report
}

/// The `uploaded` flags of a `--json` report's layers.
pub(super) fn uploaded(report: &Value) -> Vec<bool> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["uploaded"].as_bool().expect("uploaded is a bool"))
        .collect()
}

/// Pull `repo_tag` from the registry into an OCI layout with skopeo, check every layer
/// against its diff_id, and unpack it with umoci. umoci cannot unpack zstd layers, so an image
/// with some is copied once more, recompressed to gzip by skopeo, for unpacking.
pub(super) fn pull_rootfs(
    store: &TestStore,
    registry: &Registry,
    repo_tag: &str,
    label: &str,
) -> PathBuf {
    let layout = store.scratch(&format!("pulled-{label}"));
    let src = registry.docker_ref(repo_tag);
    skopeo_copy(&src, &format!("oci:{}:t", layout.display()), &[]);
    let image = oci_image(&layout, "t");
    image.assert_diff_ids();
    let layout = if image.layers.iter().any(|l| l.media_type.ends_with("+zstd")) {
        let gz = store.scratch(&format!("pulled-{label}-gzip"));
        skopeo_copy(
            &src,
            &format!("oci:{}:t", gz.display()),
            &["--dest-compress-format", "gzip"],
        );
        gz
    } else {
        layout
    };
    umoci_unpack(&layout, "t", &store.scratch(&format!("bundle-{label}")))
}

/// The sha256 of the manifest as the registry serves it.
pub(super) fn served_digest(registry: &Registry, repo_tag: &str) -> String {
    format!(
        "sha256:{}",
        sha256_hex(&skopeo_inspect_raw(&registry.docker_ref(repo_tag)))
    )
}

fn served_manifest(registry: &Registry, repo_tag: &str) -> Value {
    serde_json::from_slice(&skopeo_inspect_raw(&registry.docker_ref(repo_tag))).unwrap()
}

/// The default push (one gzip layer of the exact stream) pulls back as GNU tar extracts the
/// stream; stdout is the digest the registry serves the manifest under; a second push
/// uploads nothing.
#[test]
fn pushed_image_pulls_back_as_the_tree() {
    let registry = Registry::start();
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");

    let target = registry.reference("team/vm:v1");
    let out = push_ok(&store, &registry, &["vm", &target]);
    let digest = out.trim();
    assert_eq!(out, format!("{digest}\n"), "stdout is the digest alone");
    assert_eq!(digest, served_digest(&registry, "team/vm:v1"));

    let manifest = served_manifest(&registry, "team/vm:v1");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = skopeo_inspect_config(&registry.docker_ref("team/vm:v1"));
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256_hex(&snap.stream))]),
        "the one layer is the exact stream"
    );

    let rootfs = pull_rootfs(&store, &registry, "team/vm:v1", "1");
    assert_same_tree(&snap.extraction, &rootfs);
    assert_comparison_catches_changes(&snap.extraction, &rootfs);

    // Again, under another tag: every blob is there, so nothing goes up; same image.
    let again = push_json(
        &store,
        &registry,
        &["vm", &registry.reference("team/vm:again")],
    );
    assert_eq!(again["digest"], digest);
    assert_eq!(again["target"], registry.reference("team/vm:again"));
    assert_eq!(uploaded(&again), [false]);
    assert_eq!(
        again["layers"][0]["digest"],
        manifest["layers"][0]["digest"]
    );
    assert_eq!(again["layers"][0]["size"], manifest["layers"][0]["size"]);
    assert_eq!(again["config"], manifest["config"]["digest"]);

    // Without a tag: `latest`, as docker and crane push.
    let latest = push_json(&store, &registry, &["vm", &registry.reference("team/vm")]);
    assert_eq!(latest["target"], registry.reference("team/vm:latest"));
    assert_eq!(latest["digest"], digest);
    assert_eq!(served_digest(&registry, "team/vm:latest"), digest);
}

/// Incremental images: the second snapshot's push sends only its diff layer (the base is
/// there from the first), and its image unpacks to the second tree, deletions included.
#[test]
fn incremental_push_uploads_only_new_layers() {
    let registry = Registry::start();
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    write_file(&root.join("gone/a"), b"a");
    write_file(&root.join("old-file"), b"old");
    let s1 = snap_dir(&store, &root, "vm", "1");

    fs::remove_dir_all(root.join("gone")).unwrap();
    fs::remove_file(root.join("old-file")).unwrap();
    fs::write(root.join("etc/hostname"), b"vm2\n").unwrap();
    write_file(&root.join("added/file"), b"new\n");
    let s2 = snap_dir(&store, &root, "vm", "2");

    let inc = ["--layers", "incremental"];
    let one = push_json(
        &store,
        &registry,
        &[&s1.id, &registry.reference("vm:one"), inc[0], inc[1]],
    );
    assert_eq!(uploaded(&one), [true]);
    let two = push_json(
        &store,
        &registry,
        &[&s2.id, &registry.reference("vm:two"), inc[0], inc[1]],
    );
    assert_eq!(
        uploaded(&two),
        [false, true],
        "only the diff layer goes up: {two}"
    );
    assert_eq!(two["layers"][0]["digest"], one["layers"][0]["digest"]);
    assert_eq!(two["digest"], served_digest(&registry, "vm:two"));
    let again = push_json(
        &store,
        &registry,
        &[&s2.id, &registry.reference("vm:two"), inc[0], inc[1]],
    );
    assert_eq!(uploaded(&again), [false, false]);
    assert_eq!(again["digest"], two["digest"]);

    let rootfs = pull_rootfs(&store, &registry, "vm:two", "2");
    assert!(!rootfs.join("gone").exists() && !rootfs.join("old-file").exists());
    assert_eq!(fs::read(rootfs.join("etc/hostname")).unwrap(), b"vm2\n");
    assert_same_tree(&s2.extraction, &rootfs);
    let rootfs = pull_rootfs(&store, &registry, "vm:one", "1");
    assert_same_tree(&s1.extraction, &rootfs);
}

/// zstd and uncompressed layers go up with their media types and pull back to the tree.
#[test]
fn zstd_and_uncompressed_layers_push() {
    let registry = Registry::start();
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");

    for (codec, media_type) in [
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("none", "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let tag = format!("vm:{codec}");
        let report = push_json(
            &store,
            &registry,
            &["vm", &registry.reference(&tag), "--compression", codec],
        );
        assert_eq!(uploaded(&report), [true]);
        let manifest = served_manifest(&registry, &tag);
        assert_eq!(manifest["layers"][0]["mediaType"], media_type, "{manifest}");
        assert_eq!(report["digest"], served_digest(&registry, &tag));
        if codec == "none" {
            assert_eq!(
                manifest["layers"][0]["digest"],
                format!("sha256:{}", sha256_hex(&snap.stream)),
                "an uncompressed exact layer is the stream itself"
            );
        }
        let rootfs = pull_rootfs(&store, &registry, &tag, codec);
        assert_same_tree(&snap.extraction, &rootfs);
    }
}

/// Names starting `.wh.` are left out of the pushed image, with a warning and in `--json`;
/// a second push, which uploads nothing, says so again.
#[test]
fn push_says_which_paths_the_image_leaves_out() {
    let registry = Registry::start();
    let store = TestStore::new();
    let root = store.scratch("tree");
    whiteout_named_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");
    for (tag, sent) in [("vm:a", true), ("vm:b", false)] {
        let args = ["vm", &registry.reference(tag), "--json"];
        let report = assert_left_out_reported(&push(&store, &args), &args, &snap.id);
        assert_eq!(uploaded(&report), [sent]);
    }
}

/// A malformed target is a usage error (exit 2) that says what is wrong; a registry that is
/// not there is a runtime error (exit 1) that names the host.
#[test]
fn bad_targets_are_refused_clearly() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    snap_dir(&store, &root, "vm", "1");

    for (target, says) in [
        ("127.0.0.1:5000/repo:", "bad tag"),
        ("repo:v1", "names no registry"),
        ("127.0.0.1:5000/Repo:v1", "bad repository name"),
        ("127.0.0.1:5000/repo@sha256:abcd", "not a digest"),
    ] {
        let out = push(&store, &["vm", target]);
        assert_eq!(out.status.code(), Some(2), "{target}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{target}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }

    // A port nothing listens on (bound a moment ago, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}/repo:v1");
    let out = push(&store, &["vm", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A layer the registry has is found by HEAD and skipped even when this store never pushed
/// (or made) it: its digest comes from making it once, and nothing is uploaded.
#[test]
fn a_layer_another_store_pushed_is_not_uploaded_again() {
    let registry = Registry::start();
    let mut stream = Vec::new();
    member(&mut stream, b"etc/", b'5', b"", b"", 0o755);
    member(&mut stream, b"etc/hostname", b'0', b"vm\n", b"", 0o644);
    end_of_archive(&mut stream);
    let (first, second) = (TestStore::new(), TestStore::new());
    first.snapshot_bytes(&stream, "vm");
    second.snapshot_bytes(&stream, "vm");

    let one = push_json(&first, &registry, &["vm", &registry.reference("vm:one")]);
    let two = push_json(&second, &registry, &["vm", &registry.reference("vm:two")]);
    assert_eq!(uploaded(&one), [true]);
    assert_eq!(uploaded(&two), [false], "{two}");
    assert_eq!(two["layers"][0]["digest"], one["layers"][0]["digest"]);
    assert_eq!(two["digest"], served_digest(&registry, "vm:two"));
    assert_eq!(
        uploaded(&push_json(
            &second,
            &registry,
            &["vm", &registry.reference("vm:three")]
        )),
        [false],
        "the digest made on the way is cached"
    );
}
