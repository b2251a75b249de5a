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

/// Whether `id` can name a device or a group: `[a-z0-9][a-z0-9-]*`, at most
/// 64 characters, so it is one subject token and one key-value key.
#[must_use]
pub fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && id.len() <= 64
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
