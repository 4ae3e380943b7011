#!/usr/bin/env python3
"""CDK entry point (``npx cdk synth``): the voice agent stack, configured by ``cdk.json`` context."""

from __future__ import annotations

import sys

from aws_cdk import App

from stacks.builder import build_app
from stacks.config import ContextError


def main() -> None:
    """Synthesize the app into ``cdk.out``; a bad context value exits with its message."""
    app = App()
    try:
        build_app(app)
    except ContextError as exc:
        sys.exit(f"error: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
