//! A bundle origin on the host for the twin's streamed installs: an HTTP/1.1
//! server on 127.0.0.1 (the twin reaches it as `10.0.2.2`) that serves the
//! files of one directory with range requests, as RAUC's streaming mode needs,
//! counts every byte of body it sends, and can be made to go away after a
//! given number of bytes (a link cut mid-install) and come back. Over plain
//! HTTP, or HTTPS with mutual TLS ([`Origin::start_tls`]): the device must
//! present a certificate of the CA the origin trusts.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

#[derive(Debug, Default)]
struct State {
    /// Bytes of response bodies sent, in all.
    served: AtomicU64,
    /// Range requests answered.
    requests: AtomicU64,
    /// TLS connections that failed or ended before a request.
    refused: AtomicU64,
    /// Down: every connection is closed without an answer.
    down: AtomicBool,
    /// Go down once `served` reaches this.
    cut_at: Mutex<Option<u64>>,
    /// The open connections, closed when the origin goes down.
    open: Mutex<Vec<TcpStream>>,
    /// Each range asked for with a body: file, first and last byte.
    ranges: Mutex<Vec<(String, u64, u64)>>,
}

/// The origin: see the module's documentation.
#[derive(Debug)]
pub struct Origin {
    /// Its port on 127.0.0.1.
    pub port: u16,
    scheme: &'static str,
    state: Arc<State>,
}

impl Origin {
    /// Serve the files of `dir` on an unused port of 127.0.0.1.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        Self::listen(dir, None)
    }

    /// Serve the files of `dir` over HTTPS with `tls` (which says whose
    /// client certificates it takes). Connections that fail or end before a
    /// request are counted ([`Origin::refused`]).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start_tls(dir: &Path, tls: Arc<ServerConfig>) -> std::io::Result<Self> {
        Self::listen(dir, Some(tls))
    }

    fn listen(dir: &Path, tls: Option<Arc<ServerConfig>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(State::default());
        let (s, dir) = (Arc::clone(&state), dir.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if s.down.load(Ordering::SeqCst) {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                if let Ok(c) = stream.try_clone() {
                    s.open.lock().unwrap_or_else(PoisonError::into_inner).push(c);
                }
                let (s, dir, tls) = (Arc::clone(&s), dir.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = match tls {
                        None => serve(stream, &dir, &s, &mut false),
                        Some(tls) => serve_tls(stream, tls, &dir, &s),
                    };
                });
            }
        });
        Ok(Self { port, scheme, state })
    }

    /// The URL the twin fetches `file` at.
    #[must_use]
    pub fn url(&self, file: &str) -> String {
        format!("{}://10.0.2.2:{}/{file}", self.scheme, self.port)
    }

    /// TLS connections that failed or ended before a request: a client
    /// certificate refused, or the client refusing the origin's.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Bytes of response bodies sent so far.
    #[must_use]
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Requests answered with a body or a head (200, 206) so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The byte ranges of `file` asked for so far (first, last), in order.
    #[must_use]
    pub fn ranges(&self, file: &str) -> Vec<(u64, u64)> {
        self.state
            .ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(f, _, _)| f == file)
            .map(|(_, a, b)| (*a, *b))
            .collect()
    }

    /// Bytes of `file` asked for at least once (the union of the ranges
    /// asked for): what a reader that never reads a byte twice would fetch.
    #[must_use]
    pub fn distinct(&self, file: &str) -> u64 {
        let mut ranges = self.ranges(file);
        ranges.sort_unstable();
        let (mut total, mut end) = (0, 0);
        for (first, last) in ranges {
            let from = first.max(end);
            if last + 1 > from {
                total += last + 1 - from;
            }
            end = end.max(last + 1);
        }
        total
    }

    /// Go down once `bytes` have been sent in all (counting from the start).
    pub fn cut_at(&self, bytes: u64) {
        *self.state.cut_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
    }

    /// Down since a cut.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Answer again.
    pub fn restore(&self) {
        *self.state.cut_at.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.state.down.store(false, Ordering::SeqCst);
    }
}

/// The origin's TLS: a certificate for `10.0.2.2` (the host as the twin
/// sees it), made in `dir` with `openssl` and signed by the CA `ca` (its
/// certificate and key), taking clients whose certificates chain to `client_ca`.
///
/// # Errors
/// `openssl` fails, or its files do not make a TLS configuration.
pub fn server_tls(dir: &Path, ca: (&Path, &Path), client_ca: &Path) -> Result<Arc<ServerConfig>, String> {
    let (cert, key, csr, ext) =
        (dir.join("origin.pem"), dir.join("origin.key"), dir.join("origin.csr"), dir.join("origin.ext"));
    std::fs::write(&ext, "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:10.0.2.2\n")
        .map_err(|e| format!("{}: {e}", ext.display()))?;
    let s = |t: &'static str| std::ffi::OsStr::new(t);
    openssl(&[
        s("req"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:P-256"),
        s("-nodes"),
        s("-subj"),
        s("/CN=10.0.2.2"),
        s("-keyout"),
        key.as_os_str(),
        s("-out"),
        csr.as_os_str(),
    ])?;
    openssl(&[
        s("x509"),
        s("-req"),
        s("-in"),
        csr.as_os_str(),
        s("-CA"),
        ca.0.as_os_str(),
        s("-CAkey"),
        ca.1.as_os_str(),
        s("-CAcreateserial"),
        s("-days"),
        s("2"),
        s("-extfile"),
        ext.as_os_str(),
        s("-out"),
        cert.as_os_str(),
    ])?;
    trellis_api::tls::server_config(client_ca, &cert, &key).map_err(|e| e.to_string())
}

/// `openssl ARGS`; its error output when it fails.
fn openssl(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let o = std::process::Command::new("openssl").args(args).output().map_err(|e| format!("openssl: {e}"))?;
    if o.status.success() { Ok(()) } else { Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr))) }
}

/// A CA of a test's own (ECDSA P-256, two days), made in `dir` with
/// `openssl` as `NAME.pem` and `NAME.key`, for `CN=cn`: its certificate and key.
///
/// # Errors
/// `openssl` fails.
pub fn test_ca(dir: &Path, name: &str, cn: &str) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let subject = format!("/CN={cn}");
    let s = |t: &'static str| std::ffi::OsStr::new(t);
    openssl(&[
        s("req"),
        s("-x509"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:P-256"),
        s("-nodes"),
        s("-days"),
        s("2"),
        s("-subj"),
        std::ffi::OsStr::new(&subject),
        s("-addext"),
        s("basicConstraints=critical,CA:TRUE"),
        s("-addext"),
        s("keyUsage=critical,keyCertSign"),
        s("-keyout"),
        key.as_os_str(),
        s("-out"),
        cert.as_os_str(),
    ])?;
    Ok((cert, key))
}

/// Go down: every open connection is closed.
fn go_down(state: &State) {
    state.down.store(true, Ordering::SeqCst);
    for c in state.open.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
        let _ = c.shutdown(Shutdown::Both);
    }
}

/// One HTTPS connection: the handshake, then its requests (counted in
/// `refused` when it ends before one).
fn serve_tls(mut stream: TcpStream, tls: Arc<ServerConfig>, dir: &Path, state: &State) -> std::io::Result<()> {
    let mut conn = ServerConnection::new(tls).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        // An error, or the client hanging up (it refused the origin's certificate).
        let failed = match conn.complete_io(&mut stream) {
            Ok((0, 0)) => Some(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            state.refused.fetch_add(1, Ordering::SeqCst);
            // Closed now (`open` holds a clone of the socket until the origin
            // goes down), but lingering: what the client sent after its
            // certificate is read first, so the close is no reset that could
            // reach the client before the alert rustls sent.
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            let _ = stream.shutdown(Shutdown::Both);
            return Err(e);
        }
    }
    // A client that refuses the origin's certificate may do so only once the
    // handshake is over (GnuTLS checks it then) and hang up before a request.
    let mut asked = false;
    let served = serve(StreamOwned::new(conn, stream), dir, state, &mut asked);
    if !asked {
        state.refused.fetch_add(1, Ordering::SeqCst);
    }
    served
}

/// The requests of one connection (keep-alive), until the client closes it.
/// `asked`: a request came.
fn serve(stream: impl Read + Write, dir: &Path, state: &State, asked: &mut bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        *asked = true;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let mut spec = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                spec = Some(value.trim().to_owned());
            }
        }
        if state.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let name = target.trim_start_matches('/');
        let path: PathBuf = dir.join(name);
        let file = (!name.is_empty() && !name.contains('/') && !name.contains(".."))
            .then(|| std::fs::File::open(&path).ok())
            .flatten();
        let Some(mut file) = file else {
            reader.get_mut().write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let len = file.metadata()?.len();
        let (status, first, last) = match spec.as_deref().map(|s| trellis_assets::byte_range(s, len)) {
            None => ("200 OK", 0, len.saturating_sub(1)),
            Some(Some((a, b))) => ("206 Partial Content", a, b),
            Some(None) => {
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                );
                reader.get_mut().write_all(head.as_bytes())?;
                continue;
            }
        };
        let count = if len == 0 { 0 } else { last - first + 1 };
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\n");
        if spec.is_some() {
            head.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
        }
        head.push_str("\r\n");
        state.requests.fetch_add(1, Ordering::SeqCst);
        reader.get_mut().write_all(head.as_bytes())?;
        if method.eq_ignore_ascii_case("HEAD") {
            continue;
        }
        if count > 0 {
            state.ranges.lock().unwrap_or_else(PoisonError::into_inner).push((name.to_owned(), first, last));
        }
        file.seek(SeekFrom::Start(first))?;
        let mut left = count;
        let mut buf = vec![0; 64 * 1024];
        while left > 0 {
            // Up to the cut, if one is set; then down, this connection and all others closed.
            let cut = *state.cut_at.lock().unwrap_or_else(PoisonError::into_inner);
            let room = cut.map_or(u64::MAX, |c| c.saturating_sub(state.served.load(Ordering::SeqCst)));
            if room == 0 {
                go_down(state);
                return Ok(());
            }
            let want = usize::try_from(left.min(room).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(());
            }
            // Counted before it is sent: a client that has read the bytes
            // must find them counted.
            state.served.fetch_add(n as u64, Ordering::SeqCst);
            reader.get_mut().write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GET with a range from this very origin, over loopback.
    fn get(port: u16, first: u64, last: u64) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(s, "GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes={first}-{last}\r\n\r\n")?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.1 2") {
            return Err(std::io::Error::other(format!("answered {status:?}")));
        }
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        Ok(body)
    }

    #[test]
    fn over_tls_a_client_without_a_handshake_gets_nothing_and_is_counted() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("f"), b"bundle")?;
        let (ca, key) = test_ca(dir.path(), "ca", "test CA").map_err(std::io::Error::other)?;
        let tls = server_tls(dir.path(), (&ca, &key), &ca).map_err(std::io::Error::other)?;
        let origin = Origin::start_tls(dir.path(), tls)?;
        assert!(origin.url("f").starts_with("https://10.0.2.2:"));
        assert!(get(origin.port, 0, 5).is_err(), "plain HTTP to a TLS origin");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while origin.refused() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!((origin.refused(), origin.served()), (1, 0));
        Ok(())
    }

    #[test]
    fn it_serves_ranges_counts_them_and_goes_down_at_the_cut() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &data)?;
        let origin = Origin::start(dir.path())?;
        assert_eq!(get(origin.port, 1000, 1999)?, data[1000..2000]);
        assert_eq!(origin.served(), 1000);
        origin.cut_at(1500);
        assert!(get(origin.port, 0, 99_999).is_err(), "cut after 500 more bytes");
        assert!(origin.is_down() && origin.served() == 1500);
        assert!(get(origin.port, 0, 9).is_err(), "down");
        origin.restore();
        assert_eq!(get(origin.port, 199_990, 199_999)?, data[199_990..]);
        // Asked for: 1000-1999, 0-99999 (cut), 0-9 (down: not answered), 199990-199999.
        assert_eq!(origin.distinct("f"), 100_000 + 10);
        assert_eq!(get(origin.port, 99_990, 100_009)?, data[99_990..100_010]);
        assert_eq!(origin.distinct("f"), 100_000 + 10 + 10, "only the 10 bytes not asked before count");
        assert_eq!(origin.distinct("g"), 0);
        Ok(())
    }
}
