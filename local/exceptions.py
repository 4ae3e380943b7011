"""Errors of the local stack. Each message says what to do."""

from __future__ import annotations


class LocalStackError(Exception):
    """A local-mode part cannot start (missing package, port in use, failed health check)."""
