//! The operator's side of the API (the `trellis` CLI uses it): one request
//! per connection over mutual TLS. The device's certificate must chain to
//! the device CA and name the device; the operator's certificate goes with
//! every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::http::MAX_HEAD;
use crate::tls::{TlsError, certificates, private_key, provider};

/// The operator's certificate and key, and the CA the device's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The CA that signs devices' certificates (PEM).
    pub ca: PathBuf,
    /// The operator's certificate (PEM), signed by the CA the device trusts.
    pub cert: PathBuf,
    /// The operator's private key (PEM).
    pub key: PathBuf,
}

/// What went wrong talking to a device.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The credentials.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The name to check the device's certificate against.
    #[error("{0:?} cannot be checked against a certificate (a DNS name or an IP address)")]
    ServerName(String),
    /// No connection.
    #[error("cannot reach {address}: {reason}")]
    Connect {
        /// The device's address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (a certificate refused by either side).
    #[error("{address}: TLS: {reason}")]
    Handshake {
        /// The device's address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The connection failed on the way.
    #[error("{address}: {reason}")]
    Io {
        /// The device's address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The device turned the connection away for load (its plain `503` read
    /// where the TLS handshake should have been): nothing is wrong with the
    /// certificates; try again shortly.
    #[error("{address}: the device is busy and turned the connection away: {reason}")]
    Busy {
        /// The device's address.
        address: String,
        /// The device's reason, as it said it.
        reason: String,
    },
    /// The device answered something that is not HTTP.
    #[error("{address}: not an HTTP answer: {reason}")]
    Protocol {
        /// The device's address.
        address: String,
        /// What was wrong.
        reason: String,
    },
    /// The device refused the request.
    #[error("the device answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The device's reason.
        message: String,
    },
}

/// A device's API.
#[derive(Debug, Clone)]
pub struct Client {
    tls: Arc<ClientConfig>,
    address: String,
    server_name: ServerName<'static>,
    timeout: Duration,
}

/// A request body read from `reader`, `len` bytes long; `sent` hears how
/// many have gone out so far.
pub struct Upload<'a> {
    /// The bytes.
    pub reader: &'a mut dyn Read,
    /// How many.
    pub len: u64,
    /// Progress.
    pub sent: &'a mut dyn FnMut(u64),
}

impl std::fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("len", &self.len).finish_non_exhaustive()
    }
}

type Tls = StreamOwned<ClientConnection, Recording>;

/// How many of the first bytes read from a connection are kept.
const RECORDED: usize = 1024;

/// The socket, keeping the first bytes read from it during the handshake: a
/// device that turns a connection away for load answers a plain HTTP `503`
/// instead of TLS, and those bytes tell that apart from a refused
/// certificate.
#[derive(Debug)]
struct Recording {
    sock: TcpStream,
    first: Vec<u8>,
    recording: bool,
}

impl Recording {
    /// Read on until the device closes the connection (at most [`RECORDED`]
    /// bytes, at most `wait`), to have its whole answer.
    fn read_rest(&mut self, wait: Duration) {
        let until = std::time::Instant::now() + wait;
        let mut chunk = [0u8; 256];
        while self.first.len() < RECORDED {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sock.read(buf)?;
        if self.recording {
            let keep = n.min(RECORDED.saturating_sub(self.first.len()));
            self.first.extend_from_slice(&buf[..keep]);
        }
        Ok(n)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// An answer, its body still to be read.
pub struct Incoming {
    /// HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: String,
    address: String,
    body: BufReader<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("status", &self.status).field("content_type", &self.content_type).finish()
    }
}

impl Client {
    /// A client for the device at `address` (`host:port`) whose certificate
    /// must name `server_name`.
    ///
    /// # Errors
    /// The credentials are unusable or `server_name` is not a name.
    pub fn new(credentials: &Credentials, address: &str, server_name: &str) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&credentials.ca)? {
            roots.add(ca).map_err(|e| TlsError::File { path: credentials.ca.clone(), reason: e.to_string() })?;
        }
        let tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certificates(&credentials.cert)?, private_key(&credentials.key)?)
            .map_err(|e| {
                TlsError::Config(format!("{} and {}: {e}", credentials.cert.display(), credentials.key.display()))
            })?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
        Ok(Self { tls: Arc::new(tls), address: address.to_owned(), server_name, timeout: Duration::from_secs(120) })
    }

    /// How long a connection may wait for the device (default 120 s).
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The device's address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `GET path`.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn get(&self, path: &str) -> Result<Incoming, ClientError> {
        self.send("GET", path, None)
    }

    /// Send one request and read the answer's head. A body is announced with
    /// `Expect: 100-continue` and sent only once the device agreed to take it,
    /// so a refusal (too large, no room, a bad name) comes back at once,
    /// without the upload.
    ///
    /// # Errors
    /// No connection, a refused handshake, a broken connection or an answer
    /// that is not HTTP. (An error status is an [`Incoming`]: see [`Incoming::ok`].)
    pub fn send(&self, method: &str, path: &str, body: Option<Upload<'_>>) -> Result<Incoming, ClientError> {
        let mut stream = self.connect()?;
        let len = body.as_ref().map_or(0, |b| b.len);
        let expect = if body.is_some() { "Expect: 100-continue\r\n" } else { "" };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: trellis/{}\r\nContent-Length: {len}\r\n{expect}Connection: close\r\n\r\n",
            self.address,
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(head.as_bytes()).and_then(|()| stream.flush()).map_err(|e| self.io_error(&e))?;
        let mut buf = Vec::new();
        if let Some(upload) = body {
            let first = self.read_head(&mut stream, &mut buf)?;
            if first.status != 100 {
                return Ok(self.incoming(first, buf, stream));
            }
            let sent = copy(upload, &mut stream);
            // The device may answer before it has read everything (the
            // connection broke, or it refused what it read): its answer says more.
            match self.read_head(&mut stream, &mut buf) {
                Ok(head) => return Ok(self.incoming(head, buf, stream)),
                Err(e) => return Err(sent.err().map_or(e, |w| self.io_error(&w))),
            }
        }
        let head = self.read_head(&mut stream, &mut buf)?;
        Ok(self.incoming(head, buf, stream))
    }

    fn connect(&self) -> Result<Tls, ClientError> {
        let unreachable = |reason: String| ClientError::Connect { address: self.address.clone(), reason };
        let addrs: Vec<_> = self.address.to_socket_addrs().map_err(|e| unreachable(e.to_string()))?.collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = tcp.ok_or_else(|| unreachable(last))?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(|e| unreachable(e.to_string()))?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let conn = ClientConnection::new(Arc::clone(&self.tls), self.server_name.clone())
            .map_err(|e| ClientError::Handshake { address: self.address.clone(), reason: e.to_string() })?;
        let mut stream = StreamOwned::new(conn, Recording { sock: tcp, first: Vec::new(), recording: true });
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(self.handshake_failed(&mut stream.sock, &e));
            }
        }
        stream.sock.recording = false;
        stream.sock.first = Vec::new();
        Ok(stream)
    }

    /// Why a handshake failed: a plain HTTP answer where TLS should have been
    /// (the device turned the connection away), or the TLS problem.
    fn handshake_failed(&self, sock: &mut Recording, e: &std::io::Error) -> ClientError {
        const HTTP: &[u8] = b"HTTP/1.";
        let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        // What was read so far is, or may become, an HTTP answer: read the rest of it.
        let maybe_http = if sock.first.len() >= HTTP.len() {
            sock.first.starts_with(HTTP)
        } else {
            HTTP.starts_with(&sock.first) && !timed_out
        };
        if maybe_http {
            sock.read_rest(Duration::from_secs(2));
        }
        if sock.first.starts_with(HTTP) {
            return plain_answer(&self.address, &sock.first);
        }
        ClientError::Handshake { address: self.address.clone(), reason: handshake_reason(e) }
    }

    fn io_error(&self, e: &std::io::Error) -> ClientError {
        // Under TLS 1.3 the device checks our certificate after the client's
        // side of the handshake is done: its refusal is the first thing read.
        if refused_alert(&e.to_string()) {
            return ClientError::Handshake { address: self.address.clone(), reason: handshake_reason(e) };
        }
        ClientError::Io { address: self.address.clone(), reason: e.to_string() }
    }

    /// Read one answer head from `stream`; `buf` keeps what came after it.
    fn read_head(&self, stream: &mut Tls, buf: &mut Vec<u8>) -> Result<AnswerHead, ClientError> {
        let protocol = |reason: String| ClientError::Protocol { address: self.address.clone(), reason };
        let mut chunk = [0u8; 1024];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(used)) => {
                    let header = |name: &str| {
                        response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let head = AnswerHead {
                        status: response.code.unwrap_or(0),
                        content_type: header("content-type").unwrap_or_default(),
                        length: header("content-length").and_then(|l| l.trim().parse::<u64>().ok()),
                    };
                    buf.drain(..used);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => return Err(protocol("the answer's head is too large".into())),
                Err(e) => return Err(protocol(e.to_string())),
            }
            let n = stream.read(&mut chunk).map_err(|e| self.io_error(&e))?;
            if n == 0 {
                return Err(protocol("the connection closed before an answer".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn incoming(&self, head: AnswerHead, rest: Vec<u8>, stream: Tls) -> Incoming {
        let body: Box<dyn Read + Send> = match head.length {
            Some(l) => Box::new(std::io::Cursor::new(rest).chain(stream).take(l)),
            None => Box::new(std::io::Cursor::new(rest).chain(stream)),
        };
        Incoming {
            status: head.status,
            content_type: head.content_type,
            address: self.address.clone(),
            body: BufReader::new(body),
        }
    }
}

/// The parts of an answer's head the client uses.
struct AnswerHead {
    status: u16,
    content_type: String,
    length: Option<u64>,
}

/// A plain HTTP answer read where the TLS handshake should have been: a
/// `503` is the device turning the connection away for load; anything else
/// is not the management API (a failed handshake, named as such).
fn plain_answer(address: &str, bytes: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default().trim();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    let printable =
        |s: &str| -> String { s.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect() };
    let said = if body.trim().is_empty() { printable(status_line) } else { printable(body) };
    if status == Some(503) {
        ClientError::Busy { address: address.to_owned(), reason: said }
    } else {
        ClientError::Handshake {
            address: address.to_owned(),
            reason: format!(
                "a plain HTTP answer instead of TLS (is this the management API's port?): {}: {said}",
                printable(status_line)
            ),
        }
    }
}

/// A TLS alert that means the device did not accept our certificate.
fn refused_alert(text: &str) -> bool {
    ["CertificateRequired", "BadCertificate", "UnknownCA", "CertificateExpired", "UnsupportedCertificate"]
        .iter()
        .any(|a| text.contains(a))
}

/// The alert or certificate problem in a failed handshake.
fn handshake_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    if refused_alert(&text) {
        format!("the device refused our certificate ({text})")
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof || e.kind() == std::io::ErrorKind::ConnectionReset {
        format!("the device closed the connection in the handshake (our certificate refused?): {text}")
    } else {
        text
    }
}

fn copy(upload: Upload<'_>, w: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let mut reader = upload.reader.take(upload.len);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
        sent += n as u64;
        (upload.sent)(sent);
    }
    w.flush()
}

impl Incoming {
    /// This answer, or the device's reason when it is an error status.
    ///
    /// # Errors
    /// [`ClientError::Status`] for a status of 400 and above.
    pub fn ok(self) -> Result<Self, ClientError> {
        if self.status < 400 {
            return Ok(self);
        }
        let status = self.status;
        let text = self.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Err(ClientError::Status { status, message })
    }

    /// The whole body as text.
    ///
    /// # Errors
    /// The connection broke.
    pub fn text(mut self) -> Result<String, ClientError> {
        let mut text = String::new();
        self.body
            .read_to_string(&mut text)
            .map_err(|e| ClientError::Io { address: self.address, reason: e.to_string() })?;
        Ok(text)
    }

    /// The body as JSON (after [`Incoming::ok`]).
    ///
    /// # Errors
    /// An error status, a broken connection, or not the JSON expected.
    pub fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ClientError> {
        let address = self.address.clone();
        let text = self.ok()?.text()?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol { address, reason: e.to_string() })
    }

    /// The body's lines as they come (newline-delimited JSON).
    pub fn lines(self) -> impl Iterator<Item = Result<String, ClientError>> {
        let address = self.address;
        self.body
            .lines()
            .map(move |l| l.map_err(|e| ClientError::Io { address: address.clone(), reason: e.to_string() }))
    }

    /// The `data:` of each server-sent event as it comes (comments skipped).
    pub fn events(self) -> impl Iterator<Item = Result<String, ClientError>> {
        self.lines().filter_map(|l| match l {
            Ok(line) => line.strip_prefix("data:").map(|d| Ok(d.trim_start().to_owned())),
            Err(e) => Some(Err(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_503_is_the_device_busy_and_other_answers_are_not_tls() {
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 29\r\n\r\nbusy: 8 connections already\n";
        let e = plain_answer("d:8443", busy);
        assert!(matches!(&e, ClientError::Busy { reason, .. } if reason == "busy: 8 connections already"), "{e:?}");
        assert_eq!(
            e.to_string(),
            "d:8443: the device is busy and turned the connection away: busy: 8 connections already"
        );
        let e = plain_answer("d:8443", b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(e.to_string().ends_with("away: HTTP/1.1 503 Service Unavailable"), "{e}");
        let e = plain_answer("d:80", b"HTTP/1.0 400 Bad Request\r\n\r\n\x1b[31mno TLS here");
        assert!(matches!(e, ClientError::Handshake { .. }), "{e:?}");
        assert!(e.to_string().contains("instead of TLS") && e.to_string().ends_with(" [31mno TLS here"), "{e}");
    }
}
