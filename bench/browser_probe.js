// Injected before the call page's own scripts by bench.browser_calls: records, in performance.now()
// milliseconds, the moments the page itself does not show (requests, peer connection states, RTVI
// messages on the data channel). It only observes: every call goes to the browser's own objects.
(() => {
  const moments = (window.__probe = { marks: [], messages: [] });
  const mark = (name) => moments.marks.push({ name, at: performance.now() });

  const pageFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const url = typeof input === "string" ? input : input.url;
    const method = init?.method ?? (typeof input === "string" ? "GET" : input.method);
    const name = url.endsWith("/start") ? "start" : url.includes("/api/offer") ? (method === "PATCH" ? "patch" : "offer") : null;
    if (name) mark(`${name}-sent`);
    const response = await pageFetch(input, init);
    if (name) mark(`${name}-answered`);
    return response;
  };

  const PagePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PagePeerConnection {
    constructor(...args) {
      super(...args);
      mark("pc-created");
      this.addEventListener("icegatheringstatechange", () => mark(`gathering-${this.iceGatheringState}`));
      this.addEventListener("connectionstatechange", () => mark(`pc-${this.connectionState}`));
    }
    async createOffer(...args) {
      mark("offer-creating");
      return super.createOffer(...args);
    }
    async setRemoteDescription(...args) {
      const applied = await super.setRemoteDescription(...args);
      mark("answer-applied");
      return applied;
    }
    createDataChannel(...args) {
      const channel = super.createDataChannel(...args);
      channel.addEventListener("open", () => mark("datachannel-open"));
      const send = channel.send.bind(channel);
      channel.send = (data) => {
        try {
          const type = JSON.parse(data).type;
          if (type) moments.messages.push({ type, at: performance.now(), sent: true });
        } catch {
          // not JSON: not an RTVI message
        }
        return send(data);
      };
      channel.addEventListener("message", ({ data }) => {
        try {
          const message = JSON.parse(data);
          if (message.type) {
            const kept = { type: message.type, at: performance.now() };
            if (message.type === "server-message" && message.data?.type === "turn-metrics") kept.data = message.data;
            moments.messages.push(kept);
          }
        } catch {
          // not JSON: not an RTVI message
        }
      });
      return channel;
    }
  };
})();
