//! RAUC over its D-Bus service (`de.pengutronix.rauc.Installer` on the system bus).

use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use zbus::blocking::Connection;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value};

use trellis_assets::stream::Ticket;
use trellis_assets::{AssetId, StreamServer};
use trellis_layout::paths;

use crate::stream_key::{HandedKey, user_ids};
use crate::{Bundle, Mark, Progress, Rauc, SlotInfo, Slots, StreamTls, UpdateError};

#[zbus::proxy(interface = "de.pengutronix.rauc.Installer", default_service = "de.pengutronix.rauc", default_path = "/")]
trait Installer {
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;
    fn get_slot_status(&self) -> zbus::Result<Vec<(String, HashMap<String, OwnedValue>)>>;
    fn get_primary(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;
}

/// RAUC's D-Bus service on the system bus. Each call opens its own
/// connection, so a restarted `dbus-daemon` or `rauc service` is picked up.
#[derive(Debug, Default, Clone)]
pub struct DbusRauc {
    tls: Option<StreamTls>,
    assets: Option<Arc<StreamServer>>,
}

impl DbusRauc {
    /// RAUC, with the device's identity for bundles streamed over HTTPS.
    #[must_use]
    pub const fn new(tls: Option<StreamTls>) -> Self {
        Self { tls, assets: None }
    }

    /// Bundles named by their piece root (`asset:<id>`) stream to RAUC from
    /// `server` (loopback): their blocks come from the device's peers and
    /// the asset origin, each verified before RAUC reads it. Once the
    /// install is over ([`Rauc::settled`]) a failed one's blocks are
    /// removed and a written one's kept for the peers when the device
    /// shares ([`StreamServer::installed`]), until its slot is rolled back
    /// ([`Rauc::rolled_back`]) or another install ends.
    #[must_use]
    pub fn with_assets(mut self, server: Arc<StreamServer>) -> Self {
        self.assets = Some(server);
        self
    }

    /// Where RAUC reads a bundle named by its piece root, for as long as
    /// the ticket lives.
    fn asset_ticket(&self, bundle: &Bundle, id: &str) -> Result<Ticket, UpdateError> {
        let refused = |reason: String| UpdateError::Bundle { bundle: bundle.clone(), reason };
        let server = self
            .assets
            .as_ref()
            .ok_or_else(|| refused("no asset sources: the runtime's [assets] names no origin and no peers".into()))?;
        let id = id.parse::<AssetId>().map_err(|e| refused(e.to_string()))?;
        server.open(&id).map_err(|e| refused(format!("no stream: {e}")))
    }

    /// `InstallBundle`'s TLS arguments for `url` (only over HTTPS), and the
    /// key's copy for RAUC's sandbox user, which must live until the install
    /// is over.
    fn tls_args(&self, url: &str) -> Result<(HashMap<&'static str, String>, Option<HandedKey>), UpdateError> {
        let mut args = HashMap::new();
        let Some(tls) = self.tls.as_ref().filter(|_| url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")))
        else {
            return Ok((args, None));
        };
        let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
        if let Some(cert) = &tls.cert {
            args.insert("tls-cert", text(cert));
        }
        if let Some(ca) = &tls.ca {
            args.insert("tls-ca", text(ca));
        }
        let Some(key) = &tls.key else { return Ok((args, None)) };
        let passwd = std::fs::read_to_string(paths::PASSWD).unwrap_or_default();
        let owner = user_ids(&passwd, paths::STREAM_USER).ok_or_else(|| UpdateError::StreamKey {
            path: paths::PASSWD.into(),
            reason: format!("no user {} (RAUC's streaming sandbox user)", paths::STREAM_USER),
        })?;
        let to = HandedKey::path_for(std::path::Path::new(paths::STREAM_KEY));
        let handed = HandedKey::new(key, &to, owner.1)?;
        args.insert("tls-key", text(handed.path()));
        Ok((args, Some(handed)))
    }
}

fn bus(e: &zbus::Error) -> UpdateError {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => UpdateError::Rauc(msg.clone()),
        other => UpdateError::Bus(other.to_string()),
    }
}

fn proxy() -> Result<InstallerProxyBlocking<'static>, UpdateError> {
    let conn = Connection::system().map_err(|e| bus(&e))?;
    InstallerProxyBlocking::builder(&conn).cache_properties(CacheProperties::No).build().map_err(|e| bus(&e))
}

/// Until RAUC's service says it is idle, asking it again each second on a
/// connection of its own (at most half an hour: each attempt of an install
/// is bounded by the kernel's NBD timeout).
fn wait_idle() {
    let deadline = std::time::Instant::now() + Duration::from_secs(1800);
    while std::time::Instant::now() < deadline {
        if proxy().and_then(|p| p.operation().map_err(|e| bus(&e))).is_ok_and(|op| op == "idle") {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The piece root a bundle streamed by it names.
fn asset_id(bundle: &Bundle) -> Option<AssetId> {
    match bundle {
        Bundle::Asset(id) => id.parse().ok(),
        _ => None,
    }
}

fn text(d: &HashMap<String, OwnedValue>, key: &str) -> Option<String> {
    d.get(key).and_then(|v| v.downcast_ref::<&str>().ok()).map(str::to_owned)
}

impl Rauc for DbusRauc {
    fn install(&self, bundle: &Bundle, progress: &mut dyn FnMut(&Progress)) -> Result<(), UpdateError> {
        let proxy = proxy()?;
        // A URL is RAUC's streaming mode: it reads the bundle with range requests.
        let ticket;
        let (source, (tls, _key)) = match bundle {
            Bundle::File(path) => (
                path.to_str().ok_or_else(|| UpdateError::Bundle {
                    bundle: bundle.clone(),
                    reason: "the path is not UTF-8".into(),
                })?,
                (HashMap::new(), None),
            ),
            Bundle::Url(url) => (url.as_str(), self.tls_args(url)?),
            Bundle::Asset(id) => {
                ticket = self.asset_ticket(bundle, id)?;
                (ticket.url(), (HashMap::new(), None))
            }
        };
        let args: HashMap<&str, Value<'_>> = tls.iter().map(|(k, v)| (*k, Value::from(v.as_str()))).collect();
        // Subscribe before starting, so a fast failure's signal is not missed.
        let mut completed = proxy.receive_completed().map_err(|e| bus(&e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let code = completed.next().map(|s| s.args().map(|a| a.result).unwrap_or(-1));
            let _ = tx.send(code);
        });
        proxy.install_bundle(source, args).map_err(|e| bus(&e))?;
        let mut last: Option<Progress> = None;
        let code = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(code)) => break code,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The signal stream ended (the bus went away): RAUC may still
                // be installing, and reading the bundle through the ticket.
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    wait_idle();
                    break -1;
                }
            }
            if let Ok((percent, message, _depth)) = proxy.progress() {
                let p = Progress { percent, message };
                if last.as_ref() != Some(&p) {
                    progress(&p);
                    last = Some(p);
                }
            }
        };
        if let Ok((percent, message, _)) = proxy.progress() {
            let p = Progress { percent, message };
            if last.as_ref() != Some(&p) {
                progress(&p);
            }
        }
        if code == 0 {
            Ok(())
        } else {
            let why = proxy.last_error().unwrap_or_default();
            Err(UpdateError::Rauc(if why.is_empty() { format!("installation failed (code {code})") } else { why }))
        }
    }

    fn settled(&self, written: Option<&Bundle>) {
        let Some(server) = &self.assets else { return };
        match written.and_then(asset_id) {
            Some(id) => server.installed(&id),
            None => server.clear(),
        }
    }

    fn rolled_back(&self, bundle: &Bundle, why: &str) {
        if let (Some(id), Some(server)) = (asset_id(bundle), &self.assets) {
            server.rolled_back(&id, why);
        }
    }

    fn mark(&self, mark: Mark, slot: &str) -> Result<String, UpdateError> {
        let (name, message) = proxy()?.mark(mark.as_str(), slot).map_err(|e| bus(&e))?;
        Ok(format!("{name}: {message}"))
    }

    fn slots(&self) -> Result<Slots, UpdateError> {
        let proxy = proxy()?;
        let booted = proxy.boot_slot().map_err(|e| bus(&e))?;
        let compatible = proxy.compatible().map_err(|e| bus(&e))?;
        let slots: Vec<SlotInfo> = proxy
            .get_slot_status()
            .map_err(|e| bus(&e))?
            .into_iter()
            .filter_map(|(name, d)| {
                Some(SlotInfo {
                    bootname: text(&d, "bootname")?,
                    state: text(&d, "state").unwrap_or_default(),
                    boot_status: text(&d, "boot_status"),
                    version: text(&d, "bundle.version"),
                    name,
                })
            })
            .collect();
        let primary =
            proxy.get_primary().ok().and_then(|p| slots.iter().find(|s| s.name == p).map(|s| s.bootname.clone()));
        Ok(Slots { booted, primary, compatible, slots })
    }
}
