//! Reading an object of an object store (the artifacts) without a consumer.
//!
//! The client library reads an object through an ordered push consumer,
//! which a device would need the right to create, and a push consumer
//! delivers wherever its maker says: to a subject another client listens on,
//! and for as long as the server keeps it. So a device reads an object with
//! requests alone:
//!
//! - its metadata from the stream's leader (a replica may not yet hold an
//!   object just stored, and the leader's answer that it holds none is what
//!   refuses a release);
//! - its chunks by direct get, which any replica answers, so reads spread
//!   over a cluster and go on while it has lost a server. An object stored in
//!   one go lies at consecutive sequences, so the reader asks for the next
//!   few sequences at once (a window that grows while answers come back
//!   quickly and shrinks when they are slow, [`Window`]); where one holds
//!   another subject's message or nothing, it asks for the next message of
//!   the object's chunk subject from there, and guesses on from what that
//!   returns.
//!
//! A device's permissions allow exactly these requests on the artifacts'
//! stream ([`crate::server::device_permissions`]).

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::object_store::ObjectInfo;
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use base64::Engine as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;

use crate::FleetError;
use crate::link::Link;

/// How many chunks are asked for ahead of the one being read. One request
/// at a time would cost a round trip per 128 KiB chunk (2.6 MiB/s at a
/// 50 ms round trip), so the window grows by one each time a chunk comes
/// back within a quarter of [`Window::SLOW`], up to [`Window::MAX`] (2 MiB in
/// flight: 40 MiB/s at 50 ms); and halves when one takes longer than
/// `SLOW`, so that on a slow link the answers in flight stay within a
/// request's timeout (10 s; a request that times out fails the read, and
/// the agent starts the download again). The time is from asking to the
/// reader taking the answer, so a caller slow between chunks (a slow disk)
/// keeps the window small too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(usize);

impl Window {
    /// The window a read starts with.
    pub const FIRST: usize = 2;
    /// The largest window.
    pub const MAX: usize = 16;
    /// A chunk slower than this (from its request to its answer) halves the window.
    pub const SLOW: Duration = Duration::from_secs(2);

    /// The number of chunks it allows ahead.
    #[must_use]
    pub fn get(self) -> usize {
        self.0
    }

    /// The window after a chunk that took `latency` from its request to its answer.
    #[must_use]
    pub fn after(self, latency: Duration) -> Self {
        if latency > Self::SLOW {
            Self((self.0 / 2).max(1))
        } else if latency < Self::SLOW / 4 {
            Self((self.0 + 1).min(Self::MAX))
        } else {
            self
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        Self(Self::FIRST)
    }
}

/// Why an object cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The store says it does not hold the object (or holds it deleted, or
    /// as a link to another, which a device does not follow).
    #[error("{object}: {reason}")]
    Missing {
        /// The object.
        object: String,
        /// What the store holds instead.
        reason: String,
    },
    /// The store's copy is not whole or not well formed (metadata that
    /// does not parse, chunks the stream's leader does not hold, chunks that
    /// do not add up to the size): the same each time it is read.
    #[error("{object}: {reason}")]
    Corrupt {
        /// The object.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server, the store or the connection: worth trying again later.
    #[error(transparent)]
    Link(#[from] FleetError),
}

/// The subject an object's metadata is stored under in store `store`.
#[must_use]
pub fn meta_subject(store: &str, object: &str) -> String {
    format!("$O.{store}.M.{}", base64::engine::general_purpose::URL_SAFE.encode(object))
}

/// The subject the chunks of one stored version (`nuid`) of an object are
/// stored under.
#[must_use]
pub fn chunk_subject(store: &str, nuid: &str) -> String {
    format!("$O.{store}.C.{nuid}")
}

/// A direct get of one sequence: the sequence, how long it took, the answer.
type Guess = BoxFuture<'static, (u64, Duration, Result<StreamMessage, DirectGetError>)>;

/// An object being read, chunk by chunk.
pub struct Reader {
    stream: Stream<()>,
    object: String,
    info: ObjectInfo,
    subject: String,
    /// Chunks and bytes read so far.
    chunks: usize,
    bytes: u64,
    /// The sequence after the last chunk read (0: none read yet).
    next: u64,
    /// Direct gets of the sequences from `next` on, answered in order.
    ahead: FuturesOrdered<Guess>,
    /// The sequence the next direct get asks for.
    queued: u64,
    window: Window,
    /// A read failed: the reader is left where it was, and reads no further.
    failed: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("object", &self.object)
            .field("subject", &self.subject)
            .field("chunks", &(self.chunks, self.info.chunks))
            .field("bytes", &(self.bytes, self.info.size))
            .field("next", &self.next)
            .field("ahead", &self.ahead.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Open `object` of store `store`: read its metadata.
    ///
    /// # Errors
    /// [`ObjectError::Missing`] when the store's leader says it holds no
    /// such object (or holds it deleted, or as a link);
    /// [`ObjectError::Link`] for anything else (the stream away, no
    /// leader, the connection).
    pub async fn open(link: &Link, store: &str, object: &str) -> Result<Self, ObjectError> {
        let what = || format!("fetching {object}");
        let stream = link
            .js
            .get_stream_no_info(crate::names::object_stream(store))
            .await
            .map_err(|e| FleetError::nats(what(), e))?;
        let meta = match stream.get_last_raw_message_by_subject(&meta_subject(store, object)).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Err(ObjectError::Missing { object: object.into(), reason: format!("not found in {store}") });
            }
            Err(e) => return Err(FleetError::nats(what(), e).into()),
        };
        let corrupt = |reason: String| ObjectError::Corrupt { object: object.into(), reason };
        let info: ObjectInfo = serde_json::from_slice(&meta.payload)
            .map_err(|e| corrupt(format!("its metadata in {store} does not parse: {e}")))?;
        if info.chunks > 0 && (info.nuid.is_empty() || !info.nuid.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return Err(corrupt(format!("its metadata in {store} names no valid chunk subject ({:?})", info.nuid)));
        }
        let missing = |reason: String| ObjectError::Missing { object: object.into(), reason };
        if info.deleted {
            return Err(missing(format!("deleted from {store}")));
        }
        if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
            return Err(missing(format!("a link to another object in {store}, which is not followed")));
        }
        let subject = chunk_subject(store, &info.nuid);
        Ok(Self {
            stream,
            object: object.into(),
            info,
            subject,
            chunks: 0,
            bytes: 0,
            next: 0,
            ahead: FuturesOrdered::new(),
            queued: 0,
            window: Window::default(),
            failed: false,
        })
    }

    /// The object's size, as its metadata says.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.info.size as u64
    }

    /// The next chunk; none after the last.
    ///
    /// # Errors
    /// [`ObjectError::Corrupt`]: a chunk the stream's leader does not hold,
    /// or chunks that do not add up to the size the metadata says;
    /// [`ObjectError::Link`]: a request failed, or a chunk is not yet on the
    /// replica that answered. After an error the reader reads no further.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ObjectError> {
        if self.failed {
            return Err(self.fault("an earlier read of it failed"));
        }
        let read = self.read().await;
        self.failed = read.is_err();
        read
    }

    async fn read(&mut self) -> Result<Option<Bytes>, ObjectError> {
        let says = self.size();
        if self.chunks == self.info.chunks {
            if self.bytes != says {
                return Err(
                    self.corrupt(format!("{} bytes in its chunks, not the {says} its metadata says", self.bytes))
                );
            }
            return Ok(None);
        }
        let message = if self.next == 0 {
            self.find(1).await?
        } else {
            self.guess();
            let Some((seq, latency, got)) = self.ahead.next().await else {
                return Err(self.fault("no chunk asked for"));
            };
            let miss = match &got {
                Ok(m) => m.subject.as_str() != self.subject,
                Err(e) => e.kind() == DirectGetErrorKind::NotFound,
            };
            if miss {
                // Another object's message there, or none (deleted, or not
                // yet on the replica that answered): look on from it, with
                // the window back where it starts (what it had asked for
                // beyond may be another object's too).
                self.ahead = FuturesOrdered::new();
                self.window = Window::default();
                self.find(seq).await?
            } else {
                self.window = self.window.after(latency);
                got.map_err(|e| self.fault(e))?
            }
        };
        self.next = message.sequence + 1;
        self.chunks += 1;
        self.bytes += message.payload.len() as u64;
        if self.bytes > says {
            return Err(self.corrupt(format!("more than the {says} bytes its metadata says")));
        }
        Ok(Some(message.payload))
    }

    /// Keep the window's direct gets under way, none past the object's last chunk.
    fn guess(&mut self) {
        self.queued = self.queued.max(self.next);
        let left = self.info.chunks - self.chunks;
        while self.ahead.len() < self.window.get().min(left) {
            let (seq, stream) = (self.queued, self.stream.clone());
            self.ahead.push_back(Box::pin(async move {
                let asked = Instant::now();
                let got = stream.direct_get(seq).await;
                (seq, asked.elapsed(), got)
            }));
            self.queued += 1;
        }
    }

    /// The object's first chunk at or after sequence `from`; the guesses go
    /// on from it.
    async fn find(&mut self, from: u64) -> Result<StreamMessage, ObjectError> {
        let message = match self.stream.direct_get_next_for_subject(&self.subject, Some(from)).await {
            Ok(m) => StreamMessage::try_from(m.message).map_err(|e| self.fault(e))?,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                // Not on the replica that answered: the leader says whether
                // the store holds it at all.
                let (n, of) = (self.chunks + 1, self.info.chunks);
                return Err(match self.stream.get_last_raw_message_by_subject(&self.subject).await {
                    Ok(last) if last.sequence >= from => {
                        self.fault(format!("chunk {n} of {of} not yet on the server that answered"))
                    }
                    Ok(_) => self.corrupt(format!("chunk {n} of {of} is not in the store")),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        self.corrupt(format!("chunk {n} of {of} is not in the store"))
                    }
                    Err(e) => self.fault(e),
                });
            }
            Err(e) => return Err(self.fault(e)),
        };
        if message.subject.as_str() != self.subject || message.sequence < from {
            let got = format!("{} at sequence {}", message.subject, message.sequence);
            return Err(self.fault(format!("asked for {} from sequence {from}, got {got}", self.subject)));
        }
        self.queued = message.sequence + 1;
        Ok(message)
    }

    /// A failure worth trying again, naming the object.
    fn fault(&self, reason: impl std::fmt::Display) -> ObjectError {
        FleetError::nats(format!("fetching {}", self.object), reason).into()
    }

    fn corrupt(&self, reason: String) -> ObjectError {
        ObjectError::Corrupt { object: self.object.clone(), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;
    use std::time::Duration;

    #[test]
    fn the_window_grows_while_chunks_come_quickly_and_halves_when_one_is_slow() {
        let quick = Duration::from_millis(50);
        let mut w = Window::default();
        assert_eq!(w.get(), Window::FIRST);
        for _ in 0..100 {
            w = w.after(quick);
        }
        assert_eq!(w.get(), Window::MAX, "it grows to its largest and no further");
        assert_eq!(w.after(Window::SLOW / 2), w, "neither quick nor slow: unchanged");
        w = w.after(Window::SLOW + quick);
        assert_eq!(w.get(), Window::MAX / 2);
        for _ in 0..10 {
            w = w.after(Window::SLOW * 3);
        }
        assert_eq!(w.get(), 1, "never below one chunk");
    }
}
