// The Pipecat JS client and its SmallWebRTC transport, with the WavMediaManager (plain getUserMedia):
// unlike the default Daily media manager, it needs nothing from the internet.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

// TURN servers refuse to refresh an allocation once its credentials have expired, so a long call
// moves to a new peer connection with fresh credentials this long before they expire.
const REFRESH_BEFORE_SECONDS = 10;

const element = (id) => document.getElementById(id);
const log = (line) => {
  element("log").textContent += `${line}\n`;
};
let client = null;
let refreshTimer = null;
let refreshes = 0;

function setStatus(status) {
  element("status").textContent = status;
  element("connect").disabled = status !== "disconnected";
  element("disconnect").disabled = status === "disconnected";
}

async function startSession() {
  const started = await fetch("/start", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ transport: "webrtc" }),
  });
  if (!started.ok) {
    throw new Error(`/start answered HTTP ${started.status}: ${await started.text()}`);
  }
  // {sessionId, iceConfig: {iceServers}}: TURN credentials minted from the KVS channel pool.
  return started.json();
}

// TURN REST usernames are "<expiry epoch seconds>:<id>" (KVS's and coturn's alike).
function credentialsExpireAt(iceServers) {
  const expiries = iceServers
    .map((server) => Number((server.username ?? "").split(":")[0]))
    .filter((seconds) => Number.isFinite(seconds) && seconds > 0);
  return expiries.length ? Math.min(...expiries) : null;
}

function scheduleRefresh(transport, iceServers) {
  const expires = credentialsExpireAt(iceServers);
  if (expires === null) return;
  const delay = Math.max(0, (expires - REFRESH_BEFORE_SECONDS) * 1000 - Date.now());
  refreshTimer = setTimeout(async () => {
    try {
      const fresh = await startSession(); // only for its ICE servers; the call keeps its session
      transport.iceServers = fresh.iceConfig.iceServers;
      // The transport's own reconnection path: a new peer connection with these servers, offered with
      // restart_pc on the same session (the agent takes fresh servers too), the old one closed after.
      await transport.attemptReconnection(true);
      refreshes += 1;
      log(`refreshed TURN credentials (${refreshes})`);
      scheduleRefresh(transport, fresh.iceConfig.iceServers);
    } catch (error) {
      log(`credential refresh failed: ${error.message ?? error}`);
    }
  }, delay);
}

async function connect() {
  setStatus("starting");
  const session = await startSession();
  const transport = new SmallWebRTCTransport({ mediaManager: new WavMediaManager(), waitForICEGathering: true });
  // Closing a replaced peer connection, the transport stops every track it sent; a restart shares the
  // microphone track with the new connection, so only the old connection is closed here (the media
  // manager still stops the microphone when the call ends).
  transport.closePeerConnection = (peerConnection) => peerConnection.close();
  client = new PipecatClient({
    transport,
    enableMic: true,
    enableCam: false,
    callbacks: {
      onConnected: () => setStatus("connected"),
      onDisconnected: () => {
        clearTimeout(refreshTimer);
        setStatus("disconnected");
      },
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
  scheduleRefresh(transport, session.iceConfig.iceServers);
}

element("connect").addEventListener("click", () => {
  connect().catch((error) => {
    log(`error: ${error.message ?? error}`);
    setStatus("disconnected");
  });
});
element("disconnect").addEventListener("click", () => client?.disconnect());
