//! Where `cellar export --format oci -o DIR` writes: a new DIR whole or not at all, an
//! existing layout added to and nothing else, and arguments refused before anything is written.

use std::fs;
use std::path::Path;

use super::cellar::*;
use super::export::export_oci;
use super::*;
use crate::common::*;
use crate::trees::portable_tree;

/// An interrupted export leaves no partial layout: nothing of a new DIR (it is written beside
/// it and renamed into place), and an existing layout as it was, plus whole blobs at most.
#[test]
fn an_interrupted_export_leaves_no_partial_layout() {
    let store = TestStore::new();
    snapshot_big(&store, "big");
    let small = store.scratch("small");
    write_file(&small.join("f"), b"small\n");
    store.snapshot_bytes(&tar_of_dir(&small), "small");
    let out = store.scratch("out");
    let existing = out.join("existing");
    export_oci(&store, "small", &existing, &["--tag", "small"]);
    let before = layout_state(&existing);
    let count = |dir: &Path| fs::read_dir(dir).unwrap().count();
    let blobs = existing.join("blobs/sha256");
    let (top, blob_count) = (count(&existing), count(&blobs));

    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let export = |dir: &Path| {
            store
                .cmd(&[
                    "export",
                    "big",
                    "--format",
                    "oci",
                    "-o",
                    dir.to_str().unwrap(),
                    "--tag",
                    "big",
                ])
                .spawn()
                .unwrap()
        };
        // A new DIR, as soon as the export has made anything.
        let status = interrupt_when(export(&out.join("new")), signal, || count(&out) > 1);
        assert_eq!(status.code(), Some(128 + signal), "{status}");
        assert_eq!(
            entries(&out),
            std::slice::from_ref(&existing),
            "signal {signal}: left"
        );

        // The existing layout, as soon as anything new is in it.
        let status = interrupt_when(export(&existing), signal, || {
            count(&existing) != top || count(&blobs) != blob_count
        });
        assert_eq!(status.code(), Some(128 + signal), "{status}");
        assert_layout_kept(&existing, &before, &format!("signal {signal}"));
    }
    oci_image(&existing, "small").assert_diff_ids();
    assert_eq!(oci_tags(&existing), ["small"]);
}

#[test]
fn bad_export_arguments_are_usage_errors() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    snap_dir(&store, &root, "vm", "1");
    for (args, says) in [
        (vec!["export", "vm", "--format", "oci"], "-o DIR"),
        (
            vec!["export", "vm", "--format", "oci", "-o", "x", "--tag=-bad"],
            "invalid tag",
        ),
        (
            vec![
                "export",
                "vm",
                "--format",
                "oci",
                "-o",
                "x",
                "--image-platform",
                "linux",
            ],
            "OS/ARCH",
        ),
        (
            vec![
                "export",
                "vm",
                "--format",
                "oci",
                "-o",
                "x",
                "--image-cmd",
                "sh -c 'x",
            ],
            "quotes",
        ),
        (vec!["export", "nope", "--format", "oci", "-o", "x"], "nope"),
    ] {
        let out = store.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new("x").exists());
}

/// `-o DIR` adds to a layout or fills an empty directory; a directory holding anything else,
/// or a layout whose index.json is not an index, is refused as it is (exit 2), and adding a
/// tag keeps what the index said besides its manifests.
#[test]
fn export_into_an_existing_directory_adds_to_a_layout_and_nothing_else() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    snap_dir(&store, &root, "vm", "1");
    let refuse = |dir: &Path, says: &str| {
        let out = store.run(&[
            "export",
            "vm",
            "--format",
            "oci",
            "-o",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            dir.display(),
            stderr(&out)
        );
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };

    let other = store.scratch("other");
    write_file(&other.join("notes.txt"), b"mine\n");
    refuse(&other, "is not an OCI image layout");
    assert_eq!(
        entries(&other),
        [other.join("notes.txt")],
        "the directory was written to"
    );

    let empty = store.scratch("empty");
    fs::create_dir(&empty).unwrap();
    export_oci(&store, "vm", &empty, &[]);
    assert_eq!(oci_tags(&empty), ["latest"]);
    // Given relative to the working directory, as `-o .` is: still only empty.
    for (name, arg) in [("rel", "rel"), ("dot", "."), ("dot-slash", "./")] {
        let dir = store.scratch(name);
        fs::create_dir(&dir).unwrap();
        let (cwd, arg) = if arg == "rel" {
            (store.scratch(""), name)
        } else {
            (dir.clone(), arg)
        };
        let out = store
            .cmd(&["export", "vm", "--format", "oci", "-o", arg])
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert_success(&out, &["export", "-o", arg]);
        assert_eq!(oci_tags(&dir), ["latest"], "{arg}");
    }

    let layout = store.scratch("layout");
    export_oci(&store, "vm", &layout, &["--tag", "one"]);
    for bad in [
        &br#"{"not":"an index"}"#[..],
        br#"{"manifests":"oops"}"#,
        b"[]",
    ] {
        fs::write(layout.join("index.json"), bad).unwrap();
        let before = layout_state(&layout);
        refuse(&layout, "not an OCI index");
        assert_layout_kept(&layout, &before, &String::from_utf8_lossy(bad));
    }

    let mut index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [],
        "annotations": {"org.example.owner": "infra"},
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    export_oci(&store, "vm", &layout, &["--tag", "two"]);
    index = oci_index(&layout);
    assert_eq!(
        index["annotations"]["org.example.owner"], "infra",
        "{index}"
    );
    assert_eq!(oci_tags(&layout), ["two"]);
}
