//! The distribution API's read side: `/v2/`, catalog and tags (paged with `?n=` and
//! `?last=`), manifests and blobs (GET and HEAD, blobs with Range). Every write is refused.
//! Store calls run on blocking threads.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cellar_store::oci::{Blob, Digest, MANIFEST_MEDIA_TYPE};
use cellar_store::{Snapshot, SnapshotId, Store};
use serde_json::json;

use super::accept::accepts;
use super::body::{layer_body, spool_body};
use super::errors::{ApiError, Params, Queries};
use super::page::{page, Page, PageQuery};
use super::Shared;

type ApiResult = Result<Response, ApiError>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/", get(base))
        .route("/v2/_catalog", get(catalog))
        .route("/v2/{name}/tags/list", get(tags))
        .route("/v2/{name}/manifests/{reference}", get(manifest))
        .route("/v2/{name}/blobs/{digest}", get(blob))
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .with_state(shared)
}

/// Run a store call off the async threads, on the index in place now (`repair-index` may
/// have replaced it since the last request).
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        shared.store.follow_index()?;
        f(&shared)
    })
    .await
    .map_err(ApiError::internal)?
}

fn json_response(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn base() -> Response {
    (
        [("Docker-Distribution-API-Version", "registry/2.0")],
        json_response(json!({})),
    )
        .into_response()
}

async fn fallback(method: Method, uri: Uri) -> Response {
    if method == Method::GET || method == Method::HEAD {
        match repository_of(uri.path()) {
            // `a/b`: a valid repository name in the spec, never a lineage's.
            Some(name) => ApiError::name_unknown(name),
            None => ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"),
        }
        .into_response()
    } else {
        // Uploads and deletes included: nothing here takes another method, and a 405 names
        // what does (RFC 9110 §15.5.6).
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "cellar serve is read-only",
        )
        .into_response();
        r.headers_mut().insert(header::ALLOW, value("GET,HEAD"));
        r
    }
}

/// The repository an API path names (`/v2/NAME/manifests/REF`, `…/blobs/DIGEST`,
/// `…/tags/list`), where NAME may have several components. A path that ends otherwise
/// (`/v2/vm/manifests/`, `/v2/vm/blobs/uploads/`, `…/latest/`) names no endpoint, whatever
/// its repository.
fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    let name = match rest.strip_suffix("/tags/list") {
        Some(name) => name,
        None => ["/manifests/", "/blobs/"].iter().find_map(|sep| {
            let (name, last) = rest.rsplit_once(sep)?;
            (!last.is_empty() && !last.contains('/')).then_some(name)
        })?,
    };
    (!name.is_empty()).then_some(name)
}

/// A listing's page as a response: `key` holding the entries, `Link` naming the next page.
fn page_response(mut body: serde_json::Value, key: &str, page: Page) -> Response {
    body[key] = json!(page.entries);
    let mut r = json_response(body);
    if let Some(next) = page.next {
        r.headers_mut().insert(header::LINK, value(&next));
    }
    r
}

async fn catalog(
    State(shared): State<Arc<Shared>>,
    Queries(q): Queries<PageQuery>,
    uri: Uri,
) -> ApiResult {
    let names = blocking(&shared, |s| {
        let mut names: Vec<String> = s.store.list(None)?.into_iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        Ok(names)
    })
    .await?;
    let page = page(&names, &q, uri.path())?;
    Ok(page_response(json!({}), "repositories", page))
}

fn lineage(store: &Store, name: &str) -> Result<Vec<Snapshot>, ApiError> {
    let snaps = store.list(Some(name))?;
    if snaps.is_empty() {
        return Err(ApiError::name_unknown(name));
    }
    Ok(snaps)
}

/// The blob with `digest` in the repository of `snaps` (a lineage's snapshots): one that an
/// image of another lineage's snapshot made is not this repository's, as a registry keeps
/// each repository's blobs apart; nor is one of a forgotten snapshot, whose layers could no
/// longer be made.
fn find_in(store: &Store, snaps: &[Snapshot], digest: &Digest) -> Result<Option<Blob>, ApiError> {
    let ours: HashSet<SnapshotId> = snaps.iter().map(|s| s.id).collect();
    Ok(store.find_blob(digest, &|id| ours.contains(id))?)
}

async fn tags(
    State(shared): State<Arc<Shared>>,
    Params(name): Params<String>,
    Queries(q): Queries<PageQuery>,
    uri: Uri,
) -> ApiResult {
    let (name, tags) = blocking(&shared, move |s| {
        let snaps = lineage(&s.store, &name)?;
        let mut tags = vec!["latest".to_string()];
        tags.extend(snaps.iter().map(|s| s.short_id()));
        // In lexical order, as the spec says, so that `last` means where a page ends.
        tags.sort();
        tags.dedup();
        Ok((name, tags))
    })
    .await?;
    let page = page(&tags, &q, uri.path())?;
    Ok(page_response(json!({ "name": name }), "tags", page))
}

/// A small blob (manifest or config) as a response.
fn small(method: &Method, media_type: &str, digest: &Digest, bytes: Vec<u8>) -> Response {
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, value(media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("Docker-Content-Digest", value(digest.as_str()));
    r
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values are ASCII")
}

async fn manifest(
    method: Method,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
    Params((name, reference)): Params<(String, String)>,
) -> ApiResult {
    let (digest, bytes) = blocking(&shared, move |s| {
        let snaps = lineage(&s.store, &name)?;
        if reference.starts_with("sha256:") {
            let digest =
                Digest::parse(&reference).map_err(|_| ApiError::digest_invalid(&reference))?;
            return match find_in(&s.store, &snaps, &digest)? {
                Some(Blob::Small { media_type, bytes }) if media_type == MANIFEST_MEDIA_TYPE => {
                    Ok((digest, bytes))
                }
                _ => Err(ApiError::manifest_unknown(&reference)),
            };
        }
        let snap = if reference == "latest" {
            snaps.last()
        } else {
            snaps.iter().find(|s| s.short_id() == reference)
        }
        .ok_or_else(|| ApiError::manifest_unknown(&format!("{name}:{reference}")))?;
        s.spools
            .make_layers(&s.store, snap, &s.opts, |d, l| s.log_left_out(d, l))?;
        let image = s.store.image(snap, &s.opts)?;
        Ok((image.manifest_digest, image.manifest))
    })
    .await?;
    if !accepts(&headers, MANIFEST_MEDIA_TYPE) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!(
                "OCI manifest found, but the Accept header does not take \
                 {MANIFEST_MEDIA_TYPE} (cellar serves OCI manifests only)"
            ),
        ));
    }
    Ok(small(&method, MANIFEST_MEDIA_TYPE, &digest, bytes))
}

/// `Range: bytes=A-B`, `bytes=A-` or `bytes=-N` over a blob of `size` bytes: the inclusive
/// range, or Err for one that cannot be satisfied. None when there is no (usable) header.
fn parse_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: answer with the whole blob, as the spec allows
    }
    let (a, b) = spec.split_once('-')?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if b < a {
                return None; // not a valid range at all: ignored, as RFC 9110 §14.2 says
            }
            (a, b.min(size.checked_sub(1)?))
        }
    };
    Some(if range.0 <= range.1 && range.1 < size {
        Ok(range)
    } else {
        Err(())
    })
}

async fn blob(
    method: Method,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
    Params((name, digest)): Params<(String, String)>,
) -> ApiResult {
    let digest = Digest::parse(&digest).map_err(|_| ApiError::digest_invalid(&digest))?;
    let found = {
        let digest = digest.clone();
        blocking(&shared, move |s| {
            let snaps = lineage(&s.store, &name)?;
            find_in(&s.store, &snaps, &digest)
        })
        .await?
    };
    let Some(found) = found else {
        return Err(ApiError::blob_unknown(digest.as_str()));
    };
    let size = match &found {
        Blob::Small { bytes, .. } => bytes.len() as u64,
        Blob::Layer { size, .. } => *size,
    };
    let (status, range) = match parse_range(&headers, size) {
        None => (StatusCode::OK, None),
        Some(Ok(r)) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Some(Err(())) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut()
                .insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            return Ok(r);
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let wanted = method != Method::HEAD && len > 0;
    let (media_type, body) = match found {
        Blob::Small { media_type, bytes } => {
            // Within the blob: parse_range keeps `end` below `size`.
            let body = if wanted {
                Body::from(bytes[start as usize..=end as usize].to_vec())
            } else {
                Body::empty()
            };
            (media_type, body)
        }
        Blob::Layer { key, .. } => {
            let spooled = shared.spools.get(&digest);
            let body = if !wanted {
                Body::empty()
            } else if let Some(spooled) = spooled {
                spool_body(shared, spooled, (start, end)).await?
            } else {
                // Forgotten since it was found: gone, as if it had not been found.
                layer_body(shared, key, (start, end))
                    .await
                    .map_err(|e| match e {
                        cellar_store::Error::NotFound(_) => ApiError::blob_unknown(digest.as_str()),
                        e => e.into(),
                    })?
            };
            ("application/octet-stream".to_string(), body)
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, value("bytes"));
    h.insert("Docker-Content-Digest", value(digest.as_str()));
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{size}")),
        );
    }
    Ok(r)
}
