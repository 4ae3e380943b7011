"""Sliding one-second windows: the rate limiter and the busiest-window tracker.

Both count events in the window ``(now - window, now]``. Times must not go backwards; the emulator
takes them under its lock so concurrent requests are stamped in the order they are decided.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """Timestamps of the events that happened in the trailing window ``(now - window, now]``."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._events: deque[float] = deque()

    def count(self, now: float) -> int:
        """Return how many recorded events lie in ``(now - window, now]``."""
        horizon = now - self._window
        while self._events and self._events[0] <= horizon:
            self._events.popleft()
        return len(self._events)

    def add(self, now: float) -> int:
        """Record an event at ``now`` and return the window's count including it."""
        count = self.count(now) + 1
        self._events.append(now)
        return count


class RateLimiter:
    """Admits at most ``limit`` events per sliding window; refused events are not counted.

    A call at time ``t`` is refused when ``(t - window, t]`` already holds ``limit`` admitted calls.
    Counting only admitted calls matches a server that sheds excess load without doing the work,
    and means a client that keeps retrying while throttled is served again once the window passes.
    A limit of ``0`` admits everything.
    """

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self._admitted = SlidingWindow(window_seconds)

    def has_room(self, now: float) -> bool:
        """Return whether a call at ``now`` would be admitted, without recording it."""
        return self.limit == 0 or self._admitted.count(now) < self.limit

    def record(self, now: float) -> None:
        """Count a call admitted at ``now``."""
        if self.limit:
            self._admitted.add(now)


class BusiestWindow:
    """Tracks the largest number of events seen in any sliding window so far."""

    def __init__(self, window_seconds: float) -> None:
        self._recent = SlidingWindow(window_seconds)
        self.maximum = 0

    def add(self, now: float) -> None:
        """Record an event at ``now``.

        The busiest window always ends at some event, so checking at every event is exact.
        """
        self.maximum = max(self.maximum, self._recent.add(now))
