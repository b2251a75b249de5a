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
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::ServerError(e) => tracing::warn!("fleet server: {e}"),
                    async_nats::Event::Disconnected => tracing::info!("fleet link down"),
                    async_nats::Event::Connected => tracing::info!("fleet link up"),
                    other => tracing::debug!("fleet link: {other}"),
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
        Ok(Self { nats, js, buckets: std::sync::Arc::default() })
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

    /// The value of `key` in `bucket` (none when absent or deleted).
    ///
    /// # Errors
    /// The server cannot be asked.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        let store = self.kv(bucket).await?;
        store
            .get(key)
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| FleetError::nats(format!("reading {bucket}/{key}"), e))
    }

    /// Set `key` in `bucket`.
    ///
    /// # Errors
    /// The server refused or cannot be reached.
    pub async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64, FleetError> {
        let store = self.kv(bucket).await?;
        store.put(key, value.into()).await.map_err(|e| FleetError::nats(format!("writing {bucket}/{key}"), e))
    }
}
