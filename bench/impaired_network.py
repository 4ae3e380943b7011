"""An impaired network on one machine: a network namespace of its own with loss, delay and jitter.

Everything in the namespace talks over its own loopback (127.0.0.1 and ::1), and every packet sent
there is impaired once on its way from one socket to another:

- delay: the packet waits ``delay_ms`` plus a uniform draw in ``[-jitter_ms, +jitter_ms]`` (never less
  than 0) on the output hook, so ``delay_ms`` is the mean one-way delay and a round trip takes twice
  it. Datagrams may overtake one another; a TCP segment never overtakes the one before it in its
  connection (see :class:`bench.nfqueue.DelayLine`). This kernel has no netem, so an ``iptables
  NFQUEUE`` rule hands packets to a user-space keeper that accepts each one when its time comes;
- loss: each packet is dropped with probability ``loss_percent`` on the input hook (nftables
  ``numgen random``), silently, as a real path drops it; on the output hook the sender would get EPERM.

With ``scope="all"`` (the default) every packet in the namespace is impaired, so a path that
crosses a relay in the namespace (a caller -> TURN server -> agent) has two legs: it is delayed twice
and lost on either leg, and traffic among the servers (broker <-> KVS emulator) is impaired too.

With ``scope="caller"`` only the caller's network is impaired: programs started with
:meth:`ImpairedNetwork.caller_command` run as the unprivileged uid :data:`CALLER_UID`, an nftables rule
on the output hook sets the conntrack mark of every connection (TCP) or flow (UDP, tracked by its
addresses and ports) that such a socket opens, and the delay and the loss apply only to packets with
that mark. Both directions of a flow share one conntrack entry, so the servers' replies to the caller
are impaired too; everything between the servers (coturn -> agent, broker <-> emulator) is clean
loopback. Each packet the caller sends or receives is thus delayed once and may be lost once, as on
a real caller's access network. A flow that a server opens towards a caller is marked from the
caller's first packet on.

Nothing outside the namespace is touched.

Each run is bounded: the keeper process removes the namespace, after killing whatever still runs
in it, at the run's deadline or as soon as the process that made it exits, even by SIGKILL. A run
also removes the namespaces of earlier runs whose owner and keeper are both gone.

    python -m bench.impaired_network --profile loss2 --seconds 120 -- .venv/bin/python -m local
    python -m bench.impaired_network --profile loss2 --seconds 120 --wait-port 7860 \
        --caller '.venv/bin/python -m local.call_client --transport websocket' -- .venv/bin/python -m local

Needs root, ``ip`` (iproute2), ``nft`` (nftables) and ``iptables``/``ip6tables`` (iptables):
``make system-deps`` installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import math
import os
import random
import secrets
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

from bench.nfqueue import DelayLine, NfQueue

PREFIX: Final = "impnet-"
"""Namespaces this module makes are named ``impnet-<owner pid>-<random>``."""
STATE_DIR: Final = Path("/run/impaired-network")
"""Per namespace: ``<name>.json`` (owner, keeper, deadline) and ``<name>.log`` (the keeper's log)."""
NETNS_DIR: Final = Path("/run/netns")
TOOLS: Final = {"ip": "iproute2", "nft": "nftables", "iptables": "iptables", "ip6tables": "iptables"}
"""Command -> the Debian package that has it."""
SYSTEM_BIN: Final = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
QUEUE_NUM: Final = 0
"""Each namespace has its own queues, so every run can use queue 0."""
KEEPER_READY_TIMEOUT: Final = 15.0
STOP_GRACE: Final = 2.0
"""Seconds between SIGTERM and SIGKILL for processes still in a namespace being removed."""
ROOT: Final = Path(__file__).resolve().parent.parent
CALLER_UID: Final = 4242
"""The uid (and gid) caller programs run as with ``scope="caller"``; it needs no passwd entry."""
CALLER_MARK: Final = 0x1
"""The conntrack mark of the caller's connections."""
CALLER_ENV: Final = "IMPAIRED_NETWORK_CALLER"
"""Set for the CLI's COMMAND when the scope is ``caller``: the prefix that runs a program as the caller."""
Scope = Literal["all", "caller"]
SCOPES: Final = ("all", "caller")


class ImpairedNetworkError(RuntimeError):
    """An impaired network could not be made or removed."""


class PrerequisiteError(ImpairedNetworkError):
    """This machine or user cannot make one: the message says what to install or how to run."""


@dataclass(frozen=True)
class Profile:
    """How a namespace impairs each packet (see the module's docstring for the exact meaning).

    Args:
        delay_ms: Mean one-way delay.
        jitter_ms: Half-width of the uniform spread of each packet's delay around ``delay_ms``.
        loss_percent: Chance that a packet is dropped, in percent (0.01 steps).
        reorder: Whether datagrams of one UDP flow may overtake one another (each packet's delay drawn
            on its own, as netem does); ``False`` keeps every flow in order, as queueing jitter does.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_percent: float = 0.0
    reorder: bool = True

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "loss_percent"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.loss_percent > 100:
            raise ValueError(f"loss_percent must be at most 100, got {self.loss_percent}")

    @property
    def delays(self) -> bool:
        """Whether packets go through the user-space delay queue."""
        return self.delay_ms > 0 or self.jitter_ms > 0

    def describe(self) -> str:
        """One line for logs and ``--help``."""
        if not self.delays and not self.loss_percent:
            return "no impairment"
        order = "" if self.reorder or not self.jitter_ms else ", flows kept in order"
        return (
            f"one-way delay {self.delay_ms:g} ms +/- {self.jitter_ms:g} ms (uniform), "
            f"{self.loss_percent:g}% loss per packet{order}"
        )


PROFILES: Final = {
    "clean": Profile(),
    "delay": Profile(delay_ms=40, jitter_ms=20),
    "loss2": Profile(delay_ms=40, jitter_ms=20, loss_percent=2),
    "loss5": Profile(delay_ms=40, jitter_ms=20, loss_percent=5),
}


def find_tools(search_path: str | None = None) -> dict[str, str]:
    """Return the path of each command an impaired network needs.

    Args:
        search_path: Where to look (``PATH`` and the system's sbin folders by default).

    Raises:
        PrerequisiteError: A command is missing; the message names the Debian packages to install.
    """
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_BIN])
    found = {tool: shutil.which(tool, path=search_path) for tool in TOOLS}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        raise PrerequisiteError(
            f"missing {', '.join(missing)}: install them with `apt-get install {packages}` (or `make system-deps`)"
        )
    return {tool: path for tool, path in found.items() if path is not None}


def check_prerequisites() -> dict[str, str]:
    """Check that this process can make an impaired network and return the tools' paths.

    Raises:
        PrerequisiteError: Not root, a tool is missing, or the kernel has no network namespaces.
    """
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "an impaired network needs root (network namespaces and netfilter rules): "
            "run as root, e.g. `sudo .venv/bin/python -m bench.impaired_network ...`"
        )
    if not Path("/proc/self/ns/net").exists():
        raise PrerequisiteError("this kernel has no network namespaces (CONFIG_NET_NS)")
    return find_tools()


@functools.cache
def _tool(name: str) -> str:
    """The full path of one of :data:`TOOLS` (looked up once)."""
    return find_tools()[name]


def _run(*argv: str, stdin: str | None = None) -> None:
    result = subprocess.run([_tool(argv[0]), *argv[1:]], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImpairedNetworkError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")


def _start_time(pid: int) -> int | None:
    """The kernel's start time of a live process (to tell it from a later one with its pid), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and _start_time(pid) == start


def namespace_names() -> list[str]:
    """The namespaces made by this module that exist now."""
    try:
        return sorted(path.name for path in NETNS_DIR.iterdir() if path.name.startswith(PREFIX))
    except FileNotFoundError:
        return []


def namespace_pids(name: str) -> list[int]:
    """The processes running in a namespace (none when it does not exist)."""
    result = subprocess.run([_tool("ip"), "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []


def remove_namespace(name: str, *, grace: float = STOP_GRACE) -> None:
    """Stop every process in a namespace (SIGTERM, then SIGKILL after ``grace`` s) and delete it.

    Idempotent: removing a namespace that is already gone does nothing.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        pids = [pid for pid in namespace_pids(name) if pid != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        stop = time.monotonic() + wait
        while pids and namespace_pids(name) and time.monotonic() < stop:
            time.sleep(0.05)
    if (NETNS_DIR / name).exists():
        subprocess.run([_tool("ip"), "netns", "delete", name], capture_output=True, check=False)
    shutil.rmtree(STATE_DIR / f"{name}.home", ignore_errors=True)
    for suffix in (".json", ".log"):
        (STATE_DIR / f"{name}{suffix}").unlink(missing_ok=True)


def _read_state(name: str) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((STATE_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return state


def remove_stale_namespaces() -> list[str]:
    """Remove the namespaces of runs that crashed: owner and keeper gone, or the deadline passed.

    Returns:
        The names of the namespaces removed.
    """
    names = set(namespace_names())
    if STATE_DIR.exists():
        names |= {path.stem for path in STATE_DIR.glob(f"{PREFIX}*.json")}
    removed = []
    for name in sorted(names):
        state = _read_state(name)
        owner = _alive(state.get("owner_pid"), state.get("owner_start"))
        keeper = _alive(state.get("keeper_pid"), state.get("keeper_start"))
        if (owner or keeper) and time.time() < state.get("deadline", 0) + STOP_GRACE + 5:
            continue
        if keeper:
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["keeper_pid"], signal.SIGKILL)
        remove_namespace(name)
        removed.append(name)
    return removed


class ImpairedNetwork:
    """A network namespace whose loopback traffic is impaired by a profile, for at most ``seconds``.

    Use it as a context manager; run programs in it with :meth:`command` (or ``ip netns exec NAME``)
    and, with ``scope="caller"``, the caller's programs with :meth:`caller_command`::

        with ImpairedNetwork(PROFILES["loss2"], seconds=60, scope="caller") as net:
            server = subprocess.Popen(net.command([sys.executable, "-m", "local"]))
            subprocess.run(net.caller_command([sys.executable, "-m", "local.call_client"]), timeout=net.remaining())

    Args:
        profile: The impairment.
        seconds: The run's lifetime: at its end the keeper stops what runs in the namespace and
            deletes it, whether or not the context has been left.
        seed: Seed for the delay draws (the loss draws are the kernel's own).
        scope: ``"all"``: every packet in the namespace; ``"caller"``: only the packets of connections
            opened by programs run with :meth:`caller_command` (both directions).
    """

    def __init__(
        self, profile: Profile, *, seconds: float = 600.0, seed: int | None = None, scope: Scope = "all"
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.profile = profile
        self.seconds = seconds
        self.seed = seed
        self.scope: Scope = scope
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.caller_home = STATE_DIR / f"{self.name}.home"
        """The caller's HOME and TMPDIR (``scope="caller"``), owned by :data:`CALLER_UID`, removed with the run."""
        self.deadline = 0.0
        """``time.monotonic()`` at the end of the run (set on entry)."""
        self._keeper: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        check_prerequisites()
        remove_stale_namespaces()
        self.deadline = time.monotonic() + self.seconds
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            self._write_state()
            _run("ip", "netns", "add", self.name)
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            if self.scope == "caller":
                self._make_caller_home()
                _run("ip", "netns", "exec", self.name, _tool("nft"), "-f", "-", stdin=self._caller_rules())
            elif self.profile.loss_percent > 0:
                _run("ip", "netns", "exec", self.name, _tool("nft"), "-f", "-", stdin=self._loss_rules())
            self._start_keeper()
            if self.profile.delays:
                # This kernel has no nftables `queue`; iptables' NFQUEUE target works. With the caller
                # scope it takes only the marked connections, marked earlier on the same hook.
                only = ("-m", "connmark", "--mark", f"{CALLER_MARK:#x}") if self.scope == "caller" else ()
                for tables in ("iptables", "ip6tables"):
                    queue = ("-A", "OUTPUT", *only, "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM))
                    _run("ip", "netns", "exec", self.name, _tool(tables), "-w", *queue)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def command(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside the namespace (environment and folder kept)."""
        return [_tool("ip"), "netns", "exec", self.name, *argv]

    def caller_command(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` in the namespace as the caller (``scope="caller"`` only).

        The program runs as uid and gid :data:`CALLER_UID` with no supplementary groups and no
        capabilities, in the current folder, with the environment it is started with except ``HOME``,
        ``TMPDIR`` and ``XDG_RUNTIME_DIR``, which point at :attr:`caller_home` (writable by it; Chromium
        needs one). Folders this interpreter, its virtual environment and the repository live in that
        the caller may not enter (``/root`` holding a pyenv Python, mode 0700) are shown to it, and only
        to it, through a private mount namespace: a tmpfs over the closed folder with the needed
        entries bound into it, read-only for the caller as before. Nothing else changes on the machine.

        Raises:
            ImpairedNetworkError: The network's scope is not ``caller``.
        """
        if self.scope != "caller":
            raise ImpairedNetworkError('caller_command needs an ImpairedNetwork(..., scope="caller")')
        return [*self.command(_caller_prefix(self.caller_home)), *argv]

    def remaining(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def close(self) -> None:
        """Stop the keeper and everything in the namespace, and delete it (idempotent)."""
        if self._keeper is not None:
            if self._keeper.poll() is None:
                self._keeper.terminate()
            try:
                self._keeper.wait(timeout=STOP_GRACE + 10)
            except subprocess.TimeoutExpired:
                self._keeper.kill()
                self._keeper.wait()
            if self._keeper.stdout is not None:
                self._keeper.stdout.close()
            self._keeper = None
        remove_namespace(self.name)

    def _loss_rules(self) -> str:
        basis_points = round(self.profile.loss_percent * 100)
        return (
            "table inet impaired {\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    numgen random mod 10000 < {basis_points} drop\n"
            "  }\n"
            "}\n"
        )

    def _caller_rules(self) -> str:
        loss = ""
        if self.profile.loss_percent > 0:
            basis_points = round(self.profile.loss_percent * 100)
            loss = f"    ct mark {CALLER_MARK:#x} numgen random mod 10000 < {basis_points} drop\n"
        return (
            "table inet impaired {\n"
            "  chain output {\n"
            "    type filter hook output priority mangle; policy accept;\n"  # after conntrack, before the queue
            f"    meta skuid {CALLER_UID} ct mark set {CALLER_MARK:#x}\n"
            "  }\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"{loss}"
            "  }\n"
            "}\n"
        )

    def _make_caller_home(self) -> None:
        self.caller_home.mkdir(mode=0o700)
        os.chown(self.caller_home, CALLER_UID, CALLER_UID)

    def _write_state(self, keeper: int | None = None) -> None:
        state = {
            "owner_pid": os.getpid(),
            "owner_start": _start_time(os.getpid()),
            "keeper_pid": keeper,
            "keeper_start": None if keeper is None else _start_time(keeper),
            "deadline": time.time() + self.remaining(),
            "profile": asdict(self.profile),
            "scope": self.scope,
        }
        path = STATE_DIR / f"{self.name}.json"
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").replace(path)

    def _start_keeper(self) -> None:
        spec = {
            "name": self.name,
            "owner_pid": os.getpid(),
            "seconds": self.remaining(),
            "profile": asdict(self.profile),
            "seed": self.seed,
        }
        log = STATE_DIR / f"{self.name}.log"
        with log.open("wb") as log_file:
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "bench.impaired_network", "--keeper", json.dumps(spec)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        stdout = self._keeper.stdout
        ready, _, _ = select.select([stdout] if stdout else [], [], [], KEEPER_READY_TIMEOUT)
        if not ready or stdout is None or stdout.readline() != b"ready\n":
            details = log.read_text(errors="replace").strip() if log.exists() else ""
            raise ImpairedNetworkError(f"the namespace's keeper did not start: {details or 'no output'}")
        self._write_state(self._keeper.pid)


def _caller_prefix(home: Path) -> list[str]:
    """The root-run wrapper that turns into the caller: ``-I`` keeps the caller's PYTHONPATH out of it."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench.impaired_network as n; n._become_caller()"
    return [sys.executable, "-I", "-c", code, str(home), "--"]


_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    arguments = [None if text is None else text.encode() for text in (source, target, fstype)]
    if libc.mount(*arguments, ctypes.c_ulong(flags), None if data is None else data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _closed_to(uid: int, path: Path) -> Path | None:
    """The first folder on the way to ``path`` that ``uid`` (in no group) may not enter, or ``None``."""
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except OSError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        allowed = stat.S_IXUSR if info.st_uid == uid else stat.S_IXOTH
        if not info.st_mode & allowed:
            return folder
    return None


def _open_closed_folders(uid: int, needed: Sequence[Path]) -> None:
    """Show ``uid`` the ``needed`` paths under folders closed to it, in this process's mount namespace."""
    closed: dict[Path, set[str]] = {}
    for path in needed:
        folder = _closed_to(uid, path)
        if folder is not None:
            closed.setdefault(folder, set()).add(path.relative_to(folder).parts[0])
    if not closed:
        return
    os.unshare(os.CLONE_NEWNS)
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
    for folder, entries in sorted(closed.items()):
        handles = {entry: os.open(folder / entry, os.O_PATH) for entry in sorted(entries)}
        _mount("tmpfs", str(folder), "tmpfs", 0, "mode=0755,size=1m")
        for entry, handle in handles.items():
            (folder / entry).mkdir()
            _mount(f"/proc/self/fd/{handle}", str(folder / entry), None, _MS_BIND | _MS_REC)
            os.close(handle)
    still = [str(path) for path in needed if _closed_to(uid, path) is not None]
    if still:
        raise PrerequisiteError(f"uid {uid} cannot reach {', '.join(still)}: make it readable by others")


def _become_caller() -> None:
    """Run ``sys.argv[3:]`` (after ``--``) as :data:`CALLER_UID` with ``HOME`` at ``sys.argv[1]``."""
    home, separator, *argv = sys.argv[1:]
    if separator != "--" or not argv:
        sys.exit("usage: _become_caller HOME -- COMMAND...")
    needed = {ROOT, Path(sys.prefix), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    with contextlib.suppress(OSError):
        needed.add(Path.cwd())
    try:
        _open_closed_folders(CALLER_UID, sorted(needed))
    except (OSError, PrerequisiteError) as exc:
        sys.exit(f"impaired_network: cannot run as the caller: {exc}")
    env = {**os.environ, "HOME": home, "TMPDIR": home, "XDG_RUNTIME_DIR": home}
    os.setgroups([])
    os.setresgid(CALLER_UID, CALLER_UID, CALLER_UID)
    os.setresuid(CALLER_UID, CALLER_UID, CALLER_UID)
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 (the caller's own command line, as given)
    except OSError as exc:
        sys.exit(f"impaired_network: cannot run {argv[0]} as the caller: {exc}")


class _Stop(Exception):
    """A signal asked the keeper to clean up and exit."""


def _open_queue_in(name: str) -> NfQueue:
    """Bind the delay queue inside the namespace; the socket stays there when this thread leaves."""
    with open(NETNS_DIR / name) as target, open("/proc/self/ns/net") as home:
        os.setns(target.fileno(), os.CLONE_NEWNET)
        try:
            return NfQueue(QUEUE_NUM)
        finally:
            os.setns(home.fileno(), os.CLONE_NEWNET)


def _delay_until(queue: NfQueue | None, line: DelayLine, owner: int, deadline: float) -> str:
    """Release queued packets on time until the deadline or the owner's exit; return which ended it."""
    watched: list[Any] = [owner] if queue is None else [owner, queue]
    delayed = longest = 0
    while (now := time.monotonic()) < deadline:
        if queue is not None:
            queue.accept(line.due(now + 0.0002))
        leave = line.next_release()
        ready, _, _ = select.select(watched, [], [], min(deadline, leave or deadline) - now)
        if owner in ready:
            print(f"owner exited; {delayed} packets delayed, at most {longest} at once", file=sys.stderr)
            return "owner exited"
        if queue is not None and queue in ready:
            arrived = time.monotonic()
            for packet in queue.receive():
                line.add(packet, arrived)
                delayed += 1
            longest = max(longest, len(line))
    print(f"deadline; {delayed} packets delayed, at most {longest} at once", file=sys.stderr)
    return "deadline"


def _keep(spec: dict[str, Any]) -> int:
    """The keeper: delay the namespace's packets, then remove it at the deadline or when its owner exits."""

    def stop(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    deadline = time.monotonic() + spec["seconds"]
    profile = Profile(**spec["profile"])
    queue = None
    try:
        owner = os.pidfd_open(spec["owner_pid"])
        if profile.delays:
            queue = _open_queue_in(spec["name"])
        print("ready", flush=True)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        line = DelayLine(
            profile.delay_ms / 1000, profile.jitter_ms / 1000, random.Random(spec["seed"]), reorder=profile.reorder
        )
        _delay_until(queue, line, owner, deadline)
    except _Stop:
        print("stopped by a signal", file=sys.stderr)
    except ProcessLookupError:
        print("owner exited before the keeper started", file=sys.stderr)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if queue is not None:
            queue.close()
        remove_namespace(spec["name"])
    return 0


def _profile_from(args: argparse.Namespace) -> Profile:
    base = PROFILES[args.profile]
    return Profile(
        delay_ms=base.delay_ms if args.delay_ms is None else args.delay_ms,
        jitter_ms=base.jitter_ms if args.jitter_ms is None else args.jitter_ms,
        loss_percent=base.loss_percent if args.loss_percent is None else args.loss_percent,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening(net: ImpairedNetwork, port: int) -> bool:
    listeners = subprocess.run(
        net.command(["ss", "-Hltn", f"sport = :{port}"]), capture_output=True, text=True, check=False
    )
    return bool(listeners.stdout.strip())


def _run_inside(
    net: ImpairedNetwork, argv: Sequence[str], caller: Sequence[str] = (), wait_port: int | None = None
) -> int:
    """Run the command (as root) and the caller's command in the namespace until the run is over.

    Returns:
        Without a caller command, the command's exit code; with one, the caller's, or the command's
        if it ended first; 124 when the deadline cut the run, 130 on Ctrl-C.
    """
    env = {**os.environ, CALLER_ENV: shlex.join(net.caller_command([]))} if net.scope == "caller" else None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(net.command(argv), env=env) if argv else None
        processes += [server] if server else []
        if caller and wait_port is not None:
            while not _listening(net, wait_port):
                if server is not None and server.poll() is not None:
                    print("impaired_network: COMMAND ended before --wait-port listened", file=sys.stderr)
                    return server.returncode or 1
                if net.remaining() <= 0:
                    raise subprocess.TimeoutExpired(argv, net.seconds)
                time.sleep(0.1)
        watched = subprocess.Popen(net.caller_command(caller)) if caller else server
        if watched is None:
            raise ValueError("nothing to run")
        processes.append(watched)
        while (code := watched.poll()) is None:
            if server is not None and server is not watched and server.poll() is not None:
                print("impaired_network: COMMAND ended before the caller's command", file=sys.stderr)
                return server.returncode or 1
            if net.remaining() <= 0:
                raise subprocess.TimeoutExpired(argv, net.seconds)
            with contextlib.suppress(subprocess.TimeoutExpired):
                watched.wait(timeout=min(0.2, net.remaining()))
        return code
    except subprocess.TimeoutExpired:
        print(f"impaired_network: {net.seconds:g} s are up, stopping the command", file=sys.stderr)
        return 124
    except KeyboardInterrupt:
        return 130
    finally:
        for process in reversed(processes):
            _stop(process)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run a command inside an impaired namespace for a bounded time, then clean up."""
    profiles = "\n".join(f"  {name:6} {profile.describe()}" for name, profile in PROFILES.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench.impaired_network",
        description=(
            "Run COMMAND (and whatever it starts) in a fresh network namespace whose loopback drops and "
            "delays packets, for at most --seconds; then stop it and delete the namespace. Needs root.\n\n"
            "--scope all (the default): every packet between two processes in the namespace is impaired "
            "once, so a path through a relay (caller -> TURN -> agent) twice, and server-to-server "
            "traffic too.\n"
            f"--scope caller: only the caller's network. --caller CMD runs as uid {CALLER_UID} in the "
            "namespace; every connection or UDP flow it opens is impaired in both directions, and "
            "nothing else: COMMAND (the servers, as root) talks over clean loopback. COMMAND may start "
            f"callers itself by prefixing them with ${CALLER_ENV}. The caller gets a private writable "
            "HOME and TMPDIR."
        ),
        epilog=(
            f"profiles:\n{profiles}\n\nexamples:\n"
            "  python -m bench.impaired_network --profile loss2 --seconds 120 -- .venv/bin/python -m local\n"
            "  python -m bench.impaired_network --profile loss2 --seconds 120 --wait-port 7860 \\\n"
            "      --caller '.venv/bin/python -m local.call_client --transport websocket' \\\n"
            "      -- .venv/bin/python -m local\n"
            "  python -m bench.impaired_network --profile clean --loss-percent 10 -- bash\n"
            "  python -m bench.impaired_network --scope caller -- bash   # then: $IMPAIRED_NETWORK_CALLER ...\n"
            "  python -m bench.impaired_network --remove-stale\n\n"
            "Exit status: the caller's with --caller (COMMAND's if it ends first), else COMMAND's; 124 when "
            "--seconds ran out, 2 when the network could not be made."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", choices=PROFILES, default="loss2", help="impairment profile (default: loss2)")
    parser.add_argument("--delay-ms", type=float, help="override the profile's mean one-way delay")
    parser.add_argument("--jitter-ms", type=float, help="override the profile's jitter (+/- around the delay)")
    parser.add_argument("--loss-percent", type=float, help="override the profile's loss per packet")
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on the run (default: 60)")
    parser.add_argument("--seed", type=int, help="seed for the delay draws")
    parser.add_argument(
        "--scope", choices=SCOPES, help="impair every packet (all, the default) or the caller's only (caller)"
    )
    parser.add_argument(
        "--caller", metavar="CMD", help="a command line (one string) to run as the caller; implies --scope caller"
    )
    parser.add_argument(
        "--wait-port", type=int, metavar="PORT", help="start --caller once a TCP port on the namespace listens"
    )
    parser.add_argument("--remove-stale", action="store_true", help="remove namespaces left by crashed runs, exit")
    parser.add_argument("--keeper", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    if args.keeper is not None:
        return _keep(json.loads(args.keeper))
    try:
        if args.remove_stale:
            check_prerequisites()
            for name in remove_stale_namespaces():
                print(f"removed {name}")
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        caller = shlex.split(args.caller) if args.caller is not None else []
        if args.caller is not None and not caller:
            parser.error("--caller needs a command line")
        if caller and args.scope == "all":
            parser.error("--caller impairs the caller's traffic only: it cannot go with --scope all")
        if args.wait_port is not None and not caller:
            parser.error("--wait-port delays the start of --caller: give one")
        if not command and not caller:
            parser.error("give a command to run after --")
        scope: Scope = "caller" if caller or args.scope == "caller" else "all"
        profile = _profile_from(args)
        with ImpairedNetwork(profile, seconds=args.seconds, seed=args.seed, scope=scope) as net:
            print(
                f"impaired_network: {net.name}: {profile.describe()}, {args.seconds:g} s, scope {scope}",
                file=sys.stderr,
            )
            return _run_inside(net, command, caller, args.wait_port)
    except (ImpairedNetworkError, ValueError) as exc:
        print(f"impaired_network: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
