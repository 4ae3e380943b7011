"""Write or check ``docs/openapi.json``, the OpenAPI document generated from the broker API's code.

python -m broker.api.openapi --write   # regenerate after changing routes or models
python -m broker.api.openapi --check   # exit 1 when the committed document has drifted (CI)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from broker.api.resolver import openapi_json

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document, or check it; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m broker.api.openapi", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write the generated document")
    action.add_argument("--check", action="store_true", help="exit 1 when the file differs from the code")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="document path (default docs/openapi.json)")
    args = parser.parse_args(argv)
    generated = openapi_json()
    if args.write:
        args.path.write_text(generated)
        print(f"wrote {args.path}")
        return 0
    current = args.path.read_text() if args.path.exists() else ""
    if current != generated:
        print(f"{args.path} is out of date: run `python -m broker.api.openapi --write`", file=sys.stderr)
        return 1
    print(f"{args.path} matches the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
