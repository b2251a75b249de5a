//! The connection to the fleet's NATS servers: mutual TLS with a device's or
//! an operator's certificate, and the buckets the fleet uses.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};

use crate::error::FleetError;
use crate::names;

/// Who connects, to where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Credentials {
    /// Server URLs (`tls://host:4222`); the client fails over between them.
    pub servers: Vec<String>,
    /// The CA that signed the servers' certificates.
    pub ca: PathBuf,
    /// This client's certificate (its common name is its NATS user).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A connection and its JetStream context.
#[derive(Debug, Clone)]
pub struct Link {
    /// The client.
    pub nats: async_nats::Client,
    /// JetStream over it.
    pub js: jetstream::Context,
    /// Buckets opened so far (opening one asks the server for its stream).
    buckets: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, kv::Store>>>,
    /// How many times the client has connected ([`Link::connections`]).
    connections: tokio::sync::watch::Receiver<u64>,
}

/// The header a key-value bucket's message says its operation in (`PUT`,
/// `DEL`, `PURGE`; none is a put).
const KV_OPERATION: &str = "KV-Operation";

/// Whether a key-value bucket's message deletes its key (or purges it).
fn deletion(headers: &async_nats::HeaderMap) -> bool {
    headers.get(KV_OPERATION).is_some_and(|op| op.as_str() != "PUT")
}

/// The subject a key would make must be one literal key: the calls that do
/// not open the bucket check it as the client library's would.
fn check_key(bucket: &str, key: &str) -> Result<(), FleetError> {
    if names::valid_key(key) {
        Ok(())
    } else {
        Err(FleetError::value(format!("{bucket}/{key:?}"), "a key is letters, digits and -/_=. (no wildcard)"))
    }
}

/// A key's value as a bucket's leader holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// Its revision (for compare-and-set).
    pub revision: u64,
    /// When the server stored it (Unix ms).
    pub stored_ms: u64,
}

/// A key as one replica holds it ([`Link::entry`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its value; none when deleted or never written.
    pub value: Option<Vec<u8>>,
    /// The revision of its last write or deletion; 0 when the replica holds
    /// none.
    pub revision: u64,
    /// For a deletion made by [`Link::delete_after`]: the write it follows.
    pub after: Option<After>,
}

/// A write a deletion follows ([`names::AFTER`]): whoever reads the deletion
/// must see key `key` at `revision` or later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// The key written.
    pub key: String,
    /// Its revision.
    pub revision: u64,
}

impl After {
    fn header(&self) -> String {
        format!("{} {}", self.key, self.revision)
    }

    fn parse(header: &str) -> Option<Self> {
        let (key, revision) = header.split_once(' ')?;
        Some(Self { key: key.to_owned(), revision: revision.parse().ok()? })
    }
}

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Link {
    /// Connect as the owner of `creds`. A device (`inbox` = its id) gets its
    /// replies on its own inbox prefix, the only one its permissions allow.
    /// With `wait_for_server` the call returns at once and the client keeps
    /// trying in the background (a device that boots offline); otherwise a
    /// server that cannot be reached is an error (an operator's command).
    ///
    /// # Errors
    /// The certificate files cannot be read, or (without `wait_for_server`)
    /// no server answers.
    pub async fn connect(creds: &Credentials, inbox: Option<&str>, wait_for_server: bool) -> Result<Self, FleetError> {
        for path in [&creds.ca, &creds.cert, &creds.key] {
            std::fs::metadata(path).map_err(|e| FleetError::io(path, e))?;
        }
        let servers = creds.servers.join(", ");
        let (connected, connections) = tokio::sync::watch::channel(0u64);
        let connected = std::sync::Arc::new(connected);
        let urls = creds
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FleetError::Connect { servers: servers.clone(), reason: e.to_string() })?;
        let mut options = async_nats::ConnectOptions::new()
            .add_root_certificates(creds.ca.clone())
            .add_client_certificate(creds.cert.clone(), creds.key.clone())
            .require_tls(true)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((250 * attempts as u64).min(5_000)))
            .event_callback(move |event| {
                let connected = std::sync::Arc::clone(&connected);
                async move {
                    match event {
                        async_nats::Event::ServerError(e) => tracing::warn!("fleet server: {e}"),
                        async_nats::Event::Disconnected => tracing::info!("fleet link down"),
                        async_nats::Event::Connected => {
                            tracing::info!("fleet link up");
                            connected.send_modify(|n| *n += 1);
                        }
                        other => tracing::debug!("fleet link: {other}"),
                    }
                }
            });
        if let Some(id) = inbox {
            options = options.custom_inbox_prefix(names::inbox(id));
        }
        if wait_for_server {
            options = options.retry_on_initial_connect();
        }
        let nats = options.connect(urls).await.map_err(|e| FleetError::Connect { servers, reason: e.to_string() })?;
        let js = jetstream::new(nats.clone());
        Ok(Self { nats, js, buckets: std::sync::Arc::default(), connections })
    }

    /// Changes each time the client connects again (after a lost link or a
    /// server's restart): what was published meanwhile was not heard.
    #[must_use]
    pub fn connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.connections.clone()
    }

    /// The key-value bucket `bucket`.
    ///
    /// # Errors
    /// It does not exist or cannot be reached.
    pub async fn kv(&self, bucket: &str) -> Result<kv::Store, FleetError> {
        let cached = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(bucket).cloned();
        if let Some(store) = cached {
            return Ok(store);
        }
        let store =
            self.js.get_key_value(bucket).await.map_err(|e| FleetError::nats(format!("opening bucket {bucket}"), e))?;
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// The artifact store.
    ///
    /// # Errors
    /// It does not exist or cannot be reached.
    pub async fn artifacts(&self) -> Result<object_store::ObjectStore, FleetError> {
        self.js
            .get_object_store(names::ARTIFACTS)
            .await
            .map_err(|e| FleetError::nats(format!("opening object store {}", names::ARTIFACTS), e))
    }

    /// The value of `key` in `bucket` (none when absent or deleted), as a
    /// replica on the server this client is connected to has it: a direct
    /// get ([`Link::entry`]), which a device's permissions are written for
    /// and which spreads reads over the cluster. A replica may lag the
    /// bucket's leader, so this can miss a write made a moment before; an
    /// operator's read-after-write uses [`Link::get_latest`].
    ///
    /// # Errors
    /// The server cannot be asked.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        Ok(self.entry(bucket, key).await?.value)
    }

    /// The value of `key` in `bucket` as the bucket's stream leader holds it;
    /// none when absent or deleted.
    /// Unlike [`Link::get`] it sees every write acknowledged before it asks,
    /// whichever server took the write (a deploy right after a publish). It
    /// costs the leader a request: an operator's and the controller's read,
    /// which a device's permissions do not allow.
    ///
    /// # Errors
    /// The server cannot be asked.
    pub async fn get_latest(&self, bucket: &str, key: &str) -> Result<Option<Stored>, FleetError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        check_key(bucket, key)?;
        let store = self.kv(bucket).await?;
        let subject = format!("{}{key}", store.prefix);
        match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => {
                let deleted = deletion(&m.headers);
                let stored_ms = u64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                Ok((!deleted).then(|| Stored { value: m.payload.to_vec(), revision: m.sequence, stored_ms }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(FleetError::nats(format!("reading {bucket}/{key}"), e)),
        }
    }

    /// Key `key` of `bucket` as the replica on this client's server holds it
    /// (a direct get, like [`Link::get`]), with its revision: what a device
    /// needs to tell a replica that lags from one that does not
    /// ([`crate::agent`]).
    ///
    /// # Errors
    /// The server cannot be asked.
    pub async fn entry(&self, bucket: &str, key: &str) -> Result<Entry, FleetError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self.stream(bucket).await?;
        check_key(bucket, key)?;
        match stream.direct_get_last_for_subject(names::kv_subject(bucket, key)).await {
            Ok(m) => {
                let deleted = deletion(&m.headers);
                let after = m.headers.get(names::AFTER).and_then(|v| After::parse(v.as_str()));
                Ok(Entry { value: (!deleted).then(|| m.payload.to_vec()), revision: m.sequence, after })
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(Entry::default()),
            Err(e) => Err(FleetError::nats(format!("reading {bucket}/{key}"), e)),
        }
    }

    /// Delete `key` from `bucket`, saying in the deletion that whoever reads
    /// it must also see the write `after` ([`names::AFTER`]): the group's
    /// desired state a device falls back to when its own key goes.
    ///
    /// # Errors
    /// The server refused or cannot be reached.
    pub async fn delete_after(&self, bucket: &str, key: &str, after: Option<&After>) -> Result<(), FleetError> {
        check_key(bucket, key)?;
        let store = self.kv(bucket).await?;
        let subject = format!("{}{key}", store.put_prefix.as_ref().unwrap_or(&store.prefix));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        if let Some(after) = after {
            headers.insert(names::AFTER, after.header().as_str());
        }
        let what = || format!("deleting {bucket}/{key}");
        let ack = self
            .js
            .publish_with_headers(subject, headers, Default::default())
            .await
            .map_err(|e| FleetError::nats(what(), e))?;
        ack.await.map_err(|e| FleetError::nats(what(), e))?;
        Ok(())
    }

    /// Set `key` in `bucket` (a put the bucket's stream acknowledges), and
    /// return its revision. Like [`Link::entry`] it does not open the bucket.
    ///
    /// # Errors
    /// The server refused or cannot be reached.
    pub async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64, FleetError> {
        check_key(bucket, key)?;
        let what = || format!("writing {bucket}/{key}");
        let ack = self
            .js
            .publish(names::kv_subject(bucket, key), value.into())
            .await
            .map_err(|e| FleetError::nats(what(), e))?;
        Ok(ack.await.map_err(|e| FleetError::nats(what(), e))?.sequence)
    }

    /// The stream that holds `bucket`, named rather than asked for: asking
    /// (`STREAM.INFO`, which is what opening a bucket does) can list every
    /// key in it, so a device's permissions do not allow it on the buckets
    /// keyed by device ([`crate::server::device_permissions`]). A direct
    /// get, a consumer and a put need only the name.
    ///
    /// # Errors
    /// `bucket` is not a valid name.
    pub async fn stream(&self, bucket: &str) -> Result<jetstream::stream::Stream<()>, FleetError> {
        self.js
            .get_stream_no_info(names::kv_stream(bucket))
            .await
            .map_err(|e| FleetError::nats(format!("bucket {bucket}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::After;

    #[test]
    fn the_write_a_deletion_follows_reads_back_as_written() {
        let after = After { key: "group.north".into(), revision: 42 };
        assert_eq!(After::parse(&after.header()), Some(after));
        for bad in ["", "group.north", "group.north x", "42"] {
            assert_eq!(After::parse(bad), None, "{bad:?}");
        }
    }
}
