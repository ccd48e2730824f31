// The drawing page: draw a digit (mouse, pen or finger) or upload a picture, send it to
// POST models/<name>/predict as an image, and show the answer with its probabilities.
// Plain DOM, no build step. URLs are relative so the page also works behind a path prefix.
"use strict";

const STROKE_WIDTH = 20;        // px on the 280 px canvas: about 2 px of MNIST's 28
const STROKE_COLOUR = "#111";
const AUTO_DELAY_MS = 250;      // after the pen lifts, wait this long for another stroke
const TOP_K = 10;

const $ = (id) => document.getElementById(id);
const el = {
  model: $("model"), pad: $("pad"), dropZone: $("drop-zone"), preview: $("upload-preview"),
  hint: $("pad-hint"), predict: $("predict"), clear: $("clear"), file: $("file"), auto: $("auto"),
  error: $("error"), answer: $("answer"), placeholder: $("placeholder"), verdict: $("verdict"),
  label: $("label"), confidence: $("confidence"), answeredBy: $("answered-by"),
  latency: $("latency"), bars: $("bars"),
};
const ctx = el.pad.getContext("2d");
const DEFAULT_HINT = el.hint.textContent;

const state = {
  models: new Map(),   // name -> {name, version, labels}
  hasInk: false,       // something is drawn on the canvas
  upload: null,        // the uploaded File, shown instead of the canvas
  previewUrl: null,
  drawing: null,       // the pointerId drawing now
  last: null,          // last point of the stroke, canvas pixels
  timer: 0,            // pending automatic prediction
  inFlight: null,      // AbortController of the request in flight
  sequence: 0,         // answers to older requests are dropped
};

// --------------------------------------------------------------------------- models

function describeModel(listed, details) {
  const manifest = (details && details.manifest) || listed.manifest || {};
  const input = manifest.input || details?.input || listed.input || {};
  return {
    name: listed.name || manifest.name,
    version: details?.served_version ?? listed.served_version ?? listed.version ?? manifest.version ?? null,
    kind: input.kind ?? listed.input_kind ?? null,
    labels: manifest.output?.labels || details?.classes || listed.classes || null,
  };
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await readJson(response);
  if (!response.ok) throw new Error(errorText(response, body));
  return body;
}

async function loadModels() {
  try {
    const body = await getJson("models");
    let listed = Array.isArray(body) ? body : body.models;
    if (listed && !Array.isArray(listed)) {
      listed = Object.entries(listed).map(([name, info]) => ({ name, ...info }));
    }
    const described = await Promise.all((listed || []).map(async (item) => {
      const entry = typeof item === "string" ? { name: item } : item;
      if (entry.manifest || entry.input) return describeModel(entry, null);
      try {  // a short listing: ask for the model's own description
        return describeModel(entry, await getJson(`models/${encodeURIComponent(entry.name)}`));
      } catch (err) {
        return describeModel(entry, null);  // listed but not describable now
      }
    }));
    const images = described.filter((m) => m.name && m.kind === "image");
    state.models = new Map(images.map((m) => [m.name, m]));
    fillModelChoice(images);
    if (images.length === 0) {
      showError("No image model is being served. Train one (python -m trainer train --dataset mnist --publish) and reload.");
      setTimeout(loadModels, 5000);
    } else {
      hideError();
    }
  } catch (err) {
    showError(`Could not list the models: ${err.message}. Retrying…`);
    setTimeout(loadModels, 3000);
  }
}

function fillModelChoice(models) {
  const wanted = new URLSearchParams(location.search).get("model") || el.model.value || "mnist";
  el.model.replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = m.version != null ? `${m.name} (v${m.version})` : m.name;
    return option;
  }));
  if (models.length === 0) {
    const option = document.createElement("option");
    option.textContent = "No image model available";
    option.value = "";
    el.model.append(option);
  }
  el.model.disabled = models.length === 0;
  el.model.value = models.some((m) => m.name === wanted) ? wanted : (models[0]?.name || "");
}

// --------------------------------------------------------------------------- drawing

function clearCanvas() {
  ctx.clearRect(0, 0, el.pad.width, el.pad.height);  // transparent: the PNG keeps no background
  state.hasInk = false;
}

function canvasPoint(event) {
  const box = el.pad.getBoundingClientRect();
  return {
    x: (event.clientX - box.left) * (el.pad.width / box.width),
    y: (event.clientY - box.top) * (el.pad.height / box.height),
  };
}

function strokeTo(point) {
  ctx.lineWidth = STROKE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = STROKE_COLOUR;
  ctx.beginPath();
  ctx.moveTo(state.last.x, state.last.y);
  ctx.lineTo(point.x, point.y);
  ctx.stroke();
  state.last = point;
}

function onPointerDown(event) {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  if (state.drawing !== null) return;  // a second finger does not draw
  event.preventDefault();
  clearTimeout(state.timer);
  if (state.upload) dropUpload();
  el.pad.setPointerCapture(event.pointerId);
  state.drawing = event.pointerId;
  state.last = canvasPoint(event);
  strokeTo({ x: state.last.x + 0.01, y: state.last.y });  // a tap leaves a dot
  state.hasInk = true;
  el.hint.hidden = true;
}

function onPointerMove(event) {
  if (event.pointerId !== state.drawing) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of (events.length ? events : [event])) strokeTo(canvasPoint(e));
}

function onPointerUp(event) {
  if (event.pointerId !== state.drawing) return;
  state.drawing = null;
  state.last = null;
  if (el.auto.checked) {
    clearTimeout(state.timer);
    state.timer = setTimeout(predict, AUTO_DELAY_MS);
  }
}

// --------------------------------------------------------------------------- uploads

function useUpload(file) {
  if (!file) return;
  clearTimeout(state.timer);
  clearCanvas();
  dropUpload();
  state.upload = file;
  state.previewUrl = URL.createObjectURL(file);
  el.preview.src = state.previewUrl;
  el.preview.hidden = false;
  el.hint.hidden = true;
  el.hint.textContent = DEFAULT_HINT;
  if (el.auto.checked) predict();
}

function dropUpload() {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.upload = null;
  state.previewUrl = null;
  el.preview.hidden = true;
  el.preview.removeAttribute("src");
  el.file.value = "";
}

// --------------------------------------------------------------------------- predicting

function canvasBlob() {
  return new Promise((resolve, reject) => {
    el.pad.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the drawing could not be exported"))), "image/png");
  });
}

async function requestBody() {
  if (state.upload) {
    const file = state.upload;
    if (file.type.startsWith("image/")) return { body: file, type: file.type };
    const form = new FormData();  // unknown type: let the server identify the format
    form.append("image", file, file.name || "upload");
    return { body: form, type: null };
  }
  return { body: await canvasBlob(), type: "image/png" };
}

async function predict() {
  clearTimeout(state.timer);
  const name = el.model.value;
  if (!name) {
    showError("No image model is available to answer.");
    return;
  }
  if (!state.upload && !state.hasInk) {
    showError("Draw a digit or upload a picture first.");
    return;
  }
  if (state.inFlight) state.inFlight.abort();
  const controller = new AbortController();
  state.inFlight = controller;
  const sequence = ++state.sequence;
  el.answer.dataset.state = "busy";
  el.predict.disabled = true;
  const started = performance.now();
  try {
    const { body, type } = await requestBody();
    const headers = { Accept: "application/json" };
    if (type) headers["Content-Type"] = type;
    const response = await fetch(`models/${encodeURIComponent(name)}/predict?top_k=${TOP_K}`,
      { method: "POST", headers, body, signal: controller.signal });
    const answer = await readJson(response);
    if (sequence !== state.sequence) return;
    if (!response.ok) {
      showFailure(errorText(response, answer));
      return;
    }
    showAnswer(name, answer, response, performance.now() - started);
  } catch (err) {
    if (err.name === "AbortError" || sequence !== state.sequence) return;
    showFailure(`The request failed: ${err.message}`);
  } finally {
    if (sequence === state.sequence) {
      state.inFlight = null;
      el.predict.disabled = false;
    }
  }
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    return null;
  }
}

function errorText(response, body) {
  if (body && typeof body.error === "string") {
    return body.code ? `${body.error} (${body.code})` : body.error;
  }
  return `The server answered ${response.status} ${response.statusText || ""}`.trim() + ".";
}

function showAnswer(requested, answer, response, elapsedMs) {
  const prediction = answer?.predictions?.[0];
  if (!prediction) {
    showFailure("The server's answer holds no prediction.");
    return;
  }
  hideError();
  const model = answer.model || {};
  const version = model.version ?? response.headers.get("X-Model-Version");
  el.placeholder.hidden = true;
  el.verdict.hidden = false;
  if (prediction.label !== undefined) {
    el.label.textContent = prediction.label;
    el.confidence.textContent = formatPercent(prediction.confidence);
    drawBars(requested, prediction);
  } else {  // a regression model answers a value
    el.label.textContent = Number(prediction.value).toPrecision(3);
    el.confidence.textContent = "n/a (regression)";
    el.bars.replaceChildren();
  }
  el.answeredBy.textContent = `${model.name || requested} v${version ?? "?"}`;
  el.latency.textContent = `${Math.round(elapsedMs)} ms`;
  el.answer.dataset.state = "done";
  el.answer.dataset.sequence = String(state.sequence);
}

function drawBars(requested, prediction) {
  const ranked = prediction.top_k || [{ label: prediction.label, probability: prediction.confidence }];
  const probability = new Map(ranked.map((entry) => [String(entry.label), entry.probability]));
  const labels = state.models.get(requested)?.labels;
  // In the model's label order when every class came back, so the bars do not jump around.
  const rows = labels && labels.length <= ranked.length
    ? labels.map((label) => ({ label: String(label), probability: probability.get(String(label)) ?? 0 }))
    : ranked.map((entry) => ({ label: String(entry.label), probability: entry.probability }));
  el.bars.replaceChildren(...rows.map((row) => {
    const item = document.createElement("li");
    if (row.label === String(prediction.label)) item.className = "top";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = row.label;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${Math.max(0, Math.min(1, row.probability)) * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = formatPercent(row.probability);
    item.append(name, track, value);
    item.setAttribute("aria-label", `${row.label}: ${formatPercent(row.probability)}`);
    return item;
  }));
}

function formatPercent(p) {
  const value = Number(p) * 100;
  if (!Number.isFinite(value)) return "?";
  return value >= 99.95 || value < 0.05 ? `${value.toFixed(0)}%` : `${value.toFixed(1)}%`;
}

function showFailure(message) {
  showError(message);
  el.verdict.hidden = true;  // an older answer would now describe another input
  el.placeholder.hidden = false;
  el.bars.replaceChildren();
  el.answer.dataset.state = "error";
}

function showError(message) {
  el.error.textContent = message;
  el.error.hidden = false;
}

function hideError() {
  el.error.hidden = true;
  el.error.textContent = "";
}

function resetAll() {
  clearTimeout(state.timer);
  if (state.inFlight) state.inFlight.abort();
  state.sequence += 1;
  state.inFlight = null;
  el.predict.disabled = false;
  clearCanvas();
  dropUpload();
  hideError();
  el.hint.textContent = DEFAULT_HINT;
  el.hint.hidden = false;
  el.verdict.hidden = true;
  el.placeholder.hidden = false;
  el.bars.replaceChildren();
  el.answer.dataset.state = "idle";
}

// --------------------------------------------------------------------------- wiring

el.pad.addEventListener("pointerdown", onPointerDown);
el.pad.addEventListener("pointermove", onPointerMove);
el.pad.addEventListener("pointerup", onPointerUp);
el.pad.addEventListener("pointercancel", onPointerUp);
el.predict.addEventListener("click", predict);
el.clear.addEventListener("click", resetAll);
el.file.addEventListener("change", () => useUpload(el.file.files[0]));
el.preview.addEventListener("error", () => {  // a format the browser cannot show; the server may still read it
  if (!state.upload) return;
  el.preview.hidden = true;
  el.hint.textContent = `${state.upload.name || "The picture"}: no preview`;
  el.hint.hidden = false;
});
el.model.addEventListener("change", () => {
  const url = new URL(location.href);
  url.searchParams.set("model", el.model.value);
  history.replaceState(null, "", url);
  if (state.upload || state.hasInk) predict();
});

for (const type of ["dragenter", "dragover"]) {
  el.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    el.dropZone.classList.add("dragging");
  });
}
el.dropZone.addEventListener("dragleave", () => el.dropZone.classList.remove("dragging"));
el.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  el.dropZone.classList.remove("dragging");
  useUpload(event.dataTransfer?.files?.[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) useUpload(item.getAsFile());
});

el.answer.dataset.state = "idle";
loadModels();
