// The demo page: pick a bundled test image or upload one, run it through several models and show each model's
// class and its rounds, bytes and latency as SVG bar charts. No library, no CDN: plain DOM and SVG.
//
// Private mode (the default): the mpcvit JavaScript SDK (clients/js, served under /sdk/src/) checks the parties'
// keys, preprocesses the image, splits it into two additive shares and seals each to its party, in this browser;
// the coordinator relays sealed boxes only (POST /v1/classify). Demo mode, an explicit choice: the coordinator
// gets the image and plays the client (POST /v1/compare).
// The SDK is imported when first needed, so that the page (and demo mode) still works where the coordinator
// serves no SDK; private mode then says why it cannot run.
let sdkModule = null;
async function loadSdk() {
  if (!sdkModule) {
    try {
      sdkModule = await import("/sdk/src/index.js");
    } catch (e) {
      throw new Error("this coordinator does not serve the JavaScript SDK (/sdk/src/), so this page cannot classify " +
        "privately; use mpcvit classify, or an app that serves the SDK itself (" + (e.message || e) + ")");
    }
  }
  return sdkModule;
}

const state = { blob: null, name: "", models: [] };
const FINGERPRINT = /(?:sha256:)?[0-9a-f]{64}/gi;
const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = { vit: "#7f7f7f", mpcformer: "#d62728", thex: "#ff7f0e", mpcvit: "#1f77b4", mpcvitplus: "#2ca02c" };

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = kind;
}

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return resp.statusText;
  }
}

function selectImage(blob, name, url) {
  state.blob = blob;
  state.name = name;
  const img = $("preview");
  img.src = url;
  img.hidden = false;
  $("preview-label").textContent = name;
  updateRunButton();
}

function updateRunButton() {
  $("run").disabled = !(state.blob && selectedModels().length);
}

// The bundled test images of the served models' data set(s); all of them when no model names its data set.
async function loadSamples() {
  const resp = await fetch("/static/samples/index.json");
  if (!resp.ok) return;
  const all = await resp.json();
  const served = new Set(state.models.map((m) => m.dataset).filter(Boolean));
  const samples = all.some((s) => served.has(s.dataset)) ? all.filter((s) => served.has(s.dataset)) : all;
  const box = $("samples");
  box.textContent = "";
  for (const s of samples) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "sample";
    b.dataset.file = s.file;
    b.title = `${s.dataset} test image #${s.test_index}: ${s.class_name}`;
    const img = document.createElement("img");
    img.src = "/static/samples/" + s.file;
    img.alt = b.title;
    const cap = document.createElement("div");
    cap.className = "cap";
    cap.textContent = `${s.dataset === "digits" ? "digit" : s.dataset}: ${s.class_name}`;
    b.append(img, cap);
    b.addEventListener("click", async () => {
      const r = await fetch(img.src);
      document.querySelectorAll("#samples button").forEach((x) => x.classList.remove("selected"));
      b.classList.add("selected");
      selectImage(await r.blob(), s.file, img.src);
    });
    box.append(b);
  }
}

function labelOf(name) {
  const m = state.models.find((x) => x.name === name);
  return (m && m.label) || name;
}

function selectedModels() {
  return [...document.querySelectorAll("#models input:checked")].map((c) => c.value);
}

async function loadModels() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (!resp.ok) {
    setStatus(`Could not list the models: ${await errorText(resp)}`, "error");
    return;
  }
  const body = await resp.json();
  state.models = body.models;
  // checked by default: what POST /v1/compare runs without models (one per variant, MPCViT and MPCViT+ among them)
  const preselected = new Set(body.compare_default || []);
  const box = $("models");
  box.textContent = "";
  const order = ["vit", "mpcformer", "thex", "relu", "scale", "mpcvit", "mpcvitplus"];
  const rank = (m) => (order.indexOf(m.variant) + 99) % 99;
  const sorted = [...state.models].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  for (const m of sorted) {
    const label = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.value = m.name;
    cb.checked = preselected.has(m.name);
    cb.addEventListener("change", updateRunButton);
    const acc = m.accuracy == null ? "" : `, ${(m.accuracy <= 1 ? 100 * m.accuracy : m.accuracy).toFixed(1)} %`;
    label.append(cb, ` ${m.label || m.name}${acc}`);
    label.title = `${m.name}: ${m.arch}; input ${m.input_shape.join("x")}`;
    box.append(label);
  }
  setStatus(state.models.length ? "Pick an image and press the button." : "The coordinator serves no model.", "idle");
  updateRunButton();
}

function fmtBytes(n) {
  // binary units, as the CLI prints them (mpcvit/units.py)
  if (n >= 1024 ** 3) return (n / 1024 ** 3).toFixed(1) + " GiB";
  if (n >= 1024 ** 2) return (n / 1024 ** 2).toFixed(1) + " MiB";
  if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}

function renderTable(results) {
  const table = $("results");
  const body = table.querySelector("tbody");
  body.textContent = "";
  for (const r of results) {
    const tr = document.createElement("tr");
    tr.dataset.model = r.model;
    const cells = r.ok
      ? [labelOf(r.model), r.variant, r.class_name, (100 * Math.max(...r.probabilities)).toFixed(1) + " %",
         r.costs.total.rounds, fmtBytes(r.costs.total.bytes), r.latency_seconds.toFixed(3)]
      : [labelOf(r.model), r.variant, "error: " + r.error, "", "", "", ""];
    cells.push(r.accuracy == null ? "" : (r.accuracy <= 1 ? (100 * r.accuracy).toFixed(1) : r.accuracy.toFixed(1)) + " %");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = String(c);
      if (i < 3) td.className = "text";
      if (i === 2) td.classList.add("class");
      tr.append(td);
    });
    body.append(tr);
  }
  table.hidden = false;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// One horizontal bar chart: a bar per model, its length proportional to the value. Each model's label is a
// line of its own above its bar, so a long label never runs into a bar, a value or another label.
function barChart(title, rows, fmt, id) {
  const wrap = document.createElement("div");
  wrap.className = "chart";
  wrap.id = id;
  const h = document.createElement("h3");
  h.textContent = title;
  wrap.append(h);
  const W = 320, labelH = 14, barH = 14, gap = 8, valueW = 72;
  const rowH = labelH + barH + gap;
  const H = rows.length * rowH;
  const root = svg("svg", { width: "100%", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  root.style.maxWidth = W + "px";
  const max = Math.max(...rows.map((r) => r.value), 1e-12);
  rows.forEach((r, i) => {
    const y = i * rowH;
    const len = Math.max(1, ((W - valueW) * r.value) / max);
    const label = svg("text", { x: 2, y: y + labelH - 3, class: "label" });
    label.textContent = r.label;
    const bar = svg("rect", { x: 0, y: y + labelH, width: len, height: barH, fill: COLORS[r.variant] || "#9467bd", class: "bar" });
    bar.dataset.value = r.value;
    const title = svg("title", {});
    title.textContent = `${r.label}: ${fmt(r.value)}`;
    bar.append(title);
    const value = svg("text", { x: len + 4, y: y + labelH + barH - 3, class: "value" });
    value.textContent = fmt(r.value);
    root.append(label, bar, value);
  });
  wrap.append(root);
  return wrap;
}

function renderCharts(results) {
  const ok = results.filter((r) => r.ok);
  const charts = $("charts");
  charts.textContent = "";
  if (!ok.length) return;
  const rows = (f) => ok.map((r) => ({ label: labelOf(r.model), variant: r.variant, value: f(r) }));
  charts.append(
    barChart("Communication rounds", rows((r) => r.costs.total.rounds), (v) => String(v), "chart-rounds"),
    barChart("Bytes sent by both parties", rows((r) => r.costs.total.bytes), fmtBytes, "chart-bytes"),
    barChart("Latency (seconds)", rows((r) => r.latency_seconds), (v) => v.toFixed(3) + " s", "chart-latency"),
  );
}

function demoMode() {
  return $("demo-mode").checked;
}

function showMode() {
  const demo = demoMode();
  $("demo-warning").hidden = !demo;
  $("trust-box").hidden = demo;
  $("run").textContent = demo ? "Classify in demo mode (the coordinator sees the image)" : "Classify privately with each model";
  document.body.dataset.mode = demo ? "demo" : "private";
}

// How the parties' sealing keys are checked: pasted fingerprints, a pasted CA certificate, or (empty, loopback
// coordinator only) the relayed keys unchecked. {options for PrivateClient, what the page says about it}.
function trustOptions(sdk) {
  const text = $("trust").value.trim();
  if (!text) {
    if (!sdk.isLoopback(location.hostname)) {
      throw new sdk.PartyKeyError("paste the parties' key fingerprints or the deployment's CA certificate: " +
        "this page does not take the parties' keys on the coordinator's word");
    }
    return { options: { trustCoordinator: true }, check: "unchecked",
      says: "Keys: NOT checked (nothing pasted; accepted only because the coordinator is on this machine)." };
  }
  if (text.includes("-----BEGIN CERTIFICATE-----")) {
    return { options: { ca: text }, check: "ca",
      says: "Keys: checked in this browser against the pasted CA certificate (each party's certificate and its signature over its key)." };
  }
  const pins = text.match(FINGERPRINT) || [];
  if (pins.length !== 2) throw new sdk.PartyKeyError(`give party 0's and party 1's key fingerprints (2), found ${pins.length}`);
  return { options: { pins }, check: "pins", says: "Keys: checked in this browser against the pasted fingerprints." };
}

// The picked image as an ImageData (RGBA), decoded by the browser without colour conversion.
async function imageDataOf(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function showResults(results, mode, says) {
  renderTable(results);
  renderCharts(results);
  const note = $("results-mode");
  note.textContent = mode === "private"
    ? "Private: shared and sealed in this browser; the coordinator relayed sealed boxes only. " + says
    : "Demo mode: the coordinator saw the image and the answers.";
  note.hidden = false;
  $("results").dataset.mode = mode;
  const failed = results.filter((r) => !r.ok).length;
  setStatus(failed ? `Done; ${failed} model(s) failed.` : "Done.", "done");
}

async function runDemo(models) {
  const form = new FormData();
  form.append("image", state.blob, state.name || "image.png");
  form.append("models", models.join(","));
  const resp = await fetch("/v1/compare", { method: "POST", body: form, headers: headers() });
  if (!resp.ok) {
    setStatus(`Error ${resp.status}: ${await errorText(resp)}`, "error");
    return;
  }
  showResults((await resp.json()).results, "demo", "");
}

async function runPrivate(models) {
  const sdk = await loadSdk();
  let trust;
  try {
    trust = trustOptions(sdk);
  } catch (e) {
    setStatus(String(e.message || e), "error");
    return;
  }
  const token = $("token").value.trim();
  const client = new sdk.PrivateClient(location.origin, { ...trust.options, token: token || undefined });
  const image = await imageDataOf(state.blob);
  const keyCheck = $("key-check");
  try {
    await client.partyKeys(); // refused here, before anything is sealed, unless the keys check out
  } catch (e) {
    keyCheck.dataset.check = "refused";
    keyCheck.textContent = "Keys refused: " + (e.message || e);
    setStatus("Nothing was sent: " + (e.message || e), "error");
    return;
  }
  keyCheck.dataset.check = trust.check;
  keyCheck.textContent = trust.says;
  const results = [];
  for (const name of models) {
    const m = state.models.find((x) => x.name === name) || {};
    const row = { model: name, variant: m.variant || "", accuracy: m.accuracy == null ? null : m.accuracy };
    try {
      const r = await client.classify(image, { model: name });
      results.push({ ...row, ok: true, class_name: r.className, probabilities: r.probabilities, costs: r.costs, latency_seconds: r.seconds });
    } catch (e) {
      results.push({ ...row, ok: false, error: String(e.message || e) });
    }
  }
  showResults(results, "private", trust.says);
}

async function run() {
  const models = selectedModels();
  if (!state.blob || !models.length) return;
  $("run").disabled = true;
  const demo = demoMode();
  setStatus(demo ? `Running ${models.length} secure inference(s) in demo mode...`
    : `Sharing and sealing the image in this browser; ${models.length} private inference(s)...`, "running");
  try {
    await (demo ? runDemo(models) : runPrivate(models));
  } catch (e) {
    setStatus("Request failed: " + (e.message || e), "error");
  } finally {
    updateRunButton();
  }
}

function start() {
  $("demo-mode").checked = false; // never carried over from a previous visit
  $("demo-mode").addEventListener("change", showMode);
  showMode();
  $("upload").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    document.querySelectorAll("#samples button").forEach((x) => x.classList.remove("selected"));
    selectImage(f, f.name, URL.createObjectURL(f));
  });
  $("run").addEventListener("click", run);
  $("token").addEventListener("change", () => loadModels().then(loadSamples));
  loadModels().then(loadSamples);
}

// a module runs after the document is parsed, possibly after DOMContentLoaded
if (document.readyState === "loading") window.addEventListener("DOMContentLoaded", start);
else start();
