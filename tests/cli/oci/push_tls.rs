//! `cellar push` over TLS, against registries whose certificate a test CA signed: the CA is
//! trusted when the system trusts it (`SSL_CERT_FILE`), when it is kept for the registry's host
//! in a certs.d directory, or in `--cert-dir`; a registry that asks for a client certificate
//! gets the one kept beside it; `--insecure` trusts anything; the refusals say why.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::push::{pull_rootfs, push, push_env, push_json, served_digest, uploaded};
use super::*;
use crate::common::*;

/// A snapshot of one small file, named `vm`.
fn snapshot(store: &TestStore) {
    let mut stream = Vec::new();
    member(&mut stream, b"f", b'0', b"over tls\n", b"", 0o644);
    end_of_archive(&mut stream);
    store.snapshot_bytes(&stream, "vm");
}

/// A certificate directory in docker's layout holding `files` (name, source).
fn cert_dir(dir: &Path, files: &[(&str, &Path)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for (name, src) in files {
        fs::copy(src, dir.join(name)).unwrap();
    }
    dir.to_path_buf()
}

/// A push that failed (exit 1), saying all of `words`.
fn assert_refused(out: &std::process::Output, words: &[&str]) {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for w in words {
        assert!(said.contains(w), "the refusal says {w:?}: {said}");
    }
}

/// A directory removed on drop: an entry this test puts under /etc.
struct Placed(PathBuf);

impl Drop for Placed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A registry that speaks only HTTPS with a certificate no one here trusts: `--insecure`
/// pushes to it over TLS (on loopback too, where plain HTTP is only the fallback, as crane has
/// it); without it the push fails and says why.
#[test]
fn insecure_pushes_over_unverified_tls() {
    let registry = Registry::with_tls();
    let store = TestStore::new();
    snapshot(&store);

    let refused = push(&store, &["vm", &registry.reference("vm:t")]);
    let https = format!("https://{}/v2/", registry.addr());
    assert_refused(&refused, &[&https, "ertificate"]);

    let report = push_json(
        &store,
        &registry,
        &["vm", &registry.reference("vm:t"), "--insecure"],
    );
    assert_eq!(uploaded(&report), [true]);
    assert_eq!(report["digest"], served_digest(&registry, "vm:t"));
    let rootfs = pull_rootfs(&store, &registry, "vm:t", "tls");
    assert_eq!(fs::read(rootfs.join("f")).unwrap(), b"over tls\n");
}

/// The CA that signed the registry's certificate, trusted three ways, each alone: as the
/// system's roots (`SSL_CERT_FILE`), in `--cert-dir`, and kept for the registry's
/// `HOST:PORT` under /etc/docker/certs.d. A certificate directory that cannot be read as
/// one is refused, naming the file.
#[test]
fn a_trusted_ca_verifies_the_registry() {
    let registry = Registry::with_tls();
    let store = TestStore::new();
    snapshot(&store);
    let target = registry.reference("vm:t");
    let ca = registry.ca();

    let out = push_env(
        &store,
        &["vm", &target],
        &[("SSL_CERT_FILE", ca.as_os_str())],
    );
    assert!(out.status.success(), "SSL_CERT_FILE: {}", stderr(&out));

    let dir = cert_dir(&store.scratch("certs"), &[("ca.crt", &ca)]);
    let out = push(
        &store,
        &["vm", &target, "--cert-dir", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "--cert-dir: {}", stderr(&out));

    let placed = Placed(Path::new("/etc/docker/certs.d").join(registry.addr()));
    cert_dir(&placed.0, &[("ca.crt", &ca)]);
    let out = push(&store, &["vm", &target]);
    assert!(out.status.success(), "certs.d: {}", stderr(&out));
    // Not by chance: the same push fails once the directory is gone.
    drop(placed);
    assert_refused(&push(&store, &["vm", &target]), &["ertificate"]);
    let rootfs = pull_rootfs(&store, &registry, "vm:t", "trusted");
    assert_eq!(fs::read(rootfs.join("f")).unwrap(), b"over tls\n");

    let bad = cert_dir(&store.scratch("bad-certs"), &[]);
    fs::write(bad.join("ca.crt"), "not a certificate\n").unwrap();
    let out = push(
        &store,
        &["vm", &target, "--cert-dir", bad.to_str().unwrap()],
    );
    assert_refused(&out, &[&bad.join("ca.crt").display().to_string()]);
    fs::remove_file(bad.join("ca.crt")).unwrap();
    fs::write(bad.join("client.key"), "").unwrap();
    let out = push(
        &store,
        &["vm", &target, "--cert-dir", bad.to_str().unwrap()],
    );
    assert_refused(&out, &["client.key", "no client certificate"]);
}

/// A registry that lets in only clients with a certificate its CA signed: the push presents
/// the `NAME.cert` and `NAME.key` kept in the certificate directory, and is turned away
/// without them.
#[test]
fn a_client_certificate_gets_into_a_registry_that_asks_for_one() {
    let registry = Registry::with_mutual_tls();
    let store = TestStore::new();
    snapshot(&store);
    let target = registry.reference("vm:t");
    let dir = cert_dir(&store.scratch("certs"), &[("ca.crt", &registry.ca())]);
    let args = ["vm", &target, "--cert-dir", dir.to_str().unwrap()];

    let out = push(&store, &args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no client certificate, no entry"
    );

    // A key that is not the certificate's, or one under a passphrase: refused, saying so
    // (ureq would panic on the first, and take the second for no key at all).
    let (cert, key) = registry.client_cert();
    let other_key = registry.ca().with_extension("key");
    cert_dir(&dir, &[("client.cert", &cert), ("client.key", &other_key)]);
    assert_refused(
        &push(&store, &args),
        &["client.key", "do not belong together"],
    );
    let sealed = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:secret", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("client.key"))
        .status()
        .unwrap();
    assert!(sealed.success());
    assert_refused(&push(&store, &args), &["client.key", "encrypted"]);

    cert_dir(&dir, &[("client.cert", &cert), ("client.key", &key)]);
    let report = push_json(&store, &registry, &args);
    assert_eq!(uploaded(&report), [true]);
}
