//! After boot: start the services, restart them with back-off, pet the
//! watchdog, reap zombies, and act on reboot/poweroff requests.

use crate::config::StopSignal;
use std::collections::VecDeque;
use std::time::Duration;

use crate::boot::Fatal;
use crate::config::{Config, Service};
use crate::system::{Request, System};

const TICK: Duration = Duration::from_millis(100);
const CRASH_WINDOW: Duration = Duration::from_secs(60);

struct Running {
    service: Service,
    pid: Option<u32>,
    crashes: VecDeque<Duration>,
    restart_at: Option<Duration>,
}

/// How supervision ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Someone asked for a reboot or poweroff.
    Requested(Request),
    /// An essential service crash-looped.
    Fatal(String),
}

/// The supervision loop's state.
pub struct Supervisor {
    services: Vec<Running>,
    max_crashes: u32,
    pet_every: Duration,
    last_pet: Duration,
    watchdog: bool,
    cfg: Config,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("services", &self.services.len()).finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Open the watchdog and start every service.
    pub fn start(sys: &mut impl System, cfg: &Config) -> Self {
        let watchdog = !cfg.watchdog.is_empty()
            && match sys.watchdog_open(&cfg.watchdog) {
                Ok(()) => true,
                Err(e) => {
                    sys.log(&format!("no watchdog at {}: {e}", cfg.watchdog));
                    false
                }
            };
        let mut s = Self {
            services: cfg
                .services
                .iter()
                .map(|svc| Running { service: svc.clone(), pid: None, crashes: VecDeque::new(), restart_at: None })
                .collect(),
            max_crashes: cfg.max_crashes,
            pet_every: Duration::from_millis(cfg.watchdog_pet_ms),
            last_pet: sys.monotonic(),
            watchdog,
            cfg: cfg.clone(),
        };
        if watchdog {
            sys.watchdog_pet();
        }
        for i in 0..s.services.len() {
            s.launch(sys, i);
        }
        s
    }

    fn launch(&mut self, sys: &mut impl System, i: usize) {
        let Some(r) = self.services.get_mut(i) else { return };
        r.restart_at = None;
        match sys.spawn(&r.service.argv) {
            Ok(pid) => {
                sys.log(&format!("started {} (pid {pid})", r.service.name));
                r.pid = Some(pid);
            }
            Err(e) => {
                sys.log(&format!("cannot start {} ({:?}): {e}", r.service.name, r.service.argv));
                let now = sys.monotonic();
                r.crashes.push_back(now);
                let n = u32::try_from(r.crashes.len()).unwrap_or(u32::MAX);
                r.restart_at = Some(now.saturating_add(self.cfg.backoff(n)));
            }
        }
    }

    /// One iteration: reap, restart what is due, pet the watchdog. Returns when
    /// supervision must end.
    pub fn step(&mut self, sys: &mut impl System) -> Option<Outcome> {
        if let Some(request) = sys.request() {
            return Some(Outcome::Requested(request));
        }
        while let Some((pid, status)) = sys.reap() {
            let now = sys.monotonic();
            let Some(r) = self.services.iter_mut().find(|r| r.pid == Some(pid)) else { continue }; // an orphan
            r.pid = None;
            r.crashes.push_back(now);
            while r.crashes.front().is_some_and(|&t| now.saturating_sub(t) > CRASH_WINDOW) {
                r.crashes.pop_front();
            }
            let n = u32::try_from(r.crashes.len()).unwrap_or(u32::MAX);
            let delay = self.cfg.backoff(n);
            sys.log(&format!("{} (pid {pid}) ended: {status:?}; restart in {} ms", r.service.name, delay.as_millis()));
            if r.service.essential && n >= self.max_crashes {
                return Some(Outcome::Fatal(Fatal::CrashLoop(r.service.name.clone()).to_string()));
            }
            r.restart_at = Some(now.saturating_add(delay));
        }
        let now = sys.monotonic();
        let due: Vec<usize> = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, r)| r.restart_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        for i in due {
            self.launch(sys, i);
        }
        if self.watchdog && now.saturating_sub(self.last_pet) >= self.pet_every {
            sys.watchdog_pet();
            self.last_pet = now;
        }
        None
    }

    /// Supervise until a request or a fatal error.
    pub fn run(&mut self, sys: &mut impl System) -> Outcome {
        loop {
            if let Some(outcome) = self.step(sys) {
                return outcome;
            }
            sys.sleep(TICK);
        }
    }

    /// Stop every service: SIGTERM, a grace period, SIGKILL.
    pub fn stop_all(&mut self, sys: &mut impl System) {
        let start = sys.monotonic();
        // (pid, name, when to give up on it)
        let mut left: Vec<(u32, String, Duration)> = Vec::new();
        for r in &self.services {
            if let Some(pid) = r.pid {
                sys.kill(pid, r.service.stop_signal);
                let wait = Duration::from_millis(r.service.stop_timeout_ms);
                left.push((pid, r.service.name.clone(), start.saturating_add(wait)));
            }
        }
        loop {
            while let Some((pid, _)) = sys.reap() {
                left.retain(|(p, _, _)| *p != pid);
            }
            let now = sys.monotonic();
            for (pid, name, until) in left.iter().filter(|(_, _, until)| *until <= now) {
                let waited = until.saturating_sub(start).as_millis();
                sys.log(&format!("{name} (pid {pid}) did not stop within {waited} ms: SIGKILL"));
                sys.kill(*pid, StopSignal::Kill);
            }
            left.retain(|(_, _, until)| *until > now);
            if left.is_empty() {
                break;
            }
            if self.watchdog {
                sys.watchdog_pet();
            }
            sys.sleep(TICK);
        }
        for r in &mut self.services {
            r.pid = None;
        }
    }
}

/// Leave: stop services, sync, unmount the data partition, then reboot or power off.
pub fn shutdown(sys: &mut impl System, supervisor: Option<&mut Supervisor>, cfg: &Config, request: Request, why: &str) {
    sys.log(&format!("{why}: {}", if request == Request::Poweroff { "powering off" } else { "rebooting" }));
    if let Some(s) = supervisor {
        let t = sys.monotonic();
        s.stop_all(sys);
        let took = sys.monotonic().saturating_sub(t);
        sys.log(&format!("services stopped in {} ms", took.as_millis()));
    }
    sys.sync();
    if let Err(e) = sys.umount(&cfg.data_dir) {
        sys.log(&format!("cannot unmount {}: {e}", cfg.data_dir));
    }
    sys.sync();
    // A restart command (tryboot) left by whoever asked for the reboot.
    let command = match request {
        Request::Reboot => sys
            .read_to_string(&cfg.reboot_param)
            .ok()
            .and_then(|text| text.lines().next().map(str::trim).filter(|l| !l.is_empty()).map(String::from)),
        Request::Poweroff => None,
    };
    if let Some(c) = &command {
        sys.log(&format!("restart command {c:?} from {}", cfg.reboot_param));
    }
    sys.reboot(request, command.as_deref());
}

/// The whole life of PID 1 from its configuration file (`/etc/trellis/init.toml`):
/// read it, then [`main_loop`]. A malformed or unreadable file is fatal: it is
/// said on the console, and init reboots without mounting the data partition or
/// starting anything (see [`crate::config::load`] for why). It never returns on
/// a real system.
pub fn run(sys: &mut impl System, config_path: &str) {
    match crate::config::load(sys, config_path) {
        Ok(cfg) => main_loop(sys, &cfg),
        Err(reason) => {
            let fatal = Fatal::Config { path: config_path.into(), reason };
            shutdown(sys, None, &Config::default(), Request::Reboot, &format!("fatal: {fatal}"));
        }
    }
}

/// The whole life of PID 1 with its configuration: install the signal
/// handlers, boot, supervise, shut down. On any fatal error it reboots; it
/// never returns on a real system.
pub fn main_loop(sys: &mut impl System, cfg: &Config) {
    if let Err(e) = sys.install_signal_handlers() {
        let fatal = Fatal::Signals(e);
        shutdown(sys, None, cfg, Request::Reboot, &format!("fatal: {fatal}"));
        return;
    }
    match crate::boot::boot(sys, cfg) {
        Err(fatal) => shutdown(sys, None, cfg, Request::Reboot, &format!("fatal: {fatal}")),
        Ok(booted) => {
            sys.log(&format!(
                "booted from {} (data {}{})",
                booted.disk,
                booted.data_device,
                if booted.formatted { ", formatted" } else { "" }
            ));
            let mut s = Supervisor::start(sys, cfg);
            match s.run(sys) {
                Outcome::Requested(r) => shutdown(sys, Some(&mut s), cfg, r, "requested"),
                Outcome::Fatal(why) => shutdown(sys, Some(&mut s), cfg, Request::Reboot, &format!("fatal: {why}")),
            }
        }
    }
}
