//! Per-app CPU shares, enforced by the kernel through cgroup v2 (`[cgroups]`
//! in the configuration; docs/runtime.md, "CPU shares").
//!
//! The layout, under the runtime's own cgroup `PATH` (`/sys/fs/cgroup/trellis`):
//!
//! ```text
//! /sys/fs/cgroup            cgroup.subtree_control += cpu
//! └── trellis               the whole runtime process; a threaded domain, += cpu
//!     └── apps              threaded, += cpu
//!         ├── blinky        threaded, cpu.weight = the manifest's cpu-weight
//!         └── counter       ...: the app's worker thread(s)
//! ```
//!
//! cgroup v2 keeps processes out of cgroups whose controllers are handed to
//! their children ("no internal processes"), except inside a threaded subtree:
//! `cpu` is a threaded controller, so the runtime process lives in `trellis`
//! (the threaded domain) while each app's worker thread sits in its own
//! threaded cgroup below. Each worker writes its own thread id into its app's
//! `cgroup.threads` when it starts, so a hot swap's new worker (and a restart
//! after a crash) lands in the app's cgroup with the new version's weight.
//!
//! Nothing here may stop an app from running: when setting up fails the
//! runtime runs every app unconfined, and when one app's cgroup fails that app
//! runs unconfined; both are logged as warnings naming the path.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A cgroup file or directory that could not be set up or read.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: cannot {action}: {source}")]
pub struct CgroupError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was attempted (`write "threaded"`, `create`, ...).
    pub action: String,
    /// Why not.
    pub source: io::Error,
}

/// The file operations on the cgroup file system (the kernel's, or a fake one in tests).
pub(crate) trait CgroupFs: Send + Sync {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Write `value` to an existing file (cgroup files are never created).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// The mounted cgroup2 file system.
pub(crate) struct Kernel;

impl CgroupFs for Kernel {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect())
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // One write(2) per value: the kernel parses each write on its own.
        std::fs::OpenOptions::new().write(true).open(path)?.write_all(value.as_bytes())
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The runtime's cgroup, set up: apps get their cgroups from it.
pub(crate) struct Cgroups {
    apps: PathBuf,
    fs: Arc<dyn CgroupFs>,
}

/// How long [`Cgroups::remove`] waits for an exited thread to leave its cgroup.
const REMOVE_TRIES: u32 = 20;
const REMOVE_PAUSE: Duration = Duration::from_millis(5);

impl Cgroups {
    /// Move this process into `path` (the runtime's cgroup, created if need
    /// be), enable `cpu` from the parent down, and make the threaded `apps`
    /// cgroup under it. Stale app cgroups (an earlier run of the runtime) are removed.
    pub fn setup(path: &Path, fs: Arc<dyn CgroupFs>) -> Result<Self, CgroupError> {
        let err = |path: &Path, action: &str| {
            let (path, action) = (path.to_owned(), action.to_owned());
            move |source| CgroupError { path, action, source }
        };
        let write = |dir: &Path, file: &str, value: &str| {
            let at = dir.join(file);
            fs.write(&at, value).map_err(err(&at, &format!("write {value:?}")))
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        write(parent, "cgroup.subtree_control", "+cpu")?;
        fs.create_dir(path).map_err(err(path, "create the directory"))?;
        write(path, "cgroup.procs", &std::process::id().to_string())?;
        let apps = path.join("apps");
        fs.create_dir(&apps).map_err(err(&apps, "create the directory"))?;
        write(&apps, "cgroup.type", "threaded")?;
        // The runtime's cgroup holds its process: only a threaded controller
        // may be enabled below it, which is why the children are threaded.
        write(path, "cgroup.subtree_control", "+cpu")?;
        write(&apps, "cgroup.subtree_control", "+cpu")?;
        for stale in fs.subdirs(&apps).unwrap_or_default() {
            if let Err(e) = fs.remove_dir(&stale) {
                tracing::warn!(path = %stale.display(), "cannot remove a stale app cgroup: {e}");
            }
        }
        tracing::info!(path = %path.display(), "apps run in cgroups: CPU shares by the manifests' cpu-weight");
        Ok(Self { apps, fs })
    }

    /// App `app`'s cgroup with `cpu.weight` = `weight` (created, or updated
    /// for a new version); its worker threads join it with [`AppCgroup::enter`].
    pub fn app(&self, app: &str, weight: u32) -> Result<AppCgroup, CgroupError> {
        let dir = self.apps.join(app);
        let err = |path: PathBuf, action: String| move |source| CgroupError { path, action, source };
        self.fs.create_dir(&dir).map_err(err(dir.clone(), "create the directory".into()))?;
        let at = dir.join("cgroup.type");
        self.fs.write(&at, "threaded").map_err(err(at, "write \"threaded\"".into()))?;
        let at = dir.join("cpu.weight");
        self.fs.write(&at, &weight.to_string()).map_err(err(at, format!("write \"{weight}\"")))?;
        Ok(AppCgroup { dir, fs: self.fs.clone() })
    }

    /// Remove app `app`'s cgroup (its workers have stopped; a thread that has
    /// just exited may take a moment to leave it).
    pub fn remove(&self, app: &str) -> Result<(), CgroupError> {
        let dir = self.apps.join(app);
        let mut tries = 0;
        loop {
            match self.fs.remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(16) && tries < REMOVE_TRIES => {
                    tries += 1;
                    std::thread::sleep(REMOVE_PAUSE);
                }
                Err(source) => return Err(CgroupError { path: dir, action: "remove the directory".into(), source }),
            }
        }
    }
}

/// One app's cgroup.
#[derive(Clone)]
pub(crate) struct AppCgroup {
    dir: PathBuf,
    fs: Arc<dyn CgroupFs>,
}

impl std::fmt::Debug for AppCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AppCgroup").field(&self.dir).finish()
    }
}

impl AppCgroup {
    /// Move the calling thread into this cgroup.
    pub fn enter(&self) -> Result<(), CgroupError> {
        let at = self.dir.join("cgroup.threads");
        let tid = current_tid().map_err(|source| CgroupError {
            path: at.clone(),
            action: "find this thread's id".into(),
            source,
        })?;
        self.fs.write(&at, &tid.to_string()).map_err(|source| CgroupError {
            path: at.clone(),
            action: format!("write this thread's id {tid}"),
            source,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// CPU time the app's threads used, as the kernel counts it (`usage_usec` in `cpu.stat`).
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        let at = self.dir.join("cpu.stat");
        let text =
            self.fs.read(&at).map_err(|source| CgroupError { path: at.clone(), action: "read".into(), source })?;
        usage_usec(&text).map(Duration::from_micros).ok_or_else(|| CgroupError {
            path: at,
            action: "find usage_usec".into(),
            source: io::ErrorKind::InvalidData.into(),
        })
    }
}

/// `usage_usec` of a `cpu.stat` file.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok())
}

/// This thread's id (`gettid(2)`).
#[cfg(feature = "linux")]
fn current_tid() -> io::Result<u32> {
    u32::try_from(rustix::thread::gettid().as_raw_nonzero().get()).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// This thread's id, from `/proc/thread-self` (`PID/task/TID`) where rustix is not built in.
#[cfg(not(feature = "linux"))]
fn current_tid() -> io::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::ErrorKind::InvalidData.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    /// A cgroup file system that records every operation; `fail` makes
    /// operations on paths ending with it fail with EACCES.
    #[derive(Default)]
    struct Trace {
        calls: Mutex<Vec<String>>,
        fail: Option<&'static str>,
        dirs: Vec<PathBuf>,
    }

    impl Trace {
        fn op(&self, call: String, path: &Path) -> io::Result<()> {
            self.calls.lock().unwrap().push(call);
            if self.fail.is_some_and(|f| path.ends_with(f)) { Err(io::Error::from_raw_os_error(13)) } else { Ok(()) }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl CgroupFs for Trace {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.op(format!("mkdir {}", path.display()), path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.op(format!("rmdir {}", path.display()), path)
        }
        fn subdirs(&self, _path: &Path) -> io::Result<Vec<PathBuf>> {
            Ok(self.dirs.clone())
        }
        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            self.op(format!("{value} > {}", path.display()), path)
        }
        fn read(&self, path: &Path) -> io::Result<String> {
            self.op(format!("read {}", path.display()), path)?;
            Ok("usage_usec 1500000\nuser_usec 1400000\nsystem_usec 100000\n".into())
        }
    }

    #[test]
    fn the_runtime_becomes_a_threaded_domain_with_cpu_enabled_top_down() {
        let fs = Arc::new(Trace { dirs: vec!["/cg/trellis/apps/gone".into()], ..Trace::default() });
        let cgroups = Cgroups::setup(Path::new("/cg/trellis"), fs.clone()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            fs.calls(),
            [
                "+cpu > /cg/cgroup.subtree_control".to_owned(),
                "mkdir /cg/trellis".into(),
                format!("{pid} > /cg/trellis/cgroup.procs"),
                "mkdir /cg/trellis/apps".into(),
                "threaded > /cg/trellis/apps/cgroup.type".into(),
                "+cpu > /cg/trellis/cgroup.subtree_control".into(),
                "+cpu > /cg/trellis/apps/cgroup.subtree_control".into(),
                "rmdir /cg/trellis/apps/gone".into(),
            ]
        );
        let app = cgroups.app("spin", 512).unwrap();
        app.enter().unwrap();
        let calls = fs.calls();
        assert_eq!(
            calls[8..11],
            [
                "mkdir /cg/trellis/apps/spin".to_owned(),
                "threaded > /cg/trellis/apps/spin/cgroup.type".into(),
                "512 > /cg/trellis/apps/spin/cpu.weight".into(),
            ]
        );
        assert!(calls[11].ends_with(" > /cg/trellis/apps/spin/cgroup.threads"), "{calls:?}");
        let tid: u32 = calls[11].split(' ').next().unwrap().parse().unwrap();
        assert!(tid > 0);
        assert_eq!(app.cpu_usage().unwrap(), Duration::from_millis(1500));
        cgroups.remove("spin").unwrap();
        assert_eq!(fs.calls().last().unwrap(), "rmdir /cg/trellis/apps/spin");
    }

    #[test]
    fn errors_name_the_path_and_what_was_attempted() {
        let fs = Arc::new(Trace { fail: Some("cgroup.procs"), ..Trace::default() });
        let err = Cgroups::setup(Path::new("/cg/trellis"), fs).err().unwrap().to_string();
        assert!(err.contains("/cg/trellis/cgroup.procs") && err.contains("cannot write"), "{err}");
        let fs = Arc::new(Trace { fail: Some("cpu.weight"), ..Trace::default() });
        let cgroups = Cgroups::setup(Path::new("/cg/trellis"), fs).unwrap();
        let err = cgroups.app("spin", 1024).unwrap_err().to_string();
        assert!(err.contains("/cg/trellis/apps/spin/cpu.weight") && err.contains("\"1024\""), "{err}");
    }

    #[test]
    fn without_cgroup2_setup_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cgroups::setup(&dir.path().join("trellis"), Arc::new(Kernel)).err().unwrap().to_string();
        assert!(err.contains("cgroup.subtree_control"), "{err}");
        assert!(!dir.path().join("cgroup.subtree_control").exists(), "cgroup files are never created");
    }

    #[test]
    fn cpu_stat_and_thread_ids() {
        assert_eq!(usage_usec("usage_usec 42\nuser_usec 40\n"), Some(42));
        assert_eq!(usage_usec("user_usec 40\n"), None);
        let here = current_tid().unwrap();
        let there = std::thread::spawn(|| current_tid().unwrap()).join().unwrap();
        assert_ne!(here, there);
    }
}
