//! Apps on the kernel's own simulated hardware, in the twin: the runtime's
//! Linux backends (GPIO character device, i2cdev) against gpio-sim (a 54-line
//! chip standing in for the Pi's header, board/qemu-aarch64/hardware.sh) and
//! i2c-stub (the TMP102's registers at 0x48), and hot-plug events from the
//! kernel's uevents. The test sees the hardware side through gpio-sim's sysfs
//! files (`sim_gpioN/value` is what a line drives, `sim_gpioN/pull` what pulls
//! an input from outside), busybox's i2cset and libgpiod's `gpioinfo`.

use std::time::Duration;

use trellis_twin::{BOOT_TIMEOUT, EXAMPLES, Error, GPIO_SIM, Guest, Outcome, Twin, install, repack, set_temperature};

const WAIT: Duration = Duration::from_secs(60);

/// What line `n` of the chip carries (`0` or `1`).
fn line(device: &mut Guest, n: u32) -> Result<String, Error> {
    Ok(device.sh(&format!("cat {GPIO_SIM}/sim_gpio{n}/value"))?.trim().to_owned())
}

/// Pull input line `n` from outside (a button, a sensor's open-drain output).
fn pull(device: &mut Guest, n: u32, how: &str) -> Result<(), Error> {
    device.sh(&format!("echo pull-{how} > {GPIO_SIM}/sim_gpio{n}/pull")).map(drop)
}

/// `gpioinfo`'s line for line `n` of the twin's chip.
fn info(device: &mut Guest, n: u32) -> Result<String, Error> {
    let all = device.sh("gpioinfo trellis-gpio")?;
    let needle = format!("line {n:>3}:");
    Ok(all.lines().find(|l| l.contains(&needle)).unwrap_or_default().to_owned())
}

#[test]
fn the_example_apps_drive_gpio_sim_and_i2c_stub() -> Outcome {
    let mut twin = Twin::new("hardware")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;

    // blinky toggles GPIO 17 every 500 ms: the chip's line carries both levels,
    // and the kernel names blinky as the line's consumer.
    let samples =
        device.sh(&format!("for i in 1 2 3 4 5 6 7 8; do cat {GPIO_SIM}/sim_gpio17/value; sleep 0.2; done"))?;
    assert!(samples.contains('0') && samples.contains('1'), "GPIO 17 did not toggle: {samples:?}");
    let blinky = info(&mut device, 17)?;
    assert!(blinky.contains("\"blinky\"") && blinky.contains("output"), "{blinky}");

    // button holds GPIO 27 as an input with the pull-up its manifest asks for
    // (the wire reads high); pulling it down from outside is a press (active-low).
    assert_eq!(line(&mut device, 27)?, "1", "the button's pull-up");
    device.seen("watching the button on GPIO 27: released", BOOT_TIMEOUT)?;
    pull(&mut device, 27, "down")?;
    device.wait_for("button on GPIO 27 pressed (press 1, kernel time ", WAIT)?;
    pull(&mut device, 27, "up")?;
    device.wait_for("button on GPIO 27 released (press 1, kernel time ", WAIT)?;

    // thermostat reads the TMP102 registers from i2c-stub (its bus 1 is the stub,
    // runtime.toml) and switches the heater on GPIO 22 around its 21 °C setpoint.
    set_temperature(&mut device, 30.0)?;
    device.wait_for("30.00 °C: heater off", WAIT)?;
    assert_eq!(line(&mut device, 22)?, "0");
    set_temperature(&mut device, 15.0)?;
    device.wait_for("15.00 °C: heater on", WAIT)?;
    assert_eq!(line(&mut device, 22)?, "1");

    // An app asking for a line its manifest does not grant: blinky's code told
    // to blink GPIO 6 with only GPIO 5 granted. Refused, and the line is untouched.
    let sneaky = repack("blinky", |m| {
        m.name = "sneaky".into();
        m.permissions.gpio_outputs = vec![5];
        m.config.insert("line".into(), "6".into());
    });
    let before = line(&mut device, 6)?;
    install(&twin, &mut device, "sneaky", &sneaky)?;
    device.wait_for("denied: GPIO line 6 as output is not granted", WAIT)?;
    device.wait_for("refused", WAIT)?;
    assert_eq!(line(&mut device, 6)?, before, "GPIO 6 was driven");
    let six = info(&mut device, 6)?;
    assert!(six.contains("unused") && six.contains("input"), "GPIO 6 was requested: {six}");
    Ok(())
}

#[test]
fn a_gpio_chip_coming_and_going_reaches_subscribed_apps_only() -> Outcome {
    let mut twin = Twin::new("hotplug")?;
    let mut device = twin.boot()?;
    device.wait_apps_running(&EXAMPLES)?;
    device.wait_console()?;
    // The subscriber's code, following `gpio` (the seeded subscriber follows only `usb`).
    let watcher = repack("subscriber", |m| {
        m.name = "gpio-watcher".into();
        m.permissions.hotplug = vec!["gpio".into()];
        m.config.insert("hotplug".into(), "gpio".into());
    });
    install(&twin, &mut device, "gpio-watcher", &watcher)?;
    device.wait_app_running("gpio-watcher")?;

    let chip = device
        .sh("d=/sys/kernel/config/gpio-sim/plugged; mkdir $d $d/bank0 && echo 8 > $d/bank0/num_lines && echo 1 > $d/live && cat $d/bank0/chip_name")?
        .trim()
        .to_owned();
    assert!(chip.starts_with("gpiochip"), "{chip}");
    device.wait_for(&format!("gpio device {chip} added app=\"gpio-watcher\""), WAIT)?;
    device.sh("d=/sys/kernel/config/gpio-sim/plugged; echo 0 > $d/live && rmdir $d/bank0 $d")?;
    device.wait_for(&format!("gpio device {chip} removed app=\"gpio-watcher\""), WAIT)?;

    let told: Vec<String> =
        device.lines().into_iter().map(|l| l.text).filter(|t| t.contains(&format!("gpio device {chip}"))).collect();
    assert_eq!(told.len(), 2, "{told:#?}");
    assert!(told.iter().all(|t| t.contains("app=\"gpio-watcher\"")), "an unsubscribed app was told: {told:#?}");
    Ok(())
}
