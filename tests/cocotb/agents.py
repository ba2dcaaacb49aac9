"""Reusable cocotb verification components: one clocking loop, stream driver and
monitor, pulse driver, pause generators and an in-order scoreboard.

Timing discipline (simulator-independent): every agent writes its signals in
``drive()`` right after a rising edge, and reads them in ``sample()`` in the
ReadOnly phase of the same cycle, when everything has settled.  A stream
handshake seen in ``sample()`` (valid and ready both high) completes at the
next rising edge.  One :class:`CycleLoop` coroutine calls every agent, so a
testbench costs two simulator callbacks per clock however many agents it has.
Test code never writes signals itself: it queues work on agents and awaits
:meth:`CycleLoop.wait_for`.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import Callable, Iterator

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge

__all__ = [
    "value_of", "CycleLoop", "StreamSource", "StreamSink", "PulseDriver",
    "random_pauses", "never", "InOrderScoreboard",
]


def value_of(handle) -> int:
    """The unsigned integer value of a signal handle."""
    v = handle.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def never() -> Iterator[bool]:
    """A pause generator that never pauses."""
    return itertools.repeat(False)


def random_pauses(rng, p: float, max_burst: int = 8) -> Iterator[bool]:
    """Pause on a fraction ``p`` of cycles, in random bursts of 1..max_burst cycles."""
    while True:
        if rng.random() < p / max(1.0, (max_burst + 1) / 2):
            for _ in range(int(rng.integers(1, max_burst + 1))):
                yield True
        else:
            yield False


class CycleLoop:
    """Calls ``drive()`` then ``sample()`` of every agent once per clock; runs waiters.

    Parameters
    ----------
    clk : handle
        The clock the agents are synchronous to.
    """

    def __init__(self, clk):
        self.clk = clk
        self.agents: list = []
        self.cycle = 0
        self._waiters: list[list] = []
        self._task = None

    def add(self, *agents):
        self.agents.extend(agents)
        return agents[0] if len(agents) == 1 else agents

    def start(self):
        self._task = cocotb.start_soon(self._run())

    async def reset_and_start(self, rst, cycles: int = 3, period_ns: int = 10):
        """Start the clock, hold ``rst`` for ``cycles`` clocks, then start the loop and let one clock pass."""
        Clock(self.clk, period_ns, unit="ns").start()
        rst.value = 1
        await ClockCycles(self.clk, cycles)
        rst.value = 0
        self.start()
        await self.cycles(1)

    def stop(self):
        if self._task is not None:
            self._task.cancel()

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            for a in self.agents:
                a.drive()
            await ReadOnly()
            for a in self.agents:
                a.sample()
            if self._waiters:
                keep = []
                for w in self._waiters:
                    pred, ev, deadline = w[0], w[1], w[2]
                    if pred():
                        ev.set()
                    elif self.cycle >= deadline:
                        w[3] = True
                        ev.set()
                    else:
                        keep.append(w)
                self._waiters = keep

    async def wait_for(self, pred: Callable[[], bool], what: str, timeout: int = 100_000) -> int:
        """Wait until ``pred()`` holds in a sampled cycle; a watchdog fails after ``timeout`` cycles.

        Returns the cycle number.  On return the caller is in the ReadOnly
        phase: it may read signals and queue work on agents, not write signals.
        """
        ev = Event()
        w = [pred, ev, self.cycle + timeout, False]
        self._waiters.append(w)
        await ev.wait()
        if w[3]:
            raise AssertionError(f"watchdog: no '{what}' within {timeout} cycles (cycle {self.cycle})")
        return self.cycle

    async def cycles(self, n: int):
        """Let ``n`` clocks pass."""
        end = self.cycle + n
        await self.wait_for(lambda: self.cycle >= end, f"{n} cycles", n + 1)


class StreamSource:
    """Drives an Amaranth ``stream`` sink port (``<prefix>__valid/ready/payload``) from a queue.

    ``pause`` yields True on cycles where no new item may be presented (random
    gaps); once presented, an item is held until accepted, as the stream rules require.
    """

    def __init__(self, dut, prefix: str, pause: Iterator[bool] | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.pause = pause or never()
        self.queue: deque[int] = deque()
        self.sent = 0
        self.stalled = 0   # cycles an item was presented and not taken (backpressure, for coverage)
        self._busy = False
        self._driven_valid = None
        # inputs are driven from time 0, reset included: an undriven input is X on a four-state
        # simulator (Icarus) and 0 on Verilator (--x-initial 0)
        self.valid.value = 0
        self.payload.value = 0

    def send(self, item: int):
        self.queue.append(int(item))

    def extend(self, items):
        self.queue.extend(int(i) for i in items)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being presented."""
        return not self._busy and not self.queue

    def drive(self):
        if self._busy:
            return
        if self.queue and not next(self.pause):
            self.payload.value = self.queue.popleft()
            self._busy = True
            if self._driven_valid is not True:
                self.valid.value = 1
                self._driven_valid = True
        elif self._driven_valid is not False:
            self.valid.value = 0
            self._driven_valid = False

    def sample(self):
        if self._busy:
            if value_of(self.ready):
                self._busy = False
                self.sent += 1
            else:
                self.stalled += 1


class StreamSink:
    """Accepts items from an Amaranth ``stream`` source port, with optional backpressure.

    Every accepted payload is passed to ``on_item`` (if given) and appended to ``items``.
    """

    def __init__(self, dut, prefix: str, pause: Iterator[bool] | None = None,
                 on_item: Callable[[int], None] | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.pause = pause or never()
        self.on_item = on_item
        self.items: list[int] = []
        self.stalled = 0   # cycles the port held an item while this sink was not ready (for coverage)
        self.count_stalls = bool(os.environ.get("NEUROVM_COVERAGE"))   # one more read a cycle: only when asked
        self._ready = False
        self.ready.value = 0   # driven from time 0, reset included (see StreamSource)

    def drive(self):
        r = not next(self.pause)
        if r != self._ready:
            self.ready.value = int(r)
            self._ready = r

    def sample(self):
        if not self._ready:
            if self.count_stalls and value_of(self.valid):
                self.stalled += 1
        elif value_of(self.valid):
            item = value_of(self.payload)
            self.items.append(item)
            if self.on_item is not None:
                self.on_item(item)


def record_coverage(hits: dict[str, int]) -> None:
    """Add ``hits`` (cover point -> count) to the run's coverage file, ``NEUROVM_COVERAGE`` in the
    environment (written by the regression runner's cases; nothing to do when unset)."""
    path = os.environ.get("NEUROVM_COVERAGE")
    if not path:
        return
    from neurovm.host.verify.coverage import CoverageDB

    db = CoverageDB.merge_files([path]) if os.path.exists(path) else CoverageDB()
    for name, count in hits.items():
        db.hit(name, count)
    db.save(path)


class PulseDriver:
    """Drives one-clock pulses on inputs, e.g. ``start`` / ``commit`` (value 1) or a bit mask."""

    def __init__(self, dut, *names: str):
        self.sig = {n: getattr(dut, n) for n in names}
        self._pending: dict[str, int] = {}
        self._high: dict[str, int] = {}
        for s in self.sig.values():
            s.value = 0

    def pulse(self, name: str, value: int = 1):
        self._pending[name] = value

    def drive(self):
        for n in self._high.keys() - self._pending.keys():
            self.sig[n].value = 0
        for n, v in self._pending.items():
            if self._high.get(n) != v:
                self.sig[n].value = v
        self._high, self._pending = self._pending, {}

    def sample(self):
        pass


class InOrderScoreboard:
    """Compares received items against expected ones, in order.

    Mismatches are recorded with the context given to :meth:`expect`, so a
    failure names the case and step; :meth:`check` raises on any of them.
    """

    def __init__(self, name: str, fmt: Callable[[int], str] = lambda x: f"0x{x:08x}", max_errors: int = 10):
        self.name = name
        self.fmt = fmt
        self.expected: deque[tuple[int, str]] = deque()
        self.errors: list[str] = []
        self.matched = 0
        self.max_errors = max_errors

    def expect(self, items, context: str):
        self.expected.extend((int(i), context) for i in items)

    def got(self, item: int):
        if not self.expected:
            self._error(f"unexpected {self.fmt(item)} (nothing expected)")
            return
        want, ctx = self.expected.popleft()
        if want != item:
            self._error(f"{ctx}: got {self.fmt(item)}, expected {self.fmt(want)}")
        else:
            self.matched += 1

    def _error(self, msg: str):
        if len(self.errors) < self.max_errors:
            self.errors.append(msg)

    def check(self):
        """Raise if anything mismatched or an expected item never came."""
        problems = list(self.errors)
        if self.expected:
            want, ctx = self.expected[0]
            problems.append(f"{ctx}: {len(self.expected)} expected item(s) never came, first {self.fmt(want)}")
        if problems:
            raise AssertionError(f"{self.name} scoreboard ({self.matched} matched):\n  " + "\n  ".join(problems))
