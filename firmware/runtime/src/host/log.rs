//! `trellis:app/log`: an app's log lines, tagged with the app, into the
//! device log and the runtime's event stream.

use crate::bindings::trellis::app::log;
use crate::events::RuntimeEvent;

use super::HostState;

impl log::Host for HostState {
    fn log(&mut self, level: log::LogLevel, message: String) {
        let app = self.app.as_str();
        match level {
            log::LogLevel::Trace => tracing::trace!(target: "app", app, "{message}"),
            log::LogLevel::Debug => tracing::debug!(target: "app", app, "{message}"),
            log::LogLevel::Info => tracing::info!(target: "app", app, "{message}"),
            log::LogLevel::Warn => tracing::warn!(target: "app", app, "{message}"),
            log::LogLevel::Error => tracing::error!(target: "app", app, "{message}"),
        }
        let level = match level {
            log::LogLevel::Trace => "trace",
            log::LogLevel::Debug => "debug",
            log::LogLevel::Info => "info",
            log::LogLevel::Warn => "warn",
            log::LogLevel::Error => "error",
        };
        self.services.events.emit(RuntimeEvent::Log { app: self.app.clone(), level, message });
    }
}
