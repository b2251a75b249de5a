//! A file streamed to a reader on the device (RAUC's streaming mode) from
//! the device's asset sources: `GET` or `HEAD /v1/streams/<ticket>`, with
//! or without `Range`, answered on loopback from a [`Fetcher`]. The blocks a
//! range covers come from the device's store when they are there, else
//! from a peer on the LAN or the origin, each checked against the asset's
//! index (whose hash is the id) before a byte of it is sent: the reader is
//! never given a byte the publisher did not sign, and what it read is on
//! the device when it reads it again (a retried request, an install started
//! again after a reboot).
//!
//! Only the files opened for a reader are served ([`StreamServer::open`]),
//! each under a ticket of 128 random bits for as long as its [`Ticket`]
//! lives: another process on the device can neither guess a URL nor make
//! the device fetch a file nobody installs.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::client::NO_ORIGIN;
use crate::server::Listener;
use crate::wire;
use crate::{AssetError, AssetId, Fetcher};

/// Most bytes read from the store at once while a range is sent.
const CHUNK: u64 = 1 << 20;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Most connections at once: RAUC's streaming side may open several (one
/// transfer per request of the kernel's), and the tickets, not this, keep
/// others out.
const MAX_CONNECTIONS: usize = 64;

/// The files open for readers, by ticket.
type Open = Arc<Mutex<HashMap<String, AssetId>>>;

/// A running stream server: loopback only, as what it serves is fetched on
/// the device's behalf.
#[derive(Debug)]
pub struct StreamServer {
    fetcher: Arc<Fetcher>,
    open: Open,
    listener: Listener,
}

/// A file open for a reader: its URL answers until this is dropped.
#[derive(Debug)]
pub struct Ticket {
    url: String,
    ticket: String,
    open: Open,
}

impl Ticket {
    /// Where the reader reads the file.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.ticket);
    }
}

impl StreamServer {
    /// Serve the assets `fetcher` can read, once opened, on `addr` (port 0:
    /// any free port).
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
        let open = Open::default();
        let (serving, tickets) = (fetcher.clone(), open.clone());
        let listener = Listener::start(addr, "asset-stream", MAX_CONNECTIONS, None, move |stream| {
            serve(&serving, &tickets, stream)
        })?;
        Ok(Self { fetcher, open, listener })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// Serve asset `id` to a reader until the ticket is dropped.
    ///
    /// # Errors
    /// No random ticket could be drawn (`/dev/urandom`).
    pub fn open(&self, id: &AssetId) -> std::io::Result<Ticket> {
        let mut random = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let ticket = hex::encode(random);
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(ticket.clone(), *id);
        let url = format!("http://{}/v1/streams/{ticket}", self.addr());
        Ok(Ticket { url, ticket, open: self.open.clone() })
    }

    /// Remove every file's blocks from the device; a read still running
    /// finishes first. Logged (as are the others below), as nothing
    /// depends on it but the space and what the peers can read here.
    pub fn clear(&self) {
        logged(self.fetcher.retain(&std::collections::HashSet::new()));
    }

    /// The install that read `id` wrote it into a slot. When this device
    /// shares its blocks with its peers (the fetcher's
    /// [`Fetcher::shared_on`]), what it fetched of `id` stays on the device
    /// and is served to them from now on (not before: a file no slot holds
    /// is not offered), so the site's next devices to install it read those
    /// blocks on the LAN, and every other file's blocks go; without sharing
    /// they all go.
    pub fn installed(&self, id: &AssetId) {
        if self.fetcher.shared_on().is_none() {
            return self.clear();
        }
        logged(self.fetcher.retain(&std::iter::once(*id).collect()));
        match self.fetcher.share_asset(*id) {
            Ok(true) => {
                tracing::info!(asset = %id, "the streamed blocks of the installed firmware are served to the peers")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// This device rolled `id` back (`why`): its blocks go, and peers that
    /// ask for them are told why.
    pub fn rolled_back(&self, id: &AssetId, why: &str) {
        logged(self.fetcher.withdraw(*id, why).map(Vec::from_iter));
    }
}

fn logged(removed: Result<Vec<crate::Removed>, AssetError>) {
    match removed {
        Ok(removed) => {
            for r in removed {
                tracing::info!(asset = %r.id, kib = r.bytes / 1024, "streamed blocks removed");
            }
        }
        Err(e) => tracing::warn!("{e}"),
    }
}

/// The status for a file whose first bytes could not be had: `404` when no
/// source holds it (the origin said so; or there is no origin and no peer
/// configured), which a reader should not ask again for; else `502` (a
/// source could not be reached, sent what the index does not vouch for, or
/// peers that may fetch it later do not hold it yet).
fn status_of(fetcher: &Fetcher, e: &AssetError) -> u16 {
    match e {
        AssetError::Fetch { reason, .. } if reason.starts_with("404") => 404,
        AssetError::Fetch { reason, .. } if reason.starts_with(NO_ORIGIN) && fetcher.peers().peers().is_empty() => 404,
        _ => 502,
    }
}

/// The requests of one connection, until the reader closes it. The first
/// chunk of an answer is read before its head is sent, so a file that
/// cannot be had is an error naming why ([`status_of`]); a later block that
/// cannot be had ends the connection part way (the reader sees a short
/// answer and asks again).
fn serve(fetcher: &Fetcher, open: &Open, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    while let Some(req) = wire::read_request(&mut reader)? {
        let ticket = req.path.strip_prefix("/v1/streams/");
        let Some(id) = ticket.and_then(|t| open.lock().unwrap_or_else(PoisonError::into_inner).get(t).copied()) else {
            wire::write_response(&mut writer, &req, 404, b"no such stream (it is not open)")?;
            continue;
        };
        let failed = |e: AssetError| {
            tracing::warn!("streaming: {e}");
            (status_of(fetcher, &e), e.to_string())
        };
        let size = match fetcher.size(id) {
            Ok(size) => size,
            Err(e) => {
                let (status, why) = failed(e);
                wire::write_response(&mut writer, &req, status, why.as_bytes())?;
                continue;
            }
        };
        let wanted = wire::wanted(&req, size);
        let first = match wanted {
            Ok(range) if !req.is_head() => {
                let (at, last) = range.unwrap_or((0, size.saturating_sub(1)));
                let len = if size == 0 { 0 } else { (last - at + 1).min(CHUNK) };
                match fetcher.read(id, at, len) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let (status, why) = failed(e);
                        wire::write_response(&mut writer, &req, status, why.as_bytes())?;
                        continue;
                    }
                }
            }
            _ => Vec::new(),
        };
        let Some((at, last)) = wire::write_data_head(&mut writer, wanted, size)? else { continue };
        if req.is_head() {
            writer.flush()?;
            continue;
        }
        writer.write_all(&first)?;
        let mut at = at + first.len() as u64;
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
