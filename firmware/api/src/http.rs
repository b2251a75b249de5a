//! The HTTP/1.1 the API speaks: a request head parsed with `httparse` under
//! strict limits, bodies by `Content-Length` only (no chunked uploads: a size
//! known up front is what lets an upload be refused before it fills the
//! disk), one request per connection.

use std::io::Read;

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;

/// Why a request cannot be served; each maps to a status code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP/1.x, or malformed.
    #[error("bad request: {0}")]
    Bad(String),
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] headers.
    #[error("request head too large (at most {MAX_HEAD} bytes and {MAX_HEADERS} headers)")]
    HeadTooLarge,
    /// The connection ended before the head was complete.
    #[error("the connection closed before the request was complete")]
    Truncated,
}

impl HttpError {
    /// The status code to answer with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Bad(_) | Self::Truncated => 400,
            Self::HeadTooLarge => 431,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `PUT`, `POST`, `DELETE`.
    pub method: String,
    /// The path, percent-decoding not applied (names with `%` are refused later).
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// `Content-Length`, when given.
    pub content_length: Option<u64>,
}

impl Head {
    /// The first header called `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The path split into its segments (`/v1/apps/blinky` → `["v1", "apps", "blinky"]`).
    #[must_use]
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }
}

/// Parse a request head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and how many bytes of `buf` it took.
///
/// # Errors
/// Malformed, too large, chunked or with a bad `Content-Length`. Never
/// panics, whatever the bytes: the entry point for fuzzing the API's parsing.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => return Err(HttpError::Bad(e.to_string())),
    };
    if used > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let method = req.method.ok_or_else(|| HttpError::Bad("no method".into()))?.to_owned();
    let target = req.path.ok_or_else(|| HttpError::Bad("no path".into()))?;
    if !target.starts_with('/') {
        return Err(HttpError::Bad(format!("{target:?} is not an absolute path")));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut parsed = Vec::with_capacity(req.headers.len());
    let mut content_length = None;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Bad(format!("header {name} is not UTF-8")))?
            .trim()
            .to_owned();
        match name.as_str() {
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| HttpError::Bad(format!("Content-Length {value:?} is not a number")))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(HttpError::Bad("two different Content-Length headers".into()));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                return Err(HttpError::Bad("Transfer-Encoding is not accepted: send a Content-Length".into()));
            }
            _ => {}
        }
        parsed.push((name, value));
    }
    Ok(Some((Head { method, path, query, headers: parsed, content_length }, used)))
}

/// Read a request head from `r`; returns it and the body bytes read past it.
///
/// # Errors
/// As [`parse_head`], [`HttpError::Truncated`] when the connection ends first.
pub fn read_head(r: &mut impl Read) -> Result<(Head, Vec<u8>), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = r.read(&mut chunk).map_err(|e| HttpError::Bad(e.to_string()))?;
        if n == 0 {
            return Err(HttpError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, used)) = parse_head(&buf)? {
            return Ok((head, buf.split_off(used)));
        }
    }
}

/// A status code's reason phrase.
#[must_use]
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_complete_head_with_a_body_length() {
        let raw = b"PUT /v1/apps/blinky?wait=1 HTTP/1.1\r\nHost: d\r\nContent-Length: 12\r\n\r\nBODY";
        let (head, used) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str(), head.query.as_deref()),
            ("PUT", "/v1/apps/blinky", Some("wait=1"))
        );
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.header("host"), Some("d"));
        assert_eq!(&raw[used..], b"BODY");
        assert_eq!(head.segments(), ["v1", "apps", "blinky"]);
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_are_named() {
        assert_eq!(parse_head(b"GET /v1/status HTTP/1.1\r\nHo").unwrap(), None);
        let cases: [(&[u8], u16); 5] = [
            (b"GET /v1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET /v1 HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
            (b"GET /v1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"GET v1 HTTP/1.1\r\n\r\n", 400),
            (b"\x00\x01\x02 HTTP/1.1\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(parse_head(raw).unwrap_err().status(), status, "{}", String::from_utf8_lossy(raw));
        }
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(raw.as_bytes()).unwrap_err(), HttpError::HeadTooLarge);
        let huge = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_head(huge.as_bytes()).unwrap_err(), HttpError::HeadTooLarge);
    }

    #[test]
    fn a_connection_that_ends_early_is_truncated() {
        let mut r: &[u8] = b"GET /v1/status HTTP/1.1\r\n";
        assert_eq!(read_head(&mut r).unwrap_err(), HttpError::Truncated);
    }
}
