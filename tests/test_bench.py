"""The benchmark runs end to end and reports every mode (numbers are checked by people, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_bench_broker_reports_all_modes_as_json() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.broker",
            "--json",
            "--channels=2",
            "--samples=6",
            "--seconds=2",
            "--threads=8",
            "--latency-ms=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report["modes"]) == {"naive", "per_session", "shared"}
    for mode in report["modes"].values():
        assert mode["samples"] == 6
        assert mode["p50_ms"] > 0 and mode["p99_ms"] >= mode["p50_ms"]
    per_session = report["modes"]["per_session"]
    # Functional, not timing: the broker never provokes a throttle, even saturated.
    assert per_session["saturation_throttles"] == 0 and per_session["saturation_failures"] == 0
    assert per_session["saturation_successes"] > 0
    assert set(report["targets"]) >= {"shared_p99_under_2ms", "per_session_zero_throttles"}


def test_bench_rejects_bad_arguments() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.broker", "--channels=0"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "error:" in run.stderr


def run_fleet(*arguments: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--json", "--rates=10", "--duration=60", "--seed=3", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def test_bench_fleet_accounts_for_every_session_and_the_pool_size_matters() -> None:
    report = run_fleet()
    assert set(report) >= {"endpoints", "model", "seed", "scenarios", "targets", "wall_seconds"}
    assert report["endpoints"] == report["model"]["endpoints"] == "manifest"  # what the deployed stack does
    by_sizing = {scenario["sizing"]: scenario for scenario in report["scenarios"]}
    assert set(by_sizing) == {"minimum", "recommended"}
    for scenario in by_sizing.values():
        assert scenario["endpoints"] == "manifest"
        assert scenario["diverged_at_s"] is None
        assert 450 < scenario["sessions"] < 750  # Poisson, 10/s for 60 s
        # Every session ended, served or failed; every request was served or failed with a reason.
        assert scenario["completed_sessions"] + scenario["failed_sessions"] == scenario["sessions"]
        failed = sum(scenario["failed_requests"].values())
        assert scenario["served_requests"] + failed == scenario["credential_requests"]
        # Two requests a session, minus the offers of sessions whose /start failed.
        assert 2 * scenario["sessions"] - failed <= scenario["credential_requests"] <= 2 * scenario["sessions"]
        assert scenario["get_ice_server_config_calls"] == scenario["served_requests"] + scenario["throttles"]
        # Every instance starts with the manifest's endpoints: KVS sees GetIceServerConfig only.
        assert scenario["endpoint_lookups"] == scenario["peak_endpoint_lookups_per_sec"] == 0
        assert scenario["kvs_calls"] == scenario["get_ice_server_config_calls"]
        assert 0 < scenario["cold_starts"] == scenario["peak_instances_alive"] == scenario["manifest_reads"]
        assert 0 < scenario["peak_manifest_reads_per_sec"] <= scenario["manifest_reads"]
        latency = scenario["added_latency_ms"]
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert scenario["predicted_throttles_per_call"] > 0
    minimum, recommended = by_sizing["minimum"], by_sizing["recommended"]
    assert minimum["channels"] < recommended["channels"]
    assert minimum["sessions"] == recommended["sessions"]  # the same sessions over both pools
    assert recommended["throttles_per_call"] < 0.05
    assert minimum["throttles_per_call"] > 0.2 > recommended["throttles_per_call"]
    assert recommended["added_latency_ms"]["p99"] < minimum["added_latency_ms"]["p99"]
    throttle_target = report["targets"]["throttles_per_call_at_most_0.01"]
    prediction_target = report["targets"]["simulated_over_predicted_within_0.5_2"]
    assert set(report["targets"]) == {"throttles_per_call_at_most_0.01", "simulated_over_predicted_within_0.5_2"}
    assert throttle_target["bound"] == 0.01 and prediction_target["bound"] == [0.5, 2]
    (verdict,) = throttle_target["recommended_pool_by_rate"].values()
    assert verdict["channels"] == recommended["channels"]
    assert verdict["value"] == pytest.approx(recommended["throttles_per_call"])
    assert verdict["met"] == (verdict["value"] <= 0.01) == throttle_target["met"]


def test_bench_fleet_lazy_endpoints_look_each_channel_up_once_per_instance() -> None:
    report = run_fleet("--endpoints=lazy")
    assert report["endpoints"] == "lazy"
    for scenario in report["scenarios"]:
        assert scenario["endpoints"] == "lazy"
        assert scenario["manifest_reads"] == scenario["peak_manifest_reads_per_sec"] == 0
        assert scenario["kvs_calls"] == scenario["get_ice_server_config_calls"] + scenario["endpoint_lookups"]
        # At 10/s the account's endpoint limit is far away, and each instance looks a channel up once.
        assert scenario["endpoint_throttles"] == 0
        assert 0 < scenario["endpoint_lookups"] <= scenario["cold_starts"] * scenario["channels"]
        assert scenario["added_latency_ms"]["max"] > 0  # a lookup is one more round trip


@pytest.mark.parametrize("argument", ["--duration=0", "--endpoints=cached"])
def test_bench_fleet_rejects_bad_arguments(argument: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.fleet", argument], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "error:" in run.stderr


def test_bench_discovery_times_both_ways_of_finding_the_pool() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.discovery", "--json", "--sizes=3,40", "--samples=2", "--latency-ms=5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [pool["channels"] for pool in report["pools"]] == [3, 40]
    for pool in report["pools"]:
        assert pool["list_ms"]["p50"] >= report["latency_ms"]  # a real round trip to the emulator
        assert pool["manifest_bytes"] > 0 and pool["manifest_parse_ms"]["p50"] >= 0
    small, big = report["pools"]
    assert big["manifest_bytes"] > small["manifest_bytes"]  # every channel is in the manifest


def test_bench_local_calls_measures_both_clients_with_their_phases() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.local_calls", "--json", "--calls=1", "--concurrent=1", "--variant-calls=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    for client in ("aiortc", "websocket", "browser", "browser_websocket"):
        for mode in ("sequential", "concurrent"):
            figures = report[client][mode]
            assert figures["calls"] == 1
            # Each call connected, heard the greeting, and was answered when it spoke.
            assert 0 < figures["connect_ms"]["p50"] < figures["first_audio_ms"]["p50"]
            assert figures["failed"] == 0
            if client != "aiortc" or mode == "sequential":  # aiortc calls at once do not speak
                assert figures["voice_to_voice_ms"]["p50"] > 0
                assert figures["stage_vad_stop_ms"]["p50"] > 0 and figures["stage_stt_ms"]["p50"] > 0
            if mode == "concurrent":  # the cores each part used while the calls at once ran
                cpu = figures["cpu"]
                assert cpu["cores"]["agent"] > 0 and cpu["machine_cores"] >= 1 and cpu["seconds"] > 0
                assert cpu["total_cores"] == pytest.approx(sum(cpu["cores"].values()), abs=0.05)
    assert report["browser"]["concurrent"]["cpu"]["cores"]["chromium_pages"] > 0
    # Each client's WebSocket figures against its WebRTC ones, in the same run.
    assert set(report["transports"]) == {"websocket_against_aiortc", "browser_websocket_against_browser"}
    assert report["transports"]["websocket_against_aiortc"]["voice_to_voice_ms"]["ratio"] > 0
    browser = report["browser"]["sequential"]
    assert {"phase_start_ms", "phase_offer_round_trip_ms", "phase_ice_dtls_ms", "phase_first_packet_ms"} <= set(browser)
    assert set(report["targets"]) == {
        "aiortc_first_audio_p50_at_most_600_ms",
        "browser_sequential_first_audio_p50_under_1000_ms",
        "browser_concurrent_first_audio_p50_under_1500_ms",
    }


@pytest.mark.parametrize("argument", ["--calls=0", "--clients=carrier-pigeon", "--concurrent=-1"])
def test_bench_local_calls_rejects_bad_arguments(argument: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.local_calls", argument], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "error:" in run.stderr


def test_bench_transports_compares_both_transports_on_an_impaired_network(tmp_path: Path) -> None:
    plot = tmp_path / "transports.png"
    run = subprocess.run(
        [sys.executable, "-m", "bench.transports", "--json", "--calls=1", "--profiles=loss2", f"--plot={plot}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)["profiles"]["loss2"]
    assert "2% loss" in report["network"] and "in order" in report["network"]
    for transport in ("webrtc", "websocket"):
        figures = report[transport]
        assert figures["calls_up"] == 1 and figures["failed"] == 0
        assert figures["frames"] > 100  # the greeting and the answer, in 20 ms frames
        assert figures["voice_to_voice_ms"]["p50"] > 0 and figures["audio_delay_ms"]["max"] >= 0
    assert report["websocket"]["lost_share"] == 0  # TCP loses nothing: what the network dropped comes late
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("argument", ["--calls=0", "--profiles=moon", "--plot=out.svg"])
def test_bench_transports_rejects_bad_arguments(argument: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.transports", argument], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "error:" in run.stderr
