//! The `nats-server` configuration of a fleet: JetStream, mutual TLS with
//! each client certificate mapped to a user (`verify_and_map`), an optional
//! cluster, and the permissions that confine each device to its own keys
//! (`docs/fleet.md`, "Permissions of a device"). Rendered as JSON, which
//! `nats-server -c` reads as its configuration format.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::names::{self, DESIRED, RELEASES, REPORTED, device_key, group_key, kv_stream, kv_subject, object_stream};

/// The server's TLS files; clients must present a certificate `ca` signed.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA that signs devices' and operators' certificates (PEM).
    pub ca: PathBuf,
}

/// A cluster of servers (routes between them; JetStream replicated over them).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster's name (the same on every server).
    pub name: String,
    /// Where this server listens for routes.
    pub listen: SocketAddr,
    /// The other servers' route addresses.
    pub routes: Vec<SocketAddr>,
}

/// A device's user: its certificate's subject maps to it.
#[derive(Debug, Clone)]
pub struct DeviceUser {
    /// The device id (its certificate's common name).
    pub device: String,
    /// Its group.
    pub group: String,
}

/// One server of a fleet.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This server's name (unique in a cluster).
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// JetStream's storage directory.
    pub store_dir: PathBuf,
    /// Mutual TLS.
    pub tls: Tls,
    /// The cluster, if any.
    pub cluster: Option<Cluster>,
    /// Common names of operators' (and controllers') certificates: full access.
    pub operators: Vec<String>,
    /// The devices.
    pub devices: Vec<DeviceUser>,
    /// For the time a firmware update takes to reach every device: the
    /// previous release's layout (everyone in one account, which lets a
    /// device write through the answer to a request; see
    /// [`ServerConfig::accounts`]), with what its agent needs
    /// ([`previous_agent_grants`]) beside what this one needs.
    pub previous_agents: bool,
}

/// What the agent of the release before this one needs beyond
/// [`device_permissions`]: it read artifacts through the client library's
/// object store, which asks for the stream's information and reads through
/// an ordered push consumer (its creation, deletion and flow control).
#[must_use]
pub fn previous_agent_grants() -> Vec<String> {
    let (api, artifacts) = ("$JS.API", object_stream(names::ARTIFACTS));
    vec![
        format!("{api}.STREAM.INFO.{artifacts}"),
        format!("{api}.DIRECT.GET.{artifacts}.>"),
        format!("{api}.CONSUMER.CREATE.{artifacts}"),
        format!("{api}.CONSUMER.CREATE.{artifacts}.>"),
        format!("{api}.CONSUMER.DELETE.{artifacts}.>"),
        format!("$JS.FC.{artifacts}.>"),
    ]
}

/// The NATS user a certificate with common name `cn` (and no other subject
/// field or e-mail/DNS name) maps to.
#[must_use]
pub fn user_for(cn: &str) -> String {
    format!("CN={cn}")
}

/// What a device may publish and subscribe to: its own desired state and its
/// group's (read, watch), the releases and artifacts (read), its own reported
/// state and events (write), replies on its own inbox, and the app bus: its
/// own subjects to publish (`trellis.app.<self>.>`, so a subscriber can trust
/// the device named in a subject), every device's to subscribe (which topics
/// an app may read is its manifest's grant, enforced by the runtime; see
/// docs/fleet.md, "The app bus"). Nothing else.
#[must_use]
pub fn device_permissions(device: &str, group: &str) -> Value {
    let api = "$JS.API";
    let desired = kv_stream(DESIRED);
    let releases = kv_stream(RELEASES);
    let artifacts = object_stream(names::ARTIFACTS);
    let mut publish = vec![
        format!("{api}.INFO"),
        // Not on the desired and reported buckets: with a subjects filter
        // the answer lists every key, that is every device and group. The
        // agent names their streams instead (link::Link::stream). Releases
        // are readable by every device anyway.
        format!("{api}.STREAM.INFO.{releases}"),
        format!("{api}.DIRECT.GET.{releases}.>"),
        // A release as the bucket's leader has it (a replica may not hold one just published).
        format!("{api}.STREAM.MSG.GET.{releases}"),
        // An artifact: its metadata from the leader, its chunks by direct
        // get (crate::object). Every device may read every artifact; no
        // consumer, which would deliver wherever its maker says.
        format!("{api}.STREAM.MSG.GET.{artifacts}"),
        format!("{api}.DIRECT.GET.{artifacts}"),
        // Its reported state (a put, or a compare-and-set on the revision), and its events.
        kv_subject(REPORTED, device),
        names::events_subject(device),
        // Its apps' messages on the fleet bus.
        names::app_subjects_of(device),
    ];
    let mut subscribe = vec![format!("{}.>", names::inbox(device)), names::APP_BUS_SUBJECTS.to_owned()];
    for key in [device_key(device), group_key(group)] {
        let subject = kv_subject(DESIRED, &key);
        publish.push(format!("{api}.DIRECT.GET.{desired}.{subject}"));
        // Watched by a plain subscription: a device makes no consumer on the
        // desired state (a push consumer delivers wherever its maker says).
        subscribe.push(subject);
    }
    json!({
        "publish": { "allow": publish },
        "subscribe": { "allow": subscribe },
    })
}

/// The account of the fleet's streams and buckets and of its operators.
pub const FLEET_ACCOUNT: &str = "FLEET";

/// The account of the devices and of the app bus.
pub const DEVICES_ACCOUNT: &str = "DEVICES";

impl ServerConfig {
    /// Two accounts: the fleet's (JetStream, the operators) and the
    /// devices' (the app bus). A server sends the answer to a request to
    /// whatever reply subject the request names, as a message of the
    /// requester's account like any other, and a stream stores every
    /// message of its account on its subjects: in one account, a device
    /// could name another device's desired-state key as the reply to a
    /// direct get of its own, and the bucket would store the answer there.
    /// So the devices' requests reach the fleet's account through service
    /// imports, which carry each answer back to the requester's account
    /// only, where no stream listens. The devices' account imports the
    /// JetStream API and the subjects of reports and events as services and
    /// the desired state's subjects as a stream (for the watch); each
    /// device's permissions narrow that to its own. The fleet's account
    /// imports the app bus, for the operators.
    fn accounts(&self) -> Value {
        let from_fleet = |kind: &str, subject: &str| json!({ kind: { "account": FLEET_ACCOUNT, "subject": subject } });
        let services = ["$JS.API.>".to_owned(), kv_subject(REPORTED, "*"), names::EVENTS_SUBJECTS.to_owned()];
        let streams = [kv_subject(DESIRED, ">")];
        let mut imports: Vec<Value> = services.iter().map(|s| from_fleet("service", s)).collect();
        imports.extend(streams.iter().map(|s| from_fleet("stream", s)));
        let mut exports: Vec<Value> = services.iter().map(|s| json!({ "service": s })).collect();
        exports.extend(streams.iter().map(|s| json!({ "stream": s })));
        let bus = json!({ "stream": { "account": DEVICES_ACCOUNT, "subject": names::APP_BUS_SUBJECTS } });
        json!({
            FLEET_ACCOUNT: { "jetstream": "enabled", "users": self.operator_users(), "exports": exports, "imports": [bus] },
            DEVICES_ACCOUNT: {
                "users": self.device_users(&[]),
                "imports": imports,
                "exports": [{ "stream": names::APP_BUS_SUBJECTS }],
            },
        })
    }

    /// The operators' users: full access within their account.
    fn operator_users(&self) -> Vec<Value> {
        self.operators.iter().map(|cn| json!({ "user": user_for(cn) })).collect()
    }

    /// The devices' users, each with [`device_permissions`] and `more` to publish.
    fn device_users(&self, more: &[String]) -> Vec<Value> {
        self.devices
            .iter()
            .map(|d| {
                let mut permissions = device_permissions(&d.device, &d.group);
                if let Some(Value::Array(allow)) = permissions.pointer_mut("/publish/allow") {
                    allow.extend(more.iter().cloned().map(Value::String));
                }
                json!({ "user": user_for(&d.device), "permissions": permissions })
            })
            .collect()
    }

    /// The configuration as `nats-server -c` reads it.
    #[must_use]
    pub fn render(&self) -> String {
        let mut config = json!({
            "server_name": self.name,
            "listen": self.listen.to_string(),
            "jetstream": { "store_dir": self.store_dir, "max_memory_store": 64 << 20, "max_file_store": 1 << 30 },
            "tls": {
                "cert_file": self.tls.cert,
                "key_file": self.tls.key,
                "ca_file": self.tls.ca,
                "verify_and_map": true,
                "timeout": 5,
            },
        });
        if let Value::Object(map) = &mut config {
            if self.previous_agents {
                // The previous release's one account, each device granted what either agent needs.
                let mut users = self.operator_users();
                users.extend(self.device_users(&previous_agent_grants()));
                map.insert("authorization".into(), json!({ "users": users }));
            } else {
                map.insert("accounts".into(), self.accounts());
            }
        }
        if let (Some(c), Value::Object(map)) = (&self.cluster, &mut config) {
            let routes: Vec<String> = c.routes.iter().map(|r| format!("nats-route://{r}")).collect();
            map.insert("cluster".into(), json!({ "name": c.name, "listen": c.listen.to_string(), "routes": routes }));
        }
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }
}
