//! The auth handshake: the `WWW-Authenticate` challenges of the distribution spec (Basic, or
//! Bearer with a token server), met with the credentials from `credentials.rs`.

use anyhow::{bail, Context};
use serde::Deserialize;

use super::credentials::Credentials;

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parse `Scheme k="v", k2=v2` (quoted values may hold commas: `scope="repo:x:pull,push"`).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Ask a token server for a bearer token with `scopes`, with basic auth if there are
/// credentials. Returns the `Authorization` header value.
pub fn fetch_token(
    agent: &ureq::Agent,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> anyhow::Result<String> {
    let mut req = agent.get(realm);
    if let Some(service) = service {
        req = req.query("service", service);
    }
    for scope in scopes {
        req = req.query("scope", scope);
    }
    if let Some(c) = creds {
        req = req.header("Authorization", c.basic_header());
    }
    let mut resp = req
        .call()
        .map_err(|e| super::network_error(e, realm))
        .context("fetching a registry token")?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .unwrap_or_default();
    if status != 200 {
        let why = if matches!(status, 401 | 403) {
            if creds.is_some() {
                "the token server refused the credentials from docker's config"
            } else {
                "the token server wants credentials: none were found in docker's config \
                 (docker login, or $DOCKER_CONFIG)"
            }
        } else {
            "fetching a registry token failed"
        };
        bail!(
            "{why}: GET {realm}: {}",
            super::describe_status(status, &body)
        );
    }
    let token: TokenResponse =
        serde_json::from_slice(&body).with_context(|| format!("the token from {realm}"))?;
    match token.token.or(token.access_token).filter(|t| !t.is_empty()) {
        Some(t) => Ok(format!("Bearer {t}")),
        None => bail!("the token server {realm} answered without a token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://x/token"),
            Some(Challenge::Bearer {
                realm: "https://x/token".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }
}
