//! A client for the push side of the OCI distribution API, synchronous (ureq): check which
//! blobs a registry has, upload the rest, put a manifest. Authentication follows the
//! registry's challenges ([`auth`]); uploads stream ([`upload`]).

mod auth;
mod credentials;
mod reference;
mod trust;
mod upload;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use ureq::http::Response;
use ureq::Body;

pub use reference::Reference;

use auth::Challenge;
use credentials::Credentials;

/// How long a connection may take to open, and one read or write to make progress.
const NET_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of an error body is read and shown.
const ERROR_BODY_LIMIT: u64 = 64 << 10;

pub struct Client {
    agent: ureq::Agent,
    /// `https://host:port`, or `http://host:port` once `ping` found only that answering.
    base: String,
    /// Whether plain HTTP may be tried when HTTPS gets no answer.
    plain_http: bool,
    reference: Reference,
    creds: Option<Credentials>,
    /// The `Authorization` value the handshake settled on, kept for the run.
    auth: Option<String>,
}

impl Client {
    /// A client for `reference`'s registry. It speaks HTTPS; `ping` falls back to plain HTTP
    /// for loopback hosts or with `insecure` (which also accepts any TLS certificate), as
    /// crane does. It trusts what [`trust`] finds for the host, in `cert_dir` if given.
    pub fn new(
        reference: Reference,
        insecure: bool,
        cert_dir: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let trust = trust::for_host(&reference.host, cert_dir)?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(trust.roots)
            .client_cert(trust.client)
            .disable_verification(insecure)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(NET_TIMEOUT))
            .timeout_per_read(Some(NET_TIMEOUT))
            .timeout_per_write(Some(NET_TIMEOUT))
            .user_agent(concat!("cellar/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let creds = credentials::load_credentials(&reference.host)?;
        Ok(Client {
            agent,
            base: format!("https://{}", reference.api_host()),
            plain_http: insecure || reference.is_loopback(),
            reference,
            creds,
            auth: None,
        })
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.reference.repo)
    }

    /// `GET /v2/`: the registry is there, speaks the API, and lets us in (any challenge is
    /// met here, so later requests carry their credentials from the start). Over HTTPS, or
    /// over plain HTTP where that is allowed and HTTPS got no answer (no TLS on the port, or a
    /// certificate refused).
    pub fn ping(&mut self) -> anyhow::Result<()> {
        let https = format!("{}/v2/", self.base);
        let Err(tls_error) = self.ping_at(&https)? else {
            return Ok(());
        };
        if !self.plain_http {
            return Err(network_error(tls_error, &https));
        }
        self.base = self.base.replacen("https://", "http://", 1);
        let http = format!("{}/v2/", self.base);
        match self.ping_at(&http) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow!(
                "cannot reach the registry at {} over HTTPS ({https}: {tls_error}) or plain \
                 HTTP ({http}: {e})",
                self.reference.api_host()
            )),
            // A registry that speaks no TLS answered over plain HTTP: its answer is the error.
            Err(refused) if speaks_no_tls(&tls_error) => Err(anyhow!(
                "{refused} (over plain HTTP, as HTTPS failed: {tls_error})"
            )),
            // One that does (an untrusted certificate, say) refused plain HTTP for that.
            Err(refused) => Err(anyhow!(
                "{}; over plain HTTP: {refused}",
                network_error(tls_error, &https)
            )),
        }
    }

    /// `GET URL` (a `/v2/`): Err when the registry answered and refused; Ok(Err) when
    /// nothing answered.
    fn ping_at(&mut self, url: &str) -> anyhow::Result<Result<(), ureq::Error>> {
        let call = |agent: &ureq::Agent, auth: Option<&str>| with_auth(agent.get(url), auth).call();
        let resp = match call(&self.agent, self.auth_for(url)) {
            Ok(resp) => resp,
            Err(e) => return Ok(Err(e)),
        };
        let resp = self.meet_challenge(resp, "GET", url, call)?;
        check(resp, "GET", url, &[200]).map(|_| Ok(()))
    }

    /// Run a request (built afresh by `call` for each attempt, with the current
    /// `Authorization`); on 401 meet the challenge and try once more.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        call: impl Fn(&ureq::Agent, Option<&str>) -> Result<Response<Body>, ureq::Error>,
    ) -> anyhow::Result<Response<Body>> {
        let resp = call(&self.agent, self.auth_for(url)).map_err(|e| network_error(e, url))?;
        self.meet_challenge(resp, method, url, call)
    }

    /// `resp` if it is not a 401; else meet its challenge and return the answer to `call`
    /// made again with the credentials that gives.
    fn meet_challenge(
        &mut self,
        resp: Response<Body>,
        method: &str,
        url: &str,
        call: impl Fn(&ureq::Agent, Option<&str>) -> Result<Response<Body>, ureq::Error>,
    ) -> anyhow::Result<Response<Body>> {
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let header = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(header) = header else {
            return Ok(resp);
        };
        let fresh = self.authenticate(&header)?;
        if !fresh {
            return Ok(resp);
        }
        let resp = call(&self.agent, self.auth_for(url)).map_err(|e| network_error(e, url))?;
        if resp.status().as_u16() == 401 {
            let how = match &self.creds {
                Some(c) => format!("as {:?}", c.user),
                None => "without credentials (none in docker's config for this host)".into(),
            };
            let mut resp = resp;
            let body = read_error_body(&mut resp);
            bail!(
                "{method} {}: the registry refused access {how}: {}",
                shown_url(url),
                describe_status(401, &body)
            );
        }
        Ok(resp)
    }

    /// Meet a challenge; false when there is nothing new to try.
    fn authenticate(&mut self, header: &str) -> anyhow::Result<bool> {
        let host = &self.reference.host;
        let new = match Challenge::parse(header) {
            Some(Challenge::Basic) => match &self.creds {
                Some(c) => c.basic_header(),
                None => bail!(
                    "{host} asks for a user and password, and docker's config has none for it \
                     (docker login {host}, or set $DOCKER_CONFIG)"
                ),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = vec![format!("repository:{}:pull,push", self.reference.repo)];
                scopes.extend(scope.filter(|s| *s != scopes[0]));
                auth::fetch_token(
                    &self.agent,
                    &realm,
                    service.as_deref(),
                    &scopes,
                    self.creds.as_ref(),
                )?
            }
            None => bail!("{host} asks for an authentication cellar does not speak: {header}"),
        };
        if self.auth.as_deref() == Some(new.as_str()) {
            return Ok(false);
        }
        self.auth = Some(new);
        Ok(true)
    }

    /// The credentials for a request to `url`, which go only to the registry's own origin: an
    /// upload's `Location` may name another host (a storage service), which is not given the
    /// registry's password or token. docker does the same; skopeo sends them anywhere.
    fn auth_for(&self, url: &str) -> Option<&str> {
        self.auth
            .as_deref()
            .filter(|_| origin(url) == origin(&self.base))
    }

    /// Resolve a `Location` header against the registry (it may be relative).
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with("//") {
            let scheme = self.base.split("://").next().unwrap_or("https");
            format!("{scheme}:{location}")
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }
}

/// `scheme://host[:port]` of a URL, lowercased as hosts compare.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// The response if its status is one of `want`, else an error naming the request, the status
/// and what the registry said.
fn check(
    mut resp: Response<Body>,
    method: &str,
    url: &str,
    want: &[u16],
) -> anyhow::Result<Response<Body>> {
    let status = resp.status().as_u16();
    if want.contains(&status) {
        return Ok(resp);
    }
    let body = read_error_body(&mut resp);
    Err(anyhow!(
        "{method} {}: {}",
        shown_url(url),
        describe_status(status, &body)
    ))
}

/// Whether a TLS connection failed because the server answered with something that is not
/// TLS at all (a plain HTTP registry), rather than over TLS (a certificate not trusted).
fn speaks_no_tls(e: &ureq::Error) -> bool {
    let ureq::Error::Io(io) = e else {
        return false;
    };
    matches!(
        io.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

/// A URL for a message: without its query, where an upload's `Location` keeps the
/// registry's state (long, and it may hold a signed token).
fn shown_url(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

fn read_error_body(resp: &mut Response<Body>) -> Vec<u8> {
    resp.body_mut()
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default()
}

/// `404 Not Found: NAME_UNKNOWN: repository name not known to registry`: the status and the
/// OCI error body's codes and messages (else the body's text, if it is short and printable).
fn describe_status(status: u16, body: &[u8]) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("{status} {reason}").trim_end().to_string();
    let errors = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default();
    let said: Vec<String> = errors
        .iter()
        .map(|e| {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let detail = match e.get("detail") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) if s.is_empty() => String::new(),
                Some(d) => format!(" ({d})"),
            };
            format!("{}: {}{detail}", field("code"), field("message"))
        })
        .collect();
    if !said.is_empty() {
        out.push_str(": ");
        out.push_str(&said.join("; "));
    } else if let Ok(text) = std::str::from_utf8(body) {
        let text = text.trim();
        if !text.is_empty() && text.len() <= 300 && !text.contains(['\0', '\x1b']) {
            out.push_str(": ");
            out.push_str(text);
        }
    }
    out
}

/// A request that got no answer: name the host.
fn network_error(e: ureq::Error, url: &str) -> anyhow::Error {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    anyhow!(
        "cannot reach the registry at {host} ({}): {e}",
        shown_url(url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_registrys_own_origin() {
        let base = origin("https://Registry.example:5000/v2/vm/blobs/uploads/");
        assert_eq!(base, "https://registry.example:5000");
        for same in [
            "https://registry.example:5000/v2/vm/blobs/uploads/abc?_state=x",
            "https://REGISTRY.example:5000",
        ] {
            assert_eq!(origin(same), base, "{same}");
        }
        for other in [
            "https://storage.example/bucket/upload?sig=1",
            "http://registry.example:5000/v2/",
            "https://registry.example/v2/",
            "https://registry.example:5000.evil/v2/",
            "https://registry.example:5000@evil.example/v2/",
        ] {
            assert_ne!(origin(other), base, "{other}");
        }
    }

    #[test]
    fn describes_oci_errors() {
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}"#;
        assert_eq!(
            describe_status(404, body),
            r#"404 Not Found: NAME_UNKNOWN: repository name not known to registry ({"name":"x"})"#
        );
        assert_eq!(
            describe_status(502, b"bad gateway"),
            "502 Bad Gateway: bad gateway"
        );
        assert_eq!(describe_status(599, b""), "599");
    }
}
