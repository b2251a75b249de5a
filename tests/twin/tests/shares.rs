//! Per-app CPU shares, enforced by the kernel (cgroup v2, `cpu.weight` from
//! the manifest's `limits.cpu-weight`), in the twin: Paradrop's experiment
//! (SEC 2016) — two CPU-bound apps with weights 512 and 1024 on one core get
//! ⅓ and ⅔ of it — then a hot swap that changes one app's weight, and the
//! removal of an app. The measurement is `trellis_twin::shares` (also printed
//! by `make bench-twin`); the apps share CPU 0 through a cpuset (the twin has
//! two CPUs).

use std::time::Duration;

use trellis_twin::shares::{APPS_CGROUP, PARADROP, WINDOW, Window, confine_to_one_cpu, install, measure, spin_app};
use trellis_twin::{EXAMPLES, Error, Guest, Outcome, Twin};

/// Shares may miss the weights' prediction by this much (5 percentage points).
const TOLERANCE: f64 = 0.05;

fn assert_shares(window: &Window) {
    eprintln!("{}", trellis_twin::shares::table(window));
    for s in &window.shares {
        assert!(
            (s.of_apps - s.expected).abs() <= TOLERANCE,
            "{} (cpu.weight {}) got {:.1} % of the apps' CPU time, expected {:.1} % ± {:.0} points:\n{}",
            s.app,
            s.weight,
            s.of_apps * 100.0,
            s.expected * 100.0,
            TOLERANCE * 100.0,
            trellis_twin::shares::table(window)
        );
    }
    let busy: f64 = window.shares.iter().map(|s| s.of_core).sum();
    assert!(busy > 0.8, "the two apps kept CPU 0 only {:.0} % busy: they are not CPU-bound", busy * 100.0);
}

/// The thread ids in app `app`'s cgroup, each with its name.
fn threads(device: &mut Guest, app: &str) -> Result<Vec<String>, Error> {
    let out = device.sh(&format!(
        "for t in $(cat {APPS_CGROUP}/{app}/cgroup.threads); do echo \"$t $(cat /proc/$(pidof trellis-runtime)/task/$t/comm)\"; done"
    ))?;
    Ok(out.lines().map(str::to_owned).collect())
}

#[test]
fn cpu_weights_split_one_core_as_paradrop_did() -> Outcome {
    let mut twin = Twin::new("shares")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;

    // The runtime moved itself into its cgroup, a threaded domain.
    let cgroup = device.sh("cat /proc/$(pidof trellis-runtime)/cgroup")?;
    assert_eq!(cgroup.trim(), "0::/trellis", "the runtime's cgroup");
    assert_eq!(device.sh("cat /sys/fs/cgroup/trellis/cgroup.type")?.trim(), "domain threaded");
    assert_eq!(device.sh(&format!("cat {APPS_CGROUP}/blinky/cgroup.type"))?.trim(), "threaded");
    assert_eq!(device.sh(&format!("cat {APPS_CGROUP}/blinky/cpu.weight"))?.trim(), "100", "the default weight");

    for (app, weight) in PARADROP {
        install(&twin, &mut device, app, "1.0.0", &spin_app(app, "1.0.0", weight))?;
    }
    // Each app's one worker thread is in its app's cgroup.
    for (app, _) in PARADROP {
        let t = threads(&mut device, app)?;
        assert!(t.len() == 1 && t[0].ends_with(&format!("app-{app}")), "{app}'s cgroup holds {t:?}");
    }
    confine_to_one_cpu(&mut device)?;
    let names: Vec<&str> = PARADROP.iter().map(|(a, _)| *a).collect();
    let paradrop = measure(&mut device, &names, WINDOW)?;
    assert_eq!(paradrop.shares.iter().map(|s| s.weight).collect::<Vec<_>>(), [512, 1024]);
    assert_shares(&paradrop);

    // A hot swap starts a new worker thread: it lands in the app's cgroup, with
    // the new version's weight (spin-a now weighs twice spin-b), and the old
    // worker has left.
    install(&twin, &mut device, "spin-a", "1.1.0", &spin_app("spin-a", "1.1.0", 2048))?;
    device.sh("sleep 1")?;
    let t = threads(&mut device, "spin-a")?;
    assert!(t.len() == 1 && t[0].ends_with("app-spin-a"), "after the swap spin-a's cgroup holds {t:?}");
    let swapped = measure(&mut device, &names, Duration::from_secs(10))?;
    assert_eq!(swapped.shares.iter().map(|s| s.weight).collect::<Vec<_>>(), [2048, 1024]);
    assert_shares(&swapped);

    // A removed app's cgroup goes with it.
    device.sh("rm /data/apps/spin-b.wasm")?;
    device.wait_for("app file removed: stopped app=\"spin-b\"", Duration::from_secs(60))?;
    device.sh(&format!("test ! -e {APPS_CGROUP}/spin-b && test -d {APPS_CGROUP}/spin-a"))?;

    // The runtime ends (SIGABRT) and init starts it again: the new process sets
    // up over its predecessor's cgroups and the apps land in theirs again.
    device.sh("kill -ABRT $(pidof trellis-runtime)")?;
    device.wait_for("started runtime", Duration::from_secs(180))?;
    device.wait_apps_running(&[&EXAMPLES[..], &["spin-a"]].concat())?;
    device.sh("sleep 1")?;
    assert_eq!(device.sh("cat /proc/$(pidof trellis-runtime)/cgroup")?.trim(), "0::/trellis");
    assert_eq!(device.sh(&format!("cat {APPS_CGROUP}/spin-a/cpu.weight"))?.trim(), "2048");
    let t = threads(&mut device, "spin-a")?;
    assert!(t.len() == 1 && t[0].ends_with("app-spin-a"), "after the restart spin-a's cgroup holds {t:?}");
    let warnings: Vec<String> = device
        .lines()
        .into_iter()
        .filter(|l| l.text.contains("cgroup") && l.text.contains("WARN"))
        .map(|l| l.text)
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    Ok(())
}
