"""``python -m broker.sizing``."""

from __future__ import annotations

import sys

from broker.sizing.cli import main

sys.exit(main())
