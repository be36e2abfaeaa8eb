//! Names starting `.wh.`, which no layer can carry (OCI reads them as whiteouts): every
//! command that makes an image leaves them out and says so, on stderr and in `--json`, and
//! `serve` logs it once for each such layer it builds. `push` and `pack` are checked beside
//! their other tests.

use std::path::Path;
use std::process::Output;

use serde_json::json;

use super::cellar::*;
use super::*;
use crate::common::*;

/// `cellar export SNAP --format FORMAT -o OUT --json EXTRA...` and its arguments.
fn export(store: &TestStore, snap: &str, format: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["export", snap, "--format", format, "-o"];
    args.push(out.to_str().unwrap());
    args.push("--json");
    args.extend_from_slice(extra);
    store.run(&args)
}

#[test]
fn export_says_which_paths_the_image_leaves_out() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    whiteout_named_tree(&root);
    let snap = snap_dir(&store, &root, "vm", "1");

    let layout = store.scratch("layout");
    let out = export(&store, "vm", "oci", &layout, &[]);
    let report = assert_left_out_reported(&out, &["export", "oci"], &snap.id);
    crate::readme_json::assert_readme_order(&report, "`config` in the `--json` object");
    let img = oci_image(&layout, "latest");
    img.assert_diff_ids();
    let blob = blob_path(&layout, &img.layers[0].digest);
    let names = String::from_utf8(sh(&format!("tar -tf {}", blob.display()))).unwrap();
    assert!(!names.contains(".wh."), "{names}");
    assert!(
        names.contains("./many/plain") && names.contains("./etc/hostname"),
        "{names}"
    );

    // Said again when the layer is known already (its digest cached), as a docker archive.
    let archive = store.scratch("vm.tar");
    let out = export(&store, "vm", "docker-archive", &archive, &[]);
    let report = assert_left_out_reported(&out, &["export", "docker-archive"], &snap.id);
    crate::readme_json::assert_readme_order(&report, "`config` in the `--json` object");

    // An incremental image lacks what its snapshot's tree holds under such names.
    write_file(&root.join("etc/added"), b"new\n");
    let s2 = snap_dir(&store, &root, "vm", "2");
    let incremental = ["--layers", "incremental", "--tag", "inc"];
    let out = export(&store, "vm", "oci", &layout, &incremental);
    assert_left_out_reported(&out, &["export", "incremental"], &s2.id);

    // A snapshot with none says nothing.
    let clean = store.scratch("clean");
    crate::trees::portable_tree(&clean);
    snap_dir(&store, &clean, "clean", "clean");
    let out = export(&store, "clean", "oci", &layout, &["--tag", "c"]);
    assert_success(&out, &["export", "clean"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["left_out"], json!({ "count": 0, "paths": [] }));
}

#[test]
fn serve_logs_what_a_layer_it_builds_leaves_out() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    whiteout_named_tree(&root);
    snap_dir(&store, &root, "vm", "1");
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    let served = Served::start(&store, &[]);
    let addr = served.addr();

    let m = http_get(addr, "/v2/vm/manifests/latest", &accept);
    assert_eq!(m.status, 200, "{}", m.text());
    let layer = m.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let logged = format!("cellar serve: layer {layer} leaves out {WHITEOUT_NAMED_LEFT_OUT}");
    let builds = || {
        served
            .log()
            .iter()
            .filter(|l| l.contains("leaves out"))
            .count()
    };
    for pulls in 1..=2 {
        let b = http_get(addr, &format!("/v2/vm/blobs/{layer}"), &[]);
        assert_eq!(b.status, 200);
        assert_eq!(format!("sha256:{}", sha256_hex(&b.body)), layer);
        assert_eq!(served.log_line(&logged), Some(logged.clone()));
        // One line per layer, however often it is downloaded (the log is read after the
        // download's end, when the line would be written).
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(builds(), 1, "pull {pulls}: {:#?}", served.log());
    }

    // A diff layer leaves out what it would have carried: the name added since, not the
    // unchanged one beside it.
    write_file(&root.join("etc/.wh.new"), b"new\n");
    snap_dir(&store, &root, "vm", "2");
    let served = Served::start(&store, &["--layers", "incremental"]);
    let addr = served.addr();
    let m = http_get(addr, "/v2/vm/manifests/latest", &accept);
    let diff = m.json()["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http_get(addr, &format!("/v2/vm/blobs/{diff}"), &[]).status,
        200
    );
    assert_eq!(
        served.log_line(&format!("layer {diff}")),
        Some(format!(
            "cellar serve: layer {diff} leaves out 1 path named .wh.* (OCI reads such names as \
             whiteouts): /etc/.wh.new"
        ))
    );
}
