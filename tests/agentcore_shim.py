"""A loopback stand-in for the AgentCore data plane: ``InvokeAgentRuntime`` forwarded to a local agent.

Real boto3 ``bedrock-agentcore`` clients talk to it (``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE``), so the
broker's AgentCore invoker is exercised end to end: request serialization, the session header, and
the streamed ``text/event-stream`` answer, with the real agent answering behind it.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import unquote, urlsplit

from local.http_server import FastRequestHandler, LoopbackHTTPServer

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


class AgentCoreShim:
    """Serve ``POST /runtimes/{arn}/invocations`` by forwarding to ``agent_url``/invocations."""

    def __init__(self, agent_url: str) -> None:
        self.agent = urlsplit(agent_url)
        self.seen: list[tuple[str, str]] = []  # (runtime ARN, runtime session id) of each invocation
        shim = self

        class Handler(FastRequestHandler):
            def do_POST(self) -> None:
                parts = self.path.split("/")
                if len(parts) != 4 or parts[1] != "runtimes" or not parts[3].startswith("invocations"):
                    self.send_all(404, [("Content-Type", "application/json")], b'{"message": "not found"}')
                    return
                session = self.headers.get(SESSION_HEADER, "")
                shim.seen.append((unquote(parts[2]), session))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                agent = http.client.HTTPConnection(shim.agent.hostname, shim.agent.port, timeout=30)
                try:
                    agent.request(
                        "POST",
                        "/invocations",
                        body=body,
                        headers={"Content-Type": "application/json", SESSION_HEADER: session},
                    )
                    answer = agent.getresponse()
                    payload = answer.read()
                    content_type = answer.getheader("Content-Type", "application/json")
                finally:
                    agent.close()
                self.send_all(200, [("Content-Type", content_type), (SESSION_HEADER, session)], payload)

        self._server = LoopbackHTTPServer(("127.0.0.1", 0), Handler, idle_timeout=30)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> AgentCoreShim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
