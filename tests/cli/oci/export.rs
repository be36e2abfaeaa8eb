//! `cellar export --format oci|docker-archive`: layouts and archives real tools accept, whose
//! unpacked rootfs is GNU tar's extraction of the snapshot's stream.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::cellar::*;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

pub(super) fn export_oci(store: &TestStore, snap: &str, dir: &Path, extra: &[&str]) {
    let mut args = vec![
        "export",
        snap,
        "--format",
        "oci",
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    store.ok(&args);
}

#[test]
fn full_image_is_the_exact_stream_and_unpacks_to_the_tree() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");

    let layout = store.scratch("layout");
    export_oci(&store, &snap.id, &layout, &["--tag", "t1"]);
    let img = oci_image(&layout, "t1");
    img.assert_diff_ids();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        img.layers[0].digest,
        format!("sha256:{}", sha256_hex(&snap.stream)),
        "a full layer of a clean stream is the stream itself"
    );
    assert!(img.layer_tar(0) == snap.stream);

    let rootfs = umoci_unpack(&layout, "t1", &store.scratch("bundle"));
    assert_same_tree(&snap.extraction, &rootfs);
    assert_comparison_catches_changes(&snap.extraction, &rootfs);

    // Deterministic: the same snapshot, exported again elsewhere, is the same image; stdout
    // says which.
    let again = store.scratch("layout2");
    let printed = store.ok(&[
        "export",
        &snap.id,
        "--format",
        "oci",
        "-o",
        again.to_str().unwrap(),
        "--tag",
        "t1",
    ]);
    assert_eq!(oci_image(&again, "t1").manifest_bytes, img.manifest_bytes);
    assert_eq!(printed.trim(), img.manifest_desc.digest);
    let json = store.json(&[
        "export",
        &snap.id,
        "--format",
        "oci",
        "-o",
        again.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json["digest"], img.manifest_desc.digest);
    assert_eq!(json["layers"][0]["digest"], img.layers[0].digest);
    assert_eq!(json["layers"][0]["size"], img.layers[0].size);
}

/// Names a layer must not carry as they are (absolute ones here) make a sanitized layer: the
/// tree written out (sparse files, xattrs, devices and odd names included), which unpacks as
/// GNU tar extracts the stream.
#[test]
fn unsafe_names_give_a_sanitized_layer() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let stream = tar_stream(&[
        "tar",
        "--absolute-names",
        "--format=posix",
        "--xattrs",
        "--xattrs-include=*",
        "--sparse",
        "-cf",
        "-",
        root.to_str().unwrap(),
    ]);
    let id = store.snapshot_bytes(&stream, "abs");
    let extraction = store.scratch("extracted");
    crate::browse::oracle::extract(&store, &stream, &extraction);

    let layout = store.scratch("layout");
    export_oci(&store, &id, &layout, &[]);
    let img = oci_image(&layout, "latest");
    img.assert_diff_ids();
    assert_ne!(
        img.layers[0].digest,
        format!("sha256:{}", sha256_hex(&stream))
    );
    let names = String::from_utf8(sh(&format!(
        "tar -tf {}",
        blob_path(&layout, &img.layers[0].digest).display()
    )))
    .unwrap();
    assert!(
        names.lines().all(|n| n.starts_with("./")),
        "a sanitized layer has relative names only:\n{names}"
    );
    // Directories above the archived one were never members: both sides make them up, with
    // different times. What the stream holds is compared.
    let rootfs = umoci_unpack(&layout, "latest", &store.scratch("bundle"));
    let rel = root.strip_prefix("/").unwrap();
    assert_same_tree(&extraction.join(rel), &rootfs.join(rel));
}

/// A lineage where every kind of change happens, exported incrementally: one layer per
/// snapshot, whiteouts for what went, and each image unpacks to its own snapshot's tree.
#[test]
fn incremental_layers_carry_changes_and_whiteouts() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    write_file(&root.join("gone/a"), b"a");
    write_file(&root.join("gone/sub/b"), b"b");
    write_file(&root.join("replaced/old1"), b"1");
    write_file(&root.join("replaced/old2"), b"2");
    write_file(&root.join("becomes-file/x"), b"x");
    let s1 = snap_dir(&store, &root, "vm", "1");

    fs::remove_dir_all(root.join("gone")).unwrap();
    fs::remove_file(root.join("replaced/old1")).unwrap();
    fs::remove_file(root.join("replaced/old2")).unwrap();
    write_file(&root.join("replaced/new"), b"new");
    fs::remove_dir_all(root.join("becomes-file")).unwrap();
    write_file(&root.join("becomes-file"), b"now a file");
    write_file(&root.join("usr/share/doc/readme.txt"), b"rewritten\n");
    // The hardlinked file changes: both of its names must come back as one inode.
    fs::write(root.join("etc/hostname"), b"vm2\n").unwrap();
    write_file(&root.join("added/deep/file"), &noise(50_000, 9));
    let s2 = snap_dir(&store, &root, "vm", "2");

    let layout = store.scratch("layout");
    export_oci(
        &store,
        &s2.id,
        &layout,
        &["--layers", "incremental", "--tag", "two"],
    );
    let base_blob = blob_path(&layout, &oci_image(&layout, "two").layers[0].digest);
    let base_ino = fs::metadata(&base_blob).unwrap().ino();
    export_oci(
        &store,
        &s1.id,
        &layout,
        &["--layers", "incremental", "--tag", "one"],
    );
    let two = oci_image(&layout, "two");
    two.assert_diff_ids();
    let one = oci_image(&layout, "one");
    assert_eq!(two.layers.len(), 2);
    assert_eq!(one.layers.len(), 1);
    assert_eq!(two.layers[0], one.layers[0], "the base layer is shared");
    assert_eq!(
        fs::metadata(&base_blob).unwrap().ino(),
        base_ino,
        "the shared base layer was written again"
    );

    let diff = String::from_utf8(sh(&format!(
        "tar -tvf {}",
        blob_path(&layout, &two.layers[1].digest).display()
    )))
    .unwrap();
    for want in [
        "./.wh.gone",
        "./replaced/.wh..wh..opq",
        "./replaced/new",
        "./.wh.becomes-file",
        "./becomes-file",
        "./added/deep/file",
        "./usr/share/doc/readme.txt",
        "./etc/hostname",
        "./etc/hostname.hard link to ./etc/hostname",
    ] {
        assert!(diff.contains(want), "diff layer lacks {want}:\n{diff}");
    }
    assert!(
        !diff.contains("usr/bin/tool"),
        "an unchanged file was written:\n{diff}"
    );

    let rootfs = umoci_unpack(&layout, "two", &store.scratch("bundle2"));
    assert_same_tree(&s2.extraction, &rootfs);
    let rootfs = umoci_unpack(&layout, "one", &store.scratch("bundle1"));
    assert_same_tree(&s1.extraction, &rootfs);
}

#[test]
fn docker_archive_is_accepted_by_skopeo() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    image_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");
    let archive = store.scratch("image.tar");
    store.ok(&[
        "export",
        "vm",
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
        "--tag",
        "v1",
        "--image-env",
        "A=b",
    ]);
    let manifest = docker_archive_manifest(&archive);
    assert_eq!(manifest[0]["RepoTags"][0], "vm:v1", "{manifest}");
    let layer = manifest[0]["Layers"][0].as_str().unwrap();
    assert!(tar_member(&archive, layer) == snap.stream);

    let layout = store.scratch("layout");
    skopeo_copy(
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:v1", layout.display()),
        &[],
    );
    let config = skopeo_inspect_config(&format!("oci:{}:v1", layout.display()));
    assert_eq!(config["config"]["Env"][0], "A=b", "{config}");
    let rootfs = umoci_unpack(&layout, "v1", &store.scratch("bundle"));
    assert_same_tree(&snap.extraction, &rootfs);
}

/// Settings given at snapshot time are the image's defaults; export flags override them, and
/// snapshot labels become image labels.
#[test]
fn image_settings_come_from_the_snapshot_and_the_flags() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let stream = tar_of_dir(&root);
    let out = store.run_stdin(
        &[
            "snapshot",
            "--name",
            "vm",
            "--label",
            "team=infra",
            "--image-user",
            "node",
            "--image-workdir",
            "/home/node",
            "--image-env",
            "A=1",
            "--image-cmd",
            r#"sh -c "echo 'hi there'""#,
            "--image-platform",
            "linux/arm64/v8",
            "-",
        ],
        &stream,
    );
    assert_success(&out, &["snapshot"]);
    let layout = store.scratch("layout");
    export_oci(
        &store,
        "vm",
        &layout,
        &[
            "--image-env",
            "B=2",
            "--image-entrypoint",
            r#"["/bin/init","--x"]"#,
        ],
    );
    let c = oci_image(&layout, "latest").config;
    assert_eq!(c["architecture"], "arm64", "{c}");
    assert_eq!(c["variant"], "v8", "{c}");
    assert_eq!(c["os"], "linux", "{c}");
    let run = &c["config"];
    assert_eq!(run["User"], "node");
    assert_eq!(run["WorkingDir"], "/home/node");
    assert_eq!(run["Env"], serde_json::json!(["A=1", "B=2"]));
    assert_eq!(
        run["Cmd"],
        serde_json::json!(["sh", "-c", "echo 'hi there'"])
    );
    assert_eq!(run["Entrypoint"], serde_json::json!(["/bin/init", "--x"]));
    assert_eq!(run["Labels"]["team"], "infra");

    // Words that start with a dash are values, as `sh -c` needs them.
    let dashed = store.scratch("dashed");
    export_oci(
        &store,
        "vm",
        &dashed,
        &[
            "--image-entrypoint",
            "/bin/sh",
            "--image-cmd",
            "-c 'echo hi'",
        ],
    );
    let run = &oci_image(&dashed, "latest").config["config"];
    assert_eq!(run["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(run["Cmd"], serde_json::json!(["-c", "echo hi"]));
}

/// Forgetting a snapshot reshapes its lineage's images (the next one becomes a base), and gc
/// drops every cached digest and blob that named it.
#[test]
fn forgotten_snapshots_leave_the_images_and_the_cache() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let s1 = snap_dir(&store, &root, "vm", "1");
    write_file(&root.join("etc/more"), b"more\n");
    let s2 = snap_dir(&store, &root, "vm", "2");
    let layout = store.scratch("layout");
    export_oci(
        &store,
        "vm",
        &layout,
        &["--layers", "incremental", "--tag", "before"],
    );
    assert_eq!(oci_image(&layout, "before").layers.len(), 2);

    let naming_s1 = |store: &TestStore| -> i64 {
        let db = store.db();
        let like = format!("%{}%", s1.id);
        let layers: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM layer_digests WHERE key LIKE ?1",
                [&like],
                |r| r.get(0),
            )
            .unwrap();
        let blobs: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM image_blobs WHERE snapshot LIKE ?1",
                [&like],
                |r| r.get(0),
            )
            .unwrap();
        layers + blobs
    };
    assert!(naming_s1(&store) > 0);
    store.ok(&["rm", &s1.id]);
    store.ok(&["gc"]);
    assert_eq!(
        naming_s1(&store),
        0,
        "gc left cache rows naming a forgotten snapshot"
    );

    export_oci(
        &store,
        "vm",
        &layout,
        &["--layers", "incremental", "--tag", "after"],
    );
    let after = oci_image(&layout, "after");
    assert_eq!(after.layers.len(), 1, "the only snapshot left is a base");
    let rootfs = umoci_unpack(&layout, "after", &store.scratch("bundle"));
    assert_same_tree(&s2.extraction, &rootfs);
}

/// A chain never grows past 16 layers: the 17th snapshot of a lineage starts a new base, and
/// the ones after it build on that base.
#[test]
fn incremental_chains_restart_every_16_snapshots() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    let mut ids = Vec::new();
    for i in 0..18 {
        write_file(&root.join(format!("f{i}")), format!("{i}\n").as_bytes());
        let stream = tar_of_dir(&root);
        ids.push(store.snapshot_bytes(&stream, "vm"));
    }
    let layers = |id: &str| -> Vec<String> {
        let dir = store.scratch(&format!("layout-{id}"));
        let json = store.json(&[
            "export",
            id,
            "--format",
            "oci",
            "-o",
            dir.to_str().unwrap(),
            "--layers",
            "incremental",
            "--json",
        ]);
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(layers(&ids[0]).len(), 1);
    let fifteenth = layers(&ids[15]);
    assert_eq!(fifteenth.len(), 16);
    assert_eq!(layers(&ids[16]).len(), 1, "the 17th snapshot is a new base");
    let last = layers(&ids[17]);
    assert_eq!(last.len(), 2);
    assert_eq!(last[0], layers(&ids[16])[0]);
    assert_eq!(
        &layers(&ids[14])[..],
        &fifteenth[..15],
        "a chain's layers are shared"
    );
}
