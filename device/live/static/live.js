// The live page: frames and their tracks from the WebSocket, quotes drawn on the boxes, the side panel
// from the stats. Plain JavaScript, no library and nothing from outside the device: it may be offline.
"use strict";

const $ = (id) => document.getElementById(id);
// What the page has shown, for a person debugging it and for the tests that drive it.
const live = (window.live = { frames: 0, index: -1, sizes: [], tagged: [] });
const boxes = new Map(); // track id -> its box element
const quotes = new Map(); // track id -> {quote, received_ms}
let frameUrl = null;
let currency = "JPY";

function money(value, code) {
  if (typeof value !== "number") return "–";
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: code || currency,
      maximumFractionDigits: 0 }).format(value);
  } catch (e) {
    return `${Math.round(value).toLocaleString("en")} ${code || ""}`;
  }
}

function percent(value) {
  return typeof value === "number" ? `${Math.round(value * 100)}%` : "–";
}

// -- frames and boxes ---------------------------------------------------------------------------
function onFrame(buffer) {
  const view = new DataView(buffer);
  const length = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const jpeg = new Blob([new Uint8Array(buffer, 4 + length)], { type: "image/jpeg" });
  const url = URL.createObjectURL(jpeg);
  const img = $("frame");
  img.onload = () => {
    if (frameUrl && frameUrl !== url) URL.revokeObjectURL(frameUrl);
    frameUrl = url;
  };
  img.src = url;
  img.style.setProperty("--aspect", `${header.width} / ${header.height}`);
  $("stage").style.setProperty("--ratio", header.width / header.height);
  img.dataset.index = header.index;
  img.dataset.bytes = jpeg.size;
  $("waiting").hidden = true;
  live.frames += 1;
  live.index = header.index;
  if (!live.sizes.includes(jpeg.size) && live.sizes.length < 1000) live.sizes.push(jpeg.size);
  drawTracks(header.tracks);
}

function drawTracks(tracks) {
  const seen = new Set();
  for (const track of tracks) {
    seen.add(track.id);
    let box = boxes.get(track.id);
    if (!box || box.classList.contains("gone")) {
      if (box) box.remove();
      box = document.createElement("div");
      box.className = "box";
      box.dataset.track = track.id;
      box.innerHTML = '<span class="label"></span><div class="tag none">pricing…</div>';
      $("overlay").appendChild(box);
      boxes.set(track.id, box);
      const known = quotes.get(track.id);
      if (known) showQuote(box, known);
    }
    const [x1, y1, x2, y2] = track.box.map((v) => Math.min(1, Math.max(0, v)) * 100);
    Object.assign(box.style, { left: `${x1}%`, top: `${y1}%`, width: `${x2 - x1}%`, height: `${y2 - y1}%` });
    box.dataset.label = track.label;
    box.querySelector(".label").textContent = `${track.label} #${track.id} ${Math.round(track.score * 100)}%`;
  }
  for (const [id, box] of boxes) {
    if (seen.has(id) || box.classList.contains("gone")) continue;
    box.classList.add("gone"); // fades out (CSS), then goes
    setTimeout(() => {
      if (boxes.get(id) === box) boxes.delete(id);
      box.remove();
    }, 1000);
  }
}

function showQuote(box, entry) {
  const q = entry.quote;
  const tag = box.querySelector(".tag");
  tag.dataset.seq = q.seq;
  if (q.status === undefined || q.status === "ok") {
    tag.className = "tag";
    tag.dataset.avg = q.avg_sold_price;
    tag.dataset.median = q.median_sold_price;
    tag.dataset.sellThrough = q.sell_through;
    tag.dataset.n = q.n;
    tag.innerHTML = "";
    const price = document.createElement("div");
    price.className = "price";
    price.textContent = `sells for about ${money(q.avg_sold_price, q.currency)}`;
    const detail = document.createElement("div");
    detail.textContent = `median ${money(q.median_sold_price, q.currency)} · ` +
      `${percent(q.sell_through)} sell-through · n=${q.n}`;
    tag.append(price, detail);
  } else {
    tag.className = "tag none";
    for (const key of ["avg", "median", "sellThrough"]) delete tag.dataset[key];
    tag.dataset.n = q.n ?? "";
    tag.textContent = q.status === "insufficient_data" ? `insufficient data (n=${q.n ?? 0})` :
      `${String(q.status).replace(/_/g, " ")}${q.reason ? ": " + q.reason : ""}`;
  }
  const at = performance.timeOrigin + performance.now();
  tag.dataset.taggedMs = at.toFixed(1);
  if (live.tagged.length < 10000) live.tagged.push({ seq: q.seq, received_ms: entry.received_ms, tagged_ms: at });
}

function onQuote(entry) {
  const q = entry.quote;
  if (q.currency) currency = q.currency;
  quotes.set(q.track_id, entry);
  if (quotes.size > 256) quotes.delete(quotes.keys().next().value);
  const box = boxes.get(q.track_id);
  if (box && !box.classList.contains("gone")) showQuote(box, entry);
}

// -- the side panel -----------------------------------------------------------------------------
function temperature(value) {
  return typeof value === "number" ? `${value.toFixed(1)} °C` : String(value ?? "–");
}

function onStats(stats) {
  $("device").textContent = `appliance ${stats.device_id} · ${stats.version}`;
  for (const key of ["camera", "processed", "detected"]) $(`fps-${key}`).textContent = stats.fps[key].toFixed(1);
  const pace = stats.pace;
  $("pace").textContent = pace.paused ? "paused" :
    `detect every ${pace.detect_every} frame${pace.detect_every > 1 ? "s" : ""}` +
    (pace.max_fps > 0 ? `, at most ${pace.max_fps} fps` : "") +
    (pace.embed_budget_per_s > 0 ? `, ${pace.embed_budget_per_s} embeddings/s` : "");
  $("pace-reason").textContent = pace.reason;
  const temps = stats.temperatures;
  $("temp-cpu").textContent = temperature(temps.cpu_c);
  const tpus = Object.entries(temps.tpu_c || {});
  $("temp-tpu").textContent = tpus.length ? tpus.map(([k, v]) => `${k} ${temperature(v)}`).join(", ") : "none";
  const link = $("link");
  link.textContent = stats.link.connected ? "connected" : "DOWN";
  link.className = stats.link.connected ? "" : "down";
  $("outbox").textContent = `${stats.outbox.depth} waiting`;
  showModels(stats.models);
  showOta(stats.ota);
}

function showModels(models) {
  const list = $("models");
  list.innerHTML = "";
  for (const [kind, m] of Object.entries(models || {})) {
    const item = document.createElement("li");
    item.dataset.kind = kind;
    item.textContent = `${kind}: ${m.id} ${m.version} on ${m.accelerator}`;
    if (m.cpu_fallback) {
      const flag = document.createElement("span");
      flag.className = "fallback";
      flag.textContent = " cpu_fallback";
      flag.title = m.reason || "";
      item.append(flag);
    }
    list.append(item);
  }
}

function showOta(ota) {
  if (!ota) {
    $("ota").textContent = "off";
    return;
  }
  const last = ota.last;
  const outcome = last ? `${last.outcome}${last.kind ? ` (${last.kind} ${last.version})` : ""}` : "no check yet";
  $("ota").textContent = `${ota.state || "idle"}; last: ${outcome}${ota.error ? `; error: ${ota.error}` : ""}`;
}

function onStatus(status) {
  if (status && status.models) showModels(status.models);
  if (status && status.ota) showOta(status.ota);
}

// -- connection and operator actions ------------------------------------------------------------
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") return onFrame(event.data);
    const message = JSON.parse(event.data);
    if (message.type === "quote") onQuote(message);
    else if (message.type === "stats") {
      onStats(message.stats);
      onStatus(message.status);
    } else if (message.type === "hello") {
      onStatus(message.status);
      if (message.stats) onStats(message.stats);
      for (const entry of message.quotes) onQuote(entry);
    }
  };
  ws.onclose = () => {
    $("waiting").hidden = false;
    $("waiting").textContent = "connection lost; reconnecting…";
    setTimeout(start, 2000);
  };
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

async function act(path, body) {
  try {
    const answer = await post(path, body);
    $("operator-note").textContent = `done: pace now ${answer.pace.paused ? "paused" : answer.pace.reason}`;
  } catch (error) {
    $("operator-note").textContent = `refused: ${error.message}`;
  }
}

async function login(token) {
  try {
    await post("/api/login", { token });
    return true;
  } catch (error) {
    $("operator-note").textContent = `login failed: ${error.message}`;
    return false;
  }
}

async function start() {
  const session = await (await fetch("/api/session")).json();
  let authenticated = session.authenticated;
  // `make run` prints the URL with the token after #: the part after # never reaches a server or a log.
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) history.replaceState(null, "", location.pathname);
  if (session.token_required && !authenticated && fromUrl) authenticated = await login(fromUrl);
  $("login").hidden = !session.token_required || authenticated;
  $("actions").hidden = !session.actions || !authenticated;
  if (!session.actions) $("operator-note").textContent = "operator actions are off: no token is set on this device";
  if (!session.token_required || authenticated) connect();
  else $("waiting").textContent = "log in with the device's token to watch";
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await login($("token").value)) location.reload();
});
$("pause").addEventListener("click", () => act("/api/pause"));
$("resume").addEventListener("click", () => act("/api/resume"));
$("pace-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("/api/pace", { detect_every: Number($("detect-every").value), max_fps: Number($("max-fps").value),
    expires_s: Number($("expires").value) });
});
start();
