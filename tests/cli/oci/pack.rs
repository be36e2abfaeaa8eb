//! `cellar pack`: the image served in-process to a stand-in for smolvm that pulls it the way
//! smolvm's agent does (here with skopeo) and checks the tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::cellar::*;
use crate::common::*;
use crate::trees::portable_tree;

/// A `smolvm` that takes `pack create --image REF --output OUT [EXTRA...]` as smolvm does
/// (refusing an OUT named `*.smolmachine`, writing the stub OUT and the sidecar
/// OUT.smolmachine), pulls REF with skopeo into an OCI layout beside OUT, unpacks it with
/// umoci, and records its arguments. `FAIL_WITH` in its environment makes it fail instead.
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
case "$out" in *.smolmachine) echo "error: the sidecar is created as <output>.smolmachine" >&2; exit 2;; esac
echo "$image" > "$out.image"
echo "$*" > "$out.extra"
if [ -n "${FAIL_WITH:-}" ]; then echo "smolvm: cannot boot: $FAIL_WITH" >&2; exit 3; fi
skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$image" "oci:$out.oci:packed"
umoci unpack --image "$out.oci:packed" "$out.bundle" >/dev/null
tar -cf "$out.smolmachine" -C "$out.oci" .
printf 'stub\n' > "$out"
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
    let out = store.scratch("vm");
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
    assert!(out.is_file() && beside("smolmachine").is_file());

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

    // ...nor has one that left an OUT of an earlier run as it was.
    write_file(&store.scratch("old"), b"an earlier pack\n");
    let old = store.scratch("old");
    let stale = pack_with(&store, &old, "/bin/true", &[]);
    assert_eq!(stale.status.code(), Some(1), "{}", stderr(&stale));
    assert!(stderr(&stale).contains("wrote no"), "{}", stderr(&stale));

    // A smolvm that is not there is named before the image is served.
    for (smolvm, says) in [
        ("/nonexistent/smolvm", "/nonexistent/smolvm: no such file"),
        ("no-such-smolvm", "no-such-smolvm: not found in PATH"),
    ] {
        let missing = store.run(&["pack", "vm", "-o", "y", "--smolvm", smolvm]);
        assert_eq!(missing.status.code(), Some(1));
        let err = stderr(&missing);
        assert!(err.contains(says) && !err.contains("serving"), "{err}");
        // A usage error comes first.
        let nosuch = store.run(&["pack", "nosuch", "-o", "y", "--smolvm", smolvm]);
        assert_eq!(nosuch.status.code(), Some(2), "{}", stderr(&nosuch));
    }
}

/// A wildcard --listen is no address to pull from: smolvm is given loopback (IPv4's, which
/// `[::]` takes too and every reference parser reads).
#[test]
fn pack_on_a_wildcard_address_gives_smolvm_loopback() {
    let (store, snap, smolvm, out, _args) = packable(portable_tree);
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let _ = fs::remove_dir_all(format!("{}.bundle", out.display()));
        let r = pack_with(
            &store,
            &out,
            smolvm.to_str().unwrap(),
            &["--listen", listen],
        );
        assert_success(&r, &["pack", "--listen", listen]);
        let image = fs::read_to_string(format!("{}.image", out.display())).unwrap();
        assert!(image.starts_with("127.0.0.1:"), "{listen}: {image}");
        let rootfs = PathBuf::from(format!("{}.bundle/rootfs", out.display()));
        super::assert_same_tree(&snap.extraction, &rootfs);
    }
}

/// smolvm is done when it exits: a process it left holding its stderr neither keeps `pack`
/// waiting nor outlives it.
#[test]
fn pack_ends_when_smolvm_does_and_stops_what_it_left() {
    let (store, _snap, _smolvm, out, _args) = packable(portable_tree);
    let helper = format!("sleep 73.{}", std::process::id());
    let smolvm = store.dir.path().join("leaving-smolvm");
    let script = format!(
        "#!/bin/sh\n{helper} &\necho 'started a helper' >&2\n\
         for last; do :; done\nprintf stub > \"$last\"\n"
    );
    fs::write(&smolvm, script).unwrap();
    fs::set_permissions(&smolvm, fs::Permissions::from_mode(0o755)).unwrap();
    let child = spawn_pack(&store, &out, &smolvm, Stdio::piped());
    let r = output_within_a_minute(child, "pack beside a helper holding smolvm's stderr");
    assert_success(&r, &["pack"]);
    let err = stderr(&r);
    assert!(err.contains("started a helper"), "{err}");
    assert!(err.contains("stopped what smolvm left running"), "{err}");
    assert!(!running(&helper), "smolvm's helper outlived cellar pack");
}

/// `cellar pack vm -o OUT --smolvm SMOLVM MORE...`, run.
fn pack_with(store: &TestStore, out: &Path, smolvm: &str, more: &[&str]) -> std::process::Output {
    let out = out.to_str().unwrap();
    let args = ["pack", "vm", "-o", out, "--smolvm", smolvm];
    store.run(&[&args[..], more].concat())
}

/// `cellar pack vm -o OUT --smolvm SMOLVM`, started, its stderr piped.
fn spawn_pack(store: &TestStore, out: &Path, smolvm: &Path, stdout: Stdio) -> std::process::Child {
    store
        .cmd(&[
            "pack",
            "vm",
            "-o",
            out.to_str().unwrap(),
            "--smolvm",
            smolvm.to_str().unwrap(),
        ])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    // Tags no other test uses: the tests share one process id, and each one's checks (and
    // reaper) go by the command line.
    let (vm, agent) = (format!("sleep 76.{tag}"), format!("sleep 77.{tag}"));
    let smolvm = store.dir.path().join("slow-smolvm");
    fs::write(&smolvm, format!("#!/bin/sh\n{vm} &\nexec {agent}\n")).unwrap();
    fs::set_permissions(&smolvm, fs::Permissions::from_mode(0o755)).unwrap();
    let child = spawn_pack(&store, &out, &smolvm, Stdio::null());
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
        (
            at("p.smolmachine"),
            &format!(
                "give -o {p} and it writes {p} and {p}.smolmachine",
                p = at("p")
            ),
        ),
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
