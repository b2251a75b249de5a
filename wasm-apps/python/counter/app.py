"""py-counter: state that survives a swap (examples/counter, in Python). The
count lives in the key-value store under "count", a u64 little-endian (so it
also survives a reboot); the number of ticks since the device booted is handed
from version to version with `save` / `restore`.

Config: `period-ms` (1000). Publishes `counter/value` with the count.
"""

from typing import Optional

import trellis_sdk
from trellis_sdk import App, Start, kv, pubsub, timers

U64 = (1 << 64) - 1


def decode(data: Optional[bytes]) -> int:
    """A u64 from 8 little-endian bytes; 0 for anything else (as the Rust app)."""
    return int.from_bytes(data, "little") if data is not None and len(data) == 8 else 0


class Counter(App):
    def __init__(self, count: int, ticks_since_boot: int) -> None:
        self.count = count
        self.ticks_since_boot = ticks_since_boot

    @classmethod
    def start(cls, start: Start) -> "Counter":
        count = decode(kv.get("count"))
        ticks_since_boot = decode(start.restored)
        timers.set_interval(start.get("period-ms", 1000))
        trellis_sdk.info(f"counting from {count} ({ticks_since_boot} ticks since boot)")
        return cls(count, ticks_since_boot)

    def on_timer(self, timer_id: int) -> None:
        self.count = (self.count + 1) & U64
        self.ticks_since_boot = (self.ticks_since_boot + 1) & U64
        kv.set("count", self.count.to_bytes(8, "little"))
        pubsub.publish("counter/value", str(self.count).encode())
        trellis_sdk.debug(f"count {self.count}")

    def save(self) -> Optional[bytes]:
        return self.ticks_since_boot.to_bytes(8, "little")


WitWorld, State = trellis_sdk.exports(Counter)
