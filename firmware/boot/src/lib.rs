//! The RAUC custom boot backend for the Raspberry Pi firmware's A/B boot
//! (design decision 1): `autoboot.txt` on the AUTOBOOT partition names the
//! default boot partition (`[all]`) and the one for a trial boot
//! (`[tryboot]`), and `reboot "0 tryboot"` boots the trial one once.
//!
//! RAUC (`bootloader=custom`, `[handlers] bootloader-custom-backend=`) calls
//! `trellis-boot get-primary | set-primary SLOT | get-state SLOT | set-state
//! SLOT good|bad | get-current`. The mapping:
//!
//! | RAUC asks | trellis-boot does |
//! |---|---|
//! | `set-primary X` (after installing X) | `[tryboot]` = X; `[all]` untouched, so a power cut or watchdog reset still boots the old slot |
//! | (the updater reboots with `0 tryboot`) | the firmware boots X once |
//! | `set-state X good` (`rauc status mark-good` in the trial) | `[all]` = X, `[tryboot]` = the other: X is permanent |
//! | `set-state X bad` | X is no longer reachable: `[tryboot]` = `[all]` (or, if X was `[all]` and the other slot is running, `[all]` = the other) |
//! | `get-primary` | the slot of `[all]` |
//! | `get-state X` | `good` when X is `[all]` or `[tryboot]`, else `bad` |
//! | `get-current` | `rauc.slot=` of the kernel command line |
//!
//! A call that changes nothing writes nothing (mark-good runs every boot).

pub mod autoboot;
pub mod cmdline;
pub mod store;

pub use autoboot::Autoboot;
pub use store::{FileStore, Store};

/// What can go wrong, naming the file or slot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or mounted.
    #[error("{path}: {source}")]
    Io {
        /// The file or device.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The request makes no sense for this device.
    #[error("{0}")]
    Refused(String),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

/// A/B slot, by its RAUC `bootname`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Boot partition 2, root filesystem 5.
    A,
    /// Boot partition 3, root filesystem 6.
    B,
}

impl Slot {
    /// Parse a bootname.
    ///
    /// # Errors
    /// Not `A` or `B`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "A" => Ok(Self::A),
            "B" => Ok(Self::B),
            other => Err(Error::Usage(format!("unknown slot {other:?}: the bootnames are A and B"))),
        }
    }

    /// The bootname.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
        }
    }

    /// The FAT partition with its kernel and `cmdline.txt`.
    #[must_use]
    pub const fn boot_partition(self) -> u32 {
        match self {
            Self::A => 2,
            Self::B => 3,
        }
    }

    /// The root filesystem partition.
    #[must_use]
    pub const fn rootfs_partition(self) -> u32 {
        match self {
            Self::A => 5,
            Self::B => 6,
        }
    }

    /// The other slot.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The slot booted from `partition`.
    ///
    /// # Errors
    /// Not a boot partition.
    pub fn from_boot_partition(partition: u32) -> Result<Self, Error> {
        match partition {
            2 => Ok(Self::A),
            3 => Ok(Self::B),
            p => Err(Error::Invalid(format!("boot_partition={p} is neither slot A (2) nor slot B (3)"))),
        }
    }
}

/// A request from RAUC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `get-primary`
    GetPrimary,
    /// `set-primary SLOT`
    SetPrimary(Slot),
    /// `get-state SLOT`
    GetState(Slot),
    /// `set-state SLOT good|bad`
    SetState(Slot, bool),
    /// `get-current`
    GetCurrent,
}

impl Request {
    /// Parse RAUC's arguments.
    ///
    /// # Errors
    /// Unknown verb, slot or state (named).
    pub fn parse(args: &[String]) -> Result<Self, Error> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["get-primary"] => Ok(Self::GetPrimary),
            ["get-current"] => Ok(Self::GetCurrent),
            ["set-primary", slot] => Ok(Self::SetPrimary(Slot::parse(slot)?)),
            ["get-state", slot] => Ok(Self::GetState(Slot::parse(slot)?)),
            ["set-state", slot, "good"] => Ok(Self::SetState(Slot::parse(slot)?, true)),
            ["set-state", slot, "bad"] => Ok(Self::SetState(Slot::parse(slot)?, false)),
            ["set-state", _, state] => Err(Error::Usage(format!("unknown state {state:?}: good or bad"))),
            _ => Err(Error::Usage(format!(
                "usage: trellis-boot get-primary | set-primary SLOT | get-state SLOT | set-state SLOT good|bad | get-current (got {a:?})"
            ))),
        }
    }
}

/// Answer a request: what to print, after writing what must change.
///
/// # Errors
/// The store fails, or the request would leave no good slot to boot.
pub fn handle(store: &mut impl Store, request: Request) -> Result<Option<String>, Error> {
    let ab = store.read()?;
    let primary = Slot::from_boot_partition(ab.primary)?;
    let next = match request {
        Request::GetPrimary => return Ok(Some(primary.name().into())),
        Request::GetCurrent => return Ok(Some(store.current()?.name().into())),
        Request::GetState(slot) => {
            let good = [ab.primary, ab.trial].contains(&slot.boot_partition());
            return Ok(Some(if good { "good" } else { "bad" }.into()));
        }
        Request::SetPrimary(slot) if slot == primary => ab,
        Request::SetPrimary(slot) => Autoboot { trial: slot.boot_partition(), ..ab },
        Request::SetState(slot, true) => {
            Autoboot { primary: slot.boot_partition(), trial: slot.other().boot_partition() }
        }
        Request::SetState(slot, false) if slot != primary => Autoboot { trial: ab.primary, ..ab },
        Request::SetState(slot, false) => {
            let other = slot.other();
            if store.current()? != other {
                return Err(Error::Refused(format!(
                    "slot {} is the primary and slot {} is not running: marking {} bad would leave nothing known to boot",
                    slot.name(),
                    other.name(),
                    slot.name()
                )));
            }
            Autoboot { primary: other.boot_partition(), trial: other.boot_partition() }
        }
    };
    if next != ab {
        store.write(&next)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct Mem {
        ab: Autoboot,
        current: Slot,
        writes: u32,
    }

    impl Store for Mem {
        fn read(&mut self) -> Result<Autoboot, Error> {
            Ok(self.ab)
        }
        fn write(&mut self, ab: &Autoboot) -> Result<(), Error> {
            self.ab = *ab;
            self.writes += 1;
            Ok(())
        }
        fn current(&mut self) -> Result<Slot, Error> {
            Ok(self.current)
        }
    }

    fn req(s: &str) -> Request {
        Request::parse(&s.split(' ').map(String::from).collect::<Vec<_>>()).unwrap()
    }

    /// What the firmware boots: power cycle (false) or after "0 tryboot" (true).
    fn boots(m: &Mem, tryboot: bool) -> Slot {
        Slot::from_boot_partition(if tryboot { m.ab.trial } else { m.ab.primary }).unwrap()
    }

    #[test]
    fn install_trial_commit() {
        let mut m = Mem { ab: Autoboot { primary: 2, trial: 3 }, current: Slot::A, writes: 0 };
        // RAUC marks the target bad, writes it, then makes it primary.
        handle(&mut m, req("set-state B bad")).unwrap();
        assert_eq!(handle(&mut m, req("get-state B")).unwrap().unwrap(), "bad");
        assert_eq!((boots(&m, false), boots(&m, true)), (Slot::A, Slot::A), "B unreachable while written");
        handle(&mut m, req("set-primary B")).unwrap();
        assert_eq!(handle(&mut m, req("get-primary")).unwrap().unwrap(), "A", "a power cut still boots A");
        assert_eq!((boots(&m, false), boots(&m, true)), (Slot::A, Slot::B));
        // The trial boot runs B; the health gate passes; mark-good.
        m.current = Slot::B;
        assert_eq!(handle(&mut m, req("get-current")).unwrap().unwrap(), "B");
        handle(&mut m, req("set-state B good")).unwrap();
        assert_eq!((boots(&m, false), boots(&m, true)), (Slot::B, Slot::A));
        assert_eq!(handle(&mut m, req("get-state A")).unwrap().unwrap(), "good", "A stays the fallback");
        // mark-good at every later boot writes nothing.
        let writes = m.writes;
        handle(&mut m, req("set-state B good")).unwrap();
        handle(&mut m, req("set-primary B")).unwrap();
        assert_eq!(m.writes, writes);
    }

    #[test]
    fn a_trial_that_never_commits_falls_back_by_itself() {
        let mut m = Mem { ab: Autoboot { primary: 2, trial: 3 }, current: Slot::A, writes: 0 };
        handle(&mut m, req("set-primary B")).unwrap();
        m.current = Slot::B; // trial boot; then the watchdog fires, or the power goes
        assert_eq!(boots(&m, false), Slot::A);
    }

    #[test]
    fn the_only_good_slot_cannot_be_marked_bad() {
        let mut m = Mem { ab: Autoboot { primary: 2, trial: 3 }, current: Slot::A, writes: 0 };
        let e = handle(&mut m, req("set-state A bad")).unwrap_err().to_string();
        assert!(e.contains("slot A is the primary"), "{e}");
        assert_eq!(m.writes, 0);
        // From the other slot it can: the running one becomes primary.
        m.current = Slot::B;
        handle(&mut m, req("set-state A bad")).unwrap();
        assert_eq!((boots(&m, false), boots(&m, true)), (Slot::B, Slot::B));
    }

    #[test]
    fn bad_arguments_are_named() {
        let parse = |s: &str| Request::parse(&s.split(' ').map(String::from).collect::<Vec<_>>());
        assert!(parse("set-primary C").unwrap_err().to_string().contains("\"C\""));
        assert!(parse("set-state A ok").unwrap_err().to_string().contains("\"ok\""));
        assert!(parse("frob").unwrap_err().to_string().contains("usage"));
    }
}
