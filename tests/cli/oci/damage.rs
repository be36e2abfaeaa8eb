//! Damaged data never completes a download: the chunk that fails its id ends the response
//! short of its Content-Length, and skopeo's copy fails; undamaged snapshots serve on.

use super::cellar::*;
use super::*;
use crate::common::*;

/// A store with snapshot `hurt` (its stream returned), whose pack has a flipped byte in the
/// middle of its data, and the undamaged snapshot `safe`, in packs of its own.
fn damaged_store() -> (TestStore, Vec<u8>, Snap) {
    let store = TestStore::new();
    let hurt = store.scratch("hurt");
    write_file(&hurt.join("big.bin"), &noise(6_000_000, 1));
    let hurt_stream = tar_of_dir(&hurt);
    store.snapshot_bytes(&hurt_stream, "hurt");
    let packs = store.pack_files();
    let safe = store.scratch("safe");
    write_file(&safe.join("other.bin"), &noise(200_000, 2));
    let safe_snap = snap_dir(&store, &safe, "safe", "safe");

    flip_middle_byte(&biggest(&packs));
    (store, hurt_stream, safe_snap)
}

#[test]
fn a_damaged_layer_is_never_served_whole() {
    let (store, hurt_stream, safe_snap) = damaged_store();

    let served = Served::start(&store, &[]);
    let path = format!("/v2/hurt/blobs/sha256:{}", sha256_hex(&hurt_stream));
    match try_http_request(served.addr(), "GET", &path, &[], b"") {
        Err(_) => {} // cut short: the client sees a failed download
        Ok(r) => assert!(
            r.status != 200 || r.body != hurt_stream,
            "a damaged layer was served whole"
        ),
    }
    let layout = store.scratch("layout");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(served.docker_ref("hurt:latest"))
        .arg(format!("oci:{}:t", layout.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "skopeo copied a damaged image");

    skopeo_copy(
        &served.docker_ref("safe:latest"),
        &format!("oci:{}:safe", layout.display()),
        &[],
    );
    let rootfs = umoci_unpack(&layout, "safe", &store.scratch("bundle"));
    assert_same_tree(&safe_snap.extraction, &rootfs);
}

/// An export that fails on damaged data leaves no partial layout: nothing of a new DIR, and an
/// existing layout as it was.
#[test]
fn a_damaged_layer_leaves_no_partial_layout() {
    let (store, _, _) = damaged_store();
    let out = store.scratch("out");
    let existing = out.join("existing");
    let export = |dir: &std::path::Path| {
        let args = [
            "export",
            "hurt",
            "--format",
            "oci",
            "-o",
            dir.to_str().unwrap(),
        ];
        let done = store.run(&args);
        assert_eq!(done.status.code(), Some(1), "{args:?}: {}", stderr(&done));
        assert!(stderr(&done).contains("damaged"), "{}", stderr(&done));
    };
    store.ok(&[
        "export",
        "safe",
        "--format",
        "oci",
        "-o",
        existing.to_str().unwrap(),
    ]);
    let before = layout_state(&existing);

    export(&out.join("new"));
    assert_eq!(
        entries(&out),
        std::slice::from_ref(&existing),
        "a failed export left"
    );
    export(&existing);
    assert_layout_kept(&existing, &before, "a failed export");
}
