//! `trellis:app/pubsub`: publishing to and subscribing to the topics granted in
//! the manifest; subscriptions are kept per version and go live at its commit.
//! Topics under `fleet/` are the fleet bus (`[permissions.fleet]`): a publish
//! is queued for NATS without waiting, a subscription follows other devices'
//! apps (docs/fleet.md, "The app bus").

use trellis_appfmt::{FLEET_PREFIX, pattern_covers, topic_matches, valid_fleet_pattern, valid_topic_pattern};

use crate::bindings::WitError;
use crate::bindings::trellis::app::pubsub;

use super::HostState;

/// Largest pub/sub payload.
const MAX_PAYLOAD: usize = 64 * 1024;
const MAX_SUBSCRIPTIONS: usize = 64;

/// What follows `fleet/` in a topic or pattern on the fleet bus; `None` for a
/// local one. `Err` for `fleet` alone.
fn on_bus(topic: &str) -> Result<Option<&str>, WitError> {
    match topic.strip_prefix(FLEET_PREFIX) {
        Some("") => Err(WitError::Invalid(format!("{topic:?}: name a topic after fleet/"))),
        Some(rest) => Ok(rest.strip_prefix('/')),
        None => Ok(None),
    }
}

fn check_bus_pattern(topic: &str, rest: &str) -> Result<(), WitError> {
    if valid_fleet_pattern(rest) {
        Ok(())
    } else {
        Err(WitError::Invalid(format!("{topic:?}: a level on the fleet bus may not contain '.', '*' or '>'")))
    }
}

impl pubsub::Host for HostState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), WitError> {
        if !valid_topic_pattern(&topic) || topic.contains(['+', '#']) {
            return Err(WitError::Invalid(format!("{topic:?} is not a topic (no wildcards when publishing)")));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(WitError::Invalid(format!("payload of {} bytes is above {MAX_PAYLOAD}", payload.len())));
        }
        if let Some(rest) = on_bus(&topic)? {
            check_bus_pattern(&topic, rest)?;
            if !self.manifest.permissions.fleet.publish.iter().any(|p| topic_matches(p, rest)) {
                return Err(self.denied(format!(
                    "publishing to {topic:?} on the fleet bus is not granted (permissions.fleet.publish)"
                )));
            }
            // Queued, never waited for: dropped and counted when the queue is full.
            self.services.broker.bus().publish(rest, &payload);
            return Ok(());
        }
        if !self.manifest.permissions.publish.iter().any(|p| topic_matches(p, &topic)) {
            return Err(self.denied(format!("publishing to {topic:?} is not granted (permissions.publish)")));
        }
        self.services.broker.publish(&self.app, &topic, &payload);
        Ok(())
    }

    fn subscribe(&mut self, pattern: String) -> Result<(), WitError> {
        if !valid_topic_pattern(&pattern) {
            return Err(WitError::Invalid(format!("{pattern:?} is not a topic pattern")));
        }
        // The pattern must lie within a granted one: every topic it matches must be granted.
        if let Some(rest) = on_bus(&pattern)? {
            check_bus_pattern(&pattern, rest)?;
            if !self.manifest.permissions.fleet.subscribe.iter().any(|g| pattern_covers(g, rest)) {
                return Err(self.denied(format!(
                    "subscribing to {pattern:?} on the fleet bus is not granted (permissions.fleet.subscribe)"
                )));
            }
        } else if !self.manifest.permissions.subscribe.iter().any(|g| pattern_covers(g, &pattern)) {
            return Err(self.denied(format!("subscribing to {pattern:?} is not granted (permissions.subscribe)")));
        }
        if self.subs.topics.len() >= MAX_SUBSCRIPTIONS {
            return Err(WitError::QuotaExceeded(format!("at most {MAX_SUBSCRIPTIONS} subscriptions")));
        }
        if !self.subs.topics.contains(&pattern) {
            self.subs.topics.push(pattern.clone());
        }
        if self.live {
            self.services.broker.subscribe(&self.app, &pattern);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, pattern: String) -> Result<(), WitError> {
        self.subs.topics.retain(|p| p != &pattern);
        if self.live {
            self.services.broker.unsubscribe(&self.app, &pattern);
        }
        Ok(())
    }
}
