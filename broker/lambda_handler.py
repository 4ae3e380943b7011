"""The broker Lambda's entry point: ``broker.lambda_handler.handler`` (the function is :mod:`broker.lambda_app`).

Initialisation creates ~120,000 objects that live as long as the execution environment (botocore's
service models and event hooks, pydantic and Powertools classes) and almost no garbage (~500 objects
in cycles). With the cyclic garbage collector on, their allocation alone triggers ~130 collections
that find nothing: the import is 1.12-1.16x slower (``python -m bench.api``).
So the collector is paused while the function initialises; then everything initialisation made is
frozen (moved to a generation the collector never scans, so later collections stay cheap too) and the
collector is back on for requests, whatever the import's outcome.
"""

from __future__ import annotations

import gc

gc.disable()
try:
    from broker.lambda_app import handler
finally:
    gc.freeze()
    gc.enable()

__all__ = ["handler"]
