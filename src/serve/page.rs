//! Paging a listing (tags, catalog) as the distribution spec says: entries in lexical order,
//! `?n=N` returns at most N of them, `?last=X` starts after X, and while more remain a
//! `Link: <PATH?n=N&last=X>; rel="next"` header names the next page.

use serde::Deserialize;

use super::errors::ApiError;

/// The query of a listing request.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    n: Option<String>,
    last: Option<String>,
}

/// One page of a listing.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<String>,
    /// The `Link` header's value when more entries remain.
    pub next: Option<String>,
}

/// The page of `all` (sorted, no duplicates) that `q` asks for, `path` being the listing's
/// path for the next page's link. An `n` that is not a whole number is a 400; one too large
/// to count to asks for everything.
pub fn page(all: &[String], q: &PageQuery, path: &str) -> Result<Page, ApiError> {
    let n = match q.n.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(n) if !n.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(ApiError::bad_page_size(n))
        }
        Some(n) => Some(n.parse::<usize>().unwrap_or(usize::MAX)),
    };
    let start = q
        .last
        .as_deref()
        .map_or(0, |last| all.partition_point(|e| e.as_str() <= last));
    let rest = &all[start..];
    let entries = rest[..n.unwrap_or(rest.len()).min(rest.len())].to_vec();
    // No link for n=0 (the spec forbids it) or when this page holds the rest.
    let next = match (n, entries.last()) {
        (Some(n), Some(last)) if entries.len() < rest.len() => Some(format!(
            "<{path}?n={n}&last={}>; rel=\"next\"",
            query_escape(last)
        )),
        _ => None,
    };
    Ok(Page { entries, next })
}

/// `s` as a query value: everything but RFC 3986's unreserved characters percent-encoded.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: Option<&str>, last: Option<&str>) -> PageQuery {
        PageQuery {
            n: n.map(String::from),
            last: last.map(String::from),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages_follow_n_and_last() {
        let all = names(&["a", "b", "c", "latest"]);
        let p = |n, last| page(&all, &q(n, last), "/v2/vm/tags/list").ok().unwrap();
        assert_eq!(p(None, None).entries, all);
        assert_eq!(p(None, None).next, None);
        let first = p(Some("2"), None);
        assert_eq!(first.entries, names(&["a", "b"]));
        assert_eq!(
            first.next.as_deref(),
            Some("</v2/vm/tags/list?n=2&last=b>; rel=\"next\"")
        );
        let second = p(Some("2"), Some("b"));
        assert_eq!(second.entries, names(&["c", "latest"]));
        assert_eq!(second.next, None, "nothing remains");
        assert_eq!(p(Some("0"), None).entries, names(&[]));
        assert_eq!(p(Some("0"), None).next, None);
        assert_eq!(p(Some("9"), None).entries, all);
        assert_eq!(p(Some("99999999999999999999999"), None).entries, all);
        // `last` need not be an entry: the page starts after where it would sort.
        assert_eq!(p(None, Some("bb")).entries, names(&["c", "latest"]));
        assert_eq!(p(Some("1"), Some("zzz")).entries, names(&[]));
        assert_eq!(p(Some(""), None).entries, all, "an empty n is no n");
    }

    #[test]
    fn a_bad_n_is_refused_and_last_is_escaped() {
        let all = names(&["a b", "c/d", "e"]);
        for bad in ["abc", "-1", "+1", "1.5", "0x10", " 1"] {
            assert!(page(&all, &q(Some(bad), None), "/p").is_err(), "{bad}");
        }
        let p = page(&all, &q(Some("2"), None), "/v2/_catalog")
            .ok()
            .unwrap();
        assert_eq!(
            p.next.as_deref(),
            Some("</v2/_catalog?n=2&last=c%2Fd>; rel=\"next\"")
        );
    }
}
