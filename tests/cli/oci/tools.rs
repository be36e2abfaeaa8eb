//! skopeo and umoci, the independent judges of what cellar writes: skopeo moves images between
//! transports (`oci:DIR:TAG`, `docker://HOST/REPO:TAG`, `docker-archive:FILE`) and reads
//! manifests and configs; umoci builds layouts from plain tars and unpacks images to a rootfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::require;

/// Run `argv`, panicking with its stderr (and stdout) unless it succeeds.
pub(crate) fn run_tool(argv: &[&str]) -> Output {
    require(argv[0]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed ({}):\nstderr:\n{}\nstdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// skopeo's global flags: no signature policy (a fresh machine may have no
/// /etc/containers/policy.json, and the tests check digests themselves).
const SKOPEO: &[&str] = &["skopeo", "--insecure-policy"];

/// `skopeo copy SRC DST` over plain HTTP (`--src/--dest-tls-verify=false` only matter for
/// `docker://` and are accepted, unused, for other transports). `extra` goes before SRC, e.g.
/// `["--format", "oci"]`, `["--dest-compress-format", "zstd"]`,
/// `["--dest-oci-accept-uncompressed-layers"]`. Returns skopeo's output.
pub(crate) fn skopeo_copy(src: &str, dst: &str, extra: &[&str]) -> Output {
    let mut argv = SKOPEO.to_vec();
    argv.extend([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    argv.extend_from_slice(extra);
    argv.extend([src, dst]);
    run_tool(&argv)
}

fn skopeo_inspect_args(reference: &str, flags: &[&str]) -> Vec<u8> {
    let mut argv = SKOPEO.to_vec();
    argv.extend(["inspect", "--tls-verify=false"]);
    argv.extend_from_slice(flags);
    argv.push(reference);
    run_tool(&argv).stdout
}

/// The manifest (or index) exactly as the source serves it: its sha256 is the digest.
pub(crate) fn skopeo_inspect_raw(reference: &str) -> Vec<u8> {
    skopeo_inspect_args(reference, &["--raw"])
}

/// The config blob exactly as stored (`--raw --config`: not converted to OCI form), parsed.
pub(crate) fn skopeo_inspect_config(reference: &str) -> serde_json::Value {
    let raw = skopeo_inspect_args(reference, &["--raw", "--config"]);
    serde_json::from_slice(&raw).unwrap_or_else(|e| {
        panic!(
            "skopeo inspect --raw --config {reference}: not JSON ({e}): {}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// skopeo's summary (`Digest`, `Layers`, `Architecture`, `Os`, `Env`, `Labels`...). `--no-tags`:
/// listing tags needs the tags API, which an `oci:` or archive source does not have.
pub(crate) fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = skopeo_inspect_args(reference, &["--no-tags"]);
    serde_json::from_slice(&out).expect("skopeo inspect prints JSON")
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE` (as root: owners, devices and every xattr kept;
/// `--rootless` would turn devices into empty files and fake owners). Returns BUNDLE/rootfs.
pub(crate) fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    run_tool(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        bundle.to_str().expect("utf-8 path"),
    ]);
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.is_dir(), "umoci unpack left no {}", rootfs.display());
    rootfs
}

/// An OCI layout at `layout` (created if missing) whose image `tag` has one layer per tar file
/// in `layers`, added verbatim by `umoci raw add-layer` (which gzips them). The reference image
/// the helpers are checked with, and something to compare cellar's exports with.
pub(crate) fn umoci_image_from_tars(layout: &Path, tag: &str, layers: &[&Path]) {
    let l = layout.to_str().expect("utf-8 path");
    if !layout.join("oci-layout").exists() {
        run_tool(&["umoci", "init", "--layout", l]);
    }
    let image = format!("{l}:{tag}");
    run_tool(&["umoci", "new", "--image", &image]);
    for tar in layers {
        run_tool(&[
            "umoci",
            "raw",
            "add-layer",
            "--image",
            &image,
            tar.to_str().expect("utf-8 path"),
        ]);
    }
}

/// The `manifest.json` of a `docker save`-style archive (a list of {Config, RepoTags, Layers}).
pub(crate) fn docker_archive_manifest(archive: &Path) -> serde_json::Value {
    let out = run_tool(&[
        "tar",
        "-xOf",
        archive.to_str().expect("utf-8 path"),
        "manifest.json",
    ]);
    serde_json::from_slice(&out.stdout).expect("manifest.json is JSON")
}

/// A member of a tar archive, by its exact name.
pub(crate) fn tar_member(archive: &Path, name: &str) -> Vec<u8> {
    run_tool(&["tar", "-xOf", archive.to_str().expect("utf-8 path"), name]).stdout
}

/// Write `bytes` to `path` (creating parents), returning the path: tars for umoci and skopeo.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> PathBuf {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}
