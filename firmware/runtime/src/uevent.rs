//! Hot-plug events from the kernel's uevents (`NETLINK_KOBJECT_UEVENT`).
//!
//! The device runs no udev daemon (init supervises a handful of services and
//! nothing renames devices), so the runtime listens to the kernel's own
//! uevent multicast group, as Nerves' `nerves_uevent` and busybox's `mdev` do,
//! rather than to udevd's re-broadcast that libudev and `tokio-udev` follow.
//! Each `add` or `remove` becomes a [`HotplugEvent`] for the apps that
//! subscribed to its subsystem (`Runtime::hotplug` checks nothing else: the
//! subscription was checked against the manifest when it was made).

use crate::{HotplugAction, HotplugEvent};

/// One uevent datagram, parsed: `ACTION@DEVPATH\0KEY=VALUE\0...`. Only `add`
/// and `remove` are hot-plug events; the device is its `DEVNAME` (`ttyUSB0`,
/// `gpiochip1`, `bus/usb/001/004`) or, for devices without a node, the last
/// part of its path (`1-1:1.0`).
#[must_use]
pub fn parse(datagram: &[u8]) -> Option<HotplugEvent> {
    let mut fields = datagram.split(|&b| b == 0).filter_map(|f| std::str::from_utf8(f).ok());
    let header = fields.next()?;
    // udevd's re-broadcasts start with "libudev"; this socket only joins the kernel's group.
    header.split_once('@')?;
    let (mut action, mut subsystem, mut devname, mut devpath) = (None, None, None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("ACTION", v)) => action = Some(v),
            Some(("SUBSYSTEM", v)) => subsystem = Some(v),
            Some(("DEVNAME", v)) => devname = Some(v),
            Some(("DEVPATH", v)) => devpath = Some(v),
            _ => {}
        }
    }
    let action = match action? {
        "add" => HotplugAction::Add,
        "remove" => HotplugAction::Remove,
        _ => return None,
    };
    let device = devname.map(|d| d.trim_start_matches("/dev/")).or_else(|| devpath?.rsplit('/').next())?;
    Some(HotplugEvent { action, subsystem: subsystem?.to_owned(), device: device.to_owned() })
}

/// Listen to the kernel's uevents and hand each hot-plug event to `deliver`,
/// on a thread of its own. Returns once the socket is bound, so a device
/// added after it returns is seen.
///
/// # Errors
/// The netlink socket cannot be opened or bound.
#[cfg(feature = "linux")]
pub fn listen(deliver: impl Fn(&HotplugEvent) + Send + 'static) -> std::io::Result<()> {
    use rustix::net::netlink::{KOBJECT_UEVENT, SocketAddrNetlink};
    use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, bind, recv, socket_with};

    let socket = socket_with(AddressFamily::NETLINK, SocketType::DGRAM, SocketFlags::CLOEXEC, Some(KOBJECT_UEVENT))?;
    // Group 1: the kernel's own broadcast.
    bind(&socket, &SocketAddrNetlink::new(0, 1))?;
    std::thread::Builder::new().name("uevents".into()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match recv(&socket, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => {
                    if let Some(event) = parse(&buf[..n.min(buf.len())]) {
                        tracing::debug!(action = ?event.action, subsystem = %event.subsystem, device = %event.device, "hot-plug");
                        deliver(&event);
                    }
                }
                // The kernel dropped events for a full socket buffer: go on with the next ones.
                Err(rustix::io::Errno::NOBUFS | rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::error!("hot-plug events stopped: {e}");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(fields: &[&str]) -> Vec<u8> {
        fields.join("\0").into_bytes()
    }

    #[test]
    fn a_gpio_chip_appearing_and_going() {
        let add = datagram(&[
            "add@/devices/platform/gpio-sim.1/gpiochip2",
            "ACTION=add",
            "DEVPATH=/devices/platform/gpio-sim.1/gpiochip2",
            "SUBSYSTEM=gpio",
            "MAJOR=254",
            "MINOR=2",
            "DEVNAME=gpiochip2",
            "SEQNUM=1234",
        ]);
        let event = parse(&add).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(
            event,
            HotplugEvent { action: HotplugAction::Add, subsystem: "gpio".into(), device: "gpiochip2".into() }
        );
        let remove = String::from_utf8_lossy(&add).replace("add", "remove").into_bytes();
        assert_eq!(parse(&remove).map(|e| e.action), Some(HotplugAction::Remove));
    }

    #[test]
    fn devices_without_a_node_are_named_by_their_path() {
        let add = datagram(&[
            "add@/devices/pci0000:00/usb1/1-1/1-1:1.0",
            "ACTION=add",
            "DEVPATH=/devices/pci0000:00/usb1/1-1/1-1:1.0",
            "SUBSYSTEM=usb",
        ]);
        assert_eq!(parse(&add).map(|e| e.device), Some("1-1:1.0".to_owned()));
    }

    #[test]
    fn other_actions_and_garbage_are_not_events() {
        let bind = datagram(&[
            "bind@/devices/platform/gpio-sim.1",
            "ACTION=bind",
            "DEVPATH=/devices/platform/gpio-sim.1",
            "SUBSYSTEM=platform",
        ]);
        assert_eq!(parse(&bind), None);
        assert_eq!(parse(b"libudev\0\xfe\xed"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&datagram(&["add@/x", "ACTION=add", "DEVPATH=/x"])), None, "no subsystem");
    }
}
