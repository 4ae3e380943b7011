"""bench.impaired_network for real: namespaces, loss and delay measured with UDP and TCP, clean-up."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.impaired_network import (
    CALLER_UID,
    NETNS_DIR,
    PROFILES,
    STATE_DIR,
    ImpairedNetwork,
    ImpairedNetworkError,
    PrerequisiteError,
    Profile,
    find_tools,
    main,
    namespace_names,
    namespace_pids,
)
from bench.nfqueue import DelayLine, QueuedPacket, tcp_flow_of, udp_flow_of
from tests.network_probe import ROOT, TcpMeasurement, UdpMeasurement, measure_tcp, measure_udp

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/proc/self/ns/net").exists(),
    reason="impaired networks need root and network namespaces (CI runs as root)",
)


def binomial_band(n: int, p: float, tail: float = 1e-5) -> tuple[int, int]:
    """The counts k with P(X < k) and P(X > k) both above ``tail`` for X ~ Binomial(n, p)."""
    cdf = 0.0
    low = None
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if low is None and cdf > tail:
            low = k
        if cdf >= 1 - tail:
            return low or 0, k
    return low or 0, n


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# Pure parts: profiles and the delay line.


def test_profile_refuses_impossible_values() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        Profile(delay_ms=-1)
    with pytest.raises(ValueError, match="loss_percent must be at most 100"):
        Profile(loss_percent=101)
    assert PROFILES["loss2"] == Profile(delay_ms=40, jitter_ms=20, loss_percent=2)
    assert not PROFILES["clean"].delays


def test_datagrams_may_overtake_but_a_tcp_flow_keeps_its_order() -> None:
    line = DelayLine(delay=0.040, jitter=0.020, rng=random.Random(7))
    udp = [line.add(QueuedPacket(i, None), now=i * 0.001) for i in range(200)]
    assert all(0.020 <= leave - i * 0.001 <= 0.060 for i, leave in enumerate(udp))
    assert any(later < earlier for earlier, later in itertools.pairwise(udp))

    line = DelayLine(delay=0.040, jitter=0.020, rng=random.Random(7))
    tcp = [line.add(QueuedPacket(i, b"flow"), now=i * 0.001) for i in range(200)]
    assert tcp == sorted(tcp)
    assert line.due(now=10.0) == list(range(200))


def test_without_reordering_a_udp_flow_keeps_its_order_and_other_flows_do_not_wait() -> None:
    line = DelayLine(delay=0.040, jitter=0.020, rng=random.Random(7), reorder=False)
    flow = [line.add(QueuedPacket(i, None, b"udp"), now=i * 0.001) for i in range(200)]
    assert flow == sorted(flow)
    assert all(leave - i * 0.001 >= 0.020 for i, leave in enumerate(flow))
    other = [line.add(QueuedPacket(1000 + i, None, bytes([i])), now=0.5) for i in range(50)]
    assert all(0.52 <= leave <= 0.56 for leave in other)  # a flow of its own: its own draw only


def test_udp_flow_is_read_from_ipv4_and_ipv6_headers() -> None:
    ipv4 = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(2) + bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x0d\x96\x04\xd2"
    assert udp_flow_of(ipv4) == bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x0d\x96\x04\xd2"
    assert udp_flow_of(ipv4[:9] + bytes([6]) + ipv4[10:]) is None  # TCP
    addresses = bytes(15) + b"\1" + bytes(15) + b"\1"
    ipv6 = bytes([0x60]) + bytes(5) + bytes([17]) + bytes([64]) + addresses + b"\0\x50\0\x51"
    assert udp_flow_of(ipv6) == ipv6[8:44]
    assert PROFILES["loss2"].reorder and "in order" in Profile(delay_ms=40, jitter_ms=20, reorder=False).describe()


def test_tcp_flow_is_read_from_ipv4_and_ipv6_headers() -> None:
    ipv4 = bytes([0x45]) + bytes(8) + bytes([6]) + bytes(2) + bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x1f\x90\x04\xd2"
    assert tcp_flow_of(ipv4) == bytes([127, 0, 0, 1, 127, 0, 0, 2]) + b"\x1f\x90\x04\xd2"
    assert tcp_flow_of(ipv4[:9] + bytes([17]) + ipv4[10:]) is None  # UDP
    ipv6 = bytes([0x60]) + bytes(5) + bytes([6]) + bytes([64]) + bytes(15) + b"\1" + bytes(15) + b"\1" + b"\0\x50\0\x51"
    assert tcp_flow_of(ipv6) == ipv6[8:44]


def test_missing_tools_name_the_packages_to_install() -> None:
    with pytest.raises(PrerequisiteError, match=r"apt-get install iproute2 iptables nftables"):
        find_tools(search_path="/nonexistent")


def test_a_user_who_is_not_root_is_told_to_run_as_root() -> None:
    code = (
        "import os, sys\n"
        "from bench.impaired_network import main\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(main(['--profile', 'clean', '--', 'true']))\n"
    )
    if os.geteuid() != 0:
        code = code.replace("os.setgid(65534); os.setuid(65534)\n", "")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "needs root" in result.stderr


# Measured loss and delay.


def _measure(profile: str) -> tuple[UdpMeasurement, str]:
    with ImpairedNetwork(PROFILES[profile], seconds=60, seed=1) as net:
        measurement = measure_udp(net.command([]), count=500, rate=50)
    return measurement, net.name


@needs_root
def test_udp_loss_and_delay_match_the_profiles() -> None:
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(("clean", "loss2", "loss5"), pool.map(_measure, ("clean", "loss2", "loss5")), strict=True))
    figures = {}
    for profile, (m, name) in results.items():
        assert name not in namespace_names()
        assert not (STATE_DIR / f"{name}.json").exists()
        figures[profile] = {
            "lost_forward": m.sent - m.received,
            "lost_back": m.received - m.echoed,
            "one_way_mean": round(statistics.mean(m.one_way_ms), 2),
            "one_way_stdev": round(statistics.stdev(m.one_way_ms), 2),
            "one_way_min": round(min(m.one_way_ms), 2),
            "one_way_max": round(max(m.one_way_ms), 2),
            "rtt_mean": round(statistics.mean(m.rtt_ms), 2),
            "out_of_order": m.out_of_order,
        }
    print(json.dumps(figures))

    clean = results["clean"][0]
    assert clean.sent == clean.received == clean.echoed == 500
    assert statistics.median(clean.one_way_ms) < 1.0
    assert statistics.mean(clean.rtt_ms) < 3.0

    for profile in ("loss2", "loss5"):
        m = results[profile][0]
        p = PROFILES[profile].loss_percent / 100
        assert m.sent == 500
        low, high = binomial_band(m.sent, p)
        assert low <= m.sent - m.received <= high, (profile, m.sent - m.received, (low, high))
        low, high = binomial_band(m.received, p)
        assert low <= m.received - m.echoed <= high, (profile, m.received - m.echoed, (low, high))
        # One-way delay 40 ms +/- 20 ms uniform: mean 40 (its standard error 0.5), spread 11.5.
        assert abs(statistics.mean(m.one_way_ms) - 40) < 3
        assert 9 < statistics.stdev(m.one_way_ms) < 14
        assert min(m.one_way_ms) >= 19.7
        assert sorted(m.one_way_ms)[int(0.95 * len(m.one_way_ms))] < 62
        assert abs(statistics.mean(m.rtt_ms) - 80) < 5
        assert m.out_of_order > 10  # datagrams 20 ms apart overtake each other about 1 time in 8


_FETCH = """
import hashlib, json, sys, time, urllib.request
times = []
for path in ("/", "/", "/blob"):  # the first request also warms up both processes
    start = time.monotonic()
    body = urllib.request.urlopen("http://127.0.0.1:8099" + path, timeout=30).read()
    times.append(time.monotonic() - start)
print(json.dumps({"seconds": times, "sha256": hashlib.sha256(body).hexdigest()}))
"""


def _fetch_over_tcp(profile: Profile, folder: Path) -> dict[str, object]:
    with ImpairedNetwork(profile, seconds=60) as net:
        server = subprocess.Popen(
            net.command([sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(folder), "8099"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            started = wait_for(
                lambda: b"127.0.0.1:8099" in subprocess.run(net.command(["ss", "-ltn"]), capture_output=True).stdout,
                10,
            )
            assert started, "http.server did not listen in the namespace"
            result = subprocess.run(net.command([sys.executable, "-c", _FETCH]), capture_output=True, timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    fetched: dict[str, object] = json.loads(result.stdout)
    return fetched


@needs_root
def test_tcp_still_works_only_slower(tmp_path: Path) -> None:
    blob = random.Random(3).randbytes(256 * 1024)
    (tmp_path / "blob").write_bytes(blob)
    clean = _fetch_over_tcp(PROFILES["clean"], tmp_path)
    lossy = _fetch_over_tcp(PROFILES["loss5"], tmp_path)
    print(json.dumps({"clean": clean, "loss5": lossy}))
    assert clean["sha256"] == lossy["sha256"] == hashlib.sha256(blob).hexdigest()
    _, clean_small, _ = clean["seconds"]  # type: ignore[misc]
    _, lossy_small, _ = lossy["seconds"]  # type: ignore[misc]
    assert clean_small < 0.05
    # Handshake and request take two round trips: at least 4 one-way trips of at least 20 ms.
    assert lossy_small >= 0.08


# Only the caller's traffic.

CALLER_PROFILE = Profile(delay_ms=20, jitter_ms=10, loss_percent=10)
"""Short delay (a fast test), loss high enough that one TCP connection surely sees some."""


def _udp_figures(m: UdpMeasurement) -> dict[str, float]:
    return {
        "lost_forward": m.sent - m.received,
        "lost_back": m.received - m.echoed,
        "one_way_mean": round(statistics.mean(m.one_way_ms), 2),
        "one_way_median": round(statistics.median(m.one_way_ms), 3),
        "rtt_mean": round(statistics.mean(m.rtt_ms), 2),
    }


def _tcp_figures(m: TcpMeasurement) -> dict[str, float]:
    return {
        "connect": round(m.connect_ms, 2),
        "exchange_median": round(statistics.median(m.exchange_ms), 3),
        "client_retransmits": m.client_retransmits,
        "server_retransmits": m.server_retransmits,
        "client_srtt": m.client_srtt_ms,
    }


@needs_root
def test_with_the_caller_scope_only_the_callers_flows_are_impaired_both_ways() -> None:
    with ImpairedNetwork(CALLER_PROFILE, seconds=90, seed=1, scope="caller") as net:
        root, caller = net.command([]), net.caller_command([])
        with ThreadPoolExecutor(4) as pool:  # all at once, in the same namespace
            caller_udp = pool.submit(measure_udp, root, count=400, rate=100, port=40001, sender_prefix=caller)
            root_udp = pool.submit(measure_udp, root, count=400, rate=100, port=40002)
            caller_tcp = pool.submit(measure_tcp, root, count=60, port=40101, client_prefix=caller)
            root_tcp = pool.submit(measure_tcp, root, count=60, port=40102)
            udp = {"caller": caller_udp.result(), "root": root_udp.result()}
            tcp = {"caller": caller_tcp.result(), "root": root_tcp.result()}
    assert net.name not in namespace_names()
    assert not net.caller_home.exists()
    print(json.dumps({
        "udp": {who: _udp_figures(m) for who, m in udp.items()},
        "tcp": {who: _tcp_figures(m) for who, m in tcp.items()},
    }))  # fmt: skip

    # The caller's UDP flow to a root echo: lost and delayed each way, so the echo's replies too.
    m = udp["caller"]
    low, high = binomial_band(m.sent, 0.10)
    assert low <= m.sent - m.received <= high, (m.sent - m.received, (low, high))
    low, high = binomial_band(m.received, 0.10)
    assert low <= m.received - m.echoed <= high, (m.received - m.echoed, (low, high))
    one_way = statistics.mean(m.one_way_ms)
    assert 19 < one_way < 24  # 20 ms, plus the keeper's own latency on a busy machine
    assert min(m.one_way_ms) >= 9.7
    assert abs(statistics.mean(m.rtt_ms) - 2 * one_way) < 3  # the echo's replies are delayed too

    # Root's flow at the same time: clean loopback.
    m = udp["root"]
    assert m.sent == m.received == m.echoed == 400
    assert statistics.median(m.one_way_ms) < 1.0
    assert statistics.median(m.rtt_ms) < 2.0

    # TCP from the caller to a root server: each exchange waits a round trip of two delayed legs,
    # (about 20 ms if only the caller's own segments were delayed); losses are retransmitted.
    m = tcp["caller"]
    assert m.connect_ms >= 19
    assert 30 < statistics.median(m.exchange_ms) < 60
    assert m.client_retransmits + m.server_retransmits > 0

    m = tcp["root"]
    assert statistics.median(m.exchange_ms) < 2.0
    assert m.client_retransmits == m.server_retransmits == 0


_WHO = """
import json, os, pathlib, sys
home = pathlib.Path(os.environ["HOME"])
(home / "written").write_text("ok")
import aiortc, bench.nfqueue  # the venv's packages and the repository
print(json.dumps({"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "groups": os.getgroups(),
                  "home": str(home), "tmp": os.environ["TMPDIR"], "extra": os.environ.get("EXTRA")}))
"""


@needs_root
def test_a_caller_runs_as_its_own_uid_with_a_home_of_its_own() -> None:
    with ImpairedNetwork(PROFILES["clean"], seconds=30, scope="caller") as net:
        result = subprocess.run(
            net.caller_command([sys.executable, "-c", _WHO]),
            cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, "EXTRA": "kept"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        who = json.loads(result.stdout)
        assert who["ids"] == [CALLER_UID] * 4
        assert who["groups"] == []
        assert who["home"] == who["tmp"] == str(net.caller_home)
        assert who["extra"] == "kept"
        assert (net.caller_home / "written").stat().st_uid == CALLER_UID
    assert not net.caller_home.exists()


def test_caller_command_needs_the_caller_scope() -> None:
    with pytest.raises(ImpairedNetworkError, match="scope"):
        ImpairedNetwork(PROFILES["clean"]).caller_command(["true"])
    with pytest.raises(ValueError, match="scope"):
        ImpairedNetwork(PROFILES["clean"], scope="everyone")  # type: ignore[arg-type]


# Bounded in time and cleaned up however the run ends.


@needs_root
def test_leaving_the_context_stops_what_runs_inside_and_deletes_the_namespace() -> None:
    with ImpairedNetwork(PROFILES["loss2"], seconds=30) as net:
        sleeper = subprocess.Popen(net.command(["sleep", "60"]))
        assert wait_for(lambda: len(namespace_pids(net.name)) == 1, 5)
        assert (NETNS_DIR / net.name).exists()
    assert sleeper.wait(timeout=5) != 0
    assert net.name not in namespace_names()


@needs_root
def test_the_deadline_removes_the_namespace_while_its_owner_still_runs() -> None:
    net = ImpairedNetwork(PROFILES["loss2"], seconds=1.5)
    with net:
        sleeper = subprocess.Popen(net.command(["sleep", "60"]))
        assert sleeper.wait(timeout=8) != 0
        assert wait_for(lambda: net.name not in namespace_names(), 5)
    assert not (STATE_DIR / f"{net.name}.json").exists()


_HOLD = """
import sys, time
from bench.impaired_network import ImpairedNetwork, PROFILES
with ImpairedNetwork(PROFILES["loss2"], seconds=60) as net:
    print(net.name, flush=True)
    time.sleep(60)
"""


def _hold_a_namespace() -> tuple[subprocess.Popen[str], str]:
    owner = subprocess.Popen([sys.executable, "-c", _HOLD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    name = owner.stdout.readline().strip()
    assert name in namespace_names()
    return owner, name


@needs_root
def test_the_keeper_removes_the_namespace_when_its_owner_is_killed() -> None:
    owner, name = _hold_a_namespace()
    owner.kill()
    owner.wait()
    assert wait_for(lambda: name not in namespace_names(), 10)


@needs_root
def test_the_next_run_removes_a_namespace_whose_owner_and_keeper_were_killed() -> None:
    owner, name = _hold_a_namespace()
    keeper = json.loads((STATE_DIR / f"{name}.json").read_text())["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)
    owner.kill()
    owner.wait()
    time.sleep(0.3)
    assert name in namespace_names()  # a crash leaves it behind
    with ImpairedNetwork(PROFILES["clean"], seconds=10) as other, ImpairedNetwork(PROFILES["clean"], seconds=10):
        assert name not in namespace_names()
        assert other.name in namespace_names()  # a live run's namespace is no one's to remove
    assert not (STATE_DIR / f"{name}.json").exists()


# Command line.


@needs_root
def test_the_command_runs_inside_and_its_exit_status_comes_back() -> None:
    code = "import subprocess, sys; print(subprocess.check_output(['ip', 'netns', 'identify']).decode()); sys.exit(3)"
    result = subprocess.run(
        [sys.executable, "-m", "bench.impaired_network", "--profile", "loss2", "--seconds", "20", "--",
         sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    name = result.stdout.strip()
    assert name.startswith("impnet-")
    assert f"{name}: one-way delay 40 ms +/- 20 ms (uniform), 2% loss per packet" in result.stderr
    assert name not in namespace_names()


@needs_root
def test_the_command_is_stopped_when_its_seconds_are_up() -> None:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bench.impaired_network", "--profile", "clean", "--seconds", "1", "--", "sleep", "30"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 124
    assert time.monotonic() - start < 10
    assert "1 s are up" in result.stderr


_SERVE = 'echo "server $(id -u) $IMPAIRED_NETWORK_CALLER" >&2; exec {python} -m http.server -b 127.0.0.1 8098'
_CALL = (
    "import os, sys, urllib.request as u; print(os.getuid(), u.urlopen('http://127.0.0.1:8098/').status); sys.exit(4)"
)


@needs_root
def test_the_caller_command_runs_as_the_caller_once_the_server_listens() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.impaired_network", "--profile", "loss2", "--seconds", "30",
         "--wait-port", "8098", "--caller", shlex.join([sys.executable, "-c", _CALL]),
         "--", "sh", "-c", _SERVE.format(python=shlex.quote(sys.executable)) + " >/dev/null 2>&1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert result.stdout.split() == [str(CALLER_UID), "200"]
    assert "scope caller" in result.stderr
    assert "server 0 " in result.stderr and "_become_caller" in result.stderr  # COMMAND gets the prefix


def test_caller_arguments_that_make_no_sense_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--scope", "all", "--caller", "true", "--", "true"], "cannot go with --scope all"),
        (["--wait-port", "80", "--", "true"], "--wait-port delays the start of --caller"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_help_lists_the_profiles_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "loss5  one-way delay 40 ms +/- 20 ms (uniform), 5% loss per packet" in out
    assert "-- .venv/bin/python -m local" in out
    assert "--scope caller: only the caller's network" in out
    assert "--caller '.venv/bin/python -m local.call_client --transport websocket'" in out


def test_a_missing_command_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "loss2"])
    assert exit_info.value.code == 2
    assert "give a command to run after --" in capsys.readouterr().err
