"""Guest SDK for Trellis apps in Python (componentize-py).

The Python twin of the Rust SDK (`wasm-apps/sdk`): subclass `App`, then
export it with `exports`:

    import trellis_sdk
    from trellis_sdk import App, Level, Start, gpio, timers

    class Hello(App):
        @classmethod
        def start(cls, start: Start) -> "Hello":
            trellis_sdk.info("hello")
            return cls()

    WitWorld, State = trellis_sdk.exports(Hello)

Every app targets the `trellis:app/stateful-app` world (`wit/trellis.wit`):
`start` and `handle`, and `state` (`save` / `restore`) for handing state to
the next version on a swap. Errors read like the Rust SDK's: a host error is
"denied: GPIO line 5 ...", a bad config value "config line = \"x\" is not
valid". Raise `Err("message")` (or let a host call's error through) to return
an error from a handler; any other exception is a bug, and traps like a Rust
panic (the runtime restarts the app with back-off).

Build: `make apps` (scripts/python-apps.sh), or by hand:
`componentize-py -d wit -w stateful-app componentize app
-p wasm-apps/python/NAME -p wasm-apps/python/sdk -o NAME.component.wasm`,
then `trellis app pack`.
"""

from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from componentize_py_types import Err
from wit_world import exports as _exports
import wit_world
from wit_world.imports import clocks, gpio, hotplug, i2c, kv, pubsub, pwm, spi, timers  # noqa: F401  (re-exported)
from wit_world.imports.events import (
    Event_GpioEdge,
    Event_Hotplug,
    Event_Message,
    Event_Shutdown,
    Event_Timer,
    GpioEdge,
    HotplugEvent,
)
from wit_world.imports.log import LogLevel, log
from wit_world.imports.types import (  # noqa: F401  (re-exported)
    Edge,
    Error_Denied,
    Error_Invalid,
    Error_Io,
    Error_NotFound,
    Error_QuotaExceeded,
    Level,
)

__all__ = [
    "App", "Start", "Err", "Level", "Edge", "GpioEdge", "HotplugEvent", "exports",
    "clocks", "gpio", "hotplug", "i2c", "kv", "pubsub", "pwm", "spi", "timers",
    "debug", "info", "warn", "error", "error_text", "u32", "u64",
]

_PREFIXES = (
    (Error_Denied, "denied"),
    (Error_NotFound, "not found"),
    (Error_Invalid, "invalid"),
    (Error_QuotaExceeded, "quota exceeded"),
    (Error_Io, "I/O error"),
)


def error_text(value: object) -> str:
    """A host call's error as the Rust SDK words it ("denied: ..."); a string as is."""
    for kind, prefix in _PREFIXES:
        if isinstance(value, kind):
            return f"{prefix}: {value.value}"
    return str(value)


def debug(message: str) -> None:
    """Log at debug level."""
    log(LogLevel.DEBUG, message)


def info(message: str) -> None:
    """Log at info level."""
    log(LogLevel.INFO, message)


def warn(message: str) -> None:
    """Log at warn level."""
    log(LogLevel.WARN, message)


def error(message: str) -> None:
    """Log at error level."""
    log(LogLevel.ERROR, message)


def _unsigned(bits: int) -> Callable[[str], int]:
    top = (1 << bits) - 1

    def parse(text: str) -> int:
        # As Rust's `u32::from_str`: ASCII digits with an optional `+`, nothing else.
        digits = text[1:] if text.startswith("+") else text
        if not digits or not digits.isascii() or not digits.isdigit():
            raise ValueError(text)
        value = int(digits)
        if value > top:
            raise ValueError(text)
        return value

    return parse


u32 = _unsigned(32)
u64 = _unsigned(64)

T = TypeVar("T")


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


class Start:
    """What `App.start` is given: the manifest's `[config]` and any state
    handed over by the previous version (`restored`, on a swap)."""

    def __init__(self, config: Dict[str, str], restored: Optional[bytes]) -> None:
        self.config = config
        self.restored = restored

    def get(self, key: str, default: T, parse: Callable[[str], T] = u32) -> T:  # type: ignore[assignment]
        """Config `key` parsed by `parse` (default `u32`), or `default` when absent.
        A value that does not parse is an error naming the key."""
        text = self.config.get(key)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError:
            raise Err(f"config {key} = {_quoted(text)} is not valid") from None


class App:
    """An app. Every handler has a default that ignores the event."""

    @classmethod
    def start(cls, start: Start) -> "App":
        """Set up: claim hardware, start timers, subscribe. Raise `Err` to refuse this version."""
        raise NotImplementedError

    def on_timer(self, timer_id: int) -> None:
        """A timer fired."""

    def on_gpio_edge(self, edge: GpioEdge) -> None:
        """An edge on a claimed input line."""

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on a subscribed topic."""

    def on_hotplug(self, event: HotplugEvent) -> None:
        """A device of a subscribed subsystem appeared or went away."""

    def on_shutdown(self) -> None:
        """The app is being stopped or replaced."""

    def save(self) -> Optional[bytes]:
        """State to hand to the next version on a swap."""
        return None


def _calling(f: Callable[[], T]) -> T:
    """Run `f`; an `Err` leaves as `Err(str)`, worded like the Rust SDK."""
    try:
        return f()
    except Err as e:
        raise Err(error_text(e.value)) from None


def exports(app: type) -> Tuple[type, type]:
    """The component's exports for `app` (a subclass of `App`):
    `WitWorld, State = trellis_sdk.exports(MyApp)` at the top of the app's module."""
    slot: List[Optional[App]] = [None]
    restored: List[Optional[bytes]] = [None]

    def running() -> App:
        if slot[0] is None:
            raise Err("the app has not started")
        return slot[0]

    class WorldExports(wit_world.WitWorld):
        def start(self, config: List[Tuple[str, str]]) -> None:
            begin = Start(dict(config), restored[0])
            restored[0] = None
            slot[0] = _calling(lambda: app.start(begin))

        def handle(self, event: wit_world.imports.events.Event) -> None:
            a = running()
            if isinstance(event, Event_Timer):
                _calling(lambda: a.on_timer(event.value))
            elif isinstance(event, Event_GpioEdge):
                _calling(lambda: a.on_gpio_edge(event.value))
            elif isinstance(event, Event_Message):
                _calling(lambda: a.on_message(event.value.topic, event.value.payload))
            elif isinstance(event, Event_Hotplug):
                _calling(lambda: a.on_hotplug(event.value))
            elif isinstance(event, Event_Shutdown):
                a.on_shutdown()

    class StateExports(_exports.State):
        def save(self) -> Optional[bytes]:
            return None if slot[0] is None else slot[0].save()

        def restore(self, data: bytes) -> None:
            restored[0] = bytes(data)

    return WorldExports, StateExports
