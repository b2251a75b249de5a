//! `wasi:http/outgoing-handler`: an app's HTTP requests, to the hosts its
//! manifest lists (`permissions.http`) and nowhere else, each bounded by
//! `limits.request-ms` and sent from a socket carrying the app's traffic mark
//! (the rate limit of `limits.net-kbit`, see `crate::shaping`).
//!
//! The request itself runs on wasmtime-wasi's executor; the app's thread only
//! waits on it when the app blocks on the response, so a slow host holds up
//! the app that asked, never another one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use trellis_appfmt::HostPattern;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::Services;
use crate::events::RuntimeEvent;

/// What a request's future resolves to (the shape `WasiHttpHooks::send_request` returns).
type Sent =
    wasmtime_wasi_http::Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>)>;

/// One app's outgoing-request policy.
pub(crate) struct HttpHooks {
    app: String,
    allow: Vec<HostPattern>,
    /// `SO_MARK` for the app's sockets (its class in the traffic shaper).
    mark: Option<u32>,
    limit: Duration,
    services: Arc<Services>,
}

impl HttpHooks {
    pub fn new(app: &str, manifest: &trellis_appfmt::Manifest, mark: Option<u32>, services: Arc<Services>) -> Self {
        Self {
            app: app.to_owned(),
            allow: manifest.permissions.http.iter().filter_map(|h| HostPattern::parse(h)).collect(),
            mark,
            limit: Duration::from_millis(u64::from(manifest.limits.request_ms)),
            services,
        }
    }

    /// Why a request to `uri` is refused, or `None` when the manifest allows it.
    fn refusal(&self, uri: &http::Uri) -> Option<String> {
        let Some(host) = uri.host() else { return Some("a request without a host".to_owned()) };
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 });
        if self.allow.iter().any(|p| p.allows(host, port)) {
            return None;
        }
        Some(format!("host {host}:{port} is not in permissions.http"))
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        if let Some(reason) = self.refusal(request.uri()) {
            tracing::warn!(app = %self.app, "denied: {reason}");
            self.services.events.emit(RuntimeEvent::Denied { app: self.app.clone(), reason: reason.clone() });
            // wasi:http's `http-request-denied` carries no text: the reason
            // goes in `internal-error`'s, so the app can say which host it was.
            return Box::new(
                async move { Err(HttpError::InternalError(Some(format!("http-request-denied: {reason}")))) },
            );
        }
        let deadline = Instant::now() + self.limit;
        let mark = self.mark;
        // The app may ask for shorter timeouts, never for longer than its limit.
        let connect = options.and_then(|o| o.connect_timeout).map_or(self.limit, |t| t.min(self.limit));
        let first_byte = options.and_then(|o| o.first_byte_timeout).map_or(self.limit, |t| t.min(self.limit));
        Box::new(async move {
            let (response, conn) = send(request, mark, deadline, connect, first_byte).await?;
            Ok((response, Box::new(conn) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// Connect to `authority` (`host:port`) from a socket marked `mark`.
async fn connect(authority: &str, mark: Option<u32>) -> Result<tokio::net::TcpStream, HttpError> {
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await.map_err(|_| HttpError::DestinationNotFound)? {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .map_err(HttpError::Connect)?;
        if let Some(mark) = mark {
            socket.set_mark(mark).map_err(|e| {
                HttpError::InternalError(Some(format!("cannot mark the socket for the rate limit (SO_MARK): {e}")))
            })?;
        }
        socket.set_nonblocking(true).map_err(HttpError::Connect)?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        match socket.connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(HttpError::DestinationNotFound, |e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => HttpError::ConnectionRefused,
        _ => HttpError::Connect(e),
    }))
}

/// The roots HTTPS servers are checked against (Mozilla's, built in).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

async fn within<T>(until: Instant, limit: Duration, f: impl Future<Output = T>) -> Result<T, ()> {
    tokio::time::timeout_at(until.min(Instant::now() + limit), f).await.map_err(|_| ())
}

/// Send `request` over a new HTTP/1.1 connection; the response body fails
/// with a timeout once `deadline` passes.
async fn send(
    mut request: http::Request<WasiBody>,
    mark: Option<u32>,
    deadline: Instant,
    connect_limit: Duration,
    first_byte: Duration,
) -> Result<(http::Response<WasiBody>, impl Future<Output = Result<(), HttpError>> + Send), HttpError> {
    let uri = request.uri().clone();
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = format!("{host}:{port}");
    let tcp = within(deadline, connect_limit, connect(&authority, mark))
        .await
        .map_err(|()| HttpError::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if tls {
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
                .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = within(deadline, connect_limit, tls_connector().connect(name, tcp))
            .await
            .map_err(|()| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) =
        within(deadline, connect_limit, hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)))
            .await
            .map_err(|()| HttpError::ConnectionTimeout)??;
    // On the wire the request line carries only the path (no proxy).
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let mut conn = Some(Box::pin(conn));
    let mut sending = Box::pin(sender.send_request(request));
    // Drive the connection while waiting for the response head.
    let response = within(deadline, first_byte, async {
        loop {
            let Some(c) = conn.as_mut() else { return sending.as_mut().await.map_err(HttpError::from) };
            tokio::select! {
                r = sending.as_mut() => return r.map_err(HttpError::from),
                r = c => {
                    conn = None;
                    r.map_err(HttpError::from)?;
                }
            }
        }
    })
    .await
    .map_err(|()| HttpError::ConnectionReadTimeout)??;
    let response = response.map(|incoming| Deadlined::new(incoming.map_err(HttpError::from), deadline).boxed_unsync());
    Ok((response, async move {
        match conn {
            Some(c) => c.await.map_err(HttpError::from),
            None => Ok(()),
        }
    }))
}

/// A response body that fails once the request's deadline passes.
struct Deadlined<B> {
    body: B,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadlined<B> {
    fn new(body: B, deadline: Instant) -> Self {
        Self { body, sleep: Box::pin(tokio::time::sleep_until(deadline)) }
    }
}

impl<B> http_body::Body for Deadlined<B>
where
    B: http_body::Body<Data = Bytes, Error = HttpError> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::HttpResponseTimeout))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
