//! Where an image goes: `HOST[:PORT]/REPO[/...][:TAG]` (`latest` by default), checked against the distribution spec's
//! grammar so a typo is a usage error here rather than a puzzling 400 from the registry.

use std::net::IpAddr;

/// A parsed push target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// As written (lowercased), with its port: `registry.example.com:5000`, `[::1]:5000`.
    pub host: String,
    /// The repository path: `team/app`.
    pub repo: String,
    pub tag: String,
}

/// Docker Hub's name in references and its API host.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

impl Reference {
    pub fn parse(target: &str) -> Result<Reference, String> {
        let example = "expected REGISTRY/REPO[:TAG], e.g. registry.example.com:5000/team/app:v1";
        if let Some((scheme, _)) = target.split_once("://") {
            return Err(format!(
                "{target:?}: give the registry without {scheme}:// (HTTPS is used, or plain \
                 HTTP for a loopback registry or with --insecure); {example}"
            ));
        }
        if target.contains('@') {
            return Err(format!(
                "{target:?}: push needs a tag, not a digest (the digest is the registry's answer); \
                 {example}"
            ));
        }
        let Some((host, rest)) = target.split_once('/') else {
            let what = if looks_like_host(target) && check_host(target).is_ok() {
                "a registry, but no repository in it"
            } else {
                "no registry"
            };
            return Err(format!("{target:?} names {what}; {example}"));
        };
        if !looks_like_host(host) {
            return Err(format!(
                "{target:?}: {host:?} is not a registry host (a host has a '.' or a ':PORT', or is \
                 localhost); {example}"
            ));
        }
        check_host(host).map_err(|e| format!("{target:?}: {e}"))?;
        // No tag is `latest`, as docker, crane and skopeo take it. A ':' before the last '/'
        // is in the repository (which no name may hold), not before a tag.
        let (repo, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (rest, "latest"),
        };
        check_tag(tag).map_err(|e| format!("{target:?}: {e}"))?;
        check_repo(repo).map_err(|e| format!("{target:?}: {e}"))?;
        let host = host.to_ascii_lowercase();
        // Docker Hub's official images live under library/.
        let repo = if host == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        Ok(Reference {
            host,
            repo,
            tag: tag.to_string(),
        })
    }

    /// The host and port the API is reached at (Docker Hub's API has a host of its own).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// The host without its port or brackets.
    pub fn hostname(&self) -> &str {
        split_port(&self.host).0
    }

    /// localhost, 127.0.0.0/8 or ::1: spoken to over plain HTTP, as crane and docker do.
    pub fn is_loopback(&self) -> bool {
        let name = self.hostname();
        name == "localhost"
            || name
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.host, self.repo, self.tag)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (name, port).
fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, tail)) => (name, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// Docker's rule for whether a reference's first component is a registry.
fn looks_like_host(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s.starts_with('[') || s == "localhost"
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = split_port(host);
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
            return Err(format!("bad port {port:?} in registry host {host:?}"));
        }
    }
    if host.starts_with('[') {
        return name
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("bad IPv6 address in registry host {host:?}"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(format!("bad registry host {host:?}"));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad tag {tag:?} (up to 128 letters, digits, '_', '.', '-', not starting with '.' \
             or '-')"
        ))
    }
}

/// Components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn check_repo(repo: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if is_alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !is_alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let sep_ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
            if !sep_ok {
                return false;
            }
        }
        true
    };
    if repo.is_empty() || repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(format!(
            "bad repository name {repo:?} (lowercase letters and digits, separated by '.', '_', \
             '__' or dashes, in '/'-separated components)"
        ));
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_targets() {
        let r = ok("127.0.0.1:5000/team/app:v1.2");
        assert_eq!(
            (r.host.as_str(), r.repo.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(r.tag, "v1.2");
        assert!(r.is_loopback());
        let r = ok("Registry.Example.com/a__b/c-d.e:latest");
        assert_eq!(r.host, "registry.example.com");
        assert!(!r.is_loopback());
        let r = ok("[::1]:5000/x:y");
        assert_eq!(r.hostname(), "::1");
        assert!(r.is_loopback());
        assert!(ok("localhost/x:y").is_loopback());
        let r = ok("127.0.0.1:5000/team/app");
        assert_eq!((r.repo.as_str(), r.tag.as_str()), ("team/app", "latest"));
        assert!(ok("127.3.4.5:1/x:y").is_loopback());
        let r = ok("docker.io/alpine:3");
        assert_eq!(
            (r.api_host(), r.repo.as_str()),
            ("registry-1.docker.io", "library/alpine")
        );
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "127.0.0.1:5000/app:",
            "app:v1",
            "team/app:v1",
            "127.0.0.1:5000/App:v1",
            "127.0.0.1:5000/a//b:v1",
            "127.0.0.1:5000/a-:v1",
            "127.0.0.1:5000/a:-v",
            "127.0.0.1:99999/a:v",
            "127.0.0.1:5000/a@sha256:0000",
            "bad_host.com/a:v",
            "[zz]:5000/a:v",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} was accepted");
        }
        for url in ["http://127.0.0.1:5000/x:v1", "https://r.example.com/x:v1"] {
            let err = Reference::parse(url).unwrap_err();
            assert!(err.contains("without http"), "{url}: {err}");
        }
        // Each mistake named as what it is.
        for (bad, says) in [
            ("127.0.0.1:5000", "names a registry, but no repository"),
            ("app", "names no registry"),
            ("app:v1", "names no registry"),
            ("ubuntu:22.04", "names no registry"),
            ("127.0.0.1:5000/a:b/c", "bad repository name \"a:b/c\""),
            ("127.0.0.1:5000/a:b:c", "bad repository name \"a:b\""),
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
