"""Local mode: the whole system on one machine with no AWS account."""

from __future__ import annotations

import os
from types import MappingProxyType

OFFLINE_AWS_ENV = MappingProxyType(
    {
        # Dummy credentials so boto3 signs requests; nothing that could reach a real account.
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
"""The environment under which boto3 talks only to the local emulators."""
