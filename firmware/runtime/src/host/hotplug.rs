//! `trellis:app/hotplug`: subscribing to device add/remove events of the
//! subsystems granted in the manifest.

use crate::bindings::WitError;
use crate::bindings::trellis::app::hotplug;

use super::HostState;

impl hotplug::Host for HostState {
    fn subscribe(&mut self, subsystem: String) -> Result<(), WitError> {
        if !self.manifest.permissions.hotplug.contains(&subsystem) {
            return Err(self.denied(format!("hot-plug events of {subsystem:?} are not granted (permissions.hotplug)")));
        }
        if !self.subs.hotplug.contains(&subsystem) {
            self.subs.hotplug.push(subsystem.clone());
        }
        if self.live {
            self.services.broker.subscribe_hotplug(&self.app, &subsystem);
        }
        Ok(())
    }
}
