// The Pipecat JS client and its SmallWebRTC transport, with the WavMediaManager (plain getUserMedia):
// unlike the default Daily media manager, it needs nothing from the internet.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

const element = (id) => document.getElementById(id);
const log = (line) => {
  element("log").textContent += `${line}\n`;
};
let client = null;

function setStatus(status) {
  element("status").textContent = status;
  element("connect").disabled = status !== "disconnected";
  element("disconnect").disabled = status === "disconnected";
}

async function connect() {
  setStatus("starting");
  const started = await fetch("/start", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ transport: "webrtc" }),
  });
  if (!started.ok) {
    throw new Error(`/start answered HTTP ${started.status}: ${await started.text()}`);
  }
  // {sessionId, iceConfig: {iceServers}}: TURN credentials minted from the KVS channel pool.
  const session = await started.json();
  const transport = new SmallWebRTCTransport({ mediaManager: new WavMediaManager(), waitForICEGathering: true });
  client = new PipecatClient({
    transport,
    enableMic: true,
    enableCam: false,
    callbacks: {
      onConnected: () => setStatus("connected"),
      onDisconnected: () => setStatus("disconnected"),
      onUserTranscript: (data) => data.final && log(`you: ${data.text}`),
      onBotTtsText: (data) => log(`agent: ${data.text}`),
      onTrackStarted: (track, participant) => {
        if (track.kind === "audio" && !participant?.local) {
          const audio = element("bot-audio");
          audio.srcObject = new MediaStream([track]);
          audio.play().catch(() => log("click anywhere to hear the agent (autoplay is blocked)"));
        }
      },
      onError: (message) => log(`error: ${JSON.stringify(message?.data ?? message)}`),
    },
  });
  setStatus("connecting");
  await client.connect({
    webrtcRequestParams: { endpoint: `/sessions/${session.sessionId}/api/offer` },
    iceConfig: session.iceConfig,
  });
}

element("connect").addEventListener("click", () => {
  connect().catch((error) => {
    log(`error: ${error.message ?? error}`);
    setStatus("disconnected");
  });
});
element("disconnect").addEventListener("click", () => client?.disconnect());
