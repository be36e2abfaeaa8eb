//! Whom a push trusts over TLS, as skopeo and docker do: the system's roots (with
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured, as OpenSSL and Go honour them), or Mozilla's
//! where the system has none; plus the CAs kept for the registry's host in a certs.d
//! directory, which may also hold the client certificate a registry asks for.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts};

/// Where per-registry certificates live: `DIR/HOST[:PORT]/`, containers' first, as skopeo
/// looks.
const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// What a push's TLS trusts and presents.
pub struct Trust {
    pub roots: RootCerts,
    pub client: Option<ClientCert>,
}

/// The trust for `host` (`HOST[:PORT]` as written in the reference): `cert_dir` in place of
/// the certs.d directories when given, as skopeo's `--dest-cert-dir`.
pub fn for_host(host: &str, cert_dir: Option<&Path>) -> anyhow::Result<Trust> {
    let dir = match cert_dir {
        Some(dir) => Some(dir.to_path_buf()),
        None => CERTS_D
            .iter()
            .map(|d| Path::new(d).join(host))
            .find(|d| d.is_dir()),
    };
    let (extra, client) = match &dir {
        Some(dir) => certs_d(dir)?,
        None => (Vec::new(), None),
    };
    let system = system_roots();
    let roots = match (system.is_empty(), extra.is_empty()) {
        (true, true) => RootCerts::WebPki,
        (false, _) => RootCerts::from(system.into_iter().chain(extra)),
        (true, false) => RootCerts::from(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .chain(extra),
        ),
    };
    Ok(Trust { roots, client })
}

/// The system's roots; none when it has no store (a bare container), whose files that do not
/// parse are passed over as OpenSSL passes them over.
fn system_roots() -> Vec<Certificate<'static>> {
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect()
}

/// A certs.d directory's `*.crt` (CAs) and its `NAME.cert` with `NAME.key` (the client's
/// certificate chain and key), as docker lays them out.
fn certs_d(dir: &Path) -> anyhow::Result<(Vec<Certificate<'static>>, Option<ClientCert>)> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading certificate directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading certificate directory {}", dir.display()))?;
    entries.sort();
    let mut cas = Vec::new();
    let mut client = None;
    for path in &entries {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => cas.extend(pem_certs(path)?),
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.exists() {
                    bail!(
                        "client certificate {} has no key beside it ({})",
                        path.display(),
                        key.display()
                    );
                }
                if client.is_some() {
                    bail!(
                        "{} holds more than one client certificate (*.cert)",
                        dir.display()
                    );
                }
                let (certs, private) = (pem_certs(path)?, pem_key(&key)?);
                check_pair(&certs, &private).with_context(|| {
                    format!(
                        "client certificate {} with key {}",
                        path.display(),
                        key.display()
                    )
                })?;
                client = Some(ClientCert::new_with_certs(&certs, private));
            }
            Some("key") if !path.with_extension("cert").exists() => bail!(
                "key {} has no client certificate beside it ({})",
                path.display(),
                path.with_extension("cert").display()
            ),
            _ => {}
        }
    }
    Ok((cas, client))
}

/// Whether TLS can present `certs` with `key`, asked as ureq asks rustls when it makes its
/// first connection: ureq panics there on a key that is not the certificate's, or of a kind
/// rustls cannot sign with.
fn check_pair(certs: &[Certificate<'_>], key: &PrivateKey<'_>) -> anyhow::Result<()> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = certs
        .iter()
        .map(|c| CertificateDer::from(c.der()).into_owned())
        .collect();
    // The DER tells its kind (PKCS#1, SEC1, PKCS#8), as ureq's parse found it.
    let der = PrivateKeyDer::try_from(key.der()).map_err(|e| anyhow!("{e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, der.clone_key())
        .map_err(|e| anyhow!("{}", pair_error(&e)))?;
    Ok(())
}

/// rustls's reason, in words.
fn pair_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "the key is not the certificate's (they do not belong together)".into()
        }
        rustls::Error::General(why) => format!("the key cannot be used: {why}"),
        other => other.to_string(),
    }
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<PemItem<'static>>> {
    Ok(read_pem_text(path)?.1)
}

/// A PEM file's bytes and what they hold.
fn read_pem_text(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<PemItem<'static>>)> {
    let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let items = ureq::tls::parse_pem(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: not PEM: {e}", path.display()))?;
    Ok((pem, items))
}

/// The certificates of a PEM file, at least one.
fn pem_certs(path: &Path) -> anyhow::Result<Vec<Certificate<'static>>> {
    let certs: Vec<_> = read_pem(path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        bail!("{}: holds no certificate", path.display());
    }
    Ok(certs)
}

/// The private key of a PEM file. An encrypted one (ureq reads no such block) is named as
/// such, rather than as no key at all.
fn pem_key(path: &Path) -> anyhow::Result<PrivateKey<'static>> {
    let (pem, items) = read_pem_text(path)?;
    if let Some(key) = items.into_iter().find_map(|item| match item {
        PemItem::PrivateKey(k) => Some(k),
        _ => None,
    }) {
        return Ok(key);
    }
    let encrypted = [&b"ENCRYPTED PRIVATE KEY"[..], b"Proc-Type: 4,ENCRYPTED"]
        .iter()
        .any(|m| pem.windows(m.len()).any(|w| w == *m));
    match encrypted {
        true => bail!(
            "{}: the key is encrypted with a passphrase, which cellar cannot ask for (decrypt \
             it: openssl pkey -in KEY -out KEY)",
            path.display()
        ),
        false => bail!("{}: holds no private key", path.display()),
    }
}
