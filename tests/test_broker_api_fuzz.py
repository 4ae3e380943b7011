"""Generated-input fuzzing from docs/openapi.json (schemathesis): no 5xx, and every error is a JSON body.

Each operation gets schema-conforming (positive) and schema-violating (negative) requests. Half of
the requests to a session route use a real session, so their bodies reach validation and the agent
instead of stopping at the session check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from broker.api.config import build_service
from local.broker_api import LocalAuth, LocalBrokerApi, mint_token
from local.kvs_emulator import EmulatorConfig, KvsEmulator
from tests.api_support import RUNTIME_ARN, agent_process, call
from tests.conftest import DUMMY_AWS_ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES_PER_RUN = 350  # x 3 operations x 2 modes = 2,100 requests
SECRET = "fuzz-jwt-secret-0123456789abcdefghij"
TOKEN = mint_token(SECRET, "fuzzer")
SENT: Counter[int] = Counter()


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, list[str]]]:
    with (
        pytest.MonkeyPatch.context() as patch,
        KvsEmulator(EmulatorConfig(port=0)) as kvs,
        agent_process() as agent_url,
    ):
        for name, value in DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", kvs.url)
        env = {
            **DUMMY_AWS_ENV,
            # 40 channels serve 200 calls/s: fuzzing /start must not exhaust the pool (a 503 is a 5xx).
            "TURN_CHANNEL_ARNS": ",".join(kvs.create_channels(40)),
            "AGENT_INVOKER": "local",
            "LOCAL_AGENT_URL": agent_url,
            "SESSION_SIGNING_KEY": "fuzz-session-key-0123456789abcdefghij",
            "TURN_MAX_WAIT_SECONDS": "10",
            # Both transports, as the stack offers them: a websocket /start signs a URL instead.
            "BROKER_TRANSPORTS": "webrtc,websocket",
            "AGENT_RUNTIME_ARN": RUNTIME_ARN,
        }
        with LocalBrokerApi(build_service(env), auth=LocalAuth("hs256", SECRET)) as api:
            sessions = [call(api.url, "POST", "/start", {}, token=TOKEN).body["sessionId"] for _ in range(8)]
            yield api.url, sessions


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_generated_requests_never_get_a_5xx_and_errors_are_json(
    target: tuple[str, list[str]], operation: schemathesis.APIOperation, mode: GenerationMode
) -> None:
    base_url, sessions = target

    @settings(
        max_examples=EXAMPLES_PER_RUN,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if "sessionId" in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters["sessionId"] = data.draw(st.sampled_from(sessions))
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        SENT[response.status_code] += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} body={case.body!r:.500} headers={case.headers!r:.200} "
            f"-> {response.status_code} {response.text[:300]}"
        )
        body = response.json()  # every answer is JSON
        if response.status_code >= 400:
            assert set(body) == {"error"}
            assert isinstance(body["error"]["code"], str) and body["error"]["message"]

    fuzz()


def test_at_least_2000_generated_requests_were_sent() -> None:
    # Runs after the fuzzing tests above (pytest keeps file order); counts what they really sent.
    assert sum(SENT.values()) >= 2000, SENT
    print(f"\nfuzzing: {sum(SENT.values())} requests, statuses {dict(sorted(SENT.items()))}")
