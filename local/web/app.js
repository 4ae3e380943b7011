// The call page: the Pipecat JS client over either transport the API offers, each with the
// WavMediaManager (plain getUserMedia; unlike the default Daily media manager, it needs nothing from
// the internet):
// - `webrtc`: SmallWebRTC, media relayed by TURN servers whose credentials `/start` mints from KVS;
// - `websocket`: audio frames over a WebSocket to the agent, at the SigV4-presigned `ws_url` that
//   `/start` returns (no AWS credential reaches the page).
//
// Besides the call it shows what is happening: each step of connecting, the microphone's level, whether
// the agent is speaking, the time from Connect to the agent's first audible word and each turn's
// latency (the caller's last sound to the agent's first), measured on the audio itself by an
// AudioWorklet (level-meter.js), not on transcripts (which arrive in step with the audio playing).
// Each call's moments are in `window.callTimeline` (performance.now() milliseconds) for benchmarks.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";
import { WavMediaManager as WebSocketMediaManager, WebSocketTransport } from "@pipecat-ai/websocket-transport";

// TURN servers refuse to refresh an allocation once its credentials have expired, so a long call
// moves to a new peer connection with fresh credentials this long before they expire.
const REFRESH_BEFORE_SECONDS = 10;
const CONNECT_TIMEOUT_MS = 15_000;
// A measuring knob, not a setting: `?ice=gather` makes each offer wait for ICE gathering to complete
// (up to 2 s in the transport) instead of trickling candidates, to compare the two in one run.
const WAIT_FOR_ICE_GATHERING = new URLSearchParams(window.location.search).get("ice") === "gather";
// The websocket transport's rates: it sends the microphone at 16 kHz and plays what it receives as 24 kHz.
const WEBSOCKET_RECORDER_RATE = 16000;
const WEBSOCKET_RECORDER_CHUNK = 512; // what the transport's default media manager uses
const TRANSPORT_LABELS = { webrtc: "Media through the relay", websocket: "WebSocket to the agent" };

const element = (id) => document.getElementById(id);
const log = (line) => {
  element("log").textContent += `${line}\n`;
};

let client = null;
let audio = null; // {context, meters: [stop functions]}
let refreshTimer = null;
let refreshes = 0;
let timeline = null;

/** An error the page explains in words: what happened and what to do. */
class CallError extends Error {
  constructor(message, { step = "media", retryAfterSeconds = null } = {}) {
    super(message);
    this.step = step; // the step of #steps that failed
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

function setStatus(status) {
  element("status").textContent = status;
  const idle = status === "disconnected";
  element("connect").disabled = !idle;
  element("disconnect").disabled = idle;
  element("transport").disabled = !idle;
}

function showError(message) {
  const box = element("error");
  box.textContent = message;
  box.hidden = !message;
  if (message) log(`error: ${message}`);
}

function mark(name, at = performance.now()) {
  if (!timeline || timeline[name] !== undefined) return;
  timeline[name] = at;
  const step = document.querySelector(`#steps [data-step="${name}"]`);
  if (!step) return;
  step.className = "done";
  step.querySelector(".ms").textContent = `${Math.round(at - timeline.click)} ms`;
  // The session and the microphone are opened together; each later step waits for all before it.
  const pending = [...document.querySelectorAll("#steps li")].find((li) => li.className !== "done");
  if (pending && pending.className === "") pending.className = "active";
}

function failStep(message, name) {
  const step = document.querySelector(`#steps [data-step="${name}"]`) ?? document.querySelector("#steps .active");
  if (step) step.className = "failed";
  showError(message);
}

function resetSteps() {
  for (const step of document.querySelectorAll("#steps li")) {
    const first = step.dataset.step === "session" || step.dataset.step === "microphone";
    step.className = first ? "active" : "";
    step.querySelector(".ms").textContent = "";
  }
}

function setBotState(state) {
  element("bot-state").textContent = state;
  element("bot-state").dataset.state = state;
}

async function startSession(transportName = "webrtc") {
  let started;
  try {
    started = await fetch("/start", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ transport: transportName }),
    });
  } catch (error) {
    throw new CallError(`The call service cannot be reached (${error.message}). Check your network and try again.`, {
      step: "session",
    });
  }
  if (started.status === 503) {
    const seconds = Math.max(1, Number.parseInt(started.headers.get("Retry-After") ?? "5", 10) || 5);
    throw new CallError(
      `The service is busy right now (HTTP 503: no TURN relay or agent capacity). Try again in ${seconds} s.`,
      { step: "session", retryAfterSeconds: seconds },
    );
  }
  if (!started.ok) {
    let detail = "";
    try {
      detail = (await started.json())?.error?.message ?? "";
    } catch {
      // not JSON: the status says enough
    }
    const hint = started.status === 401 || started.status === 403 ? " Sign in again, then Connect." : "";
    throw new CallError(`The call could not start (HTTP ${started.status}${detail ? `: ${detail}` : ""}).${hint}`, {
      step: "session",
    });
  }
  // webrtc: {sessionId, iceConfig: {iceServers}}, TURN credentials minted from the KVS channel pool;
  // websocket: {sessionId, ws_url}, a presigned URL of the agent's WebSocket, valid for minutes.
  return started.json();
}

function explainMicrophoneError(error) {
  const name = error?.name ?? "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was refused. Allow the microphone for this page (the icon at the left of the address bar), then click Connect again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Plug one in or choose one in your system settings, then click Connect again.";
  }
  if (name === "NotReadableError") {
    return "The microphone is busy or failed (another application may hold it). Close that application, then click Connect again.";
  }
  return `The microphone could not be opened (${name || error}). Check it, then click Connect again.`;
}

// The media manager swallows the error of the microphone's first getUserMedia: when no microphone
// track came of it, ask once more to learn why.
async function checkMicrophone() {
  if (client.tracks()?.local?.audio) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    for (const track of stream.getTracks()) track.stop();
  } catch (error) {
    throw new CallError(explainMicrophoneError(error), { step: "microphone" });
  }
  throw new CallError("The microphone could not be opened. Check it, then click Connect again.", {
    step: "microphone",
  });
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

// ---- Audio levels: the microphone meter, the agent's first word, turn latency ----------------------

async function startAudioAnalysis() {
  const context = new AudioContext();
  await context.audioWorklet.addModule("level-meter.js");
  return { context, meters: [], watched: new Set() };
}

// A level meter on `context` (which has loaded level-meter.js); connect the audio to measure to it.
function meterNode(context, onMessage) {
  const node = new AudioWorkletNode(context, "level-meter", { numberOfOutputs: 0 });
  // The worklet stamps events with the audio clock; map them onto the page's clock.
  const pageTime = (at) => performance.now() - (context.currentTime - at) * 1000;
  node.port.onmessage = ({ data }) => onMessage(data.type, data.type === "level" ? data.rms : pageTime(data.at));
  audio?.meters.push(() => node.port.close());
  return node;
}

function meter(track, onMessage) {
  const source = audio.context.createMediaStreamSource(new MediaStream([track]));
  source.connect(meterNode(audio.context, onMessage));
  audio.meters.push(() => source.disconnect());
}

// The websocket transport plays the agent's voice with its own player (an AudioWorklet in its own
// AudioContext), not from a track: meter what that player sends to the speakers.
class MeteredWebSocketMediaManager extends WebSocketMediaManager {
  constructor(onAgentVoice) {
    super(WEBSOCKET_RECORDER_CHUNK, WEBSOCKET_RECORDER_RATE);
    this.onAgentVoice = onAgentVoice;
    this.meter = null;
    this.meteredStream = null;
  }

  async initialize() {
    await super.initialize();
    const player = this._wavStreamPlayer;
    await player.context.audioWorklet.addModule("level-meter.js");
    this.meter = meterNode(player.context, this.onAgentVoice);
  }

  bufferBotAudio(data, id) {
    const queued = super.bufferBotAudio(data, id);
    // The player makes a new stream node after each stop and rewires its analyser (the node between
    // the stream and what listens to it): attach the meter to each new one.
    const player = this._wavStreamPlayer;
    if (this.meter && player.stream && player.stream !== this.meteredStream) {
      player.analyser.connect(this.meter);
      this.meteredStream = player.stream;
    }
    return queued;
  }
}

function watchMicrophone(track) {
  if (audio.watched.has(track.id)) return;
  audio.watched.add(track.id);
  meter(track, (type, value) => {
    if (type === "level") {
      element("mic-level").value = Math.min(1, value * 5);
      timeline.microphonePeak = Math.max(timeline.microphonePeak, value);
    } else if (type === "end") {
      timeline.callerStoppedAt = value;
    } else if (type === "onset") {
      timeline.callerStoppedAt = null; // speaking again: the turn is not over
    }
  });
}

function onAgentVoice(type, at) {
  if (type !== "onset" || !timeline) return;
  if (timeline.firstWord === undefined) {
    mark("first-word", at);
    timeline.firstWord = at;
    element("first-word").textContent = `${Math.round(at - timeline.click)} ms`;
  } else if (timeline.callerStoppedAt) {
    const latency = at - timeline.callerStoppedAt;
    timeline.turns.push({ callerStoppedAt: timeline.callerStoppedAt, agentStartedAt: at, latencyMs: latency });
    timeline.callerStoppedAt = null;
    element("turn-latency").textContent = `${Math.round(latency)} ms`;
  }
}

function watchAgentVoice(track) {
  meter(track, onAgentVoice);
}

function stopAudioAnalysis() {
  if (!audio) return;
  for (const stop of audio.meters) stop();
  audio.context.close();
  audio = null;
}

// ---- The call -------------------------------------------------------------------------------------

const ICE_FAILED =
  "The media connection failed: the browser could not reach the agent through the TURN relay (ICE failed). " +
  "Your network may block UDP and TCP to the relay; try another network, then click Connect again.";

function newWebSocketTransport() {
  return new WebSocketTransport({ mediaManager: new MeteredWebSocketMediaManager(onAgentVoice) });
}

function newWebRtcTransport() {
  const transport = new SmallWebRTCTransport({
    mediaManager: new WavMediaManager(),
    waitForICEGathering: WAIT_FOR_ICE_GATHERING,
  });
  // Closing a replaced peer connection, the transport stops every track it sent; a restart shares the
  // microphone track with the new connection, so only the old connection is closed here (the media
  // manager still stops the microphone when the call ends).
  transport.closePeerConnection = (peerConnection) => peerConnection.close();
  // Each peer connection's state tells when media flows and when ICE failed (no relay path).
  const createPeerConnection = transport.createPeerConnection.bind(transport);
  transport.createPeerConnection = () => {
    const peerConnection = createPeerConnection();
    peerConnection.addEventListener("connectionstatechange", () => {
      if (peerConnection.connectionState === "connected") mark("media");
      if (peerConnection.connectionState === "failed" && transport.pc === peerConnection) {
        failStep(ICE_FAILED, "media");
        client?.disconnect();
      }
    });
    return peerConnection;
  };
  return transport;
}

async function connect() {
  const transportName = element("transport").value;
  timeline = {
    click: performance.now(),
    transport: transportName,
    turns: [],
    agentTurns: [], // the agent's own measure of each turn, as it arrived ({at, data})
    callerStoppedAt: null,
    microphonePeak: 0,
  };
  window.callTimeline = timeline;
  resetSteps();
  showError("");
  element("first-word").textContent = "–";
  element("turn-latency").textContent = "–";
  element("turn-breakdown").textContent = "";
  setStatus("starting");
  const websocket = transportName === "websocket";
  const transport = websocket ? newWebSocketTransport() : newWebRtcTransport();
  client = new PipecatClient({
    transport,
    enableMic: true,
    enableCam: false,
    callbacks: {
      onConnected: () => {
        if (websocket) mark("media"); // the WebSocket is open: audio flows both ways
        setStatus("connected");
      },
      onBotReady: () => {
        mark("ready");
        setStatus("ready");
        setBotState("listening");
      },
      onDisconnected: () => {
        clearTimeout(refreshTimer);
        stopAudioAnalysis();
        setBotState("–");
        setStatus("disconnected");
      },
      onBotStartedSpeaking: () => setBotState("speaking"),
      onBotStoppedSpeaking: () => setBotState("listening"),
      onServerMessage: (data) => {
        // The agent's own measure of each turn (Pipecat's latency observer): where its share went.
        if (data?.type !== "turn-metrics" || data.TurnLatencyMs === undefined) return;
        timeline?.agentTurns.push({ at: performance.now(), data });
        const parts = Object.entries(data.breakdownMs ?? {}).map(([part, ms]) => `${part.replaceAll("_", " ")} ${Math.round(ms)}`);
        element("turn-breakdown").textContent = `agent ${Math.round(data.TurnLatencyMs)} ms: ${parts.join(", ")}`;
      },
      onUserTranscript: (data) => data.final && log(`you: ${data.text}`),
      onBotTtsText: (data) => log(`agent: ${data.text}`),
      onTrackStarted: (track, participant) => {
        if (track.kind !== "audio") return;
        if (participant?.local) {
          if (audio) watchMicrophone(track);
          return;
        }
        const player = element("bot-audio");
        player.srcObject = new MediaStream([track]);
        player.play().catch(() => log("click anywhere to hear the agent (autoplay is blocked)"));
        if (audio) watchAgentVoice(track);
      },
      onError: (message) => log(`error: ${JSON.stringify(message?.data ?? message)}`),
    },
  });
  // The session (TURN credentials), the microphone and the audio meters do not wait for each other.
  const [session] = await Promise.all([
    startSession(transportName).then((started) => {
      mark("session");
      return started;
    }),
    client
      .initDevices()
      .then(checkMicrophone)
      .then(() => mark("microphone")),
    startAudioAnalysis().then((started) => {
      audio = started;
    }),
  ]);
  watchMicrophone(client.tracks().local.audio);
  setStatus("connecting");
  // Chromium leaves ICE "checking" for long when no candidate pair can work: stop waiting after a while,
  // and say which side was missing (the agent's answer, or a media path to it).
  const timeout = new Promise((_, reject) => {
    setTimeout(() => {
      const answered = !websocket && Boolean(transport.pc?.remoteDescription);
      const waited = `${CONNECT_TIMEOUT_MS / 1000} s`;
      const message = answered
        ? `${ICE_FAILED} (No media path within ${waited}.)`
        : `The agent did not answer within ${waited}. Try again.`;
      reject(new CallError(message));
    }, CONNECT_TIMEOUT_MS);
  });
  const connectParams = websocket
    ? { wsUrl: session.ws_url }
    : { webrtcRequestParams: { endpoint: `/sessions/${session.sessionId}/api/offer` }, iceConfig: session.iceConfig };
  try {
    await Promise.race([client.connect(connectParams), timeout]);
  } catch (error) {
    if (error instanceof CallError) throw error;
    const status = error?.status ?? error?.cause?.status;
    if (websocket) {
      // A browser is not told why a WebSocket upgrade was refused: name the likely causes.
      throw new CallError(
        "The agent's WebSocket refused the call or could not be reached. Its signed URL is valid for a few " +
          "minutes only: click Connect again for a fresh one.",
      );
    }
    throw new CallError(
      status
        ? `The agent could not take the call (HTTP ${status}). Try again in a moment.`
        : `The call could not connect (${error?.message ?? error}). Try again.`,
    );
  }
  // TURN credentials expire: a long WebRTC call moves to fresh ones. A WebSocket call needs none.
  if (!websocket) scheduleRefresh(transport, session.iceConfig.iceServers);
}

// The transport: `?transport=websocket` picks it in the address; the choice labels the media step.
function showTransport() {
  const name = element("transport").value;
  document.querySelector('#steps [data-step="media"]').firstChild.textContent = TRANSPORT_LABELS[name];
  document.querySelector('#steps [data-step="session"]').firstChild.textContent =
    name === "websocket" ? "Session and signed WebSocket URL" : "Session and TURN credentials";
}
const requested = new URLSearchParams(window.location.search).get("transport");
if (requested && TRANSPORT_LABELS[requested]) element("transport").value = requested;
element("transport").addEventListener("change", showTransport);
showTransport();

function holdConnect(seconds) {
  const button = element("connect");
  const until = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      button.disabled = true;
      button.textContent = `Connect (${left} s)`;
      setTimeout(tick, 250);
    } else {
      button.textContent = "Connect";
      button.disabled = false;
    }
  };
  tick();
}

element("connect").addEventListener("click", () => {
  connect().catch((error) => {
    if (error instanceof CallError) failStep(error.message, error.step);
    else failStep(`The call failed: ${error?.message ?? error}`);
    client?.disconnect();
    stopAudioAnalysis();
    setStatus("disconnected");
    if (error instanceof CallError && error.retryAfterSeconds) holdConnect(error.retryAfterSeconds);
  });
});
element("disconnect").addEventListener("click", () => client?.disconnect());
