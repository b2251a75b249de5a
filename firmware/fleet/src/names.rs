//! Every bucket, stream, object store and subject of a fleet, in one place.

/// Key-value bucket of releases: key = release id, value = signed [`crate::Release`].
pub const RELEASES: &str = "trellis-releases";
/// Object store of artifacts (firmware bundles, app files): name = [`artifact`].
pub const ARTIFACTS: &str = "trellis-artifacts";
/// Key-value bucket of desired state: keys [`group_key`] and [`device_key`].
pub const DESIRED: &str = "trellis-desired";
/// Key-value bucket of reported state: key = device id.
pub const REPORTED: &str = "trellis-reported";
/// Key-value bucket of rollouts: key = rollout id (compare-and-set by the controller).
pub const ROLLOUTS: &str = "trellis-rollouts";
/// Key-value bucket of the device registry: key = device id.
pub const DEVICES: &str = "trellis-devices";
/// The stream of every device's events (the fleet's audit log).
pub const EVENTS_STREAM: &str = "TRELLIS_EVENTS";

/// The header of a deletion in a key-value bucket that names a write it
/// follows, as `<key> <revision>`: a device whose own desired state is
/// deleted falls back to its group's, and must not take a replica's older
/// copy of it.
pub const AFTER: &str = "Trellis-After";

/// The stream JetStream keeps a key-value bucket in.
#[must_use]
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject a key of a key-value bucket is stored under.
#[must_use]
pub fn kv_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The stream JetStream keeps an object store in.
#[must_use]
pub fn object_stream(store: &str) -> String {
    format!("OBJ_{store}")
}

/// Key of a group's desired state in [`DESIRED`].
#[must_use]
pub fn group_key(group: &str) -> String {
    format!("group.{group}")
}

/// Key of a device's own desired state in [`DESIRED`] (a pin, or its wave's choice).
#[must_use]
pub fn device_key(device: &str) -> String {
    format!("device.{device}")
}

/// Subject of a device's events in [`EVENTS_STREAM`].
#[must_use]
pub fn events_subject(device: &str) -> String {
    format!("trellis.events.{device}")
}

/// Every device's events.
pub const EVENTS_SUBJECTS: &str = "trellis.events.*";

/// Name of an artifact in [`ARTIFACTS`]: its SHA-256.
#[must_use]
pub fn artifact(sha256: &[u8; 32]) -> String {
    format!("sha256-{}", hex::encode(sha256))
}

/// A device's reply subjects (its inbox prefix): a device may subscribe to
/// these and no other replies, so it never sees another client's answers.
#[must_use]
pub fn inbox(device: &str) -> String {
    format!("_INBOX_{device}")
}

/// The fleet bus between apps: an app of device `D` publishing `fleet/a/b`
/// goes out on `trellis.app.D.a.b` ([`app_subject`]).
pub const APP_BUS: &str = "trellis.app";

/// Every subject of the fleet bus (what a device may subscribe to).
pub const APP_BUS_SUBJECTS: &str = "trellis.app.>";

/// The subject of topic `topic` (`a/b`, levels without `.`, `*`, `>`)
/// published by an app of `device`.
#[must_use]
pub fn app_subject(device: &str, topic: &str) -> String {
    format!("{APP_BUS}.{device}.{}", topic.replace('/', "."))
}

/// The subjects a device may publish on the bus: its own and no other's.
#[must_use]
pub fn app_subjects_of(device: &str) -> String {
    format!("{APP_BUS}.{device}.>")
}

/// The device and topic (`a/b`) of a bus subject; `None` for another subject.
#[must_use]
pub fn app_topic(subject: &str) -> Option<(&str, String)> {
    let rest = subject.strip_prefix(APP_BUS)?.strip_prefix('.')?;
    let (device, topic) = rest.split_once('.')?;
    (!device.is_empty() && !topic.is_empty()).then(|| (device, topic.replace('.', "/")))
}

/// The NATS subscriptions that carry every message a bus pattern
/// `<device or +>/<topic pattern>` (`+/readings/#`) matches: `+` is `*`, and a
/// trailing `#` is `>` plus the level above it (`a/#` matches `a` too).
#[must_use]
pub fn app_filters(pattern: &str) -> Vec<String> {
    let levels: Vec<&str> = pattern
        .split('/')
        .map(|l| match l {
            "+" => "*",
            "#" => ">",
            l => l,
        })
        .collect();
    let all = format!("{APP_BUS}.{}", levels.join("."));
    match levels.split_last() {
        // A device alone is no subject of the bus: `D/#` is `D.>`, not `D`.
        Some((&">", above)) if above.len() > 1 => vec![format!("{APP_BUS}.{}", above.join(".")), all],
        _ => vec![all],
    }
}

/// Whether `id` can name a device or a group: `[a-z0-9][a-z0-9-]*`, at most
/// 64 characters, so it is one subject token and one key-value key.
#[must_use]
pub fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && id.len() <= 64
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// Whether `key` can be a key of a key-value bucket as the client library
/// has it: `[-/_=.a-zA-Z0-9]+`, neither starting nor ending with a dot (so
/// no wildcard, no empty subject token).
#[must_use]
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_literal_subjects() {
        for good in ["device.pi-1", "group.north", "pi-1", "thermostat-2.0.0"] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "device.pi-1\r\n"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_one_subject_token() {
        for good in ["pi-0042", "a", "0", "site-3-line-2"] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", "-a", "A", "a.b", "a*", "a>", "a b", "a_b", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_subjects() {
        assert_eq!(kv_subject(DESIRED, &device_key("pi-1")), "$KV.trellis-desired.device.pi-1");
        assert_eq!(kv_stream(REPORTED), "KV_trellis-reported");
        assert_eq!(events_subject("pi-1"), "trellis.events.pi-1");
        assert_eq!(artifact(&[0xab; 32]), format!("sha256-{}", "ab".repeat(32)));
    }

    #[test]
    fn app_bus() {
        assert_eq!(app_subject("pi-1", "readings/temperature"), "trellis.app.pi-1.readings.temperature");
        assert_eq!(app_subjects_of("pi-1"), "trellis.app.pi-1.>");
        assert_eq!(app_topic("trellis.app.pi-1.readings.temperature"), Some(("pi-1", "readings/temperature".into())));
        assert_eq!(app_topic("trellis.app.pi-1"), None);
        assert_eq!(app_topic("trellis.events.pi-1"), None);
        assert_eq!(app_filters("+/readings/#"), ["trellis.app.*.readings", "trellis.app.*.readings.>"]);
        assert_eq!(app_filters("edge/summary/+"), ["trellis.app.edge.summary.*"]);
        assert_eq!(app_filters("pi-1/#"), ["trellis.app.pi-1.>"]);
        assert_eq!(app_filters("#"), ["trellis.app.>"]);
    }
}
