//! Guest SDK for Trellis apps.
//!
//! Implement [`App`] and call [`app!`]; use the host interfaces re-exported
//! here ([`gpio`], [`i2c`], [`spi`], [`kv`], [`pubsub`], [`timers`], [`clocks`], [`assets`],
//! [`hotplug`]) and the logging helpers ([`info`], [`warn`], ...).
//!
//! ```ignore
//! struct Hello;
//! impl trellis_sdk::App for Hello {
//!     fn start(_: &trellis_sdk::Start) -> Result<Self, String> {
//!         trellis_sdk::info("hello");
//!         Ok(Hello)
//!     }
//! }
//! trellis_sdk::app!(Hello);
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then
//! `trellis app pack target/wasm32-wasip2/release/hello.wasm --manifest trellis.toml`.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// The generated bindings of the `trellis:app` world (`wit/trellis.wit`).
#[allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "stateful-app",
        pub_export_macro: true,
        default_bindings_module: "trellis_sdk::bindings",
    });
}

pub use bindings::trellis::app::events::{Event, GpioEdge, HotplugAction, HotplugEvent, Message};
use bindings::trellis::app::log::{LogLevel, log};
pub use bindings::trellis::app::types::{Edge, Error, Level};
pub use bindings::trellis::app::{assets, clocks, gpio, hotplug, i2c, kv, pubsub, pwm, spi, timers};

/// Host errors read as "denied: GPIO line 5 ...", so `?` works in handlers
/// returning `Result<_, String>`.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied(m) => format!("denied: {m}"),
            Error::NotFound(m) => format!("not found: {m}"),
            Error::Invalid(m) => format!("invalid: {m}"),
            Error::QuotaExceeded(m) => format!("quota exceeded: {m}"),
            Error::Io(m) => format!("I/O error: {m}"),
        }
    }
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}
/// Log at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}
/// Log at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
/// Log at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// What `start` is given: the manifest's `[config]` and any state handed over
/// by the previous version.
#[derive(Debug, Default)]
pub struct Start {
    /// The manifest's `[config]` table.
    pub config: BTreeMap<String, String>,
    /// What the previous version's [`App::save`] returned, on a swap.
    pub restored: Option<Vec<u8>>,
}

impl Start {
    /// A config value parsed as `T`, or `default` when absent.
    ///
    /// # Errors
    /// The value is present but does not parse; the message names the key.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.config.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("config {key} = {v:?} is not valid")),
        }
    }
}

/// An app. Every handler has a default that ignores the event.
pub trait App: Sized + 'static {
    /// Set up: claim hardware, start timers, subscribe. An error refuses this version.
    ///
    /// # Errors
    /// Whatever makes the app unable to run; the previous version keeps running.
    fn start(start: &Start) -> Result<Self, String>;
    /// A timer fired.
    ///
    /// # Errors
    /// Logged by the runtime.
    fn on_timer(&mut self, _id: u32) -> Result<(), String> {
        Ok(())
    }
    /// An edge on a claimed input line.
    ///
    /// # Errors
    /// Logged by the runtime.
    fn on_gpio_edge(&mut self, _edge: GpioEdge) -> Result<(), String> {
        Ok(())
    }
    /// A message on a subscribed topic.
    ///
    /// # Errors
    /// Logged by the runtime.
    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        Ok(())
    }
    /// A device of a subscribed subsystem appeared or went away.
    ///
    /// # Errors
    /// Logged by the runtime.
    fn on_hotplug(&mut self, _event: HotplugEvent) -> Result<(), String> {
        Ok(())
    }
    /// The app is being stopped or replaced.
    fn on_shutdown(&mut self) {}
    /// State to hand to the next version on a swap.
    fn save(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The glue [`app!`] expands to; not for direct use.
#[doc(hidden)]
pub mod glue {
    use super::{App, BTreeMap, Event, RefCell, Start};
    use std::any::Any;

    thread_local! {
        static APP: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
        static RESTORED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }

    fn with<A: App, R>(f: impl FnOnce(&mut A) -> R) -> Result<R, String> {
        APP.with_borrow_mut(|app| match app.as_mut().and_then(|a| a.downcast_mut::<A>()) {
            Some(a) => Ok(f(a)),
            None => Err("the app has not started".to_owned()),
        })
    }

    pub fn start<A: App>(config: Vec<(String, String)>) -> Result<(), String> {
        let start = Start { config: config.into_iter().collect::<BTreeMap<_, _>>(), restored: RESTORED.take() };
        let app = A::start(&start)?;
        APP.set(Some(Box::new(app)));
        Ok(())
    }

    pub fn handle<A: App>(event: Event) -> Result<(), String> {
        with::<A, _>(|app| match event {
            Event::Timer(id) => app.on_timer(id),
            Event::GpioEdge(edge) => app.on_gpio_edge(edge),
            Event::Message(m) => app.on_message(&m.topic, &m.payload),
            Event::Hotplug(h) => app.on_hotplug(h),
            Event::Shutdown => {
                app.on_shutdown();
                Ok(())
            }
        })?
    }

    pub fn save<A: App>() -> Option<Vec<u8>> {
        with::<A, _>(|app| app.save()).ok().flatten()
    }

    pub fn restore(data: Vec<u8>) -> Result<(), String> {
        RESTORED.set(Some(data));
        Ok(())
    }
}

/// Export `$app` (a type implementing [`App`]) as the component's `trellis:app` exports.
#[macro_export]
macro_rules! app {
    ($app:ty) => {
        struct __TrellisExports;
        impl $crate::bindings::Guest for __TrellisExports {
            fn start(config: Vec<(String, String)>) -> Result<(), String> {
                $crate::glue::start::<$app>(config)
            }
            fn handle(event: $crate::Event) -> Result<(), String> {
                $crate::glue::handle::<$app>(event)
            }
        }
        impl $crate::bindings::exports::trellis::app::state::Guest for __TrellisExports {
            fn save() -> Option<Vec<u8>> {
                $crate::glue::save::<$app>()
            }
            fn restore(data: Vec<u8>) -> Result<(), String> {
                $crate::glue::restore(data)
            }
        }
        $crate::bindings::export!(__TrellisExports with_types_in $crate::bindings);
    };
}
