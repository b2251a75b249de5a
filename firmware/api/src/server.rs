//! The listener: one thread accepting, one thread per connection, each
//! connection bounded in time and in number so that clients without an
//! operator certificate (which never get past the TLS handshake) cannot keep
//! the operator out.
//!
//! A connection goes through two phases, each with its own budget:
//!
//! - **Admitted** (from `accept` until its request head is read): the TLS
//!   handshake, which refuses anyone without an operator certificate, then
//!   the request head. At most `max-handshakes` connections at once are in
//!   this phase, and at most `max-handshakes-per-peer` of them from one
//!   address. Handshake and head together must be done within
//!   `handshake-timeout-s` of `accept`: one deadline for all their reads and
//!   writes, not a timeout per read, so a client that sends one byte at a
//!   time gains nothing by it. A connection over either limit is answered a
//!   plain-text `503 Service Unavailable` naming the reason, before any TLS,
//!   and closed.
//! - **Served** (an operator's request, its head read): at most
//!   `max-connections` at once; one more is answered `503` inside TLS.
//!   Reading the body and writing the answer have a timeout per read and per
//!   write (`timeout-s`), so a log follower stays as long as it reads.
//!
//! So a silent or slow connection holds a handshake slot for at most the
//! deadline, one address holds at most its share of them, and the slots of
//! requests being served are never taken by anyone without a certificate.
//! (Clients on `max-handshakes / max-handshakes-per-peer` addresses or more
//! can still fill the handshake slots; each slot then comes free within the
//! deadline, and an operator turned away meanwhile is told the device is busy.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde::Deserialize;

use crate::http::{HttpError, read_head, reason};
use crate::limits::{DeadlineStream, Refuser};
use trellis_control::Device;
use trellis_limits::{Budget, PeerSlot, PerPeer, Slot};

use crate::routes::{Response, Routes};

/// `[api]` in the runtime's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiConfig {
    /// Where to listen.
    #[serde(default = "ApiConfig::default_listen")]
    pub listen: SocketAddr,
    /// The operator CA: clients must present a certificate it signed.
    pub client_ca: std::path::PathBuf,
    /// The device's certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// The device's private key (PEM).
    pub key: std::path::PathBuf,
    /// Requests served at once (an operator's certificate verified, the
    /// request head read); one more is answered `503` inside TLS.
    #[serde(default = "ApiConfig::default_max_connections")]
    pub max_connections: usize,
    /// Connections at once whose TLS handshake or request head is not done
    /// yet (nobody is authenticated before the handshake ends); one more is
    /// answered a plain-text `503` and closed.
    #[serde(default = "ApiConfig::default_max_handshakes")]
    pub max_handshakes: usize,
    /// Of those, at most this many from one address.
    #[serde(default = "ApiConfig::default_max_handshakes_per_peer")]
    pub max_handshakes_per_peer: usize,
    /// Seconds from `accept` by which the TLS handshake and the request head
    /// must both be done: one deadline for all their reads and writes.
    #[serde(default = "ApiConfig::default_handshake_timeout_s")]
    pub handshake_timeout_s: u64,
    /// Seconds a request being served may sit without sending or taking data
    /// (reading the body, writing the answer).
    #[serde(default = "ApiConfig::default_timeout_s")]
    pub timeout_s: u64,
    /// Largest app upload; larger ones are refused before a byte is read.
    #[serde(default = "ApiConfig::default_max_app_bytes")]
    pub max_app_bytes: u64,
    /// Largest firmware bundle; larger ones are refused before a byte is read.
    #[serde(default = "ApiConfig::default_max_bundle_bytes")]
    pub max_bundle_bytes: u64,
    /// Announce the API over mDNS (`_trellis._tcp`).
    #[serde(default = "ApiConfig::default_announce")]
    pub announce: bool,
}

impl ApiConfig {
    /// A configuration listening on `listen` with the device's TLS files and
    /// every limit at its default (as a `[api]` section naming only those).
    #[must_use]
    pub fn new(
        listen: SocketAddr,
        client_ca: std::path::PathBuf,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    ) -> Self {
        Self {
            listen,
            client_ca,
            cert,
            key,
            max_connections: Self::default_max_connections(),
            max_handshakes: Self::default_max_handshakes(),
            max_handshakes_per_peer: Self::default_max_handshakes_per_peer(),
            handshake_timeout_s: Self::default_handshake_timeout_s(),
            timeout_s: Self::default_timeout_s(),
            max_app_bytes: Self::default_max_app_bytes(),
            max_bundle_bytes: Self::default_max_bundle_bytes(),
            announce: Self::default_announce(),
        }
    }

    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8443))
    }
    const fn default_max_connections() -> usize {
        8
    }
    const fn default_max_handshakes() -> usize {
        16
    }
    const fn default_max_handshakes_per_peer() -> usize {
        4
    }
    const fn default_handshake_timeout_s() -> u64 {
        10
    }
    const fn default_timeout_s() -> u64 {
        30
    }
    const fn default_max_app_bytes() -> u64 {
        16 << 20
    }
    const fn default_announce() -> bool {
        true
    }
    const fn default_max_bundle_bytes() -> u64 {
        crate::firmware::DEFAULT_MAX_BUNDLE_BYTES
    }
}

/// What went wrong starting the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The TLS files.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The socket.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running API.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
}

impl Server {
    /// The address it listens on (the port chosen when `listen` had port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The budgets and deadlines every connection is held to.
#[derive(Debug, Clone)]
struct Limits {
    /// Authenticated requests being served (`max-connections`).
    served: Budget,
    /// Connections before their request head (`max-handshakes`).
    handshakes: Budget,
    /// Of those, per address (`max-handshakes-per-peer`).
    per_peer: PerPeer,
    /// From `accept` to the end of the request head (`handshake-timeout-s`).
    handshake_timeout: Duration,
    /// Per read and per write afterwards (`timeout-s`).
    timeout: Duration,
}

/// What lets a connection in until its request head is read: its slot in
/// the handshake budget and its address's. Dropped, both come back.
#[derive(Debug)]
struct Admission {
    _handshake: Slot,
    _peer: PeerSlot,
}

impl Limits {
    fn new(config: &ApiConfig) -> Self {
        Self {
            served: Budget::new(config.max_connections.max(1)),
            handshakes: Budget::new(config.max_handshakes.max(1)),
            per_peer: PerPeer::new(config.max_handshakes_per_peer.max(1)),
            handshake_timeout: Duration::from_secs(config.handshake_timeout_s.max(1)),
            timeout: Duration::from_secs(config.timeout_s.max(1)),
        }
    }

    /// A new connection from `peer` in, or the reason it is turned away.
    fn admit(&self, peer: SocketAddr) -> Result<Admission, String> {
        let ip = peer.ip().to_canonical();
        let peer = self
            .per_peer
            .take(ip)
            .ok_or_else(|| format!("too many connections from {ip} (at most {} at once)", self.per_peer.max()))?;
        let handshake = self.handshakes.take().ok_or_else(|| {
            format!("busy: {} connections already waiting for their TLS handshake or request", self.handshakes.max())
        })?;
        Ok(Admission { _handshake: handshake, _peer: peer })
    }
}

/// Connections turned away are logged at most once a second (a flood would
/// fill the log), with how many were left out since.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: SocketAddr, reason: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.unlogged += 1;
            tracing::debug!(%peer, "api: turned a connection away: {reason}");
            return;
        }
        self.last = Some(now);
        match std::mem::take(&mut self.unlogged) {
            0 => tracing::warn!(%peer, "api: turned a connection away: {reason}"),
            n => {
                tracing::warn!(%peer, "api: turned a connection away: {reason} ({n} more turned away since the last line)")
            }
        }
    }
}

/// Start serving `device` as `config` says.
///
/// # Errors
/// The TLS files are unusable or the address cannot be bound.
pub fn serve(config: &ApiConfig, device: Arc<dyn Device>) -> Result<Server, ApiError> {
    let tls = crate::tls::server_config(&config.client_ca, &config.cert, &config.key)?;
    let listener =
        TcpListener::bind(config.listen).map_err(|source| ApiError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ApiError::Listen { addr: config.listen, source })?;
    let limits = Limits::new(config);
    let routes = Arc::new(Routes::new(device, config.max_app_bytes).with_bundle_limit(config.max_bundle_bytes));
    let refuser = Refuser::start().map_err(|source| ApiError::Listen { addr, source })?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let mut refusals = RefusalLog::default();
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("api: accept: {e}");
                        // Out of file descriptors, say: no busy loop.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Ok(peer) = stream.peer_addr() else { continue }; // gone already
                let admission = match limits.admit(peer) {
                    Ok(a) => a,
                    Err(reason) => {
                        refusals.note(peer, &reason);
                        refuser.refuse(stream, &reason);
                        continue;
                    }
                };
                let (tls, routes, limits) = (Arc::clone(&tls), Arc::clone(&routes), limits.clone());
                // The admission moves into the thread: its slots come back
                // when the connection ends, however it ends (or here, if no
                // thread starts).
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn(move || connection(stream, peer, &tls, &routes, &limits, admission));
                if let Err(e) = spawned {
                    tracing::error!(%peer, "api: no thread for a connection: {e}");
                }
            }
        })
        .map_err(|source| ApiError::Listen { addr, source })?;
    tracing::info!(%addr, "management API listening (mutual TLS)");
    Ok(Server { addr })
}

/// One connection: the TLS handshake (which refuses clients without a
/// certificate from the operator CA) and the request head within the
/// handshake deadline, then a slot among the requests served (or `503`),
/// the request, one answer.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &Arc<ServerConfig>,
    routes: &Routes,
    limits: &Limits,
    admission: Admission,
) {
    let deadline = Instant::now() + limits.handshake_timeout;
    let secs = limits.handshake_timeout.as_secs();
    let sock = DeadlineStream::new(stream, deadline, "the TLS handshake and the request head");
    let conn = match ServerConnection::new(Arc::clone(tls)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%peer, "api: TLS: {e}");
            return;
        }
    };
    let mut tls_stream = StreamOwned::new(conn, sock);
    // Drive the handshake first, so a refused client is logged as such.
    while tls_stream.conn.is_handshaking() {
        if let Err(e) = tls_stream.conn.complete_io(&mut tls_stream.sock) {
            if tls_stream.sock.expired() {
                tracing::info!(%peer, "api: no TLS handshake within {secs} s: closed");
            } else {
                tracing::info!(%peer, "api: refused a client in the TLS handshake: {e}");
            }
            return;
        }
    }
    let who = client_name(&tls_stream.conn);
    let head = read_head(&mut tls_stream);
    if head.is_err() && tls_stream.sock.expired() {
        tracing::info!(%peer, client = %who, "api: no complete request within {secs} s of connecting: closed");
        return;
    }
    let served = limits.served.take();
    drop(admission);
    let result = match head {
        Ok((head, rest)) => {
            let Some(_served) = served else {
                let reason = format!("busy: {} requests already being served", limits.served.max());
                tracing::warn!(%peer, client = %who, method = %head.method, path = %head.path, "api: turned a request away: {reason}");
                let result = write_answer(&mut tls_stream, 503, "text/plain", format!("{reason}\n").as_bytes());
                finish(&mut tls_stream, peer, result);
                return;
            };
            if let Err(e) = tls_stream.sock.end_deadline(limits.timeout) {
                tracing::debug!(%peer, "api: socket timeouts: {e}");
                return;
            }
            tracing::info!(%peer, client = %who, method = %head.method, path = %head.path, "api request");
            let expects = head.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            let mut body =
                Body { rest: std::io::Cursor::new(rest), stream: &mut tls_stream, continue_pending: expects };
            let response = routes.route(&head, &mut body);
            drop(body);
            match response {
                Response::Full(a) => write_answer(&mut tls_stream, a.status, &a.content_type, &a.body),
                Response::Stream(s) => write_stream_head(&mut tls_stream, s.status, &s.content_type)
                    .and_then(|()| (s.write)(&mut tls_stream)),
            }
        }
        Err(e) => {
            let status = e.status();
            if e != HttpError::Truncated {
                tracing::info!(%peer, "api: {e}");
            }
            write_answer(&mut tls_stream, status, "text/plain", format!("{e}\n").as_bytes())
        }
    };
    finish(&mut tls_stream, peer, result);
}

/// Log a failed answer, then close the TLS session.
fn finish(
    tls_stream: &mut StreamOwned<ServerConnection, DeadlineStream>,
    peer: SocketAddr,
    result: std::io::Result<()>,
) {
    if let Err(e) = result {
        tracing::debug!(%peer, "api: writing the answer: {e}");
    }
    tls_stream.conn.send_close_notify();
    let _ = tls_stream.flush();
}

/// A request's body. A client that sent `Expect: 100-continue` waits for
/// `100 Continue` before it sends the body: that goes out when a route first
/// reads it, after its checks, so a refusal is answered without the upload.
struct Body<'a, S: Read + Write> {
    rest: std::io::Cursor<Vec<u8>>,
    stream: &'a mut S,
    continue_pending: bool,
}

impl<S: Read + Write> Read for Body<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.continue_pending {
            self.continue_pending = false;
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            self.stream.flush()?;
        }
        match self.rest.read(buf)? {
            0 => self.stream.read(buf),
            n => Ok(n),
        }
    }
}

/// The client certificate's subject, for the log.
fn client_name(conn: &ServerConnection) -> String {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map_or_else(|| "?".to_owned(), |c| format!("certificate of {} bytes", c.len()))
}

fn write_answer(w: &mut impl Write, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

/// The head of an answer whose body is written as it comes and ends with the connection.
fn write_stream_head(w: &mut impl Write, status: u16, content_type: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        reason(status)
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A stream that records what is written and yields what it was given.
    struct Pipe {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn continue_goes_out_only_when_the_body_is_read() {
        let mut pipe = Pipe { input: std::io::Cursor::new(b"body".to_vec()), output: Vec::new() };
        let body = Body { rest: std::io::Cursor::new(Vec::new()), stream: &mut pipe, continue_pending: true };
        drop(body);
        assert!(pipe.output.is_empty(), "a refusal needs no 100 Continue");
        let mut body = Body { rest: std::io::Cursor::new(b"AB".to_vec()), stream: &mut pipe, continue_pending: true };
        let mut got = String::new();
        body.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ABbody");
        assert_eq!(pipe.output, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn answers_carry_their_length_and_close() {
        let mut out = Vec::new();
        write_answer(&mut out, 404, "text/plain", b"no such app\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 12\r\n") && text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nno such app\n"), "{text}");
    }
}
