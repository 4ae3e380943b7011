"""A per-channel call limiter that holds KVS's limit in every sliding window, as the server sees it.

KVS allows 5 ``GetIceServerConfig`` calls per second per channel. A token bucket with a burst of 5
lets 9 or 10 calls land in some one-second window, and even a client-side sliding window over send
times can be overrun at the server when one request is delayed in flight and the next is not. This
limiter counts a call as occupying its slot from the moment it is sent until ``window`` seconds after
its answer came back. Whenever the server received the call, it was before the answer, so the next
call on that slot reaches the server at least ``window`` later: no window can hold more than
``limit`` calls, whatever the network does.
"""

from __future__ import annotations


class SlidingWindowLimiter:
    """At most ``limit`` calls in any ``window``-second window (not thread-safe; callers lock).

    Args:
        limit: Calls allowed per window (>= 1).
        window: Window length in seconds (> 0).
    """

    __slots__ = ("_completed", "_in_flight", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.limit = limit
        self.window = window
        # Completion times, oldest first; None while there are none, as a broker holds one limiter per
        # channel of a pool of hundreds (and the fleet simulation holds thousands of brokers). A list,
        # not a deque: it never holds more than ``limit`` times, and a deque costs 760 bytes, which
        # took a 1,000 sessions/s fleet simulation's worker from 0.45 GB to 1.0 GB at its peak.
        self._completed: list[float] | None = None
        self._in_flight = 0

    def ready_at(self, now: float) -> float:
        """Return the earliest time (>= ``now``) a call could be sent, as far as is known now.

        While every slot is in flight the answer is an estimate (``now + window``): the real time is
        one window after the first of them completes, which is later. Callers re-check then.
        """
        completed = self._completed
        if completed is not None:
            while completed and completed[0] + self.window <= now:
                del completed[0]
            if completed:
                return now if len(completed) + self._in_flight < self.limit else completed[0] + self.window
            self._completed = None  # idle again: give the memory back
        return now if self._in_flight < self.limit else now + self.window

    def acquire(self, now: float) -> None:
        """Take a slot for a call sent at ``now``.

        Raises:
            RuntimeError: No slot is free at ``now`` (check :meth:`ready_at` first).
        """
        if self.ready_at(now) > now:
            raise RuntimeError("no free slot: call ready_at() first")
        self._in_flight += 1

    def release(self, now: float) -> None:
        """Mark one call taken with :meth:`acquire` as answered (or failed) at ``now``."""
        if self._in_flight == 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_flight -= 1
        if self._completed is None:
            self._completed = []
        self._completed.append(now)

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered."""
        return self._in_flight
