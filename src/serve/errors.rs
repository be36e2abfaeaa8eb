//! Error responses in the distribution spec's shape: `{"errors": [{code, message, detail}]}`.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no snapshots named {name:?}"),
        )
    }

    pub fn manifest_unknown(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("no manifest {what}"),
        )
    }

    /// A reference that is a digest in form but not a valid one (`sha256:xyz`).
    pub fn digest_invalid(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {what:?}"),
        )
    }

    /// A page size (`?n=`) that is not a whole number. The spec has no code of its own for
    /// it: UNSUPPORTED is its code for "an invalid set of parameters".
    pub fn bad_page_size(n: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            format!("invalid n={n:?}: the number of results must be a whole number"),
        )
    }

    pub fn blob_unknown(digest: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("no blob {digest}"),
        )
    }

    /// A path segment axum could not take (percent-encoded bytes that are not UTF-8): named
    /// for the parameter it was meant to be, in the spec's shape, not axum's text/plain.
    fn bad_path(e: &PathRejection) -> Self {
        let key = match e {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => key.as_str(),
                _ => "",
            },
            _ => "",
        };
        let message = e.body_text();
        match key {
            "name" => Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message),
            "digest" => Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message),
            // A reference no tag or digest can be.
            "reference" => Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message),
            _ => Self::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", message),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
    }
}

impl From<cellar_store::Error> for ApiError {
    fn from(e: cellar_store::Error) -> Self {
        match e {
            cellar_store::Error::NotFound(m) => {
                Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", m)
            }
            e => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message}]});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// `Path`, its rejections answered as [`ApiError`]s.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(e) => Err(ApiError::bad_path(&e)),
        }
    }
}

/// `Query`, its rejections (a parameter given twice, `?n=1&n=2`) answered as [`ApiError`]s:
/// UNSUPPORTED, the spec's code for an invalid set of parameters.
pub struct Queries<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Queries<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Queries(t)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                e.body_text(),
            )),
        }
    }
}
