"""Per-operation counters, kept for the whole account and for each channel.

Every arrival ends in exactly one of ``served``, ``throttled``, ``faulted`` or ``rejected``, so
``calls == served + throttled + faulted + rejected``:

- ``served``: admitted by the rate limiter (these, and only these, fill the rate-limit window);
  ``errors`` counts the served calls that still ended in a modeled error (not found, bad argument).
- ``throttled``: refused by the rate limiter with ClientLimitExceededException.
- ``faulted``: answered by an injected ``throttle``, ``error`` or ``not_found`` fault.
- ``rejected``: unreadable before any of the above (body not a JSON object).

``slowed`` counts calls delayed by a ``slow`` fault (they are also served or throttled), and
``max_calls_in_window`` is the most arrivals, whatever their outcome, in any sliding window.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final, Literal

from .limits import BusiestWindow

Outcome = Literal["served", "throttled", "faulted", "rejected", "errors", "slowed"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("served", "throttled", "faulted", "rejected", "errors", "slowed")


class OperationStats:
    """Counters and recent arrival times of one operation in one scope (account or channel)."""

    def __init__(self, window_seconds: float, max_recorded_calls: int) -> None:
        self.calls = 0
        self.outcomes: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        self.arrivals: deque[float] = deque(maxlen=max_recorded_calls)
        self._busiest = BusiestWindow(window_seconds)

    def arrive(self, now: float) -> None:
        """Record one arrival at monotonic time ``now``."""
        self.calls += 1
        self.arrivals.append(now)
        self._busiest.add(now)

    def to_json(self) -> dict[str, int]:
        """Return the counters as JSON."""
        counters: dict[str, int] = {"calls": self.calls}
        for outcome, count in self.outcomes.items():
            counters[outcome] = count
        counters["max_calls_in_window"] = self._busiest.maximum
        return counters


class StatsBook:
    """All counters of one emulator: per operation for the account, and per channel and operation."""

    def __init__(self, window_seconds: float, max_recorded_calls: int) -> None:
        self._window = window_seconds
        self._max_recorded = max_recorded_calls
        self._account: dict[str, OperationStats] = {}
        self._channels: dict[str, dict[str, OperationStats]] = {}

    def _scopes(self, operation: str, channel_key: str | None) -> list[OperationStats]:
        scopes = [self._account.setdefault(operation, self._new())]
        if channel_key is not None:
            scopes.append(self._channels.setdefault(channel_key, {}).setdefault(operation, self._new()))
        return scopes

    def _new(self) -> OperationStats:
        return OperationStats(self._window, self._max_recorded)

    def arrive(self, operation: str, channel_key: str | None, now: float) -> None:
        """Record an arrival for the account and, when known, the channel."""
        for scope in self._scopes(operation, channel_key):
            scope.arrive(now)

    def count(self, operation: str, channel_key: str | None, outcome: Outcome) -> None:
        """Add one to ``outcome`` for the account and, when known, the channel."""
        for scope in self._scopes(operation, channel_key):
            scope.outcomes[outcome] += 1

    def counters_json(self) -> dict[str, Any]:
        """Return ``{"operations": {op: counters}, "channels": {arn: {op: counters}}}``."""
        return {
            "operations": {op: stats.to_json() for op, stats in self._account.items()},
            "channels": {
                key: {op: stats.to_json() for op, stats in ops.items()} for key, ops in self._channels.items()
            },
        }

    def arrivals_json(self) -> dict[str, Any]:
        """Return the recorded arrival times in the same layout as :meth:`counters_json`."""
        return {
            "operations": {op: list(stats.arrivals) for op, stats in self._account.items()},
            "channels": {
                key: {op: list(stats.arrivals) for op, stats in ops.items()} for key, ops in self._channels.items()
            },
        }
