//! The origin's protocol: HTTP/1.1 with persistent connections.
//!
//! - `GET /v1/assets/<id>/index`: the asset's encoded index.
//! - `GET /v1/assets/<id>/blocks/<n>` with `Trellis-Session: <reader>` and
//!   `Trellis-Have: <bitmap hex>`: a body of frames, each `block` (u32 LE),
//!   `len` (u32 LE) and the block's bytes. The first frame is block `n`; the
//!   frames after it are blocks the origin predicts the reader will ask for
//!   next and that its bitmap says it lacks. With a `Trellis-Want-Have`
//!   header (whatever its value) the last frame, numbered 2³²−1 (never a block's), carries what `/have`
//!   would answer (a peer's downloads ask for it instead of asking `/have`).
//!   With `Trellis-Peer: <host:port>` (a device of a site naming itself as
//!   its LAN peers reach it), the answer is `409 Conflict` with
//!   `on its way to <host:port>` when the block is on its way to another
//!   device of the same network that named itself, or reached it within
//!   the last 2 s: that one will hold it, and the origin's uplink is not
//!   spent on it twice.
//!
//! - `GET /v1/assets/<id>/have`: the bitmap of the blocks the server holds,
//!   as hex (bit `n % 8` of byte `n / 8` is block `n`): every block at the
//!   origin, those verified so far at a peer. A peer fetching a block from
//!   the origin adds a line `origin <n>`.
//!
//! - A peer that rolled the asset back answers every path of it with `410
//!   Gone` and `rolled back: <why>`.
//!
//! - `GET /v1/assets/<id>/data`: the whole asset (a device that wants all
//!   of it before it starts; checked block by block as it arrives). With
//!   `Range: bytes=a-b` (or `a-`, `-n`), that part of it: `206 Partial
//!   Content` with its `Content-Range`, as RAUC's streaming mode asks; a
//!   range that is not in the asset is `416` with `Content-Range: bytes */size`.
//!   `HEAD` gives the same head without the body.
//!
//! Errors are a 4xx/5xx status with a line of text saying what was wrong.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Largest head (request or response line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest body either side accepts (a 4 GiB asset's index is 4 MiB; a response of blocks is bounded by the push window).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// Headers the reader sends with a block request.
pub(crate) const SESSION: &str = "trellis-session";
pub(crate) const HAVE: &str = "trellis-have";
/// A reader's request header asking a block's answer to end with what the
/// server holds: one more frame, numbered [`HAVE_FRAME`] (never a block's
/// number), carrying what `/have` would answer.
pub(crate) const WANT_HAVE: &str = "trellis-want-have";
/// A device's block request to the origin naming the device, as its LAN
/// peers reach it (`host:port`, at most [`PEER_MAX`] bytes).
pub(crate) const PEER: &str = "trellis-peer";
/// The longest [`PEER`] the origin heeds.
pub(crate) const PEER_MAX: usize = 256;
/// The start of the origin's `409` answer to a [`PEER`] request: the block
/// is on its way to the device named after it.
pub(crate) const ON_ITS_WAY: &str = "on its way to ";
/// The number of the frame that carries a `/have` answer ([`WANT_HAVE`]).
pub(crate) const HAVE_FRAME: u32 = u32::MAX;
/// The start of a `410 Gone` body: the peer rolled the asset back.
pub(crate) const ROLLED_BACK: &str = "rolled back: ";

/// The reading side of a connection: each read waits at most `most`, and
/// none goes on past `until` when that is set: then the read fails
/// (`TimedOut`, saying `overran`), however the bytes trickle in.
pub(crate) struct Timed {
    pub stream: TcpStream,
    pub until: Option<Instant>,
    pub most: Duration,
    pub overran: &'static str,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let wait = match self.until {
            None => self.most,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, self.overran));
                }
                left.min(self.most)
            }
        };
        self.stream.set_read_timeout(Some(wait))?;
        match self.stream.read(buf) {
            // The deadline ran out while it waited: not whole in time.
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                    && self.until.is_some_and(|u| Instant::now() >= u) =>
            {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, self.overran))
            }
            other => other,
        }
    }
}

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Read one head (up to the empty line) from `r`; `None` at a clean end of
/// stream. No more than [`MAX_HEAD`] and a byte is read, however long a
/// line the other side sends without its end.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut head = Vec::new();
    loop {
        let room = (MAX_HEAD + 1).saturating_sub(head.len()) as u64;
        let n = r.by_ref().take(room).read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("head larger than 16 KiB"));
        }
    }
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Read one request; `None` when the peer closed the connection.
pub(crate) fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some(head) = read_head(r)? else { return Ok(None) };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head).map_err(invalid)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(invalid("incomplete request head")),
    }
    let method = req.method.unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return Err(invalid(format!("method {method:?} is neither GET nor HEAD")));
    }
    let headers =
        req.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    Ok(Some(Request { method: method.to_owned(), path: req.path.unwrap_or("").to_owned(), headers }))
}

impl Request {
    /// A `HEAD`: the head of the answer, no body.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Write a response with `body` (only its head for a `HEAD`).
pub(crate) fn write_response(w: &mut impl Write, req: &Request, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        502 => "Bad Gateway",
        _ => "Error",
    };
    write!(w, "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n", body.len())?;
    if !req.is_head() {
        w.write_all(body)?;
    }
    w.flush()
}

/// The part of an asset of `size` bytes a `GET .../data` asks for: the first
/// and last byte, `Ok(None)` for all of it (no `Range`), `Err` for a range
/// not in it (`416`).
pub(crate) fn wanted(req: &Request, size: u64) -> Result<Option<(u64, u64)>, ()> {
    match req.header("range") {
        None => Ok(None),
        Some(spec) => byte_range(spec, size).map(Some).ok_or(()),
    }
}

/// Write the head of an answer to a `GET .../data` of an asset of `size`
/// bytes: `200` for all of it, `206` with its `Content-Range` for a part,
/// `416` for a range not in it. The bytes to send, if any.
pub(crate) fn write_data_head(
    w: &mut impl Write,
    wanted: Result<Option<(u64, u64)>, ()>,
    size: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    match wanted {
        Err(()) => {
            write!(
                w,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n"
            )?;
            w.flush()?;
            Ok(None)
        }
        Ok(None) => {
            write!(w, "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\nContent-Length: {size}\r\n\r\n")?;
            if size == 0 {
                w.flush()?;
            }
            Ok(size.checked_sub(1).map(|last| (0, last)))
        }
        Ok(Some((first, last))) => {
            let len = last - first + 1;
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {first}-{last}/{size}\r\nContent-Length: {len}\r\n\r\n"
            )?;
            Ok(Some((first, last)))
        }
    }
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` of a file of `len` bytes, as its
/// first and last byte (RFC 9110: a last byte past the end is the end, a
/// suffix longer than the file is all of it); `None` for a range that is
/// not in the file or a spec that is not one range of bytes.
#[must_use]
pub fn byte_range(spec: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = spec.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (first, last) = match (a.trim(), b.trim()) {
        ("", n) => (len.saturating_sub(n.parse().ok()?), len.checked_sub(1)?),
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len.checked_sub(1)?)),
    };
    (first <= last).then_some((first, last))
}

/// Read a response's head: its status and body length.
pub(crate) fn read_response_head(r: &mut impl BufRead) -> std::io::Result<(u16, u64)> {
    let head = read_head(r)?.ok_or_else(|| invalid("the server closed the connection"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head).map_err(invalid)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(invalid("incomplete response head")),
    }
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<u64>().ok())
        .ok_or_else(|| invalid("response without a Content-Length"))?;
    Ok((resp.code.unwrap_or(0), len))
}

/// Read a response: its status and body, refused above `max` bytes (at
/// most [`MAX_BODY`]) before any of it is read.
pub(crate) fn read_response(r: &mut impl BufRead, max: usize) -> std::io::Result<(u16, Vec<u8>)> {
    let (status, len) = read_response_head(r)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let max = max.min(MAX_BODY);
    if len > max {
        return Err(invalid(format!("response body of {len} bytes is above {max}, the most this answer can need")));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// Room in every answer for an error's words (a `410`'s reason is at most
/// [`GONE_REASON_MAX`] characters).
const ANSWER_SLACK: usize = 4096;
/// The longest reason a server gives in a `410 Gone` (its first line).
pub(crate) const GONE_REASON_MAX: usize = 1000;

/// The longest `/have` answer for an asset of `blocks` blocks: its bitmap
/// in hex, a second line naming the block fetched from the origin, or an
/// error's words.
pub(crate) fn have_answer_max(blocks: u32) -> usize {
    2 * blocks.div_ceil(8) as usize + "\norigin ".len() + 10 + ANSWER_SLACK
}

/// The longest answer to a request for one block of at most `len` bytes
/// (of an asset of `blocks` blocks), with what the server holds when
/// `with_have`: a peer cannot make the device read, or keep in memory,
/// more than what it asked for.
pub(crate) fn block_answer_max(len: usize, blocks: u32, with_have: bool) -> usize {
    FRAME_HEAD + len + if with_have { FRAME_HEAD + have_answer_max(blocks) } else { ANSWER_SLACK }
}

/// Whether a bitmap of blocks (the store's `have`, a `Trellis-Have` header,
/// a `/have` answer) holds block `n`: bit `n % 8` of byte `n / 8`.
pub(crate) fn holds(bitmap: &[u8], n: u32) -> bool {
    bitmap.get(n as usize / 8).is_some_and(|byte| byte & (1 << (n % 8)) != 0)
}

/// A frame's head: its block number and length.
const FRAME_HEAD: usize = 8;

/// Append one frame.
pub(crate) fn frame(out: &mut Vec<u8>, block: u32, data: &[u8]) {
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(data);
}

/// Split a body into frames, or say where it is malformed.
pub(crate) fn frames(mut body: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < FRAME_HEAD {
            return Err(format!("a frame header of {} bytes", body.len()));
        }
        let block = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let rest = &body[FRAME_HEAD..];
        if rest.len() < len {
            return Err(format!("block {block}'s frame says {len} bytes, {} remain", rest.len()));
        }
        out.push((block, &rest[..len]));
        body = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_named() {
        let mut body = Vec::new();
        frame(&mut body, 3, b"abc");
        frame(&mut body, 9, b"");
        assert_eq!(frames(&body).unwrap(), vec![(3, &b"abc"[..]), (9, &b""[..])]);
        let e = frames(&body[..9]).unwrap_err();
        assert!(e.contains("block 3's frame says 3 bytes, 1 remain"), "{e}");
    }

    #[test]
    fn requests_and_responses_parse() {
        let raw = b"GET /v1/assets/ab/blocks/4 HTTP/1.1\r\nTrellis-Have: 0f\r\n\r\n";
        let req = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(req.path, "/v1/assets/ab/blocks/4");
        assert_eq!(req.header(HAVE), Some("0f"));
        assert!(read_request(&mut &b""[..]).unwrap().is_none());
        let mut out = Vec::new();
        write_response(&mut out, &req, 404, b"no such asset").unwrap();
        assert_eq!(read_response(&mut &out[..], MAX_BODY).unwrap(), (404, b"no such asset".to_vec()));
        let e = read_response(&mut &out[..], 12).unwrap_err();
        assert!(e.to_string().contains("response body of 13 bytes is above 12"), "{e}");
        // HEAD: the same head, no body; other methods are refused by name.
        let head = read_request(&mut &b"HEAD /v1/assets/ab/data HTTP/1.1\r\n\r\n"[..]).unwrap().unwrap();
        let mut out = Vec::new();
        write_response(&mut out, &head, 404, b"no such asset").unwrap();
        assert!(out.ends_with(b"Content-Length: 13\r\n\r\n"), "{}", String::from_utf8_lossy(&out));
        let e = read_request(&mut &b"PUT /x HTTP/1.1\r\n\r\n"[..]).unwrap_err();
        assert!(e.to_string().contains("\"PUT\" is neither GET nor HEAD"), "{e}");
    }

    #[test]
    fn a_head_line_without_an_end_is_refused_after_16_kib() {
        for start in [&b"GET /v1/assets/ab/have HTTP/1.1\r\nX: "[..], b"HTTP/1.1 200 OK\r\nX: "] {
            let mut sent = start.to_vec();
            sent.resize(1 << 20, b'a');
            let mut r = &sent[..];
            let e = if start.starts_with(b"GET") {
                read_request(&mut r).unwrap_err()
            } else {
                read_response_head(&mut r).unwrap_err()
            };
            assert!(e.to_string().contains("head larger than 16 KiB"), "{e}");
            let read = sent.len() - r.len();
            assert!(read <= MAX_HEAD + 1, "read {read} bytes of a head");
        }
    }

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(byte_range("bytes=0-3", 10), Some((0, 3)));
        assert_eq!(byte_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(byte_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(byte_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(byte_range("bytes=5-4", 10), None);
        assert_eq!(byte_range("bytes=10-", 10), None);
        assert_eq!(byte_range("bytes=-11", 10), Some((0, 9)));
        assert_eq!(byte_range("bytes=0-0", 0), None);
        assert_eq!(byte_range("lines=1-2", 10), None);
    }
}
