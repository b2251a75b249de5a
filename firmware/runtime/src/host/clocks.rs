//! `trellis:app/clocks`: monotonic time since the runtime started, and wall time.

use std::time::SystemTime;

use crate::bindings::trellis::app::clocks;

use super::HostState;

impl clocks::Host for HostState {
    fn monotonic_now(&mut self) -> u64 {
        u64::try_from(self.services.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_now(&mut self) -> clocks::Datetime {
        let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        clocks::Datetime { seconds: d.as_secs(), nanoseconds: d.subsec_nanos() }
    }
}
