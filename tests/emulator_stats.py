"""Readers for the KVS emulator's counters (``{"operations": {...}, "channels": {arn: {...}}}``)."""

from __future__ import annotations

from typing import Any

from local.kvs_emulator import KvsEmulator


def operation_total(emulator: KvsEmulator, operation: str, counter: str) -> int:
    """Return an account-wide counter (``calls``, ``served``, ``throttled``, ``faulted`` ...)."""
    return int(emulator.stats()["operations"].get(operation, {}).get(counter, 0))


def channel_op(emulator: KvsEmulator, channel_arn: str, operation: str) -> dict[str, Any]:
    """Return one channel's counters for one operation (empty when it was never called)."""
    return dict(emulator.stats()["channels"].get(channel_arn, {}).get(operation, {}))
