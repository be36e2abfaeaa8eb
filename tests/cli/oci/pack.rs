//! `cellar pack`: the image served in-process to a stand-in for smolvm that pulls it the way
//! smolvm's agent does (here with skopeo) and checks the tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::cellar::*;
use crate::common::*;
use crate::trees::portable_tree;

/// A `smolvm` that takes `pack create --image REF --output OUT [EXTRA...]`, pulls REF with
/// skopeo into an OCI layout at OUT, unpacks it beside OUT with umoci, and records its
/// arguments. `FAIL_WITH` in its environment makes it fail instead.
fn stand_in(dir: &Path) -> PathBuf {
    let path = dir.join("smolvm");
    std::fs::write(
        &path,
        r#"#!/bin/sh
set -eu
[ "$1 $2" = "pack create" ] || { echo "usage: smolvm pack create ..." >&2; exit 64; }
shift 2
[ "$1" = --image ] && image=$2 && shift 2
[ "$1" = --output ] && out=$2 && shift 2
echo "$image" > "$out.image"
echo "$*" > "$out.extra"
if [ -n "${FAIL_WITH:-}" ]; then echo "smolvm: cannot boot: $FAIL_WITH" >&2; exit 3; fi
skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$image" "oci:$out:packed"
umoci unpack --image "$out:packed" "$out.bundle" >/dev/null
echo "packed $image into $out"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A store holding snapshot "vm" of `fill`'s tree, the stand-in smolvm, a path to pack to,
/// and `pack vm -o OUT --smolvm SMOLVM --json` for that.
fn packable(fill: fn(&Path)) -> (TestStore, Snap, PathBuf, PathBuf, Vec<String>) {
    let store = TestStore::new();
    let root = store.scratch("tree");
    fill(&root);
    let snap = snap_dir(&store, &root, "vm", "1");
    let smolvm = stand_in(store.dir.path());
    let out = store.scratch("vm.smolmachine");
    let args = ["pack", "vm", "-o", out.to_str().unwrap(), "--smolvm"]
        .into_iter()
        .chain([smolvm.to_str().unwrap(), "--json"])
        .map(String::from)
        .collect();
    (store, snap, smolvm, out, args)
}

#[test]
fn pack_feeds_smolvm_the_snapshot_image() {
    let (store, snap, smolvm, out, args) = packable(portable_tree);
    let beside = |ext: &str| PathBuf::from(format!("{}.{ext}", out.display()));
    // smolvm's own stdout goes to stderr: stdout is cellar's report alone.
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--", "--cpus", "2"]);
    let report = store.json(&args);
    assert_eq!(report["output"], out.to_str().unwrap());
    assert_eq!(
        report["left_out"],
        serde_json::json!({ "count": 0, "paths": [] })
    );
    let image = std::fs::read_to_string(beside("image")).unwrap();
    let image = image.trim();
    assert!(
        image.starts_with("127.0.0.1:") && image.contains("/vm@sha256:"),
        "{image}"
    );
    assert_eq!(
        std::fs::read_to_string(beside("extra")).unwrap().trim(),
        "--cpus 2"
    );
    super::assert_same_tree(&snap.extraction, &beside("bundle").join("rootfs"));

    // Nothing is left listening.
    let addr = image.split('/').next().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} still answers"
    );

    // --pull-host names the address the VM reaches; smolvm's failure is cellar's.
    let bad = store
        .cmd(&[
            "pack",
            "vm",
            "-o",
            store.scratch("x").to_str().unwrap(),
            "--smolvm",
            smolvm.to_str().unwrap(),
            "--pull-host",
            "10.0.2.2:7000",
        ])
        .env("FAIL_WITH", "no kvm")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(
        err.contains("exited with status 3") && err.contains("cannot boot: no kvm"),
        "{err}"
    );
    let image = std::fs::read_to_string(store.scratch("x.image")).unwrap();
    assert!(image.starts_with("10.0.2.2:7000/vm@sha256:"), "{image}");

    // A smolvm that says it succeeded but wrote nothing has failed.
    let nothing = store.run(&["pack", "vm", "-o", "z", "--smolvm", "/bin/true"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("wrote no z"),
        "{}",
        stderr(&nothing)
    );

    let missing = store.run(&["pack", "vm", "-o", "y", "--smolvm", "/nonexistent/smolvm"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("/nonexistent/smolvm"));
}

/// Names starting `.wh.` are left out of the image smolvm gets: a warning, and `--json` says
/// which.
#[test]
fn pack_says_which_paths_the_image_leaves_out() {
    let (store, snap, _, out, args) = packable(whiteout_named_tree);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_left_out_reported(&store.run(&args), &args, &snap.id);
    let unpacked = PathBuf::from(format!("{}.bundle/rootfs", out.display()));
    assert!(unpacked.join("many/plain").exists());
    assert!(!unpacked.join("etc/.wh.keep").exists());
}

/// An interrupt of `cellar pack` stops smolvm and what it started (here a VM it left running
/// in the background) before cellar ends with 128 + the signal.
#[test]
fn an_interrupted_pack_leaves_nothing_running() {
    let (store, _snap, _smolvm, out, _args) = packable(portable_tree);
    let tag = std::process::id();
    let (vm, agent) = (format!("sleep 71.{tag}"), format!("sleep 72.{tag}"));
    let smolvm = store.dir.path().join("slow-smolvm");
    fs::write(&smolvm, format!("#!/bin/sh\n{vm} &\nexec {agent}\n")).unwrap();
    fs::set_permissions(&smolvm, fs::Permissions::from_mode(0o755)).unwrap();
    let child = store
        .cmd(&[
            "pack",
            "vm",
            "-o",
            out.to_str().unwrap(),
            "--smolvm",
            smolvm.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("smolvm and its VM to run", || {
        running(&vm) && running(&agent)
    });
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let done = child.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        stderr(&done)
    );
    assert!(
        !running(&vm) && !running(&agent),
        "smolvm outlived cellar pack"
    );
}

/// An OUT smolvm could not write is refused before the image is served or smolvm runs (exit
/// 2), as export refuses its -o; and a smolvm that fails is named once, its messages shown
/// as they came, not repeated.
#[test]
fn pack_refuses_an_output_it_cannot_write_before_smolvm_runs() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    write_file(&root.join("f"), b"f\n");
    store.snapshot_bytes(&tar_of_dir(&root), "vm");
    // A smolvm that leaves a mark: it must not run.
    let mark = store.scratch("ran");
    let smolvm = store.scratch("smolvm");
    write_file(
        &smolvm,
        format!("#!/bin/sh\ntouch '{}'\nexit 0\n", mark.display()).as_bytes(),
    );
    sh(&format!("chmod +x '{}'", smolvm.display()));
    let file = store.scratch("afile");
    write_file(&file, b"x");
    std::fs::create_dir(store.scratch("adir")).unwrap();
    let at = |p: &str| store.scratch(p).to_str().unwrap().to_string();
    for (out, says) in [
        (at("adir"), "is a directory"),
        (at("missing/p"), "no directory"),
        (at("afile/p"), "part of the path is not a directory"),
        (at("new/"), "a trailing / names a directory"),
    ] {
        let r = store.run(&[
            "pack",
            "vm",
            "-o",
            &out,
            "--smolvm",
            smolvm.to_str().unwrap(),
        ]);
        let err = stderr(&r);
        assert_eq!(r.status.code(), Some(2), "{out}: {err}");
        assert!(
            err.contains(says) && !err.contains("serving"),
            "{out}: {err}"
        );
        assert!(!mark.exists(), "{out}: smolvm ran");
    }

    let loud = store.scratch("loud");
    write_file(
        &loud,
        b"#!/bin/sh\necho 'cannot boot: no kvm' >&2\nexit 3\n",
    );
    sh(&format!("chmod +x '{}'", loud.display()));
    let r = store.run(&[
        "pack",
        "vm",
        "-o",
        &at("p"),
        "--smolvm",
        loud.to_str().unwrap(),
    ]);
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("cannot boot: no kvm").count(), 1, "{err}");
    assert!(
        err.contains("exited with status 3 (what it said is above)"),
        "{err}"
    );
}
