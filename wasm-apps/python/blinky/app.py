"""py-blinky: toggles a GPIO output on a timer (examples/blinky, in Python).

Config: `line` (default 17), `period-ms` (default 500).
Build: `make apps` (scripts/python-apps.sh: componentize-py, then `trellis app pack`).
"""

import trellis_sdk
from trellis_sdk import App, Err, Level, Start, gpio, timers


class Blinky(App):
    def __init__(self, line: int) -> None:
        self.line = line
        self.level = Level.LOW
        self.toggles = 0

    @classmethod
    def start(cls, start: Start) -> "Blinky":
        line = start.get("line", 17)
        period = start.get("period-ms", 500)
        gpio.claim_output(line, Level.LOW)
        timers.set_interval(period)
        trellis_sdk.info(f"blinking GPIO {line} every {period} ms")
        return cls(line)

    def on_timer(self, timer_id: int) -> None:
        self.level = Level.HIGH if self.level == Level.LOW else Level.LOW
        gpio.write(self.line, self.level)
        self.toggles += 1
        name = "High" if self.level == Level.HIGH else "Low"
        trellis_sdk.debug(f"GPIO {self.line} {name} (toggle {self.toggles})")

    def on_shutdown(self) -> None:
        try:
            gpio.write(self.line, Level.LOW)
        except Err:
            pass


WitWorld, State = trellis_sdk.exports(Blinky)
