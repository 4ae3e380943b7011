"""The browser pages local mode serves next to the API.

- ``/``: the Pipecat prebuilt UI (the ``pipecat-ai-prebuilt`` package's static build). Its SmallWebRTC
  transport manages devices with Daily's media manager, which loads a script from ``c.daily.co``:
  it needs an internet connection.
- ``/offline/``: a small page on the same Pipecat JS client with the ``WavMediaManager``, bundled from
  npm into ``.make/web`` by ``make web``: it needs nothing from the internet.
"""

from __future__ import annotations

import importlib.util
import mimetypes
from pathlib import Path

from local.broker_api import StaticHandler
from local.exceptions import LocalStackError

PACKAGE = "pipecat-ai-prebuilt"
OFFLINE_PREFIX = "/offline/"
OFFLINE_BUILD = Path(__file__).resolve().parent.parent / ".make" / "web"


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


def static_files(mounts: dict[str, Path]) -> StaticHandler:
    """Serve the files under each mounted directory (a directory's path is its ``index.html``).

    Args:
        mounts: URL prefix (``/``, ``/offline/``) -> directory; the longest matching prefix wins, and
            nothing outside a directory is reachable.
    """
    roots = sorted(((prefix, root.resolve()) for prefix, root in mounts.items()), key=lambda m: -len(m[0]))
    cache: dict[str, tuple[int, str, bytes]] = {}

    def serve(path: str) -> tuple[int, str, bytes] | None:
        found = cache.get(path)
        if found is not None:
            return found
        if path + "/" in mounts:
            path += "/"
        prefix, root = next(((p, r) for p, r in roots if path.startswith(p)), ("", Path("/nonexistent")))
        relative = path[len(prefix) :].lstrip("/") or "index.html"
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return None
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        found = cache[path] = (200, content_type, target.read_bytes())
        return found

    return serve
