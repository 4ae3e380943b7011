"""How bench.transport_calls judges audio arrival: late, lost, and only the agent's speech."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from bench.transport_calls import PLAYOUT_BUDGET_MS, arrival_figures, combined, report, rtp_spoken, spoken

LOUD = np.full(960, 3000, np.int16)
QUIET = np.zeros(960, np.int16)


def test_audio_on_time_is_neither_late_nor_lost() -> None:
    stream = [(10.0 + 0.02 * k, 0.02 * k, 0.02) for k in range(50)]
    figures = arrival_figures(stream)
    assert figures["frames"] == 50 and figures["late"] == 0 and figures["lost"] == 0
    assert max(figures["delays_ms"]) == pytest.approx(0, abs=1e-6)


def test_a_stall_makes_what_waited_late_and_a_gap_is_lost() -> None:
    stall = PLAYOUT_BUDGET_MS / 1000 + 0.05
    stream = [(10.0 + 0.02 * k + (stall if 20 <= k < 25 else 0.0), 0.02 * k, 0.02) for k in range(50) if k != 40]
    figures = arrival_figures(stream)
    assert figures["frames"] == 50
    assert figures["late"] == pytest.approx(5)  # the five chunks held back past the playout budget
    assert figures["lost"] == pytest.approx(1)  # the chunk that never came


def test_only_the_agents_speech_counts_and_the_answer_is_its_own_stream() -> None:
    # Greeting: quiet, 10 loud chunks, quiet; then, after the caller spoke (t=5), the answer: 5 loud.
    received = [(1.0 + 0.02 * k, LOUD if 5 <= k < 15 else QUIET) for k in range(20)]
    received += [(6.0 + 0.02 * k, LOUD if k < 5 else QUIET) for k in range(8)]
    streams = spoken(received, [None] * len(received), split_at=5.0, rate=48000)
    assert [len(stream) for stream in streams] == [10, 5]
    assert combined(streams)["frames"] == 15


@dataclass
class FakeRtpPeer:
    """What rtp_spoken reads of a WebRTC peer: decoded frames and the RTP packets as they arrived."""

    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    media_positions: list[float | None] = field(default_factory=list)
    rtp_arrivals: list[tuple[float, int, int]] = field(default_factory=list)


def test_rtp_packets_are_placed_by_timestamp_and_a_missing_sequence_is_lost() -> None:
    peer = FakeRtpPeer()
    origin = 2**32 - 960 * 3  # the RTP clock wraps during the greeting
    for k in range(30):
        if k != 12:
            peer.rtp_arrivals.append((1.0 + 0.02 * k, 1000 + k, (origin + 960 * k) % 2**32))
        peer.received.append((1.05 + 0.02 * k, LOUD if 5 <= k < 25 else QUIET))
        peer.media_positions.append(0.02 * k)
    (stream,) = rtp_spoken(peer, split_at=100.0)
    figures = arrival_figures(stream)
    assert figures["frames"] == 20  # loud from the 5th packet to the 24th
    assert figures["lost"] == pytest.approx(1) and figures["late"] == 0


def test_the_report_counts_every_call_and_names_the_first_failure() -> None:
    done = {"transport": "webrtc", "first_audio_ms": 300.0, "voice_to_voice_ms": 900.0, "frames": 100,
            "late": 2.0, "lost": 3.0, "delays_ms": [1.0, 150.0]}  # fmt: skip
    failed = {"transport": "webrtc", "error": "TimeoutError: no transcript"}
    figures = report([done, done, failed])["webrtc"]
    assert (figures["calls"], figures["calls_up"], figures["failed"]) == (3, 2, 1)
    assert figures["first_error"] == "TimeoutError: no transcript"
    assert figures["frames"] == 200 and figures["late_or_lost_share"] == pytest.approx(0.05)
