"""Card readers at the box, tied to registers: the reads waiting for each register's next sale.

`ReaderService` opens the readers the configuration binds to a register (by vendor, product,
serial, USB port path, or an explicit device path), finds them at start-up and on hot-plug, and
turns each frame into a verdict with the decoders in `drivers/`. A loyalty ID becomes pending for
its register and is consumed by the next GetRewards from that register that carries no ID of its
own; a licence leaves only "over 21: yes/no". Reads expire after `pending_ttl_s`. A card number
that no program of the policy in force takes (its `card` number ranges, app/programs/ids.py) is
refused at the reader, with the reason in its last verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.programs.ids import unmatched_read
from drivers.decoding import DecodeOptions, Verdict, decode
from drivers.decoding.verdict import reject
from drivers.discovery import DeviceInfo, DeviceMonitor, matches
from drivers.keyboard_reader import KeyboardReader
from drivers.serial_reader import SerialReader

log = logging.getLogger("connectbox.readers")

Phase = Literal["stopped", "starting", "running", "stopping"]


@dataclass(frozen=True)
class ReaderBinding:
    """One `[[readers.bind]]` entry of the configuration."""

    register_id: str
    match: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # open this device path directly (also virtual readers)
    kind: str = "serial"  # serial or keyboard; discovered devices know their own kind
    baudrate: int = 9600
    options: DecodeOptions = field(default_factory=DecodeOptions)

    def applies_to(self, device: DeviceInfo) -> bool:
        return bool(self.match) and matches(device, self.match)


@dataclass(frozen=True)
class PendingRead:
    register_id: str
    at: float
    loyalty_id: str | None = None
    source: str | None = None  # magstripe or barcode
    over_21: bool | None = None


@dataclass
class ReaderState:
    name: str
    devnode: str
    kind: str
    register_id: str
    vendor: str | None = None
    state: str = "connecting"
    detail: str = ""
    last_verdict: str = ""
    last_read_at: float | None = None
    reads: int = 0


class PendingReads:
    """The latest read per register, until it is used or expires."""

    def __init__(self, ttl_s: float = 120.0) -> None:
        self.ttl_s = ttl_s
        self._ids: dict[str, PendingRead] = {}
        self._ages: dict[str, PendingRead] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def put(self, read: PendingRead) -> None:
        with self._lock:
            target = self._ids if read.loyalty_id else self._ages
            target[read.register_id] = read
            self._arrived.notify_all()

    def take_id(self, register_id: str | None) -> PendingRead | None:
        return self._take(self._ids, register_id)

    def take_age(self, register_id: str | None) -> PendingRead | None:
        return self._take(self._ages, register_id)

    def _take(self, table: dict[str, PendingRead], register_id: str | None) -> PendingRead | None:
        if register_id is None:
            return None
        with self._lock:
            read = table.pop(register_id, None)
        if read is None or time.time() - read.at > self.ttl_s:
            return None
        return read

    def wait(self, register_id: str, timeout: float) -> bool:
        """For tests and the bench: until a read for `register_id` is pending."""
        with self._arrived:
            return self._arrived.wait_for(
                lambda: register_id in self._ids or register_id in self._ages, timeout
            )


class ReaderService:
    """The readers of the configuration's bindings, and their reads.

    `start()`, `stop()` and `rebind()` may be called in any order, from any thread, at the same
    time (the provider's config can arrive while the box starts or stops): one lock guards a
    small state machine, stopped → starting → running → stopping → stopped, and a call that finds
    another one half-way waits for it to finish. `stop()` is idempotent; `rebind()` swaps the
    bindings and, only if the service runs, reopens the readers in one step."""

    def __init__(
        self,
        bindings: list[ReaderBinding],
        pending_ttl_s: float = 120.0,
        discover: bool = True,
        lister: Callable[[], list[DeviceInfo]] | None = None,
        policy: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.bindings = bindings
        self.policy = policy  # the signed policy in force, whose programs a card must match
        self.pending = PendingReads(pending_ttl_s)
        self.discover = discover
        self._lister = lister  # tests: a stand-in for the USB bus; None = pyudev/sysfs
        self.states: dict[str, ReaderState] = {}
        self._readers: dict[str, SerialReader | KeyboardReader] = {}
        self._monitor: DeviceMonitor | None = None
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when a transition ends
        self._phase: Phase = "stopped"
        self._generation = 0  # bumped per start: a late callback of an old monitor is ignored

    # ---- life cycle -----------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    def start(self) -> None:
        """Open the bound readers; nothing if already running."""
        with self._lock:
            self._settle()
            if self._phase == "running":
                return
            generation = self._begin("starting")
        self._bring_up(generation)

    def stop(self) -> None:
        """Close every reader; nothing if not running. Idempotent, from any thread."""
        with self._lock:
            self._settle()
            if self._phase == "stopped":
                return
            monitor, readers = self._take_down()
        try:
            self._close(monitor, readers)
        finally:
            self._finish("stopped")

    def rebind(self, bindings: list[ReaderBinding]) -> None:
        """New register bindings (from the provider's config): reopen the readers if running."""
        log.info("reader bindings changed: %d binding(s)", len(bindings))
        with self._lock:
            self._settle()
            self.bindings = bindings
            if self._phase == "stopped":
                self.states.clear()
                return  # start() opens them
            monitor, readers = self._take_down()
        try:
            self._close(monitor, readers)
        finally:
            with self._lock:
                self.states.clear()
                generation = self._begin("starting")
            self._bring_up(generation)

    def _settle(self) -> None:
        """Under the lock: wait until no start, stop or rebind is half-way."""
        self._settled.wait_for(lambda: self._phase in ("stopped", "running"))

    def _begin(self, phase: Phase) -> int:
        self._phase = phase
        self._generation += 1
        return self._generation

    def _finish(self, phase: Phase) -> None:
        with self._lock:
            self._phase = phase
            self._settled.notify_all()

    def _take_down(self) -> tuple[DeviceMonitor | None, list[SerialReader | KeyboardReader]]:
        """Under the lock: enter "stopping" and hand over what is to be closed."""
        self._begin("stopping")
        monitor, self._monitor = self._monitor, None
        readers = list(self._readers.values())
        self._readers.clear()
        return monitor, readers

    @staticmethod
    def _close(monitor: DeviceMonitor | None, readers: list[SerialReader | KeyboardReader]) -> None:
        # Outside the lock: the monitor's thread may be waiting for it in _device_added.
        if monitor is not None:
            monitor.stop()
        for reader in readers:
            reader.stop()

    def _bring_up(self, generation: int) -> None:
        try:
            for binding in self.bindings:
                if binding.path:
                    self._open(binding.path, binding.kind, binding, generation, name=binding.path)
            if self.discover and any(b.match for b in self.bindings):
                self._start_monitor(generation)
        finally:
            self._finish("running")

    def _start_monitor(self, generation: int) -> None:
        try:
            # Reports what is plugged in now, then every add and remove.
            monitor = DeviceMonitor(
                lambda device: self._device_added(device, generation),
                self._device_removed,
                lister=self._lister,
                poll_interval_s=0.2 if self._lister else 2.0,
            )
            with self._lock:
                self._monitor = monitor
            monitor.start()
        except Exception as exc:  # no sysfs or udev here: configured paths still work
            log.warning("reader discovery unavailable: %s", exc)

    def _device_added(self, device: DeviceInfo, generation: int) -> None:
        binding = next((b for b in self.bindings if b.applies_to(device)), None)
        if binding is None:
            log.info(
                "reader %s (%s:%s) is not bound to a register; ignored",
                device.devnode,
                device.vendor_id,
                device.product_id,
            )
            return
        name = device.name or device.devnode
        self._open(
            device.devnode, device.kind, binding, generation, name=name, vendor=device.vendor_id
        )

    def _device_removed(self, device: DeviceInfo) -> None:
        with self._lock:
            state = self.states.get(device.devnode)
        if state is not None:
            state.state, state.detail = "gone", "unplugged"
            log.warning("reader %s unplugged", device.devnode)

    def _open(
        self,
        path: str,
        kind: str,
        binding: ReaderBinding,
        generation: int,
        name: str,
        vendor: str | None = None,
    ) -> None:
        with self._lock:
            if generation != self._generation or self._phase not in ("starting", "running"):
                return  # a callback of a monitor that is being stopped
            if path in self._readers:
                # Already open; the reader reconnects by itself after a re-plug: show its own
                # state again, not the "unplugged" an earlier removal left.
                opened, state = self._readers[path], self.states[path]
                state.state, state.detail = opened.state, opened.detail
                return
            state = ReaderState(name, path, kind, binding.register_id, vendor)
            self.states[path] = state

            def on_frame(frame: bytes) -> None:
                self._frame(state, binding, frame)

            def on_state(new_state: str, detail: str = "") -> None:
                state.state, state.detail = new_state, detail
                log.info("reader %s: %s %s", path, new_state, detail)

            if kind == "keyboard":
                reader: SerialReader | KeyboardReader = KeyboardReader(path, on_frame, on_state)
            else:
                reader = SerialReader(path, on_frame, on_state, baudrate=binding.baudrate)
            # Started under the lock: stop() only ever sees readers whose thread runs.
            reader.start()
            self._readers[path] = reader

    # ---- reads ----------------------------------------------------------------------------

    def _frame(self, state: ReaderState, binding: ReaderBinding, frame: bytes) -> None:
        verdict = self._matched(decode(frame, binding.options))
        read = _pending_from(verdict, binding.register_id)
        if read is not None:
            # Waiting for the register before the read is counted: whoever sees the count
            # (the page, a test) can rely on the read being there.
            self.pending.put(read)
        state.last_verdict = verdict.describe()
        state.last_read_at = time.time()
        state.reads += 1
        log.info(
            "reader %s (register %s): %s", state.devnode, binding.register_id, state.last_verdict
        )

    def _matched(self, verdict: Verdict) -> Verdict:
        """The verdict, or a rejection when no program of the policy takes its loyalty ID."""
        doc = self.policy() if self.policy is not None and verdict.result == "id" else None
        if doc is None or not verdict.loyalty_id:
            return verdict
        reason = unmatched_read(doc.get("programs"), verdict.loyalty_id)
        return reject(reason) if reason else verdict

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            states = list(self.states.values())
        return [vars(state).copy() for state in states]


def _pending_from(verdict: Verdict, register_id: str) -> PendingRead | None:
    if verdict.result == "id" and verdict.loyalty_id:
        return PendingRead(
            register_id, time.time(), loyalty_id=verdict.loyalty_id, source=verdict.source
        )
    if verdict.result == "dl":
        # A licence is never a loyalty ID: only the age result goes on.
        return PendingRead(register_id, time.time(), over_21=bool(verdict.over_21))
    return None
