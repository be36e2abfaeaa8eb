//! `cellar push` to a registry that lets only one user in (HTTP Basic): credentials come from
//! docker's config as docker finds them, from a credential helper (docker's protocol: the
//! server on stdin, JSON on stdout) before the `auths` entry, and failures say where they are.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use base64::Engine;

use super::registry::{PASSWORD, USER};
use super::*;
use crate::common::*;

/// A snapshot worth pushing: a few files.
fn snapshot(store: &TestStore) -> String {
    let dir = store.scratch("tree");
    write_file(&dir.join("etc/hostname"), b"vm1\n");
    write_file(&dir.join("bin/tool"), &noise(200_000, 3));
    let stream = tar_of_dir(&dir);
    store.snapshot_bytes(&stream, "vm")
}

/// An executable `docker-credential-NAME` in `bin` running `script` (sh).
fn helper(bin: &Path, name: &str, script: &str) {
    fs::create_dir_all(bin).unwrap();
    let path = bin.join(format!("docker-credential-{name}"));
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `cellar push vm REGISTRY/vm:t` with docker's config `config` and `bin` first on PATH.
fn push(store: &TestStore, registry: &Registry, config: &str, bin: &Path) -> Output {
    let dir = store.scratch("docker-config");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), config).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    store
        .cmd(&["push", "vm", &registry.reference("vm:t")])
        .env("DOCKER_CONFIG", &dir)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .stdin(Stdio::null())
        .output()
        .expect("run cellar push")
}

fn basic(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// The push succeeded, and the registry serves (to the user) the manifest it printed.
fn assert_pushed(out: &Output, registry: &Registry, what: &str) {
    assert!(
        out.status.success(),
        "{what}: push failed ({}): {}\nregistry log:\n{}",
        out.status,
        stderr(out),
        registry.log_text()
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let auth = format!("Basic {}", basic(USER, PASSWORD));
    let m = http_get(
        registry.addr(),
        &format!("/v2/vm/manifests/{digest}"),
        &[("Authorization", &auth), ("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(m.status, 200, "{what}: the pushed manifest: {}", m.text());
    assert_eq!(format!("sha256:{}", sha256_hex(&m.body)), digest, "{what}");
}

/// The push failed with exit 1 and said `needle`.
fn assert_refused(out: &Output, needle: &str, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(out));
    assert!(
        stderr(out).contains(needle),
        "{what}: expected {needle:?} in: {}",
        stderr(out)
    );
}

#[test]
fn push_takes_the_password_from_dockers_config() {
    let registry = Registry::with_user();
    let store = TestStore::new();
    snapshot(&store);
    let bin = store.scratch("bin");
    let host = registry.addr();

    let out = push(&store, &registry, "{}", &bin);
    assert_refused(&out, "asks for a user and password", "no credentials");
    let wrong = format!(
        r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
        basic(USER, "nope")
    );
    let out = push(&store, &registry, &wrong, &bin);
    assert_refused(&out, "refused access as \"cellar\"", "a wrong password");
    // The plain HTTP registry was reached: its refusal leads, not HTTPS's failure.
    let said = stderr(&out);
    assert!(said.starts_with("cellar: error: GET http://"), "{said}");
    assert!(!said.contains("cannot reach"), "{said}");

    // docker writes `auth`; other tools write the user and password apart, or name the
    // registry as a URL.
    let right = format!(
        r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
        basic(USER, PASSWORD)
    );
    assert_pushed(&push(&store, &registry, &right, &bin), &registry, "auth");
    let apart = format!(
        r#"{{"auths": {{"http://{host}/v2/": {{"username": "{USER}", "password": "{PASSWORD}"}}}}}}"#
    );
    assert_pushed(
        &push(&store, &registry, &apart, &bin),
        &registry,
        "username",
    );
}

#[test]
fn credential_helpers_are_asked_before_the_auths_entry() {
    let registry = Registry::with_user();
    let store = TestStore::new();
    snapshot(&store);
    let bin = store.scratch("bin");
    let host = registry.addr();
    let asked = store.scratch("asked");
    // Answers for this registry only, and records what it was asked for.
    helper(
        &bin,
        "cellartest",
        &format!(
            r#"[ "$1" = get ] || exit 2
read -r server || true
printf %s "$server" > '{asked}'
if [ "$server" = '{host}' ]; then
  printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\n' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi"#,
            asked = asked.display()
        ),
    );
    helper(
        &bin,
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    helper(&bin, "locked", "echo 'the keychain is locked' >&2; exit 3");
    let wrong_auth = format!(
        r#""auths": {{"{host}": {{"auth": "{}"}}}}"#,
        basic(USER, "nope")
    );

    // credHelpers names a helper for this host: it wins over a wrong `auths` entry.
    let config = format!(r#"{{{wrong_auth}, "credHelpers": {{"{host}": "cellartest"}}}}"#);
    assert_pushed(
        &push(&store, &registry, &config, &bin),
        &registry,
        "credHelpers",
    );
    assert_eq!(
        fs::read_to_string(&asked).unwrap(),
        host,
        "the helper is asked for the host"
    );
    // credsStore is the helper for every host credHelpers does not name.
    let config = r#"{"credsStore": "cellartest", "credHelpers": {"elsewhere.example": "locked"}}"#;
    assert_pushed(
        &push(&store, &registry, config, &bin),
        &registry,
        "credsStore",
    );

    // A helper that has nothing for the host means no credentials, as for docker.
    let config = format!(r#"{{{wrong_auth}, "credsStore": "empty"}}"#);
    let out = push(&store, &registry, &config, &bin);
    assert_refused(
        &out,
        "asks for a user and password",
        "a helper with nothing",
    );
    // A failing or missing helper is an error naming it, with what it said.
    let out = push(&store, &registry, r#"{"credsStore": "locked"}"#, &bin);
    assert_refused(&out, "docker-credential-locked", "a failing helper");
    assert_refused(&out, "the keychain is locked", "a failing helper");
    let out = push(&store, &registry, r#"{"credsStore": "absent"}"#, &bin);
    assert_refused(&out, "docker-credential-absent", "a missing helper");
}
