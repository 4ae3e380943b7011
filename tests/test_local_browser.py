"""A real browser (Debian's headless Chromium, driven by Playwright) calls the local system.

Chromium's fake microphone plays a WAV of espeak-ng saying "how are you". Playwright never downloads a
browser: it drives /usr/bin/chromium. Screenshots are saved under artifacts/. The page's own
measurements (its steps, first word, turn latency) and its error messages are checked here too.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, sync_playwright

from agent.local_speech import reply_to
from bench.browser_calls import QUIET_FLAGS, chromium_path, fake_microphone_flags, write_microphone_wav
from local.call_client import PEER_RATE, espeak_pcm
from tests.local_support import ROOT, RunningStack, running_stack

pytestmark = pytest.mark.slow

CHROMIUM = chromium_path()
ARTIFACTS = ROOT / "artifacts"
QUIET = list(QUIET_FLAGS)
CAPTURE_PEER_CONNECTIONS = """(() => {
  const Original = window.RTCPeerConnection;
  window.__peerConnections = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__peerConnections.push(this); }
  };
})();"""
AUDIO_STATS = """async () => {
  const found = {inboundAudioBytes: 0, outboundAudioBytes: 0, pairs: []};
  for (const pc of window.__peerConnections) {
    const stats = await pc.getStats();
    const byId = {};
    stats.forEach((report) => { byId[report.id] = report; });
    stats.forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") found.inboundAudioBytes += report.bytesReceived;
      if (report.type === "outbound-rtp" && report.kind === "audio") found.outboundAudioBytes += report.bytesSent;
      if (report.type === "transport" && report.selectedCandidatePairId) {
        const pair = byId[report.selectedCandidatePairId];
        found.pairs.push([byId[pair.localCandidateId].candidateType, byId[pair.remoteCandidateId].candidateType]);
      }
    });
  }
  return found;
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not (ROOT / ".make" / "web" / "app.js").is_file():
        pytest.fail("the offline page is not built: run `make web` (make test does)")
    with running_stack(tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    speech = np.concatenate(
        [np.zeros(PEER_RATE, np.int16), espeak_pcm("how are you", PEER_RATE), np.zeros(3 * PEER_RATE, np.int16)]
    )
    microphone = tmp_path_factory.mktemp("media") / "how-are-you.wav"
    with wave.open(str(microphone), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(PEER_RATE)
        writer.writeframes(speech.tobytes())
    fake_microphone = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    ]
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET + fake_microphone)
    yield launched
    launched.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def call_from_offline_page(page: Any, url: str) -> None:
    """Open the offline page, click Connect, and wait until its peer connection is up."""
    page.add_init_script(CAPTURE_PEER_CONNECTIONS)
    page.goto(f"{url}/offline/")
    page.get_by_role("button", name="Connect", exact=True).click()
    page.wait_for_function("window.__peerConnections.some((pc) => pc.connectionState === 'connected')", timeout=30_000)


def test_chromium_calls_the_agent_and_receives_its_audio(stack: RunningStack, browser: Browser) -> None:
    page = browser.new_page()
    try:
        call_from_offline_page(page, stack.url)
        # The fake microphone says "how are you"; the agent hears it and answers through the relay.
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('you: how are you')", timeout=30_000
        )
        reply = json.dumps(f"agent: {reply_to('how are you')}")
        page.wait_for_function(f"document.getElementById('log').textContent.includes({reply})", timeout=30_000)
        page.wait_for_timeout(2000)
        stats = page.evaluate(AUDIO_STATS)
        print(f"\nchromium: {stats}")
        assert stats["inboundAudioBytes"] > 0  # the agent's audio arrived
        assert stats["outboundAudioBytes"] > 0
        assert stats["pairs"] and all(remote == "relay" for _, remote in stats["pairs"])  # via coturn
    finally:
        screenshot(page, "local-offline-call.png")
        page.close()


def test_the_prebuilt_ui_opens_in_chromium(stack: RunningStack, browser: Browser) -> None:
    # Connecting needs Daily's CDN (its SmallWebRTC transport loads a script from c.daily.co),
    # which this machine cannot reach: here the UI is checked to load and render from make local.
    page = browser.new_page()
    try:
        page.goto(stack.url + "/")
        page.get_by_role("button", name="Connect", exact=True).wait_for(timeout=30_000)
        assert "Pipecat" in page.inner_text("body")
    finally:
        screenshot(page, "prebuilt-ui.png")
        page.close()


@pytest.fixture(scope="module")
def short_lived_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # Credentials live 30 s, coturn's allocations 60 s: a call past 60 s needs refreshed credentials.
    lifetimes = ["--turn-max-allocate-lifetime=60", "--turn-permission-lifetime=60", "--turn-channel-lifetime=60"]
    with running_stack(tmp_path_factory.mktemp("logs"), "--ttl=30", *lifetimes) as running:
        yield running


NEWEST_CONNECTION = """async () => {
  const pc = window.__peerConnections[window.__peerConnections.length - 1];
  let inbound = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") inbound += r.bytesReceived;
  });
  const microphone = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
  return {state: pc.connectionState, inbound, microphone: microphone ? microphone.track.readyState : "none"};
}"""


def test_a_browser_call_outlives_its_turn_credentials(short_lived_stack: RunningStack, browser: Browser) -> None:
    page = browser.new_page()
    try:
        call_from_offline_page(page, short_lived_stack.url)
        page.wait_for_timeout(80_000)  # past the 60 s allocation lifetime, with refreshes every ~20 s
        log = page.inner_text("#log")
        assert log.count("refreshed TURN credentials") >= 3
        assert "credential refresh failed" not in log
        # After the last refresh the agent still hears the microphone and answers.
        page.wait_for_function(
            "document.getElementById('log').textContent.split('refreshed TURN credentials').pop()"
            ".includes('you: how are you')",
            timeout=20_000,
        )
        first = page.evaluate(NEWEST_CONNECTION)
        page.wait_for_timeout(3000)
        second = page.evaluate(NEWEST_CONNECTION)
        print(f"\nbrowser long call: {log.count('refreshed TURN credentials')} refreshes, newest connection {second}")
        assert second["state"] == "connected" and second["microphone"] == "live"
        assert second["inbound"] > first["inbound"]  # the agent's audio is still arriving
        assert log.count("Hello! How can I help you today?") <= 1  # the greeting is not replayed on restarts
    finally:
        screenshot(page, "local-long-call.png")
        page.close()


@pytest.fixture(scope="module")
def browser_once(playwright_driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose fake microphone says "how are you" once, four seconds in (after the greeting)."""
    wav = write_microphone_wav(tmp_path_factory.mktemp("media") / "once.wav", "how are you")
    launched = playwright_driver.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=QUIET + fake_microphone_flags(wav)
    )
    yield launched
    launched.close()


def test_the_page_shows_each_step_and_measures_first_word_and_turn_latency(
    stack: RunningStack, browser_once: Browser
) -> None:
    page = browser_once.new_page()
    try:
        page.goto(f"{stack.url}/offline/")
        page.get_by_role("button", name="Connect", exact=True).click()
        page.wait_for_function("document.getElementById('bot-state').textContent === 'speaking'", timeout=30_000)
        page.wait_for_function("window.callTimeline.turns.length > 0", timeout=30_000)
        timeline = page.evaluate("window.callTimeline")
        steps = page.eval_on_selector_all("#steps li", "items => items.map(li => [li.dataset.step, li.className])")
        print(f"\npage: first word {page.inner_text('#first-word')}, last turn {page.inner_text('#turn-latency')}")
        assert all(state == "done" for _, state in steps), steps
        # Each step after the one it needs, and the first word only once media flows.
        assert timeline["click"] < timeline["session"] and timeline["click"] < timeline["microphone"]
        assert max(timeline["session"], timeline["microphone"]) < timeline["media"] < timeline["firstWord"]
        assert re.fullmatch(r"\d+ ms", page.inner_text("#first-word"))
        assert re.fullmatch(r"\d+ ms", page.inner_text("#turn-latency"))
        turn = timeline["turns"][0]
        # The agent answers after the caller stopped, by at least its VAD's end-of-speech wait (0.5 s).
        assert turn["agentStartedAt"] - turn["callerStoppedAt"] == pytest.approx(turn["latencyMs"])
        assert turn["latencyMs"] > 500
        assert timeline["microphonePeak"] > 0.01  # the meter heard the fake microphone speak
        assert page.is_hidden("#error")
    finally:
        screenshot(page, "local-offline-page.png")
        page.close()


def connect_until_error(page: Any, url: str, *, timeout_ms: int = 30_000) -> str:
    """Open the offline page, click Connect, and return the error it shows."""
    page.goto(f"{url}/offline/")
    page.get_by_role("button", name="Connect", exact=True).click()
    page.wait_for_selector("#error:not([hidden])", timeout=timeout_ms)
    return str(page.inner_text("#error"))


def test_a_refused_microphone_is_explained(
    stack: RunningStack, playwright_driver: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A fake microphone exists, but nobody grants it: headless Chromium denies the permission prompt.
    wav = write_microphone_wav(tmp_path_factory.mktemp("media") / "refused.wav", "hello")
    flags = [flag for flag in fake_microphone_flags(wav) if flag != "--use-fake-ui-for-media-stream"]
    refusing = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET + flags)
    try:
        page = refusing.new_page()
        assert "Microphone access was refused" in connect_until_error(page, stack.url)
        assert page.get_attribute('#steps [data-step="microphone"]', "class") == "failed"
        assert page.inner_text("#status") == "disconnected"
        assert page.is_enabled("#connect")  # try again once allowed
        screenshot(page, "local-offline-microphone-refused.png")
    finally:
        refusing.close()


def emulator_admin(stack: RunningStack, action: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports['kvs']}/_emulator/{action}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_a_busy_service_says_when_to_try_again(stack: RunningStack, browser_once: Browser) -> None:
    # Every channel throttled: the broker's pool is exhausted and /start answers 503 with Retry-After.
    emulator_admin(stack, "faults", {"operation": "GetIceServerConfig", "kind": "throttle", "count": 60})
    page = browser_once.new_page()
    try:
        error = connect_until_error(page, stack.url)
        assert "busy" in error and "HTTP 503" in error
        seconds = int(re.search(r"Try again in (\d+) s", error).group(1))  # type: ignore[union-attr]
        assert page.get_attribute('#steps [data-step="session"]', "class") == "failed"
        screenshot(page, "local-offline-busy.png")
        assert page.is_disabled("#connect")  # held for Retry-After, with a countdown
        emulator_admin(stack, "reset", {})
        began = time.monotonic()
        page.wait_for_selector("#connect:enabled", timeout=(seconds + 5) * 1000)
        assert time.monotonic() - began <= seconds + 1
        page.get_by_role("button", name="Connect", exact=True).click()  # and now the call goes through
        page.wait_for_function("window.callTimeline.firstWord !== undefined", timeout=30_000)
        assert page.is_hidden("#error")
    finally:
        emulator_admin(stack, "reset", {})
        page.close()


RELAY_ONLY = """(() => {
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(config, ...rest) { super({...(config || {}), iceTransportPolicy: "relay"}, ...rest); }
  };
})();"""


def test_an_unreachable_relay_is_explained(stack: RunningStack, browser_once: Browser) -> None:
    # A network where only the TURN relay could carry media, and the relay cannot be reached: the
    # browser may use relay candidates only, and /start's TURN URLs point at a port nothing serves.
    closed = free_udp_port()

    def unreachable_relay(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for server in body["iceConfig"]["iceServers"]:
            server["urls"] = [re.sub(r":\d+\?", f":{closed}?", url) for url in server["urls"]]
        route.fulfill(response=answer, json=body)

    page = browser_once.new_page()
    try:
        page.add_init_script(RELAY_ONLY)
        page.route("**/start", unreachable_relay)
        assert "ICE failed" in connect_until_error(page, stack.url, timeout_ms=40_000)
        assert page.get_attribute('#steps [data-step="media"]', "class") == "failed"
        assert page.inner_text("#status") == "disconnected"
        screenshot(page, "local-offline-ice-failed.png")
    finally:
        page.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_websocket_call_from_the_page_is_heard_and_answered(stack: RunningStack, browser_once: Browser) -> None:
    # The same page over the WebSocket transport: /start presigns the agent's ws_url, local mode's
    # AgentCore stand-in checks the signature and relays to the agent's /ws; no peer connection at all.
    page = browser_once.new_page()
    try:
        page.add_init_script(CAPTURE_PEER_CONNECTIONS)
        page.goto(f"{stack.url}/offline/?transport=websocket")
        assert page.input_value("#transport") == "websocket"
        page.get_by_role("button", name="Connect", exact=True).click()
        page.wait_for_function("window.callTimeline.turns.length > 0", timeout=30_000)
        reply = json.dumps(f"agent: {reply_to('how are you')}")
        page.wait_for_function(f"document.getElementById('log').textContent.includes({reply})", timeout=30_000)
        timeline = page.evaluate("window.callTimeline")
        steps = page.eval_on_selector_all("#steps li", "items => items.map(li => [li.dataset.step, li.className])")
        first_word, turn = page.inner_text("#first-word"), page.inner_text("#turn-latency")
        print(f"\npage over websocket: first word {first_word}, turn {turn}")
        assert "you: how are you" in page.inner_text("#log")  # the agent heard the fake microphone
        assert all(state == "done" for _, state in steps), steps
        assert timeline["transport"] == "websocket"
        # The agent's voice was loud at the page's player (the meter's onsets), first the greeting,
        # then the answer after the caller stopped.
        assert timeline["media"] < timeline["firstWord"] < timeline["turns"][0]["agentStartedAt"]
        assert timeline["turns"][0]["latencyMs"] > 500
        assert page.evaluate("window.__peerConnections.length") == 0
        assert page.is_hidden("#error")
    finally:
        screenshot(page, "local-offline-websocket-call.png")
        page.close()


def test_a_refused_websocket_is_explained(stack: RunningStack, browser_once: Browser) -> None:
    # A tampered signature: the stand-in refuses the upgrade (HTTP 403), as AgentCore would.
    def tampered(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        body["ws_url"] = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=" + "0" * 64, body["ws_url"])
        route.fulfill(response=answer, json=body)

    page = browser_once.new_page()
    try:
        page.route("**/start", tampered)
        page.goto(f"{stack.url}/offline/?transport=websocket")
        page.get_by_role("button", name="Connect", exact=True).click()
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "WebSocket refused" in page.inner_text("#error")
        assert page.get_attribute('#steps [data-step="media"]', "class") == "failed"
        assert page.inner_text("#status") == "disconnected"
    finally:
        page.close()
