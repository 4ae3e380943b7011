"""Reproducible, docker-free bundling of the broker Lambda: ``broker/`` plus pinned dependencies.

The bundle is the ``broker`` package next to the packages listed in
``broker/requirements-lambda.txt``, installed by pip for the Lambda platform (ARM64, CPython 3.12)
from wheels only, so nothing is compiled and no docker engine is needed.

Bytecode: Lambda's ``/var/task`` is read-only, so a bundle without ``.pyc`` files is compiled from
source on every cold start (measured here: ~1.1 s to import the handler instead of ~0.55 s). The
bundle therefore ships bytecode compiled by this Python 3.12 (the Lambda's magic number) in
``unchecked-hash`` mode: no timestamps, and nothing to re-check at run time.

Reproducibility: the asset hash is computed here from the inputs (every file under ``broker/``
except bytecode, which includes the pinned requirements file, and the pip recipe), never from pip's
output, so the same inputs always give the same hash. Every requirement is pinned, transitive ones
included, so the same inputs also give the same packages.

botocore data: botocore ships the models of ~440 services (27 MB unpacked); the bundle keeps only
those the broker calls (``broker.services.AWS_SERVICES``): the zipped bundle drops from ~25 MB to
~9 MB, and botocore, which lists that directory at each client creation, initialises faster (the
handler imports 1.03-1.14x faster, ``python -m bench.api``).

pip's output is cached under ``.make/lambda-deps/<key>`` (ignored by git, removed by
``make clean``), keyed by the requirements file and the recipe: only the first synth after a
requirement changes reaches PyPI.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, CfnResource, DockerImage, Duration, ILocalBundling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from broker.services import AWS_SERVICES
from stacks.checks import acknowledge, redundant_depends_on

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_DIRECTORY = REPO_ROOT / "broker"
REQUIREMENTS_FILE = "requirements-lambda.txt"
CACHE_DIRECTORY = REPO_ROOT / ".make" / "lambda-deps"
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
PIP_PLATFORM_ARGS = (
    "--platform",
    "manylinux2014_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    LAMBDA_PYTHON_VERSION,
    "--only-binary=:all:",
    "--no-compile",
)
_SKIPPED_NAMES = ("__pycache__", "*.pyc", "*.pyo")
BYTECODE_RECIPE = "compileall unchecked-hash"
BOTOCORE_DATA = Path("botocore") / "data"


class BundlingError(RuntimeError):
    """The broker Lambda bundle could not be built."""


def _is_skipped(path: Path) -> bool:
    return any(part == "__pycache__" for part in path.parts) or path.suffix in {".pyc", ".pyo"}


def source_files(directory: Path) -> list[Path]:
    """Return the files of ``directory`` that go into the bundle, sorted, bytecode excluded."""
    return sorted(
        path for path in directory.rglob("*") if path.is_file() and not _is_skipped(path.relative_to(directory))
    )


def asset_hash(directory: Path = BROKER_DIRECTORY) -> str:
    """Return the bundle's hash: its sources, the pinned requirements and the pip recipe.

    Bytecode and file times are left out, so a checkout, a test run or a touch changes nothing.
    """
    digest = hashlib.sha256()
    digest.update("\0".join((*PIP_PLATFORM_ARGS, BYTECODE_RECIPE)).encode())
    for path in source_files(directory):
        digest.update(b"\0" + path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _dependencies_key(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update("\0".join((*PIP_PLATFORM_ARGS, BYTECODE_RECIPE, *AWS_SERVICES)).encode())
    return digest.hexdigest()[:32]


def compile_bytecode(directory: Path) -> None:
    """Compile every ``.py`` under ``directory`` to ``unchecked-hash`` bytecode for Python 3.12.

    Raises:
        BundlingError: This is not Python 3.12 (its bytecode would not load in the Lambda), or a file
            does not compile.
    """
    if f"{sys.version_info.major}.{sys.version_info.minor}" != LAMBDA_PYTHON_VERSION:
        raise BundlingError(
            f"the broker bundle is compiled for the Lambda's Python {LAMBDA_PYTHON_VERSION}; "
            f"run the CDK app with Python {LAMBDA_PYTHON_VERSION} (make synth uses .venv)"
        )
    compiled = compileall.compile_dir(
        directory, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, workers=0
    )
    if not compiled:
        raise BundlingError(f"some Python files under {directory} do not compile")


def keep_botocore_services(site: Path, services: tuple[str, ...] = AWS_SERVICES) -> None:
    """Delete the botocore data of every service but ``services`` from the packages in ``site``.

    The files at the top of the data directory (endpoints, partitions, retry and default settings)
    stay: every client needs them.

    Raises:
        BundlingError: botocore is not in ``site``, or it has no data for one of ``services``.
    """
    data = site / BOTOCORE_DATA
    if not data.is_dir():
        raise BundlingError(f"{data} is missing: the broker Lambda needs botocore")
    missing = [name for name in services if not (data / name).is_dir()]
    if missing:
        raise BundlingError(f"this botocore has no data for {', '.join(missing)} (see broker/services.py)")
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in services:
            shutil.rmtree(entry)


def install_dependencies(requirements: Path, cache_directory: Path = CACHE_DIRECTORY) -> Path:
    """Install ``requirements`` for the Lambda platform once and return the cached directory.

    Raises:
        BundlingError: pip failed (for example PyPI could not be reached on the first run).
    """
    target = cache_directory / _dependencies_key(requirements)
    if target.is_dir():
        return target
    cache_directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="installing-", dir=cache_directory))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        *PIP_PLATFORM_ARGS,
        "--target",
        str(staging),
        "-r",
        str(requirements),
    ]
    # The command is built from constants and paths inside the repository, never from input.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundlingError(
            f"pip could not install {requirements} for the Lambda (ARM64, Python "
            f"{LAMBDA_PYTHON_VERSION}); the first synth after a requirement changes needs PyPI. "
            f"pip said:\n{result.stderr.strip()[-2000:]}"
        )
    keep_botocore_services(staging)
    compile_bytecode(staging)
    try:
        os.replace(staging, target)
    except OSError:
        # Another synth finished the same install first: its copy is identical.
        shutil.rmtree(staging, ignore_errors=True)
    return target


@jsii.implements(ILocalBundling)
class BrokerLocalBundling:
    """Builds the bundle on this machine with pip; it never declines, so docker is never used."""

    def __init__(self, broker_directory: Path = BROKER_DIRECTORY) -> None:
        self._broker_directory = broker_directory

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        """Write the dependencies and the ``broker`` package into ``output_dir``.

        Raises:
            BundlingError: The requirements file is missing or pip failed.
        """
        requirements = self._broker_directory / REQUIREMENTS_FILE
        if not requirements.is_file():
            raise BundlingError(f"{requirements} is missing: it pins the broker Lambda's dependencies")
        output = Path(output_dir)
        shutil.copytree(install_dependencies(requirements), output, dirs_exist_ok=True)
        shutil.copytree(
            self._broker_directory,
            output / "broker",
            ignore=shutil.ignore_patterns(*_SKIPPED_NAMES, REQUIREMENTS_FILE),
            dirs_exist_ok=True,
        )
        compile_bytecode(output / "broker")
        return True


def broker_code(broker_directory: Path = BROKER_DIRECTORY) -> lambda_.Code:
    """Return the broker Lambda's code asset, bundled locally with a reproducible hash."""
    return lambda_.Code.from_asset(
        str(broker_directory),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash(broker_directory),
        bundling=BundlingOptions(
            # Required by the API, never pulled: BrokerLocalBundling always bundles or raises.
            image=LAMBDA_RUNTIME.bundling_image,
            local=BrokerLocalBundling(broker_directory),
        ),
    )


def broker_function(
    scope: Construct,
    construct_id: str,
    *,
    handler: str,
    description: str,
    role: iam.IRole,
    log_group: logs.ILogGroup,
    memory_size: int,
    timeout: Duration,
    environment: dict[str, str] | None = None,
) -> lambda_.Function:
    """A Lambda function running the broker's code: ARM64, the pinned Python, the bundled asset.

    The role may write to the log group; the function's checks are answered here, once for every
    function that runs this bundle.
    """
    function = lambda_.Function(
        scope,
        construct_id,
        description=description,
        runtime=LAMBDA_RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        handler=handler,
        code=broker_code(),
        memory_size=memory_size,
        timeout=timeout,
        role=role,
        log_group=log_group,
        environment=environment,
    )
    log_group.grant_write(role)
    redundant_depends_on([cast(CfnResource, function.node.default_child)])
    acknowledge(
        function,
        "L1",
        f"pinned to Python {LAMBDA_PYTHON_VERSION}: the bundle's wheels are resolved for that interpreter "
        "and it is the version the broker is tested on",
    )
    return function
