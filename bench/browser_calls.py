"""Browser calls for :mod:`bench.local_calls`: Debian's Chromium, driven by Playwright, on the call page.

Chromium's fake microphone plays a WAV (seconds of silence, espeak-ng saying a phrase, silence), so
each call hears the greeting first and then the phrase. The page measures what a person hears (its
AudioWorklet level meters, ``window.callTimeline``); ``browser_probe.js``, injected before the page's
scripts, records what the page does not show (requests, peer connection states, RTVI messages), and
:func:`phases` turns both into the durations of each step. Playwright never downloads a browser: it
drives the system's Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import wave
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
from playwright.async_api import Browser, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from bench.call_figures import agent_turn_metrics, voice_stages
from bench.cpu_use import measured_cpu
from local.call_client import PEER_RATE, espeak_pcm

PROBE: Final = (Path(__file__).with_name("browser_probe.js")).read_text()
QUIET_FLAGS: Final = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
)  # fmt: skip
"""No background traffic (this closed network refuses it anyway) and audio without a gesture."""
AGENT_TURN_WAIT_MS: Final = 2000
"""How long a call waits, after its first answered turn, for the agent's own measure of that turn."""
SPEECH_LEAD_SECONDS: Final = 4.0
"""Silence before the phrase: the greeting (about 2.8 s) is over by then."""


def chromium_path() -> str:
    """The system's Chromium (Debian's package)."""
    return shutil.which("chromium") or "/usr/bin/chromium"


def write_microphone_wav(path: Path, text: str, *, lead_seconds: float = SPEECH_LEAD_SECONDS) -> Path:
    """Write the fake microphone's WAV: quiet, espeak-ng saying ``text``, then six seconds of quiet.

    The quiet is a real microphone's noise floor (one bit of dither, about -90 dBFS), not digital
    zeros: the WebSocket transport's recorder sends nothing until its input is non-zero, so a lead of
    exact zeros would start the call's audio at the first word, which no microphone does (and which
    leaves the agent's voice detector no audio before the speech to settle on).
    """
    speech = np.concatenate(
        [
            np.zeros(int(lead_seconds * PEER_RATE), np.int16),
            espeak_pcm(text, PEER_RATE),
            np.zeros(6 * PEER_RATE, np.int16),
        ]
    )
    dither = np.random.default_rng(0).integers(-1, 2, speech.size)  # -1, 0 or 1
    speech = np.clip(speech.astype(np.int32) + dither, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(PEER_RATE)
        writer.writeframes(speech.tobytes())
    return path


def fake_microphone_flags(wav: Path) -> list[str]:
    """Chromium flags: grant the microphone and play ``wav`` into it once (``%noloop``) per capture."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]


@asynccontextmanager
async def chromium(wav: Path) -> AsyncIterator[Browser]:
    """A headless Chromium whose fake microphone plays ``wav``."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=[*QUIET_FLAGS, *fake_microphone_flags(wav)]
        )
        try:
            yield browser
        finally:
            await browser.close()


def _first(items: Iterator[float]) -> float | None:
    return next(items, None)


def phases(timeline: Mapping[str, Any], probe: Mapping[str, Any]) -> dict[str, float]:
    """Durations (ms) of one browser call, from the page's timeline and the probe's moments.

    Keys: ``connect_ms`` (click to media connected), ``first_audio_ms`` (click to the greeting's first
    audible sound), ``voice_to_voice_ms`` (the caller's last sound to the answer's first), and the
    steps in between: ``phase_start_ms`` (``POST /start``), ``phase_microphone_ms`` (click to the
    microphone open, in parallel with ``/start``), ``phase_offer_creation_ms`` (new peer connection to
    the offer sent: offer creation, and ICE gathering when the page waits for it),
    ``phase_offer_round_trip_ms`` (broker, KVS credentials for the agent, the agent's answer),
    ``phase_ice_dtls_ms`` (answer applied to connected), ``phase_client_ready_ms`` (RTVI
    ``client-ready`` to ``bot-ready``), ``phase_greeting_ms`` (connected to ``bot-started-speaking``:
    the agent starting its greeting and synthesizing it) and ``phase_first_packet_ms``
    (``bot-started-speaking`` to audible: the media path and the browser's jitter buffer).
    """
    click = float(timeline["click"])
    marks = probe["marks"]
    messages = probe["messages"]

    def mark(name: str) -> float | None:
        return _first(m["at"] for m in marks if m["name"] == name and m["at"] >= click)

    def received(kind: str, after: float) -> float | None:
        return _first(m["at"] for m in messages if m["type"] == kind and not m.get("sent") and m["at"] >= after)

    def sent(kind: str) -> float | None:
        return _first(m["at"] for m in messages if m["type"] == kind and m.get("sent"))

    def span(begin: float | None, end: float | None) -> float | None:
        return None if begin is None or end is None else end - begin

    connected, first_word = timeline.get("media"), timeline.get("firstWord")
    speaking = received("bot-started-speaking", click)
    figures = {
        "connect_ms": span(click, connected),
        "first_audio_ms": span(click, first_word),
        "phase_start_ms": span(mark("start-sent"), mark("start-answered")),
        "phase_microphone_ms": span(click, timeline.get("microphone")),
        "phase_offer_creation_ms": span(mark("pc-created"), mark("offer-sent")),
        "phase_offer_round_trip_ms": span(mark("offer-sent"), mark("offer-answered")),
        "phase_ice_dtls_ms": span(mark("answer-applied"), mark("pc-connected")),
        "phase_client_ready_ms": span(sent("client-ready"), received("bot-ready", click)),
        "phase_greeting_ms": span(connected, speaking),
        "phase_first_packet_ms": span(speaking, first_word),
    }
    turns = timeline.get("turns") or []
    if turns:
        turn = turns[0]
        # The agent's turn metrics as the page got them (over the data channel or the WebSocket).
        agent = [{"type": "server-message", **turn_metrics} for turn_metrics in timeline.get("agentTurns") or []]
        later = sorted((m for m in [*messages, *agent] if m["at"] >= turn["callerStoppedAt"]), key=lambda m: m["at"])
        figures["voice_to_voice_ms"] = float(turn["latencyMs"])
        figures.update(voice_stages(float(turn["latencyMs"]), agent_turn_metrics(later)))
    return {key: round(value, 1) for key, value in figures.items() if value is not None}


async def browser_call(browser: Browser, url: str, *, query: str = "", timeout: float = 60) -> dict[str, float]:
    """One call from the offline page: click Connect, wait for the first answered turn, hang up."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.add_init_script(PROBE)
        await page.goto(f"{url}/offline/{query}")
        await page.get_by_role("button", name="Connect", exact=True).click()
        try:
            await page.wait_for_function(
                "window.callTimeline && window.callTimeline.turns.length > 0", timeout=timeout * 1000
            )
        except Exception as exc:
            error = await page.inner_text("#error")
            raise RuntimeError(f"the browser call did not complete a turn: {error or exc}") from exc
        # The agent's measure of the turn is sent as its answer starts; over the WebSocket the page
        # plays that audio at once, so the message can come a moment after the sound: wait briefly.
        with contextlib.suppress(PlaywrightTimeoutError):  # a call without it still has its own figures
            await page.wait_for_function("window.callTimeline.agentTurns.length > 0", timeout=AGENT_TURN_WAIT_MS)
        timeline = await page.evaluate("window.callTimeline")
        probe = await page.evaluate("window.__probe")
        await page.get_by_role("button", name="Disconnect", exact=True).click()
        return phases(timeline, probe)
    finally:
        await context.close()


async def browser_calls(url: str, wav: Path, *, sequential: int, concurrent: int, query: str = "") -> dict[str, Any]:
    """``sequential`` calls one after another, then ``concurrent`` at once (each its own page).

    A call that fails is its exception in the lists, so one slow call does not void the run.
    ``concurrent_cpu`` is the cores each part of the system used while the calls at once ran.
    """
    async with chromium(wav) as browser:
        alone = [await _outcome(browser_call(browser, url, query=query)) for _ in range(sequential)]
        if not concurrent:
            return {"sequential": alone, "concurrent": []}
        with measured_cpu() as cpu:
            together = await asyncio.gather(
                *(_outcome(browser_call(browser, url, query=query)) for _ in range(concurrent))
            )
    return {"sequential": alone, "concurrent": list(together), "concurrent_cpu": cpu.report()}


async def _outcome(call: Awaitable[dict[str, float]]) -> dict[str, float] | Exception:
    try:
        return await call
    except Exception as exc:  # a failed call is a result of the benchmark
        return exc
