"""The whole system on 127.0.0.1: KVS, coturn, the agent, AgentCore's data plane, the broker API and UI.

The browser talks to the broker API and the page on one port, and to the agent's WebSocket through
the AgentCore stand-in; the emulator, coturn, the stand-in and the agent have their own loopback
ports. coturn and the emulator share one TURN REST secret per run, so the credentials the broker gets
from the emulator (for the browser at ``/start``, for the agent with each offer) allocate real relays.
As in AWS, only the broker calls KVS, and the broker reaches the agent through AgentCore's API
(``InvokeAgentRuntime``, SigV4-signed, through :mod:`local.agentcore`), with the same invoker the
Lambda uses; the WebSocket URLs it presigns are checked there too.

With ``pipeline="nova-sonic"`` the agent runs the production default pipeline, Pipecat's Nova Sonic
service unmodified, against :mod:`local.nova_sonic` (Bedrock's bidirectional stream on loopback, over
TLS with a CA made for the run) instead of the offline ``local`` pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Self

import botocore.session

from broker.api.config import build_service
from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.kvs import DEFAULT_CLIENT_CONFIG, KvsSignaling
from local import OFFLINE_AWS_ENV
from local.agentcore import AgentCoreConfig, AgentCoreStandIn
from local.broker_api import HEALTH_PATH, LocalAuth, LocalBrokerApi
from local.coturn import Coturn, CoturnConfig, ensure_port_free
from local.exceptions import LocalStackError
from local.kvs_emulator import EmulatorConfig, KvsEmulator
from local.nova_sonic.config import NovaSonicConfig
from local.nova_sonic.credentials import ContainerCredentials
from local.nova_sonic.standin import NovaSonicStandIn
from local.prebuilt import OFFLINE_BUILD, OFFLINE_PREFIX, prebuilt_dist, static_files
from local.process import die_with_parent

logger = logging.getLogger(__name__)

SYSTEM_COMMANDS = {"turnserver": "coturn", "espeak-ng": "espeak-ng"}
RUNTIME_ARN: Final = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/local_voice_agent-0000000000"
"""The local agent's runtime, as AgentCore would name it (the stand-in knows this one only)."""
TRANSPORTS: Final = "webrtc,websocket"
"""Local mode offers both transports."""
"""Commands local mode runs, and the Debian package of each."""


@dataclass(frozen=True)
class StackConfig:
    """Ports and settings of the local system.

    Attributes:
        port: The browser's port: the broker API and the prebuilt UI.
        kvs_port: The KVS emulator.
        turn_port: coturn (UDP and TCP).
        agent_port: The agent's ``/invocations``, ``/ws`` and ``/ping``.
        agentcore_port: The AgentCore data-plane stand-in (``InvokeAgentRuntime``, the WebSocket).
        channels: Signaling channels in the pool.
        ttl_seconds: TURN credential lifetime.
        relay_only: The agent gathers relay candidates only, so all media crosses coturn.
        auth: How the broker API identifies callers (the prebuilt UI sends no token: ``none``).
        log_dir: Where every part's log goes.
        coturn: Extra coturn settings (lifetimes) for tests that compress time.
        agent_env: Extra environment for the agent.
        pipeline: The agent's pipeline: ``local`` (offline Pipecat services) or ``nova-sonic`` (the
            production default, against the Nova Sonic stand-in).
        nova_sonic: The Nova Sonic stand-in's settings (port, session limit) for ``nova-sonic``.
        role_credentials_seconds: For ``nova-sonic``: give the agent temporary credentials living this
            long, from a container credentials endpoint as AgentCore gives the runtime role's (botocore
            renews them), instead of local mode's static keys. None: static keys.
    """

    port: int = 7860
    kvs_port: int = 4567
    turn_port: int = 3478
    agent_port: int = 8081
    agentcore_port: int = 8082
    channels: int = 2
    ttl_seconds: int = 300
    relay_only: bool = True
    auth: LocalAuth = field(default_factory=LocalAuth)
    log_dir: Path = Path(".local/logs")
    coturn: CoturnConfig | None = None
    agent_env: tuple[tuple[str, str], ...] = ()
    pipeline: Literal["local", "nova-sonic"] = "local"
    nova_sonic: NovaSonicConfig = field(default_factory=lambda: NovaSonicConfig(port=8083))
    role_credentials_seconds: float | None = None


def check_system_packages() -> None:
    """Raise a clear error when a command local mode needs is missing.

    Raises:
        LocalStackError: Names the Debian packages to install.
    """
    missing = sorted({package for command, package in SYSTEM_COMMANDS.items() if shutil.which(command) is None})
    if missing:
        raise LocalStackError(
            f"missing Debian package(s): {' '.join(missing)}. Run `make system-deps` "
            f"(or `sudo apt-get install {' '.join(missing)}`)"
        )


def _wait_http(url: str, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise LocalStackError(f"{what} exited with code {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (a loopback URL of ours)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LocalStackError(f"{what} did not become healthy within {timeout:g} s; see its log") from None
            time.sleep(0.2)


AGENT_READY: Final = "the first call's {pipeline} pipeline is ready"
"""The agent's log line (``agent.server.PIPELINE_READY``, with the pipeline's name) once it has built
its first call's pipeline and loaded its recognizers. ``/ping`` answers before that (AgentCore wants it
at once), but the decoders' loading holds the GIL: a call placed in the meantime loses seconds of media."""


def _wait_log(
    path: Path, line: str, *, offset: int, timeout: float, what: str, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LocalStackError(f"{what} exited with code {process.returncode}; see its log")
        with path.open("rb") as log:
            log.seek(offset)
            if line.encode() in log.read():
                return
        if time.monotonic() > deadline:
            raise LocalStackError(f"{what} was not ready within {timeout:g} s; see its log")
        time.sleep(0.1)


class LocalStack:
    """Starts the five parts, waits until each is healthy, and stops them in reverse order."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.secret = secrets.token_urlsafe(24)
        self.coturn = Coturn(
            dataclasses.replace(
                self.config.coturn or CoturnConfig(),
                host="127.0.0.1",
                port=self.config.turn_port,
                secret=self.secret,
                log_dir=self.config.log_dir,
            )
        )
        self.emulator: KvsEmulator | None = None
        self.agentcore: AgentCoreStandIn | None = None
        self.nova_sonic: NovaSonicStandIn | None = None
        self.role_credentials: ContainerCredentials | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self._agent_log: IO[bytes] | None = None
        self._agent_log_offset = 0
        self.api: LocalBrokerApi | None = None
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        """The browser's URL."""
        return f"http://127.0.0.1:{self.config.port}"

    def broker_env(self, channel_arns: list[str]) -> dict[str, str]:
        """Environment of the broker: the emulator, the pool, dummy credentials."""
        assert self.emulator is not None  # noqa: S101 (start() sets it first)
        margin = str(min(30, self.config.ttl_seconds // 3))
        return {
            **OFFLINE_AWS_ENV,
            "AWS_REGION": self.emulator.config.region,
            "AWS_DEFAULT_REGION": self.emulator.config.region,  # what botocore itself reads
            "AWS_ENDPOINT_URL_KINESIS_VIDEO": self.emulator.url,
            "TURN_CHANNEL_ARNS": ",".join(channel_arns),
            # Short local TTLs (a long-call test uses 30 s) still leave usable credentials.
            "TURN_TTL_MARGIN_SECONDS": margin,
            "TURN_SHARED_REFRESH_SECONDS": margin,
        }

    def start(self) -> Self:
        """Start everything and wait until it is healthy.

        Raises:
            LocalStackError: A package is missing, a port is taken, or a part did not come up.
        """
        config = self.config
        check_system_packages()
        pages = {"/": prebuilt_dist()}
        if (OFFLINE_BUILD / "app.js").is_file():
            pages[OFFLINE_PREFIX] = OFFLINE_BUILD
        else:
            logger.warning("the offline page is not built: run `make web` (make local does)")
        for port, what in (
            (config.port, "the broker API and UI (PORT)"),
            (config.kvs_port, "the KVS emulator"),
            (config.turn_port, "coturn"),
            (config.agent_port, "the agent"),
            (config.agentcore_port, "the AgentCore stand-in"),
            *([(config.nova_sonic.port, "the Nova Sonic stand-in")] if config.pipeline == "nova-sonic" else []),
        ):
            ensure_port_free("127.0.0.1", port, what)
        config.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.coturn.start()
            self.emulator = KvsEmulator(
                EmulatorConfig(
                    host="127.0.0.1",
                    port=config.kvs_port,
                    turn_uris=self.coturn.config.uris,
                    turn_secret=self.secret,
                    ttl_seconds=config.ttl_seconds,
                )
            ).start()
            self.env = self.broker_env(self.emulator.create_channels(config.channels))
            if config.pipeline == "nova-sonic":
                self.nova_sonic = NovaSonicStandIn(config.nova_sonic).start()
                if config.role_credentials_seconds is not None:
                    self.role_credentials = ContainerCredentials(
                        self.nova_sonic.issuer, lifetime_seconds=config.role_credentials_seconds
                    ).start()
            self._start_agent()
            self.agentcore = AgentCoreStandIn(
                AgentCoreConfig(
                    runtime_arn=RUNTIME_ARN,
                    agent_url=f"http://127.0.0.1:{config.agent_port}",
                    port=config.agentcore_port,
                )
            ).start()
            service = build_service(
                {
                    **self.env,
                    "AGENT_INVOKER": "agentcore",
                    "AGENT_RUNTIME_ARN": RUNTIME_ARN,
                    "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": self.agentcore.url,
                    "BROKER_TRANSPORTS": TRANSPORTS,
                    "SESSION_SIGNING_KEY": secrets.token_urlsafe(32),
                },
                ice=self._local_ice_broker(),
                session=self._offline_session(),
            )
            _wait_http(f"http://127.0.0.1:{config.agent_port}/ping", 180, "the agent", self.agent)
            assert self.agent is not None  # noqa: S101 (started above)
            _wait_log(config.log_dir / "agent.log", AGENT_READY.format(pipeline=config.pipeline),
                      offset=self._agent_log_offset, timeout=180,
                      what="the agent", process=self.agent)  # fmt: skip
            self.api = LocalBrokerApi(service, port=config.port, auth=config.auth, static=static_files(pages)).start()
            _wait_http(self.url + HEALTH_PATH, 10, "the broker API")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _offline_session() -> botocore.session.Session:
        """A botocore session with local mode's dummy credentials (the stand-ins check signatures made with them)."""
        session = botocore.session.Session()
        session.set_credentials(OFFLINE_AWS_ENV["AWS_ACCESS_KEY_ID"], OFFLINE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        return session

    def _local_ice_broker(self) -> IceBroker:
        """The broker's KVS clients, pointed at the emulator explicitly: this process's environment is left alone."""
        assert self.emulator is not None  # noqa: S101 (start() sets it first)
        region = self.emulator.config.region
        session = self._offline_session()
        control = session.create_client(
            "kinesisvideo", region_name=region, endpoint_url=self.emulator.url, config=DEFAULT_CLIENT_CONFIG
        )
        config = BrokerConfig.from_env(self.env)
        kvs = KvsSignaling(region=region, session=session, control_client=control)
        return IceBroker(config, kvs=kvs)

    def _start_agent(self) -> None:
        config = self.config
        # No pool settings: as in AWS, the broker draws the agent's TURN credentials from the pool
        # and sends them with each offer, so the agent never calls KVS (or the emulator) itself.
        env = {
            **os.environ,
            **self._pipeline_env(),
            "AGENT_HOST": "127.0.0.1",
            "AGENT_PORT": str(config.agent_port),
            "AGENT_ICE_SERVERS": "none",
            "AGENT_ICE_HOST_CANDIDATES": "loopback",
            "AGENT_ICE_TRANSPORT_POLICY": "relay" if config.relay_only else "all",
            "AGENT_METRICS": "log",  # each turn's latency as a log line in agent.log; no CloudWatch here
            **dict(config.agent_env),
        }
        if self.role_credentials is not None:
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
                env.pop(name, None)
        self._agent_log = (config.log_dir / "agent.log").open("ab")
        self._agent_log_offset = self._agent_log.tell()  # the log is appended to: only this run's lines count
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent"],
            env=env,
            stdout=self._agent_log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 (a killed stack must not leave the agent behind)
        )

    def _pipeline_env(self) -> dict[str, str]:
        """The agent's pipeline, and for Nova Sonic where Bedrock is and which CA vouches for it."""
        if self.nova_sonic is None:
            return {"AGENT_PIPELINE": "local"}
        credentials = dict(OFFLINE_AWS_ENV)
        if self.role_credentials is not None:  # the agent's botocore reads (and renews) the role's
            credentials.pop("AWS_ACCESS_KEY_ID")
            credentials.pop("AWS_SECRET_ACCESS_KEY")
            credentials.update(self.role_credentials.env)
        return {
            **credentials,
            "AGENT_PIPELINE": "nova-sonic",
            "AWS_REGION": self.nova_sonic.server.config.region,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.nova_sonic.url,
            # The CRT HTTP client under Nova Sonic reads its trust store from here.
            "SSL_CERT_FILE": str(self.nova_sonic.ca_file),
        }

    def stop(self) -> None:
        """Stop every part this stack started (by its own handles and pids)."""
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.agentcore is not None:
            self.agentcore.stop()
            self.agentcore = None
        if self.agent is not None:
            if self.agent.poll() is None:
                self.agent.send_signal(signal.SIGTERM)
                try:
                    self.agent.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait(timeout=10)
            self.agent = None
        if self._agent_log is not None:
            self._agent_log.close()
            self._agent_log = None
        if self.role_credentials is not None:
            self.role_credentials.stop()
            self.role_credentials = None
        if self.nova_sonic is not None:
            self.nova_sonic.stop()
            self.nova_sonic = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        self.coturn.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
