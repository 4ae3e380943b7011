"""Run Debian's coturn on loopback as the local stand-in for KVS TURN.

coturn checks TURN REST credentials (``username = "<expiry>:<id>"``, ``password =
base64(hmac_sha1(secret, username))``) against ``--static-auth-secret``: the KVS emulator mints them
with the same secret, so credentials handed out by the broker really allocate relays here.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from local.exceptions import LocalStackError
from local.process import die_with_parent

logger = logging.getLogger(__name__)

_STUN_MAGIC_COOKIE = 0x2112A442
_STUN_BINDING_REQUEST = 0x0001
_STUN_BINDING_SUCCESS = 0x0101


@dataclass(frozen=True)
class CoturnConfig:
    """How to run coturn.

    Attributes:
        host: Address to listen and relay on (loopback only).
        port: TURN port (UDP and TCP).
        secret: TURN REST shared secret; the KVS emulator must use the same one.
        realm: TURN realm.
        min_port: Lowest relay port.
        max_port: Highest relay port.
        permission_lifetime: Seconds a permission lasts (coturn default 300); shorten to compress a long call.
        channel_lifetime: Seconds a channel binding lasts (coturn default 600).
        max_allocate_lifetime: Longest allocation lifetime in seconds (coturn default 3600).
        log_dir: Where coturn's log goes (a temporary directory by default).
        verbose: Log every allocation, permission and error (coturn's ``--verbose``), not just start-up.
    """

    host: str = "127.0.0.1"
    port: int = 3478
    secret: str = "local-turn-secret"  # noqa: S105 (a loopback-only test server)
    realm: str = "local.pipecat"
    min_port: int = 49160
    max_port: int = 49660
    permission_lifetime: int | None = None
    channel_lifetime: int | None = None
    max_allocate_lifetime: int | None = None
    log_dir: Path | None = None
    verbose: bool = False

    @property
    def uris(self) -> tuple[str, ...]:
        """TURN URIs for this server, in the shape KVS returns them (UDP and TCP)."""
        return (
            f"turn:{self.host}:{self.port}?transport=udp",
            f"turn:{self.host}:{self.port}?transport=tcp",
        )


def find_turnserver() -> str:
    """Return the path of coturn's ``turnserver``.

    Raises:
        LocalStackError: coturn is not installed; the message says how to install it.
    """
    path = shutil.which("turnserver") or next(
        (p for p in ("/usr/bin/turnserver", "/usr/local/bin/turnserver") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise LocalStackError("coturn is not installed: run `make system-deps` (or `sudo apt-get install coturn`)")
    return path


def stun_binding_ok(host: str, port: int, timeout: float = 0.5) -> bool:
    """Send one STUN Binding request over UDP; True when a success response comes back."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", _STUN_BINDING_REQUEST, 0, _STUN_MAGIC_COOKIE) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (host, port))
            answer, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return (
        len(answer) >= 20
        and struct.unpack("!H", answer[:2])[0] == _STUN_BINDING_SUCCESS
        and answer[8:20] == transaction
    )


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Raise a clear error when ``port`` is taken on ``host`` (TCP or UDP).

    Raises:
        LocalStackError: The port is in use; the message names it and what wanted it.
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # As the servers themselves do: connections of a previous run in TIME_WAIT do not count.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise LocalStackError(
                    f"port {port} on {host} is already in use; {what} needs it (stop what uses it or pick another port)"
                ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port free for both TCP and UDP on ``host`` (TURN and the agent need both kinds).

    Raises:
        LocalStackError: None was found in 200 tries.
    """
    for _ in range(200):
        port = random.randint(20000, 40000)  # below Linux's ephemeral range, so clients do not take it
        try:
            ensure_port_free(host, port, "a free-port probe")
        except LocalStackError:
            continue
        return port
    raise LocalStackError(f"no port free for both TCP and UDP on {host} after 200 tries")


class Coturn:
    """A coturn process on loopback; a context manager that starts it and stops it.

    Args:
        config: The settings.
    """

    def __init__(self, config: CoturnConfig | None = None) -> None:
        self.config = config or CoturnConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    def command(self, workdir: Path) -> list[str]:
        """Return the ``turnserver`` command line."""
        c = self.config
        command = [
            find_turnserver(),
            "-n",  # no configuration file: everything is on this line
            f"--listening-ip={c.host}",
            f"--relay-ip={c.host}",
            f"--listening-port={c.port}",
            f"--min-port={c.min_port}",
            f"--max-port={c.max_port}",
            "--use-auth-secret",
            f"--static-auth-secret={c.secret}",
            f"--realm={c.realm}",
            "--allow-loopback-peers",  # without it, loopback peers get 403
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--fingerprint",
            "--no-software-attribute",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--log-file={self.log_path}",
            "--simple-log",
            "--no-stdout-log",
        ]
        if c.verbose:
            command.append("--verbose")
        for flag, value in (
            ("--permission-lifetime", c.permission_lifetime),
            ("--channel-lifetime", c.channel_lifetime),
            ("--max-allocate-lifetime", c.max_allocate_lifetime),
        ):
            if value is not None:
                command.append(f"{flag}={value}")
        return command

    def start(self, timeout: float = 10.0) -> None:
        """Start coturn and wait until it answers STUN.

        Raises:
            LocalStackError: coturn is missing, the port is taken, or it did not come up in time.
        """
        ensure_port_free(self.config.host, self.config.port, "coturn")
        self._workdir = tempfile.TemporaryDirectory(prefix="coturn-")
        workdir = Path(self._workdir.name)
        log_dir = self.config.log_dir or workdir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "coturn.log"
        self._process = subprocess.Popen(  # noqa: S603 (fixed program, our own arguments)
            self.command(workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A killed parent must not leave a TURN server behind holding its ports.
            preexec_fn=die_with_parent(),  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalStackError(f"coturn exited with code {self._process.returncode}; see {self.log_path}")
            if stun_binding_ok(self.config.host, self.config.port):
                logger.info("coturn ready on %s:%d", self.config.host, self.config.port)
                return
            time.sleep(0.05)
        self.stop()
        raise LocalStackError(f"coturn did not answer STUN within {timeout:g} s; see {self.log_path}")

    @property
    def pid(self) -> int | None:
        """Process id of the running coturn."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """Stop coturn (the process this object started, by its pid) and remove its work files."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Coturn:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
