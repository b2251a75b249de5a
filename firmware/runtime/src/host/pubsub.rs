//! `trellis:app/pubsub`: publishing to and subscribing to the topics granted in
//! the manifest; subscriptions are kept per version and go live at its commit.

use trellis_appfmt::{pattern_covers, topic_matches, valid_topic_pattern};

use crate::bindings::WitError;
use crate::bindings::trellis::app::pubsub;

use super::HostState;

/// Largest pub/sub payload.
const MAX_PAYLOAD: usize = 64 * 1024;
const MAX_SUBSCRIPTIONS: usize = 64;

impl pubsub::Host for HostState {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), WitError> {
        if !valid_topic_pattern(&topic) || topic.contains(['+', '#']) {
            return Err(WitError::Invalid(format!("{topic:?} is not a topic (no wildcards when publishing)")));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(WitError::Invalid(format!("payload of {} bytes is above {MAX_PAYLOAD}", payload.len())));
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
        let granted = self.manifest.permissions.subscribe.iter().any(|g| pattern_covers(g, &pattern));
        if !granted {
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
