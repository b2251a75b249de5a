//! A file streamed to a reader on the device (RAUC's streaming mode) from
//! the device's asset sources: `GET` or `HEAD /v1/assets/<id>/data`, with or
//! without `Range`, answered on loopback from a [`Fetcher`]. The blocks a
//! range covers come from the device's store when they are there, else
//! from a peer on the LAN or the origin, each checked against the asset's
//! index (whose hash is the id) before a byte of it is sent: the reader is
//! never given a byte the publisher did not sign, and what it read is on
//! the device when it reads it again (a retried request, an install started
//! again after a reboot).

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::client::NO_ORIGIN;
use crate::server::Listener;
use crate::wire;
use crate::{AssetError, AssetId, Fetcher};

/// Most bytes read from the store at once while a range is sent.
const CHUNK: u64 = 1 << 20;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// A running stream server: loopback only, as what it serves is fetched on
/// the device's behalf.
#[derive(Debug)]
pub struct StreamServer {
    fetcher: Arc<Fetcher>,
    listener: Listener,
}

impl StreamServer {
    /// Serve the assets `fetcher` can read on `addr` (port 0: any free port).
    ///
    /// # Errors
    /// The address cannot be bound, or it is not a loopback address.
    pub fn start(fetcher: Arc<Fetcher>, addr: SocketAddr) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{addr}: the stream server listens on loopback only"),
            ));
        }
        let serving = fetcher.clone();
        let listener = Listener::start(addr, "asset-stream", move |stream| serve(&serving, stream))?;
        Ok(Self { fetcher, listener })
    }

    /// Remove every file's blocks from the device (the install that read
    /// them is over); a read still running finishes first. Logged, as
    /// nothing depends on it but the space.
    pub fn clear(&self) {
        match self.fetcher.retain(&std::collections::HashSet::new()) {
            Ok(removed) => {
                for r in removed {
                    tracing::info!(asset = %r.id, kib = r.bytes / 1024, "streamed blocks removed");
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The URL of asset `id`'s bytes.
    #[must_use]
    pub fn url(&self, id: &AssetId) -> String {
        url(self.addr(), id)
    }
}

/// The URL of asset `id`'s bytes on a stream server at `addr`.
#[must_use]
pub fn url(addr: SocketAddr, id: &AssetId) -> String {
    format!("http://{addr}/v1/assets/{id}/data")
}

/// The status for an asset whose index could not be had: `404` when no
/// source holds it (the origin said so, or there is none and no peer has
/// it), which a reader should not ask again for; else `502` (a source
/// could not be reached, or sent an index that is not the asset's).
fn status_of(e: &AssetError) -> u16 {
    match e {
        AssetError::Fetch { reason, .. } if reason.starts_with("404") || reason.starts_with(NO_ORIGIN) => 404,
        _ => 502,
    }
}

/// The requests of one connection, until the reader closes it. A range
/// whose blocks cannot be had ends the connection part way (the reader
/// sees a short answer and asks again); an asset whose index cannot be had
/// is an error naming why ([`status_of`]).
fn serve(fetcher: &Fetcher, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    while let Some(req) = wire::read_request(&mut reader)? {
        let id = req.path.strip_prefix("/v1/assets/").and_then(|p| p.strip_suffix("/data"));
        let Some(id) = id.and_then(|id| id.parse::<AssetId>().ok()) else {
            wire::write_response(&mut writer, &req, 404, format!("no such path {}", req.path).as_bytes())?;
            continue;
        };
        let size = match fetcher.size(id) {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!("streaming: {e}");
                wire::write_response(&mut writer, &req, status_of(&e), e.to_string().as_bytes())?;
                continue;
            }
        };
        let Some((first, last)) = wire::write_data_head(&mut writer, wire::wanted(&req, size), size)? else {
            continue;
        };
        if req.is_head() {
            writer.flush()?;
            continue;
        }
        let mut at = first;
        while at <= last {
            let len = (last - at + 1).min(CHUNK);
            let bytes = fetcher.read(id, at, len).map_err(|e| {
                tracing::warn!("streaming: {e}");
                std::io::Error::other(e)
            })?;
            writer.write_all(&bytes)?;
            at += len;
        }
        writer.flush()?;
    }
    Ok(())
}
