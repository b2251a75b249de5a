//! Error types. Every message names the app, file or directory concerned.

use std::path::PathBuf;

/// Why an app call failed; the app is restarted after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The call ran past the manifest's `call-ms`.
    #[error("deadline exceeded: a call ran longer than {ms} ms (limits.call-ms)")]
    Deadline {
        /// The limit.
        ms: u32,
    },
    /// The app asked for more linear memory than its limit.
    #[error("memory limit exceeded: asked for {requested} bytes, limit is {limit} bytes (limits.memory-kib)")]
    MemoryLimit {
        /// Bytes requested.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// Any other trap (unreachable, out-of-bounds access, a Rust panic in the app).
    #[error("trapped: {0}")]
    Trap(String),
    /// The app's handler returned an error for `start` or `restore`.
    #[error("refused to start: {0}")]
    StartRefused(String),
}

/// Why a version of an app was not loaded. The previous version, if any, keeps running.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The container is wrong (not a component, truncated, no manifest, bad signature).
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: trellis_appfmt::FormatError,
    },
    /// The file is not named `NAME.wasm` with a valid app name.
    #[error("{path}: an app file is named NAME.wasm, NAME of a-z, 0-9, '-' and '_' (at most 64)")]
    FileName {
        /// The file.
        path: PathBuf,
    },
    /// The file name and the manifest's name differ.
    #[error("{path}: the manifest names the app {manifest:?}, but the file must then be named {manifest}.wasm")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// Name in the manifest.
        manifest: String,
    },
    /// Built against an interface version this runtime does not provide.
    #[error(
        "{path}: built for {found}, but this runtime provides {provided} (rebuild the app against wit/ of this firmware)"
    )]
    Interface {
        /// The file.
        path: PathBuf,
        /// What the app imports.
        found: String,
        /// What the runtime provides.
        provided: String,
    },
    /// The manifest asks for hardware that cannot be granted.
    #[error("{path}: permission refused: {reason}")]
    Permission {
        /// The file.
        path: PathBuf,
        /// What and why.
        reason: String,
    },
    /// wasmtime refused to compile or link it.
    #[error("{path}: cannot compile: {reason}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
    /// Instantiation failed (missing import, pool exhausted, start trap).
    #[error("{path}: cannot instantiate: {reason}")]
    Instantiate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `restore` or `start` failed.
    #[error("{path}: {fault}")]
    Start {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        fault: Fault,
    },
    /// The file's contents are already running.
    #[error("{path}: unchanged")]
    Unchanged {
        /// The file.
        path: PathBuf,
    },
    /// The configuration does not run this app (`only`).
    #[error("this device does not run app {app}: runtime.toml's `only` lists {only}")]
    NotRun {
        /// The app.
        app: String,
        /// The apps it runs.
        only: String,
    },
    /// The new version ran, but its file could not be put in place; the
    /// previous version runs again.
    #[error("{path}: not kept, the previous version runs again: {reason}")]
    NotKept {
        /// The file.
        path: PathBuf,
        /// Why it could not be written.
        reason: String,
    },
    /// No such app.
    #[error("no app {app}")]
    NoApp {
        /// The app.
        app: String,
    },
    /// The app's file cannot be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime has stopped.
    #[error("the runtime has stopped")]
    Stopped,
    /// The app is stopped on request: its file is not run until it is started.
    #[error("app {app} is stopped: start it to run it (trellis app start {app})")]
    AppStopped {
        /// The app.
        app: String,
    },
    /// The set of stopped apps cannot be recorded; nothing was changed.
    #[error("cannot record the stopped apps in {path}: {source}")]
    StoppedList {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Runtime-level failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration cannot be used.
    #[error("configuration {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A directory cannot be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine cannot be set up.
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// The trust list cannot be loaded.
    #[error("trust list: {0}")]
    Trust(#[from] trellis_appfmt::KeyError),
    /// The file watcher cannot be started.
    #[error("watching {path}: {reason}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime has stopped.
    #[error("the runtime has stopped")]
    Stopped,
}
