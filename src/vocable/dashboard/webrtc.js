// vocable WebRTC client: an ES module for the dashboard's WebRTC mode (served at GET /webrtc/client.js).
//
//   import { connect } from "./webrtc/client.js";
//   const call = await connect("", { onEvent: (e) => console.log(e) });
//   call.sendText("What time is it?"); call.interrupt(); call.close();
//
// The whole negotiation runs on one WebSocket (WS /ws/webrtc): our offer goes out, the answer and the
// server's candidates come back, our candidates trickle out, and then the same JSON events as /ws/audio
// arrive on it (ready, state, transcript, reply, interrupted, metrics, error). Audio travels on the
// peer connection: the microphone out, the reply on a remote track played by an <audio> element.
// One socket per call also means the session lives in the server process that holds that socket.

/**
 * Start a voice call.
 * @param {string} baseUrl  where the vocable app is mounted ("" for this page's origin, or "/voice")
 * @param {object} [options]
 * @param {(event: object) => void} [options.onEvent]  every server event, and {type: "closed", code, reason}
 * @param {(state: string) => void} [options.onConnectionState]  RTCPeerConnection.connectionState changes
 * @param {MediaStream} [options.micStream]  a microphone stream you opened; otherwise we ask for one
 * @param {HTMLAudioElement} [options.audioElement]  where the reply plays; otherwise a hidden one we add
 * @param {string} [options.token]  a session token (from POST /session) when the server requires one
 * @param {string} [options.resume]  the session id of a call that dropped, to continue its conversation
 * @returns {Promise<{sessionId: string, pc: RTCPeerConnection, sendText: (text: string) => void,
 *           interrupt: () => void, close: () => void, closed: Promise<void>}>}
 */
export async function connect(baseUrl = "", options = {}) {
  const onEvent = options.onEvent ?? (() => {});
  const onConnectionState = options.onConnectionState ?? (() => {});
  const base = String(baseUrl).replace(/\/+$/, "");

  const clientConfig = await (await fetch(`${base}/client-config`)).json();
  const rtc = clientConfig.transports && clientConfig.transports.webrtc;
  if (!rtc) throw new Error("this server has no WebRTC transport (add transports: {webrtc: {}} to its config)");

  // Ask for the microphone before createOffer: until a page has media permission, Chromium hides its host
  // addresses behind mDNS names, which the server (aioice) cannot resolve.
  const ownsStream = !options.micStream;
  const stream = options.micStream ?? await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });

  const pc = new RTCPeerConnection({ iceServers: rtc.ice_servers ?? [] });
  const micTracks = stream.getAudioTracks();
  for (const track of micTracks) pc.addTrack(track, stream);
  if (micTracks.length === 0) pc.addTransceiver("audio", { direction: "recvonly" });

  const ownsPlayer = !options.audioElement;
  const player = options.audioElement ?? Object.assign(document.createElement("audio"), { autoplay: true });
  if (ownsPlayer) { player.hidden = true; document.body.appendChild(player); }
  pc.ontrack = (e) => {
    player.srcObject = e.streams[0] ?? new MediaStream([e.track]);
    player.play().catch(() => {}); // autoplay policies: the dashboard's mic button is the user gesture
  };
  pc.onconnectionstatechange = () => onConnectionState(pc.connectionState);

  const ws = new WebSocket(socketUrl(base, rtc.socket_path ?? "/ws/webrtc",
                                     { token: options.token, resume: options.resume }));
  const send = (message) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); };
  let ended = false;
  let markClosed;
  const closed = new Promise((resolve) => { markClosed = resolve; });

  const cleanup = () => {
    if (ended) return;
    ended = true;
    pc.close();
    if (ownsStream) stream.getTracks().forEach((t) => t.stop());
    if (ownsPlayer) player.remove(); else player.srcObject = null;
    markClosed();
  };

  const answered = new Promise((resolve, reject) => {
    const early = []; // server candidates that arrive before the answer is applied
    let haveAnswer = false;
    const addCandidate = (m) => pc.addIceCandidate(m.candidate
      ? { candidate: m.candidate, sdpMid: m.sdpMid ?? null, sdpMLineIndex: m.sdpMLineIndex ?? 0 }
      : null).catch((err) => console.warn("vocable: remote candidate refused", err));

    ws.onmessage = async (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event.type === "answer") {
        await pc.setRemoteDescription({ type: "answer", sdp: event.sdp });
        haveAnswer = true;
        early.splice(0).forEach(addCandidate);
        resolve(event.session_id);
      } else if (event.type === "candidate") {
        if (haveAnswer) addCandidate(event); else early.push(event);
      } else {
        if (!haveAnswer && event.type === "error") reject(new Error(`${event.code}: ${event.message}`));
        onEvent(event);
      }
    };
    ws.onclose = (e) => {
      reject(new Error(`the signalling socket closed (${e.code} ${e.reason})`));
      onEvent({ type: "closed", code: e.code, reason: e.reason });
      cleanup();
    };
    ws.onerror = () => reject(new Error("cannot open the signalling socket"));
  });

  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", () => reject(new Error("cannot open the signalling socket")), { once: true });
  }).catch((err) => { cleanup(); throw err; });

  pc.onicecandidate = (e) => send({
    type: "candidate",
    candidate: e.candidate ? e.candidate.candidate : null,
    sdpMid: e.candidate ? e.candidate.sdpMid : null,
    sdpMLineIndex: e.candidate ? e.candidate.sdpMLineIndex : null,
  });
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: "offer", sdp: pc.localDescription.sdp });

  let sessionId;
  try {
    sessionId = await answered;
  } catch (err) {
    ws.close();
    cleanup();
    throw err;
  }

  return {
    sessionId,
    pc,
    closed,
    sendText(text) { send({ type: "text", text }); },
    interrupt() { send({ type: "interrupt" }); },
    close() {
      send({ type: "end" });
      ws.close(1000, "client_end");
      cleanup();
    },
  };
}

function socketUrl(base, path, query) {
  const url = new URL(base + path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(query)) if (value) url.searchParams.set(key, value);
  return url.toString();
}
