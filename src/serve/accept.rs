//! Content negotiation for manifests. cellar has one representation of an image, its OCI
//! manifest (a manifest's digest is its bytes, so another one would be another image), and
//! serves it to a client whose `Accept` takes it; to a client that asks only for other types
//! (Docker schema 2, say) it answers as distribution does for a representation it cannot
//! give: 404 MANIFEST_UNKNOWN.

use axum::http::{header, HeaderMap};

/// Whether a client whose request has `headers` takes `media_type`: it sent no `Accept` (or
/// only empty ones), or one that names the type, `application/*` or `*/*` with a quality
/// other than `q=0`. Parameters and case are as RFC 9110 §12.5.1 has them.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut asked = false;
    for value in headers.get_all(header::ACCEPT) {
        // A value that is not text asks for something, but nothing cellar has.
        let Ok(value) = value.to_str() else {
            asked = true;
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if range.is_empty() {
                continue;
            }
            asked = true;
            let refused = parts.any(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().ok() == Some(0.0)
            });
            if !refused && (range == media_type || range == "application/*" || range == "*/*") {
                return true;
            }
        }
    }
    !asked
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

    fn takes(accept: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT, a.parse().unwrap());
        }
        accepts(&h, OCI)
    }

    #[test]
    fn the_oci_manifest_goes_to_whoever_takes_it() {
        assert!(takes(&[]), "no Accept: anything goes");
        assert!(takes(&[""]));
        assert!(takes(&[OCI]));
        assert!(takes(&[DOCKER, OCI]), "one header of several");
        assert!(takes(&[&format!("{DOCKER}, {OCI};q=0.5")]));
        assert!(takes(&["Application/VND.OCI.Image.Manifest.v1+JSON"]));
        assert!(takes(&["*/*"]));
        assert!(takes(&["application/*; q=0.1"]));
        assert!(takes(&["text/html, */*;q=0.8"]));
    }

    #[test]
    fn a_client_that_asks_only_for_other_types_is_refused() {
        assert!(!takes(&[DOCKER]));
        assert!(!takes(&[&format!(
            "{DOCKER}, application/vnd.docker.distribution.manifest.list.v2+json"
        )]));
        assert!(!takes(&[&format!("{DOCKER}, {OCI};q=0")]));
        assert!(!takes(&["*/*;q=0.0", "text/plain"]));
    }
}
