"""Serve the Pipecat prebuilt UI (the ``pipecat-ai-prebuilt`` package's static build) next to the API."""

from __future__ import annotations

import importlib.util
import mimetypes
from pathlib import Path

from local.broker_api import StaticHandler
from local.exceptions import LocalStackError

PACKAGE = "pipecat-ai-prebuilt"


def prebuilt_dist() -> Path:
    """Return the prebuilt UI's ``dist`` directory, without running the package's import-time code.

    Raises:
        LocalStackError: The package is not installed.
    """
    spec = importlib.util.find_spec("pipecat_ai_prebuilt")
    locations = list(spec.submodule_search_locations or []) if spec else []
    dist = Path(locations[0]) / "client" / "dist" if locations else None
    if dist is None or not (dist / "index.html").is_file():
        raise LocalStackError(f"the Pipecat prebuilt UI is missing: run `make local` (it installs {PACKAGE})")
    return dist


def static_files(root: Path) -> StaticHandler:
    """Serve the files under ``root`` (``/`` is ``index.html``); nothing outside it is reachable."""
    root = root.resolve()
    cache: dict[str, tuple[int, str, bytes]] = {}

    def serve(path: str) -> tuple[int, str, bytes] | None:
        found = cache.get(path)
        if found is not None:
            return found
        relative = path.lstrip("/") or "index.html"
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return None
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        found = cache[path] = (200, content_type, target.read_bytes())
        return found

    return serve
