// seg-run serve: upload a scan, watch its job, look at the label map over the scan in three planes.
// No framework, no CDN: plain DOM and canvas. The API is the one documented in seg_runtime/serve/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], view: null, image: null, labels: null, colours: new Map(), jobId: null };

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok && response.status !== 202) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

async function loadModels() {
  try {
    state.models = await (await api("/v1/models")).json();
  } catch (error) {
    say(`Cannot list the models: ${error.message}`, true);
    return;
  }
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  showChannels();
  say("Choose a scan and press Segment.");
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function showChannels() {
  const model = currentModel();
  const box = $("channels");
  box.replaceChildren();
  if (!model || model.fields.length <= 2) return;
  const note = document.createElement("p");
  note.textContent = "or one file per channel:";
  box.append(note);
  for (const name of model.fields.slice(1)) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "file";
    input.dataset.field = name;
    label.append(`${name} `, input);
    box.append(label);
  }
}

function formData(dropped) {
  const form = new FormData();
  const file = dropped || $("file").files[0];
  if (file) {
    form.append("file", file, file.name);
    return form;
  }
  for (const input of $("channels").querySelectorAll("input[type=file]")) {
    if (input.files[0]) form.append(input.dataset.field, input.files[0], input.files[0].name);
  }
  return form;
}

async function submit(dropped) {
  const model = currentModel();
  if (!model) { say("No model to send to.", true); return; }
  $("result").hidden = true;
  document.body.dataset.overlay = "";
  say("Uploading…");
  try {
    const response = await api(`/v1/models/${encodeURIComponent(model.name)}/jobs`,
      { method: "POST", body: formData(dropped) });
    const job = await response.json();
    state.jobId = job.id;
    await watch(job.id);
  } catch (error) {
    say(error.message, true);
  }
}

async function watch(jobId) {
  const bar = $("progress");
  bar.hidden = false;
  for (;;) {
    const job = await (await api(`/v1/jobs/${jobId}?wait=2`)).json();
    bar.value = job.progress || 0;
    if (job.state === "failed") { bar.hidden = true; say(`Job failed: ${job.error}`, true); return; }
    if (job.state === "done") { bar.hidden = true; break; }
    say(`Job ${jobId.slice(0, 8)}… ${job.state} ${Math.round(100 * (job.progress || 0))}%`);
  }
  say(`Job ${jobId.slice(0, 8)}… done. Loading the result…`);
  await showResult(jobId);
}

async function showResult(jobId) {
  const view = await (await api(`/v1/jobs/${jobId}/view`)).json();
  const bytes = new Uint8Array(await (await api(view.data)).arrayBuffer());
  const count = view.shape[0] * view.shape[1] * view.shape[2];
  state.view = view;
  state.image = bytes.subarray(0, count);
  state.labels = bytes.subarray(count, 2 * count);
  state.colours = new Map(view.classes.map((c) => [c.value, c.rgb]));
  legend(view.classes);
  setUpSliders();
  const blob = await (await api(`/v1/jobs/${jobId}/result`)).blob();
  const link = $("download");
  link.href = URL.createObjectURL(blob);
  link.download = `${jobId}${guessSuffix(blob.type)}`;
  $("result").hidden = false;
  draw();
  say(`Job ${jobId.slice(0, 8)}… done.`);
}

function guessSuffix(type) {
  return { "application/gzip": ".nii.gz", "image/png": ".png", "application/dicom": ".seg.dcm" }[type] || "";
}

function legend(classes) {
  $("legend").replaceChildren(...classes.map((c) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = `rgb(${c.rgb.join(",")})`;
    item.append(swatch, `${c.value}: ${c.name}`);
    return item;
  }));
}

// Planes of a RAS+ volume [X, Y, Z] (x fastest), drawn radiologically: the patient's right on the
// image's left, anterior / superior up. Each maps (row, column, slice) to a voxel index.
function planes() {
  const [X, Y, Z] = state.view.shape;
  const at = (x, y, z) => x + X * (y + Y * z);
  return {
    axial: { w: X, h: Y, n: Z, sw: 0, sh: 1, voxel: (r, c, k) => at(X - 1 - c, Y - 1 - r, k) },
    coronal: { w: X, h: Z, n: Y, sw: 0, sh: 2, voxel: (r, c, k) => at(X - 1 - c, k, Z - 1 - r) },
    sagittal: { w: Y, h: Z, n: X, sw: 1, sh: 2, voxel: (r, c, k) => at(k, Y - 1 - c, Z - 1 - r) },
  };
}

function setUpSliders() {
  const [X, Y, Z] = state.view.shape;
  const sums = [new Float64Array(X), new Float64Array(Y), new Float64Array(Z)];
  for (let z = 0, i = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++, i++) {
        if (state.labels[i]) { sums[0][x]++; sums[1][y]++; sums[2][z]++; }
      }
    }
  }
  const busiest = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), Math.floor(a.length / 2));
  const start = { axial: busiest(sums[2]), coronal: busiest(sums[1]), sagittal: busiest(sums[0]) };
  for (const [name, plane] of Object.entries(planes())) {
    const slider = $(`${name}-slider`);
    slider.max = plane.n - 1;
    slider.value = Math.min(start[name], plane.n - 1);
    slider.disabled = plane.n === 1;
  }
}

function draw() {
  const opacity = Number($("opacity").value);
  const spacing = state.view.spacing;
  const [X, Y, Z] = state.view.shape;
  const scale = 360 / Math.max(X * spacing[0], Y * spacing[1], Z * spacing[2]);
  let coloured = 0;
  for (const [name, plane] of Object.entries(planes())) {
    const canvas = $(name);
    canvas.width = plane.w;
    canvas.height = plane.h;
    canvas.style.width = `${Math.round(plane.w * spacing[plane.sw] * scale)}px`;
    canvas.style.height = `${Math.round(plane.h * spacing[plane.sh] * scale)}px`;
    const k = Number($(`${name}-slider`).value);
    const pixels = new ImageData(plane.w, plane.h);
    for (let r = 0, p = 0; r < plane.h; r++) {
      for (let c = 0; c < plane.w; c++, p += 4) {
        const v = plane.voxel(r, c, k);
        const grey = state.image[v];
        const rgb = state.colours.get(state.labels[v]);
        const mix = rgb ? opacity : 0;
        if (rgb && opacity > 0) coloured++;
        pixels.data[p] = grey * (1 - mix) + (rgb ? rgb[0] : 0) * mix;
        pixels.data[p + 1] = grey * (1 - mix) + (rgb ? rgb[1] : 0) * mix;
        pixels.data[p + 2] = grey * (1 - mix) + (rgb ? rgb[2] : 0) * mix;
        pixels.data[p + 3] = 255;
      }
    }
    canvas.getContext("2d").putImageData(pixels, 0, 0);
  }
  document.body.dataset.overlay = "drawn";
  document.body.dataset.overlayPixels = String(coloured);
}

function wire() {
  $("token").value = sessionStorage.getItem("seg-token") || "";
  $("token").addEventListener("change", () => { sessionStorage.setItem("seg-token", $("token").value); loadModels(); });
  $("model").addEventListener("change", showChannels);
  $("send").addEventListener("click", () => submit(null));
  $("opacity").addEventListener("input", () => state.view && draw());
  for (const name of ["axial", "coronal", "sagittal"]) {
    $(`${name}-slider`).addEventListener("input", () => state.view && draw());
  }
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) submit(event.dataTransfer.files[0]);
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", wire);
