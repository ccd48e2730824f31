// The drawing page: draw a digit (mouse, pen or finger) or upload a picture, send it to
// POST models/<name>/predict as an image, and show the answer with its probabilities.
// Plain DOM, no build step. URLs are relative so the page also works behind a path prefix.
"use strict";

const STROKE_WIDTH = 20;        // px on the 280 px canvas: about 2 px of MNIST's 28
// The service reduces a picture of twice its working size or more by a whole factor before
// reading it (shared/preprocess.py, WORKING_SIDE = 128: the 280 px pad becomes 140 px). The page
// sends the drawing at that size: a quarter of the pixels to send and decode, the same digit read.
const SENT_REDUCTION = 2;
const STROKE_COLOUR = "#111";
const AUTO_DELAY_MS = 250;      // after a stroke ends, wait this long for another one
// A digit of several strokes (4, 5, 7) has pauses longer than AUTO_DELAY_MS: the page scrolls to
// an answer only once the pen has rested this long, so the pad does not move between strokes.
const PEN_REST_MS = 1000;
const TOP_K = 10;
const MODEL_REFRESH_MS = 30_000; // the model list is one small GET: look again this often
// A service that accepts the connection and never answers (frozen, overloaded) would otherwise
// leave the page waiting for good.
const REQUEST_TIME_LIMIT_MS = 60_000;
// A request with a picture waits longer again, as long as the picture takes to send over a poor
// mobile uplink (32 kB/s: 160 s more for a 5 MB phone photo): the service waits for a body that
// keeps arriving, and fetch does not say how much of it has been sent.
const SLOW_UPLINK_BYTES_PER_S = 32_000;
// An answer usually comes in a few ms; one that takes longer (a large photo, a busy service)
// says so after this long, rather than leaving only a dimmed button.
const BUSY_NOTE_AFTER_MS = 300;
// Arrow keys on the closed model list change the model at each press: predict once they rest.
const MODEL_CHANGE_DELAY_MS = 300;
const PREDICTING = "Predicting…";
const NOTHING_YET = "Nothing yet: draw in the white square, or upload a picture.";
const NO_PREDICTION = "No prediction for this input.";
const UPLOAD_SHOWN = "Press Clear to draw instead.";
// What the chosen model reads, by its preprocessing's fit (a manifest without one reads digits):
// the page asks for that, in its title, its intro, the pad's name and its refusals.
const SUBJECTS = {
  digit: { noun: "digit", described: "a digit" },
  garment: { noun: "garment", described: "a garment (a piece of clothing, a shoe or a bag)" },
};

const $ = (id) => document.getElementById(id);
const el = {
  intro: $("intro"), inputHeading: $("input-heading"),
  model: $("model"), modelNote: $("model-note"), pad: $("pad"), dropZone: $("drop-zone"),
  preview: $("upload-preview"), hint: $("pad-hint"), predict: $("predict"), clear: $("clear"),
  file: $("file"), auto: $("auto"),
  result: $("result"), error: $("error"), busy: $("busy"), spokenAnswer: $("spoken-answer"), answer: $("answer"),
  placeholder: $("placeholder"), verdict: $("verdict"),
  label: $("label"), confidence: $("confidence"), answeredBy: $("answered-by"),
  latency: $("latency"), probabilities: $("probabilities"), bars: $("bars"),
};
// The drawing is kept at 280 px (PAD_SIDE), the size the service's reading of it is tuned for, on a
// canvas of its own that is what is sent. The pad on screen shows the same strokes at the screen's
// own pixels (a 280 px canvas stretched over 354 CSS px at 3 device pixels each was blurred and stepped).
const PAD_SIDE = 280;
const ink = document.createElement("canvas");
ink.width = ink.height = PAD_SIDE;
const contexts = [ink.getContext("2d"), el.pad.getContext("2d")];
// A phone or a tablet, whose pointer is a finger, has no files to drag and drop: its hint names what it has.
const TOUCH_SCREEN = matchMedia("(pointer: coarse)");
const HINTS = { pointer: el.hint.textContent, finger: "Draw here with a finger, or upload a picture" };
const emptyPadHint = () => (TOUCH_SCREEN.matches ? HINTS.finger : HINTS.pointer);

const state = {
  models: new Map(),   // name -> {name, version, kind, labels, ready, unloaded, upcoming}, every listed model
  defaultModel: null,  // the server's default_model
  requested: new URLSearchParams(location.search).get("model"),  // by the URL, then by the choice
  listing: null,       // the model list request in flight
  listTimer: 0,        // next look at the model list
  listFailed: false,   // the last look at the model list got no answer
  refusedForList: false, // a prediction was refused for want of the list: the error goes once the list comes
  awaitingList: false, // ... and, with something drawn or uploaded, the prediction is made then
  hasInk: false,       // something is drawn on the canvas
  upload: null,        // the uploaded File, shown instead of the canvas (which draws nothing meanwhile)
  uploadNote: "",      // what the pad says of the upload before UPLOAD_SHOWN (files dropped or pasted with it)
  previewUrl: null,
  // Whether the browser shows the upload (false: a TIFF, which the answer then shows as the model read it):
  // a promise, settled once the preview has loaded or failed to, so that the prediction asks for what it needs.
  previewShows: null,
  settlePreview: () => {},
  drawing: null,       // the pointerId drawing now
  last: null,          // last point of the stroke, canvas pixels
  penUpAt: -Infinity,  // when the last stroke ended (performance.now())
  revealTimer: 0,      // pending scroll to the answer
  timer: 0,            // pending automatic prediction (after a stroke or a change of model)
  inFlight: null,      // AbortController of the request in flight
  busyTimer: 0,        // pending "Predicting…" note
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
    fit: input.preprocessing?.fit ?? null,
    labels: manifest.output?.labels || details?.classes || listed.classes || null,
    ready: details?.ready ?? listed.ready ?? true,
    unloaded: Boolean(details?.unloaded ?? listed.unloaded),
    upcoming: versionToServe(details || listed),
  };
}

async function describeListed(entry) {
  if ("manifest" in entry || "input" in entry) return describeModel(entry, null);
  try {  // a short listing: ask for the model's own description
    return describeModel(entry, await getJson(`models/${encodeURIComponent(entry.name)}`));
  } catch (err) {
    return describeModel(entry, null);  // listed but not describable now
  }
}

// The version a model serves once it can: the pinned one, else the newest that has not failed.
function versionToServe(info) {
  if (info.pinned != null) return info.pinned;
  const loadable = (info.versions || []).filter((v) => !String(v.status).startsWith("failed"));
  return loadable.length ? Math.max(...loadable.map((v) => v.version)) : null;
}

// A model that serves nothing now (unloaded) is listed without its input: the manifest of the
// version it will serve says what it reads. null when that cannot be had.
async function upcomingKind(model) {
  if (model.ready || model.upcoming == null) return null;
  try {
    const info = await getJson(`models/${encodeURIComponent(model.name)}/versions/${model.upcoming}`);
    return info.manifest?.input?.kind ?? null;
  } catch (err) {
    return null;
  }
}

async function getJson(url) {
  const { response, body } = await fetchJson(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(errorText(response, body));
  return body;
}

// fetch and read the JSON answer (null when it is not JSON), aborted by ``controller`` or after
// ``limitMs``, whichever comes first (the body can stall as well as the headers).
async function fetchJson(url, options, controller = new AbortController(), limitMs = REQUEST_TIME_LIMIT_MS) {
  const timer = setTimeout(() => controller.abort(new DOMException(
    `The service did not answer within ${Math.round(limitMs / 1000)} s.`, "TimeoutError")), limitMs);
  try {
    const response = await fetch(url, { ...options, signal: controller.signal });
    return { response, body: await readJson(response) };
  } finally {
    clearTimeout(timer);
  }
}

// A sentence for a request that got no answer: fetch only says "Failed to fetch" (Chromium) or
// "NetworkError ..." (Firefox) for a service that is down, and the same for a phone with no signal.
// ``retrying``: the page asks again by itself, so the sentence does not ask the person to.
function describeFailure(err, retrying = false) {
  if (err.name === "UnreadableFile") return err.message;
  if (err.name === "TimeoutError") {
    return `${err.message} It may be overloaded or stuck${retrying ? "." : "; try again."}`;
  }
  if (err instanceof TypeError) {
    if (navigator.onLine === false) {
      return `This device is offline: connect it to a network${retrying ? "." : ", then try again."}`;
    }
    return `Could not reach the service (${err.message}): it may be down or restarting`
      + (retrying ? "." : "; try again in a moment.");
  }
  return `The request failed: ${err.message}`;
}

function loadModels() {
  state.listing ??= listModels().finally(() => { state.listing = null; });
  return state.listing;
}

async function listModels() {
  clearTimeout(state.listTimer);
  let nextLook = MODEL_REFRESH_MS;
  try {
    const body = await getJson("models");
    let listed = Array.isArray(body) ? body : body.models;
    if (listed && !Array.isArray(listed)) {
      listed = Object.entries(listed).map(([name, info]) => ({ name, ...info }));
    }
    const described = await Promise.all((listed || []).map(async (item) => {
      const model = await describeListed(typeof item === "string" ? { name: item } : item);
      // An unloaded model lists no input: keep the kind seen before, else read its manifest.
      model.kind ??= state.models.get(model.name)?.kind ?? await upcomingKind(model);
      model.fit ??= state.models.get(model.name)?.fit ?? null;
      return model;
    }));
    state.models = new Map(described.filter((m) => m.name).map((m) => [m.name, m]));
    state.defaultModel = body.default_model || null;
    state.listFailed = false;
    if (!fillModelChoice()) nextLook = 5000;
    if (state.refusedForList && el.model.value) {
      state.refusedForList = false;
      hideError();  // the refusal no longer holds
      if (state.awaitingList) {
        state.awaitingList = false;
        predict();
      }
    }
  } catch (err) {
    showModelNote(`Could not list the models. ${describeFailure(err, true)} Retrying…`);
    state.listFailed = true;
    nextLook = 3000;
  }
  state.listTimer = setTimeout(loadModels, nextLook);
}

function optionText(model) {
  return model.version != null ? `${model.name} (v${model.version})` : model.name;
}

// Offer the image models that serve now, and choose the one asked for (by the URL or by the
// choice), else the server's default. One that is listed but not serving stays chosen and is
// named as unavailable, unless it is known to read no pictures; a page never swaps in another
// model without saying so. One asked for that reads no pictures, or is not there, is named, and
// the default is chosen in its place as if nothing had been asked (named as unavailable in its
// turn, not swapped for another, when it stops serving). A default that reads no pictures, or is
// not there, is passed over quietly: nobody here asked for it. Returns whether any image model serves.
function fillModelChoice() {
  const offered = [...state.models.values()].filter((m) => m.kind === "image" && m.ready);
  const mayReadPictures = (model) => Boolean(model) && (model.kind === "image" || model.kind === null);
  let wanted = state.requested || state.defaultModel || "mnist";
  let refused = "";
  if (state.requested && !mayReadPictures(state.models.get(wanted))) {
    refused = state.models.has(wanted) ? `Model ${wanted} is not offered on this page: it does not read pictures.`
                                       : `There is no model named ${wanted}.`;
    wanted = state.defaultModel || "mnist";
  }
  const asked = state.models.get(wanted);
  const options = offered.map((m) => [m.name, optionText(m)]);
  let choice = wanted;
  let note = "";
  if (!offered.includes(asked)) {
    if (mayReadPictures(asked)) {
      options.push([wanted, `${wanted} (unavailable)`]);
      const why = asked.unloaded ? "it is unloaded" : "no version of it can serve";
      const comesBack = asked.kind === "image" ? "this page offers it again once it serves"
        : "if it reads pictures, this page offers it once it serves";  // what it reads is not known
      note = `Model ${wanted} is not available now: ${why}. `
        + (offered.length ? `Choose another model, or wait: ${comesBack}.` : `${capitalised(comesBack)}.`);
    } else {
      const fallback = offered.find((m) => m.name === state.defaultModel) || offered[0];
      choice = fallback?.name || "";
    }
  }
  if (refused) note = `${refused}${choice ? ` Showing ${choice} instead.` : ""} ${note}`;
  if (options.length === 0) {
    options.push(["", "No image model available"]);
    note = `${note} No image model is being served. Train one (python -m trainer train --dataset mnist --publish); `
      + "it appears here once it serves.";
  }
  const current = [...el.model.options].map((o) => [o.value, o.text]);
  if (JSON.stringify(current) !== JSON.stringify(options)) {  // leave an open list alone when nothing changed
    el.model.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
  }
  el.model.disabled = !options.some(([value]) => value);
  el.model.value = choice;
  showModelNote(note.trim());
  askForSubject();
  return offered.length > 0;
}

function chosenSubject() {
  return SUBJECTS[state.models.get(el.model.value)?.fit] || SUBJECTS.digit;
}

// The words that say what to draw follow the chosen model: a garment model is not asked for a digit.
function askForSubject() {
  const subject = chosenSubject();
  document.title = `scratchnet: draw a ${subject.noun}`;
  el.intro.textContent = `Draw ${subject.described} or upload a picture; a NumPy network written from scratch `
    + "reads it.";
  el.inputHeading.textContent = `Your ${subject.noun}`;
  el.pad.setAttribute("aria-label", `Drawing area: draw one ${subject.noun} with the mouse, a pen or a finger`);
}

function showModelNote(message) {
  if (el.modelNote.textContent !== message) el.modelNote.textContent = message;  // a status is read out when it changes
}

// An answer names the version that served it: the choice follows it (a pin or a new version),
// and the model's description is fetched again (a new version may have other classes).
function noteServedVersion(name, version) {
  const model = state.models.get(name);
  const served = Number(version);
  if (!model || !Number.isInteger(served) || (model.ready && model.version === served)) return;
  Object.assign(model, { version: served, ready: true, kind: "image", unloaded: false });
  fillModelChoice();
  loadModels();
}

// A model whose kind was not known (it served nothing) turned out to read numbers: it is no
// longer offered, the choice moves to a picture model with a note, and the list is read again.
function dropVectorModel(name) {
  const model = state.models.get(name);
  if (model) model.kind = "vector";
  fillModelChoice();
  loadModels();
}

// --------------------------------------------------------------------------- drawing

function clearCanvas() {
  for (const ctx of contexts) ctx.clearRect(0, 0, PAD_SIDE, PAD_SIDE);  // transparent: the PNG keeps no background
  state.hasInk = false;
}

// One pad pixel per device pixel, drawn in PAD_SIDE units; what is drawn already is copied over.
function fitPadToScreen() {
  const side = Math.round(el.pad.clientWidth * devicePixelRatio);
  if (!side || side === el.pad.width) return;
  el.pad.width = el.pad.height = side;  // which empties it
  const scale = side / PAD_SIDE;
  contexts[1].setTransform(scale, 0, 0, scale, 0, 0);
  contexts[1].drawImage(ink, 0, 0);
}

function canvasPoint(event) {
  const box = el.pad.getBoundingClientRect();
  return {
    x: (event.clientX - box.left) * (PAD_SIDE / box.width),
    y: (event.clientY - box.top) * (PAD_SIDE / box.height),
  };
}

function strokeTo(point) {
  for (const ctx of contexts) {
    ctx.lineWidth = STROKE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = STROKE_COLOUR;
    ctx.beginPath();
    ctx.moveTo(state.last.x, state.last.y);
    ctx.lineTo(point.x, point.y);
    ctx.stroke();
  }
  state.last = point;
}

function onPointerDown(event) {
  // Only the primary contact draws: a mouse's main button, a pen's tip, a finger. A pen's barrel
  // button or eraser is another button (2, 5), and so is any button held with the primary one.
  if (event.button !== 0 || event.buttons > 1) return;
  if (state.drawing !== null) return;  // a second finger does not draw
  // A picture shown is not drawn over: a swipe to scroll the page would throw it away. A finger
  // scrolls instead (app.css), and Clear, which the pad names, brings the drawing back.
  if (state.upload) return;
  event.preventDefault();
  clearTimeout(state.timer);
  clearTimeout(state.revealTimer);
  inputChanged();
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
  state.penUpAt = performance.now();
  if (el.auto.checked) {
    clearTimeout(state.timer);
    state.timer = setTimeout(predict, AUTO_DELAY_MS);
  }
}

// Coming back from the API page by its link loads this page anew, and so does Back wherever the browser's
// back/forward cache did not keep the page (turned off, full, or a browser without one). The drawing, or the
// uploaded picture, is kept for the tab meanwhile, and shown again when the page loads, and predicted as any
// new input is. A picture larger than a tab's storage (5 million characters in most browsers) is not kept.
const SAVED_DRAWING = "scratchnet.drawing";
const SAVED_UPLOAD = "scratchnet.upload";  // {name, type, lastModified, data: a data: URL}
// Base64 makes 4 characters of 3 bytes: a larger file cannot fit, and is not read to find that out.
const KEPT_UPLOAD_BYTES = 4_000_000;

// sessionStorage.setItem, or removeItem when ``value`` is null. Storage turned off or full keeps nothing
// (and what was kept under ``key`` before goes, rather than come back in its place).
function keep(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch (err) {
    if (value !== null) keep(key, null);
  }
}

function saveDrawing() {
  keep(SAVED_DRAWING, state.hasInk && !state.upload ? ink.toDataURL("image/png") : null);
}

// Kept once it is read (a page that is leaving cannot wait for a file to be read), if it still shows then;
// dropUpload forgets it.
function saveUpload(file) {
  if (file.size > KEPT_UPLOAD_BYTES) return;
  const reader = new FileReader();
  reader.addEventListener("load", () => {
    if (state.upload !== file) return;  // cleared, or replaced, meanwhile
    const { name, type, lastModified } = file;
    keep(SAVED_UPLOAD, JSON.stringify({ name, type, lastModified, data: reader.result }));
  });
  reader.readAsDataURL(file);
}

function restoreInput() {
  if (state.hasInk || state.upload) return;  // drawn on, or given a picture, already
  let drawingUrl = null;
  let upload = null;
  try {
    drawingUrl = sessionStorage.getItem(SAVED_DRAWING);
    const kept = JSON.parse(sessionStorage.getItem(SAVED_UPLOAD));
    if (kept) upload = fileFromDataUrl(kept);
  } catch (err) {
    return;  // storage turned off, or what it holds is not this page's
  }
  if (upload) {
    useUpload(upload);
    return;
  }
  if (!drawingUrl) return;
  const drawing = new Image();
  drawing.addEventListener("load", () => {
    if (state.hasInk || state.upload) return;  // drawn on, or given a picture, meanwhile
    contexts[0].drawImage(drawing, 0, 0);
    contexts[1].drawImage(ink, 0, 0);  // in PAD_SIDE units, as fitPadToScreen draws it
    state.hasInk = true;
    el.hint.hidden = true;
    inputChanged();
    if (el.auto.checked) predict();
  });
  drawing.src = drawingUrl;
}

// A File again of what saveUpload kept (fetch, which could read a data: URL, is held to this origin).
function fileFromDataUrl({ name, type, lastModified, data }) {
  const bytes = atob(data.slice(data.indexOf(",") + 1));
  const buffer = Uint8Array.from(bytes, (c) => c.charCodeAt(0));
  return new File([buffer], name, { type, lastModified });
}

// --------------------------------------------------------------------------- uploads

// ``note``: what the pad says of it before UPLOAD_SHOWN (useFirstOf: the files given with it, unread).
function useUpload(file, note = "") {
  if (!file) return;
  if (file.size === 0) {
    refuseUpload(`${file.name || "The pasted picture"} is empty (0 bytes): choose another picture.`);
    return;
  }
  clearTimeout(state.timer);
  clearCanvas();
  dropUpload();
  state.upload = file;
  state.previewUrl = URL.createObjectURL(file);
  state.previewShows = new Promise((resolve) => { state.settlePreview = resolve; });
  el.preview.src = state.previewUrl;
  el.preview.alt = file.name ? `Uploaded picture: ${file.name}` : "Uploaded picture";
  el.preview.hidden = false;
  el.dropZone.classList.add("showing-upload");
  state.uploadNote = note;
  el.hint.textContent = state.uploadNote + UPLOAD_SHOWN;
  el.hint.hidden = false;
  saveUpload(file);
  inputChanged();
  if (el.auto.checked) predict();
}

// Files dropped or pasted (``how``: "drop", "paste"): the first is read, and the pad says when others came with it.
function useFirstOf(files, how) {
  const note = files.length > 1 ? `Read the first of ${files.length} files; ${how} one picture at a time. ` : "";
  useUpload(files[0], note);
}

// A picture the browser cannot show (a TIFF) is shown as the service reads it: the prediction asks, for it only,
// for the model's input field as a PNG (``picture``, a data: URL).
function showAsRead(picture) {
  const file = state.upload;
  if (!file || !picture?.startsWith("data:image/png")) return;
  el.preview.src = picture;
  el.preview.alt = `Uploaded picture: ${file.name || "pasted"}, as the model reads it`;
  el.preview.classList.add("as-read");
  el.preview.hidden = false;
  el.hint.textContent = `${file.name || "The picture"}, as the model reads it. ${state.uploadNote}${UPLOAD_SHOWN}`;
}

// Nothing to read: say so here, and keep what the pad shows now.
function refuseUpload(message) {
  el.file.value = "";
  showError(message);
  reveal(el.error);
}

// A folder dropped comes as a File too, one that cannot be read (which would be blamed on a change to it).
function isFolder(transfer) {
  const item = [...(transfer.items || [])].find((i) => i.kind === "file");
  return Boolean(item?.webkitGetAsEntry?.()?.isDirectory);
}

// Without automatic prediction, an answer on screen would describe the previous picture.
function inputChanged() {
  if (el.auto.checked || el.answer.dataset.state === "stale") return;
  cancelRequest();
  hideError();
  clearAnswer("stale", "Press Predict to read this picture.");
}

function dropUpload() {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.settlePreview(true);  // a prediction waiting for it goes on, to find itself called off
  state.upload = null;
  state.previewUrl = null;
  el.preview.hidden = true;
  el.preview.removeAttribute("src");
  el.preview.classList.remove("as-read");
  el.dropZone.classList.remove("showing-upload");
  el.file.value = "";
  keep(SAVED_UPLOAD, null);
}

// --------------------------------------------------------------------------- predicting

function canvasBlob() {
  const sent = document.createElement("canvas");
  sent.width = sent.height = PAD_SIDE / SENT_REDUCTION;
  // Smoothed, a reduction by 2 is the mean of each 2x2 square, as the service's own would be.
  sent.getContext("2d").drawImage(ink, 0, 0, sent.width, sent.height);
  return new Promise((resolve, reject) => {
    sent.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the drawing could not be exported"))), "image/png");
  });
}

async function requestBody() {
  if (state.upload) {
    const file = state.upload;
    // A file changed, moved or deleted since it was chosen can no longer be read, and fetch would
    // say only "Failed to fetch", as it does for a service that is down: find that out here.
    await file.slice(0, 1).arrayBuffer().catch(() => {
      const error = new Error(`${file.name || "The picture"} can no longer be read: it was changed, moved or deleted `
        + "since it was chosen. Choose it again.");
      error.name = "UnreadableFile";
      throw error;
    });
    if (file.type.startsWith("image/")) return { body: file, type: file.type, size: file.size };
    const form = new FormData();  // unknown type: let the server identify the format
    form.append("image", file, file.name || "upload");
    return { body: form, type: null, size: file.size };
  }
  const drawing = await canvasBlob();
  return { body: drawing, type: "image/png", size: drawing.size };
}

// POST what the pad shows to the model ``name``'s predict, with ``query``: fetchJson's answer.
async function postInput(name, query, controller) {
  const { body, type, size } = await requestBody();
  const headers = { Accept: "application/json" };
  if (type) headers["Content-Type"] = type;
  const limitMs = REQUEST_TIME_LIMIT_MS + (1000 * size) / SLOW_UPLINK_BYTES_PER_S;
  return fetchJson(`models/${encodeURIComponent(name)}/predict?${query}`, { method: "POST", headers, body },
    controller, limitMs);
}

async function predict() {
  clearTimeout(state.timer);
  if (!el.model.value) {  // drawn before the model list arrived, or while it could not be had: look now
    const asked = state.sequence;
    await loadModels();
    if (asked !== state.sequence) return;  // cleared, or predicted by another call, meanwhile
  }
  const name = el.model.value;
  if (!name) {
    state.refusedForList = state.listFailed;
    state.awaitingList = state.listFailed && (state.upload !== null || state.hasInk);  // something to predict
    showError(state.listFailed
      ? "The model list could not be loaded, so no model can answer yet: try again in a moment."
      : "No image model is available to answer.");
    return;
  }
  if (!state.upload && !state.hasInk) {
    showError(`Draw ${chosenSubject().described} or upload a picture first.`);
    return;
  }
  if (state.inFlight) state.inFlight.abort();
  const controller = new AbortController();
  state.inFlight = controller;
  const sequence = ++state.sequence;
  el.answer.dataset.state = "busy";
  el.spokenAnswer.textContent = "";  // so that the next answer is read out even when it says the same
  setBusy(true);
  const started = performance.now();
  try {
    const unseen = state.upload !== null && !(await state.previewShows);
    if (sequence !== state.sequence) return;  // cleared, or given another picture, meanwhile
    const query = `top_k=${TOP_K}${unseen ? "&input_image=true" : ""}`;
    const { response, body: answer } = await postInput(name, query, controller);
    if (sequence !== state.sequence) return;
    if (!response.ok) {
      showFailure(errorText(response, answer), answer?.code);
      if (answer?.code === "model_takes_vectors") dropVectorModel(name);
      else if (response.status === 404 || response.status === 503) loadModels();  // gone or out of service
      return;
    }
    showAnswer(name, answer, response, performance.now() - started);
    if (unseen) showAsRead(answer?.predictions?.[0]?.input_image);
  } catch (err) {
    if (err.name === "AbortError" || sequence !== state.sequence) return;
    showFailure(describeFailure(err));
  } finally {
    if (sequence === state.sequence) {
      state.inFlight = null;
      setBusy(false);
    }
  }
}

// aria-disabled rather than disabled: a disabled button would lose the keyboard focus.
function setBusy(busy) {
  clearTimeout(state.busyTimer);
  el.busy.textContent = "";
  el.result.classList.remove("waiting");
  if (busy) {
    el.predict.setAttribute("aria-disabled", "true");
    el.answer.setAttribute("aria-busy", "true");
    // Greyed only with the note: a quick answer would otherwise make the old one flicker.
    state.busyTimer = setTimeout(() => {
      el.busy.textContent = PREDICTING;
      el.result.classList.add("waiting");
    }, BUSY_NOTE_AFTER_MS);
  } else {
    el.predict.removeAttribute("aria-disabled");
    el.answer.removeAttribute("aria-busy");
  }
}

function cancelRequest() {
  clearTimeout(state.timer);
  if (state.inFlight) state.inFlight.abort();
  state.sequence += 1;
  state.inFlight = null;
  setBusy(false);
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    return null;
  }
}

// An answer without the service's error comes from a proxy in front of it (its own page for a
// body over its limit, or for a service it cannot reach): what to do, by the status alone.
const UNREACHABLE = "The service may be down, restarting or overloaded: try again in a moment.";
const STATUS_ADVICE = {
  413: "Shrink the picture (fewer pixels, or saved as JPEG) and upload it again.",
  429: "Too many requests at once: wait a moment and try again.",
  502: UNREACHABLE,
  503: UNREACHABLE,
  504: UNREACHABLE,
};

// The service's message as a sentence (it says what to do); not its code (showError).
function errorText(response, body) {
  if (body && typeof body.error === "string") {
    const message = capitalised(body.error);
    return /[.!?]$/.test(message) ? message : `${message}.`;
  }
  const answered = `The server answered ${response.status} ${response.statusText || ""}`.trim() + ".";
  return STATUS_ADVICE[response.status] ? `${answered} ${STATUS_ADVICE[response.status]}` : answered;
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
  const answeredBy = `${model.name || requested} v${version ?? "?"}`;
  el.placeholder.hidden = true;
  el.verdict.hidden = false;
  if (prediction.label !== undefined) {
    const labels = state.models.get(requested)?.labels || [prediction.label];
    el.label.textContent = prediction.label;
    el.label.classList.toggle("long", longNames(labels));
    el.confidence.textContent = formatPercent(prediction.confidence);
    drawBars(requested, prediction);
    el.spokenAnswer.textContent =
      `Predicted ${prediction.label}, confidence ${el.confidence.textContent}, by ${answeredBy}.`;
  } else {  // a regression model answers a value
    el.label.textContent = Number(prediction.value).toPrecision(3);
    el.label.classList.remove("long");
    el.confidence.textContent = "n/a (regression)";
    el.bars.replaceChildren();
    el.probabilities.hidden = true;
    el.spokenAnswer.textContent = `Predicted value ${el.label.textContent}, by ${answeredBy}.`;
  }
  el.answeredBy.textContent = answeredBy;
  el.latency.textContent = `${Math.round(elapsedMs)} ms`;
  el.answer.dataset.state = "done";
  el.answer.dataset.sequence = String(state.sequence);
  noteServedVersion(requested, version);
  reveal(el.verdict);
}

// On a phone the result lies below the pad: bring it into view, unless it is in view already
// or a stroke is being drawn (the pad would move under the pen). Soon after a stroke, wait: the
// next stroke of the same digit may be coming, and a new stroke calls the scroll off.
function reveal(element) {
  clearTimeout(state.revealTimer);
  const rest = state.penUpAt + PEN_REST_MS - performance.now();
  if (rest > 0) {
    state.revealTimer = setTimeout(() => reveal(element), rest);
    return;
  }
  const box = element.getBoundingClientRect();
  if (state.drawing !== null || (box.top >= 0 && box.bottom <= window.innerHeight)) return;
  const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
  element.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "nearest" });
}

function drawBars(requested, prediction) {
  const ranked = prediction.top_k || [{ label: prediction.label, probability: prediction.confidence }];
  const probability = new Map(ranked.map((entry) => [String(entry.label), entry.probability]));
  const labels = state.models.get(requested)?.labels;
  // In the model's label order when every class came back, so the bars do not jump around; the
  // answer's own order when its classes are not the listed ones (a new version changed them).
  const sameClasses = labels && labels.length === probability.size && labels.every((label) => probability.has(String(label)));
  const rows = sameClasses
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
  el.bars.classList.toggle("long", longNames(rows.map((row) => row.label)));  // over their bars when narrow (app.css)
  el.probabilities.hidden = false;
}

// Class names longer than a digit's ("T-shirt/top"): set smaller, and given room of their own.
function longNames(labels) {
  return labels.some((label) => String(label).length > 3);
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function formatPercent(p) {
  const value = Number(p) * 100;
  if (!Number.isFinite(value)) return "?";
  return value >= 99.95 || value < 0.05 ? `${value.toFixed(0)}%` : `${value.toFixed(1)}%`;
}

// A request failed. What it sent is still on the pad: Clear, which takes that away, drops the answer.
function showFailure(message, code) {
  showError(message, code);
  clearAnswer("error", NO_PREDICTION);  // an older answer would now describe another input
  reveal(el.error);
}

function clearAnswer(answerState, message = NOTHING_YET) {
  el.verdict.hidden = true;
  el.placeholder.textContent = message;
  el.placeholder.hidden = false;
  el.bars.replaceChildren();
  el.probabilities.hidden = true;  // a heading over an empty list reads as something missing
  el.answer.dataset.state = answerState;
  // Only a stale answer's going is said: an error is read out by its alert, and Clear is pressed.
  el.spokenAnswer.textContent = answerState === "stale" ? message : "";
}

// ``code``: the service's error code (image_too_large), for programs: the alert keeps it as data-code.
function showError(message, code) {
  el.error.textContent = message;
  if (code) el.error.dataset.code = code;
  else delete el.error.dataset.code;
  el.error.hidden = false;
}

function hideError() {
  el.error.hidden = true;
  el.error.textContent = "";
  delete el.error.dataset.code;
}

function resetAll() {
  cancelRequest();
  state.refusedForList = state.awaitingList = false;
  clearCanvas();
  dropUpload();
  hideError();
  el.hint.textContent = emptyPadHint();
  el.hint.hidden = false;
  clearAnswer("idle");
}

// --------------------------------------------------------------------------- wiring

fitPadToScreen();
new ResizeObserver(fitPadToScreen).observe(el.pad);  // a phone turned, a window resized
addEventListener("resize", fitPadToScreen);  // zoomed: the pad keeps its CSS size, not its device pixels
el.pad.addEventListener("pointerdown", onPointerDown);
el.pad.addEventListener("pointermove", onPointerMove);
el.pad.addEventListener("pointerup", onPointerUp);
el.pad.addEventListener("pointercancel", onPointerUp);
el.predict.addEventListener("click", () => {
  if (el.predict.getAttribute("aria-disabled") !== "true") predict();
});
el.clear.addEventListener("click", resetAll);
el.file.addEventListener("change", () => useUpload(el.file.files[0]));
el.preview.addEventListener("load", () => {
  if (state.upload && el.preview.src === state.previewUrl) state.settlePreview(true);
});
el.preview.addEventListener("error", () => {  // a format the browser cannot show; the server may still read it
  if (!state.upload || el.preview.src !== state.previewUrl) return;
  state.settlePreview(false);
  el.preview.hidden = true;
  el.hint.textContent = `${state.upload.name || "The picture"}: no preview. ${state.uploadNote}${UPLOAD_SHOWN}`;
  el.hint.hidden = false;
});
el.model.addEventListener("change", () => {
  state.requested = el.model.value;
  const url = new URL(location.href);
  url.searchParams.set("model", el.model.value);
  history.replaceState(null, "", url);
  fillModelChoice();
  if ((state.upload || state.hasInk) && !el.auto.checked) {
    inputChanged();  // the answer on screen is the model's before: Predict asks the new one
  } else if (state.upload || state.hasInk) {
    cancelRequest();  // an answer still on its way is the model's before, no longer asked for
    state.timer = setTimeout(predict, MODEL_CHANGE_DELAY_MS);
  } else {
    hideError();  // "Draw a digit ... first" was said for the model before: the page now asks in its words
  }
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) loadModels();
});

for (const type of ["dragenter", "dragover"]) {
  el.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    el.dropZone.classList.add("dragging");
  });
}
el.dropZone.addEventListener("dragleave", () => el.dropZone.classList.remove("dragging"));
// A picture dropped anywhere on the page is read: one dropped just beside the pad did nothing, or
// was opened by the browser in place of the page. What is not a file (a picture dragged from a web
// page is its address, which this page may not fetch) is named, unless it was dragged on the page itself.
let draggedOnPage = false;
document.addEventListener("dragstart", () => { draggedOnPage = true; });
document.addEventListener("dragend", () => { draggedOnPage = false; });
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  el.dropZone.classList.remove("dragging");
  const files = event.dataTransfer?.files || [];
  const file = files[0];
  if (file) {
    if (isFolder(event.dataTransfer)) refuseUpload(`${file.name} is a folder: drop one of the pictures in it instead.`);
    else useFirstOf(files, "drop");
    return;
  }
  if (draggedOnPage) return;  // a word or a link of this page, let go by mistake
  refuseUpload("Only a picture file can be dropped here; a picture dragged from a web page is only its address. "
    + "Save the picture first, then drop the file or use Upload a picture.");
});
document.addEventListener("paste", (event) => {
  const items = [...(event.clipboardData?.items || [])];
  const pictures = items.filter((i) => i.kind === "file" && i.type.startsWith("image/")).map((i) => i.getAsFile());
  if (pictures.length) useFirstOf(pictures, "paste");
});

addEventListener("pagehide", saveDrawing);
el.hint.textContent = emptyPadHint();
TOUCH_SCREEN.addEventListener("change", () => {  // a mouse plugged into a tablet, or unplugged
  if (Object.values(HINTS).includes(el.hint.textContent)) el.hint.textContent = emptyPadHint();
});

el.answer.dataset.state = "idle";
loadModels();
// Back to this page, the browser puts the checkbox as it was left (automatic prediction off) only once the page has
// loaded: what was kept waits for that, so that it is not predicted against the person's choice.
addEventListener("pageshow", (event) => {
  if (!event.persisted) restoreInput();  // a page from the back/forward cache still holds its input
});
