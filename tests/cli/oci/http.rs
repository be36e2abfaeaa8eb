//! A minimal HTTP/1.1 client on `std::net::TcpStream`, for the distribution-API tests (`cellar
//! serve`, the test registry): one request per connection with `Connection: close`; bodies
//! framed by Content-Length or chunked encoding, else read to EOF.
//!
//! It is strict on purpose, since it judges a server under test: a short body, bytes after the
//! body or a connection left open after `Connection: close` (RFC 9112 §9.6: the server MUST
//! close) are errors, not something to tolerate.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a connect, or one read or write, may take.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the server may take to close the connection after the response (it has nothing
/// left to do by then, so a slow close means it will not close).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Names lowercased; a repeated header's values joined with ", " (RFC 9110 §5.3).
    pub(crate) headers: BTreeMap<String, String>,
    /// Empty for HEAD, 1xx, 204 and 304 responses.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A header's value, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One CRLF-terminated line, without the CRLF (a bare LF is accepted too).
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "connection closed mid-line: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|e| bad(format!("non-UTF-8 header line: {e}")))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(bad(format!("chunk of {size} bytes not followed by CRLF")));
        }
    }
}

/// Send one request and read the response; an error for any I/O or framing problem.
pub(crate) fn try_http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let sock = addr
        .parse()
        .map_err(|e| bad(format!("address {addr:?}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;

    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    stream.flush()?;

    let mut r = BufReader::new(stream);
    let status_line = read_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| bad(format!("bad status line {status_line:?}")))?;

    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        headers
            .entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }

    let no_body = method == "HEAD" || status / 100 == 1 || status == 204 || status == 304;
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(&mut r)?
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("body shorter than Content-Length {len}: {e}"),
            )
        })?;
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        return Ok(Response {
            status,
            headers,
            body,
        });
    };

    // The response must end there, and the server must then close the connection.
    r.get_ref().set_read_timeout(Some(CLOSE_WAIT))?;
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => {}
        Ok(_) => {
            return Err(bad(format!(
                "{} bytes after the response ({status}, {} body bytes): {:?}",
                rest.len(),
                body.len(),
                String::from_utf8_lossy(&rest[..rest.len().min(200)])
            )))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(bad(format!(
                "server kept the connection open {CLOSE_WAIT:?} after the response despite \
                 Connection: close{}",
                if rest.is_empty() {
                    String::new()
                } else {
                    format!(" (and sent {} more bytes)", rest.len())
                }
            )))
        }
        // A reset after the full response is a close too.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e),
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Any request; panics on I/O or framing errors.
pub(crate) fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_http_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// `GET path` with extra request headers; panics on I/O or framing errors.
pub(crate) fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(addr, "GET", path, headers, b"")
}

/// `HEAD path` with extra request headers (the body is always empty).
pub(crate) fn http_head(addr: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(addr, "HEAD", path, headers, b"")
}

/// The Accept header a registry client sends for manifests: every manifest and index type.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
