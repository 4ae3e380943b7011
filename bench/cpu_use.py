"""CPU used by each part of the local system while a benchmark phase runs, read from ``/proc``.

On one machine the callers (Chromium pages, aiortc peers) share the cores with the system they call;
in AWS each agent runs in its own microVM and each browser on its caller's machine. Splitting the CPU
by part says how much of a slow phase is this machine running out of cores, and whose work it was.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

PARTS: Final = (
    ("agent", "-m agent"),
    ("broker_api_and_kvs_emulator", "-m local"),
    ("coturn", "turnserver"),
    ("chromium_pages", "--type=renderer"),
    ("chromium_audio_network_gpu", "--type="),
    ("chromium_browser", "chromium"),
    ("playwright_driver", "playwright"),
)
"""Each part and a piece of its processes' command lines; the first match names a process."""
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS: Final = 0.5


def part_of(command_line: str, pid: int) -> str | None:
    """The part a process belongs to (``bench`` for this one), or ``None`` if it is none of ours."""
    if pid == os.getpid():
        return "bench"
    return next((part for part, needle in PARTS if needle in command_line), None)


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Each process of ours: its part and the CPU seconds (user + system) it has used so far."""
    used: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        part = part_of(command_line, int(entry.name))
        if part is not None:
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime, stime: 14th, 15th
            used[int(entry.name)] = (part, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return used


class CpuUse:
    """Cores used by each part during a ``with measured_cpu()`` block.

    Processes come and go (each Chromium page is a renderer that ends when the page closes), so a
    thread samples every process's CPU time every ``interval`` seconds; a process that ends is counted
    up to its last sample, which loses at most ``interval`` of its last work.
    """

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.seconds = 0.0
        self._first = {pid: seconds for pid, (_, seconds) in cpu_seconds().items()}
        self._last: dict[int, tuple[str, float]] = {}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="cpu-use", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            self._last.update(cpu_seconds())
            if self._stop.wait(self.interval):
                self._last.update(cpu_seconds())
                return

    def stop(self) -> None:
        """End the measurement (one last sample)."""
        self._stop.set()
        self._thread.join()
        self.seconds = time.monotonic() - self._started

    @property
    def cores(self) -> dict[str, float]:
        """Average cores each part used over the block."""
        used: dict[str, float] = {}
        for pid, (part, seconds) in self._last.items():
            used[part] = used.get(part, 0.0) + seconds - self._first.get(pid, 0.0)
        return {
            part: round(total / self.seconds, 2) for part, total in sorted(used.items()) if self.seconds and total > 0
        }

    def report(self) -> dict[str, object]:
        """``cores`` by part, their ``total_cores``, the machine's ``machine_cores`` and the block's ``seconds``."""
        cores = self.cores
        return {
            "cores": cores,
            "total_cores": round(sum(cores.values()), 2),
            "machine_cores": os.cpu_count(),
            "seconds": round(self.seconds, 1),
        }


@contextmanager
def measured_cpu(interval: float = SAMPLE_SECONDS) -> Iterator[CpuUse]:
    """Measure the cores each part uses while the block runs."""
    use = CpuUse(interval)
    try:
        yield use
    finally:
        use.stop()
