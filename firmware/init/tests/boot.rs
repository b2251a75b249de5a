//! The boot sequence and supervision, traced: every side effect init makes is
//! recorded by a fake `System`, and the tests read like what happens on a device.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, SystemTime};

use trellis_init::boot::Booted;
use trellis_init::config::{DataFs, StopSignal};
use trellis_init::supervise::{Outcome, Supervisor, main_loop, run};
use trellis_init::{Config, ExitStatus, Request, System, boot};
use trellis_layout::paths::INIT_CONFIG;

const DATA: &str = "/dev/rootdisk0p7";

#[derive(Default)]
struct Trace {
    calls: Vec<String>,
    dirs: HashMap<String, Vec<String>>,
    devices: HashMap<String, Vec<u8>>,
    /// Data partition mounts fail while this is true (a corrupted file system).
    data_broken: bool,
    /// fsck's exit code (0 or 1: it repaired the file system).
    fsck_code: i32,
    clock: Option<SystemTime>,
    mono: Duration,
    next_pid: u32,
    /// (when, pid, status): children that will exit.
    exits: Vec<(Duration, u32, ExitStatus)>,
    /// Every spawned child exits this long after starting (None: runs forever).
    lifetime: Option<Duration>,
    requests: VecDeque<(Duration, Request)>,
    written: HashMap<String, usize>,
    /// Text files (`read_to_string`).
    files: HashMap<String, String>,
    /// Children that do not exit when signalled (stuck in the kernel).
    stubborn: Vec<u32>,
    /// Installing the signal handlers fails.
    signals_fail: bool,
    /// The kernel has no cgroup v2 (mounting it fails).
    no_cgroup2: bool,
}

impl Trace {
    fn pi_like(head: Vec<u8>) -> Self {
        let mut t = Self { next_pid: 100, clock: Some(SystemTime::UNIX_EPOCH), ..Self::default() };
        t.dirs.insert("/sys/block".into(), vec!["loop0".into(), "vda".into()]);
        t.dirs.insert("/sys/block/vda".into(), (1..=7).map(|n| format!("vda{n}")).chain(["queue".into()]).collect());
        t.devices.insert(DATA.into(), head);
        t
    }

    fn called(&self, prefix: &str) -> bool {
        self.calls.iter().any(|c| c.starts_with(prefix))
    }

    fn position(&self, prefix: &str) -> usize {
        self.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:#?}", self.calls))
    }
}

fn f2fs_head() -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[1024..1028].copy_from_slice(&0xF2F5_2010u32.to_le_bytes());
    h
}

impl System for Trace {
    fn install_signal_handlers(&mut self) -> io::Result<()> {
        self.calls.push("install-signal-handlers".into());
        if self.signals_fail { Err(io::Error::from_raw_os_error(22)) } else { Ok(()) } // EINVAL
    }
    fn mount(&mut self, source: &str, target: &str, fstype: &str, _flags: u64, _data: &str) -> io::Result<()> {
        self.calls.push(format!("mount {source} {target} {fstype}"));
        if source == DATA && self.data_broken {
            return Err(io::Error::from_raw_os_error(117)); // EUCLEAN
        }
        if fstype == "cgroup2" && self.no_cgroup2 {
            return Err(io::Error::from_raw_os_error(19)); // ENODEV
        }
        Ok(())
    }
    fn umount(&mut self, target: &str) -> io::Result<()> {
        self.calls.push(format!("umount {target}"));
        Ok(())
    }
    fn mkdir(&mut self, _path: &str) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        self.calls.push(format!("symlink {link} -> {target}"));
        Ok(())
    }
    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>> {
        self.dirs.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let d = self.devices.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = usize::try_from(offset).unwrap().min(d.len());
        Ok(d[start..(start + len).min(d.len())].to_vec())
    }
    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.calls.push(format!("write {path}"));
        self.written.insert(path.into(), data.len());
        Ok(())
    }
    fn run(&mut self, argv: &[String]) -> io::Result<ExitStatus> {
        self.calls.push(format!("run {}", argv.join(" ")));
        if argv[0].starts_with("mkfs") {
            self.data_broken = false;
            self.devices.insert(DATA.into(), f2fs_head());
            return Ok(ExitStatus::Code(0));
        }
        // fsck: exit codes 0 and 1 mean the file system is now clean.
        if self.fsck_code <= 1 {
            self.data_broken = false;
        }
        Ok(ExitStatus::Code(self.fsck_code))
    }
    fn spawn(&mut self, argv: &[String]) -> io::Result<u32> {
        self.next_pid += 1;
        self.calls.push(format!("spawn {} pid {} at {}ms", argv.join(" "), self.next_pid, self.mono.as_millis()));
        if let Some(life) = self.lifetime {
            self.exits.push((self.mono + life, self.next_pid, ExitStatus::Signal(11)));
        }
        Ok(self.next_pid)
    }
    fn reap(&mut self) -> Option<(u32, ExitStatus)> {
        let i = self.exits.iter().position(|(at, _, _)| *at <= self.mono)?;
        let (_, pid, status) = self.exits.remove(i);
        Some((pid, status))
    }
    fn kill(&mut self, pid: u32, signal: StopSignal) {
        let flag = match signal {
            StopSignal::Term => "",
            StopSignal::Hup => " -1",
            StopSignal::Kill => " -9",
        };
        self.calls.push(format!("kill {pid}{flag}"));
        if self.stubborn.contains(&pid) {
            return;
        }
        self.exits.push((self.mono, pid, ExitStatus::Signal(15)));
    }
    fn now(&mut self) -> SystemTime {
        self.clock.unwrap_or(SystemTime::UNIX_EPOCH) + self.mono
    }
    fn set_time(&mut self, t: SystemTime) -> io::Result<()> {
        self.calls.push(format!("set-time {}", t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()));
        self.clock = Some(t - self.mono);
        Ok(())
    }
    fn monotonic(&mut self) -> Duration {
        self.mono
    }
    fn sleep(&mut self, d: Duration) {
        self.mono += d;
        if let Some((at, r)) = self.requests.front().copied()
            && at <= self.mono
        {
            self.requests.pop_front();
            self.requests.push_front((Duration::ZERO, r));
        }
    }
    fn watchdog_open(&mut self, path: &str) -> io::Result<()> {
        self.calls.push(format!("watchdog-open {path}"));
        Ok(())
    }
    fn watchdog_pet(&mut self) {
        self.calls.push(format!("pet at {}ms", self.mono.as_millis()));
    }
    fn request(&mut self) -> Option<Request> {
        match self.requests.front() {
            Some((at, r)) if *at <= self.mono => {
                let r = *r;
                self.requests.pop_front();
                Some(r)
            }
            _ => None,
        }
    }
    fn sync(&mut self) {
        self.calls.push("sync".into());
    }
    fn reboot(&mut self, request: Request, command: Option<&str>) {
        match command {
            Some(c) => self.calls.push(format!("reboot {request:?} {c:?}")),
            None => self.calls.push(format!("reboot {request:?}")),
        }
    }
    fn log(&mut self, message: &str) {
        self.calls.push(format!("log {message}"));
    }
}

fn config() -> Config {
    Config { build_time: 1_800_000_000, ..Config::default() }
}

#[test]
fn first_boot_formats_the_data_partition() {
    let mut t = Trace::pi_like(vec![0xff; 4096]); // as written at image time
    let booted = boot(&mut t, &config()).unwrap();
    assert_eq!(
        booted,
        Booted { disk: "vda".into(), data_device: DATA.into(), formatted: true, kept_aside: None, clock_stepped: true }
    );
    let expected_prefix = [
        "mount proc /proc proc",
        "mount sysfs /sys sysfs",
        "mount devtmpfs /dev devtmpfs",
        "mount tmpfs /run tmpfs",
        "mount tmpfs /tmp tmpfs",
        "mount cgroup2 /sys/fs/cgroup cgroup2",
        "set-time 1800000000",
    ];
    assert_eq!(&t.calls[..expected_prefix.len()], &expected_prefix[..], "{:#?}", t.calls);
    assert!(t.called("symlink /dev/rootdisk0 -> vda"));
    assert!(t.called("symlink /dev/rootdisk0p7 -> vda7"));
    assert!(t.position("symlink /dev/rootdisk0p7") < t.position("run mkfs.f2fs"));
    assert!(t.called("run mkfs.f2fs -q -f -l data /dev/rootdisk0p7"));
    assert!(t.position("run mkfs.f2fs") < t.position("mount /dev/rootdisk0p7 /data f2fs"));
    assert!(!t.called("run fsck"), "nothing to repair on a blank partition");
}

#[test]
fn a_kernel_without_cgroup2_still_boots() {
    let mut t = Trace { no_cgroup2: true, ..Trace::pi_like(f2fs_head()) };
    let booted = boot(&mut t, &config()).unwrap();
    assert!(!booted.formatted);
    assert!(t.called("log cannot mount cgroup2 on /sys/fs/cgroup"), "{:#?}", t.calls);
    assert!(t.position("mount cgroup2") < t.position("mount /dev/rootdisk0p7 /data f2fs"));
}

#[test]
fn second_boot_keeps_the_data() {
    let mut t = Trace::pi_like(f2fs_head());
    t.clock = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)); // synchronised clock
    let booted = boot(&mut t, &config()).unwrap();
    assert!(!booted.formatted && !booted.clock_stepped);
    assert!(!t.called("run mkfs") && !t.called("set-time"));
    assert!(t.called("mount /dev/rootdisk0p7 /data f2fs"));
}

#[test]
fn a_corrupted_data_partition_is_repaired_when_possible() {
    let mut t = Trace::pi_like(f2fs_head());
    t.data_broken = true;
    t.fsck_code = 1; // errors corrected
    let booted = boot(&mut t, &config()).unwrap();
    assert!(!booted.formatted && booted.kept_aside.is_none());
    assert!(t.position("run fsck.f2fs -a /dev/rootdisk0p7") < t.calls.len() - 1);
    assert!(!t.called("run mkfs"), "a repairable file system keeps its data");
}

#[test]
fn an_unrepairable_data_partition_is_kept_aside_and_reformatted() {
    let mut t = Trace::pi_like(f2fs_head());
    t.data_broken = true;
    t.fsck_code = 8; // operational error: could not fix
    let booted = boot(&mut t, &config()).unwrap();
    assert!(booted.formatted);
    let kept = booted.kept_aside.unwrap();
    assert!(kept.starts_with("/data/lost+found/corrupted-data-partition-"), "{kept}");
    assert!(t.position("run fsck.f2fs") < t.position("run mkfs.f2fs"));
    assert!(t.position("run mkfs.f2fs") < t.position(&format!("write {kept}")));
    assert_eq!(t.written[&kept], 4096, "the partition's start was saved");
}

#[test]
fn garbage_over_the_superblock_is_not_mistaken_for_a_blank_partition() {
    // Not 0xff, not zeros, no superblock: damaged, so its start is kept before formatting.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut t = Trace::pi_like(garbage);
    t.data_broken = true;
    t.fsck_code = 8;
    let booted = boot(&mut t, &config()).unwrap();
    assert!(booted.formatted && booted.kept_aside.is_some(), "{:#?}", t.calls);
    assert!(t.called("log /dev/rootdisk0p7 is corrupted"));
    assert!(!t.called("log /dev/rootdisk0p7 holds no file system"));
}

#[test]
fn no_boot_disk_is_fatal_and_reboots() {
    let mut t = Trace::pi_like(vec![]);
    t.dirs.insert("/sys/block".into(), vec!["loop0".into()]);
    main_loop(&mut t, &config());
    assert!(t.called("log fatal: no boot disk"), "{:#?}", t.calls);
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");
    assert!(!t.called("spawn"));
}

#[test]
fn the_runtime_is_restarted_with_backoff() {
    let mut t = Trace::pi_like(f2fs_head());
    let cfg = config();
    let mut s = Supervisor::start(&mut t, &cfg);
    assert!(t.called("spawn /usr/bin/trellis-runtime pid 101 at 0ms"));
    // The runtime dies of a fault at 1 s.
    t.exits.push((Duration::from_secs(1), 101, ExitStatus::Signal(11)));
    // An orphan reparented to init exits too: reaped, ignored.
    t.exits.push((Duration::from_millis(1200), 4242, ExitStatus::Code(0)));
    while t.mono < Duration::from_secs(3) {
        assert!(s.step(&mut t).is_none());
        t.sleep(Duration::from_millis(100));
    }
    // Restarted after 500 ms of back-off.
    assert!(t.called("spawn /usr/bin/trellis-runtime pid 102 at 1500ms"), "{:#?}", t.calls);
    assert!(t.exits.is_empty(), "every child, the orphan too, was reaped");
}

#[test]
fn a_crash_looping_runtime_makes_init_reboot_cleanly() {
    let mut t = Trace::pi_like(f2fs_head());
    t.lifetime = Some(Duration::from_millis(50));
    main_loop(&mut t, &Config { max_crashes: 3, ..config() });
    let spawns = t.calls.iter().filter(|c| c.starts_with("spawn")).count();
    assert_eq!(spawns, 3, "{:#?}", t.calls);
    assert!(t.called("log fatal: service runtime keeps crashing"));
    let tail: Vec<&str> = t.calls.iter().rev().take(4).rev().map(String::as_str).collect();
    assert_eq!(tail, ["sync", "umount /data", "sync", "reboot Reboot"]);
}

/// With the shipped defaults (not a test-only crash limit): a runtime that
/// dies right after every start (a firmware whose runtime cannot run) must
/// end in a reboot, which is what rolls a trial boot back. The back-off grows
/// the gaps between crashes, so the limit has to be reachable inside the
/// crash window (found: 10 crashes never fit into a minute of back-off).
#[test]
fn with_the_default_policy_a_crash_looping_runtime_ends_in_a_reboot() {
    let mut t = Trace::pi_like(f2fs_head());
    t.lifetime = Some(Duration::from_millis(200));
    let cfg = config();
    let mut s = Supervisor::start(&mut t, &cfg);
    let outcome = loop {
        if let Some(o) = s.step(&mut t) {
            break o;
        }
        assert!(t.mono < Duration::from_secs(600), "still restarting after 10 min: {:#?}", t.calls);
        t.sleep(Duration::from_millis(100));
    };
    assert!(matches!(&outcome, Outcome::Fatal(why) if why.contains("runtime keeps crashing")), "{outcome:?}");
    assert!(t.mono < Duration::from_secs(30), "a trial boot waits {:?} for it", t.mono);
}

/// Each service is asked to stop with its own signal and waited for as long
/// as it is configured: the console's shell (whose exit hangs in the serial
/// port's close in the twin) is not waited for, so a reboot does not sit out
/// a grace period for it; a service that ignores its signal gets SIGKILL at
/// its timeout.
#[test]
fn each_service_is_stopped_with_its_own_signal_and_timeout() {
    let mut t = Trace::pi_like(f2fs_head());
    t.requests.push_back((Duration::from_secs(2), Request::Reboot));
    let mut cfg = config();
    let service = |toml: &str| -> trellis_init::config::Service { toml::from_str(toml).unwrap() };
    let console = service("name = \"console\"\nargv = [\"/bin/sh\"]\nstop-signal = \"hup\"\nstop-timeout-ms = 0\n");
    assert_eq!((console.stop_signal, console.stop_timeout_ms), (StopSignal::Hup, 0));
    cfg.services.push(console);
    cfg.services.push(service("name = \"stubborn\"\nargv = [\"/bin/x\"]\nstop-timeout-ms = 1000\n"));
    t.stubborn = vec![102, 103];
    main_loop(&mut t, &cfg);
    assert!(t.called("kill 101") && t.called("kill 102 -1") && t.called("kill 103"), "{:#?}", t.calls);
    assert!(!t.called("kill 101 -9"), "the runtime stopped on SIGTERM: {:#?}", t.calls);
    assert!(t.position("kill 102 -9") < t.position("kill 103 -9"), "{:#?}", t.calls);
    assert!(t.called("log console (pid 102) did not stop within 0 ms: SIGKILL"), "{:#?}", t.calls);
    assert!(t.called("log stubborn (pid 103) did not stop within 1000 ms: SIGKILL"), "{:#?}", t.calls);
    assert!(t.called("log services stopped in 1000 ms"), "{:#?}", t.calls);
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");
}

#[test]
fn poweroff_stops_services_then_unmounts() {
    let mut t = Trace::pi_like(f2fs_head());
    t.requests.push_back((Duration::from_secs(2), Request::Poweroff));
    main_loop(&mut t, &config());
    let kill = t.position("kill 101");
    assert!(kill < t.position("umount /data"));
    assert_eq!(t.calls.last().unwrap(), "reboot Poweroff");
    assert!(!t.called("kill 101 -9"), "the runtime stopped on SIGTERM");
}

#[test]
fn a_reboot_passes_the_restart_command_left_for_it() {
    // The Pi firmware's trial boot: whoever asks for it writes "0 tryboot" and signals PID 1.
    let mut t = Trace::pi_like(f2fs_head());
    t.files.insert("/run/trellis/reboot-param".into(), "0 tryboot\n".into());
    t.requests.push_back((Duration::from_secs(2), Request::Reboot));
    main_loop(&mut t, &config());
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot \"0 tryboot\"");
    assert!(t.position("umount /data") < t.calls.len() - 1);
    // A poweroff ignores it.
    let mut t = Trace::pi_like(f2fs_head());
    t.files.insert("/run/trellis/reboot-param".into(), "0 tryboot\n".into());
    t.requests.push_back((Duration::from_secs(2), Request::Poweroff));
    main_loop(&mut t, &config());
    assert_eq!(t.calls.last().unwrap(), "reboot Poweroff");
}

#[test]
fn the_watchdog_is_petted_while_supervising() {
    let mut t = Trace::pi_like(f2fs_head());
    t.requests.push_back((Duration::from_secs(12), Request::Reboot));
    main_loop(&mut t, &Config { watchdog_pet_ms: 5000, ..config() });
    assert!(t.called("watchdog-open /dev/watchdog"));
    for at in ["pet at 0ms", "pet at 5000ms", "pet at 10000ms"] {
        assert!(t.called(at), "{at}: {:#?}", t.calls);
    }
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");
}

#[test]
fn config_defaults_and_errors() {
    let c = Config::from_toml("data-fs = \"ext4\"\n").unwrap();
    assert_eq!(c.data_fs, DataFs::Ext4);
    assert_eq!(Config::default().data_fs, DataFs::F2fs);
    assert_eq!(c.services[0].argv, ["/usr/bin/trellis-runtime"]);
    assert!(Config::from_toml("data_fs = 1").unwrap_err().contains("data_fs"));
    assert_eq!(c.backoff(1), Duration::from_millis(500));
    assert_eq!(c.backoff(20), Duration::from_secs(30));
    let _ = Outcome::Fatal(String::new());
}

/// The kernel drops signals sent to PID 1 that it has no handler for: without
/// them `reboot` and `poweroff` would vanish. Installing them is the first
/// thing init does; when that fails it says so and reboots the way every fatal
/// error does, before it mounts the data partition or starts anything.
#[test]
fn signal_handlers_are_installed_first_and_failing_to_is_fatal() {
    let mut t = Trace::pi_like(f2fs_head());
    t.requests.push_back((Duration::from_secs(1), Request::Reboot));
    main_loop(&mut t, &config());
    assert_eq!(t.calls[0], "install-signal-handlers", "{:#?}", t.calls);
    assert!(t.called("spawn /usr/bin/trellis-runtime"), "{:#?}", t.calls);

    let mut t = Trace::pi_like(f2fs_head());
    t.signals_fail = true;
    main_loop(&mut t, &config());
    assert!(
        t.called("log fatal: cannot install the signal handlers (reboot and poweroff requests would be lost)"),
        "{:#?}",
        t.calls
    );
    assert!(!t.called("mount /dev/rootdisk0p7") && !t.called("run ") && !t.called("spawn"), "{:#?}", t.calls);
    let tail: Vec<&str> = t.calls.iter().rev().take(4).rev().map(String::as_str).collect();
    assert_eq!(tail, ["sync", "umount /data", "sync", "reboot Reboot"]);
}

/// `data-fs` is `f2fs` or `ext4`, checked when the file is read: an unknown
/// value is an error naming it and the accepted ones. It used to format the
/// partition with mkfs.f2fs and then fail to mount it as the unknown type, on
/// every boot.
#[test]
fn an_unknown_data_fs_is_a_config_error_never_a_format() {
    let e = Config::from_toml("data-fs = \"btrfs\"\n").unwrap_err();
    assert!(e.contains("btrfs") && e.contains("f2fs") && e.contains("ext4"), "{e}");
    assert!(Config::from_toml("data-fs = \"F2FS\"\n").is_err(), "exactly as mount(2) names it");

    let mut t = Trace::pi_like(vec![0xff; 4096]); // blank: a first boot would format it
    t.files.insert(INIT_CONFIG.into(), "data-fs = \"btrfs\"\n".into());
    run(&mut t, INIT_CONFIG);
    let expected =
        "log fatal: /etc/trellis/init.toml: line 1, column 11: unknown variant `btrfs`, expected `f2fs` or `ext4`";
    assert!(t.called(expected), "{:#?}", t.calls);
    assert!(!t.called("run mkfs") && !t.called("mount /dev/rootdisk0p7"), "{:#?}", t.calls);
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");
}

#[test]
fn an_ext4_data_partition_is_formatted_checked_and_mounted_as_ext4() {
    let mut t = Trace::pi_like(vec![0xff; 4096]);
    let cfg = Config { data_fs: DataFs::Ext4, ..config() };
    assert!(boot(&mut t, &cfg).unwrap().formatted);
    assert!(t.called("run mkfs.ext4 -q -F -L data /dev/rootdisk0p7"), "{:#?}", t.calls);
    assert!(t.called("mount /dev/rootdisk0p7 /data ext4"), "{:#?}", t.calls);
    let mut t = Trace::pi_like(f2fs_head());
    t.data_broken = true;
    t.fsck_code = 1;
    boot(&mut t, &cfg).unwrap();
    assert!(t.called("run fsck.ext4 -p /dev/rootdisk0p7"), "{:#?}", t.calls);
}

/// A malformed init.toml. It is on the read-only root filesystem, so it came
/// with the image and is the same on every boot: the image build refuses it
/// (`trellis-init --check`, in board/rpi4/post-build.sh), and an image that
/// has one anyway does not boot on a guess. init says what is wrong and
/// reboots before it mounts the data partition or starts a service; a trial
/// boot of a new image thereby falls back to the slot that booted before. It
/// used to start the built-in defaults (the runtime only: no network, NTP,
/// D-Bus or RAUC) after one console line.
#[test]
fn a_malformed_init_toml_is_fatal_and_starts_nothing() {
    for (text, says) in [
        ("[[services]]\nname = \"runtime\"\nargv = [\"/usr/bin/trellis-runtime\"\n", "expected"),
        ("disks = [\"vda\"]\nwatchdog-pet-ms = \"5s\"\n", "watchdog-pet-ms"),
        ("disk = [\"vda\"]\n", "unknown field `disk`"),
        ("[[services]]\nname = \"network\"\nargv = []\n", "service \"network\": argv names no program"),
        ("data-partition = 0\n", "data-partition = 0"),
    ] {
        let mut t = Trace::pi_like(f2fs_head());
        t.files.insert(INIT_CONFIG.into(), text.into());
        t.requests.push_back((Duration::from_secs(1), Request::Reboot));
        run(&mut t, INIT_CONFIG);
        let fatal = t.calls.iter().find(|c| c.starts_with("log fatal: /etc/trellis/init.toml: "));
        let one_line = |l: &String| !l.contains('\n');
        assert!(
            fatal.is_some_and(|l| l.contains(says) && l.contains("trellis-init --check") && one_line(l)),
            "{text}: {:#?}",
            t.calls
        );
        assert!(!t.called("spawn") && !t.called("mount /dev/rootdisk0p7") && !t.called("run "), "{:#?}", t.calls);
        let tail: Vec<&str> = t.calls.iter().rev().take(2).rev().map(String::as_str).collect();
        assert_eq!(tail, ["sync", "reboot Reboot"], "{text}: {:#?}", t.calls);
    }
}

#[test]
fn a_good_init_toml_is_what_boots_and_a_missing_one_boots_the_defaults() {
    let mut t = Trace::pi_like(f2fs_head());
    t.files.insert(
        INIT_CONFIG.into(),
        "[[services]]\nname = \"network\"\nargv = [\"/usr/lib/trellis/network.sh\"]\n".into(),
    );
    t.requests.push_back((Duration::from_secs(1), Request::Reboot));
    run(&mut t, INIT_CONFIG);
    assert!(t.called("spawn /usr/lib/trellis/network.sh pid 101"), "{:#?}", t.calls);
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");

    let mut t = Trace::pi_like(f2fs_head());
    t.requests.push_back((Duration::from_secs(1), Request::Reboot));
    run(&mut t, INIT_CONFIG);
    assert!(t.called("log no /etc/trellis/init.toml: the built-in defaults (the runtime only)"), "{:#?}", t.calls);
    assert!(t.called("spawn /usr/bin/trellis-runtime pid 101"), "{:#?}", t.calls);
}

/// What the images ship: both boards' init.toml (post-build.sh prepends the
/// build time) are accepted, with the whole service set.
#[test]
fn the_boards_init_toml_are_valid() {
    for board in ["qemu-aarch64", "rpi4"] {
        let path = format!("{}/../../board/{board}/init.toml", env!("CARGO_MANIFEST_DIR"));
        let text = format!("build-time = 1800000000\n{}", std::fs::read_to_string(&path).unwrap());
        let cfg = Config::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let names: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["runtime", "network", "ntp", "dbus", "rauc", "console"], "{path}");
        assert_eq!(cfg.data_fs, DataFs::F2fs);
    }
}

/// Numbers at the edge of their type in init.toml do not make init panic
/// (a panic in PID 1 is a kernel panic): a build time past what the system
/// can represent leaves the clock alone (adding it to the epoch panicked),
/// and the back-off and stop timeout saturate.
#[test]
fn absurd_numbers_in_init_toml_do_not_panic() {
    let text = "build-time = 18446744073709551615\nrestart-backoff-ms = 18446744073709551615\n\
                [[services]]\nname = \"runtime\"\nargv = [\"/usr/bin/trellis-runtime\"]\n\
                stop-timeout-ms = 18446744073709551615\n";
    let mut t = Trace::pi_like(f2fs_head());
    t.files.insert(INIT_CONFIG.into(), text.into());
    t.requests.push_back((Duration::from_secs(1), Request::Reboot));
    run(&mut t, INIT_CONFIG);
    assert!(t.called("log build-time 18446744073709551615 is not a time"), "{:#?}", t.calls);
    assert!(!t.called("set-time"));
    assert!(t.called("kill 101"), "{:#?}", t.calls);
    assert_eq!(t.calls.last().unwrap(), "reboot Reboot");
}
