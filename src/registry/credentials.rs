//! Where a registry's user and password come from: docker's config file, as docker reads it
//! (the credential helper named for the host, else the default helper, else the `auths`
//! entry).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;

/// Standard base64, accepting input with or without padding (docker writes padding; hand
/// edited files and other tools sometimes do not).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub pass: String,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.user, self.pass))
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker/config.json"))
}

/// What an `auths` key names: `host[:port]`, with any scheme and path dropped
/// (`https://index.docker.io/v1/` → `index.docker.io`).
fn key_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// The names docker may have stored `host`'s credentials under.
fn aliases(host: &str) -> Vec<String> {
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        vec![
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![host.to_ascii_lowercase()]
    }
}

/// The user and password docker's config gives for `host`, found as docker finds them: from
/// the credential helper `credHelpers` names for the host, else from the one `credsStore`
/// names, else from the `auths` entry. A missing file means none; a file that does not parse,
/// or a helper that fails, is an error, as it is for docker.
pub fn load_credentials(host: &str) -> anyhow::Result<Option<Credentials>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let names = aliases(host);
    let helper = names
        .iter()
        .find_map(|n| config.cred_helpers.get(n))
        .or(config.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return helper_credentials(helper, host).with_context(|| {
            format!(
                "the credentials for {host} from docker-credential-{helper} (named in {})",
                path.display()
            )
        });
    }
    match config
        .auths
        .iter()
        .find(|(k, _)| names.contains(&key_host(k)))
    {
        Some((_, entry)) => entry_credentials(entry)
            .with_context(|| format!("the credentials for {host} in {}", path.display())),
        None => Ok(None),
    }
}

/// What a credential helper answers to `get`.
#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Ask `docker-credential-HELPER get` (docker's credential helper protocol: the server on
/// stdin, JSON on stdout) for `host`'s credentials. "credentials not found" means none.
fn helper_credentials(helper: &str, host: &str) -> anyhow::Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    // Docker Hub's credentials are stored under its old index address.
    let server = if aliases(host).len() > 1 {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading says why on its own output.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {program}"))?;
    let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    if !out.status.success() {
        let (stdout, stderr) = (said(&out.stdout), said(&out.stderr));
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let why = [stdout, stderr]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        bail!("{program} get {server}: {}: {why}", out.status);
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} get {server} printed no credentials JSON"))?;
    if reply.username == "<token>" {
        bail!(
            "{program} holds an identity token for {server}; cellar can use a user and password \
             only (docker login with a password, or an access token as the password)"
        );
    }
    if reply.username.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        user: reply.username,
        pass: reply.secret,
    }))
}

fn entry_credentials(entry: &AuthEntry) -> anyhow::Result<Option<Credentials>> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = B64.decode(auth.trim()).context("\"auth\" is not base64")?;
        let text = String::from_utf8(raw).context("\"auth\" is not UTF-8")?;
        let Some((user, pass)) = text.split_once(':') else {
            bail!("\"auth\" is not USER:PASSWORD");
        };
        return Ok(Some(Credentials {
            user: user.into(),
            pass: pass.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(user), Some(pass)) if !user.is_empty() => Ok(Some(Credentials {
            user: user.clone(),
            pass: pass.clone(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_entries() {
        let e = AuthEntry {
            auth: Some(B64.encode("me:p:w")),
            ..Default::default()
        };
        let c = entry_credentials(&e).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("me", "p:w"));
        let e = AuthEntry {
            auth: Some("bWU6cHc".into()), // me:pw without padding
            ..Default::default()
        };
        assert_eq!(entry_credentials(&e).unwrap().unwrap().pass, "pw");
        let e = AuthEntry {
            username: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(entry_credentials(&e).unwrap().unwrap().user, "u");
        assert_eq!(key_host("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(key_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
