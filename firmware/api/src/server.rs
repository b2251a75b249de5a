//! The listener: one thread accepting, one thread per connection, at most
//! `max-connections` at a time, each with read and write timeouts so a slow
//! or silent client cannot hold a slot for ever.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde::Deserialize;

use crate::http::{HttpError, read_head, reason};
use trellis_control::Device;

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
    /// Connections served at once; more are closed at once (and logged).
    #[serde(default = "ApiConfig::default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may sit without sending or taking data.
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
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8443))
    }
    const fn default_max_connections() -> usize {
        8
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

/// Start serving `device` as `config` says.
///
/// # Errors
/// The TLS files are unusable or the address cannot be bound.
pub fn serve(config: &ApiConfig, device: Arc<dyn Device>) -> Result<Server, ApiError> {
    let tls = crate::tls::server_config(&config.client_ca, &config.cert, &config.key)?;
    let listener =
        TcpListener::bind(config.listen).map_err(|source| ApiError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ApiError::Listen { addr: config.listen, source })?;
    let (max, timeout) = (config.max_connections.max(1), Duration::from_secs(config.timeout_s.max(1)));
    let active = Arc::new(AtomicUsize::new(0));
    let routes = Arc::new(Routes::new(device, config.max_app_bytes).with_bundle_limit(config.max_bundle_bytes));
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("api: accept: {e}");
                        continue;
                    }
                };
                let peer = stream.peer_addr().ok();
                if active.fetch_add(1, Ordering::SeqCst) >= max {
                    active.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(?peer, "api: {max} connections already: closing this one");
                    continue;
                }
                let (tls, routes, active) = (Arc::clone(&tls), Arc::clone(&routes), Arc::clone(&active));
                let spawned = std::thread::Builder::new().name("api-conn".into()).spawn(move || {
                    connection(stream, &tls, &routes, timeout);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    tracing::error!("api: no thread for a connection: {e}");
                }
            }
        })
        .map_err(|source| ApiError::Listen { addr, source })?;
    tracing::info!(%addr, "management API listening (mutual TLS)");
    Ok(Server { addr })
}

/// One connection: the TLS handshake (which refuses clients without a
/// certificate from the operator CA), one request, one answer.
fn connection(stream: TcpStream, tls: &Arc<ServerConfig>, routes: &Routes, timeout: Duration) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let conn = match ServerConnection::new(Arc::clone(tls)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("api: TLS: {e}");
            return;
        }
    };
    let mut tls_stream = StreamOwned::new(conn, stream);
    // Drive the handshake first, so a refused client is logged as such.
    while tls_stream.conn.is_handshaking() {
        if let Err(e) = tls_stream.conn.complete_io(&mut tls_stream.sock) {
            tracing::info!(?peer, "api: refused a client in the TLS handshake: {e}");
            return;
        }
    }
    let who = client_name(&tls_stream.conn);
    let result = match read_head(&mut tls_stream) {
        Ok((head, rest)) => {
            tracing::info!(?peer, client = %who, method = %head.method, path = %head.path, "api request");
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
                tracing::info!(?peer, "api: {e}");
            }
            write_answer(&mut tls_stream, status, "text/plain", format!("{e}\n").as_bytes())
        }
    };
    if let Err(e) = result {
        tracing::debug!(?peer, "api: writing the answer: {e}");
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
